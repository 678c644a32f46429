"""CPU seconds of our processes, from the kernel's own accounting, never the server's.

Two ways, one per kind of row:

- ``measure(cmd)``: a contender as a child process (a job's whole run with its JVM and Python workers, a raw
  boto3 loop, dynamodump). It runs under this module's ``--wrap`` mode, a child subreaper: every descendant
  that outlives its parent (a JVM the driver did not wait for, a Python worker) is re-parented to the wrapper and
  reaped by it, so ``os.wait4`` on the wrapper returns the user + system time of the whole tree. The servers are
  started by the benchmark itself, outside that tree.
- ``TreeClock``: rows timed inside the benchmark process once Spark is up. It sums utime + stime + cutime +
  cstime (``/proc/<pid>/stat``) over this process and its live descendants (the JVM, PySpark's daemon and
  workers), leaving out the servers' process trees; a descendant that exits within the row is counted in its
  parent's cutime/cstime once reaped.

Both also watch for processes the kernel reaps on its own: PySpark's daemon sets SIGCHLD to SIG_IGN, so its
Python workers, when they end (at the session's stop, or an idle worker's), are reaped automatically and their
CPU reaches no parent's cutime and no ``wait4``: left alone, every Spark row would lose its Python workers' CPU
(a whole job's scan or stream reading, measured here at 13 s of a 85 s merge job). A ``Watch`` thread samples
the tree every 50 ms; a process whose parent ignores SIGCHLD counts with its last sampled CPU once it is gone.
What it can miss is at most the last 50 ms of each such process.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, Iterable, List, Optional, Set, Tuple

TICK = os.sysconf("SC_CLK_TCK")
PR_SET_CHILD_SUBREAPER = 36
LINGER_S = 30.0


def _stat(pid: int) -> Optional[List[str]]:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    # Field 2 (comm) may hold spaces: split after its closing parenthesis.
    return text[text.rindex(")") + 2:].split()


def _children() -> Dict[int, List[int]]:
    out: Dict[int, List[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(int(name))
            if fields:
                out.setdefault(int(fields[1]), []).append(int(name))
    return out


def tree(root: int, exclude: Iterable[int] = ()) -> List[int]:
    """``root`` and its live descendants, without the subtrees of ``exclude``."""
    kids, skip = _children(), set(exclude)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in skip:
            continue
        found.append(pid)
        todo.extend(kids.get(pid, []))
    return found


def tree_cpu(root: int, exclude: Iterable[int] = ()) -> float:
    total = 0
    for pid in tree(root, exclude):
        fields = _stat(pid)
        if fields:  # fields[11..14] are utime, stime, cutime, cstime (stat fields 14-17)
            total += sum(int(v) for v in fields[11:15])
    return total / TICK


SIGCHLD_BIT = 1 << (signal.SIGCHLD - 1)
WATCH_S = 0.05


def ignores_sigchld(pid: int) -> bool:
    """Whether ``pid`` ignores SIGCHLD (its children are then reaped by the kernel, their CPU counted nowhere)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("SigIgn:"):
                    return bool(int(line.split()[1], 16) & SIGCHLD_BIT)
    except OSError:
        pass
    return False


class Watch(threading.Thread):
    """Samples ``root``'s tree (without ``exclude``) until stopped; :meth:`lost` is the CPU of the processes that
    ended and were reaped by the kernel (their parent ignored SIGCHLD), each at its last sample."""

    def __init__(self, root: int, exclude: Iterable[int] = ()) -> None:
        super().__init__(daemon=True)
        self.root, self.exclude = root, set(exclude)
        self._last: Dict[Tuple[int, str], float] = {}      # (pid, start time) -> own + reaped children's CPU
        self._auto: Set[Tuple[int, str]] = set()            # those whose parent ignores SIGCHLD
        self._stop_event = threading.Event()

    def sample(self) -> Set[Tuple[int, str]]:
        alive = set()
        parents: Dict[int, bool] = {}
        for pid in tree(self.root, self.exclude):
            fields = _stat(pid)
            if not fields:
                continue
            key = (pid, fields[19])  # stat field 22: start time, so a reused pid is another process
            alive.add(key)
            self._last[key] = sum(int(v) for v in fields[11:15]) / TICK
            ppid = int(fields[1])
            if ppid not in parents:
                parents[ppid] = ignores_sigchld(ppid)
            if parents[ppid]:
                self._auto.add(key)
        return alive

    def run(self) -> None:
        while not self._stop_event.wait(WATCH_S):
            self.sample()

    def finish(self) -> None:
        self._stop_event.set()
        self.join()
        self._alive = self.sample()

    def reaped_by_kernel(self, skip: Iterable[int] = ()) -> Dict[Tuple[int, str], float]:
        """After :meth:`finish`: the gone processes the kernel reaped (pids in ``skip`` left out), each with its
        last sampled CPU."""
        left_out = set(skip)
        return {key: self._last[key] for key in self._auto - self._alive if key[0] not in left_out}

    def lost(self, skip: Iterable[int] = ()) -> float:
        return sum(self.reaped_by_kernel(skip).values())


class TreeClock:
    """CPU and wall time of this process's tree (servers excluded) between ``start()`` and ``stop()``.

    Live processes count through their utime + stime + cutime + cstime, before and after; a process reaped by the
    kernel within the row (see the module's docstring) counts with its last sample, less what it had at the start.
    """

    def __init__(self, exclude: Iterable[int] = ()) -> None:
        self.exclude: Set[int] = set(exclude)
        self.cpu_s = self.wall_s = 0.0
        self.auto_reaped_s = 0.0

    def start(self) -> TreeClock:
        self._watch = Watch(os.getpid(), self.exclude)
        self._watch.sample()
        self._at_start = dict(self._watch._last)
        self._watch.start()
        self._cpu, self._wall = tree_cpu(os.getpid(), self.exclude), time.perf_counter()
        return self

    def stop(self) -> TreeClock:
        self.wall_s = time.perf_counter() - self._wall
        after = tree_cpu(os.getpid(), self.exclude)
        self._watch.finish()
        gone = self._watch.reaped_by_kernel()
        # What those had at the start is in self._cpu and must not be taken off: it is nowhere in ``after``.
        self.auto_reaped_s = sum(last - self._at_start.get(key, 0.0) for key, last in gone.items())
        self.cpu_s = after - self._cpu + sum(gone.values())
        return self


def measure(cmd: List[str], log_path: str, env: Optional[Dict[str, str]] = None) -> Dict[str, object]:
    """Run ``cmd`` under the subreaper wrapper: {wall_s, cpu_s, user_s, sys_s, stdout}; raises when it fails."""
    reaped_path = log_path + ".reaped"
    wrapped = [sys.executable, os.path.abspath(__file__), "--wrap", reaped_path, "--", *list(cmd)]
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    out_path = log_path + ".stdout"
    started = time.perf_counter()
    with open(log_path, "wb") as log, open(out_path, "wb") as out:
        proc = subprocess.Popen(wrapped, stdout=out, stderr=log, env=env if env is not None else dict(os.environ))
        watch = Watch(proc.pid)
        watch.start()
        _, status, usage = os.wait4(proc.pid, 0)
        watch.finish()
    wall = time.perf_counter() - started
    # Orphans the wrapper reaped are in wait4's figure already (a worker whose daemon ended first).
    with open(reaped_path, encoding="ascii") as handle:
        reaped = {int(line) for line in handle if line.strip()}
    auto_reaped = watch.lost(skip=reaped)
    proc.returncode = os.waitstatus_to_exitcode(status)
    with open(out_path, encoding="utf-8", errors="replace") as handle:
        stdout = handle.read()
    if proc.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            tail = handle.read()[-3000:]
        raise RuntimeError(f"{' '.join(cmd[:3])} ... exited {proc.returncode}\n{stdout[-2000:]}\n{tail}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime + auto_reaped, "user_s": usage.ru_utime,
            "sys_s": usage.ru_stime, "auto_reaped_s": auto_reaped, "stdout": stdout}


def _wrap(reaped_path: str, cmd: List[str]) -> int:
    """Be a subreaper, run ``cmd``, then reap every descendant (killing any still up after LINGER_S); the pids of
    the orphans reaped go to ``reaped_path``, a line each."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    child = subprocess.Popen(cmd)
    reaped = open(reaped_path, "w", encoding="ascii")
    while True:  # orphans may arrive before the child ends: reap whatever ends, until the child does
        pid, status = os.waitpid(-1, 0)
        if pid == child.pid:
            break
        reaped.write(f"{pid}\n")
    code = os.waitstatus_to_exitcode(status)
    deadline = time.time() + LINGER_S
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            reaped.close()
            return code
        if pid:
            reaped.write(f"{pid}\n")
        if pid == 0:
            if time.time() > deadline:
                for left in tree(os.getpid())[1:]:
                    try:
                        os.kill(left, 9)
                    except OSError:
                        pass
                print(f"cpu.py: killed descendants still running {LINGER_S:.0f}s after {cmd[0]} ended",
                      file=sys.stderr)
                deadline = float("inf")
            time.sleep(0.05)


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--wrap" and sys.argv[3] == "--":
        sys.exit(_wrap(sys.argv[2], sys.argv[4:]))
    print(json.dumps({"usage": "python bench/cpu.py --wrap REAPED_FILE -- CMD..."}))
    sys.exit(2)

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
"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
from typing import Dict, Iterable, List, Optional, Set

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


class TreeClock:
    """CPU and wall time of this process's tree (servers excluded) between ``start()`` and ``stop()``."""

    def __init__(self, exclude: Iterable[int] = ()) -> None:
        self.exclude: Set[int] = set(exclude)
        self.cpu_s = self.wall_s = 0.0

    def start(self) -> TreeClock:
        self._cpu, self._wall = tree_cpu(os.getpid(), self.exclude), time.perf_counter()
        return self

    def stop(self) -> TreeClock:
        self.wall_s = time.perf_counter() - self._wall
        self.cpu_s = tree_cpu(os.getpid(), self.exclude) - self._cpu
        return self


def measure(cmd: List[str], log_path: str, env: Optional[Dict[str, str]] = None) -> Dict[str, object]:
    """Run ``cmd`` under the subreaper wrapper: {wall_s, cpu_s, user_s, sys_s, stdout}; raises when it fails."""
    wrapped = [sys.executable, os.path.abspath(__file__), "--wrap", "--", *list(cmd)]
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    out_path = log_path + ".stdout"
    started = time.perf_counter()
    with open(log_path, "wb") as log, open(out_path, "wb") as out:
        proc = subprocess.Popen(wrapped, stdout=out, stderr=log, env=env if env is not None else dict(os.environ))
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    with open(out_path, encoding="utf-8", errors="replace") as handle:
        stdout = handle.read()
    if proc.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            tail = handle.read()[-3000:]
        raise RuntimeError(f"{' '.join(cmd[:3])} ... exited {proc.returncode}\n{stdout[-2000:]}\n{tail}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "user_s": usage.ru_utime,
            "sys_s": usage.ru_stime, "stdout": stdout}


def _wrap(cmd: List[str]) -> int:
    """Be a subreaper, run ``cmd``, then reap every descendant (killing any still up after LINGER_S)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    child = subprocess.Popen(cmd)
    _, status = os.waitpid(child.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    deadline = time.time() + LINGER_S
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return code
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
    if len(sys.argv) > 2 and sys.argv[1] == "--wrap" and sys.argv[2] == "--":
        sys.exit(_wrap(sys.argv[3:]))
    print(json.dumps({"usage": "python bench/cpu.py --wrap -- CMD..."}))
    sys.exit(2)

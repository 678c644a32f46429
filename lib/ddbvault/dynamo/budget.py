"""The job's one capacity budget, held on the driver and served to every task: safe at any executor count.

A budget split into per-task shares when the job starts (budget / ``defaultParallelism``) is wrong on EMR,
where dynamic allocation adds executors during the job: every new task takes a full share and the table sees
several times the budget. Shares fixed per segment are safe but leave most of the budget unused when few tasks
run. So the budget is not split at all: the driver runs :class:`BudgetService`, one token bucket in capacity
units for the whole job, and every reader or writer thread of every task reserves units from it before each
call (:class:`BudgetClient`, the same interface as :class:`~ddbvault.dynamo.pacing.RateLimiter`). However many
tasks run, at any moment, the table sees the bucket's rate; and because reservations queue in arrival order,
the budget is used whole whenever at least one caller is waiting.

Each reservation is one line of JSON over one TCP connection per task, answered at once with how long the
caller must wait (it sleeps on its own side), the current rate and how many units one call should cost
(``call``: a second of the rate shared by the callers active now, so pages and batches shrink as tasks are
added and the queue of promises never runs far ahead of a rate cut). What a call really cost is reported with
the next reservation. Throttles reach the service too, which cuts the one rate every task follows (AIMD).

The service binds to the driver's address only, and a task must present the job's random secret first.
"""
from __future__ import annotations

import json
import logging
import secrets
import socket
import socketserver
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ddbvault.dynamo import table as tables
from ddbvault.dynamo.pacing import RateLimiter
from ddbvault.errors import CapacityError, UsageError

log = logging.getLogger(__name__)

# The bucket holds at most this much unused capacity: over any 10-second window the table sees at most
# 10.5 seconds of the budget, inside the 10% an operator can be promised.
BUCKET_SECONDS = 0.5
# One call should cost about this much of the rate, shared among the callers active at once.
CALL_SECONDS = 1.0
# A connection that reserved nothing for this long no longer counts as an active caller.
IDLE_S = 5.0
_CONNECT_ATTEMPTS = 6
_CANCEL_CHECK_S = 0.2


@dataclass(frozen=True)
class Endpoint:
    """Where tasks reach the job's budget (pickled to executors). ``units`` is the budget, for messages."""

    host: str
    port: int
    secret: str
    units: float
    unit_name: str


@dataclass(frozen=True)
class _Kind:
    """How a read or a write budget is chosen: the flags, the default percent and where the table's figures are."""

    units_flag: str
    percent_flag: str
    default_percent: float
    provisioned: str
    on_demand_max: str
    warm: Optional[str]
    on_demand_default: float
    unit: str
    request_unit: str


KINDS = {
    # Reads: a quarter of the ~12,000 reads/s any on-demand table serves from creation, never a silent 40,000.
    "read": _Kind("--max-read-units", "--read-percent", 50.0, "ReadCapacityUnits", "MaxReadRequestUnits", None,
                  3000.0, "RCU", "RRU"),
    # Writes: three quarters of the ~4,000 writes/s a new on-demand table takes at first (a restore's new table
    # has nothing else to serve), or of its warm throughput.
    "write": _Kind("--max-write-units", "--write-percent", 80.0, "WriteCapacityUnits", "MaxWriteRequestUnits",
                   "WriteUnitsPerSecond", 3000.0, "WCU", "WRU"),
}


def table_budget(description: Dict[str, Any], kind: str, units: Optional[float],
                 percent: Optional[float]) -> Tuple[float, str]:
    """A job's budget for ``kind`` ("read" or "write") in units per second, and how it was chosen: explicit
    ``units``, else ``percent`` (default 50 for reads, 80 for writes) of the table's provisioned capacity, of its
    on-demand maximum, or (writes) of its warm throughput; else the on-demand default."""
    spec = KINDS[kind]
    if units is not None:
        if units <= 0:
            raise UsageError(f"{spec.units_flag} must be positive")
        return float(units), spec.units_flag
    chosen = spec.default_percent if percent is None else percent
    if not 0 < chosen <= 100:
        raise UsageError(f"{spec.percent_flag} must be in (0, 100]")
    name = description.get("TableName")
    if tables.billing_mode(description) == "PROVISIONED":
        provisioned = float((description.get("ProvisionedThroughput") or {}).get(spec.provisioned) or 0)
        if provisioned <= 0:
            raise UsageError(f"table {name} reports no provisioned {kind} capacity: pass {spec.units_flag}")
        return provisioned * chosen / 100.0, f"{chosen:g}% of provisioned {provisioned:g} {spec.unit}"
    cap = float((description.get("OnDemandThroughput") or {}).get(spec.on_demand_max) or 0)
    if cap > 0:
        return cap * chosen / 100.0, f"{chosen:g}% of the on-demand maximum {cap:g} {spec.request_unit}"
    warm = float((description.get("WarmThroughput") or {}).get(spec.warm) or 0) if spec.warm else 0.0
    if warm > 0:
        return warm * chosen / 100.0, f"{chosen:g}% of the table's warm throughput {warm:g} {spec.request_unit}/s"
    if percent is not None and spec.warm is None:
        raise UsageError(f"table {name} is on-demand without a throughput maximum, so {spec.percent_flag} has "
                         f"nothing to be a percent of: pass {spec.units_flag}")
    return spec.on_demand_default, (f"on-demand default {spec.on_demand_default:g} {spec.unit} "
                                    f"(set {spec.units_flag})")


class _Caller:
    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.last = time.monotonic()


class BudgetService:
    """Driver side: ``units_per_second`` for the whole job, whatever the number of tasks.

    ``with BudgetService(100.0, host=driver_host, unit_name="RCU") as service:`` then hand
    ``service.endpoint`` to the tasks. ``consumed`` is what the tasks reported DynamoDB charged (every attempt
    of every task, failed ones included: that is what the table paid); ``per_second`` the same by wall-clock
    second, for the job's summary.
    """

    def __init__(self, units_per_second: float, *, host: str = "127.0.0.1", unit_name: str = "RCU",
                 callers: int = 1, bucket_seconds: float = BUCKET_SECONDS) -> None:
        if units_per_second is None or units_per_second <= 0:
            raise ValueError(f"a budget must be positive, not {units_per_second}")
        self.units = float(units_per_second)
        self.unit_name = unit_name
        # Callers expected from the start (slots x threads): the first calls of tasks that start together are
        # sized for all of them, before the service has heard from each.
        self.expected_callers = max(1, callers)
        self.limiter = RateLimiter(self.units, burst_seconds=bucket_seconds, start_full=False)
        self._secret = secrets.token_hex(16)
        self._lock = threading.Lock()
        self._callers: Dict[int, _Caller] = {}
        self._per_second: Dict[int, float] = {}
        self._consumed = 0.0
        self._started = time.monotonic()
        self._server = _Server((host, 0), _handler(self))
        self._thread: Optional[threading.Thread] = None
        self.endpoint = Endpoint(host, self._server.server_address[1], self._secret, self.units, unit_name)

    # -- lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> BudgetService:
        self._thread = threading.Thread(target=self._server.serve_forever, name="ddbvault-budget", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- figures ---------------------------------------------------------------------------------------

    @property
    def consumed(self) -> float:
        with self._lock:
            return self._consumed

    def per_second(self) -> Dict[int, float]:
        with self._lock:
            return dict(self._per_second)

    def summary(self, window_s: int = 10, judged: bool = True) -> Dict[str, Any]:
        """Consumed units, the busiest ``window_s`` window and the mean rate, against the budget, and (``judged``)
        what held the job's pace (:func:`limited_by`): for a scan or a load, not for a stream's reads, whose pace
        is the stream's."""
        seconds = self.per_second()
        peak = max(windows(seconds, window_s) or [0.0]) / window_s
        span = (max(seconds) - min(seconds) + 1) if seconds else 0
        mean = sum(seconds.values()) / span if span else 0.0
        out = {"budget": self.units, "consumed": round(self.consumed, 1),
               "peak_window_rate": round(peak, 2), "mean_rate": round(mean, 2),
               "throttles": self.limiter.throttles, "active_s": span}
        if judged:
            out["limited_by"], out["advice"] = limited_by(self.units, mean, span, self.limiter.throttles,
                                                          self.unit_name)
        return out

    # -- what a connection asks for (called on the server's threads) -----------------------------------

    def _charge(self, units: float, at: float) -> None:
        with self._lock:
            self._consumed += units
            second = int(at)
            self._per_second[second] = self._per_second.get(second, 0.0) + units

    def _active_callers(self) -> int:
        now = time.monotonic()
        with self._lock:
            active = sum(c.threads for c in self._callers.values() if now - c.last < IDLE_S)
            return max(self.expected_callers if now - self._started < IDLE_S else 1, active)

    def answer(self, caller: _Caller, request: Dict[str, Any]) -> Dict[str, Any]:
        caller.last = time.monotonic()
        for _ in range(int(request.get("ok", 0))):
            self.limiter.recover()
        diff = float(request.get("d", 0.0))
        if diff:
            self.limiter.settle(0.0, diff)
            self._charge(diff, time.time())
        if request.get("throttled"):
            self.limiter.throttled()
        wait = 0.0
        units = float(request.get("u", 0.0))
        if units > 0:
            wait = self.limiter.reserve(units)
            self._charge(units, time.time() + wait)
        rate = self.limiter.rate or self.units
        return {"wait": wait, "rate": rate, "call": rate * CALL_SECONDS / self._active_callers()}


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _handler(service: BudgetService) -> type:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            try:
                hello = json.loads(self.rfile.readline() or b"{}")
            except ValueError:
                return
            if not secrets.compare_digest(str(hello.get("secret", "")), service._secret):
                return  # not one of this job's tasks
            caller = _Caller(max(1, int(hello.get("threads", 1))))
            key = id(caller)
            with service._lock:
                service._callers[key] = caller
            try:
                rate = service.limiter.rate or service.units
                hello_answer = {"rate": rate, "call": rate * CALL_SECONDS / service._active_callers()}
                self.wfile.write(json.dumps(hello_answer).encode() + b"\n")
                for line in self.rfile:
                    try:
                        request = json.loads(line)
                    except ValueError:
                        return
                    self.wfile.write(json.dumps(service.answer(caller, request)).encode() + b"\n")
                    self.wfile.flush()
            except OSError:
                return
            finally:
                with service._lock:
                    service._callers.pop(key, None)

    return Handler


class BudgetClient:
    """Executor side: one task's connection to the job's budget; shared by the task's threads.

    Same interface as :class:`~ddbvault.dynamo.pacing.RateLimiter` (``acquire``, ``settle``, ``throttled``,
    ``recover``, ``rate``, ``burst``, ``call_units``, ``consumed``, ``throttles``), so the scan and the batch
    writer take either. Settlements and successes travel with the next reservation (one round trip per call).
    """

    def __init__(self, endpoint: Endpoint, threads: int = 1, sleep=time.sleep) -> None:
        self.endpoint = endpoint
        self.threads = max(1, threads)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._file: Any = None
        self._diff = 0.0
        self._ok = 0
        self._rate = endpoint.units
        self._call = endpoint.units * CALL_SECONDS / self.threads
        self._consumed = 0.0
        self._throttles = 0
        self.target = endpoint.units

    # -- the connection --------------------------------------------------------------------------------

    def _connect(self) -> None:
        last: Optional[BaseException] = None
        for attempt in range(_CONNECT_ATTEMPTS):
            try:
                sock = socket.create_connection((self.endpoint.host, self.endpoint.port), timeout=30)
                file = sock.makefile("rwb")
                file.write(json.dumps({"secret": self.endpoint.secret, "threads": self.threads}).encode() + b"\n")
                file.flush()
                line = file.readline()
                if not line:
                    raise ConnectionError("the budget service closed the connection")
                answer = json.loads(line)
                self._rate = float(answer.get("rate", self._rate))
                self._call = float(answer.get("call", self._call))
                self._sock, self._file = sock, file
                return
            except (OSError, ValueError) as exc:
                last = exc
                self._sleep(min(5.0, 0.2 * 2 ** attempt))
        raise CapacityError(
            f"cannot reach the job's capacity budget service on the driver at {self.endpoint.host}:"
            f"{self.endpoint.port} ({last}): executors must reach the driver's address (on EMR, the cluster's "
            f"security groups allow it; check any custom ones); the job never reads or writes without it")

    def _ask(self, request: Dict[str, Any]) -> Dict[str, Any]:
        """One request and its answer (call with the lock held); reconnects once if the connection broke."""
        for attempt in (1, 2):
            if self._file is None:
                self._connect()
            try:
                self._file.write(json.dumps(request).encode() + b"\n")
                self._file.flush()
                line = self._file.readline()
                if line:
                    return json.loads(line)
                raise ConnectionError("the budget service closed the connection")
            except (OSError, ValueError):
                self._drop()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        for closable in (self._file, self._sock):
            try:
                if closable is not None:
                    closable.close()
            except OSError:
                pass
        self._file = self._sock = None

    def close(self) -> None:
        """Report what is still unreported, then hang up."""
        with self._lock:
            if self._file is not None and (self._diff or self._ok):
                try:
                    self._ask({"d": self._diff, "ok": self._ok})
                except OSError:
                    pass
                self._diff, self._ok = 0.0, 0
            self._drop()

    def __enter__(self) -> BudgetClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the limiter interface -------------------------------------------------------------------------

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._call

    @property
    def consumed(self) -> float:
        return self._consumed

    @property
    def throttles(self) -> int:
        return self._throttles

    def call_units(self, callers: int = 1) -> float:
        """Units one call should cost now (the service's figure: a second of the rate per active caller)."""
        with self._lock:
            if self._file is None:
                self._connect()
            return self._call

    def acquire(self, units: float, cancel: Optional[threading.Event] = None) -> bool:
        units = max(0.0, float(units))
        with self._lock:
            answer = self._ask({"u": units, "d": self._diff, "ok": self._ok})
            self._diff, self._ok = 0.0, 0
            self._consumed += units
            self._rate = float(answer.get("rate", self._rate))
            self._call = float(answer.get("call", self._call))
        wait = float(answer.get("wait", 0.0))
        deadline = time.monotonic() + wait
        while wait > 0:
            if cancel is not None:
                if cancel.is_set():
                    return False
                self._sleep(min(wait, _CANCEL_CHECK_S))
            else:
                self._sleep(wait)
            wait = deadline - time.monotonic()
        return True

    def settle(self, estimated: float, actual: float) -> None:
        with self._lock:
            diff = float(actual) - float(estimated)
            self._diff += diff
            self._consumed += diff

    def recover(self) -> None:
        with self._lock:
            self._ok += 1

    def throttled(self) -> None:
        with self._lock:
            self._throttles += 1
            answer = self._ask({"throttled": True, "d": self._diff, "ok": self._ok})
            self._diff, self._ok = 0.0, 0
            self._rate = float(answer.get("rate", self._rate))
            self._call = float(answer.get("call", self._call))


def limiter_for(endpoint: Optional[Endpoint], threads: int = 1) -> Any:
    """What a task paces with: the job's budget when it has one, else an unlimited local limiter."""
    return BudgetClient(endpoint, threads) if endpoint is not None else RateLimiter(None)


def close(limiter: Any) -> None:
    if isinstance(limiter, BudgetClient):
        limiter.close()


# Below this share of its budget, a job that was never throttled was held back by its own work, not by pacing.
BUDGET_SHARE_REACHED = 0.8
# A job shorter than this spent much of its time ramping up (tasks starting, the first calls sized for all
# callers): its mean rate says little about what held it.
MIN_ACTIVE_S = 30


def limited_by(budget: float, mean_rate: float, active_s: float, throttles: int,
               unit_name: str = "RCU") -> Tuple[str, str]:
    """(what held the job's pace, advice for the operator) from its budget and what it consumed.

    - ``budget``: over at least 30 s the job ran at 80% of its budget or more: the pacing held it there (a few
      throttles on the way, a partition splitting or a burst elsewhere on the table, do not change that);
    - ``table``: below that, and DynamoDB throttled calls: the table's (or an index's) capacity was below the
      budget;
    - ``cluster``: below that without a throttle over at least 30 s: the job's own work (its tasks and their
      threads, the CPU per item) was the limit, not the table: a bigger cluster would finish sooner;
    - ``unknown``: too short to tell (or nothing consumed).
    """
    share = mean_rate / budget if budget > 0 else 0.0
    long_enough = active_s >= MIN_ACTIVE_S and mean_rate > 0
    if long_enough and share >= BUDGET_SHARE_REACHED:
        also = f" ({throttles} calls were throttled on the way)" if throttles else ""
        return "budget", (f"the job ran at {share:.0%} of its budget of {budget:g} {unit_name}/s{also}: the budget "
                          f"set the pace; a larger one (if the table has capacity to spare) would finish sooner")
    if throttles:
        return "table", (f"DynamoDB throttled {throttles} calls and the job ran at {share:.0%} of its budget of "
                         f"{budget:g} {unit_name}/s: the table's (or an index's) capacity, not the budget, set the "
                         f"pace; a budget within the table's capacity would spare its other users the throttling")
    if not long_enough:
        return "unknown", f"the job was active {active_s:g} s: too short to tell what held its pace"
    return "cluster", (f"the job used {share:.0%} of its budget of {budget:g} {unit_name}/s ({mean_rate:g}/s on "
                       f"average over {active_s:g} s) without a throttle: its own tasks, not the table, set the "
                       f"pace; more executors (or cores) would finish sooner")


def windows(per_second: Dict[int, float], seconds: int = 10) -> List[float]:
    """Sums of every ``seconds`` consecutive seconds between the first and last second with activity."""
    if not per_second:
        return []
    first, last = min(per_second), max(per_second)
    values = [per_second.get(s, 0.0) for s in range(first, last + 1)]
    if len(values) <= seconds:
        return [sum(values)]
    out, total = [], sum(values[:seconds])
    out.append(total)
    for i in range(seconds, len(values)):
        total += values[i] - values[i - seconds]
        out.append(total)
    return out


def driver_host(spark) -> str:
    """The driver's address as executors reach it (what the driver's own services bind to)."""
    return spark.conf.get("spark.driver.host", "127.0.0.1")

"""The job's budget service: one budget on the driver, held whatever the number of tasks asking for it."""
from __future__ import annotations

import json
import socket
import threading
import time
from typing import Dict, List

import pytest

from ddbvault.dynamo.budget import BudgetClient, BudgetService, Endpoint, limited_by, windows
from ddbvault.errors import CapacityError

BUDGET = 200.0
WINDOW_S = 10


class Caller(threading.Thread):
    """One reader thread of one task: asks for what one call should cost, then "calls" (records the units at
    the moment it may spend them); a call really costs ``cost_factor`` times what it asked for."""

    def __init__(self, endpoint: Endpoint, stop: threading.Event, spent: Dict[int, float], lock: threading.Lock,
                 cost_factor: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.stop, self.spent, self.lock, self.cost_factor = endpoint, stop, spent, lock, cost_factor

    def run(self) -> None:
        with BudgetClient(self.endpoint) as client:
            while not self.stop.is_set():
                units = client.call_units()
                client.acquire(units)
                actual = units * self.cost_factor
                with self.lock:
                    second = int(time.time())
                    self.spent[second] = self.spent.get(second, 0.0) + actual
                time.sleep(0.01)  # the call's own latency
                client.settle(units, actual)


def run_scenario(callers_at: List[tuple], seconds: float, cost_factor: float = 1.0) -> Dict[int, float]:
    """``callers_at``: (start offset in seconds, how many callers join then). Returns units spent per second."""
    spent: Dict[int, float] = {}
    lock = threading.Lock()
    stop = threading.Event()
    threads: List[Caller] = []
    # The driver expects the callers that start with the job (its slots x threads); later ones are news.
    with BudgetService(BUDGET, host="127.0.0.1", unit_name="RCU", callers=callers_at[0][1]) as service:
        begun = time.monotonic()
        for offset, count in callers_at:
            time.sleep(max(0.0, begun + offset - time.monotonic()))
            for _ in range(count):
                caller = Caller(service.endpoint, stop, spent, lock, cost_factor)
                caller.start()
                threads.append(caller)
        time.sleep(max(0.0, begun + seconds - time.monotonic()))
        stop.set()
        for caller in threads:
            caller.join(timeout=10)
    # The last, partly filled second would understate the mean: only whole seconds count.
    last = max(spent)
    return {s: u for s, u in spent.items() if s < last}


def check(spent: Dict[int, float], label: str) -> None:
    sums = windows(spent, WINDOW_S)
    peak = max(sums) / WINDOW_S
    span = max(spent) - min(spent) + 1
    mean = sum(spent.values()) / span
    figures = (f"{label}: per second {[round(spent.get(s, 0)) for s in range(min(spent), max(spent) + 1)]}, "
               f"busiest {WINDOW_S}s window {peak:.1f}/s, mean {mean:.1f}/s, budget {BUDGET:.0f}/s")
    assert peak <= 1.1 * BUDGET, figures
    assert mean >= 0.85 * BUDGET, figures


def test_budget_holds_at_two_at_eight_and_when_tasks_are_added_mid_job():
    scenarios = {
        "2 callers": ([(0, 2)], 14),
        "8 callers": ([(0, 8)], 14),
        "2 callers, 6 more after 5 s (dynamic allocation)": ([(0, 2), (5, 6)], 14),
        "4 callers whose calls all cost 30% more than they asked": ([(0, 4)], 14, 1.3),
    }
    results: Dict[str, Dict[int, float]] = {}

    def run(label: str, args: tuple) -> None:
        results[label] = run_scenario(*args)

    threads = [threading.Thread(target=run, args=(label, args)) for label, args in scenarios.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for label in scenarios:
        check(results[label], label)


def test_call_size_shrinks_as_callers_join_and_a_throttle_slows_every_caller():
    with BudgetService(BUDGET, host="127.0.0.1") as service:
        first = BudgetClient(service.endpoint, threads=2)
        first.acquire(1.0)
        assert first.call_units() == pytest.approx(BUDGET / 2)
        second = BudgetClient(service.endpoint, threads=6)
        second.acquire(1.0)
        assert second.call_units() == pytest.approx(BUDGET / 8)
        second.throttled()
        first.acquire(1.0)
        assert (first.rate, first.call_units()) == (pytest.approx(BUDGET / 2), pytest.approx(BUDGET / 2 / 8))
        first.close()
        second.close()
        assert service.limiter.throttles == 1


def test_settled_costs_are_the_jobs_consumption():
    with BudgetService(1000.0, host="127.0.0.1") as service:
        with BudgetClient(service.endpoint) as client:
            for _ in range(5):
                client.acquire(10.0)
                client.settle(10.0, 12.5)
        deadline = time.time() + 5
        while service.consumed != pytest.approx(62.5) and time.time() < deadline:
            time.sleep(0.05)
        assert service.consumed == pytest.approx(62.5)
        assert sum(service.per_second().values()) == pytest.approx(62.5)


def test_a_connection_without_the_jobs_secret_gets_nothing():
    with BudgetService(BUDGET, host="127.0.0.1") as service:
        with socket.create_connection((service.endpoint.host, service.endpoint.port), timeout=5) as sock:
            sock.sendall(json.dumps({"secret": "guess", "threads": 1}).encode() + b"\n")
            sock.sendall(json.dumps({"u": 1000}).encode() + b"\n")
            assert sock.recv(100) == b""  # closed without an answer
        assert service.consumed == 0


def test_an_unreachable_service_stops_the_task_with_what_to_check():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = BudgetClient(Endpoint("127.0.0.1", port, "s", 10.0, "RCU"), sleep=lambda s: None)
    with pytest.raises(CapacityError) as caught:
        client.acquire(1.0)
    message = str(caught.value)
    assert message.startswith(f"cannot reach the job's capacity budget service on the driver at 127.0.0.1:{port}")
    assert "the job never reads or writes without it" in message


def test_windows_sum_every_run_of_seconds_with_gaps_as_zero():
    assert windows({10: 1.0, 11: 2.0, 13: 4.0}, 2) == [3.0, 2.0, 4.0]
    assert windows({5: 7.0}, 10) == [7.0]
    assert windows({}, 10) == []


@pytest.mark.parametrize("mean,active,throttles,expected", [
    (950.0, 120, 0, "budget"),      # pacing held it at the budget
    (800.0, 30, 0, "budget"),       # 80% is reached
    (990.0, 600, 4, "budget"),      # a few throttles on the way do not change that
    (790.0, 600, 0, "cluster"),     # below it, never throttled, long enough: the job's own work was the limit
    (100.0, 600, 3, "table"),       # throttled and below the budget: the table's capacity was the limit
    (100.0, 10, 2, "table"),        # however short the job
    (100.0, 29, 0, "unknown"),      # too short to tell
    (990.0, 29, 0, "unknown"),
    (0.0, 600, 0, "unknown"),       # nothing consumed
])
def test_what_held_a_jobs_pace(mean, active, throttles, expected):
    limit, advice = limited_by(1000.0, mean, active, throttles, "WCU")
    assert limit == expected
    assert "1000 WCU/s" in advice or expected == "unknown"
    if expected == "cluster":
        assert "79%" in advice and "more executors" in advice
    if throttles:
        assert f"{throttles} calls" in advice


def test_a_jobs_summary_says_what_held_its_pace():
    with BudgetService(1000.0, host="127.0.0.1", unit_name="RCU") as service:
        with BudgetClient(service.endpoint) as client:
            client.acquire(10.0)
            client.settle(10.0, 10.0)
        deadline = time.time() + 5
        while service.consumed != pytest.approx(10.0) and time.time() < deadline:
            time.sleep(0.05)
        judged = service.summary()
        assert (judged["limited_by"], judged["active_s"], judged["throttles"]) == ("unknown", 1, 0)
        assert "limited_by" not in service.summary(judged=False)

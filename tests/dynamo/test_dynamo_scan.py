"""ddbvault.dynamo.scan against moto, directly and through the fault proxy."""
from __future__ import annotations

import re
import threading
import time
from collections import Counter

import boto3
import pytest
from dynamo_helpers import Tables, canonical

from ddbvault.dynamo.pacing import RateLimiter
from ddbvault.dynamo.retry import RetryPolicy
from ddbvault.dynamo.scan import Page, estimate_rcu, scan_segment, scan_segments
from ddbvault.errors import CapacityError
from servers import REGION_A

FAST = RetryPolicy(max_attempts=12, base_delay_s=0.001, max_delay_s=0.01)


class TOP:
    """Jitter at its top: every backoff is its cap, so a time budget is reached after a known number of calls."""

    @staticmethod
    def uniform(low: float, high: float) -> float:
        return high


def hash_items(n):
    return [{
        "pk": {"S": f"item-{i:04d}"},
        "n": {"N": str(i * 7)},
        "blob": {"B": bytes([i % 256, 0, 255]) * 3},
        "text": {"S": "x" * (i % 50)},
        "tags": {"SS": [f"t{i % 3}", "all"]},
        "nums": {"NS": ["1", str(i + 2)]},
        "bins": {"BS": [b"\x00", bytes([i % 200 + 1])]},
        "flag": {"BOOL": i % 2 == 0},
        "none": {"NULL": True},
        "doc": {"M": {"a": {"L": [{"N": str(i)}, {"S": "s"}, {"M": {}}]}, "e": {"S": ""}}},
    } for i in range(n)]


def range_items(n):
    return [{"pk": {"S": f"user-{i % 17}"}, "sk": {"N": str(i)}, "v": {"S": f"value {i}"},
             "raw": {"B": b"\xff" * (i % 5)}} for i in range(n)]


@pytest.fixture(scope="module")
def loaded(aws_endpoint):
    """Two tables, loaded once for the module: hash-only (240 items) and hash+range (150 items)."""
    made = Tables(boto3.client("dynamodb", region_name=REGION_A, endpoint_url=aws_endpoint))
    hash_table = made.create("pk")
    range_table = made.create("pk", "S", "sk", "N")
    data = {hash_table: hash_items(240), range_table: range_items(150)}
    for name, items in data.items():
        made.put_all(name, items)
    yield data
    for name in made.names:
        made.client.delete_table(TableName=name)


def assert_exact(pages_items, expected):
    got = Counter(canonical(i) for i in pages_items)
    assert max(got.values()) == 1, "an item came back twice"
    assert set(got) == {canonical(i) for i in expected}
    assert len(pages_items) == len(expected)


@pytest.mark.parametrize("total,threads", [(1, 1), (4, 2), (7, 3)])
def test_segments_union_is_the_table(faults, loaded, total, threads):
    limiter = RateLimiter(None)
    for table, expected in loaded.items():
        got = list(scan_segments(table, range(total), total, threads=threads, limiter=limiter, page_size=60))
        done = Counter(seg for seg, page in got if page.done)
        assert done == Counter(range(total))  # one done page per segment ...
        for segment in range(total):  # ... and it is the segment's last
            assert [p.done for s, p in got if s == segment][-1] is True
        assert all(seg == page.segment for seg, page in got)
        assert_exact([i for _, p in got for i in p.items], expected)
        assert sum(p.scanned for _, p in got) == len(expected)
    # The limiter counted exactly what the pages reported (moto says 1.0 per page, whatever it read).
    assert limiter.consumed == pytest.approx(faults.counters()["requests"]["Scan"] * 1.0)


def test_segment_pages_come_in_order_and_resume_from_last_key(faults, loaded):
    table, expected = list(loaded.items())[1]
    pages = list(scan_segment(table, 0, 2, page_size=20))
    assert len(pages) >= 3
    assert [p.done for p in pages] == [False] * (len(pages) - 1) + [True]
    assert [p.last_key is None for p in pages] == [p.done for p in pages]
    resumed = list(scan_segment(table, 0, 2, page_size=20, exclusive_start_key=pages[0].last_key))
    assert [canonical(i) for p in resumed for i in p.items] == [canonical(i) for p in pages[1:] for i in p.items]
    other = list(scan_segment(table, 1, 2, page_size=200))
    assert_exact([i for p in pages + other for i in p.items], expected)


def test_limiter_consumed_is_sum_of_pages_and_estimates_follow_pages(faults, loaded, clock):
    table = next(iter(loaded))
    calls = []

    class Recording(RateLimiter):
        def acquire(self, units, cancel=None):
            calls.append(("acquire", units))
            return super().acquire(units, cancel)

        def settle(self, estimated, actual):
            calls.append(("settle", estimated, actual))
            super().settle(estimated, actual)

    limiter = Recording(50.0, clock=clock, sleep=clock.sleep)
    pages = list(scan_segment(table, 0, 1, limiter=limiter, page_size=100))
    assert limiter.consumed == pytest.approx(sum(p.consumed for p in pages))
    # First page: a full page's 128 RCU capped at the burst (50); then the last page's cost.
    expected = []
    estimate = 50.0
    for page in pages:
        expected += [("acquire", estimate), ("settle", estimate, page.consumed)]
        estimate = max(0.5, page.consumed)
    assert calls == expected


def test_consistent_read_first_estimate_doubles(faults, loaded):
    table = next(iter(loaded))
    seen = []

    class Recording(RateLimiter):
        def acquire(self, units, cancel=None):
            seen.append(units)
            return True

    list(scan_segment(table, 0, 8, limiter=Recording(None), consistent_read=True))
    assert seen[0] == 256.0
    assert faults.counters()["requests"]["Scan"] == len(seen)


def test_missing_consumed_capacity_is_estimated_from_item_sizes(faults, loaded):
    table, expected = next(iter(loaded.items()))
    faults.set_rules([{"op": "Scan", "fault": "strip_consumed"}])
    limiter = RateLimiter(None)
    pages = list(scan_segment(table, 0, 1, limiter=limiter, page_size=100))
    assert [p.consumed for p in pages] == [estimate_rcu(p.items, False) for p in pages]
    assert pages[0].consumed >= 0.5 * (sum(len(str(i)) for i in pages[0].items) // 4096)
    assert limiter.consumed == pytest.approx(sum(p.consumed for p in pages))
    assert_exact([i for p in pages for i in p.items], expected)


def test_estimate_rcu_rule():
    assert estimate_rcu([], False) == 0.5  # an empty page still costs the minimum
    big = [{"pk": {"S": "a" * 5000}}]
    assert estimate_rcu(big, False) == 1.0  # 5 KB: two 4 KB units at 0.5
    assert estimate_rcu(big, True) == 2.0
    assert estimate_rcu([{"b": {"B": b"\x00" * 9000}}], False) == 1.5  # bytes count as bytes


def test_throttles_and_server_errors_are_retried_exactly(faults, loaded):
    table, expected = next(iter(loaded.items()))
    faults.set_rules([
        {"op": "Scan", "fault": "throttle", "every": 3},
        {"op": "Scan", "fault": "throttle", "code": "ThrottlingException", "every": 4},
        {"op": "Scan", "fault": "throttle", "code": "RequestLimitExceeded", "every": 5},
        {"op": "Scan", "fault": "server_error", "every": 4},
    ])
    limiter = RateLimiter(None)
    got = list(scan_segments(table, range(4), 4, threads=4, limiter=limiter, policy=FAST, page_size=40))
    counters = faults.counters()
    injected = [r["injected"] for r in counters["rules"]]
    assert all(n > 0 for n in injected), counters
    # Every request either was a fault we injected or became exactly one page.
    assert counters["requests"]["Scan"] == len(got) + sum(injected)
    # Every throttle (and no server error) slowed the limiter.
    assert limiter.throttles == sum(injected[:3])
    assert_exact([i for _, p in got for i in p.items], expected)


def test_outage_raises_capacity_error_naming_the_segment(faults, loaded):
    table = next(iter(loaded))
    faults.set_rules(["Scan:throttle:after=2"])
    # Throttling is budgeted by time: backoffs of 1, 2 and 4 ms (jitter at its top) reach the 7 ms budget.
    policy = RetryPolicy(max_attempts=1, base_delay_s=0.001, max_delay_s=0.01, throttle_s=0.007, random=TOP)
    with pytest.raises(CapacityError) as caught:
        list(scan_segment(table, 2, 4, policy=policy, page_size=10))
    message = str(caught.value)
    assert message.startswith(f"Scan of table {table} segment 2/4 failed after 4 attempts")
    assert "ProvisionedThroughputExceededException" in message
    assert "lower --max-read-units or raise the table's capacity, or raise --max-throttle-minutes" in message
    assert faults.counters()["requests"]["Scan"] == 2 + 4


def test_outage_in_concurrent_scan_stops_every_thread(faults, loaded):
    table = next(iter(loaded))
    faults.set_rules(["Scan:server_error:after=5"])
    policy = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.01)
    start = time.monotonic()
    with pytest.raises(CapacityError) as caught:
        for _ in scan_segments(table, range(7), 7, threads=3, policy=policy, page_size=10):
            pass
    assert re.match(rf"Scan of table {table} segment \d/7 failed after 3 attempts; last error "
                    r"InternalServerError", str(caught.value))
    assert time.monotonic() - start < 10
    assert not [t for t in threading.enumerate() if t.name.startswith("ddbvault-scan-")]


def test_consumer_leaving_early_stops_workers(faults, loaded):
    table = next(iter(loaded))
    pages = scan_segments(table, range(7), 7, threads=3, page_size=5, max_pending_pages=1)
    first = next(pages)
    assert isinstance(first[1], Page)
    pages.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("ddbvault-scan-")]


def test_bounded_queue_applies_backpressure(faults, loaded):
    table = list(loaded)[1]
    pages = scan_segments(table, range(4), 4, threads=2, page_size=10, max_pending_pages=2)
    next(pages)
    time.sleep(0.5)  # workers may fill the queue and hold one page each, then must wait
    # One page taken, two queued, one held by each blocked worker: nothing more was read.
    assert faults.counters()["requests"]["Scan"] <= 1 + 2 + 2
    rest = list(pages)
    assert faults.counters()["requests"]["Scan"] == 1 + len(rest)


def test_bad_segment_is_refused():
    with pytest.raises(ValueError):
        next(scan_segment("t", 4, 4))

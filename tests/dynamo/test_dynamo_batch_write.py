"""ddbvault.dynamo.batch_write against moto through the fault proxy: exact landing, batching rules, pacing."""
from __future__ import annotations

import base64
import json
import math

import pytest
from dynamo_helpers import canonical

from ddbvault.dynamo.batch_write import MAX_BATCH_ITEMS, batches, item_wcu, key_of, write_items
from ddbvault.dynamo.pacing import RateLimiter
from ddbvault.dynamo.retry import RetryPolicy
from ddbvault.errors import CapacityError, TableError, UnprocessedItemsError

FAST = RetryPolicy(max_attempts=12, base_delay_s=0.001, max_delay_s=0.01)


class TOP:
    """Jitter at its top: every backoff is its cap, so a time budget is reached after a known number of calls."""

    @staticmethod
    def uniform(low: float, high: float) -> float:
        return high


def size_of(item):
    """DynamoDB's item size, near enough for these tests (scalars only): attribute names plus values."""
    total = 0
    for name, value in item.items():
        ((_, raw),) = value.items()
        total += len(name) + (len(raw) if isinstance(raw, (bytes, str)) else len(json.dumps(raw)))
    return total


def from_wire(item):
    """A put request's item as the client had it: B travels base64-encoded in the JSON body."""
    return {name: {"B": base64.b64decode(v["B"])} if "B" in v else v for name, v in item.items()}


def records_with_duplicates(n, *, keys, pad=0):
    """``n`` records over ``keys`` distinct keys: every key is written n/keys times, the last write wins."""
    records = []
    for i in range(n):
        item = {"pk": {"S": f"k{i % keys}"}, "sk": {"N": str(i % 3)}, "seq": {"N": str(i)},
                "pad": {"S": "p" * pad}, "bin": {"B": bytes([i % 256])}}
        records.append((item, size_of(item)))
    return records


def last_wins(records):
    final = {}
    for item, _ in records:
        final[(item["pk"]["S"], item["sk"]["N"])] = item
    return {canonical(i) for i in final.values()}


def sent_batches(proxy):
    """The put requests of every BatchWriteItem call the proxy saw, one list per call."""
    calls = []
    for body in proxy.recorded("BatchWriteItem"):
        ((_, requests),) = body["RequestItems"].items()
        calls.append([from_wire(r["PutRequest"]["Item"]) for r in requests])
    return calls


def assert_well_formed(calls):
    for items in calls:
        assert 0 < len(items) <= MAX_BATCH_ITEMS
        keys = [(i["pk"]["S"], i["sk"]["N"]) for i in items]
        assert len(keys) == len(set(keys)), f"duplicate keys in one call: {keys}"


def test_unprocessed_items_are_resent_until_all_land(faults, tables):
    table = tables.create("pk", "S", "sk", "N")
    records = records_with_duplicates(150, keys=40)
    faults.set_rules([
        {"op": "BatchWriteItem", "fault": "unprocessed", "first": 3, "keep": 0},
        {"op": "BatchWriteItem", "fault": "unprocessed", "every": 2, "keep": 5},
        {"op": "BatchWriteItem", "fault": "throttle", "every": 4},
        {"op": "BatchWriteItem", "fault": "server_error", "every": 5},
    ], record=True)
    stats = write_items(table, records, key_names=["pk", "sk"], policy=FAST)
    assert {canonical(i) for i in tables.scan_all(table)} == last_wins(records)
    counters = faults.counters()
    injected = [r["injected"] for r in counters["rules"]]
    assert all(n > 0 for n in injected), counters
    assert stats.items == len(records)
    assert stats.retries == injected[2] + injected[3]  # throttles and 500s: repeated calls
    assert stats.batches == counters["requests"]["BatchWriteItem"] - stats.retries
    assert stats.unprocessed_retries >= injected[0]
    calls = sent_batches(faults)
    assert_well_formed(calls)
    # Every item was accepted exactly once by moto (the calls that got through, minus deferred items).
    assert_sent_items_cover(calls, records)


def assert_sent_items_cover(calls, records):
    sent = {canonical(i) for items in calls for i in items}
    assert sent == {canonical(i) for i, _ in records}


def test_repeated_key_starts_a_new_batch_and_later_wins(faults, tables):
    table = tables.create("pk", "S", "sk", "N")
    a1 = {"pk": {"S": "a"}, "sk": {"N": "1"}, "v": {"S": "first"}}
    b = {"pk": {"S": "b"}, "sk": {"N": "1"}, "v": {"S": "b"}}
    a2 = {"pk": {"S": "a"}, "sk": {"N": "1.0"}, "v": {"S": "second"}}  # same key: numbers compare by value
    c = {"pk": {"S": "c"}, "sk": {"N": "1"}, "v": {"S": "c"}}
    a3 = {"pk": {"S": "a"}, "sk": {"N": "1"}, "v": {"S": "third"}}
    faults.set_rules([], record=True)
    stats = write_items(table, [(x, size_of(x)) for x in (a1, b, a2, c, a3)], key_names=["pk", "sk"])
    assert sent_batches(faults) == [[a1, b], [a2, c], [a3]]
    assert stats.batches == 3 and stats.items == 5
    assert {canonical(i) for i in tables.scan_all(table)} == {canonical(x) for x in (a3, b, c)}


def test_batches_respect_count_and_size_limits():
    big = [({"pk": {"S": f"k{i}"}}, 390 * 1024) for i in range(100)]
    groups = list(batches(big, ["pk"], "t"))
    assert [len(g) for g in groups] == [25, 25, 25, 25]
    huge = [({"pk": {"S": f"k{i}"}}, 6 * 1024 * 1024) for i in range(5)]  # sizes as claimed by the caller
    assert [len(g) for g in batches(huge, ["pk"], "t")] == [2, 2, 1]


def test_threads_keep_one_key_in_order(faults, tables):
    table = tables.create("pk", "S", "sk", "N")
    records = records_with_duplicates(200, keys=30)
    faults.set_rules([{"op": "BatchWriteItem", "fault": "unprocessed", "every": 2, "keep": 3}], record=True)
    stats = write_items(table, records, key_names=["pk", "sk"], policy=FAST, threads=4)
    assert {canonical(i) for i in tables.scan_all(table)} == last_wins(records)
    assert stats.items == len(records)
    assert stats.batches == faults.counters()["requests"]["BatchWriteItem"]
    assert_well_formed(sent_batches(faults))


def test_exhausted_unprocessed_raises_naming_the_keys(faults, tables):
    table = tables.create("pk", "S", "sk", "N")
    records = records_with_duplicates(60, keys=60)
    faults.set_rules(["BatchWriteItem:unprocessed:keep=0"], record=True)
    # Backoffs of 2, 4 and 8 ms (jitter at its top): the third wait passes the 7 ms throttle budget.
    policy = RetryPolicy(max_attempts=1, base_delay_s=0.001, max_delay_s=0.01, throttle_s=0.007, random=TOP)
    with pytest.raises(UnprocessedItemsError) as caught:
        write_items(table, records, key_names=["pk", "sk"], policy=policy)
    message = str(caught.value)
    assert message.startswith(f"BatchWriteItem to table {table}: 25 items did not finish")
    assert "on 4 calls in a row over 0s of backoff" in message
    assert "keys {pk=S:'k0', sk=N:0}, {pk=S:'k1', sk=N:1}, {pk=S:'k2', sk=N:2}," in message
    assert "and 20 more" in message
    assert "lower --max-write-units" in message and "raise --max-throttle-minutes" in message
    assert len(caught.value.unprocessed_keys) == 25
    assert faults.counters()["requests"]["BatchWriteItem"] == 4  # later batches never sent
    assert tables.scan_all(table) == []


def test_partial_progress_is_not_exhaustion(faults, tables):
    table = tables.create("pk", "S", "sk", "N")
    records = records_with_duplicates(25, keys=25)
    faults.set_rules(["BatchWriteItem:unprocessed:keep=1"])  # forever: one item per call gets through
    policy = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.01)
    stats = write_items(table, records, key_names=["pk", "sk"], policy=policy)
    assert stats.batches == 25 and stats.unprocessed_retries == 24 and stats.items == 25
    assert {canonical(i) for i in tables.scan_all(table)} == last_wins(records)


def test_throttled_forever_raises_capacity_error(faults, tables):
    table = tables.create("pk", "S", "sk", "N")
    faults.set_rules(["BatchWriteItem:throttle:code=ThrottlingException"])
    # Throttling is budgeted by time: backoffs of 1 and 2 ms reach the 3 ms budget; attempts do not count.
    policy = RetryPolicy(max_attempts=1, base_delay_s=0.001, max_delay_s=0.01, throttle_s=0.003, random=TOP)
    with pytest.raises(CapacityError) as caught:
        write_items(table, records_with_duplicates(5, keys=5), key_names=["pk", "sk"], policy=policy)
    assert not isinstance(caught.value, UnprocessedItemsError)
    message = str(caught.value)
    assert message.startswith(f"BatchWriteItem to table {table} failed after 3 attempts; "
                              "last error ThrottlingException")
    assert "lower --max-write-units" in message


def test_pacing_counts_wcu(faults, tables, clock):
    table = tables.create("pk", "S", "sk", "N")
    records = records_with_duplicates(100, keys=100, pad=1400)  # ~1.5 KB: 2 WCU each
    assert {item_wcu(size) for _, size in records} == {2}
    # moto reports a constant 1.0 per call: take ConsumedCapacity away so the estimate is what counts.
    faults.set_rules(["BatchWriteItem:strip_consumed"], record=True)
    limiter = RateLimiter(50.0, clock=clock, sleep=clock.sleep)
    stats = write_items(table, records, key_names=["pk", "sk"], limiter=limiter, wcu_multiplier=1.5)
    expected_wcu = 100 * 2 * 1.5
    assert stats.wcu == pytest.approx(expected_wcu) and limiter.consumed == pytest.approx(expected_wcu)
    sent = [i for items in sent_batches(faults) for i in items]
    assert sum(math.ceil(size_of(i) / 1024) for i in sent) * 1.5 == pytest.approx(expected_wcu)
    # 300 WCU at 50/s: one burst free, at most one burst of debt at the end.
    assert (expected_wcu - 2 * 50) / 50 <= clock.now <= expected_wcu / 50
    assert {canonical(i) for i in tables.scan_all(table)} == last_wins(records)


def test_consumed_capacity_is_settled_when_reported(faults, tables):
    table = tables.create("pk", "S", "sk", "N")
    limiter = RateLimiter(None)
    stats = write_items(table, records_with_duplicates(60, keys=60), key_names=["pk", "sk"], limiter=limiter)
    assert stats.batches == 3
    assert stats.wcu == 3.0 and limiter.consumed == 3.0  # moto's constant 1.0 per call, as reported


def test_missing_key_attribute_is_a_table_error():
    with pytest.raises(TableError, match="lacks key attribute 'sk'"):
        key_of({"pk": {"S": "a"}}, ["pk", "sk"], "orders")
    with pytest.raises(TableError):
        write_items("orders", [({"pk": {"S": "a"}}, 10)], key_names=["pk", "sk"], region="us-east-1", threads=2)

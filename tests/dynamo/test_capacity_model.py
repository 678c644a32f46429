"""standins/capacity.py: DynamoDB's capacity rules, their enforcement and the per-second timeline, in front of moto.

The session's capacity proxy (fixture ``capacity``) serves most tests; clients go through it with retries off, so
every throttle the proxy answers is seen. Runs that measure a rate start at a whole second, so the timeline's first
and last seconds are full ones.
"""
from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from typing import Any, Callable, Dict, Optional

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from capacity import control as capacity_control
from capacity import item_size, partition_of, read_cost, summary, value_size, windows, write_cost

from servers import REGION_A

NO_RETRY = Config(retries={"mode": "standard", "total_max_attempts": 1})
THROTTLED = "ProvisionedThroughputExceededException"


def through(url: str, service: str = "dynamodb") -> Any:
    return boto3.client(service, region_name=REGION_A, endpoint_url=url, config=NO_RETRY)


def make_table(direct: Any, tables: Any, *, indexes: bool = False, stream: bool = False) -> str:
    """A table keyed by ``pk`` (``indexes``: and ``sk``, an LSI on ``s``, a GSI on ``g``), dropped after the test."""
    name = "cap-" + uuid.uuid4().hex[:12]
    attrs = [{"AttributeName": "pk", "AttributeType": "S"}]
    schema = [{"AttributeName": "pk", "KeyType": "HASH"}]
    extra: Dict[str, Any] = {}
    if indexes:
        attrs += [{"AttributeName": n, "AttributeType": "S"} for n in ("sk", "s", "g")]
        schema.append({"AttributeName": "sk", "KeyType": "RANGE"})
        extra["LocalSecondaryIndexes"] = [{"IndexName": "by-s", "Projection": {"ProjectionType": "ALL"},
                                           "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
                                                         {"AttributeName": "s", "KeyType": "RANGE"}]}]
        extra["GlobalSecondaryIndexes"] = [{"IndexName": "by-g", "Projection": {"ProjectionType": "ALL"},
                                            "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}]}]
    if stream:
        extra["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    direct.create_table(TableName=name, AttributeDefinitions=attrs, KeySchema=schema,
                        BillingMode="PAY_PER_REQUEST", **extra)
    tables.names.append(name)
    return name


def next_second() -> float:
    """Sleep to just after the next whole second; returns that second."""
    second = int(time.time()) + 1
    time.sleep(max(0.0, second - time.time() + 0.01))
    return second


def drive(send: Callable[[int], Optional[str]], per_second: float, until: float) -> Counter:
    """Call ``send(i)`` ``per_second`` times a second until ``until``; counts outcomes: "ok" or the error code."""
    outcomes: Counter = Counter()
    start = time.time()
    i = 0
    while start + i / per_second < until:
        time.sleep(max(0.0, start + i / per_second - time.time()))
        outcomes[send(i) or "ok"] += 1
        i += 1
    return outcomes


def put_sender(client: Any, table: str, key: Callable[[int], str]) -> Callable[[int], Optional[str]]:
    def send(i: int) -> Optional[str]:
        try:
            client.put_item(TableName=table, Item={"pk": {"S": key(i)}, "n": {"N": str(i)}})
        except ClientError as exc:
            return exc.response["Error"]["Code"]
        return None
    return send


def total(series: Dict[int, float]) -> float:
    return sum(series.values())


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# -- the rules, as pure functions --------------------------------------------------------------------------------

def test_sizes_follow_dynamodbs_rules():
    assert value_size({"S": "héllo"}) == 6  # UTF-8 bytes, not characters
    assert value_size({"B": b64(b"\x00\x01\x02")}) == 3  # decoded bytes, not the base64 text
    assert value_size({"N": "123.45"}) == 4  # 5 significant digits: (5 + 1) // 2 + 1
    assert value_size({"N": "-0.00100"}) == 2  # 1 significant digit
    assert value_size({"N": "0"}) == 2
    assert value_size({"N": "12345678901234567890"}) == 11  # 19 significant digits
    assert value_size({"N": "1E+125"}) == 2
    assert value_size({"BOOL": False}) == value_size({"NULL": True}) == 1
    assert value_size({"SS": ["a", "bc"]}) == 3
    assert value_size({"NS": ["1", "22.5"]}) == 2 + 3
    assert value_size({"BS": [b64(b"ab"), b64(b"cde")]}) == 5
    assert value_size({"L": [{"S": "ab"}, {"N": "1"}]}) == 3 + (1 + 2) + (1 + 2)
    assert value_size({"M": {"k": {"S": "v"}, "ü": {"NULL": True}}}) == 3 + (1 + 1 + 1) + (1 + 2 + 1)
    item = {"pk": {"S": "user#1"}, "tags": {"SS": ["x"]}, "doc": {"M": {"n": {"N": "10"}}}}
    assert item_size(item) == (2 + 6) + (4 + 1) + (3 + 3 + (1 + 1 + 2))


def test_units_and_partitions():
    assert [read_cost(0, False), read_cost(0, True)] == [0.5, 1.0]  # an empty page still costs a step
    assert [read_cost(4096, False), read_cost(4097, False), read_cost(4097, True)] == [0.5, 1.0, 2.0]
    assert [write_cost(0), write_cost(1024), write_cost(1025), write_cost(400 * 1024)] == [1, 1, 2, 400]
    assert partition_of({"S": "abc"}, 4) == int(hashlib.md5(b"abc").hexdigest(), 16) % 4
    assert partition_of({"N": "1.50"}, 7) == partition_of({"N": "1.5"}, 7) == partition_of({"N": "15E-1"}, 7)
    assert partition_of({"B": b64(b"abc")}, 4) == partition_of({"S": "abc"}, 4)
    assert [partition_of({"S": f"k{i}"}, 1) for i in range(5)] == [0] * 5


def test_windows_and_summary():
    assert windows({10: 5, 12: 7, 13: 1}, seconds=2) == [5.0, 7.0, 8.0]  # second 11 counts as 0
    assert windows({1: 2, 3: 4}, seconds=10) == [6.0]  # a span shorter than a window is one window
    assert windows({}, seconds=10) == []
    per_second = {100 + s: 20.0 for s in range(12)}
    per_second[105] = 30.0
    assert summary(per_second, budget=20, seconds=10) == {
        "span_s": 12, "total": 250.0, "peak_rate": 21.0, "mean_rate": 20.833, "utilisation": 1.042,
        "peak_ratio": 1.05}
    assert summary({7: 5.0}, budget=10, seconds=10)["peak_rate"] == 5.0
    assert summary({}, budget=10) == {"span_s": 0, "total": 0.0, "peak_rate": 0.0, "mean_rate": 0.0,
                                      "utilisation": 0.0, "peak_ratio": 0.0}


# -- through the proxy ----------------------------------------------------------------------------------------------

def test_reads_report_the_computed_capacity(capacity, direct, tables):
    table = make_table(direct, tables)
    capacity.watch(table, read_units=1000, write_units=1000)
    client = through(capacity.url)
    consumed = []

    def read(op: str, **kwargs: Any) -> None:
        consumed.append(getattr(client, op)(TableName=table, ReturnConsumedCapacity="TOTAL",
                                            **kwargs)["ConsumedCapacity"]["CapacityUnits"])

    read("scan")  # an empty page
    for key in ("k1", "k2", "k3"):  # 3,008 bytes each: 9,024 bytes, three 4 KB steps
        direct.put_item(TableName=table, Item={"pk": {"S": key}, "data": {"S": "x" * 3000}})
    read("scan")
    read("scan", ConsistentRead=True)
    read("scan", Limit=1)
    read("get_item", Key={"pk": {"S": "k1"}}, ConsistentRead=True)
    read("get_item", Key={"pk": {"S": "k1"}})
    read("get_item", Key={"pk": {"S": "nothing"}})
    read("query", KeyConditionExpression="#p = :v", ExpressionAttributeNames={"#p": "pk"},
         ExpressionAttributeValues={":v": {"S": "k2"}})
    assert consumed == [0.5, 1.5, 3.0, 0.5, 1.0, 0.5, 0.5, 0.5]
    batch = client.batch_get_item(RequestItems={table: {"Keys": [{"pk": {"S": "k1"}}, {"pk": {"S": "none"}}],
                                                        "ConsistentRead": True}},
                                  ReturnConsumedCapacity="TOTAL")
    assert batch["ConsumedCapacity"] == [{"TableName": table, "CapacityUnits": 2.0}]  # a miss costs a step too
    assert direct.scan(TableName=table, ReturnConsumedCapacity="TOTAL")["ConsumedCapacity"] == {
        "TableName": table, "CapacityUnits": 1.0}  # moto's own constant, for contrast
    timeline = capacity.timeline(table)
    assert (total(timeline["read"]), total(timeline["requests"]), total(timeline["write"])) == (10.0, 9, 0)


def test_writes_cost_the_table_and_every_index_they_land_in(capacity, direct, tables):
    table = make_table(direct, tables, indexes=True)
    capacity.watch(table, read_units=1000, write_units=1000)
    client = through(capacity.url)

    def write(op: str, **kwargs: Any) -> Dict[str, Any]:
        return getattr(client, op)(TableName=table, ReturnConsumedCapacity="INDEXES", **kwargs)["ConsumedCapacity"]

    # 1,507 bytes: 2 units for the table and 2 for the GSI (the item has g), none for the LSI (it lacks s).
    assert write("put_item", Item={"pk": {"S": "a"}, "sk": {"S": "1"}, "g": {"S": "x" * 1500}}) == {
        "TableName": table, "CapacityUnits": 4.0, "Table": {"CapacityUnits": 2.0},
        "GlobalSecondaryIndexes": {"by-g": {"CapacityUnits": 2.0}}}
    assert write("put_item", Item={"pk": {"S": "a"}, "sk": {"S": "2"}, "s": {"S": "v"}}) == {
        "TableName": table, "CapacityUnits": 2.0, "Table": {"CapacityUnits": 1.0},
        "LocalSecondaryIndexes": {"by-s": {"CapacityUnits": 1.0}}}
    # The updated item (read back by the proxy) now has g too: table, LSI and GSI.
    assert write("update_item", Key={"pk": {"S": "a"}, "sk": {"S": "2"}}, UpdateExpression="SET g = :g",
                 ExpressionAttributeValues={":g": {"S": "gg"}})["CapacityUnits"] == 3.0
    # A delete that returns the old item is charged by its size; one that does not, 1 per table and index.
    assert write("delete_item", Key={"pk": {"S": "a"}, "sk": {"S": "1"}}, ReturnValues="ALL_OLD")[
        "CapacityUnits"] == 4.0
    assert write("delete_item", Key={"pk": {"S": "a"}, "sk": {"S": "2"}})["CapacityUnits"] == 3.0
    # A failed condition still costs the table its units (2,009 bytes: 2).
    with pytest.raises(ClientError) as caught:
        client.put_item(TableName=table, Item={"pk": {"S": "a"}, "sk": {"S": "3"}, "big": {"S": "y" * 2000}},
                        ConditionExpression="attribute_exists(pk)")
    assert caught.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert total(capacity.timeline(table)["write"]) == 4 + 2 + 3 + 4 + 3 + 2


def test_default_partitions_follow_the_rates(capacity, direct, tables):
    table = make_table(direct, tables)
    assert [capacity.watch(table, read_units=r, write_units=w)["partitions"]
            for r, w in ((100, 100), (7000, 100), (100, 2500), (10000, 100))] == [1, 3, 3, 4]
    assert capacity.watch(table, read_units=100, write_units=100, partition_write_units=40)["partitions"] == 3
    with pytest.raises(ValueError, match="DescribeTable cap-no-such-table in us-east-1 answered 400"):
        capacity.watch("cap-no-such-table", read_units=1, write_units=1)


def test_writes_at_twice_the_rate_are_held_to_it(capacity, direct, tables):
    table = make_table(direct, tables)
    first = next_second()
    capacity.watch(table, read_units=100, write_units=20)
    outcomes = drive(put_sender(through(capacity.url), table, lambda i: f"k{i}"), per_second=40,
                     until=first + 12 - 0.05)
    timeline = capacity.timeline(table)
    report = summary(timeline["write"], budget=20, seconds=10)
    assert set(outcomes) == {"ok", THROTTLED}
    assert 0.4 <= outcomes[THROTTLED] / sum(outcomes.values()) <= 0.6, (outcomes, report)
    assert (total(timeline["write"]), total(timeline["throttled_write"]), total(timeline["requests"])) == (
        outcomes["ok"], outcomes[THROTTLED], sum(outcomes.values()))
    assert report["span_s"] == 12, report
    assert report["peak_ratio"] <= 1.10, report  # every 10-second window at or under the rate
    assert report["utilisation"] >= 0.85, report


def test_a_hot_partition_is_held_to_its_own_rate(capacity, direct, tables):
    """4 partitions of 10 WCU under a 30 WCU table: one key gets a partition's 10/s, keys spread get the table's
    30/s (the four partitions could take 40)."""
    hot, spread = make_table(direct, tables), make_table(direct, tables)
    first = next_second()
    for table in (hot, spread):
        assert capacity.watch(table, read_units=100, write_units=30, partitions=4,
                              partition_write_units=10)["partitions"] == 4
    outcomes: Dict[str, Counter] = {}

    def run(table: str, key: Callable[[int], str], per_second: float) -> None:
        outcomes[table] = drive(put_sender(through(capacity.url), table, key), per_second, until=first + 10 - 0.05)

    threads = [threading.Thread(target=run, args=(hot, lambda i: "the-hot-key", 30)),
               threading.Thread(target=run, args=(spread, lambda i: f"key-{i}", 60))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    hot_line, spread_line = capacity.timeline(hot), capacity.timeline(spread)
    hot_report = summary(hot_line["write"], budget=10, seconds=10)
    spread_report = summary(spread_line["write"], budget=30, seconds=10)
    assert (total(hot_line["write"]), total(spread_line["write"])) == (outcomes[hot]["ok"], outcomes[spread]["ok"])
    assert 0.85 <= hot_report["utilisation"] and hot_report["peak_ratio"] <= 1.10, (hot_report, outcomes)
    assert 0.85 <= spread_report["utilisation"] and spread_report["peak_ratio"] <= 1.10, (spread_report, outcomes)


def test_batch_write_partially_admitted_returns_unprocessed_items(capacity, direct, tables):
    table, other = make_table(direct, tables), make_table(direct, tables)
    # 5 units banked, refilled at 0.1 a second: the 6th item is admitted (the bucket is not yet in debt) and takes
    # it into debt; the rest are deferred.
    capacity.watch(table, read_units=100, write_units=0.1, initial_burst_seconds=50)
    client = through(capacity.url)
    puts = [{"PutRequest": {"Item": {"pk": {"S": f"b{i}"}}}} for i in range(10)]
    # (Other keys for the other table: moto takes equal keys in two tables for duplicates.)
    others = [{"PutRequest": {"Item": {"pk": {"S": f"o{i}"}}}} for i in range(3)]
    answer = client.batch_write_item(RequestItems={table: puts, other: others}, ReturnConsumedCapacity="TOTAL")
    assert answer["UnprocessedItems"] == {table: puts[6:]}
    assert sorted(answer["ConsumedCapacity"], key=lambda c: c["TableName"] != other) == [
        {"TableName": other, "CapacityUnits": 1.0, "Table": {"CapacityUnits": 1.0}},  # moto's own: untouched
        {"TableName": table, "CapacityUnits": 6.0}]
    assert sorted(i["pk"]["S"] for i in direct.scan(TableName=table)["Items"]) == [f"b{i}" for i in range(6)]
    assert len(direct.scan(TableName=other)["Items"]) == 3
    with pytest.raises(ClientError) as caught:  # nothing admitted: the whole call is throttled
        client.batch_write_item(RequestItems={table: puts[6:]})
    assert caught.value.response["Error"]["Code"] == THROTTLED
    timeline = capacity.timeline(table)
    assert (total(timeline["write"]), total(timeline["throttled_write"]), total(timeline["requests"])) == (6, 2, 2)


def test_unwatched_tables_pass_untouched(capacity, direct, tables):
    watched, free = make_table(direct, tables), make_table(direct, tables)
    capacity.watch(watched, read_units=0, write_units=0)  # nothing may pass for the watched table
    client = through(capacity.url)
    outcomes = Counter(put_sender(client, free, lambda i: f"k{i}")(i) or "ok" for i in range(50))
    assert outcomes == {"ok": 50}
    for kwargs in ({}, {"ReturnConsumedCapacity": "TOTAL"}, {"ReturnConsumedCapacity": "INDEXES", "Limit": 7}):
        via_proxy, straight = client.scan(TableName=free, **kwargs), direct.scan(TableName=free, **kwargs)
        via_proxy.pop("ResponseMetadata")
        straight.pop("ResponseMetadata")
        assert via_proxy == straight
    with pytest.raises(ClientError) as caught:
        client.scan(TableName=watched)
    assert caught.value.response["Error"]["Code"] == THROTTLED
    assert {t: c["totals"]["requests"] for t, c in capacity.counters().items()} == {watched: 1}


def test_a_pending_watch_starts_at_the_first_data_plane_request(capacity, direct, tables):
    """A table the code under test creates (a restore's): control-plane calls leave the watch pending, a request
    the target refuses (no table yet) too; the first write that names the created table starts the watch (its
    schema from DescribeTable then) and is the first request charged."""
    name = "cap-" + uuid.uuid4().hex[:12]
    settings = capacity.watch_pending(name, region=REGION_A, read_units=10, write_units=100)
    # A second of capacity on hand when it starts (the first request must not find empty buckets).
    assert (settings["partitions"], settings["write_units"], settings["initial_burst_seconds"]) == (1, 100, 1)
    with pytest.raises(ValueError, match="write_units"):
        capacity.watch_pending("cap-other", read_units=1)
    client = through(capacity.url)
    with pytest.raises(ClientError, match="ResourceNotFound"):
        client.put_item(TableName=name, Item={"pk": {"S": "early"}})
    client.create_table(TableName=name, AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}], BillingMode="PAY_PER_REQUEST")
    tables.names.append(name)
    client.describe_table(TableName=name)
    assert capacity.counters()[name]["pending"] is True
    with pytest.raises(ValueError, match="not watched yet"):
        capacity.timeline(name)
    items = [{"PutRequest": {"Item": {"pk": {"S": f"k{i}"}, "pad": {"S": "x" * 1500}}}} for i in range(3)]
    answer = client.batch_write_item(RequestItems={name: items}, ReturnConsumedCapacity="TOTAL")
    assert answer["ConsumedCapacity"] == [{"TableName": name, "CapacityUnits": 6.0}]  # ~1.5 KB: 2 WCU each
    assert capacity.counters()[name]["pending"] is False
    timeline = capacity.timeline(name)
    assert (total(timeline["write"]), total(timeline["requests"])) == (6, 1)


def test_stream_reads_are_limited_per_shard(capacity, direct, tables):
    table = make_table(direct, tables, stream=True)
    capacity.watch(table, read_units=100, write_units=100, stream_reads_per_shard=2)
    direct.put_item(TableName=table, Item={"pk": {"S": "a"}})
    streams = through(capacity.url, "dynamodbstreams")
    arn = direct.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    codes = []
    next_second()
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    for _ in range(3):
        try:
            iterator = streams.get_records(ShardIterator=iterator)["NextShardIterator"]
            codes.append("ok")
        except ClientError as exc:
            codes.append(exc.response["Error"]["Code"])
    next_second()
    streams.get_records(ShardIterator=iterator)  # a new second: the same shard may be read again
    assert codes == ["ok", "ok", "LimitExceededException"]
    timeline = capacity.timeline(table)
    assert (total(timeline["stream_reads"]), total(timeline["throttled_stream"])) == (3, 1)
    assert sorted(timeline["stream_reads"].values()) == [1, 2]


def test_the_script_is_steered_through_its_control_endpoint(aws_endpoint, direct, tables):
    table = make_table(direct, tables)
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "standins", "capacity.py")
    proc = subprocess.Popen([sys.executable, script, "--target", aws_endpoint], stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        counters = capacity_control(url, watch={"table": table, "read_units": 10, "write_units": 0.5,
                                                "initial_burst_seconds": 4})
        assert counters[table]["settings"]["partitions"] == 1
        outcomes = Counter(put_sender(through(url), table, lambda i: f"k{i}")(i) or "ok" for i in range(8))
        assert outcomes == {"ok": 3, THROTTLED: 5}  # 2 banked units, then the one that takes the bucket into debt
        timeline = capacity_control(url, table=table)
        assert all(isinstance(second, int) for second in timeline["write"])
        assert (total(timeline["write"]), total(timeline["throttled"]), total(timeline["requests"])) == (3, 5, 8)
        with pytest.raises(ValueError, match="not watched"):
            capacity_control(url, table="cap-never-watched")
        with pytest.raises(ValueError, match="DescribeTable"):
            capacity_control(url, watch={"table": "cap-no-such-table", "read_units": 1, "write_units": 1})
        assert capacity_control(url, unwatch=table) == {}
        assert Counter(put_sender(through(url), table, lambda i: f"k{i}")(i) or "ok" for i in range(5)) == {"ok": 5}
        capacity_control(url, watch={"table": table, "read_units": 1, "write_units": 1})
        assert capacity_control(url, reset=True) == {}
    finally:
        proc.terminate()
        proc.wait(timeout=10)

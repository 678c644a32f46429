"""verify_replica against a replica in region B, and the pure compare() / summarize() on small DataFrames."""
from __future__ import annotations

import json
import math
import os
import time

import boto3
import pytest
from jobs_helpers import create_table, every_type, name, put_items, scan_all

from ddbvault import codec
from ddbvault.errors import VerifyMismatch
from ddbvault.export import ExportOptions, export_table
from ddbvault.runner import Run
from ddbvault.vault import layout, staging
from ddbvault.verify import VerifyOptions, compare, planning_bytes, summarize, verify_replica
from servers import REGION_A, REGION_B

N_ITEMS = 30


@pytest.fixture(scope="module")
def replica(spark, aws_endpoint, tmp_path_factory):
    """A source in region A exported to a vault, and a replica in region B holding the very same items."""
    source_client = boto3.client("dynamodb", region_name=REGION_A)
    replica_client = boto3.client("dynamodb", region_name=REGION_B)
    source, target = name("ver-src"), name("ver-rep")
    for client, table in ((source_client, source), (replica_client, target)):
        create_table(client, table, [("pk", "S"), ("sk", "N")])
    items = [dict(every_type(i), pk={"S": f"user-{i % 5}"}, sk={"N": f"{i}.5"}) for i in range(N_ITEMS)]
    put_items(source_client, source, items)
    put_items(replica_client, target, scan_all(source_client, source))
    vault = str(tmp_path_factory.mktemp("verify") / "vault")
    export_table(ExportOptions(table=source, vault=vault, region=REGION_A, segments=2), Run(job="export_table"),
                 spark)
    yield vault, target, replica_client, {(i["pk"]["S"], i["sk"]["N"]): i for i in items}
    source_client.delete_table(TableName=source)
    replica_client.delete_table(TableName=target)


def verify(spark, vault, table, expect_ok):
    run = Run(job="verify_replica")
    opts = VerifyOptions(vault=vault, table=table, region=REGION_B, segments=3, readers_per_task=2)
    if expect_ok:
        return verify_replica(opts, run, spark)
    with pytest.raises(VerifyMismatch, match=f"table {table} in {REGION_B} differs from {vault} v0") as caught:
        verify_replica(opts, run, spark)
    return dict(run.summary, message=str(caught.value))


def counts(summary):
    return {k: summary[k] for k in ("same", "missing", "extra", "different", "expired", "vault_items",
                                    "replica_items")}


@pytest.mark.smoke
def test_exact_replica_passes(spark, replica):
    vault, table, _, _ = replica
    summary = verify(spark, vault, table, expect_ok=True)
    assert counts(summary) == {"same": N_ITEMS, "missing": 0, "extra": 0, "different": 0, "expired": 0,
                               "vault_items": N_ITEMS, "replica_items": N_ITEMS}
    assert summary["examples"] == {}
    assert (summary["vault_version"], summary["segments"]) == (0, 3)


@pytest.mark.parametrize("codec", ["jvm", "python"])
def test_one_changed_item_is_reported_different(spark, replica, codec, monkeypatch):
    """With the JVM codec, and without its jar (the scan's items then made in Python): the same verdict."""
    if codec == "python":
        monkeypatch.setattr(staging, "register_jvm_codec", lambda session: False)
    vault, table, client, items = replica
    original = items[("user-2", "7.5")]
    client.update_item(TableName=table, Key={"pk": {"S": "user-2"}, "sk": {"N": "7.5"}},
                       UpdateExpression="SET m.deep.l[1] = :v", ExpressionAttributeValues={":v": {"N": "8"}})
    try:
        summary = verify(spark, vault, table, expect_ok=False)
    finally:
        client.put_item(TableName=table, Item=original)
    assert counts(summary) == {"same": N_ITEMS - 1, "missing": 0, "extra": 0, "different": 1, "expired": 0,
                               "vault_items": N_ITEMS, "replica_items": N_ITEMS}
    assert summary["examples"] == {"different": [{"pk": "user-2", "sk": "7.5"}]}
    assert "different 1 (e.g. {'pk': 'user-2', 'sk': '7.5'})" in summary["message"]


def test_one_deleted_item_is_reported_missing(spark, replica):
    vault, table, client, items = replica
    client.delete_item(TableName=table, Key={"pk": {"S": "user-0"}, "sk": {"N": "10.5"}})
    try:
        summary = verify(spark, vault, table, expect_ok=False)
    finally:
        client.put_item(TableName=table, Item=items[("user-0", "10.5")])
    assert counts(summary) == {"same": N_ITEMS - 1, "missing": 1, "extra": 0, "different": 0, "expired": 0,
                               "vault_items": N_ITEMS, "replica_items": N_ITEMS - 1}
    assert summary["examples"] == {"missing": [{"pk": "user-0", "sk": "10.5"}]}


def test_one_added_item_is_reported_extra(spark, replica):
    vault, table, client, _ = replica
    client.put_item(TableName=table, Item={"pk": {"S": "user-9"}, "sk": {"N": "-1E-130"}, "v": {"B": b"\x00"}})
    try:
        summary = verify(spark, vault, table, expect_ok=False)
    finally:
        client.delete_item(TableName=table, Key={"pk": {"S": "user-9"}, "sk": {"N": "-1E-130"}})
    assert counts(summary) == {"same": N_ITEMS, "missing": 0, "extra": 1, "different": 0, "expired": 0,
                               "vault_items": N_ITEMS, "replica_items": N_ITEMS + 1}
    assert summary["examples"] == {"extra": [{"pk": "user-9", "sk": codec.normalize_number("-1E-130")}]}


def test_the_replica_is_scanned_exactly_once_even_when_a_cache_is_evicted(spark, replica, executor_faults,
                                                                          executor_proxy, monkeypatch):
    from pyspark.sql import DataFrame

    vault, table, client, items = replica
    # An evicted cache (memory pressure, a lost executor) is recomputed from its lineage: with caching doing
    # nothing, any second action on a DataFrame whose lineage reaches the live Scan would scan the table again.
    monkeypatch.setattr(DataFrame, "cache", lambda self: self)
    monkeypatch.setattr(DataFrame, "persist", lambda self, *args, **kwargs: self)
    client.delete_item(TableName=table, Key={"pk": {"S": "user-1"}, "sk": {"N": "6.5"}})
    executor_faults.set([], record=True)
    try:
        summary = verify(spark, vault, table, expect_ok=False)  # a mismatch: summarize also looks up examples
    finally:
        client.put_item(TableName=table, Item=items[("user-1", "6.5")])
    assert counts(summary) == {"same": N_ITEMS - 1, "missing": 1, "extra": 0, "different": 0, "expired": 0,
                               "vault_items": N_ITEMS, "replica_items": N_ITEMS - 1}
    assert summary["examples"] == {"missing": [{"pk": "user-1", "sk": "6.5"}]}
    # One pass: each of the 3 segments started once, and no page read twice.
    scans = executor_proxy.recorded("Scan")
    assert executor_faults.counters()["requests"]["Scan"] == len(scans)
    assert sorted(s["Segment"] for s in scans if "ExclusiveStartKey" not in s) == [0, 1, 2]
    pages = [(s["Segment"], json.dumps(s.get("ExclusiveStartKey"), sort_keys=True)) for s in scans]
    assert len(set(pages)) == len(pages)
    assert {s["TotalSegments"] for s in scans} == {3}
    # The scratch copy of the replica's hashes is gone with the run.
    assert os.listdir(os.path.join(vault, layout.META_DIR, "tmp")) == []


def test_segments_are_planned_from_the_vault_when_the_replica_reports_no_size(spark, replica, monkeypatch):
    from ddbvault import export

    vault, table, _, _ = replica
    # DynamoDB refreshes TableSizeBytes about every 6 hours: a replica restored a moment ago reports 0 (moto
    # always does). With 256-byte segments the vault's ~6.6 KB of items need more than the 8-segment floor.
    monkeypatch.setattr(export, "SEGMENT_BYTES", 256)
    size = sum(r[layout.ITEM_SIZE] for r in spark.read.format("delta").load(layout.join(vault, "items")).collect())
    assert boto3.client("dynamodb", region_name=REGION_B).describe_table(TableName=table)["Table"][
        "TableSizeBytes"] == 0
    run = Run(job="verify_replica")
    summary = verify_replica(VerifyOptions(vault=vault, table=table, region=REGION_B, readers_per_task=2), run,
                             spark)
    assert (summary["planned_bytes"], summary["segments"]) == (size, math.ceil(size / 256))
    assert summary["segments"] > 2 * spark.sparkContext.defaultParallelism * 2
    assert counts(summary) == {"same": N_ITEMS, "missing": 0, "extra": 0, "different": 0, "expired": 0,
                               "vault_items": N_ITEMS, "replica_items": N_ITEMS}


def test_planning_bytes_is_the_larger_of_the_replicas_and_the_vaults():
    assert planning_bytes({"TableSizeBytes": 0}, 5 << 30) == 5 << 30
    assert planning_bytes({}, 1234) == 1234
    assert planning_bytes({"TableSizeBytes": 7 << 30}, 5 << 30) == 7 << 30
    assert planning_bytes({"TableSizeBytes": 3 << 30}, 5 << 30) == 5 << 30  # an older, smaller figure
    assert planning_bytes({"TableSizeBytes": 0}, 0) == 0


# --- compare() and summarize(): pure, on small DataFrames ---------------------------------------------------

NOW = 1_700_000_000


def frame(spark, items, range_key="sk"):
    from pyspark.sql import types as T

    schema = T.StructType([T.StructField(layout.PK, T.StringType(), False),
                           T.StructField(layout.SK, T.StringType(), True),
                           T.StructField(layout.ITEM, T.StringType(), False)])
    rows = []
    for item in items:
        pk, sk, text, _ = codec.to_vault_record(item, "pk", range_key)
        rows.append((pk, sk, text))
    return spark.createDataFrame(rows, schema)


def ttl_item(pk, sk, expires=None, **extra):
    item = {"pk": {"S": pk}, "sk": {"N": sk}, **extra}
    if expires is not None:
        item["exp"] = expires
    return item


def test_compare_classifies_every_key_and_honours_ttl(spark):
    vault = [
        ttl_item("same", "1", {"N": str(NOW + 10)}, v={"S": "a"}),
        ttl_item("diff", "1", v={"SS": ["a", "b"]}),
        ttl_item("gone", "1", {"N": str(NOW + 3600)}),        # TTL in the future: missing
        ttl_item("gone", "2", {"N": str(NOW - 1)}),           # TTL passed and absent: expired
        ttl_item("gone", "3"),                                 # no TTL attribute: missing
        ttl_item("gone", "4", {"S": str(NOW - 1)}),           # TTL not a number: missing
        ttl_item("gone", "5", EXP={"N": str(NOW - 1)}),       # names are case-sensitive: no TTL, missing
        ttl_item("gone", "6", {"N": "86400"}),                 # 1970: past DynamoDB's five-year window, missing
        ttl_item("gone", "7", {"N": str(NOW - 4 * 365 * 86400)}),  # four years ago: expired
        ttl_item("stale", "1", {"N": str(NOW - 100)}, v={"N": "1"}),  # expired but still there and changed
        ttl_item("stale", "2", {"N": f"{NOW - 100}.25"}),     # expired, still there, equal: same
    ]
    replica = [
        ttl_item("same", "1", {"N": str(NOW + 10)}, v={"S": "a"}),
        ttl_item("diff", "1", v={"SS": ["b", "a", "c"]}),
        ttl_item("stale", "1", {"N": str(NOW - 100)}, v={"N": "2"}),
        ttl_item("stale", "2", {"N": f"{NOW - 100}.250"}),
        ttl_item("new", "1"),
    ]
    statuses = compare(frame(spark, vault), frame(spark, replica), ttl_attribute="exp", now_epoch=NOW)
    got = sorted((r[layout.PK], r[layout.SK], r["status"]) for r in statuses.collect())
    assert got == [("diff", "1", "different"), ("gone", "1", "missing"), ("gone", "2", "expired"),
                   ("gone", "3", "missing"), ("gone", "4", "missing"), ("gone", "5", "missing"),
                   ("gone", "6", "missing"), ("gone", "7", "expired"), ("new", "1", "extra"),
                   ("same", "1", "same"), ("stale", "1", "different"), ("stale", "2", "same")]

    # Without a TTL attribute nothing is ever expired.
    plain = compare(frame(spark, vault), frame(spark, replica), ttl_attribute=None, now_epoch=NOW)
    assert sorted(r["status"] for r in plain.collect() if r[layout.PK] == "gone") == ["missing"] * 7

    result = summarize(statuses, examples=2)
    assert result == {"same": 2, "missing": 5, "extra": 1, "different": 2, "expired": 2,
                      "examples": {"missing": [{"pk": "gone", "sk": "1"}, {"pk": "gone", "sk": "3"}],
                                   "extra": [{"pk": "new", "sk": "1"}],
                                   "different": [{"pk": "diff", "sk": "1"}, {"pk": "stale", "sk": "1"}]}}


def test_compare_hash_only_keys_and_odd_attribute_names(spark):
    # Null range keys join (null-safe); a TTL attribute name with quotes, dots or brackets in it is still found.
    for attribute in ("it's", 'a"b', "x.y", "[z]", "\u540d"):
        vault = [{"pk": {"S": "a"}, attribute: {"N": str(NOW - 5)}}, {"pk": {"S": "b"}, "v": {"B": b"\x00"}},
                 {"pk": {"S": "c"}, attribute: {"N": str(NOW + 5)}}]
        replica = [{"pk": {"S": "b"}, "v": {"B": b"\x00"}}]
        statuses = compare(frame(spark, vault, None), frame(spark, replica, None), ttl_attribute=attribute,
                           now_epoch=NOW)
        assert sorted((r[layout.PK], r[layout.SK], r["status"]) for r in statuses.collect()) == \
            [("a", None, "expired"), ("b", None, "same"), ("c", None, "missing")], attribute


def test_items_deleted_by_hand_are_missing_unless_the_replicas_own_ttl_could_have_removed_them(spark, tmp_path):
    source_client = boto3.client("dynamodb", region_name=REGION_A)
    replica_client = boto3.client("dynamodb", region_name=REGION_B)
    source, target = name("ttl-src"), name("ttl-rep")
    for client, table in ((source_client, source), (replica_client, target)):
        create_table(client, table, [("pk", "S"), ("sk", "N")])
    source_client.update_time_to_live(TableName=source,
                                      TimeToLiveSpecification={"Enabled": True, "AttributeName": "exp"})
    now = int(time.time())
    items = [ttl_item("a", "1", {"N": str(now - 100)}), ttl_item("a", "2", {"N": "86400"}),
             ttl_item("a", "3", {"N": str(now + 3600)})]
    put_items(source_client, source, items)
    put_items(replica_client, target, items)
    vault = str(tmp_path / "vault")
    try:
        export_table(ExportOptions(table=source, vault=vault, region=REGION_A, segments=1), Run(job="export_table"),
                     spark)
        for item in items[:2]:  # deleted by hand from the replica
            replica_client.delete_item(TableName=target, Key={"pk": item["pk"], "sk": item["sk"]})
        with pytest.raises(VerifyMismatch, match="missing 2"):
            verify(spark, vault, target, expect_ok=True)  # TTL off on the replica: nothing can have expired
        replica_client.update_time_to_live(TableName=target,
                                           TimeToLiveSpecification={"Enabled": True, "AttributeName": "exp"})
        run = Run(job="verify_replica")
        with pytest.raises(VerifyMismatch, match="missing 1"):  # the 1970 value is outside DynamoDB's window
            verify_replica(VerifyOptions(vault=vault, table=target, region=REGION_B, segments=1), run, spark)
        assert (run.summary["expired"], run.summary["missing"], run.summary["same"]) == (1, 1, 1)
        assert run.summary["replica_ttl_attribute"] == "exp"
    finally:
        source_client.delete_table(TableName=source)
        replica_client.delete_table(TableName=target)

"""restore_table from a vault in region B (s3a) into region B, against a source in region A."""
from __future__ import annotations

import boto3
import pytest
from jobs_helpers import create_table, every_type, name, put_items, scan_all, table_texts, texts, vault_texts

from ddbvault.dynamo import table as tables
from ddbvault.errors import CapacityError, TableError, VerifyMismatch
from ddbvault.export import ExportOptions, export_table
from ddbvault.restore import RestoreOptions, restore_id, restore_table
from ddbvault.runner import Run
from ddbvault.vault import layout, metadata
from ddbvault.verify import VerifyOptions, verify_replica
from servers import REGION_A, REGION_B

N_ITEMS = 60
TAGS = [{"Key": "team", "Value": "payments"}, {"Key": "tier", "Value": "gold \u00e9"}]


def settings(client, table):
    """Everything a restore must rebuild, as plain comparable values."""
    d = client.describe_table(TableName=table)["Table"]

    def index(i, throughput):
        out = {"IndexName": i["IndexName"], "KeySchema": i["KeySchema"], "Projection": i["Projection"]}
        if throughput:
            out["Throughput"] = (i["ProvisionedThroughput"]["ReadCapacityUnits"],
                                 i["ProvisionedThroughput"]["WriteCapacityUnits"])
        return out

    return {
        "AttributeDefinitions": sorted((a["AttributeName"], a["AttributeType"]) for a in d["AttributeDefinitions"]),
        "KeySchema": d["KeySchema"],
        "BillingMode": (d.get("BillingModeSummary") or {}).get("BillingMode", "PROVISIONED"),
        "Throughput": (d["ProvisionedThroughput"]["ReadCapacityUnits"],
                       d["ProvisionedThroughput"]["WriteCapacityUnits"]),
        "GSIs": sorted((index(i, True) for i in d.get("GlobalSecondaryIndexes", [])), key=lambda i: i["IndexName"]),
        "LSIs": sorted((index(i, False) for i in d.get("LocalSecondaryIndexes", [])), key=lambda i: i["IndexName"]),
        "Stream": d.get("StreamSpecification"),
        "TTL": {k: v for k, v in client.describe_time_to_live(TableName=table)["TimeToLiveDescription"].items()
                if k in ("TimeToLiveStatus", "AttributeName")},
        "Tags": sorted((t["Key"], t["Value"]) for t in
                       client.list_tags_of_resource(ResourceArn=d["TableArn"]).get("Tags", [])),
        "PITR": client.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
        ["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"],
    }


@pytest.fixture(scope="module")
def clients(aws_endpoint):
    return boto3.client("dynamodb", region_name=REGION_A), boto3.client("dynamodb", region_name=REGION_B)


@pytest.fixture(scope="module")
def source(spark, clients, vault_bucket):
    """A provisioned source in region A with a GSI, an LSI, a stream, tags, TTL and PITR, exported to an s3a
    vault in region B."""
    ddb_a, _ = clients
    table = name("rst-src")
    create_table(ddb_a, table, [("pk", "S"), ("sk", "N")], attributes=[("owner", "S"), ("rank", "N")],
                 gsis=[{"IndexName": "by_owner", "KeySchema": [{"AttributeName": "owner", "KeyType": "HASH"},
                                                               {"AttributeName": "rank", "KeyType": "RANGE"}],
                        "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["s", "n"]}}],
                 lsis=[{"IndexName": "by_rank", "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
                                                              {"AttributeName": "rank", "KeyType": "RANGE"}],
                        "Projection": {"ProjectionType": "KEYS_ONLY"}}],
                 stream="NEW_AND_OLD_IMAGES", provisioned=(50, 40), tags={t["Key"]: t["Value"] for t in TAGS})
    ddb_a.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"})
    ddb_a.update_continuous_backups(TableName=table,
                                    PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    items = []
    for i in range(N_ITEMS):
        item = dict(every_type(i), pk={"S": f"cust-{i % 7}"}, sk={"N": f"{i * 11}.25"})
        if i % 2:
            item.update(owner={"S": f"o{i % 3}"}, rank={"N": str(i)}, expires={"N": str(4_000_000_000 + i)})
        items.append(item)
    put_items(ddb_a, table, items)
    vault = f"s3a://{vault_bucket}/restore/{table}"
    export_table(ExportOptions(table=table, vault=vault, region=REGION_A, vault_region=REGION_B, segments=2,
                               max_read_units=10_000), Run(job="export_table"), spark)
    yield table, vault, table_texts(ddb_a, table)
    ddb_a.delete_table(TableName=table)


@pytest.fixture
def replica(clients):
    """A fresh replica table name in region B, dropped after the test."""
    _, ddb_b = clients
    table = name("rst-rep")
    yield table
    if tables.describe(table, REGION_B) is not None:
        ddb_b.delete_table(TableName=table)


def restore(spark, vault, table, **kwargs):
    run = Run(job="restore_table")
    opts = RestoreOptions(vault=vault, table=table, region=REGION_B, vault_region=REGION_B,
                          **dict({"max_write_units": 10_000}, **kwargs))
    return restore_table(opts, run, spark)


def marker_names(vault, rid):
    bucket, prefix = vault.split("/", 3)[2], vault.split("/", 3)[3]
    listing = boto3.client("s3", region_name=REGION_B).list_objects_v2(
        Bucket=bucket, Prefix=f"{prefix}/{layout.META_DIR}/restores/{rid}/")
    return sorted(o["Key"].rsplit("/", 1)[1] for o in listing.get("Contents", []) if "/part-" in o["Key"])


@pytest.mark.smoke
def test_restore_into_region_b_rebuilds_items_and_settings(spark, clients, source, replica):
    ddb_a, ddb_b = clients
    table, vault, expected = source

    summary = restore(spark, vault, replica)

    assert table_texts(ddb_b, replica) == expected
    want = settings(ddb_a, table)
    assert want["GSIs"][0]["IndexName"] == "by_owner" and want["LSIs"][0]["IndexName"] == "by_rank"
    assert want["TTL"] == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"}
    assert (want["BillingMode"], want["Throughput"], want["PITR"]) == ("PROVISIONED", (50, 40), "ENABLED")
    assert want["Stream"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert want["Tags"] == sorted((t["Key"], t["Value"]) for t in TAGS)
    assert settings(ddb_b, replica) == want
    assert {k: summary[k] for k in ("items", "items_written", "items_skipped_resumed", "partitions_skipped",
                                    "table_created", "vault_version", "source_table", "source_region",
                                    "ttl_attribute", "items_expected")} == {
        "items": N_ITEMS, "items_written": N_ITEMS, "items_skipped_resumed": 0, "partitions_skipped": 0,
        "table_created": True, "vault_version": 0, "source_table": table, "source_region": REGION_A,
        "ttl_attribute": "expires", "items_expected": N_ITEMS}
    assert "point-in-time recovery enabled" in summary["notes"]
    assert len(marker_names(vault, summary["restore_id"])) == summary["partitions"]
    # The table has an LSI: auto loads it with BatchWriteItem (ImportTable cannot make LSIs).
    assert (summary["method"], summary["method_reason"]) == (
        "batch-write", "the table has LSIs, which ImportTable cannot create")


def test_the_wire_path_and_botocore_path_give_the_same_table(spark, clients, source, replica):
    """The load's two ways to send an item (its stored text as it is, or decoded for botocore) land the same
    items; the wire path is the default."""
    _, ddb_b = clients
    _, vault, expected = source
    plain = restore(spark, vault, replica, wire=False)
    assert table_texts(ddb_b, replica) == expected
    assert (plain["items_written"], plain["method"]) == (N_ITEMS, "batch-write")
    assert RestoreOptions(vault=vault, table=replica, region=REGION_B).wire is True


def test_as_of_version_restores_the_earlier_items_and_schema(spark, clients, replica, tmp_path):
    ddb_a, ddb_b = clients
    table = name("rst-asof")
    create_table(ddb_a, table, [("pk", "N")])
    try:
        put_items(ddb_a, table, [dict(every_type(i), pk={"N": str(i)}) for i in range(20)])
        v0 = table_texts(ddb_a, table)
        vault = str(tmp_path / "vault")
        export_table(ExportOptions(table=table, vault=vault, region=REGION_A, segments=2),
                     Run(job="export_table"), spark)
        ddb_a.delete_item(TableName=table, Key={"pk": {"N": "3"}})
        put_items(ddb_a, table, [{"pk": {"N": "100"}, "g": {"S": "x"}}])
        ddb_a.update_table(TableName=table, AttributeDefinitions=[{"AttributeName": "g", "AttributeType": "S"}],
                           GlobalSecondaryIndexUpdates=[{"Create": {
                               "IndexName": "by_g", "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                               "Projection": {"ProjectionType": "ALL"}}}])
        export_table(ExportOptions(table=table, vault=vault, region=REGION_A, segments=2),
                     Run(job="export_table"), spark)
        assert vault_texts(spark, vault) == table_texts(ddb_a, table) != v0

        summary = restore(spark, vault, replica, as_of_version=0)
    finally:
        ddb_a.delete_table(TableName=table)

    assert table_texts(ddb_b, replica) == v0
    assert summary["vault_version"] == 0 and summary["items"] == 20
    # Version 0's own capture: no GSI yet (version 1's capture has it).
    assert ddb_b.describe_table(TableName=replica)["Table"].get("GlobalSecondaryIndexes", []) == []
    assert [g["IndexName"] for g in metadata.table_meta_at(spark, vault, 1)[1]["table"]["GlobalSecondaryIndexes"]] \
        == ["by_g"]


def test_failed_load_resumes_and_skips_finished_partitions(spark, clients, source, replica, executor_faults):
    _, ddb_b = clients
    _, vault, expected = source
    # One writer per task: each partition (~15 of the 60 items) is one BatchWriteItem call. The first two calls
    # pass, then every call fails: some partitions finish, the others exhaust their 2 attempts in every Spark try.
    executor_faults.set([{"op": "BatchWriteItem", "fault": "server_error", "after": 2}])
    with pytest.raises(CapacityError, match=f"BatchWriteItem to table {replica} failed after 2 attempts"):
        restore(spark, vault, replica, writers_per_task=1, max_attempts=2)
    executor_faults.clear()
    rid = restore_id("v0", tables.describe(replica, REGION_B))
    done = marker_names(vault, rid)
    assert 1 <= len(done) < 4, done  # 4 partitions: 2 x the 2 local slots
    assert table_texts(ddb_b, replica) != expected

    summary = restore(spark, vault, replica, writers_per_task=1)  # no --existing-table: it is our own restore

    assert table_texts(ddb_b, replica) == expected
    assert summary["restore_id"] == rid and summary["partitions"] == 4
    assert summary["partitions_skipped"] == len(done)
    assert summary["items"] == N_ITEMS and summary["table_created"] is False
    assert summary["items_written"] + summary["items_skipped_resumed"] == N_ITEMS
    assert 0 < summary["items_skipped_resumed"] < N_ITEMS
    assert marker_names(vault, rid) == [f"part-{i:05d}.json" for i in range(4)]


def test_unprocessed_items_are_resent_until_the_table_is_exact(spark, clients, source, replica, executor_faults):
    _, ddb_b = clients
    _, vault, expected = source
    executor_faults.set([{"op": "BatchWriteItem", "fault": "unprocessed", "keep": 4}])

    summary = restore(spark, vault, replica)

    assert executor_faults.injected("BatchWriteItem", "unprocessed") > 0
    assert table_texts(ddb_b, replica) == expected
    assert summary["unprocessed_retries"] > 0
    assert summary["items_written"] == N_ITEMS


def test_existing_table_with_another_key_schema_is_left_untouched(spark, clients, source, replica):
    _, ddb_b = clients
    _, vault, _ = source
    create_table(ddb_b, replica, [("pk", "S")])
    mine = [{"pk": {"S": "keep-me"}, "v": {"N": "1"}}]
    put_items(ddb_b, replica, mine)
    before = ddb_b.describe_table(TableName=replica)["Table"]

    for existing in (False, True):
        with pytest.raises(TableError, match=f"table {replica} in region {REGION_B} exists with another key schema"):
            restore(spark, vault, replica, existing_table=existing)

    after = ddb_b.describe_table(TableName=replica)["Table"]
    assert (after["KeySchema"], after["AttributeDefinitions"]) == (before["KeySchema"], before["AttributeDefinitions"])
    assert table_texts(ddb_b, replica) == texts(mine)


def test_existing_table_with_the_same_schema_needs_the_flag(spark, clients, source, replica):
    _, ddb_b = clients
    _, vault, expected = source
    create_table(ddb_b, replica, [("pk", "S"), ("sk", "N")])
    mine = [{"pk": {"S": "already-here"}, "sk": {"N": "1"}}]
    put_items(ddb_b, replica, mine)

    with pytest.raises(TableError, match=f"table {replica} already exists in region {REGION_B}: pass --existing-table"):
        restore(spark, vault, replica)
    assert table_texts(ddb_b, replica) == texts(mine)

    with pytest.raises(TableError, match=r"has other indexes than the vault's table \(GSI by_owner: in the vault's "
                                         r"table, not in this one; LSI by_rank: in the vault's table, not in this "
                                         r"one\); it was left untouched"):
        restore(spark, vault, replica, existing_table=True)
    assert table_texts(ddb_b, replica) == texts(mine)
    summary = restore(spark, vault, replica, existing_table=True, allow_other_indexes=True)

    # --existing-table makes the table equal the vault: the item the vault does not hold goes.
    assert table_texts(ddb_b, replica) == expected
    assert summary["table_created"] is False and summary["mode"] == "repair"
    assert (summary["repaired_puts"], summary["repaired_deletes"]) == (N_ITEMS, 1)
    differences = [n for n in summary["notes"] if n.startswith("the existing table differs")]
    assert "the existing table differs from the vault's: billing mode: vault PROVISIONED, table PAY_PER_REQUEST" \
        in differences and len(differences) >= 4


def test_restore_into_an_existing_table_ends_with_pitr_and_ttl_every_time(spark, clients, source, replica):
    _, ddb_b = clients
    _, vault, expected = source

    def pitr_and_ttl():
        found = settings(ddb_b, replica)
        return found["PITR"], found["TTL"]

    create_table(ddb_b, replica, [("pk", "S"), ("sk", "N")])
    assert pitr_and_ttl() == ("DISABLED", {"TimeToLiveStatus": "DISABLED"})
    summary = restore(spark, vault, replica, existing_table=True, allow_other_indexes=True)
    assert table_texts(ddb_b, replica) == expected
    assert pitr_and_ttl() == ("ENABLED", {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"})
    assert (summary["mode"], summary["point_in_time_recovery"], summary["ttl_attribute"]) == ("repair", True, "expires")
    assert {"point-in-time recovery enabled", "TTL enabled on attribute expires after the load"} \
        <= set(summary["notes"])

    # Someone turns PITR off; a rerun with nothing left to repair still finishes with it on again.
    ddb_b.update_continuous_backups(TableName=replica,
                                    PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False})
    again = restore(spark, vault, replica, existing_table=True, allow_other_indexes=True)
    assert (again["repaired_puts"], again["repaired_deletes"], again["point_in_time_recovery"]) == (0, 0, True)
    assert pitr_and_ttl() == ("ENABLED", {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"})


def test_the_repair_verify_recommends_makes_the_next_verify_exact(spark, clients, source, replica):
    _, ddb_b = clients
    _, vault, expected = source
    restore(spark, vault, replica)
    items = scan_all(ddb_b, replica)
    changed = dict(items[0], s={"S": "changed by hand"})
    ddb_b.put_item(TableName=replica, Item=changed)
    ddb_b.delete_item(TableName=replica, Key={"pk": items[1]["pk"], "sk": items[1]["sk"]})
    ddb_b.put_item(TableName=replica, Item={"pk": {"S": "stray"}, "sk": {"N": "7"}})
    verify_opts = VerifyOptions(vault=vault, table=replica, region=REGION_B, vault_region=REGION_B, segments=2)
    with pytest.raises(VerifyMismatch, match="rerun restore_table with --existing-table to repair it") as caught:
        verify_replica(verify_opts, Run(job="verify_replica"), spark)
    assert "missing 1" in str(caught.value) and "extra 1" in str(caught.value) and "different 1" in str(caught.value)

    summary = restore(spark, vault, replica, existing_table=True)
    assert (summary["mode"], summary["repaired_puts"], summary["repaired_deletes"]) == ("repair", 2, 1)
    assert table_texts(ddb_b, replica) == expected
    checked = verify_replica(verify_opts, Run(job="verify_replica"), spark)
    assert (checked["same"], checked["missing"], checked["extra"], checked["different"]) == (N_ITEMS, 0, 0, 0)
    # Nothing left to repair: a rerun writes nothing (and never skips on the first load's markers).
    again = restore(spark, vault, replica, existing_table=True)
    assert (again["repaired_puts"], again["repaired_deletes"]) == (0, 0)


def test_a_table_with_a_binary_hash_key_goes_through_export_restore_and_verify(spark, clients, vault_bucket,
                                                                               replica):
    ddb_a, ddb_b = clients
    table = name("rst-bin")
    # Hash keys that are not UTF-8 (moto's stand-in needs standins/moto_patched.py to scan them in segments),
    # the highest and lowest bytes, a key that is every byte value, and binary range keys of the same kinds.
    keys = [b"\xff\x00\x80", b"\x80", b"\xc3\x28", b"\x00", b"\xff" * 5, bytes(range(256)), b"plain ascii",
            "caf\u00e9".encode("latin-1")]
    create_table(ddb_a, table, [("pk", "B"), ("sk", "B")])
    try:
        source = [dict(every_type(i), pk={"B": key}, sk={"B": bytes([i, 0xfe - i])}) for i, key in enumerate(keys)]
        source += [dict(every_type(i), pk={"B": keys[0]}, sk={"B": bytes([0x80 + i])}) for i in range(8, 12)]
        put_items(ddb_a, table, source)
        expected = table_texts(ddb_a, table)
        assert expected == texts(source) and len(expected) == 12
        vault = f"s3a://{vault_bucket}/binary/{table}"
        exported = export_table(ExportOptions(table=table, vault=vault, region=REGION_A, vault_region=REGION_B,
                                              segments=3, max_read_units=10_000, max_attempts=2),
                                Run(job="export_table"), spark)
        assert exported["items"] == 12 and vault_texts(spark, vault) == expected

        summary = restore(spark, vault, replica)
        checked = verify_replica(VerifyOptions(vault=vault, table=replica, region=REGION_B, vault_region=REGION_B,
                                               segments=3, max_attempts=2), Run(job="verify_replica"), spark)
    finally:
        ddb_a.delete_table(TableName=table)

    assert table_texts(ddb_b, replica) == expected
    assert (summary["items"], summary["items_written"]) == (12, 12)
    assert {k: checked[k] for k in ("same", "missing", "extra", "different", "segments")} == {
        "same": 12, "missing": 0, "extra": 0, "different": 0, "segments": 3}


def test_restoring_into_the_vaults_own_source_table_needs_the_rollback_flag(spark, clients, source):
    ddb_a, _ = clients
    table, vault, expected = source
    changed = {"pk": {"S": "cust-0"}, "sk": {"N": "0.25"}, "s": {"S": "a bad write"}}
    ddb_a.put_item(TableName=table, Item=changed)
    before = table_texts(ddb_a, table)
    opts = RestoreOptions(vault=vault, table=table, region=REGION_A, vault_region=REGION_B, max_write_units=10_000,
                          existing_table=True)
    with pytest.raises(TableError, match=f"table {table} in region {REGION_A} is the table this vault protects: "
                                         f"loading the vault into it would roll its items back"):
        restore_table(opts, Run(job="restore_table"), spark)
    assert table_texts(ddb_a, table) == before

    opts.rollback_source = True
    summary = restore_table(opts, Run(job="restore_table"), spark)
    assert table_texts(ddb_a, table) == expected
    assert (summary["repaired_puts"], summary["repaired_deletes"]) == (1, 0)
    assert any(note.startswith(f"rolled the source table {table} back") for note in summary["notes"])

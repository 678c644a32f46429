"""Pure planning code: CreateTable requests from a capture, key-schema checks, budgets, segments, restore ids."""
from __future__ import annotations

import copy
import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ddbvault.dynamo import table as tables
from ddbvault.errors import TableError, UsageError
from ddbvault.export import (
    MAX_SEGMENTS,
    ON_DEMAND_DEFAULT_RCU,
    SEGMENT_BYTES,
    check_stream,
    group_segments,
    plan_segments,
    read_budget,
)
from ddbvault.restore import ITEMS_PER_PARTITION, ON_DEMAND_DEFAULT_WCU, partitions_for, restore_id, write_budget

KMS_ARN = "arn:aws:kms:us-east-1:123456789012:key/1111-2222"
DEFS = [{"AttributeName": n, "AttributeType": t} for n, t in
        (("pk", "S"), ("sk", "N"), ("tenant", "S"), ("region", "S"), ("at", "N"), ("seq", "B"), ("rank", "N"))]
KEYS = [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
# A GSI whose key has several HASH and RANGE attributes (multi-attribute keys), and a plain one.
GSI_MULTI_KEYS = [{"AttributeName": "tenant", "KeyType": "HASH"}, {"AttributeName": "region", "KeyType": "HASH"},
                  {"AttributeName": "at", "KeyType": "RANGE"}, {"AttributeName": "seq", "KeyType": "RANGE"}]
LSI_KEYS = [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "rank", "KeyType": "RANGE"}]
TAGS = [{"Key": "team", "Value": "payments"}, {"Key": "cost-centre", "Value": "42"}]


def provisioned_meta():
    """A capture as ``tables.capture`` makes it (DescribeTable's own fields, datetimes as text)."""
    return {
        "captured_at": "2026-01-01T00:00:00+00:00", "region": "us-east-1", "table_name": "orders",
        "table": {
            "TableName": "orders", "TableArn": "arn:aws:dynamodb:us-east-1:123456789012:table/orders",
            "TableStatus": "ACTIVE", "CreationDateTime": "2025-05-01T10:00:00+00:00", "ItemCount": 10,
            "TableSizeBytes": 1000, "AttributeDefinitions": DEFS, "KeySchema": KEYS,
            "ProvisionedThroughput": {"ReadCapacityUnits": 40, "WriteCapacityUnits": 20,
                                      "NumberOfDecreasesToday": 1},
            "LocalSecondaryIndexes": [{"IndexName": "by_rank", "KeySchema": LSI_KEYS,
                                       "Projection": {"ProjectionType": "KEYS_ONLY"},
                                       "IndexSizeBytes": 10, "ItemCount": 3, "IndexArn": "arn:lsi"}],
            "GlobalSecondaryIndexes": [
                {"IndexName": "by_tenant", "KeySchema": GSI_MULTI_KEYS,
                 "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["total"]},
                 "IndexStatus": "ACTIVE", "IndexArn": "arn:gsi1", "ItemCount": 2, "IndexSizeBytes": 5,
                 "ProvisionedThroughput": {"ReadCapacityUnits": 7, "WriteCapacityUnits": 3,
                                           "NumberOfDecreasesToday": 0},
                 "WarmThroughput": {"ReadUnitsPerSecond": 500, "WriteUnitsPerSecond": 0, "Status": "ACTIVE"}},
                {"IndexName": "by_at", "KeySchema": [{"AttributeName": "at", "KeyType": "HASH"}],
                 "Projection": {"ProjectionType": "ALL"}, "IndexStatus": "ACTIVE"},
            ],
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
            "LatestStreamArn": "arn:stream",
            "SSEDescription": {"Status": "ENABLED", "SSEType": "KMS", "KMSMasterKeyArn": KMS_ARN},
            "TableClassSummary": {"TableClass": "STANDARD_INFREQUENT_ACCESS"},
            "DeletionProtectionEnabled": True,
        },
        "time_to_live": {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"},
        "tags": TAGS,
        "continuous_backups": {"PointInTimeRecoveryDescription": {"PointInTimeRecoveryStatus": "ENABLED"}},
    }


def on_demand_meta():
    meta = provisioned_meta()
    src = meta["table"]
    src["BillingModeSummary"] = {"BillingMode": "PAY_PER_REQUEST"}
    src["ProvisionedThroughput"] = {"ReadCapacityUnits": 0, "WriteCapacityUnits": 0, "NumberOfDecreasesToday": 0}
    src["OnDemandThroughput"] = {"MaxReadRequestUnits": 900, "MaxWriteRequestUnits": -1}
    src["WarmThroughput"] = {"ReadUnitsPerSecond": 12000, "WriteUnitsPerSecond": 4000, "Status": "ACTIVE"}
    for gsi in src["GlobalSecondaryIndexes"]:
        gsi["ProvisionedThroughput"] = {"ReadCapacityUnits": 0, "WriteCapacityUnits": 0}
    src["GlobalSecondaryIndexes"][1]["OnDemandThroughput"] = {"MaxReadRequestUnits": 50, "MaxWriteRequestUnits": 60}
    del src["StreamSpecification"], src["SSEDescription"], src["TableClassSummary"], src["DeletionProtectionEnabled"]
    meta["tags"] = []
    return meta


def test_create_request_provisioned_with_every_setting():
    meta = provisioned_meta()
    original = copy.deepcopy(meta)
    request, notes = tables.create_request(meta, "orders-replica")
    assert request == {
        "TableName": "orders-replica",
        "AttributeDefinitions": DEFS,
        "KeySchema": KEYS,
        "BillingMode": "PROVISIONED",
        "ProvisionedThroughput": {"ReadCapacityUnits": 40, "WriteCapacityUnits": 20},
        "LocalSecondaryIndexes": [{"IndexName": "by_rank", "KeySchema": LSI_KEYS,
                                   "Projection": {"ProjectionType": "KEYS_ONLY"}}],
        "GlobalSecondaryIndexes": [
            {"IndexName": "by_tenant", "KeySchema": GSI_MULTI_KEYS,
             "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["total"]},
             "ProvisionedThroughput": {"ReadCapacityUnits": 7, "WriteCapacityUnits": 3},
             "WarmThroughput": {"ReadUnitsPerSecond": 500}},
            # No throughput of its own in the capture: the table's.
            {"IndexName": "by_at", "KeySchema": [{"AttributeName": "at", "KeyType": "HASH"}],
             "Projection": {"ProjectionType": "ALL"},
             "ProvisionedThroughput": {"ReadCapacityUnits": 40, "WriteCapacityUnits": 20}},
        ],
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        "TableClass": "STANDARD_INFREQUENT_ACCESS",
        "DeletionProtectionEnabled": True,
        "Tags": TAGS,
    }
    # The source's KMS key belongs to its region: not reused, and the operator is told so.
    assert notes == [f"encryption: the source used KMS key {KMS_ARN}, which belongs to its region; the replica "
                     f"uses the AWS-owned key (pass --kms-key for a key of the recovery region)"]
    assert meta == original  # pure: the capture is not changed


def test_create_request_with_a_kms_key_of_the_recovery_region():
    key = "arn:aws:kms:us-west-2:123456789012:key/3333"
    request, notes = tables.create_request(provisioned_meta(), "r", kms_key=key)
    assert request["SSESpecification"] == {"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": key}
    assert notes == [f"encryption: KMS key {key}"]


def test_create_request_on_demand_keeps_limits_and_warm_throughput():
    request, notes = tables.create_request(on_demand_meta(), "r")
    assert request == {
        "TableName": "r",
        "AttributeDefinitions": DEFS,
        "KeySchema": KEYS,
        "BillingMode": "PAY_PER_REQUEST",
        "OnDemandThroughput": {"MaxReadRequestUnits": 900},
        "WarmThroughput": {"ReadUnitsPerSecond": 12000, "WriteUnitsPerSecond": 4000},
        "LocalSecondaryIndexes": [{"IndexName": "by_rank", "KeySchema": LSI_KEYS,
                                   "Projection": {"ProjectionType": "KEYS_ONLY"}}],
        "GlobalSecondaryIndexes": [
            {"IndexName": "by_tenant", "KeySchema": GSI_MULTI_KEYS,
             "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["total"]},
             "WarmThroughput": {"ReadUnitsPerSecond": 500}},
            {"IndexName": "by_at", "KeySchema": [{"AttributeName": "at", "KeyType": "HASH"}],
             "Projection": {"ProjectionType": "ALL"},
             "OnDemandThroughput": {"MaxReadRequestUnits": 50, "MaxWriteRequestUnits": 60}},
        ],
    }
    assert notes == []


def test_billing_mode_override():
    request, _ = tables.create_request(provisioned_meta(), "r", mode="PAY_PER_REQUEST")
    assert request["BillingMode"] == "PAY_PER_REQUEST"
    assert "ProvisionedThroughput" not in request
    assert all("ProvisionedThroughput" not in g for g in request["GlobalSecondaryIndexes"])
    with pytest.raises(UsageError, match="table orders was on-demand; --billing-mode PROVISIONED needs capacity"):
        tables.create_request(on_demand_meta(), "r", mode="PROVISIONED")


def test_create_request_minimal_table():
    meta = {"table_name": "t", "region": "us-east-1", "tags": [], "time_to_live": {"TimeToLiveStatus": "DISABLED"},
            "continuous_backups": {"ContinuousBackupsStatus": "DISABLED"}, "table": {
        "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "B"}],
        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
        "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
        "StreamSpecification": {"StreamEnabled": False},
        "SSEDescription": {"Status": "ENABLED", "SSEType": "AES256"}}}
    assert tables.create_request(meta, "t2") == ({
        "TableName": "t2", "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "B"}],
        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}], "BillingMode": "PAY_PER_REQUEST"}, [])


def test_create_request_says_which_settings_the_export_could_not_capture():
    meta = {"table_name": "t", "region": "us-east-1", "tags": None, "time_to_live": None,
            "continuous_backups": None, "table": {
                "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
                "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"}}}
    request, notes = tables.create_request(meta, "t2")
    assert "Tags" not in request
    assert notes == [f"{label}: not captured by the export (its endpoint lacked the call); set it by hand"
                     for label in ("TTL", "tags", "point-in-time recovery")]


def test_key_schema_matches():
    meta = provisioned_meta()
    same = {"AttributeDefinitions": [{"AttributeName": "sk", "AttributeType": "N"},
                                     {"AttributeName": "pk", "AttributeType": "S"},
                                     {"AttributeName": "other", "AttributeType": "B"}],
            "KeySchema": list(reversed(KEYS))}
    assert tables.key_schema_matches(meta, same)
    other_type = copy.deepcopy(same)
    other_type["AttributeDefinitions"][0]["AttributeType"] = "S"
    assert not tables.key_schema_matches(meta, other_type)
    hash_only = {"AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                 "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]}
    assert not tables.key_schema_matches(meta, hash_only)
    swapped = {"AttributeDefinitions": same["AttributeDefinitions"],
               "KeySchema": [{"AttributeName": "sk", "KeyType": "HASH"}, {"AttributeName": "pk", "KeyType": "RANGE"}]}
    assert not tables.key_schema_matches(meta, swapped)


def test_key_names_and_stream_check(caplog):
    meta = provisioned_meta()
    assert tables.key_names(meta) == ("pk", "sk")
    assert check_stream(meta["table"], require=True) == "NEW_AND_OLD_IMAGES"
    keys_only = dict(meta["table"], StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"})
    with pytest.raises(TableError, match=r"table orders has a KEYS_ONLY stream view.*drop --require-stream"):
        check_stream(keys_only, require=True)
    assert check_stream(keys_only, require=False) == "KEYS_ONLY"
    none = {k: v for k, v in meta["table"].items() if k != "StreamSpecification"}
    assert check_stream(none, require=False) is None
    assert "table orders has no stream" in caplog.text


def test_read_budget():
    prov = provisioned_meta()["table"]
    demand = on_demand_meta()["table"]
    assert read_budget(prov, 123, None) == (123.0, "--max-read-units")
    assert read_budget(prov, None, None) == (20.0, "50% of provisioned 40 RCU")
    assert read_budget(prov, None, 25) == (10.0, "25% of provisioned 40 RCU")
    assert read_budget(demand, None, None) == (450.0, "50% of the on-demand maximum 900 RRU")
    assert read_budget(demand, None, 100) == (900.0, "100% of the on-demand maximum 900 RRU")
    uncapped = dict(demand, OnDemandThroughput={"MaxReadRequestUnits": -1})
    assert read_budget(uncapped, None, None) == \
        (ON_DEMAND_DEFAULT_RCU, "on-demand default 3000 RCU (set --max-read-units)")
    assert ON_DEMAND_DEFAULT_RCU < 40_000
    with pytest.raises(UsageError, match="--read-percent has nothing to be a percent of"):
        read_budget(uncapped, None, 50)
    for bad in (0, -1, 100.5):
        with pytest.raises(UsageError, match=r"--read-percent must be in \(0, 100\]"):
            read_budget(prov, None, bad)
    with pytest.raises(UsageError, match="--max-read-units must be positive"):
        read_budget(prov, 0, None)
    with pytest.raises(UsageError, match="reports no provisioned read capacity"):
        read_budget(dict(prov, ProvisionedThroughput={"ReadCapacityUnits": 0}), None, None)


def test_write_budget():
    prov = provisioned_meta()["table"]
    demand = on_demand_meta()["table"]
    assert write_budget(prov, 7, None) == (7.0, "--max-write-units")
    assert write_budget(prov, None, None) == (16.0, "80% of provisioned 20 WCU")
    assert write_budget(prov, None, 50) == (10.0, "50% of provisioned 20 WCU")
    # MaxWriteRequestUnits -1 (no maximum): the warm throughput is what the table takes.
    assert write_budget(demand, None, None) == (3200.0, "80% of the table's warm throughput 4000 WRU/s")
    capped = dict(demand, OnDemandThroughput={"MaxWriteRequestUnits": 1000})
    assert write_budget(capped, None, 10) == (100.0, "10% of the on-demand maximum 1000 WRU")
    bare = {k: v for k, v in demand.items() if k not in ("OnDemandThroughput", "WarmThroughput")}
    assert write_budget(bare, None, None) == \
        (ON_DEMAND_DEFAULT_WCU, "on-demand default 3000 WCU (set --max-write-units)")
    with pytest.raises(UsageError, match="--max-write-units must be positive"):
        write_budget(prov, -5, None)
    with pytest.raises(UsageError, match=r"--write-percent must be in \(0, 100\]"):
        write_budget(prov, None, 0)
    with pytest.raises(UsageError, match="reports no provisioned write capacity"):
        write_budget(dict(prov, ProvisionedThroughput={"WriteCapacityUnits": 0}), None, None)


def test_plan_segments():
    assert plan_segments(0, slots=2, readers_per_task=4, override=None) == 16
    assert plan_segments(10 * 1024 ** 3, slots=2, readers_per_task=4, override=None) == 80
    assert plan_segments(SEGMENT_BYTES + 1, slots=1, readers_per_task=1, override=None) == 2
    assert plan_segments(10 ** 18, slots=2, readers_per_task=4, override=None) == MAX_SEGMENTS
    assert plan_segments(10 ** 12, slots=2, readers_per_task=4, override=3) == 3
    for bad in (0, -1, MAX_SEGMENTS + 1):
        with pytest.raises(UsageError, match=r"--segments must be 1\.\.1000000"):
            plan_segments(0, 2, 4, bad)


def test_group_segments_example():
    assert group_segments(10, 4) == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert group_segments(3, 4) == [[0, 1, 2]]
    assert group_segments(1, 1) == [[0]]


@given(total=st.integers(1, 400), per_task=st.integers(1, 24))
def test_group_segments_cover_every_segment_once(total, per_task):
    groups = group_segments(total, per_task)
    assert len(groups) == math.ceil(total / per_task)
    assert sorted(s for g in groups for s in g) == list(range(total))
    assert all(1 <= len(g) <= per_task for g in groups)
    # Round-robin: neighbours go to different tasks; a task's segments are spread len(groups) apart.
    assert all(g == list(range(g[0], total, len(groups))) for g in groups)


def test_restore_id():
    target = {"TableArn": "arn:aws:dynamodb:us-west-2:1:table/t", "CreationDateTime": "2026-01-01T00:00:00+00:00"}
    rid = restore_id("v3", target)
    assert re.fullmatch(r"v3-[0-9a-f]{16}", rid)
    assert restore_id("v3", dict(target)) == rid
    assert restore_id("v4", target) != rid and restore_id("v4", target).startswith("v4-")
    # A point in time is another restore than any version.
    assert re.fullmatch(r"t1764216000-[0-9a-f]{16}", restore_id("t1764216000", target))
    # The same name created anew (another creation time) is another restore: it starts afresh.
    assert restore_id("v3", dict(target, CreationDateTime="2026-01-02T00:00:00+00:00")) != rid
    assert restore_id("v3", dict(target, TableArn="arn:aws:dynamodb:us-west-2:1:table/u")) != rid


def test_partitions_for():
    assert partitions_for(0, 2) == 4
    assert partitions_for(10 * ITEMS_PER_PARTITION + 1, 2) == 11
    assert partitions_for(100, 8) == 16


class FakeTtlClient:
    """DescribeTimeToLive / UpdateTimeToLive as the service behaves: enabling an enabled TTL is refused."""

    def __init__(self, status, attribute=None):
        self.description = {"TimeToLiveStatus": status}
        if attribute:
            self.description["AttributeName"] = attribute
        self.updates = []

    def describe_time_to_live(self, TableName):  # boto3 parameter names
        return {"TimeToLiveDescription": dict(self.description)}

    def update_time_to_live(self, TableName, TimeToLiveSpecification):
        from botocore.exceptions import ClientError

        if self.description["TimeToLiveStatus"] in ("ENABLED", "ENABLING"):
            raise ClientError({"Error": {"Code": "ValidationException",
                                         "Message": "TimeToLive is already enabled"}}, "UpdateTimeToLive")
        self.updates.append((TableName, TimeToLiveSpecification))
        self.description = {"TimeToLiveStatus": "ENABLED",
                            "AttributeName": TimeToLiveSpecification["AttributeName"]}


def test_enable_ttl_turns_it_on_once(monkeypatch):
    meta = provisioned_meta()  # TTL on "expires"
    fresh = FakeTtlClient("DISABLED")
    monkeypatch.setattr(tables, "_control", lambda region: fresh)
    assert tables.enable_ttl(meta, "replica", "us-west-2") == "expires"
    assert fresh.updates == [("replica", {"Enabled": True, "AttributeName": "expires"})]
    # A rerun (or --existing-table into a table whose TTL is on) must not fail after the whole load.
    assert tables.enable_ttl(meta, "replica", "us-west-2") == "expires"
    assert len(fresh.updates) == 1

    other = FakeTtlClient("ENABLED", "valid_until")
    monkeypatch.setattr(tables, "_control", lambda region: other)
    with pytest.raises(TableError, match="has TTL on attribute valid_until, the source on expires"):
        tables.enable_ttl(meta, "replica", "us-west-2")
    assert other.updates == []

    meta["time_to_live"] = {"TimeToLiveStatus": "DISABLED"}
    assert tables.enable_ttl(meta, "replica", "us-west-2") is None

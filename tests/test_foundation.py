"""Smoke tests of the ground every job stands on: clients from endpoint variables, Delta on local and s3a paths."""
from __future__ import annotations

import datetime as dt

import boto3
import pytest

from ddbvault import aws
from ddbvault.session import on_emr
from servers import REGION_A, REGION_B


@pytest.mark.smoke
def test_client_factory_scans_region_a_through_endpoint_variables(aws_endpoint):
    ddb = boto3.client("dynamodb", region_name=REGION_A)
    ddb.create_table(TableName="smoke", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")
    for i in range(5):
        ddb.put_item(TableName="smoke", Item={"id": {"S": f"k{i}"}, "n": {"N": str(i)}})

    client = aws.client("dynamodb", REGION_A, data_plane=True)
    assert client.meta.endpoint_url == aws_endpoint
    items = client.scan(TableName="smoke")["Items"]
    assert sorted((i["id"]["S"], i["n"]["N"]) for i in items) == [(f"k{i}", str(i)) for i in range(5)]
    # The same name in region B is another table: the stand-in separates regions as AWS does.
    other = aws.client("dynamodb", REGION_B)
    assert "smoke" not in other.list_tables()["TableNames"]


def _rows(spark):
    from pyspark.sql import types as T

    schema = T.StructType([T.StructField("k", T.StringType()), T.StructField("v", T.LongType()),
                           T.StructField("at", T.TimestampType())])
    at = dt.datetime(2015, 9, 20, 9, 19, tzinfo=dt.timezone.utc)
    return spark.createDataFrame([(f"k{i}", i, at) for i in range(10)], schema)


def _round_trip(spark, path):
    from delta.tables import DeltaTable

    _rows(spark).write.format("delta").mode("overwrite").save(path)
    _rows(spark).limit(3).write.format("delta").mode("overwrite").save(path)
    newest = sorted((r.k, r.v) for r in spark.read.format("delta").load(path).collect())
    first = sorted((r.k, r.v) for r in spark.read.format("delta").option("versionAsOf", 0).load(path).collect())
    assert newest == [("k0", 0), ("k1", 1), ("k2", 2)]
    assert first == [(f"k{i}", i) for i in range(10)]
    assert DeltaTable.isDeltaTable(spark, path)


@pytest.mark.smoke
def test_delta_on_a_local_path(spark, tmp_path):
    assert not on_emr()
    _round_trip(spark, str(tmp_path / "t"))


@pytest.mark.smoke
def test_delta_on_s3a_in_region_b(spark, vault_bucket):
    _round_trip(spark, f"s3a://{vault_bucket}/smoke/t")
    keys = [o["Key"] for o in boto3.client("s3", region_name=REGION_B)
            .list_objects_v2(Bucket=vault_bucket, Prefix="smoke/t/_delta_log/")["Contents"]]
    assert "smoke/t/_delta_log/00000000000000000000.json" in keys
    assert "smoke/t/_delta_log/00000000000000000001.json" in keys
    # s3:// (EMR's scheme) reaches the same table locally.
    assert spark.read.format("delta").load(f"s3://{vault_bucket}/smoke/t").count() == 3


def _version(text):
    return tuple(int(part) for part in text.split(".")[:3])


def test_installed_botocore_models_hold_every_request_member_ddbvault_sends():
    """setup.py's boto3 floor is the first release whose models have these; an older one refuses the requests."""
    import os
    import re

    dynamodb = boto3.client("dynamodb", region_name=REGION_A).meta.service_model
    create = dynamodb.operation_model("CreateTable").input_shape.members
    assert {"WarmThroughput", "OnDemandThroughput", "DeletionProtectionEnabled", "TableClass"} <= set(create)
    assert {"WarmThroughput", "OnDemandThroughput"} <= set(create["GlobalSecondaryIndexes"].member.members)
    s3 = boto3.client("s3", region_name=REGION_B).meta.service_model
    assert {"IfNoneMatch", "IfMatch"} <= set(s3.operation_model("PutObject").input_shape.members)
    assert "IfMatch" in s3.operation_model("DeleteObject").input_shape.members
    # The declared floor is at least the release that brought the newest of them (PutObject IfMatch).
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.py")) as handle:
        floor = re.search(r'"boto3>=([0-9.]+)"', handle.read()).group(1)
    assert _version(boto3.__version__) >= _version(floor) >= (1, 35, 69)

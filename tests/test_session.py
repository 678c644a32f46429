"""The session builder's settings: --vault-region reaches Spark's S3 connector for the vault's bucket."""
from __future__ import annotations

import uuid

import boto3
import pytest
from jobs_helpers import create_table, every_type, name, put_items

from ddbvault.export import ExportOptions, export_table
from ddbvault.runner import Run
from ddbvault.session import vault_region_settings
from ddbvault.verify import VerifyOptions, verify_vault
from servers import REGION_A, REGION_B


@pytest.mark.parametrize("vault, region, want", [
    ("s3://vaults/orders", "us-west-2", {"spark.hadoop.fs.s3a.bucket.vaults.endpoint.region": "us-west-2"}),
    ("s3a://my.vault-bucket/a/b/", "eu-central-1",
     {"spark.hadoop.fs.s3a.bucket.my.vault-bucket.endpoint.region": "eu-central-1"}),
    ("s3n://old/x", "ap-south-1", {"spark.hadoop.fs.s3a.bucket.old.endpoint.region": "ap-south-1"}),
    ("s3://vaults/orders", None, {}),   # no --vault-region: s3a's own default
    ("/data/vaults/orders", "us-west-2", {}),  # a local vault has no bucket
    ("file:///data/vaults/orders", "us-west-2", {}),
])
def test_vault_region_setting_names_the_vaults_bucket(vault, region, want):
    assert vault_region_settings(vault, region) == want


def test_jobs_put_the_vault_region_into_the_sessions_hadoop_configuration(spark, ddb):
    client, made = ddb
    table = name("sess")
    create_table(client, table, [("pk", "S")])
    made.append(table)
    put_items(client, table, [dict(every_type(i), pk={"S": f"k{i}"}) for i in range(3)])
    bucket = "vault-region-" + uuid.uuid4().hex[:8]  # a bucket no other test has set a region for
    boto3.client("s3", region_name=REGION_B).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION_B})
    vault = f"s3a://{bucket}/orders"
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    key = f"fs.s3a.bucket.{bucket}.endpoint.region"
    assert hadoop.get(key) is None

    summary = export_table(ExportOptions(table=table, vault=vault, region=REGION_A, vault_region=REGION_B,
                                         segments=2, max_read_units=1000), Run(job="export_table"), spark)
    assert (summary["items"], hadoop.get(key)) == (3, REGION_B)

    hadoop.unset(key)
    checked = verify_vault(VerifyOptions(vault=vault, table=None, region=REGION_A, vault_region=REGION_B),
                           Run(job="verify_replica"), spark)
    assert (checked["versions_checked"], hadoop.get(key)) == (1, REGION_B)

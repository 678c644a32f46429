"""restore_table by ImportTable (moto implements it): a new table from gzip DynamoDB JSON staged in the recovery
region, the settings ImportTable cannot make applied after, verify exact; failed imports leave no table."""
from __future__ import annotations

import gzip
import importlib.util
import json
import os

import boto3
import pytest
from jobs_helpers import create_table, every_type, name, put_items, table_texts

from ddbvault import codec
from ddbvault.dynamo import importer
from ddbvault.dynamo import table as tables
from ddbvault.errors import TableError, UsageError
from ddbvault.export import ExportOptions, export_table
from ddbvault.restore import RestoreOptions, choose_method, restore_table
from ddbvault.runner import Run
from ddbvault.verify import VerifyOptions, verify_replica
from servers import REGION_A, REGION_B

N_ITEMS = 45
TAGS = {"team": "payments", "tier": "gold \u00e9"}
JOB = os.path.join(os.path.dirname(__file__), "..", "jobs", "restore_table.py")


@pytest.fixture(scope="module")
def clients(aws_endpoint):
    return boto3.client("dynamodb", region_name=REGION_A), boto3.client("dynamodb", region_name=REGION_B)


@pytest.fixture(scope="module")
def source(spark, clients, vault_bucket):
    """An on-demand source in region A with a GSI, a stream, tags, TTL, PITR and deletion protection (no LSI),
    exported to an s3a vault in region B (the recovery region)."""
    ddb_a, _ = clients
    table = name("imp-src")
    create_table(ddb_a, table, [("pk", "S"), ("sk", "N")], attributes=[("owner", "S")],
                 gsis=[{"IndexName": "by_owner", "KeySchema": [{"AttributeName": "owner", "KeyType": "HASH"}],
                        "Projection": {"ProjectionType": "ALL"}}],
                 stream="NEW_AND_OLD_IMAGES", tags=TAGS)
    ddb_a.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"})
    ddb_a.update_continuous_backups(TableName=table,
                                    PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    ddb_a.update_table(TableName=table, DeletionProtectionEnabled=True)
    items = []
    for i in range(N_ITEMS):
        item = dict(every_type(i), pk={"S": f"cust-{i % 5}"}, sk={"N": f"{i * 7}.5"})
        if i % 2:
            item.update(owner={"S": f"o{i % 3}"}, expires={"N": str(4_000_000_000 + i)})
        items.append(item)
    put_items(ddb_a, table, items)
    vault = f"s3a://{vault_bucket}/import/{table}"
    export_table(ExportOptions(table=table, vault=vault, region=REGION_A, vault_region=REGION_B, segments=2,
                               max_read_units=10_000), Run(job="export_table"), spark)
    yield table, vault, table_texts(ddb_a, table)
    ddb_a.update_table(TableName=table, DeletionProtectionEnabled=False)
    ddb_a.delete_table(TableName=table)


@pytest.fixture
def replica(clients):
    _, ddb_b = clients
    table = name("imp-rep")
    yield table
    if tables.describe(table, REGION_B) is not None:
        ddb_b.update_table(TableName=table, DeletionProtectionEnabled=False)
        ddb_b.delete_table(TableName=table)


def restore(spark, vault, table, **kwargs):
    opts = RestoreOptions(vault=vault, table=table, region=REGION_B, vault_region=REGION_B, import_poll_s=0.1,
                          **kwargs)
    return restore_table(opts, Run(job="restore_table"), spark)


def staged_keys(vault_bucket, prefix):
    listing = boto3.client("s3", region_name=REGION_B).list_objects_v2(Bucket=vault_bucket, Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", [])]


def test_import_builds_the_table_and_verify_proves_it(spark, clients, source, replica, vault_bucket):
    _, ddb_b = clients
    _, vault, expected = source
    summary = restore(spark, vault, replica, method="import")

    assert summary["method"] == "import" and summary["mode"] == "import"
    assert summary["import_arn"].startswith(f"arn:aws:dynamodb:{REGION_B}:") and "/import/" in summary["import_arn"]
    assert summary["import_status"] == "COMPLETED"
    assert (summary["staged_items"], summary["imported_items"], summary["items"]) == (N_ITEMS, N_ITEMS, N_ITEMS)
    assert 0 < summary["staged_bytes"] < summary["source_bytes"]
    assert summary["consumed_wcu"] == 0.0
    assert table_texts(ddb_b, replica) == expected
    # What ImportTable cannot make was set after it: stream, tags, deletion protection; then TTL and PITR.
    made = ddb_b.describe_table(TableName=replica)["Table"]
    assert [g["IndexName"] for g in made["GlobalSecondaryIndexes"]] == ["by_owner"]
    assert made["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert made["DeletionProtectionEnabled"] is True
    assert sorted((t["Key"], t["Value"]) for t in ddb_b.list_tags_of_resource(ResourceArn=made["TableArn"])["Tags"]) \
        == sorted(TAGS.items())
    assert ddb_b.describe_time_to_live(TableName=replica)["TimeToLiveDescription"]["AttributeName"] == "expires"
    assert ddb_b.describe_continuous_backups(TableName=replica)["ContinuousBackupsDescription"][
        "PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    # The staging files are gone once the import succeeded.
    assert staged_keys(vault_bucket, summary["staging"].split("/", 3)[3] + "/") == []
    check = verify_replica(VerifyOptions(vault=vault, table=replica, region=REGION_B, vault_region=REGION_B),
                           Run(job="verify_replica"), spark)
    assert (check["same"], check["missing"], check["extra"], check["different"]) == (N_ITEMS, 0, 0, 0)


def test_staged_files_are_the_dynamodb_json_import_reads(monkeypatch, spark, source, replica, vault_bucket):
    """The files as ImportTable gets them: gzip, one {"Item": ...} line per item, the vault's texts."""
    _, vault, expected = source
    seen = {}
    real_start = importer.start

    def start(params, region):
        s3 = boto3.client("s3", region_name=REGION_B)
        bucket, prefix = params["S3BucketSource"]["S3Bucket"], params["S3BucketSource"]["S3KeyPrefix"]
        lines = []
        for key in staged_keys(bucket, prefix):
            assert key.endswith(".json.gz")
            lines += gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).decode().splitlines()
        seen["items"] = sorted(codec.encode_item(json.loads(line)["Item"]) for line in lines)
        seen["raw"] = lines
        seen["params"] = params
        return real_start(params, region)

    monkeypatch.setattr(importer, "start", start)
    restore(spark, vault, replica, method="import")
    assert seen["items"] == expected
    assert all(line.startswith('{"Item":{') for line in seen["raw"])
    creation = seen["params"]["TableCreationParameters"]
    assert seen["params"]["InputFormat"] == "DYNAMODB_JSON" and seen["params"]["InputCompressionType"] == "GZIP"
    assert sorted(creation) == ["AttributeDefinitions", "BillingMode", "GlobalSecondaryIndexes", "KeySchema",
                                "TableName"]


def test_a_staging_bucket_that_does_not_exist_is_refused_before_anything(spark, source, replica):
    _, vault, _ = source
    with pytest.raises(TableError) as err:
        restore(spark, vault, replica, method="import", import_staging="s3://no-such-bucket-ddbvault/x")
    assert "import staging bucket no-such-bucket-ddbvault cannot be used" in str(err.value)
    assert "nothing was created" in str(err.value)
    assert tables.describe(replica, REGION_B) is None


def test_an_import_that_fails_reading_its_bucket_leaves_no_table(monkeypatch, spark, source, replica, vault_bucket):
    """DynamoDB cannot read the bucket (here: the import is pointed at a bucket that does not exist)."""
    _, vault, _ = source
    real_start = importer.start
    staging = {}

    def start(params, region):
        staging["prefix"] = params["S3BucketSource"]["S3KeyPrefix"]
        params = dict(params, S3BucketSource=dict(params["S3BucketSource"], S3Bucket="gone-" + vault_bucket))
        return real_start(params, region)

    monkeypatch.setattr(importer, "start", start)
    with pytest.raises(TableError) as err:
        restore(spark, vault, replica, method="import")
    message = str(err.value)
    assert "ended FAILED (S3NoSuchBucket: The specified bucket does not exist" in message
    assert "no table was left behind and the staging files removed" in message
    assert "rerun with --method batch-write" in message and "\n" not in message
    assert tables.describe(replica, REGION_B) is None
    assert staged_keys(vault_bucket, staging["prefix"]) == []


def test_an_import_that_fails_after_making_its_table_deletes_it(monkeypatch, spark, source, replica, vault_bucket):
    """A file ImportTable cannot read (not gzip) among the staged ones: moto creates the table, then fails."""
    _, vault, _ = source
    real_start = importer.start
    made = {}

    def start(params, region):
        source_ = params["S3BucketSource"]
        boto3.client("s3", region_name=REGION_B).put_object(
            Bucket=source_["S3Bucket"], Key=source_["S3KeyPrefix"] + "zz-broken.json.gz", Body=b"not gzip")
        made["prefix"] = source_["S3KeyPrefix"]
        return real_start(params, region)

    real_discard = importer.discard

    def discard(table, region, arn, timeout_s=600.0):
        made["existed"] = tables.describe(table, region) is not None
        return real_discard(table, region, arn, timeout_s)

    monkeypatch.setattr(importer, "start", start)
    monkeypatch.setattr(importer, "discard", discard)
    with pytest.raises(TableError) as err:
        restore(spark, vault, replica, method="import")
    assert made["existed"] is True
    assert "ended FAILED" in str(err.value) and "the table it made was deleted" in str(err.value)
    assert tables.describe(replica, REGION_B) is None
    assert staged_keys(vault_bucket, made["prefix"]) == []


META = {"table_name": "orders", "table": {"AttributeDefinitions": [], "KeySchema": []}}


@pytest.mark.parametrize("kwargs, existing, meta, expected", [
    ({"method": "auto"}, None, META, ("import", 2 << 30)),
    ({"method": "auto"}, None, META, ("batch-write", (1 << 30) - 1)),
    ({"method": "auto"}, {"TableArn": "x"}, META, ("batch-write", None)),
    ({"method": "auto", "existing_table": True}, None, META, ("batch-write", None)),
    ({"method": "auto"}, None, dict(META, table={"LocalSecondaryIndexes": [{}]}), ("batch-write", None)),
    ({"method": "auto", "vault_region": REGION_A}, None, META, ("batch-write", None)),  # no staging in region B
    ({"method": "auto", "vault_region": REGION_A, "import_staging": "s3://b/p"}, None, META, ("import", 2 << 30)),
    ({"method": "batch-write"}, None, META, ("batch-write", None)),
    ({"method": "import"}, None, META, ("import", None)),
])
def test_auto_chooses_import_only_for_a_large_new_table_without_lsis(kwargs, existing, meta, expected):
    method, size = expected

    class Frame:
        """The vault's items as far as the choice looks at them: their total size."""

        def agg(self, *_):
            return self

        def collect(self):
            assert size is not None, "the vault's size was computed where it decides nothing"
            return [(size,)]

    opts = RestoreOptions(vault="s3://vault/orders", table="orders-r", region=REGION_B,
                          **dict({"vault_region": REGION_B}, **kwargs))
    chosen, why = choose_method(opts, meta, existing, Frame())
    assert chosen == method, why


@pytest.mark.parametrize("kwargs, existing, meta, words", [
    ({"existing_table": True}, None, META, "is to be loaded (--existing-table)"),
    ({}, {"TableArn": "x"}, META, "exists in region"),
    ({}, None, dict(META, table={"LocalSecondaryIndexes": [{}]}), "local secondary index(es), which ImportTable"),
    ({"vault_region": REGION_A}, None, META, "pass --import-staging s3://bucket/prefix"),
])
def test_an_import_that_cannot_work_is_refused_before_anything(kwargs, existing, meta, words):
    opts = RestoreOptions(vault="s3://vault/orders", table="orders-r", region=REGION_B, method="import",
                          **dict({"vault_region": REGION_B}, **kwargs))
    with pytest.raises(UsageError) as err:
        choose_method(opts, meta, existing, None)
    assert words in str(err.value)


def test_the_job_refuses_import_with_existing_table():
    spec = importlib.util.spec_from_file_location("restore_table_job", JOB)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    with pytest.raises(UsageError) as err:
        job.parse_args(["--vault", "s3://v/p", "--table", "t", "--existing-table", "--method", "import"])
    assert "--existing-table loads with batch-write" in str(err.value)
    args = job.parse_args(["--vault", "s3://v/p", "--table", "t", "--import-staging", "s3a://b/p/",
                           "--write-path", "botocore"])
    assert (args.method, args.import_staging, args.write_path) == ("auto", "s3a://b/p/", "botocore")
    with pytest.raises(UsageError):
        job.parse_args(["--vault", "s3://v/p", "--table", "t", "--import-staging", "/tmp/x"])


def test_pricing_figures_behind_the_threshold():
    gib = 1 << 30
    assert importer.estimate_import_usd(gib) == pytest.approx(0.15)
    assert importer.estimate_on_demand_usd(gib) == pytest.approx(0.655, abs=0.001)
    assert importer.estimate_on_demand_usd(gib, item_bytes=200) == pytest.approx(3.36, abs=0.01)
    assert importer.estimate_on_demand_usd(100 * gib) - importer.estimate_import_usd(100 * gib) \
        == pytest.approx(50.5, abs=0.1)


def test_the_job_exits_1_with_one_line_and_a_summary_when_the_import_cannot_run(spark, source, replica, capsys):
    """The job contract for a failed import: exit 1, one stderr line saying what to do, a failed JSON summary."""
    _, vault, _ = source
    spec = importlib.util.spec_from_file_location("restore_table_job", JOB)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    capsys.readouterr()
    code = job.main(["--vault", vault, "--vault-region", REGION_B, "--table", replica, "--region", REGION_B,
                     "--method", "import", "--import-staging", "s3://no-such-bucket-ddbvault/x"])
    out, err = capsys.readouterr()
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("ddbvault ")]
    assert lines == [f"ddbvault restore_table: the import staging bucket no-such-bucket-ddbvault cannot be used "
                     f"(NoSuchBucket); nothing was created: pass --import-staging s3://bucket/prefix naming a "
                     f"bucket of region {REGION_B} this job may write, or --method batch-write"]
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["status"], summary["method"], summary["table"]) == ("failed", "import", replica)
    assert tables.describe(replica, REGION_B) is None


def test_auto_imports_from_the_threshold_and_falls_back_when_import_is_denied(monkeypatch, spark, clients, source,
                                                                              replica):
    """``auto`` with the threshold under this vault's size imports; a role that may not import (ImportTable
    denied, nothing created) gets the same restore by BatchWriteItem, and says so."""
    _, ddb_b = clients
    _, vault, expected = source
    monkeypatch.setattr(importer, "AUTO_IMPORT_MIN_BYTES", 1024)
    summary = restore(spark, vault, replica)
    assert (summary["method"], summary["mode"], summary["imported_items"]) == ("import", "import", N_ITEMS)
    assert summary["method_reason"].startswith("a new table without LSIs and 0.0 GiB of items: ImportTable")
    assert table_texts(ddb_b, replica) == expected
    ddb_b.update_table(TableName=replica, DeletionProtectionEnabled=False)
    ddb_b.delete_table(TableName=replica)

    def denied(params, region):
        raise importer.ImportNotAllowed(f"ImportTable of table {replica} in region {region} was denied: grant ...")

    monkeypatch.setattr(importer, "start", denied)
    summary = restore(spark, vault, replica)
    assert (summary["method"], summary["mode"], summary["items_written"]) == ("batch-write", "load", N_ITEMS)
    assert summary["method_reason"].endswith("; but ImportTable was denied")
    assert [n for n in summary["notes"] if "ImportTable was not allowed" in n] == [
        f"ImportTable was not allowed, so the items were written with BatchWriteItem (ImportTable of table "
        f"{replica} in region {REGION_B} was denied: grant ...)"]
    assert table_texts(ddb_b, replica) == expected
    with pytest.raises(importer.ImportNotAllowed):  # an explicit --method import does not fall back
        restore(spark, vault, name("imp-rep"), method="import")

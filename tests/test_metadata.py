"""The vault's table captures outlive Delta's log cleanup; a job finds its own commit by its run id."""
from __future__ import annotations

import shutil

import boto3
from jobs_helpers import create_table, every_type, items_path, name, put_items, table_texts, texts, vault_texts

from ddbvault.dynamo import table as tables
from ddbvault.export import ExportOptions, export_table
from ddbvault.restore import RestoreOptions, restore_table
from ddbvault.runner import Run
from ddbvault.vault import layout, metadata
from servers import REGION_A, REGION_B


def log_keys(bucket: str, prefix: str):
    """The object keys of a table's ``_delta_log`` folder on the (moto) vault bucket."""
    s3 = boto3.client("s3", region_name=REGION_B)
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/_delta_log/")
    return sorted(o["Key"] for o in listing.get("Contents", []))


def clean_up_log(bucket: str, prefix: str) -> int:
    """What Delta's log cleanup does once the export's commit is older than ``delta.logRetentionDuration``: every
    commit file (and its ``.crc``) before the newest checkpoint is deleted. Delta only deletes files older than
    the retention rounded down to whole days, so the test deletes them itself, as the cleanup would a day later.
    Returns the checkpoint's version."""
    keys = log_keys(bucket, prefix)
    checkpoints = [k for k in keys if k.endswith(".checkpoint.parquet")]
    assert checkpoints, keys
    checkpoint = int(checkpoints[-1].rsplit("/", 1)[1].split(".")[0])
    old = [k for k in keys if k.rsplit("/", 1)[1].split(".")[0].isdigit()
           and int(k.rsplit("/", 1)[1].split(".")[0]) < checkpoint]
    boto3.client("s3", region_name=REGION_B).delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": k} for k in old], "Quiet": True})
    return checkpoint


def test_restore_of_the_newest_version_after_log_cleanup_took_the_exports_commit(spark, ddb, vault_bucket):
    client, made = ddb
    table, replica = name("cap-src"), name("cap-rep")
    create_table(client, table, [("pk", "S"), ("sk", "N")], tags={"team": "payments"})
    made.append(table)
    source = [dict(every_type(i), pk={"S": f"k{i % 4}"}, sk={"N": str(i)}) for i in range(16)]
    put_items(client, table, source)
    prefix = f"captures/{table}"
    vault = f"s3a://{vault_bucket}/{prefix}"
    exported = export_table(ExportOptions(table=table, vault=vault, region=REGION_A, vault_region=REGION_B,
                                          segments=2, max_read_units=10_000), Run(job="export_table"), spark)
    assert exported["vault_version"] == 0
    assert metadata.captured_versions(vault, REGION_B) == [0]

    # Later commits without a capture (as merges and maintenance make): a tiny log retention and a checkpoint
    # every 2 commits, a data change (one key's items deleted), and one more commit after the checkpoint.
    path = items_path(vault)
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.logRetentionDuration' = 'interval 1 seconds', "
              f"'delta.checkpointInterval' = '2')")
    spark.sql(f"DELETE FROM delta.`{path}` WHERE {layout.PK} = 'k3'")
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('ddbvault.test.note' = 'after the checkpoint')")
    assert clean_up_log(vault_bucket, f"{prefix}/items") == 2
    keys = log_keys(vault_bucket, f"{prefix}/items")
    assert f"{prefix}/items/_delta_log/{0:020d}.json" not in keys  # the export's commit (and its metadata) is gone
    assert f"{prefix}/items/_delta_log/{3:020d}.json" in keys
    assert [c["version"] for c in metadata.commits(spark, path)] == []  # no commit left carries a capture

    version, meta = metadata.table_meta_at(spark, vault, None, REGION_B)
    assert (version, meta["table_name"], meta["tags"]) == (3, table, [{"Key": "team", "Value": "payments"}])
    try:
        summary = restore_table(RestoreOptions(vault=vault, table=replica, region=REGION_B, vault_region=REGION_B,
                                               max_write_units=10_000), Run(job="restore_table"), spark)
        ddb_b = boto3.client("dynamodb", region_name=REGION_B)
        expected = [i for i in source if i["pk"]["S"] != "k3"]
        assert (summary["vault_version"], summary["items"], summary["source_table"]) == (3, 12, table)
        assert table_texts(ddb_b, replica) == vault_texts(spark, vault) == texts(expected)
        assert ddb_b.describe_table(TableName=replica)["Table"]["KeySchema"] == \
            client.describe_table(TableName=table)["Table"]["KeySchema"]
    finally:
        if tables.describe(replica, REGION_B) is not None:
            boto3.client("dynamodb", region_name=REGION_B).delete_table(TableName=replica)


def test_each_version_gets_the_capture_of_the_newest_export_at_or_before_it(spark, ddb, tmp_path):
    client, made = ddb
    table = name("cap-two")
    create_table(client, table, [("pk", "N")], tags={"stage": "one"})
    made.append(table)
    put_items(client, table, [dict(every_type(i), pk={"N": str(i)}) for i in range(6)])
    vault = str(tmp_path / "vault")
    opts = ExportOptions(table=table, vault=vault, region=REGION_A, segments=2)
    export_table(opts, Run(job="export_table"), spark)
    arn = client.describe_table(TableName=table)["Table"]["TableArn"]
    client.tag_resource(ResourceArn=arn, Tags=[{"Key": "release", "Value": "two"}])
    export_table(opts, Run(job="export_table"), spark)
    spark.sql(f"ALTER TABLE delta.`{items_path(vault)}` SET TBLPROPERTIES ('ddbvault.test.note' = 'v2')")

    def stages():
        return [(v, sorted(t["Key"] for t in m["tags"]))
                for v, m in (metadata.table_meta_at(spark, vault, at) for at in (0, 1, 2, None))]

    want = [(0, ["stage"]), (1, ["release", "stage"]), (2, ["release", "stage"]), (2, ["release", "stage"])]
    assert metadata.captured_versions(vault) == [0, 1]
    assert stages() == want
    # A vault written before the capture files existed: the export commits' metadata still answers.
    shutil.rmtree(layout.join(vault, layout.META_DIR, metadata.CAPTURES_DIR))
    assert metadata.captured_versions(vault) == []
    assert stages() == want


def test_commit_by_run_id_finds_the_runs_own_commit_when_others_follow(spark, tmp_path):
    from pyspark.sql import types as T

    path = str(tmp_path / "items")
    schema = T.StructType([T.StructField("k", T.StringType()), T.StructField("v", T.LongType())])

    def write(rows, run_id):
        spark.createDataFrame([(f"k{i}", i) for i in range(rows)], schema).write.format("delta").mode("overwrite") \
            .option("userMetadata", metadata.commit_metadata("export_table", run_id, note=f"{rows} rows")).save(path)

    write(10, "run-mine")
    write(3, "run-other")  # another writer's commit after ours
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('ddbvault.test.note' = 'no metadata')")

    mine = metadata.commit_by_run_id(spark, path, "run-mine")
    assert {k: mine[k] for k in ("version", "operation", "meta")} == {
        "version": 0, "operation": "WRITE",
        "meta": {"format_version": layout.FORMAT_VERSION, "job": "export_table", "run_id": "run-mine",
                 "note": "10 rows"}}
    assert mine["metrics"]["numOutputRows"] == "10"
    other = metadata.commit_by_run_id(spark, path, "run-other")
    assert (other["version"], other["metrics"]["numOutputRows"]) == (1, "3")
    assert metadata.commit_by_run_id(spark, path, "run-never") is None
    # A bounded look back: the newest two commits do not hold run-mine's.
    assert metadata.commit_by_run_id(spark, path, "run-mine", limit=2) is None

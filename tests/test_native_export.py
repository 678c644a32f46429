"""DynamoDB's own exports to S3: the manifest reader (full and incremental), and ``export_table --from-export`` /
``--start-export`` against moto S3, real Spark and Delta.

The exports here are written by the tests, in the shapes of the DynamoDB Developer Guide, "DynamoDB table export
output format" (docs.aws.amazon.com/amazondynamodb/latest/developerguide/S3DataExport.Output.html):
- ``manifest-summary.json``: the page's summary-manifest example (version "2020-06-30", exportArn, startTime,
  endTime, tableArn, tableId, exportTime, s3Bucket, s3Prefix, s3SseAlgorithm, s3SseKmsKeyId, manifestFilesS3Key,
  billedSizeBytes, itemCount, outputFormat), with exportType; an incremental export's also has exportFromTime,
  exportToTime and outputView (the page's incremental-export section);
- ``manifest-files.json``: the page's files-manifest example, one JSON object a line: itemCount, md5Checksum
  (base64 MD5 of the data file), etag, dataFileS3Key;
- data files ``data/<name>.json.gz``: the page's "DynamoDB JSON" section, a full export's line ``{"Item": {...}}``
  with binaries as base64; an incremental export's line ``{"Metadata": {"WriteTimestampMicros": {"N": ..}},
  "Keys": .., "NewImage": .., "OldImage": ..}`` (no NewImage: a delete), its files in the shared
  ``AWSDynamoDB/data/`` folder; an empty partition leaves an empty data file.
``--start-export`` runs against moto's ExportTableToPointInTime, which ``standins/moto_patched.py`` makes write that
same layout (moto 5.2.5 alone writes one data file and no manifest).
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import json
import os
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional

import boto3
import pytest
from jobs_helpers import create_table, every_type, name, put_items, scan_all, texts

from ddbvault.changes import native_export as ne
from ddbvault.errors import ExportError, TableError
from ddbvault.export import ExportOptions, export_table
from ddbvault.merge import MergeOptions, merge_increments
from ddbvault.runner import Run
from ddbvault.vault import items, layout
from servers import REGION_A

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCOUNT = "123456789012"


def _job():
    spec = importlib.util.spec_from_file_location("export_table_job", os.path.join(REPO, "jobs", "export_table.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


JOB = _job()


@pytest.fixture(scope="module")
def export_bucket(aws_endpoint):
    """A bucket in the table's region, where DynamoDB (or a test) writes exports."""
    bucket = "exports-" + uuid.uuid4().hex[:10]
    boto3.client("s3", region_name=REGION_A).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def s3(aws_endpoint):
    return boto3.client("s3", region_name=REGION_A)


@pytest.fixture
def src(ddb, s3, export_bucket):
    """(DynamoDB client, tables to delete after the test, S3 client, export bucket), all in the table's region."""
    client, made = ddb
    return client, made, s3, export_bucket


# --- hand-made exports ---------------------------------------------------------------------------------------------

def export_json(value: Any) -> Any:
    """A low-level client value (binaries as bytes) as an export's data file writes it (binaries as base64)."""
    if isinstance(value, dict):
        out = {}
        for tag, inner in value.items():
            if tag == "B":
                out[tag] = base64.b64encode(inner).decode("ascii")
            elif tag == "BS":
                out[tag] = [base64.b64encode(b).decode("ascii") for b in inner]
            elif tag == "M":
                out[tag] = {k: export_json(v) for k, v in inner.items()}
            elif tag == "L":
                out[tag] = [export_json(v) for v in inner]
            else:
                out[tag] = inner
        return out
    return value


def export_item(item: Dict[str, Any]) -> Dict[str, Any]:
    return {attribute: export_json(value) for attribute, value in item.items()}


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def gz(lines: List[Any]) -> bytes:
    return gzip.compress("".join(json.dumps(line) + "\n" for line in lines).encode("utf-8"))


def put_export(s3, bucket: str, prefix: str, table_arn: str, *, files: List[bytes], counts: List[int],
               export_time: datetime, kind: str = "FULL_EXPORT", incremental: Optional[Dict[str, Any]] = None,
               fmt: str = "DYNAMODB_JSON", shared_data: bool = False, summary_count: Optional[int] = None,
               skip_upload: Optional[int] = None, md5s: Optional[List[str]] = None) -> str:
    """Write an export in the documented layout; returns its folder URI. ``files``: each data file's bytes (gzip),
    ``counts``: the itemCount its manifest line claims."""
    export_id = f"{int(export_time.timestamp() * 1000):014d}-{uuid.uuid4().hex[:8]}"
    folder = f"{prefix}/AWSDynamoDB/{export_id}"
    data_dir = f"{prefix}/AWSDynamoDB/data" if shared_data else f"{folder}/data"
    s3.put_object(Bucket=bucket, Key=f"{folder}/_started", Body=b"")
    lines = []
    for number, (body, count) in enumerate(zip(files, counts)):
        key = f"{data_dir}/{uuid.uuid4().hex[:26]}.json.gz"
        if number != skip_upload:
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        digest = hashlib.md5(body).digest()  # S3's checksum, not security
        lines.append({"itemCount": count,
                      "md5Checksum": md5s[number] if md5s else base64.b64encode(digest).decode("ascii"),
                      "etag": digest.hex(), "dataFileS3Key": key})
    s3.put_object(Bucket=bucket, Key=f"{folder}/manifest-files.json",
                  Body="".join(json.dumps(line) + "\n" for line in lines).encode("utf-8"))
    summary = {
        "version": "2020-06-30", "exportArn": f"{table_arn}/export/{export_id}",
        "startTime": iso(export_time), "endTime": iso(export_time + timedelta(minutes=5)),
        "tableArn": table_arn, "tableId": str(uuid.uuid4()), "exportTime": iso(export_time),
        "s3Bucket": bucket, "s3Prefix": prefix, "s3SseAlgorithm": "AES256", "s3SseKmsKeyId": None,
        "manifestFilesS3Key": f"{folder}/manifest-files.json", "billedSizeBytes": sum(len(f) for f in files),
        "itemCount": sum(counts) if summary_count is None else summary_count, "outputFormat": fmt,
        "exportType": kind, **(incremental or {}),
    }
    s3.put_object(Bucket=bucket, Key=f"{folder}/manifest-summary.json", Body=json.dumps(summary).encode("utf-8"))
    return f"s3://{bucket}/{folder}/"


def full_export_of(s3, bucket: str, table_arn: str, table_items: List[Dict[str, Any]], **kwargs) -> str:
    """A full export of ``table_items``: two data files and an empty one (an empty partition)."""
    parts = [table_items[0::2], table_items[1::2], []]
    files = [gz([{"Item": export_item(item)} for item in part]) for part in parts]
    return put_export(s3, bucket, kwargs.pop("prefix", "nightly"), table_arn, files=files,
                      counts=[len(p) for p in parts],
                      export_time=kwargs.pop("export_time", datetime.now(timezone.utc)),
                      **kwargs)


def vault_state(root: str) -> Dict[str, str]:
    """Every file of a local vault but its run records, with a hash of its bytes."""
    found = {}
    for folder, _dirs, files in os.walk(root):
        for file in files:
            path = os.path.join(folder, file)
            rel = os.path.relpath(path, root)
            if rel.startswith(os.path.join(layout.META_DIR, "runs")):
                continue
            with open(path, "rb") as handle:
                found[rel] = hashlib.sha256(handle.read()).hexdigest()
    return found


def rows(spark, vault):
    return sorted((r[layout.PK], r[layout.SK], r[layout.ITEM], r[layout.ITEM_SIZE], r[layout.ITEM_DIGEST])
                  for r in items.read(spark, vault).collect())


def run_job(argv, capsys):
    """The export job in this process (the test run's SparkSession): (exit code, stderr lines, summary)."""
    code = JOB.main(argv)
    out, err = capsys.readouterr()
    return code, err.strip().splitlines(), json.loads(out.strip().splitlines()[-1])


# --- the manifest reader -------------------------------------------------------------------------------------------

def test_read_manifest_gives_the_documented_full_export_whole(s3, export_bucket):
    arn = f"arn:aws:dynamodb:{REGION_A}:{ACCOUNT}:table/Products"
    when = datetime(2026, 11, 4, 7, 28, 34, 28000, tzinfo=timezone.utc)
    files = [gz([{"Item": {"id": {"S": "a"}}}, {"Item": {"id": {"S": "b"}}}]), gz([])]
    folder = put_export(s3, export_bucket, "docs/shape", arn, files=files, counts=[2, 0], export_time=when)

    found = ne.read_manifest(folder.rstrip("/"), REGION_A)  # with or without the trailing slash
    listing = [ln for ln in s3.get_object(Bucket=export_bucket, Key=folder.split("/", 3)[3] + "manifest-files.json")[
        "Body"].read().decode().splitlines()]
    keys = [json.loads(line)["dataFileS3Key"] for line in listing]
    assert found == ne.ExportManifest(
        uri=folder, export_arn=f"{arn}/export/{folder.rstrip('/').rsplit('/', 1)[1]}", export_type="FULL_EXPORT",
        table_arn=arn, export_time=when, from_time=None, to_time=None, output_view=None,
        output_format="DYNAMODB_JSON", item_count=2,
        files=(ne.DataFile(f"s3://{export_bucket}/{keys[0]}", 2, base64.b64encode(hashlib.md5(files[0]).digest())
                           .decode()),
               ne.DataFile(f"s3://{export_bucket}/{keys[1]}", 0, base64.b64encode(hashlib.md5(files[1]).digest())
                           .decode())))
    assert list(ne.iter_data_file(found.files[0], REGION_A)) == [{"Item": {"id": {"S": "a"}}},
                                                                 {"Item": {"id": {"S": "b"}}}]
    assert list(ne.iter_data_file(found.files[1], REGION_A)) == []


def test_read_manifest_of_an_incremental_export_and_its_records_deletes_included(s3, export_bucket):
    arn = f"arn:aws:dynamodb:{REGION_A}:{ACCOUNT}:table/Orders"
    start = datetime(2026, 11, 27, 1, 0, tzinfo=timezone.utc)
    records = [
        {"Metadata": {"WriteTimestampMicros": {"N": "1795741200000001"}}, "Keys": {"pk": {"B": "AAH/"}},
         "NewImage": {"pk": {"B": "AAH/"}, "n": {"N": "1"}}},
        {"Metadata": {"WriteTimestampMicros": {"N": "1795741200000002"}}, "Keys": {"pk": {"B": "AQI="}},
         "NewImage": {"pk": {"B": "AQI="}, "n": {"N": "2"}}, "OldImage": {"pk": {"B": "AQI="}, "n": {"N": "1"}}},
        {"Metadata": {"WriteTimestampMicros": {"N": "1795741200000003"}}, "Keys": {"pk": {"B": "AwM="}},
         "OldImage": {"pk": {"B": "AwM="}, "gone": {"BOOL": True}}},  # a delete: no NewImage
    ]
    folder = put_export(s3, export_bucket, "incr", arn, files=[gz(records)], counts=[3], export_time=start,
                        shared_data=True,
                        kind="INCREMENTAL_EXPORT", incremental={
                            "exportFromTime": iso(start), "exportToTime": iso(start + timedelta(hours=1)),
                            "outputView": "NEW_AND_OLD_IMAGES"})

    found = ne.read_manifest(folder, REGION_A)
    assert (found.export_type, found.from_time, found.to_time, found.output_view, found.item_count) == \
        ("INCREMENTAL_EXPORT", start, start + timedelta(hours=1), "NEW_AND_OLD_IMAGES", 3)
    assert len(found.files) == 1 and found.files[0].uri.startswith(f"s3://{export_bucket}/incr/AWSDynamoDB/data/")
    assert list(ne.iter_data_file(found.files[0], REGION_A)) == records


def test_list_exports_and_export_folder(s3, export_bucket):
    arn = f"arn:aws:dynamodb:{REGION_A}:{ACCOUNT}:table/Listed"
    first = datetime(2026, 11, 20, tzinfo=timezone.utc)
    a = put_export(s3, export_bucket, "listed", arn, files=[gz([])], counts=[0],
                   export_time=first + timedelta(days=1))
    b = put_export(s3, export_bucket, "listed", arn, files=[gz([])], counts=[0], export_time=first)
    s3.put_object(Bucket=export_bucket, Key="listed/AWSDynamoDB/99999999999999-running/_started", Body=b"")

    assert [m.uri for m in ne.list_exports(f"s3://{export_bucket}/listed", REGION_A)] == [b, a]
    assert [m.uri for m in ne.list_exports(f"s3://{export_bucket}/listed/AWSDynamoDB/", REGION_A)] == [b, a]
    described = {"ExportArn": f"{arn}/export/0123-ab", "S3Bucket": "bk", "S3Prefix": "p/q"}
    assert ne.export_folder(described) == "s3://bk/p/q/AWSDynamoDB/0123-ab/"
    assert ne.export_folder(dict(described, ExportManifest="p/q/AWSDynamoDB/0123-ab/manifest-summary.json")) == \
        "s3://bk/p/q/AWSDynamoDB/0123-ab/"


def test_manifests_that_cannot_be_used_are_refused_with_one_line(s3, export_bucket):
    arn = f"arn:aws:dynamodb:{REGION_A}:{ACCOUNT}:table/Bad"
    when = datetime(2026, 11, 4, tzinfo=timezone.utc)
    ion = put_export(s3, export_bucket, "bad", arn, files=[gz([])], counts=[0], export_time=when, fmt="ION")
    with pytest.raises(ExportError, match=r"is in ION format; ddbvault reads DYNAMODB_JSON exports only"):
        ne.read_manifest(ion, REGION_A)
    counted = put_export(s3, export_bucket, "bad", arn, files=[gz([])], counts=[0], export_time=when,
                         summary_count=5)
    with pytest.raises(ExportError, match=r"counts 5 items but .* lists files holding 0: the export is damaged"):
        ne.read_manifest(counted, REGION_A)
    s3.put_object(Bucket=export_bucket, Key="bad/AWSDynamoDB/01-running/_started", Body=b"")
    with pytest.raises(ExportError, match=r"there is no manifest-summary.json in .*01-running/: it is not a finished"):
        ne.read_manifest(f"s3://{export_bucket}/bad/AWSDynamoDB/01-running/", REGION_A)
    with pytest.raises(ExportError, match=r"is not an export's folder: pass s3://bucket/prefix/AWSDynamoDB/"):
        ne.read_manifest(f"s3://{export_bucket}/bad/", REGION_A)


def test_staged_parts_are_resumed_only_by_the_same_source(tmp_path):
    from ddbvault.vault import staging

    vault, now = str(tmp_path / "vault"), datetime.now(timezone.utc)
    fresh = {"run_id": "r1", "table_arn": "arn:t", "table_created": "c", "consistent_read": None, "stream_arn": None,
             "total_segments": 3, "source": "arn:t/export/1", "scan_started": now.isoformat()}
    assert staging.resume_or_start(vault, None, fresh, now) == fresh
    marker = os.path.join(staging.root(vault), "seg-0000000-abc-2-7.done")
    open(marker, "w").close()
    # The same export again: its staged files are kept.
    assert staging.resume_or_start(vault, None, dict(fresh, run_id="r2"), now) == fresh
    assert os.path.exists(marker)
    # Another export, or a scan (no source), of the same table: started afresh.
    for other in (dict(fresh, run_id="r3", source="arn:t/export/2"), dict(fresh, run_id="r4", source=None)):
        assert staging.resume_or_start(vault, None, other, now) == other
        assert not os.path.exists(marker)
        open(marker, "w").close()


# --- --from-export ------------------------------------------------------------------------------------------------

def _fill(client, made, keys, make_item, *, count=30, stream=None):
    table = name("nexp")
    create_table(client, table, keys, stream=stream)
    made.append(table)
    put_items(client, table, [make_item(i) for i in range(count)])
    return table, client.describe_table(TableName=table)["Table"]


SHAPES = {
    # every attribute type, an S hash key and a B range key
    "s_hash_b_range": ([("pk", "S"), ("sk", "B")],
                       lambda i: dict(every_type(i), pk={"S": f"p{i % 4}-\u00e9"}, sk={"B": bytes([i, 0, 255])})),
    # a table with binary keys only
    "b_hash_b_range": ([("pk", "B"), ("sk", "B")],
                       lambda i: dict(every_type(i), pk={"B": bytes([i % 5, 255, 0])}, sk={"B": bytes([i, 1])})),
}


@pytest.mark.smoke
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_from_export_equals_a_scan_export_item_for_item(spark, src, tmp_path, shape):
    client, made, s3, export_bucket = src
    keys, make_item = SHAPES[shape]
    table, description = _fill(client, made, keys, make_item, stream="NEW_AND_OLD_IMAGES")
    table_items = scan_all(client, table)
    # After the table's stream began (an export from before it is refused), on a millisecond like DynamoDB's.
    when = (datetime.now(timezone.utc) + timedelta(seconds=1)).replace(microsecond=123000)
    folder = full_export_of(s3, export_bucket, description["TableArn"], table_items, export_time=when)

    scanned, native = str(tmp_path / "scanned"), str(tmp_path / "native")
    export_table(ExportOptions(table=table, vault=scanned, region=REGION_A, segments=2), Run(job="export_table"),
                 spark)
    run = Run(job="export_table")
    summary = export_table(ExportOptions(table=table, vault=native, region=REGION_A, from_export=folder), run, spark)

    assert rows(spark, native) == rows(spark, scanned)
    assert sorted(r[2] for r in rows(spark, native)) == texts(table_items)
    assert {k: summary[k] for k in ("items", "vault_version", "export_files", "consumed_rcu", "scan_started")} == \
        {"items": len(table_items), "vault_version": 0, "export_files": 3, "consumed_rcu": 0.0,
         "scan_started": when.isoformat()}
    # The next merge starts from the export's moment, on the table's stream.
    state = items.newest_state(spark, native)
    assert (state["export"]["scan_started"], state["export"]["stream_arn"]) == \
        (when.isoformat(), description["LatestStreamArn"])
    assert not os.path.exists(os.path.join(native, layout.META_DIR, "export-staging"))


def test_a_merge_after_from_export_brings_the_vault_to_the_table(spark, src, tmp_path):
    import time

    client, made, s3, export_bucket = src
    # An N range key: moto's stream records of binary keys are another matter (test_merge keeps to S and N keys).
    table, description = _fill(client, made, [("pk", "S"), ("sk", "N")],
                               lambda i: dict(every_type(i), pk={"S": f"p{i % 4}-\u00e9"}, sk={"N": str(i)}),
                               count=12, stream="NEW_AND_OLD_IMAGES")
    folder = full_export_of(s3, export_bucket, description["TableArn"], scan_all(client, table),
                            export_time=datetime.now(timezone.utc))
    vault = str(tmp_path / "vault")
    export_table(ExportOptions(table=table, vault=vault, region=REGION_A, from_export=folder),
                 Run(job="export_table"), spark)
    client.delete_item(TableName=table, Key={"pk": {"S": "p0-\u00e9"}, "sk": {"N": "0"}})
    client.put_item(TableName=table, Item=dict(every_type(99), pk={"S": "new"}, sk={"N": "-7.5"}))
    client.put_item(TableName=table, Item={"pk": {"S": "p1-\u00e9"}, "sk": {"N": "1"}, "n": {"N": "2"}})
    time.sleep(1.15 - (time.time() % 1.0))
    merge_increments(MergeOptions(table=table, vault=vault, region=REGION_A), Run(job="merge_increments"), spark)

    assert sorted(r[2] for r in rows(spark, vault)) == texts(scan_all(client, table))


def test_an_export_older_than_the_tables_stream_is_refused(spark, src, tmp_path):
    """The stream's ARN label is its creation time: an export from before it cannot be brought up to date."""
    client, made, s3, export_bucket = src
    table, description = _fill(client, made, [("pk", "S")], lambda i: dict(every_type(i), pk={"S": f"k{i}"}),
                               count=3, stream="NEW_AND_OLD_IMAGES")
    folder = full_export_of(s3, export_bucket, description["TableArn"], scan_all(client, table),
                            export_time=datetime.now(timezone.utc) - timedelta(hours=1))
    vault = str(tmp_path / "vault")
    with pytest.raises(ExportError, match=r"began .* after the export's moment .* take a new export"):
        export_table(ExportOptions(table=table, vault=vault, region=REGION_A, from_export=folder),
                     Run(job="export_table"), spark)
    assert not os.path.exists(os.path.join(vault, "items"))


def test_from_export_of_a_table_that_cannot_be_described_uses_the_vaults_capture(spark, src, tmp_path):
    client, made, s3, export_bucket = src
    keys, make_item = SHAPES["s_hash_b_range"]
    table, description = _fill(client, made, keys, make_item, count=8)
    table_items = scan_all(client, table)
    vault = str(tmp_path / "vault")
    first = full_export_of(s3, export_bucket, description["TableArn"], table_items)
    export_table(ExportOptions(table=table, vault=vault, region=REGION_A, from_export=first), Run(job="export_table"),
                 spark)
    client.delete_table(TableName=table)  # the table's region is lost; its last export is not
    made.remove(table)
    later = [dict(item, n={"N": "42"}) for item in table_items[1:]]
    second = full_export_of(s3, export_bucket, description["TableArn"], later)

    run = Run(job="export_table")
    summary = export_table(ExportOptions(table=table, vault=vault, region=REGION_A, from_export=second), run, spark)
    assert (summary["vault_version"], summary["items"]) == (1, len(later))
    assert summary["table_description"].startswith("the vault's capture of ")
    assert sorted(r[2] for r in rows(spark, vault)) == texts(later)
    # A vault that does not protect the table yet cannot lend a description: refused, nothing written.
    empty = str(tmp_path / "empty")
    with pytest.raises(TableError, match=rf"table {table} does not exist in region {REGION_A}: check --table and "
                                         rf"--region \(an export is ingested with the table's description from "
                                         rf"DescribeTable, or from the vault's last capture"):
        export_table(ExportOptions(table=table, vault=empty, region=REGION_A, from_export=second),
                     Run(job="export_table"), spark)
    assert not os.path.exists(empty)


def _bad_exports(s3, bucket, table_arn, table_items):
    """(what is wrong, export folder, the error line's expected text): each a whole export but for one fault."""
    good = [{"Item": export_item(item)} for item in table_items]
    half = len(good) // 2
    whole = [gz(good[:half]), gz(good[half:])]
    when = datetime.now(timezone.utc)
    truncated = whole[1][: len(whole[1]) // 2]
    other = {"Item": {"id": {"N": "1"}, "name": {"S": "a record of another table"}}}
    return [
        ("truncated gzip", put_export(s3, bucket, "bad", table_arn, files=[whole[0], truncated],
                                      counts=[half, len(good) - half], export_time=when),
         r"is not whole gzip \(EOFError: .*\): it is truncated or damaged; take a new export"),
        ("record of another table", put_export(s3, bucket, "bad", table_arn,
                                               files=[whole[0], gz([*good[half:], other])],
                                               counts=[half, len(good) - half + 1], export_time=when),
         r"record \d+ has no S key attribute 'pk' \(missing\): it is a record of another table, not of "),
        ("missing file", put_export(s3, bucket, "bad", table_arn, files=whole, counts=[half, len(good) - half],
                                    export_time=when, skip_upload=1),
         r"data file s3://.*\.json\.gz, which the manifest of .* lists, does not exist: the export is incomplete"),
        ("count mismatch", put_export(s3, bucket, "bad", table_arn, files=whole,
                                      counts=[half, len(good) - half + 1], export_time=when),
         rf"holds {len(good) - half} items but the manifest says {len(good) - half + 1}: the export is damaged"),
        ("md5 mismatch", put_export(s3, bucket, "bad", table_arn, files=whole, counts=[half, len(good) - half],
                                    export_time=when, md5s=["AAAAAAAAAAAAAAAAAAAAAA==", "AAAAAAAAAAAAAAAAAAAAAA=="]),
         r"does not match its md5Checksum AAAAAAAAAAAAAAAAAAAAAA== \(read .*\): it is damaged"),
        ("an export of another table", full_export_of(s3, bucket, table_arn + "-other", table_items,
                                                      export_time=when),
         r"is an export of arn:.*-other, not of table "),
    ]


def test_bad_exports_fail_with_one_line_and_leave_the_vault_unchanged(spark, src, tmp_path, capsys):
    import re

    client, made, s3, export_bucket = src
    keys, make_item = SHAPES["s_hash_b_range"]
    table, description = _fill(client, made, keys, make_item, count=10)
    vault = str(tmp_path / "vault")
    export_table(ExportOptions(table=table, vault=vault, region=REGION_A, segments=2), Run(job="export_table"),
                 spark)
    before, before_rows = vault_state(vault), rows(spark, vault)
    capsys.readouterr()

    for what, folder, expected in _bad_exports(s3, export_bucket, description["TableArn"], scan_all(client, table)):
        code, err, summary = run_job(["--table", table, "--vault", vault, "--region", REGION_A,
                                      "--from-export", folder], capsys)
        lines = [line for line in err if line.startswith("ddbvault export_table:")]
        assert (what, code, len(lines), summary["status"]) == (what, 1, 1, "failed")
        assert lines[0] == f"ddbvault export_table: {summary['error']}", what
        assert re.search(expected, summary["error"]), (what, summary["error"])
        assert vault_state(vault) == before, what
        assert rows(spark, vault) == before_rows, what


def test_flags_that_do_not_go_together_are_refused_before_anything(aws_endpoint, tmp_path, capsys):
    vault = str(tmp_path / "vault")
    base = ["--table", "t-x", "--vault", vault, "--region", REGION_A]
    cases = [
        (["--from-export", "s3://b/p/AWSDynamoDB/0123-ab/", "--segments", "4"],
         "argument --segments: not allowed with argument --from-export (an export reads no table)"),
        (["--start-export"], "argument --start-export: needs --export-bucket"),
        (["--export-bucket", "b"], "argument --export-bucket: only with --start-export"),
        (["--from-export", "s3://b/p/", "--table", "t-x"],
         "argument --from-export: s3://b/p/ is not an export's folder: pass s3://bucket/prefix/AWSDynamoDB/"
         "<export-id>/ (the folder that holds manifest-summary.json; DescribeExport's ExportManifest names it)"),
        (["--from-export", "s3://b/p/AWSDynamoDB/0123-ab/", "--start-export", "--export-bucket", "b"],
         "argument --start-export: not allowed with argument --from-export"),
    ]
    for extra, message in cases:
        code, err, summary = run_job(base + extra, capsys)
        assert (code, err, summary["error"]) == (2, [f"ddbvault export_table: {message} (see --help)"],
                                                 f"{message} (see --help)")
    assert not os.path.exists(vault)


# --- --start-export -----------------------------------------------------------------------------------------------

def test_start_export_asks_dynamodb_waits_and_ingests(spark, src, tmp_path, capsys):
    client, made, _s3, export_bucket = src
    keys, make_item = SHAPES["b_hash_b_range"]
    table, description = _fill(client, made, keys, make_item, count=14)
    vault = str(tmp_path / "vault")
    argv = ["--table", table, "--vault", vault, "--region", REGION_A, "--start-export", "--export-bucket",
            export_bucket, "--export-prefix", f"runs/{table}", "--export-wait-minutes", "2"]

    code, err, summary = run_job(argv, capsys)  # no point-in-time recovery yet
    assert (code, summary["error"]) == (1, (
        f"table {table} in {REGION_A} has point-in-time recovery disabled; DynamoDB exports need it: enable it "
        f"(aws dynamodb update-continuous-backups --table-name {table} --point-in-time-recovery-specification "
        f"PointInTimeRecoveryEnabled=true) or export with a scan (drop --start-export)"))
    assert not os.path.exists(vault)

    client.update_continuous_backups(TableName=table,
                                     PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    code, err, summary = run_job(argv, capsys)
    assert code == 0, err[-20:]
    export_id = summary["export_arn"].rsplit("/", 1)[1]
    assert summary["export_arn"] == f"{description['TableArn']}/export/{export_id}"
    assert summary["export"] == f"s3://{export_bucket}/runs/{table}/AWSDynamoDB/{export_id}/"
    assert (summary["items"], summary["export_files"], summary["consumed_rcu"]) == (14, 3, 0.0)
    assert sorted(r[2] for r in rows(spark, vault)) == texts(scan_all(client, table))
    # The stand-in wrote the documented layout, which the reader takes as a real export.
    found = ne.read_manifest(summary["export"], REGION_A)
    assert (found.export_type, found.item_count, found.table_arn) == ("FULL_EXPORT", 14, description["TableArn"])

"""merge_increments from change files landed in S3 (Lambda, Kinesis via Firehose, incremental exports): the same
changes give exactly the vault the Streams source gives, exactly once, in order, and bad files are refused.

Where each fixture's shape comes from:
- Lambda: the DynamoDB Streams event of the Lambda Developer Guide ("Using AWS Lambda with Amazon DynamoDB",
  example event): ``Records[]`` of ``{eventID, eventName, eventVersion, eventSource, awsRegion, dynamodb: {Keys,
  NewImage, OldImage, SequenceNumber, SizeBytes, StreamViewType, ApproximateCreationDateTime (epoch seconds)},
  eventSourceARN}``; binary values as base64 text. The files are written by the shipped handler itself.
- Kinesis: the DynamoDB Developer Guide's Kinesis Data Streams record ("Change data capture for Kinesis Data Streams
  with DynamoDB"): ``{awsRegion, eventID, eventName, userIdentity, recordFormat: "application/json", tableName,
  dynamodb: {ApproximateCreationDateTime, ApproximateCreationDateTimePrecision, Keys, NewImage, OldImage, SizeBytes},
  eventSource: "aws:dynamodb"}``, concatenated by Firehose without separators (its default), gzip or not.
- Incremental exports: the Developer Guide's "DynamoDB table export output format" (incremental export): a
  ``manifest-summary.json`` with exportType INCREMENTAL_EXPORT, exportFromTime, exportToTime, outputView;
  ``manifest-files.json`` lines; data lines ``{"Metadata": {"WriteTimestampMicros": {"N"}}, "Keys", "NewImage"?,
  "OldImage"?}`` in a data folder shared by every incremental export under the prefix.

The records themselves are the ones moto's stream holds for the test's writes, reshaped into each format, so that
every source carries the same changes. moto's stream times have millisecond resolution; the Kinesis and export
fixtures stand in for DynamoDB's microsecond write times by making each record's time strictly later than the one
before it in stream order, as DynamoDB's are for one item.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
import random
import shutil
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List

import boto3
import pytest
from jobs_helpers import create_table, every_type, name, put_items, scan_all, texts
from test_merge import assert_same, export, merge, vault_item_texts

from ddbvault.changes import lambda_sink
from ddbvault.errors import ChangeRecordError, ExportError, StreamGapError, VaultError
from ddbvault.merge import MergeOptions, merge_increments
from ddbvault.runner import Run
from ddbvault.vault import changelog, items, pointintime
from servers import REGION_A, REGION_B

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def landing(aws_endpoint):
    """A bucket in the vault's region where change files land."""
    bucket = "landing-" + uuid.uuid4().hex[:10]
    s3 = boto3.client("s3", region_name=REGION_B)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION_B})
    return bucket, s3


def jsonable(value: Any) -> Any:
    """A low-level boto3 value as raw JSON carries it: binaries as base64 text."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def stream_records(table: str) -> List[Dict[str, Any]]:
    """Every record of the table's stream, in order, with ``micros``: a strictly increasing write time."""
    ddb = boto3.client("dynamodb", region_name=REGION_A)
    streams = boto3.client("dynamodbstreams", region_name=REGION_A)
    arn = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    out: List[Dict[str, Any]] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            page = streams.get_records(ShardIterator=it, Limit=1000)
            out.extend(page["Records"])
            if not page["Records"]:
                break
            it = page.get("NextShardIterator")
    last = 0
    for record in out:
        moment = record["dynamodb"]["ApproximateCreationDateTime"].astimezone(timezone.utc)
        last = max(last + 1, int((moment - EPOCH).total_seconds() * 1_000_000))
        record["micros"], record["arn"] = last, arn
    return out


def lambda_record(record: Dict[str, Any]) -> Dict[str, Any]:
    body = jsonable({k: v for k, v in record["dynamodb"].items() if k != "ApproximateCreationDateTime"})
    body["ApproximateCreationDateTime"] = int(record["dynamodb"]["ApproximateCreationDateTime"].timestamp())
    return {"eventID": record["eventID"], "eventName": record["eventName"], "eventVersion": "1.1",
            "eventSource": "aws:dynamodb", "awsRegion": REGION_A, "dynamodb": body, "eventSourceARN": record["arn"]}


def kinesis_record(record: Dict[str, Any], table: str) -> Dict[str, Any]:
    body = {k: jsonable(v) for k, v in record["dynamodb"].items()
            if k in ("Keys", "NewImage", "OldImage", "SizeBytes")}
    body.update(ApproximateCreationDateTime=record["micros"], ApproximateCreationDateTimePrecision="MICROSECOND")
    return {"awsRegion": REGION_A, "eventID": str(uuid.uuid5(uuid.NAMESPACE_OID, record["eventID"])),
            "eventName": record["eventName"], "userIdentity": None, "recordFormat": "application/json",
            "tableName": table, "dynamodb": body, "eventSource": "aws:dynamodb"}


def land_lambda(records: List[Dict[str, Any]], bucket: str, prefix: str, monkeypatch, batch: int = 6) -> None:
    """The shipped handler, invoked as Lambda would: one event per ``batch`` records, in order."""
    monkeypatch.setenv(lambda_sink.DESTINATION, f"s3://{bucket}/{prefix}")
    s3 = boto3.client("s3", region_name=REGION_B)
    for start in range(0, len(records), batch):
        event = {"Records": [lambda_record(r) for r in records[start:start + batch]]}
        assert lambda_sink.handler(event, None, s3=s3) == {"batchItemFailures": []}


def land_firehose(objects: List[List[Dict[str, Any]]], bucket: str, prefix: str, s3, *, gzipped: bool) -> None:
    """Each list as one Firehose object: the records' JSON concatenated, no separator."""
    for number, chunk in enumerate(objects):
        data = "".join(json.dumps(r, separators=(",", ":")) for r in chunk).encode()
        key = f"{prefix}/2026/11/27/10/ddbvault-delivery-1-2026-11-27-10-00-{number:02d}-{uuid.uuid4()}"
        s3.put_object(Bucket=bucket, Key=key + (".gz" if gzipped else ""),
                      Body=gzip.compress(data) if gzipped else data)


def iso(micros: int) -> str:
    return (EPOCH + timedelta(microseconds=micros)).isoformat().replace("+00:00", "Z")


def land_incremental(records: List[Dict[str, Any]], bucket: str, prefix: str, s3, table_arn: str, *, start: int,
                     end: int, missing: bool = False) -> str:
    """An incremental export of [start, end) (microseconds): each changed key's last change in the window."""
    last: Dict[str, Dict[str, Any]] = {}
    for record in records:
        if start <= record["micros"] < end:
            last[json.dumps(jsonable(record["dynamodb"]["Keys"]), sort_keys=True)] = record
    lines = []
    for record in last.values():
        line: Dict[str, Any] = {"Metadata": {"WriteTimestampMicros": {"N": str(record["micros"])}},
                                "Keys": jsonable(record["dynamodb"]["Keys"])}
        if record["eventName"] != "REMOVE":
            line["NewImage"] = jsonable(record["dynamodb"]["NewImage"])
        if record["eventName"] != "INSERT" and "OldImage" in record["dynamodb"]:
            line["OldImage"] = jsonable(record["dynamodb"]["OldImage"])
        lines.append(json.dumps(line))
    export_id = f"{start}-{uuid.uuid4().hex[:8]}"
    data = gzip.compress(("\n".join(lines) + "\n").encode()) if lines else gzip.compress(b"")
    data_key = f"{prefix}/AWSDynamoDB/data/{uuid.uuid4().hex}.json.gz"
    if not missing:
        s3.put_object(Bucket=bucket, Key=data_key, Body=data)
    folder = f"{prefix}/AWSDynamoDB/{export_id}"
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    s3.put_object(Bucket=bucket, Key=f"{folder}/manifest-files.json", Body=json.dumps(
        {"itemCount": len(lines), "md5Checksum": md5, "etag": "x", "dataFileS3Key": data_key}) + "\n")
    s3.put_object(Bucket=bucket, Key=f"{folder}/manifest-summary.json", Body=json.dumps({
        "version": "2023-08-01", "exportArn": f"{table_arn}/export/{export_id}", "startTime": iso(end),
        "endTime": iso(end), "tableArn": table_arn, "tableId": "00000000-0000-0000-0000-000000000000",
        "exportFromTime": iso(start), "exportToTime": iso(end), "s3Bucket": bucket, "s3Prefix": prefix,
        "s3SseAlgorithm": "AES256", "s3SseKmsKeyId": None, "manifestFilesS3Key": f"{folder}/manifest-files.json",
        "billedSizeBytes": len(data), "itemCount": len(lines), "outputFormat": "DYNAMODB_JSON",
        "outputView": "NEW_AND_OLD_IMAGES", "exportType": "INCREMENTAL_EXPORT"}))
    return export_id


def merge_files(spark, table, vault, source, fmt, **kwargs):
    run = Run(job="merge_increments")
    merge_increments(MergeOptions(table=table, vault=vault, region=REGION_A, vault_region=REGION_B, source=source,
                                  source_format=fmt, **kwargs), run, spark)
    return run.summary


def change_table(client, table, k):
    """Every kind of change on keys built by ``k(i)``: type changes, nested edits, deletes, inserts of every type,
    one key written many times, one key deleted and put back."""
    client.put_item(TableName=table, Item=dict(k(0), n={"S": "now a string"}, l={"N": "7"}))
    client.update_item(TableName=table, Key=k(1), UpdateExpression="SET m.deep.l[1] = :v, m.#d = :w",
                       ExpressionAttributeNames={"#d": "new.key"},
                       ExpressionAttributeValues={":v": {"N": "-1E-130"}, ":w": {"BS": [b"\x00", b"\x01"]}})
    client.delete_item(TableName=table, Key=k(2))
    client.delete_item(TableName=table, Key=k(3))
    for i in range(100, 104):
        client.put_item(TableName=table, Item=dict(every_type(i), **k(i)))
    for round_ in range(7):
        client.put_item(TableName=table, Item=dict(k(4), round={"N": str(round_)}, e={"S": ""}))
    client.delete_item(TableName=table, Key=k(5))
    client.put_item(TableName=table, Item=dict(k(5), back={"BOOL": True}, b={"B": b""}))


def s_n_key(i):
    return {"pk": {"S": f"p{i % 3}"}, "sk": {"N": str(i)}}


def b_b_key(i):
    return {"pk": {"B": bytes([i % 3, 0, 255])}, "sk": {"B": bytes([i]) + b"\x00"}}


def prepared(spark, ddb, tmp_path, prefix, *, keys, k, copies):
    """(client, table, records since the table began, vaults): a table with a stream, exported once and the vault
    copied ``copies`` times (so every source starts from the same base), then changed."""
    client, made = ddb
    table = name(prefix)
    create_table(client, table, keys, stream="NEW_AND_OLD_IMAGES")
    made.append(table)
    put_items(client, table, [dict(every_type(i), **k(i)) for i in range(12)])
    first = str(tmp_path / "vault-0")
    export(spark, table, first)
    vaults = [first]
    for n in range(1, copies):
        shutil.copytree(first, str(tmp_path / f"vault-{n}"))
        vaults.append(str(tmp_path / f"vault-{n}"))
    change_table(client, table, k)
    return client, table, stream_records(table), vaults


def test_every_file_source_gives_the_streams_vault_exactly_once(spark, ddb, tmp_path, landing, monkeypatch):
    bucket, s3 = landing
    client, table, records, (by_stream, by_lambda, by_kinesis, by_export) = prepared(
        spark, ddb, tmp_path, "src-all", keys=[("pk", "S"), ("sk", "N")], k=s_n_key, copies=4)
    want = texts(scan_all(client, table))
    merge(spark, table, by_stream)
    assert_same(vault_item_texts(spark, by_stream), want)

    # Lambda: the handler lands the records; one batch is delivered again split differently (a retried
    # invocation after a bisected failure), which adds a second, overlapping object.
    land_lambda(records, bucket, f"l-{table}", monkeypatch)
    land_lambda(records[14:20], bucket, f"l-{table}", monkeypatch, batch=4)
    got = merge_files(spark, table, by_lambda, f"s3://{bucket}/l-{table}", "lambda")
    assert_same(vault_item_texts(spark, by_lambda), want)
    logged = changelog.read(spark, by_lambda)
    assert logged.count() == logged.select("event_id").distinct().count() == got["records_new"]

    # Kinesis via Firehose: shuffled, some records twice, in gzip and plain objects.
    shaped = [kinesis_record(r, table) for r in records]
    mixed = shaped + shaped[3:9]
    random.Random(7).shuffle(mixed)
    land_firehose([mixed[:10], mixed[10:25]], bucket, f"k-{table}", s3, gzipped=True)
    land_firehose([mixed[25:]], bucket, f"k-{table}", s3, gzipped=False)
    merge_files(spark, table, by_kinesis, f"s3://{bucket}/k-{table}", "kinesis")
    assert_same(vault_item_texts(spark, by_kinesis), want)

    # Incremental exports: two windows that meet (at a whole second), the first reaching back before the export.
    arn = client.describe_table(TableName=table)["Table"]["TableArn"]
    middle = (records[len(records) // 2]["micros"] // 10**6 + 1) * 10**6
    land_incremental(records, bucket, f"e-{table}", s3, arn, start=records[0]["micros"] - 10**6, end=middle)
    end = max(records[-1]["micros"] + 1, middle + 10**6)
    land_incremental(records, bucket, f"e-{table}", s3, arn, start=middle, end=end)
    got = merge_files(spark, table, by_export, f"s3://{bucket}/e-{table}", "incremental-export")
    assert_same(vault_item_texts(spark, by_export), want)
    assert len(got["exports_applied"]) == 2
    # An incremental export holds each item's last change in its window: the vault answers at a window's end,
    # exactly as the stream's vault does, and refuses a moment inside one.
    at_end = EPOCH + timedelta(microseconds=middle) - timedelta(seconds=1)
    from_stream = sorted(r.item for r in pointintime.view(spark, by_stream, as_of_time=at_end).frame.collect())
    from_exports = sorted(r.item for r in pointintime.view(spark, by_export, as_of_time=at_end).frame.collect())
    assert_same(from_exports, from_stream)
    with pytest.raises(VaultError, match="an incremental export's end"):
        pointintime.view(spark, by_export, as_of_time=at_end - timedelta(seconds=1))
    assert got["recoverable_until"] == (EPOCH + timedelta(microseconds=end) - timedelta(seconds=1)).isoformat()

    # Reruns add nothing: no file is read again, items keep their version.
    for vault, prefix, fmt in ((by_lambda, "l", "lambda"), (by_kinesis, "k", "kinesis"),
                               (by_export, "e", "incremental-export")):
        version = items.newest_state(spark, vault)["version"]
        logged = changelog.read(spark, vault).count()
        again = merge_files(spark, table, vault, f"s3://{bucket}/{prefix}-{table}", fmt)
        assert (again["files_read"], again["records_new"], again["vault_version"]) == (0, 0, version), fmt
        assert changelog.read(spark, vault).count() == logged
        assert_same(vault_item_texts(spark, vault), want)


@pytest.mark.smoke
def test_binary_keys_and_a_late_file_are_applied_in_order(spark, ddb, tmp_path, landing, monkeypatch):
    bucket, s3 = landing
    client, table, records, (vault, by_stream) = prepared(spark, ddb, tmp_path, "src-late",
                                                          keys=[("pk", "B"), ("sk", "B")], k=b_b_key, copies=2)
    want = texts(scan_all(client, table))
    merge(spark, table, by_stream)
    assert_same(vault_item_texts(spark, by_stream), want)
    shaped = [kinesis_record(r, table) for r in records]
    # The key written seven times has changes in the late file and in the one that landed before it.
    repeated = json.dumps(jsonable(b_b_key(4)), sort_keys=True)
    at = [i for i, r in enumerate(shaped) if json.dumps(r["dynamodb"]["Keys"], sort_keys=True) == repeated]
    early, late, after = shaped[:at[1]], shaped[at[1]:at[3]], shaped[at[3]:]
    prefix = f"late-{table}"
    land_firehose([early, after], bucket, prefix, s3, gzipped=True)
    first = merge_files(spark, table, vault, f"s3://{bucket}/{prefix}", "kinesis")
    assert first["files_read"] == 2
    land_firehose([late], bucket, prefix, s3, gzipped=True)  # lands after the merge
    late = merge_files(spark, table, vault, f"s3://{bucket}/{prefix}", "kinesis")
    assert late["files_read"] == 1
    assert_same(vault_item_texts(spark, vault), want)


def test_a_gap_between_incremental_exports_is_refused_with_the_window(spark, ddb, tmp_path, landing):
    bucket, s3 = landing
    client, table, records, (vault,) = prepared(spark, ddb, tmp_path, "src-gap", keys=[("pk", "S"), ("sk", "N")],
                                                k=s_n_key, copies=1)
    arn = client.describe_table(TableName=table)["Table"]["TableArn"]
    start, middle = records[0]["micros"] - 10**6, records[len(records) // 2]["micros"]
    land_incremental(records, bucket, f"g-{table}", s3, arn, start=start, end=middle)
    land_incremental(records, bucket, f"g-{table}", s3, arn, start=middle + 5 * 10**6, end=records[-1]["micros"] + 1)
    before = items.newest_state(spark, vault)["version"]
    with pytest.raises(StreamGapError) as caught:
        merge_files(spark, table, vault, f"s3://{bucket}/g-{table}", "incremental-export")
    message = str(caught.value)
    assert f"covers {iso(middle).replace('Z', '+00:00')} .. {iso(middle + 5 * 10**6).replace('Z', '+00:00')}" \
        in message and "\n" not in message
    assert items.newest_state(spark, vault)["version"] == before
    assert not changelog.exists(spark, vault, REGION_B)


@pytest.mark.parametrize("damage", ["truncated gzip", "another table", "missing data file", "landing after the export",
                                    "firehose error folder"])
def test_bad_files_are_refused_with_one_line_and_the_vault_unchanged(spark, ddb, tmp_path, landing, monkeypatch,  # noqa: PLR0917
                                                                      damage):
    bucket, s3 = landing
    client, table, records, (vault,) = prepared(spark, ddb, tmp_path, "src-bad", keys=[("pk", "S"), ("sk", "N")],
                                                k=s_n_key, copies=1)
    prefix = f"bad-{table}"
    if damage == "truncated gzip":
        land_lambda(records, bucket, prefix, monkeypatch)
        key = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"])[1]
        head = s3.head_object(Bucket=bucket, Key=key)
        whole = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        s3.put_object(Bucket=bucket, Key=key, Body=whole[: len(whole) // 2], Metadata=head["Metadata"])
        fmt, error, words = "lambda", ChangeRecordError, "is not whole gzip"
    elif damage == "another table":
        shaped = [kinesis_record(r, table) for r in records]
        shaped[5]["tableName"] = "someone-else"
        land_firehose([shaped], bucket, prefix, s3, gzipped=True)
        fmt, error, words = "kinesis", ChangeRecordError, "record of table 'someone-else'"
    elif damage == "missing data file":
        arn = client.describe_table(TableName=table)["Table"]["TableArn"]
        land_incremental(records, bucket, prefix, s3, arn, start=records[0]["micros"] - 10**6,
                         end=records[-1]["micros"] + 1, missing=True)
        fmt, error, words = "incremental-export", ExportError, "not in S3"
    elif damage == "landing after the export":  # the 12 puts before the export never landed
        land_lambda(records[12:], bucket, prefix, monkeypatch)
        fmt, error, words = "lambda", StreamGapError, "changes made in between may never have landed"
    else:
        land_firehose([[kinesis_record(r, table) for r in records]], bucket, prefix, s3, gzipped=True)
        s3.put_object(Bucket=bucket, Key=f"{prefix}/processing-failed/2026/11/27/10/x", Body=b"{}")
        fmt, error, words = "kinesis", ChangeRecordError, "records Firehose could not deliver"
    before = items.newest_state(spark, vault)["version"]
    with pytest.raises(error) as caught:
        merge_files(spark, table, vault, f"s3://{bucket}/{prefix}", fmt)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert items.newest_state(spark, vault)["version"] == before
    assert not changelog.exists(spark, vault, REGION_B)


def test_a_vault_following_the_stream_refuses_files_until_a_new_export(spark, ddb, tmp_path, landing, monkeypatch):
    bucket, _ = landing
    client, table, records, (vault,) = prepared(spark, ddb, tmp_path, "src-switch", keys=[("pk", "S"), ("sk", "N")],
                                                k=s_n_key, copies=1)
    merge(spark, table, vault)
    land_lambda(records, bucket, f"sw-{table}", monkeypatch)
    with pytest.raises(StreamGapError, match="run export_table for a new base"):
        merge_files(spark, table, vault, f"s3://{bucket}/sw-{table}", "lambda")
    export(spark, table, vault)
    merge_files(spark, table, vault, f"s3://{bucket}/sw-{table}", "lambda")
    assert_same(vault_item_texts(spark, vault), texts(scan_all(client, table)))


def test_start_export_asks_for_the_window_the_vault_lacks_then_merges_it(spark, ddb, tmp_path, landing, monkeypatch):
    """moto writes every export as a full one, so DynamoDB's side is played here: the request is checked and the
    export it would write (the documented incremental layout) is landed by the test."""
    from ddbvault import merge_files as sources

    bucket, s3 = landing
    client, table, records, (vault,) = prepared(spark, ddb, tmp_path, "src-start", keys=[("pk", "S"), ("sk", "N")],
                                                k=s_n_key, copies=1)
    arn = client.describe_table(TableName=table)["Table"]["TableArn"]
    scan_started = datetime.fromisoformat(items.newest_state(spark, vault)["export"]["scan_started"])
    asked = []

    def start_export(table_arn, to_bucket, prefix, region, *, incremental):
        asked.append((table_arn, to_bucket, prefix, region, incremental))
        begin, end = (int((t - EPOCH).total_seconds() * 1_000_000) for t in incremental)
        land_incremental(records, to_bucket, prefix, s3, table_arn, start=begin, end=end)
        return f"{table_arn}/export/started"

    monkeypatch.setattr(sources, "INCREMENTAL_MIN", timedelta(0))
    monkeypatch.setattr(sources.native_export, "start_export", start_export)
    monkeypatch.setattr(sources.native_export, "wait_export", lambda export_arn, region, timeout_s: {})
    time.sleep(1.1)  # the window ends at a whole second: past the last write
    got = merge_files(spark, table, vault, f"s3://{bucket}/s-{table}", "incremental-export", start_export=True)
    ((table_arn, to_bucket, prefix, region, (begin, end)),) = asked
    assert (table_arn, to_bucket, prefix, region, begin) == (arn, bucket, f"s-{table}", REGION_A, scan_started)
    assert end > datetime.fromtimestamp(records[-1]["micros"] / 1e6, tz=timezone.utc)
    assert got["export_started"] == f"{arn}/export/started" and len(got["exports_applied"]) == 1
    assert_same(vault_item_texts(spark, vault), texts(scan_all(client, table)))

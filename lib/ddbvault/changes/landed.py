"""Change files landed in S3, as change rows: the merge's sources besides the Streams API (no Spark here).

Formats (``--format``):

- ``lambda``: what ``ddbvault.changes.lambda_sink`` writes: gzip JSON lines, one DynamoDB Streams record each
  (the Lambda event's shape), objects named by stream and first sequence number, with the record count in their
  metadata. A Lambda event names no shard, so a record's place in stream order is (ApproximateCreationDateTime,
  SequenceNumber): a key's changes are ordered within a shard by SequenceNumber, and a child shard's records come
  after its parent's, never in an earlier second.
- ``kinesis``: Kinesis Data Streams for DynamoDB records as Amazon Data Firehose delivers them to S3: JSON objects
  concatenated, with or without newlines, gzip or not. They carry no SequenceNumber and may repeat or come out of
  order: ordered by ApproximateCreationDateTime (milliseconds, or microseconds when the table's Kinesis destination
  is set to MICROSECOND precision: two changes of one item within one millisecond cannot be ordered otherwise), then
  eventID, so that the choice is at least the same on every run; repeats are dropped by eventID.
- ``incremental-export``: DynamoDB's incremental exports, picked only through their manifests (their data files
  share one folder); a line ``{"Metadata": {"WriteTimestampMicros"}, "Keys", "NewImage"?, "OldImage"?}`` is an
  insert (new image only), an update (both) or a delete (no new image); ordered by WriteTimestampMicros.

A file source's ``change_seq`` is the change's time in microseconds (16 digits) followed by the tie-break above, so
string order is the order the vault applies; it is only compared with other changes of the same source.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List, Optional, Tuple

from botocore.exceptions import BotoCoreError, ClientError

from ddbvault import aws
from ddbvault.changes import lambda_sink, native_export, records
from ddbvault.errors import ChangeRecordError, ExportError

LAMBDA, KINESIS, INCREMENTAL = "lambda", "kinesis", "incremental-export"
FORMATS = (LAMBDA, KINESIS, INCREMENTAL)
TIME_DIGITS = 16
_GZIP_MAGIC = b"\x1f\x8b"
# Epoch times below this are milliseconds, above it microseconds (1e14 ms is the year 5138; 1e14 us is 1973).
_MICROS_FROM = 10 ** 14
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Landed:
    """One file to read (pickled to executors)."""

    uri: str
    etag: str = ""
    landed_at: str = ""                   # S3 LastModified, ISO-8601
    records: Optional[int] = None          # incremental exports: the count the manifest gives
    md5: Optional[str] = None              # incremental exports: the manifest's md5Checksum
    view: Optional[str] = None             # incremental exports: the export's outputView


@dataclass(frozen=True)
class FilePlan:
    fmt: str
    table: str
    hash_key: str
    range_key: Optional[str]
    region: Optional[str]                  # the bucket's region (the vault's)
    run_id: str


def micros(moment: datetime) -> int:
    delta = moment - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def order(moment_micros: int, tie: str) -> str:
    if not 0 <= moment_micros < 10 ** TIME_DIGITS:
        raise ChangeRecordError(f"change time {moment_micros} us is out of range")
    return f"{moment_micros:0{TIME_DIGITS}d}{tie}"


def _epoch(micro_seconds: int) -> datetime:
    return EPOCH + timedelta(microseconds=micro_seconds)


def kinesis_time(body: Dict[str, Any]) -> int:
    """ApproximateCreationDateTime of a Kinesis record, in microseconds."""
    raw = body.get("ApproximateCreationDateTime")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ChangeRecordError(f"Kinesis record has ApproximateCreationDateTime {raw!r}, not epoch time") from None
    precision = str(body.get("ApproximateCreationDateTimePrecision") or "").upper()
    if precision == "MICROSECOND" or (not precision and value >= _MICROS_FROM):
        return value
    return value * 1000


def _names(plan: FilePlan) -> records.KeyNames:
    return records.KeyNames(plan.hash_key, plan.range_key)


def lambda_row(plan: FilePlan, record: Dict[str, Any], source: str) -> tuple:
    arn = record.get("eventSourceARN") or ""
    try:
        table, _ = lambda_sink.stream_parts(arn)
    except ValueError as exc:
        raise ChangeRecordError(f"{source}: {exc}") from None
    if table != plan.table:
        raise ChangeRecordError(f"{source} holds a record of table {table} ({arn}), not {plan.table}: the Lambda "
                                f"writes another table's stream here; give each table its own prefix")
    body = record.get("dynamodb") or {}
    seq = str(body.get("SequenceNumber", ""))
    if not seq.isdigit() or len(seq) > 40:
        raise ChangeRecordError(f"{source}: record {record.get('eventID')} has SequenceNumber {seq!r}")
    moment = records.as_utc(body.get("ApproximateCreationDateTime"))
    return records.row_of(record, _names(plan), order=order(micros(moment), f"{int(seq):040d}"),
                          sequence_number=seq, source=source, event_id=str(record.get("eventID") or f"seq:{seq}"),
                          run_id=plan.run_id, when=moment)


def kinesis_row(plan: FilePlan, record: Dict[str, Any], source: str) -> tuple:
    table = record.get("tableName")
    if table != plan.table:
        raise ChangeRecordError(f"{source} holds a record of table {table!r}, not {plan.table}: the Kinesis stream "
                                f"or Firehose prefix carries another table's changes; give each table its own prefix")
    event_id = record.get("eventID")
    if not event_id:
        raise ChangeRecordError(f"{source} holds a Kinesis record without eventID: repeats cannot be dropped")
    at = kinesis_time(record.get("dynamodb") or {})
    return records.row_of(record, _names(plan), order=order(at, str(event_id)), sequence_number="",
                          source=source, event_id=str(event_id), run_id=plan.run_id, when=_epoch(at))


def incremental_row(plan: FilePlan, line: Dict[str, Any], source: str, view: Optional[str]) -> tuple:
    try:
        at = int(line["Metadata"]["WriteTimestampMicros"]["N"])
    except (KeyError, TypeError, ValueError):
        raise ChangeRecordError(f"{source} holds a line without Metadata.WriteTimestampMicros: it is not an "
                                f"incremental export's data file") from None
    keys = line.get("Keys")
    if not isinstance(keys, dict):
        raise ChangeRecordError(f"{source} holds a line without Keys")
    new = line.get("NewImage")
    if new is None:
        event = records.REMOVE
    elif view == "NEW_AND_OLD_IMAGES" and line.get("OldImage") is None:
        event = records.INSERT
    else:
        event = records.MODIFY
    body: Dict[str, Any] = {"Keys": keys}
    if new is not None:
        body["NewImage"] = new
    keys_text = records.key_columns(keys, _names(plan))[2]
    event_id = "ie:" + hashlib.sha1(f"{at}|{keys_text}".encode()).hexdigest()
    return records.row_of({"dynamodb": body, "eventID": event_id}, _names(plan), order=order(at, "0" * 40),
                          sequence_number=str(at), source=source, event_id=event_id, run_id=plan.run_id,
                          event=event, when=_epoch(at))


def _object(uri: str, region: Optional[str]) -> Tuple[bytes, Dict[str, str]]:
    """(bytes, user metadata) of an object."""
    bucket, key = uri[len("s3://"):].split("/", 1)
    try:
        answer = aws.client("s3", region).get_object(Bucket=bucket, Key=key)
        return answer["Body"].read(), answer.get("Metadata") or {}
    except ClientError as exc:
        code = exc.response["Error"].get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            raise ChangeRecordError(f"{uri} was listed but is gone: was the landing prefix cleaned up during the "
                                    f"merge? Rerun the merge") from exc
        raise ChangeRecordError(f"cannot read {uri} ({code}: {exc})") from exc
    except BotoCoreError as exc:
        raise ChangeRecordError(f"cannot read {uri} ({exc})") from exc


def _text(uri: str, raw: bytes) -> str:
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, zlib.error, OSError) as exc:
            raise ChangeRecordError(f"{uri} is not whole gzip ({type(exc).__name__}: {exc}): it is truncated or "
                                    f"damaged; remove or replace it, then rerun the merge") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ChangeRecordError(f"{uri} is not UTF-8 JSON ({exc}): remove or replace it, then rerun") from exc


def json_objects(uri: str, text: str) -> Iterator[Dict[str, Any]]:
    """The JSON objects of ``text``: one a line, or concatenated with no separator (Firehose's default)."""
    decoder = json.JSONDecoder()
    at, end = 0, len(text)
    while True:
        while at < end and text[at] in " \t\r\n":
            at += 1
        if at >= end:
            return
        try:
            value, at = decoder.raw_decode(text, at)
        except ValueError as exc:
            raise ChangeRecordError(f"{uri} is not JSON records at character {at} ({exc}): remove or replace it, "
                                    f"then rerun the merge") from exc
        if not isinstance(value, dict):
            raise ChangeRecordError(f"{uri} holds a JSON {type(value).__name__} where a record should be")
        yield value


def read_file(plan: FilePlan, file: Landed) -> Iterator[tuple]:
    """The change rows of one landed file; every record is checked first, so a bad file yields nothing at all."""
    if plan.fmt == INCREMENTAL:
        found = native_export.DataFile(file.uri, int(file.records or 0), file.md5)
        try:
            lines = list(native_export.iter_data_file(found, plan.region))
        except ExportError as exc:
            raise ChangeRecordError(str(exc)) from exc
        rows = [incremental_row(plan, line, file.uri, file.view) for line in lines]
    else:
        raw, meta = _object(file.uri, plan.region)
        make = lambda_row if plan.fmt == LAMBDA else kinesis_row
        rows = [make(plan, record, file.uri) for record in json_objects(file.uri, _text(file.uri, raw))]
        written = meta.get("records")
        if plan.fmt == LAMBDA and written is not None and str(len(rows)) != written:
            raise ChangeRecordError(f"{file.uri} holds {len(rows)} records but was written with {written}: it "
                                    f"is damaged; remove it (Lambda's retry lands it again) and rerun the merge")
    yield from rows


def read_files(plan: FilePlan, files: Iterator[Landed]) -> Iterator[tuple]:
    for file in files:
        yield from read_file(plan, file)


FIREHOSE_ERRORS = ("processing-failed", "format-conversion-failed")


def list_landed(uri: str, region: Optional[str]) -> List[Landed]:
    """Every object under ``uri`` (``s3://bucket/prefix``), oldest landing first, zero-byte folder markers aside.
    Objects in a Firehose error folder (``processing-failed``, ``format-conversion-failed``) are changes Firehose
    could not deliver: refused, since merging without them would leave them out for good."""
    bucket, _, prefix = uri[len("s3://"):].partition("/") if uri.startswith("s3://") else ("", "", "")
    if not bucket:
        raise ChangeRecordError(f"--source {uri!r} is not s3://bucket/prefix")
    prefix = prefix.strip("/")
    s3 = aws.client("s3", region)
    found: List[Landed] = []
    failed: List[str] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/" if prefix else ""):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith("/"):
                    continue
                if any(part in FIREHOSE_ERRORS for part in key[len(prefix):].split("/")):
                    failed.append(key)
                    continue
                found.append(Landed(f"s3://{bucket}/{key}", obj.get("ETag", "").strip('"'),
                                    obj["LastModified"].astimezone(timezone.utc).isoformat()))
    except (ClientError, BotoCoreError) as exc:
        raise ChangeRecordError(f"cannot list {uri} ({exc}): check the bucket, its region (the vault's) and that "
                                f"this role may list it") from exc
    if failed:
        raise ChangeRecordError(f"{len(failed)} objects under {uri} are records Firehose could not deliver (first: "
                                f"s3://{bucket}/{failed[0]}): their changes are not in the vault; deliver them again "
                                f"under the prefix, move the error objects away, then rerun the merge")
    return sorted(found, key=lambda f: (f.landed_at, f.uri))


def export_files(manifest: native_export.ExportManifest) -> List[Landed]:
    return [Landed(f.uri, records=f.item_count, md5=f.md5, view=manifest.output_view) for f in manifest.files]


def table_of(table_arn: str) -> str:
    """The table name of ``arn:aws:dynamodb:<region>:<account>:table/<name>``."""
    tail = table_arn.split(":", 5)[-1]
    return tail.split("/")[1] if tail.startswith("table/") and "/" in tail else tail

"""DynamoDB's own exports to S3 (ExportTableToPointInTime): their manifests, their data files, starting one.

The layout, from the DynamoDB Developer Guide ("DynamoDB table export output format"):

    <prefix>/AWSDynamoDB/<export-id>/manifest-summary.json   one JSON object: version, exportArn, startTime,
        endTime, tableArn, tableId, exportTime, s3Bucket, s3Prefix, s3SseAlgorithm, s3SseKmsKeyId,
        manifestFilesS3Key, billedSizeBytes, itemCount, outputFormat (DYNAMODB_JSON | ION), exportType;
        an incremental export also has exportFromTime, exportToTime and outputView
    <prefix>/AWSDynamoDB/<export-id>/manifest-files.json     one JSON object a line: itemCount, md5Checksum
        (base64 MD5 of the data file's bytes), etag, dataFileS3Key
    <prefix>/AWSDynamoDB/<export-id>/data/<name>.json.gz      a full export's items, ``{"Item": {...}}`` a line
    <prefix>/AWSDynamoDB/data/<name>.json.gz                  an incremental export's records (a folder shared by
        exports, so its files are only ever picked through manifest-files.json), a line each:
        ``{"Metadata": {"WriteTimestampMicros": {"N": ".."}}, "Keys": {..}, "NewImage"?: {..}, "OldImage"?: {..}}``

Binary values in the data files are base64 text, which ``codec`` takes as it takes bytes. Everything here talks to
S3 through ``aws.client("s3", region)``, whose endpoint follows ``AWS_ENDPOINT_URL_S3``; ``iter_data_file`` runs
on executors as well as on the driver.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
import logging
import re
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlparse

from botocore.exceptions import BotoCoreError, ClientError

from ddbvault import aws
from ddbvault.errors import ExportError

log = logging.getLogger(__name__)

EXPORT_ROOT = "AWSDynamoDB"
SUMMARY = "manifest-summary.json"
FILES = "manifest-files.json"
FULL_EXPORT = "FULL_EXPORT"
INCREMENTAL_EXPORT = "INCREMENTAL_EXPORT"
DYNAMODB_JSON = "DYNAMODB_JSON"
VIEWS = ("NEW_AND_OLD_IMAGES", "NEW_IMAGE")
_S3_SCHEMES = ("s3", "s3a", "s3n")
_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?\Z")


@dataclass(frozen=True)
class DataFile:
    uri: str                  # s3://bucket/key of a data file (from dataFileS3Key)
    item_count: int
    md5: Optional[str]        # md5Checksum (base64) if present


@dataclass(frozen=True)
class ExportManifest:
    uri: str                  # the export's folder s3://bucket/prefix/AWSDynamoDB/<export-id>/
    export_arn: str
    export_type: str          # "FULL_EXPORT" or "INCREMENTAL_EXPORT"
    table_arn: str
    export_time: Optional[datetime]   # full: exportTime (aware UTC)
    from_time: Optional[datetime]     # incremental: exportFromTime
    to_time: Optional[datetime]       # incremental: exportToTime
    output_view: Optional[str]        # incremental: NEW_AND_OLD_IMAGES or NEW_IMAGE
    output_format: str                # DYNAMODB_JSON (ION refused with a clear message)
    item_count: int
    files: Tuple[DataFile, ...]


def _split(uri: str) -> Tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme not in _S3_SCHEMES or not parsed.netloc:
        raise ExportError(f"{uri!r} is not an S3 URI: an export is s3://bucket/prefix/AWSDynamoDB/<export-id>/")
    return parsed.netloc, parsed.path.lstrip("/")


def _folder(uri: str) -> str:
    """``uri`` as an export folder ending in ``/`` (the summary file's own URI is accepted too)."""
    bucket, key = _split(uri)
    key = key.rstrip("/")
    if key.endswith("/" + SUMMARY) or key == SUMMARY:
        key = key[: -len(SUMMARY)].rstrip("/")
    parts = key.split("/")
    if len(parts) < 2 or parts[-2] != EXPORT_ROOT or parts[-1] in ("", "data"):
        raise ExportError(f"{uri} is not an export's folder: pass s3://bucket/prefix/{EXPORT_ROOT}/<export-id>/ "
                          f"(the folder that holds {SUMMARY}; DescribeExport's ExportManifest names it)")
    return f"s3://{bucket}/{key}/"


def export_folder_uri(uri: str) -> str:
    """``uri`` checked and normalised as an export's folder (``s3://bucket/prefix/AWSDynamoDB/<id>/``), without
    reading it; ExportError when it cannot be one."""
    return _folder(uri)


def parse_time(text: Any, field: str = "time") -> Optional[datetime]:
    """An aware UTC datetime from a manifest's ISO-8601 text (``2020-11-04T07:28:34.028Z``); None for null."""
    if text is None or text == "":
        return None
    found = _TIME.match(str(text).strip())
    if not found:
        raise ValueError(f"{field} {text!r} is not an ISO-8601 time")
    day, clock, fraction, zone = found.groups()
    micros = (fraction or "0")[:6].ljust(6, "0")
    offset = "+00:00" if zone in (None, "Z") else (zone if ":" in zone else zone[:3] + ":" + zone[3:])
    moment = datetime.fromisoformat(f"{day}T{clock}.{micros}{offset}")
    return moment.astimezone(timezone.utc)


def _get(s3: Any, bucket: str, key: str) -> Optional[bytes]:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response["Error"].get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise


def _resolve(folder: str, key: str) -> str:
    """The URI of a key a manifest names (``manifestFilesS3Key``, ``dataFileS3Key``).

    Keys are bucket keys (the export's prefix included). The Developer Guide's own example leaves the prefix
    out, and an export copied to another bucket or prefix keeps its old keys, so a key holding
    ``AWSDynamoDB/`` is resolved against the folder the export is read from, which works in all three cases.
    """
    bucket, folder_key = _split(folder)
    base = "/".join(folder_key.rstrip("/").split("/")[:-2])  # the export's prefix: <base>/AWSDynamoDB/<id>/
    at = key.find(EXPORT_ROOT + "/")
    if at >= 0:
        key = (base + "/" if base else "") + key[at:]
    return f"s3://{bucket}/{key}"


def _summary_fields(summary: Dict[str, Any], where: str) -> Dict[str, Any]:
    for field in ("exportArn", "tableArn", "manifestFilesS3Key", "itemCount"):
        if summary.get(field) in (None, ""):
            raise ExportError(f"{where} has no {field}: it is not a DynamoDB export manifest, or it is damaged; "
                              f"take a new export")
    fmt = summary.get("outputFormat") or DYNAMODB_JSON
    if fmt != DYNAMODB_JSON:
        raise ExportError(f"the export {summary['exportArn']} is in {fmt} format; ddbvault reads DYNAMODB_JSON "
                          f"exports only: take the export again with ExportFormat DYNAMODB_JSON")
    kind = summary.get("exportType") or FULL_EXPORT
    if kind not in (FULL_EXPORT, INCREMENTAL_EXPORT):
        raise ExportError(f"{where} has exportType {kind!r}, neither {FULL_EXPORT} nor {INCREMENTAL_EXPORT}")
    view = summary.get("outputView")
    if kind == INCREMENTAL_EXPORT and view not in VIEWS:
        raise ExportError(f"{where} is an incremental export with outputView {view!r}, not one of {', '.join(VIEWS)}")
    try:
        times = {name: parse_time(summary.get(name), name)
                 for name in ("exportTime", "exportFromTime", "exportToTime")}
        count = int(summary["itemCount"])
    except (TypeError, ValueError) as exc:
        raise ExportError(f"{where} is damaged ({exc}): take a new export") from exc
    if kind == FULL_EXPORT and times["exportTime"] is None:
        raise ExportError(f"{where} has no exportTime: a full export's summary names the moment it holds")
    if kind == INCREMENTAL_EXPORT and (times["exportFromTime"] is None or times["exportToTime"] is None):
        raise ExportError(f"{where} is an incremental export without exportFromTime and exportToTime")
    return {"format": fmt, "kind": kind, "view": view if kind == INCREMENTAL_EXPORT else None,
            "count": count, **times}


def _file_lines(text: str, where: str, folder: str) -> Tuple[DataFile, ...]:
    files: List[DataFile] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            key, count = entry["dataFileS3Key"], int(entry["itemCount"])
            if not isinstance(key, str) or not key or count < 0:
                raise ValueError("an empty dataFileS3Key or a negative itemCount")
        except (ValueError, KeyError, TypeError) as exc:
            raise ExportError(f"{where} line {number} is not a data file entry ({type(exc).__name__}: {exc}): "
                              f"the manifest is damaged; take a new export") from exc
        files.append(DataFile(_resolve(folder, key), count, entry.get("md5Checksum") or None))
    return tuple(files)


def read_manifest(uri: str, region: Optional[str] = None) -> ExportManifest:
    """The export in the folder ``uri`` (``s3://bucket/prefix/AWSDynamoDB/<export-id>/``), from its
    manifest-summary.json and manifest-files.json; raises ExportError with one line saying what is wrong."""
    folder = _folder(uri)
    bucket, key = _split(folder)
    s3 = aws.client("s3", region)
    where = folder + SUMMARY
    try:
        raw = _get(s3, bucket, key + SUMMARY)
        if raw is None:
            raise ExportError(f"there is no {SUMMARY} in {folder}: it is not a finished DynamoDB export (an export "
                              f"still running has only _started); check the URI, or wait for the export to finish")
        try:
            summary = json.loads(raw.decode("utf-8"))
            if not isinstance(summary, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raise ExportError(f"{where} is not valid JSON ({exc}): the export is damaged; take a new export") from exc
        fields = _summary_fields(summary, where)
        files_uri = _resolve(folder, str(summary["manifestFilesS3Key"]))
        files_bucket, files_key = _split(files_uri)
        listing = _get(s3, files_bucket, files_key)
        if listing is None:
            raise ExportError(f"{files_uri}, which {where} names, does not exist: the export is incomplete; "
                              f"take a new export")
        try:
            text = listing.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ExportError(f"{files_uri} is not UTF-8 text ({exc}): the export is damaged") from exc
    except (ClientError, BotoCoreError) as exc:
        detail = exc.response["Error"].get("Code", "") if isinstance(exc, ClientError) else type(exc).__name__
        raise ExportError(f"cannot read the export manifest in {folder} ({detail}: {exc}); check the URI, the "
                          f"bucket's region and that this role may read it") from exc
    files = _file_lines(text, files_uri, folder)
    listed = sum(f.item_count for f in files)
    if fields["kind"] == FULL_EXPORT and listed != fields["count"]:
        raise ExportError(f"{where} counts {fields['count']} items but {files_uri} lists files holding {listed}: "
                          f"the export is damaged; take a new export")
    return ExportManifest(
        uri=folder, export_arn=str(summary["exportArn"]), export_type=fields["kind"],
        table_arn=str(summary["tableArn"]), export_time=fields["exportTime"], from_time=fields["exportFromTime"],
        to_time=fields["exportToTime"], output_view=fields["view"], output_format=fields["format"],
        item_count=fields["count"], files=files)


def list_exports(prefix_uri: str, region: Optional[str] = None) -> List[ExportManifest]:
    """Every finished export under ``prefix_uri`` (``s3://b/p``, or ``s3://b/p/AWSDynamoDB/``): each folder of
    ``AWSDynamoDB/`` with a manifest-summary.json, oldest first (by exportToTime, else exportTime)."""
    bucket, key = _split(prefix_uri)
    key = key.rstrip("/")
    if key.split("/")[-1] != EXPORT_ROOT:
        key = f"{key}/{EXPORT_ROOT}" if key else EXPORT_ROOT
    s3 = aws.client("s3", region)
    found: List[ExportManifest] = []
    try:
        folders: List[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key + "/", Delimiter="/"):
            folders.extend(c["Prefix"] for c in page.get("CommonPrefixes", []))
        for folder in sorted(folders):
            if folder.rstrip("/").split("/")[-1] == "data":
                continue
            if _get(s3, bucket, folder + SUMMARY) is not None:
                found.append(read_manifest(f"s3://{bucket}/{folder}", region))
    except (ClientError, BotoCoreError) as exc:
        detail = exc.response["Error"].get("Code", "") if isinstance(exc, ClientError) else type(exc).__name__
        raise ExportError(f"cannot list the exports under s3://{bucket}/{key}/ ({detail}: {exc}); check the URI, "
                          f"the bucket's region and that this role may list it") from exc
    epoch = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(found, key=lambda m: (m.to_time or m.export_time or epoch, m.export_arn))


def start_export(table_arn: str, bucket: str, prefix: str, region: str, *,
                 incremental: Optional[Tuple[datetime, datetime]] = None,
                 view: str = "NEW_AND_OLD_IMAGES", bucket_owner: Optional[str] = None) -> str:
    """Ask DynamoDB for an export of ``table_arn`` (full, or ``incremental`` = (from, to)) into
    ``s3://bucket/prefix``, as DYNAMODB_JSON; returns its ExportArn. The table needs point-in-time recovery."""
    request: Dict[str, Any] = {"TableArn": table_arn, "S3Bucket": bucket, "ExportFormat": DYNAMODB_JSON}
    if prefix.strip("/"):
        request["S3Prefix"] = prefix.strip("/")
    if bucket_owner:
        request["S3BucketOwner"] = bucket_owner
    if incremental is not None:
        if view not in VIEWS:
            raise ExportError(f"an incremental export's view is one of {', '.join(VIEWS)}, not {view!r}")
        start, end = incremental
        request["ExportType"] = INCREMENTAL_EXPORT
        request["IncrementalExportSpecification"] = {"ExportFromTime": start, "ExportToTime": end,
                                                     "ExportViewType": view}
    else:
        request["ExportType"] = FULL_EXPORT
    try:
        answer = aws.client("dynamodb", region).export_table_to_point_in_time(**request)
    except ClientError as exc:
        code = exc.response["Error"].get("Code", "")
        if code == "PointInTimeRecoveryUnavailableException":
            raise ExportError(f"table {table_arn} has no point-in-time recovery, which DynamoDB's exports need: "
                              f"enable it (UpdateContinuousBackups) and retry") from exc
        raise ExportError(f"DynamoDB refused to export {table_arn} to s3://{bucket}/{prefix.strip('/')} "
                          f"({code}: {exc.response['Error'].get('Message', exc)}); check the table, the bucket "
                          f"and that this role may export to it") from exc
    except BotoCoreError as exc:
        raise ExportError(f"cannot reach DynamoDB in {region} to export {table_arn} ({exc})") from exc
    arn = answer["ExportDescription"]["ExportArn"]
    log.info("export %s of %s to s3://%s/%s started", arn, table_arn, bucket, prefix.strip("/"))
    return arn


def wait_export(export_arn: str, region: str, *, timeout_s: float, poll_s: float = 10.0) -> Dict[str, Any]:
    """DescribeExport's ExportDescription once the export is COMPLETED; ExportError when it FAILED or is still
    running after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    client = aws.client("dynamodb", region)
    while True:
        try:
            description = client.describe_export(ExportArn=export_arn)["ExportDescription"]
        except (ClientError, BotoCoreError) as exc:
            raise ExportError(f"cannot describe export {export_arn} in {region} ({exc})") from exc
        status = description.get("ExportStatus")
        if status == "COMPLETED":
            return description
        if status == "FAILED":
            raise ExportError(f"DynamoDB export {export_arn} failed ({description.get('FailureCode') or 'no code'}: "
                              f"{description.get('FailureMessage') or 'no message'}); fix that and start a new one")
        if time.monotonic() >= deadline:
            raise ExportError(f"DynamoDB export {export_arn} is still {status} after {timeout_s:.0f} s: wait for it "
                              f"(DescribeExport), then ingest it with --from-export {_guess_folder(description)}")
        time.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))


def _guess_folder(description: Dict[str, Any]) -> str:
    try:
        return export_folder(description)
    except ExportError:
        return "s3://<bucket>/<prefix>/AWSDynamoDB/<export-id>/"


def export_folder(description: Dict[str, Any]) -> str:
    """``s3://S3Bucket/S3Prefix/AWSDynamoDB/<export id>/`` of an ExportDescription (from its ExportManifest key
    when it has one, else from the ExportArn's last part)."""
    bucket = description.get("S3Bucket")
    if not bucket:
        raise ExportError(f"export description {description.get('ExportArn')} names no S3Bucket")
    manifest = description.get("ExportManifest")
    if manifest:
        return f"s3://{bucket}/{manifest.rsplit('/', 1)[0]}/" if "/" in manifest else f"s3://{bucket}/"
    arn = description.get("ExportArn") or ""
    if "/export/" not in arn:
        raise ExportError(f"{arn!r} is not an export ARN (arn:aws:dynamodb:...:table/T/export/<id>)")
    prefix = (description.get("S3Prefix") or "").strip("/")
    return f"s3://{bucket}/{prefix + '/' if prefix else ''}{EXPORT_ROOT}/{arn.rsplit('/', 1)[1]}/"


class _Hashing:
    """A readable stream that keeps an MD5 of the bytes read through it."""

    def __init__(self, body: Any) -> None:
        self.body, self.md5, self.size = body, hashlib.md5(), 0  # S3's checksum, not security

    def read(self, size: int = -1) -> bytes:
        chunk = self.body.read(size) if size is not None and size >= 0 else self.body.read()
        self.md5.update(chunk)
        self.size += len(chunk)
        return chunk


def _md5_matches(expected: str, digest: bytes) -> bool:
    if re.fullmatch(r"[0-9a-fA-F]{32}", expected):
        return digest.hex() == expected.lower()
    return base64.b64encode(digest).decode("ascii") == expected


def iter_data_file(file: DataFile, region: Optional[str] = None) -> Iterator[Dict[str, Any]]:
    """The JSON objects of one gzip data file, a line each, streamed; after the last line, its count is checked
    against the manifest's itemCount and its bytes against md5Checksum. Raises ExportError (one line) on a missing
    file, a truncated or corrupt gzip, a line that is not a JSON object, or a count or checksum that differs.
    A caller must not keep what it got from a file until the iterator has ended."""
    bucket, key = _split(file.uri)
    try:
        body = aws.client("s3", region).get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as exc:
        code = exc.response["Error"].get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            raise ExportError(f"data file {file.uri}, which the export's manifest-files.json lists, does not exist: "
                              f"the export is incomplete; take a new export") from exc
        raise ExportError(f"cannot read data file {file.uri} ({code}: {exc})") from exc
    except BotoCoreError as exc:
        raise ExportError(f"cannot read data file {file.uri} ({exc})") from exc
    hashing = _Hashing(body)
    count = 0
    try:
        with gzip.GzipFile(fileobj=hashing, mode="rb") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise ExportError(f"data file {file.uri} line {number} is not JSON ({exc}): the export is "
                                      f"damaged; take a new export") from exc
                if not isinstance(record, dict):
                    raise ExportError(f"data file {file.uri} line {number} is not a JSON object: the export is "
                                      f"damaged; take a new export")
                count += 1
                yield record
            hashing.read()  # whatever follows the gzip stream still counts for the checksum
    except (EOFError, zlib.error, OSError) as exc:
        raise ExportError(f"data file {file.uri} is not whole gzip ({type(exc).__name__}: {exc}): it is truncated "
                          f"or damaged; take a new export") from exc
    except (ClientError, BotoCoreError) as exc:
        raise ExportError(f"cannot read data file {file.uri} ({exc})") from exc
    if count != file.item_count:
        raise ExportError(f"data file {file.uri} holds {count} items but the manifest says {file.item_count}: the "
                          f"export is damaged; take a new export")
    if file.md5 and not _md5_matches(file.md5, hashing.md5.digest()):
        read = base64.b64encode(hashing.md5.digest()).decode("ascii")
        raise ExportError(f"data file {file.uri} does not match its md5Checksum {file.md5} (read {read}): it is "
                          f"damaged; take a new export")


def missing_files(manifest: ExportManifest, region: Optional[str] = None) -> List[str]:
    """The data files the manifest lists that are not in S3, from one listing per folder (not a HEAD a file)."""
    by_folder: Dict[Tuple[str, str], List[DataFile]] = {}
    for file in manifest.files:
        bucket, key = _split(file.uri)
        by_folder.setdefault((bucket, key.rsplit("/", 1)[0] + "/" if "/" in key else ""), []).append(file)
    s3 = aws.client("s3", region)
    missing: List[str] = []
    try:
        for (bucket, folder), files in by_folder.items():
            present = set()
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder):
                present.update(o["Key"] for o in page.get("Contents", []))
            missing.extend(f.uri for f in files if _split(f.uri)[1] not in present)
    except (ClientError, BotoCoreError) as exc:
        raise ExportError(f"cannot list the data files of {manifest.uri} ({exc}); check that this role may list "
                          f"the bucket") from exc
    return missing

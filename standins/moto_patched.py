"""moto server with fixes: segmented Scans of tables whose hash key is binary (B), stream records' ``Keys`` of
binary keys, ImportTable's reading of DYNAMODB_JSON, and table exports to S3 that write DynamoDB's documented
layout (manifests and all; see ``patch_exports`` below).

Why: moto 5.2.5 assigns an item to a Scan segment in ``Item.is_within_segment``
(``moto/dynamodb/models/dynamo_type.py``) with ``md5_hash(self.hash_key.value.encode("utf8"))``. A B key's value is
``bytes`` there, which has no ``encode``, so every segmented Scan of such a table fails with HTTP 500, while
DynamoDB scans those tables like any other. ddbvault's export, repair and verify always scan in segments.

ImportTable: moto 5.2.5 reads an import's files with ``py_partiql_parser.JsonParser``, which stops without an
error at the first empty map (``{"M":{}}``): the rest of the file is never imported and the import still ends
COMPLETED. DynamoDB's DYNAMODB_JSON format is one ``{"Item": ...}`` object per line, so the fixed
``TableImport._process_s3_files`` reads the lines with ``json.loads`` (everything else as moto does it).

This launcher replaces those methods with the same hash over the key's raw bytes (S and N keys are hashed
exactly as before, so their segments do not change) and then runs moto's own server main with the arguments it
was given, the ones ``moto_server`` takes:

    python standins/moto_patched.py -H 127.0.0.1 -p 5000

Written against moto 5.2.5 (the version the tests pin); a newer moto that hashes B keys itself makes it moot.
"""
from __future__ import annotations

import sys
from typing import Any, Tuple, Union

PATCHED_FOR = "5.2.5"


def is_within_segment(self: Any, segments: Union[Tuple[None, None], Tuple[int, int]]) -> bool:
    """moto's ``Item.is_within_segment`` (5.2.5), hashing a binary key's bytes as they are."""
    from moto.utilities.utils import md5_hash

    if segments == (None, None):
        return True
    segment, total_segments = segments
    value = self.hash_key.value
    raw = value if isinstance(value, (bytes, bytearray)) else str(value).encode("utf8")
    return md5_hash(bytes(raw)).digest()[0] % total_segments == segment


def process_s3_files(self: Any, s3_backend: Any, bucket: Any) -> None:
    """moto's ``TableImport._process_s3_files`` (5.2.5), reading DYNAMODB_JSON files line by line."""
    import json

    from moto.core.utils import gzip_decompress
    from moto.dynamodb.models import dynamodb_backends

    dynamo = dynamodb_backends[self.account_id][self.region_name]
    self.table = dynamo.create_table(
        name=self.table_name, billing_mode=self.billing_mode, throughput=self.throughput, schema=self.key_schema,
        global_indexes=self.global_indexes, indexes=None, attr=self.attrs, sse_specification=None, streams=None,
        tags=[], deletion_protection_enabled=False, warm_throughput=None)
    keys, _, _, _ = s3_backend.list_objects(bucket, prefix=self.s3_source.get("S3KeyPrefix"), delimiter=None,
                                            marker=None, max_keys=None)
    for key in keys:
        raw = gzip_decompress(key.value) if self.compression_type == "GZIP" else key.value
        for line in raw.decode("utf-8").splitlines():
            if not line.strip():
                continue
            try:
                self.processed_count += 1
                self.processed_bytes += len(line.encode("utf-8"))
                self.table.put_item(item_attrs=json.loads(line)["Item"])
                self.imported_count += 1
            except Exception as exc:  # as moto: counted, the import goes on, and ends FAILED
                self.failure_message = str(exc)
                self.error_count += 1
    self.status = "COMPLETED" if self.error_count == 0 else "FAILED"


def _stream_record_init(original: Any) -> Any:
    """moto's ``StreamRecord.__init__`` (5.2.5) builds ``Keys`` from ``DynamoType.to_json()`` of the key, which for a
    binary key gives the base64 text base64-encoded again (the client then reads the text as the key's bytes),
    while the images are right. DynamoDB's ``Keys`` hold the key attributes as the images do: taken from them."""

    def init(self: Any, table: Any, *args: Any) -> None:  # (stream_type, event_name, old, new, seq)
        original(self, table, *args)
        old, new = args[2], args[3]
        attributes = (old if old is not None else new).to_json()["Attributes"]
        names = [n for n in (table.hash_key_attr, table.range_key_attr) if n]
        self.record["dynamodb"]["Keys"] = {n: attributes[n] for n in names}

    return init


def patch() -> None:
    """Put the fixed methods on moto's classes (in this process)."""
    import moto
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import StreamRecord
    from moto.dynamodb.models.table_import import TableImport

    if not getattr(StreamRecord, "_ddbvault_patched", False):
        StreamRecord.__init__ = _stream_record_init(StreamRecord.__init__)
        StreamRecord._ddbvault_patched = True

    if moto.__version__ != PATCHED_FOR:
        print(f"moto_patched: written for moto {PATCHED_FOR}, running {moto.__version__}: check whether "
              f"Item.is_within_segment still needs the binary-key fix", file=sys.stderr)
    Item.is_within_segment = is_within_segment
    TableImport._process_s3_files = process_s3_files


# --- DynamoDB exports to S3 --------------------------------------------------------------------------------------
# moto 5.2.5's ExportTableToPointInTime writes one gzip file of ``{"Item": ...}`` lines under a random folder
# (``<prefix>/AWSDynamoDB/<uuid>/data/<uuid>.gz``), with no manifest, an ARN that is not an export ARN, and no
# ExportManifest or ExportTime in DescribeExport. DynamoDB writes the layout of the Developer Guide's "DynamoDB
# table export output format": ``_started``, ``data/*.json.gz``, ``manifest-files.json`` (a JSON line a file:
# itemCount, md5Checksum, etag, dataFileS3Key) and ``manifest-summary.json``, in ``<prefix>/AWSDynamoDB/<id>/``
# where ``<id>`` is the last part of ``arn:...:table/<name>/export/<id>``. These replacements write that layout
# (items spread over two data files and one empty file, as an empty partition leaves), from moto's own item JSON.

EXPORT_FILES = 3


def _export_init(original: Any) -> Any:
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        import time
        import uuid
        from datetime import datetime, timezone

        original(self, *args, **kwargs)
        self.export_id = f"{int(time.time() * 1000):014d}-{uuid.uuid4().hex[:8]}"
        self.arn = f"{self.table.table_arn}/export/{self.export_id}"
        self.start_time = self.export_time = datetime.now(timezone.utc)
        self.end_time = None
        self.manifest_key = None

    return init


def _iso(moment: Any) -> Any:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _backup_to_s3_file(self: Any, s3_backend: Any) -> None:
    """The documented export layout, written to moto's S3 (replaces ``TableExport._backup_to_s3_file``)."""
    import base64
    import gzip
    import hashlib
    import json
    import uuid
    from datetime import datetime, timezone

    from moto.dynamodb.models.utilities import dynamo_json_dump

    prefix = (self.s3_prefix or "").strip("/")
    folder = f"{prefix}/AWSDynamoDB/{self.export_id}" if prefix else f"AWSDynamoDB/{self.export_id}"
    s3_backend.put_object(bucket_name=self.s3_bucket, key_name=f"{folder}/_started", value=b"")
    lines = [[] for _ in range(EXPORT_FILES)]
    for number, item in enumerate(self.table.all_items()):
        lines[number % (EXPORT_FILES - 1)].append(dynamo_json_dump(item.to_json(root_attr_name="Item")))
        self.item_count += 1
    entries = []
    for part in lines:
        body = gzip.compress("".join(line + "\n" for line in part).encode("utf-8"))
        key = f"{folder}/data/{uuid.uuid4().hex[:26]}.json.gz"
        s3_backend.put_object(bucket_name=self.s3_bucket, key_name=key, value=body)
        digest = hashlib.md5(body)  # S3's checksum, not security
        entries.append({"itemCount": len(part), "md5Checksum": base64.b64encode(digest.digest()).decode("ascii"),
                        "etag": digest.hexdigest(), "dataFileS3Key": key})
        self.processed_bytes += len(body)
    files_key = f"{folder}/manifest-files.json"
    s3_backend.put_object(bucket_name=self.s3_bucket, key_name=files_key,
                          value="".join(json.dumps(e) + "\n" for e in entries).encode("utf-8"))
    self.end_time = datetime.now(timezone.utc)
    summary = {
        "version": "2020-06-30", "exportArn": self.arn, "startTime": _iso(self.start_time),
        "endTime": _iso(self.end_time), "tableArn": self.table.table_arn, "tableId": str(uuid.uuid4()),
        "exportTime": _iso(self.export_time), "s3Bucket": self.s3_bucket, "s3Prefix": prefix or None,
        "s3SseAlgorithm": "AES256", "s3SseKmsKeyId": None, "manifestFilesS3Key": files_key,
        "billedSizeBytes": self.processed_bytes, "itemCount": self.item_count, "outputFormat": "DYNAMODB_JSON",
        "exportType": "FULL_EXPORT",
    }
    self.manifest_key = f"{folder}/manifest-summary.json"
    s3_backend.put_object(bucket_name=self.s3_bucket, key_name=self.manifest_key,
                          value=json.dumps(summary).encode("utf-8"))
    self.status = "COMPLETED"


def _export_response(original: Any) -> Any:
    def response(self: Any) -> Any:
        out = original(self)
        out.update({"ExportManifest": self.manifest_key, "ExportTime": self.export_time,
                    "StartTime": self.start_time, "EndTime": self.end_time})
        return {k: v for k, v in out.items() if v is not None}

    return response


def patch_exports() -> None:
    """Make moto's table exports write DynamoDB's documented export layout (in this process)."""
    from moto.dynamodb.models.table_export import TableExport

    if getattr(TableExport, "_ddbvault_patched", False):
        return
    TableExport.__init__ = _export_init(TableExport.__init__)
    TableExport._backup_to_s3_file = _backup_to_s3_file
    TableExport.response = _export_response(TableExport.response)
    TableExport._ddbvault_patched = True


def main(argv: Any = None) -> None:
    from moto.server import main as moto_main

    patch()
    patch_exports()
    moto_main(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()

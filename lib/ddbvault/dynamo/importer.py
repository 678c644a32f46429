"""Restore by DynamoDB ImportTable: the vault's items as gzip DynamoDB JSON on S3, loaded by DynamoDB itself.

ImportTable creates a new table from S3 files and charges per GB of uncompressed source instead of write
capacity: no WCU is consumed, so nothing throttles and the table's capacity plays no part. It only creates a
table, with its key schema, GSIs, billing mode, capacity and encryption; LSIs cannot be made by it at all, and a
stream, tags, deletion protection, table class and warm throughput are set afterwards (UpdateTable,
TagResource), TTL and point-in-time recovery as for every restore (``restore._finish``).

Which method ``--method auto`` picks (:func:`choose`), from AWS's prices (us-east-1, 2026):

- ImportTable: $0.15 per GB of uncompressed source data, whatever the item size, GSIs included.
- BatchWriteItem on an on-demand table: $0.625 per million write request units (the November 2024 price), one
  WRU per KB of item rounded up, per index an item lands in. At 1 KB items 1 GB is 1,048,576 WRU = $0.66 per GB
  (4.4 times import's), at 200-byte items $3.36 per GB, and each GSI adds as much again. A provisioned table is
  cheaper ($0.00065 per WCU-hour: fully used, $0.18 per million writes), but only at full use of capacity raised
  for the load and lowered after; still more than import for items under 1 KB.

So import is cheaper at every size; it is not always the better choice. It has fixed costs the per-GB price
does not show: one more pass over the vault (write the staging files), a job that DynamoDB runs on its own
schedule (minutes even for a small table, and no progress in between), and a bucket DynamoDB must be allowed
to read. Below 1 GiB the whole write bill of a batch-write restore is under $0.70 (1 KB items, no GSI) and the
load takes under 6 minutes at the default 3,000 WCU/s budget, so the saving cannot pay for those. From
1 GiB up the saving grows linearly ($50 at 100 GB, $517 at 1 TB, more with GSIs or small items) and the
batch-write load grows to hours (100 GB: 9.7 h at 3,000 WCU/s), so ``auto`` imports from
:data:`AUTO_IMPORT_MIN_BYTES`.
"""
from __future__ import annotations

import gzip
import logging
import tempfile
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

from botocore.exceptions import BotoCoreError, ClientError

from ddbvault import aws
from ddbvault.dynamo import table as tables
from ddbvault.errors import TableError

log = logging.getLogger(__name__)

IMPORT_USD_PER_GB = 0.15
ON_DEMAND_USD_PER_MILLION_WRU = 0.625
PROVISIONED_USD_PER_WCU_HOUR = 0.00065
AUTO_IMPORT_MIN_BYTES = 1 << 30
METHODS = ("auto", "import", "batch-write")
# What ImportTable's TableCreationParameters take; the rest of a CreateTable request is applied afterwards.
CREATION_FIELDS = ("TableName", "AttributeDefinitions", "KeySchema", "BillingMode", "ProvisionedThroughput",
                   "OnDemandThroughput", "SSESpecification", "GlobalSecondaryIndexes")
FINISHED = ("COMPLETED", "FAILED", "CANCELLED")
STAGED_SUFFIX = ".json.gz"


def choose(method: str, *, existing_table: bool, lsis: int, vault_bytes: Optional[int],
           staging: Optional[str]) -> Tuple[str, str]:
    """(``import`` or ``batch-write``, why). ``auto`` imports a new table without LSIs whose vault holds at
    least :data:`AUTO_IMPORT_MIN_BYTES` (see the module's docstring), when there is a staging place."""
    if method in ("batch-write", "import"):
        return method, f"--method {method}"
    size = vault_bytes or 0
    if existing_table:
        why = "an existing table is loaded with BatchWriteItem (ImportTable only creates tables)"
    elif lsis:
        why = "the table has LSIs, which ImportTable cannot create"
    elif staging is None:
        why = ("no staging place for import files in the recovery region (the vault is not on S3 there): pass "
               "--import-staging s3://bucket/prefix to allow an import")
    elif size < AUTO_IMPORT_MIN_BYTES:
        why = (f"the vault's items hold {size / 2**30:.3f} GiB, under the {AUTO_IMPORT_MIN_BYTES / 2**30:.0f} GiB "
               f"from which ImportTable is worth its fixed costs")
    else:
        return "import", (f"a new table without LSIs and {size / 2**30:.1f} GiB of items: ImportTable "
                          f"(~${estimate_import_usd(size):.2f}) instead of on-demand writes "
                          f"(~${estimate_on_demand_usd(size):.2f} at 1 KB items)")
    return "batch-write", why


def estimate_import_usd(size_bytes: int) -> float:
    return size_bytes / 2**30 * IMPORT_USD_PER_GB


def estimate_on_demand_usd(size_bytes: int, item_bytes: int = 1024, indexes: int = 0) -> float:
    items = size_bytes / item_bytes
    wru = items * -(-item_bytes // 1024) * (1 + indexes)
    return wru / 1e6 * ON_DEMAND_USD_PER_MILLION_WRU


def import_request(create_request: Dict[str, Any], bucket: str, prefix: str,
                   client_token: Optional[str] = None) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(ImportTable parameters, what is left to apply after the import) from a CreateTable request. Pure."""
    creation = {k: v for k, v in create_request.items() if k in CREATION_FIELDS}
    if create_request.get("LocalSecondaryIndexes"):
        raise TableError(f"table {create_request['TableName']} has local secondary indexes, which ImportTable "
                         f"cannot create: restore it with --method batch-write")
    params: Dict[str, Any] = {
        "S3BucketSource": {"S3Bucket": bucket, "S3KeyPrefix": prefix.rstrip("/") + "/"},
        "InputFormat": "DYNAMODB_JSON",
        "InputCompressionType": "GZIP",
        "TableCreationParameters": creation,
    }
    if client_token:
        params["ClientToken"] = client_token[:36]
    after = {k: v for k, v in create_request.items() if k not in CREATION_FIELDS and k != "LocalSecondaryIndexes"}
    return params, after


def stage_lines(texts: Iterable[str], bucket: str, key: str, region: Optional[str]) -> Dict[str, int]:
    """Write item texts as one gzip file of DynamoDB JSON lines (``{"Item": ...}``, the format of DynamoDB's own
    S3 export, which ImportTable reads) to ``s3://bucket/key``; its items, source bytes and staged bytes. Runs on
    an executor: the file grows in a spooled temporary file (memory up to 64 MB, then disk) and is uploaded
    with multipart transfers when large."""
    items = raw = 0
    with tempfile.SpooledTemporaryFile(max_size=64 << 20) as spool:
        with gzip.GzipFile(fileobj=spool, mode="wb", compresslevel=6, mtime=0) as out:
            for text in texts:
                line = ('{"Item":' + text + "}\n").encode("utf-8")
                out.write(line)
                items += 1
                raw += len(line)
        staged = spool.tell()
        spool.seek(0)
        if items:
            try:
                aws.client("s3", region).upload_fileobj(spool, bucket, key)
            except (ClientError, BotoCoreError) as exc:
                raise TableError(f"cannot write import staging file s3://{bucket}/{key} ({exc}): check "
                                 f"--import-staging names a bucket of the recovery region this job may write") from exc
    return {"items": items, "source_bytes": raw, "staged_bytes": staged if items else 0}


def check_staging(bucket: str, prefix: str, region: Optional[str]) -> None:
    """Fail before anything is created when the staging location cannot be used. A listing of the staging prefix
    (one key), not HeadBucket: a role granted s3:ListBucket for the vault's prefix only may do it."""
    try:
        aws.client("s3", region).list_objects_v2(Bucket=bucket, Prefix=prefix.strip("/") + "/", MaxKeys=1)
    except (ClientError, BotoCoreError) as exc:
        code = exc.response["Error"].get("Code", "") if isinstance(exc, ClientError) else type(exc).__name__
        raise TableError(f"the import staging bucket {bucket} cannot be used ({code or exc}); nothing was created: "
                         f"pass --import-staging s3://bucket/prefix naming a bucket of region {region} this job "
                         f"may write, or --method batch-write") from exc


class ImportNotAllowed(TableError):
    """ImportTable was refused for want of permission (nothing was created): ``auto`` loads with BatchWriteItem."""


def start(params: Dict[str, Any], region: str) -> Dict[str, Any]:
    """ImportTable; its ImportTableDescription. Raises :class:`ImportNotAllowed` when the role may not import."""
    table = params["TableCreationParameters"]["TableName"]
    try:
        return aws.client("dynamodb", region).import_table(**params)["ImportTableDescription"]
    except ClientError as exc:
        if exc.response["Error"].get("Code") in ("AccessDeniedException", "AccessDenied"):
            raise ImportNotAllowed(f"ImportTable of table {table} in region {region} was denied: grant the job's "
                                   f"role dynamodb:ImportTable and dynamodb:DescribeImport, s3:GetObject and "
                                   f"s3:ListBucket on the staging prefix and CloudWatch Logs writes, or use "
                                   f"--method batch-write") from exc
        raise tables.table_error(table, region, exc) from exc
    except BotoCoreError as exc:
        raise tables.table_error(table, region, exc) from exc


def wait(arn: str, region: str, *, timeout_s: float, poll_s: float = 15.0,
         clock=time.monotonic, sleep=time.sleep) -> Dict[str, Any]:
    """DescribeImport until the import is COMPLETED, FAILED or CANCELLED; its description. Raises
    ``TimeoutError`` (with the last description as ``args[1]``) after ``timeout_s``."""
    client = aws.client("dynamodb", region)
    deadline = clock() + timeout_s
    while True:
        try:
            description = client.describe_import(ImportArn=arn)["ImportTableDescription"]
        except (ClientError, BotoCoreError) as exc:
            raise TableError(f"DescribeImport of {arn} in region {region} failed ({exc}): check the import in the "
                             f"DynamoDB console; delete its table if it is half made, then rerun") from exc
        if description.get("ImportStatus") in FINISHED:
            return description
        if clock() >= deadline:
            raise TimeoutError(f"import {arn} is still {description.get('ImportStatus')}", description)
        sleep(poll_s)


def discard(table: str, region: str, table_arn: Optional[str], timeout_s: float = 600.0) -> bool:
    """Delete the table a failed import made (only that one: same ARN); True when one was deleted."""
    client = aws.client("dynamodb", region)
    deadline = time.monotonic() + timeout_s
    while True:
        found = tables.describe(table, region)
        if found is None or (table_arn and found.get("TableArn") != table_arn):
            return False
        if found.get("TableStatus") == "ACTIVE" or time.monotonic() >= deadline:
            break
        time.sleep(1.0)  # a table being created cannot be deleted yet
    try:
        if found.get("DeletionProtectionEnabled"):
            client.update_table(TableName=table, DeletionProtectionEnabled=False)
        client.delete_table(TableName=table)
    except ClientError as exc:
        if exc.response["Error"].get("Code") == "ResourceNotFoundException":
            return False
        raise tables.table_error(table, region, exc) from exc
    while tables.describe(table, region) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    return True


def apply_after(table: str, region: str, after: Dict[str, Any]) -> List[str]:
    """What ImportTable could not set, one change at a time (each waits for ACTIVE): the stream, table class,
    warm throughput, deletion protection (last of the table's own settings) and tags. Notes of what was done."""
    client = aws.client("dynamodb", region)
    notes: List[str] = []
    steps: List[Tuple[str, Dict[str, Any]]] = []
    if after.get("StreamSpecification"):
        steps.append(("stream " + after["StreamSpecification"]["StreamViewType"],
                      {"StreamSpecification": after["StreamSpecification"]}))
    if after.get("TableClass") and after["TableClass"] != "STANDARD":
        steps.append((f"table class {after['TableClass']}", {"TableClass": after["TableClass"]}))
    if after.get("WarmThroughput"):
        steps.append(("warm throughput", {"WarmThroughput": after["WarmThroughput"]}))
    if after.get("DeletionProtectionEnabled"):
        steps.append(("deletion protection", {"DeletionProtectionEnabled": True}))
    try:
        for label, change in steps:
            client.update_table(TableName=table, **change)
            tables.wait_active(table, region)
            notes.append(f"{label} set after the import")
        if after.get("Tags"):
            arn = client.describe_table(TableName=table)["Table"]["TableArn"]
            tags = after["Tags"]
            for start_at in range(0, len(tags), 50):
                client.tag_resource(ResourceArn=arn, Tags=tags[start_at:start_at + 50])
            notes.append(f"{len(tags)} tags set after the import")
    except (ClientError, BotoCoreError) as exc:
        raise tables.table_error(table, region, exc) from exc
    return notes

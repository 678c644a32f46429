"""The AWS Lambda function that lands a table's DynamoDB Streams batches in S3 for ``merge_increments --format lambda``.

Deploy it (``make package`` builds ``lambda.zip``; handler ``ddbvault.changes.lambda_sink.handler``, Python 3.9+,
boto3 from the runtime) with an event source mapping on the table's stream that has
``FunctionResponseTypes: [ReportBatchItemFailures]``, and the environment variable ``DDBVAULT_DESTINATION`` set to
``s3://bucket/prefix`` in the vault's region. Its role needs ``s3:PutObject`` on that prefix (and what any stream
trigger needs).

Each invocation's records (one shard's, in order) are written as gzip JSON lines, one line per record exactly as the
event carries it, in objects of at most ``CHUNK`` records::

    <prefix>/<table>/<stream label>/<first SequenceNumber, 40 digits>-<eventID hash>.json.gz
        (metadata: records, last-sequence)

A Lambda event names no shard, so the key is the stream and the chunk's first record: a retried invocation starts at
the same record and overwrites the same object instead of adding a copy. When a chunk cannot be written, the chunks
before it are kept and the function reports the chunk's first record as the batch's first failure
(``batchItemFailures``): Lambda retries from there, and the merge drops any record it already holds by ``eventID``.
That report is only honoured when the event source mapping has ``ReportBatchItemFailures`` (without it Lambda
would take the batch as done): the change-sink stack sets it, with unlimited retries and record age, since a record
the mapping gives up on never reaches the vault.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlparse

log = logging.getLogger(__name__)

DESTINATION = "DDBVAULT_DESTINATION"
CHUNK = 1000            # records per object: a failure costs at most this many records rewritten
SEQ_DIGITS = 40
SUFFIX = ".json.gz"


def destination(text: Optional[str]) -> Tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket/prefix``; a clear error when it is unset or not an S3 URI."""
    parsed = urlparse(text or "")
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"{DESTINATION} must be s3://bucket/prefix (the merge's --source), not {text!r}")
    return parsed.netloc, parsed.path.strip("/")


def stream_parts(arn: str) -> Tuple[str, str]:
    """(table, stream label) of a stream ARN ``arn:aws:dynamodb:<region>:<account>:table/<t>/stream/<label>``."""
    parts = arn.split(":", 5)[-1].split("/") if arn else []
    if len(parts) != 4 or parts[0] != "table" or parts[2] != "stream":
        raise ValueError(f"eventSourceARN {arn!r} is not a DynamoDB stream ARN")
    return parts[1], parts[3]


def object_key(prefix: str, arn: str, first_sequence: str, first_event: str) -> str:
    """The object of a chunk: by stream, first sequence number and (sequence numbers are documented as ordered
    within a shard, not unique across shards) a short hash of the first record's eventID."""
    table, label = stream_parts(arn)
    tag = hashlib.sha256(first_event.encode()).hexdigest()[:12]
    name = f"{int(first_sequence):0{SEQ_DIGITS}d}-{tag}{SUFFIX}"
    return "/".join(p for p in (prefix, table, label.replace(":", "-"), name) if p)


def body(records: List[Dict[str, Any]]) -> bytes:
    """The object's bytes: gzip of one JSON line per record (mtime 0, so a rewrite is byte-identical)."""
    text = "".join(json.dumps(r, separators=(",", ":"), sort_keys=True) + "\n" for r in records)
    return gzip.compress(text.encode("utf-8"), mtime=0)


def land(records: List[Dict[str, Any]], bucket: str, prefix: str, s3: Any) -> List[Dict[str, str]]:
    """Write ``records`` (one shard's, in order) in chunks; the ``batchItemFailures`` to report (empty: all landed)."""
    for start in range(0, len(records), CHUNK):
        chunk = records[start:start + CHUNK]
        first = chunk[0]["dynamodb"]["SequenceNumber"]
        key = object_key(prefix, chunk[0]["eventSourceARN"], first, str(chunk[0].get("eventID", "")))
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=body(chunk), ContentType="application/x-ndjson",
                          Metadata={"records": str(len(chunk)),
                                    "last-sequence": chunk[-1]["dynamodb"]["SequenceNumber"]})
        except Exception:
            log.exception("could not write s3://%s/%s; reporting records from %s as failed", bucket, key, first)
            return [{"itemIdentifier": first}]
    return []


def handler(event: Dict[str, Any], context: Any = None, s3: Any = None) -> Dict[str, Any]:
    """The Lambda entry point: a DynamoDB Streams event in, ``{"batchItemFailures": [...]}`` out."""
    bucket, prefix = destination(os.environ.get(DESTINATION))
    records = event.get("Records") or []
    if not records:
        return {"batchItemFailures": []}
    if s3 is None:
        import boto3

        s3 = boto3.client("s3")
    return {"batchItemFailures": land(records, bucket, prefix, s3)}

"""A wire-speed DynamoDB stand-in for benchmarks only: answers from memory as fast as a small Python server can,
so that a benchmark against it shows the client side's ceiling rather than the server's.

Not a DynamoDB: no validation, no capacity, no persistence of written items (BatchWriteItem is counted and
answered with empty ``UnprocessedItems``). What it serves:

- DynamoDB JSON 1.0: Scan of the one source table loaded at start (``Segment``/``TotalSegments``, ``Limit``,
  ``ExclusiveStartKey``, ``Select=COUNT``, ``ReturnConsumedCapacity``; pages up to 1 MB cut from items rendered
  once at start), BatchWriteItem (counted per table), CreateTable, DescribeTable, DeleteTable, UpdateTable,
  ListTables, DescribeTimeToLive, UpdateTimeToLive, DescribeContinuousBackups, UpdateContinuousBackups,
  ListTagsOfResource, TagResource. Tables other than the source are empty.
- DynamoDB Streams: the source table has a NEW_IMAGE stream with one open shard. ``POST /bench/stream`` with
  ``{"changes": N}`` renders N MODIFY records (the first N items with a changed attribute) stamped with the
  current second (and changes those items in the table), then one far-future record so a reader stops at
  its cut at once instead of polling an open shard; DescribeStream, GetShardIterator and GetRecords serve them.
- ``GET /bench/stats``: ``{"written": {table: items}, "requests": {operation: calls}}``;
  ``POST /bench/reset`` zeroes the counters.

    python standins/wirespeed.py --items-file ITEMS.jsonl --table NAME --hash-key pk [--range-key sk] [--port P]

``ITEMS.jsonl``: one item a line in DynamoDB's wire JSON (``{"pk": {"S": "..."}, ...}``, binaries as base64).
The server prints ``listening on http://127.0.0.1:P`` once it answers.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple

PAGE_BYTES = 1024 * 1024
REGION = "us-east-1"
ACCOUNT = "123456789012"
SEQ_BASE = 100_000_000_000_000_000_000  # 21 digits, as the service's sequence numbers
SHARD_ID = "shardId-00000001700000000000-bench0001"


class Source:
    """The source table's items as rendered JSON bytes, split and indexed per TotalSegments on first use."""

    def __init__(self, name: str, hash_key: str, range_key: Optional[str], lines: List[bytes]) -> None:
        self.name, self.hash_key, self.range_key = name, hash_key, range_key
        self.items = lines
        self.keys: List[Tuple[str, ...]] = []
        self.hash_values: List[str] = []
        for line in lines:
            item = json.loads(line)
            self.keys.append(self._key_of(item))
            self.hash_values.append(json.dumps(item[hash_key], sort_keys=True))
        self.size = sum(len(line) for line in lines)
        self._splits: Dict[int, List[Tuple[List[int], Dict[Tuple[str, ...], int]]]] = {}
        self._lock = threading.Lock()
        self.created = time.time()
        self.stream_label = time.strftime("%Y-%m-%dT%H:%M:%S.000", time.gmtime(self.created))
        self.stream_arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}/stream/{self.stream_label}"
        self.records: List[bytes] = []

    def _key_of(self, item: Dict[str, Any]) -> Tuple[str, ...]:
        names = [self.hash_key] + ([self.range_key] if self.range_key else [])
        return tuple(json.dumps(item[k], sort_keys=True) for k in names)

    def split(self, total: int):
        """Per segment: the item indexes in it, and each item's position by key (for ExclusiveStartKey)."""
        with self._lock:
            found = self._splits.get(total)
            if found is None:
                members: List[List[int]] = [[] for _ in range(total)]
                for index, value in enumerate(self.hash_values):
                    digest = int.from_bytes(hashlib.md5(value.encode("utf-8")).digest()[:8], "big")
                    members[digest * total >> 64].append(index)
                found = [(m, {self.keys[i]: pos for pos, i in enumerate(m)}) for m in members]
                self._splits[total] = found
            return found

    def key_json(self, index: int) -> bytes:
        item = json.loads(self.items[index])
        names = [self.hash_key] + ([self.range_key] if self.range_key else [])
        return json.dumps({k: item[k] for k in names}).encode("utf-8")

    def render_stream(self, changes: int) -> int:
        now = int(time.time())
        out = []
        for n in range(min(changes, len(self.items))):
            item = json.loads(self.items[n])
            item["bench_changed"] = {"N": str(n)}
            out.append(self._record("MODIFY", n, now, item))
            # The table holds what its stream says: a verify after the merge compares equal.
            self.items[n] = json.dumps(item).encode("utf-8")
        self.size = sum(len(line) for line in self.items)
        # Far in the future: a reader's cut is the job's start, so it stops here without polling the open shard.
        out.append(self._record("MODIFY", len(out), now + 86_400, json.loads(self.items[0])))
        self.records = out
        return len(out) - 1

    def _record(self, event: str, n: int, when: int, item: Dict[str, Any]) -> bytes:
        names = [self.hash_key] + ([self.range_key] if self.range_key else [])
        body = {"eventID": f"bench-{n}", "eventName": event, "eventVersion": "1.1", "eventSource": "aws:dynamodb",
                "awsRegion": REGION, "dynamodb": {
                    "ApproximateCreationDateTime": when, "Keys": {k: item[k] for k in names}, "NewImage": item,
                    "SequenceNumber": str(SEQ_BASE + n), "SizeBytes": len(json.dumps(item)),
                    "StreamViewType": "NEW_IMAGE"}}
        return json.dumps(body).encode("utf-8")


class State:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.tables: Dict[str, Dict[str, Any]] = {}
        self.written: Dict[str, int] = {}
        self.requests: Dict[str, int] = {}
        self.lock = threading.Lock()

    def describe(self, name: str) -> Optional[Dict[str, Any]]:
        src = self.source
        if name == src.name:
            attrs = [{"AttributeName": src.hash_key, "AttributeType": "S"}]
            keys = [{"AttributeName": src.hash_key, "KeyType": "HASH"}]
            if src.range_key:
                attrs.append({"AttributeName": src.range_key, "AttributeType": "N"})
                keys.append({"AttributeName": src.range_key, "KeyType": "RANGE"})
            return {"TableName": name, "TableStatus": "ACTIVE", "AttributeDefinitions": attrs, "KeySchema": keys,
                    "CreationDateTime": src.created, "ItemCount": len(src.items), "TableSizeBytes": src.size,
                    "TableArn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}", "TableId": "bench-source",
                    "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
                    "ProvisionedThroughput": {"ReadCapacityUnits": 0, "WriteCapacityUnits": 0,
                                              "NumberOfDecreasesToday": 0},
                    "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
                    "LatestStreamArn": src.stream_arn, "LatestStreamLabel": src.stream_label}
        return self.tables.get(name)


def _error(code: str, message: str, status: int = 400) -> Tuple[int, bytes]:
    return status, json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message}).encode()


def _ok(value: Any) -> Tuple[int, bytes]:
    return 200, json.dumps(value).encode("utf-8")


def scan(state: State, req: Dict[str, Any]) -> Tuple[int, bytes]:
    src = state.source
    if req.get("TableName") != src.name:
        if state.describe(req.get("TableName", "")) is None:
            return _error("ResourceNotFoundException", "Requested resource not found")
        return 200, b'{"Count":0,"ScannedCount":0,"Items":[]}'
    total = int(req.get("TotalSegments", 1))
    members, position = src.split(total)[int(req.get("Segment", 0))]
    start = 0
    if req.get("ExclusiveStartKey"):
        start = position[src._key_of(req["ExclusiveStartKey"])] + 1
    limit = int(req.get("Limit") or 1 << 30)
    end, size = start, 0
    while end < len(members) and end - start < limit and size < PAGE_BYTES:
        size += len(src.items[members[end]])
        end += 1
    count = end - start
    parts = [b'{"Count":', str(count).encode(), b',"ScannedCount":', str(count).encode()]
    if req.get("Select") != "COUNT":
        parts += [b',"Items":[', b",".join(src.items[i] for i in members[start:end]), b"]"]
    if end < len(members):
        parts += [b',"LastEvaluatedKey":', src.key_json(members[end - 1])]
    if req.get("ReturnConsumedCapacity") in ("TOTAL", "INDEXES"):
        units = max(1, -(-size // 4096)) * (1.0 if req.get("ConsistentRead") else 0.5)
        parts += [b',"ConsumedCapacity":{"TableName":"', src.name.encode(), b'","CapacityUnits":',
                  str(units).encode(), b"}"]
    parts.append(b"}")
    return 200, b"".join(parts)


def batch_write(state: State, raw: bytes) -> Tuple[int, bytes]:
    req = json.loads(raw)
    consumed = []
    with state.lock:
        for table, writes in req.get("RequestItems", {}).items():
            state.written[table] = state.written.get(table, 0) + len(writes)
            consumed.append({"TableName": table, "CapacityUnits": float(len(writes))})
    out: Dict[str, Any] = {"UnprocessedItems": {}}
    if req.get("ReturnConsumedCapacity") in ("TOTAL", "INDEXES"):
        out["ConsumedCapacity"] = consumed
    return _ok(out)


def _create(state: State, name: str, req: Dict[str, Any]) -> Tuple[int, bytes]:
    if state.describe(name):
        return _error("ResourceInUseException", f"Table already exists: {name}")
    table = {k: v for k, v in req.items() if k not in ("Tags", "SSESpecification")}
    table.update({"TableStatus": "ACTIVE", "CreationDateTime": time.time(), "ItemCount": 0,
                  "TableSizeBytes": 0, "TableArn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}",
                  "BillingModeSummary": {"BillingMode": req.get("BillingMode", "PROVISIONED")}})
    for index in table.get("GlobalSecondaryIndexes", []):
        index["IndexStatus"] = "ACTIVE"
    state.tables[name] = table
    return _ok({"TableDescription": table})


def _found(found: Optional[Dict[str, Any]], key: str, name: str) -> Tuple[int, bytes]:
    return _ok({key: found}) if found else _error("ResourceNotFoundException", f"Table: {name} not found")


BACKUPS = {"ContinuousBackupsDescription": {"ContinuousBackupsStatus": "ENABLED", "PointInTimeRecoveryDescription": {
    "PointInTimeRecoveryStatus": "DISABLED"}}}
CONTROL = {
    "DescribeTable": lambda state, name, req: _found(state.describe(name), "Table", name),
    "CreateTable": _create,
    "DeleteTable": lambda state, name, req: _found(state.tables.pop(name, None), "TableDescription", name),
    "UpdateTable": lambda state, name, req: _found(state.describe(name), "TableDescription", name),
    "ListTables": lambda state, name, req: _ok({"TableNames": sorted([state.source.name, *state.tables])}),
    "DescribeTimeToLive": lambda state, name, req: _ok({"TimeToLiveDescription": {"TimeToLiveStatus": "DISABLED"}}),
    "UpdateTimeToLive": lambda state, name, req: _ok(
        {"TimeToLiveSpecification": req.get("TimeToLiveSpecification", {})}),
    "DescribeContinuousBackups": lambda state, name, req: _ok(BACKUPS),
    "UpdateContinuousBackups": lambda state, name, req: _ok(BACKUPS),
    "ListTagsOfResource": lambda state, name, req: _ok({"Tags": []}),
    "TagResource": lambda state, name, req: (200, b"{}"),
    "UntagResource": lambda state, name, req: (200, b"{}"),
}


def control(state: State, op: str, req: Dict[str, Any]) -> Tuple[int, bytes]:
    handler = CONTROL.get(op)
    if handler is None:
        return _error("UnknownOperationException", f"the wire-speed stand-in does not serve {op}")
    return handler(state, req.get("TableName", ""), req)


def streams(state: State, op: str, req: Dict[str, Any]) -> Tuple[int, bytes]:
    src = state.source
    if op == "ListStreams":
        return _ok({"Streams": [{"StreamArn": src.stream_arn, "TableName": src.name,
                                 "StreamLabel": src.stream_label}]})
    if op == "DescribeStream":
        keys = [{"AttributeName": src.hash_key, "KeyType": "HASH"}]
        if src.range_key:
            keys.append({"AttributeName": src.range_key, "KeyType": "RANGE"})
        return _ok({"StreamDescription": {
            "StreamArn": src.stream_arn, "StreamLabel": src.stream_label, "StreamStatus": "ENABLED",
            "StreamViewType": "NEW_IMAGE", "CreationRequestDateTime": src.created, "TableName": src.name,
            "KeySchema": keys, "Shards": [{"ShardId": SHARD_ID, "SequenceNumberRange": {
                "StartingSequenceNumber": str(SEQ_BASE)}}]}})
    if op == "GetShardIterator":
        kind, seq = req.get("ShardIteratorType"), req.get("SequenceNumber")
        start = 0
        if kind == "AT_SEQUENCE_NUMBER":
            start = int(seq) - SEQ_BASE
        elif kind == "AFTER_SEQUENCE_NUMBER":
            start = int(seq) - SEQ_BASE + 1
        elif kind == "LATEST":
            start = len(src.records)
        return _ok({"ShardIterator": f"bench:{start}"})
    if op == "GetRecords":
        start = int(req["ShardIterator"].split(":", 1)[1])
        end = min(start + int(req.get("Limit") or 1000), len(src.records))
        body = b'{"Records":[' + b",".join(src.records[start:end]) + b'],"NextShardIterator":"bench:' + \
            str(end).encode() + b'"}'
        return 200, body
    return _error("UnknownOperationException", f"the wire-speed stand-in does not serve streams {op}")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's delay holds the body ~40 ms.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.startswith("/bench/stats"):
            with self.state.lock:
                self._send(*_ok({"written": self.state.written, "requests": self.state.requests}))
        else:
            self._send(200, b"{}")

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/bench/"):
            self._bench(self.path, json.loads(raw or b"{}"))
            return
        target = self.headers.get("X-Amz-Target", "")
        service, _, op = target.partition(".")
        with self.state.lock:
            self.state.requests[op] = self.state.requests.get(op, 0) + 1
        if op == "BatchWriteItem":
            self._send(*batch_write(self.state, raw))
        elif op == "Scan":
            self._send(*scan(self.state, json.loads(raw)))
        elif service.startswith("DynamoDBStreams"):
            self._send(*streams(self.state, op, json.loads(raw)))
        else:
            self._send(*control(self.state, op, json.loads(raw)))

    def _bench(self, path: str, req: Dict[str, Any]) -> None:
        if path.startswith("/bench/stream"):
            self._send(*_ok({"records": self.state.source.render_stream(int(req.get("changes", 0)))}))
        elif path.startswith("/bench/reset"):
            with self.state.lock:
                self.state.written.clear()
                self.state.requests.clear()
            self._send(200, b"{}")
        else:
            self._send(404, b"{}")


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items-file", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--hash-key", default="pk")
    parser.add_argument("--range-key")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with open(args.items_file, "rb") as handle:
        lines = [line.rstrip(b"\n") for line in handle if line.strip()]
    Handler.state = State(Source(args.table, args.hash_key, args.range_key, lines))
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"listening on http://{args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())

"""The raw boto3 contenders, each run as a process of its own so its CPU is measured like a job's
(``cpu.measure``): plain low-level-client loops, as a person would write them without ddbvault.

    python bench/contenders.py scan --table T --threads N --segments S [--json-fast-path]
    python bench/contenders.py write --table T --threads N --items-file ITEMS.jsonl [--hash-only]
        [--wire-body [--signed]]

Every loop shares one low-level client among its threads (boto3's advice: clients are thread-safe; making one
per thread only parses the service model again).
``scan``: TotalSegments S shared by N threads, items counted then dropped. With
``--json-fast-path`` a botocore ``before-parse`` hook hands the page's ``Items`` over as ``json.loads`` (in C)
made them, instead of botocore's per-attribute parsing: the same trick ddbvault's scan uses.
``write``: the items file (DynamoDB wire JSON, binaries base64) is read and decoded into the client's form
(binaries as bytes), the table created, then N threads send BatchWriteItem of 25 puts, re-sending
``UnprocessedItems`` with backoff. With ``--wire-body`` the loop never decodes an item: it keeps each line's
text and sends the request body it builds by string concatenation (a ``before-call`` hook puts it in place of
botocore's serialisation), the same trick ddbvault's restore uses. With ``--signed`` as well, each call skips the
client's per-call pipeline: the loop signs its request with botocore's SigV4 signer and sends it on the client's
HTTP session, reading the answer with ``json.loads`` (again what ddbvault's restore does). Both print one JSON
line: items, wall_s and cpu_s of the loop itself (this process's own getrusage), next to which the caller has the
whole process's figures.
"""
from __future__ import annotations

import argparse
import base64
import json
import queue
import resource
import sys
import threading
import time
from typing import Any, Dict, List

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config


def client():
    return boto3.client("dynamodb", config=Config(max_pool_connections=64, retries={"mode": "standard"}))


def _json_items(response_dict: Dict[str, Any], customized_response_dict: Dict[str, Any], **_: Any) -> None:
    if response_dict.get("status_code") != 200:
        return
    body = json.loads(response_dict["body"])
    items = body.pop("Items", None)
    if items is not None:
        customized_response_dict["Items"] = items
        response_dict["body"] = json.dumps(body).encode("utf-8")


_WIRE = "contender_wire_body"


def _take_wire_body(params: Dict[str, Any], context: Dict[str, Any], **_: Any) -> None:
    body = params.get("RequestItems")
    if isinstance(body, bytes):  # a pre-built body: botocore validates and serialises a stand-in, then this
        context[_WIRE] = body
        params["RequestItems"] = {"x": [{"DeleteRequest": {"Key": {}}}]}


def _put_wire_body(params: Dict[str, Any], context: Dict[str, Any], **_: Any) -> None:
    body = context.pop(_WIRE, None)
    if body is not None:
        params["body"] = body


def scan(args: argparse.Namespace) -> int:
    todo: queue.Queue[int] = queue.Queue()
    for segment in range(args.segments):
        todo.put(segment)
    counts: List[int] = []
    errors: List[BaseException] = []

    ddb = client()
    if args.json_fast_path:
        ddb.meta.events.register("before-parse.dynamodb.Scan", _json_items)

    def work() -> None:
        seen = 0
        try:
            while True:
                try:
                    segment = todo.get_nowait()
                except queue.Empty:
                    break
                kwargs: Dict[str, Any] = {"TableName": args.table, "Segment": segment,
                                          "TotalSegments": args.segments}
                while True:
                    page = ddb.scan(**kwargs)
                    if args.json_fast_path:
                        seen += len(page.get("Items", []))
                    else:
                        seen += len(page["Items"])
                    if not page.get("LastEvaluatedKey"):
                        break
                    kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except BaseException as exc:
            errors.append(exc)
        counts.append(seen)

    run(work, args.threads, errors)
    return sum(counts)


def _decode(value: Dict[str, Any]) -> Dict[str, Any]:
    """Wire JSON to the low-level client's form: B and BS as bytes, M and L walked."""
    (tag, inner), = value.items()
    if tag == "B":
        return {"B": base64.b64decode(inner)}
    if tag == "BS":
        return {"BS": [base64.b64decode(v) for v in inner]}
    if tag == "M":
        return {"M": {k: _decode(v) for k, v in inner.items()}}
    if tag == "L":
        return {"L": [_decode(v) for v in inner]}
    return value


def write(args: argparse.Namespace) -> int:
    with open(args.items_file, encoding="utf-8") as handle:
        if args.wire_body:
            items: List[Any] = [line.strip() for line in handle if line.strip()]
        else:
            items = [{k: _decode(v) for k, v in json.loads(line).items()} for line in handle if line.strip()]
    attrs = [{"AttributeName": "pk", "AttributeType": "S"}]
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    if not args.hash_only:
        attrs.append({"AttributeName": "sk", "AttributeType": "N"})
        keys.append({"AttributeName": "sk", "KeyType": "RANGE"})
    ddb = client()
    ddb.create_table(TableName=args.table, AttributeDefinitions=attrs, KeySchema=keys, BillingMode="PAY_PER_REQUEST")
    ddb.get_waiter("table_exists").wait(TableName=args.table, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
    source = iter(items)
    lock = threading.Lock()
    errors: List[BaseException] = []
    written = [0]

    if args.signed:
        post = _signed_sender(ddb)
    if args.wire_body:
        ddb.meta.events.register("before-parameter-build.dynamodb.BatchWriteItem", _take_wire_body)
        ddb.meta.events.register("before-call.dynamodb.BatchWriteItem", _put_wire_body)
    head = '{"RequestItems":{' + json.dumps(args.table) + ':['

    def work() -> None:
        try:
            while True:
                with lock:
                    batch = [item for _, item in zip(range(25), source)]
                    written[0] += len(batch)
                if not batch:
                    return
                if args.wire_body:
                    request: Any = (head + ",".join('{"PutRequest":{"Item":' + item + "}}" for item in batch)
                                    + "]}}").encode("utf-8")
                else:
                    request = {args.table: [{"PutRequest": {"Item": item}} for item in batch]}
                delay = 0.05
                while request:
                    if args.signed:
                        unprocessed = post(request).get("UnprocessedItems") or {}
                        # Returned puts go back as a body of their own (items in wire JSON, as they came back).
                        request = (head + ",".join(json.dumps(r, separators=(",", ":")) for r in
                                                   unprocessed.get(args.table, [])) + "]}}").encode("utf-8") \
                            if unprocessed else None
                    else:
                        request = ddb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
                    if request:
                        time.sleep(delay)
                        delay = min(delay * 2, 2.0)
        except BaseException as exc:
            errors.append(exc)

    run(work, args.threads, errors)
    return written[0]


def _signed_sender(ddb: Any) -> Any:
    """A BatchWriteItem of a pre-built body, signed here and sent on the client's HTTP session."""
    credentials = boto3.session.Session().get_credentials()
    http = ddb._endpoint.http_session
    url = ddb.meta.endpoint_url.rstrip("/") + "/"
    region = ddb.meta.region_name
    headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.BatchWriteItem"}

    def post(body: bytes) -> Dict[str, Any]:
        request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
        SigV4Auth(credentials.get_frozen_credentials(), "dynamodb", region).add_auth(request)
        response = http.send(request.prepare())
        if response.status_code != 200:
            raise RuntimeError(f"BatchWriteItem: HTTP {response.status_code}: {response.content[:200]!r}")
        return json.loads(response.content)

    return post


def run(work, threads: int, errors: List[BaseException]) -> None:
    pool = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("scan")
    one.add_argument("--table", required=True)
    one.add_argument("--threads", type=int, required=True)
    one.add_argument("--segments", type=int, required=True)
    one.add_argument("--json-fast-path", action="store_true")
    two = sub.add_parser("write")
    two.add_argument("--table", required=True)
    two.add_argument("--threads", type=int, required=True)
    two.add_argument("--items-file", required=True)
    two.add_argument("--hash-only", action="store_true")
    two.add_argument("--wire-body", action="store_true")
    two.add_argument("--signed", action="store_true")
    args = parser.parse_args(argv)
    if args.what == "write" and args.signed and not args.wire_body:
        parser.error("--signed sends pre-built bodies: give --wire-body too")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0 = usage.ru_utime + usage.ru_stime, time.perf_counter()
    items = scan(args) if args.what == "scan" else write(args)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"items": items, "wall_s": round(time.perf_counter() - wall0, 3),
                      "cpu_s": round(usage.ru_utime + usage.ru_stime - cpu0, 3)}))


if __name__ == "__main__":
    sys.exit(main())

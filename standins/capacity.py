"""A capacity-model HTTP proxy in front of a DynamoDB stand-in (moto server, dynalite), for tests and benchmarks.

The stand-ins never throttle and report constant ConsumedCapacity. This proxy forwards every request unchanged,
except for the tables it *watches*: for those it computes what each request consumes by DynamoDB's rules,
enforces the table's capacity, and keeps a per-second timeline, so a test can prove that a job stays inside an
operator's budget. Tables that are not watched pass through untouched (no JSON is even parsed while nothing is
watched), so the whole test suite can run through it.

Modelled:

- Item sizes (DG "Item sizes and formats"): attribute names plus values; see :func:`value_size`.
- Read units: Scan/Query pages cost their returned items' total size rounded up to 4 KB, 1 unit per 4 KB when
  ``ConsistentRead`` is true and 0.5 otherwise, at least one 4 KB step (an empty page costs 0.5);
  GetItem/BatchGetItem the same per item (a key that finds nothing costs one step).
- Write units: PutItem/UpdateItem/DeleteItem/BatchWriteItem 1 unit per KB rounded up (at least 1) per item, plus
  the same for every GSI whose key attributes the item has and every LSI whose sort key it has. A conditional
  write that fails still costs the table its units, as on the service.
- Enforcement: token buckets per watched table (reads, writes) refilled at the table's rate and holding at most
  ``burst_seconds`` of unused capacity (DynamoDB keeps 300 s), plus one read and one write bucket per partition at
  the per-partition rates holding at most one second (the service's per-partition limit is a hard per-second
  ceiling). A request is admitted while its buckets are not in debt; its cost is charged, and it may take a bucket
  into debt, as the service's can. Refused: HTTP 400 ``ProvisionedThroughputExceededException``. BatchWriteItem and
  BatchGetItem are admitted item by item; the rest comes back as ``UnprocessedItems``/``UnprocessedKeys`` in a 200,
  and a call with nothing admitted is a 400, as on the service. A read's cost is known only from its answer: it
  reserves one 4 KB step when admitted and settles after, so concurrent readers can take a bucket deeper into debt
  than one request's cost (the rate over time still holds).
- Watches are per table name and region: the region is read from the request's credential scope, and a same-named
  table in another region passes untouched. A table that does not exist yet (a restore creates it) is watched with
  :meth:`CapacityProxy.watch_pending`: the watch starts at the first data-plane request that names it.
- ``ReturnConsumedCapacity`` TOTAL/INDEXES: the answer's ``ConsumedCapacity`` is replaced by the computed figure
  (Content-Length and ``x-amz-crc32`` recomputed).
- DynamoDB Streams: GetRecords calls per shard per second; with ``stream_reads_per_shard`` set, calls over it get
  HTTP 400 ``LimitExceededException``. Shard iterators are traced from GetShardIterator and NextShardIterator.
- Timeline per watched table and wall-clock second: read and write units consumed, GetRecords calls, throttled
  requests (a BatchWriteItem/BatchGetItem that had items deferred counts as throttled), requests;
  :func:`windows` and :func:`summary` turn a series into sliding-window rates to assert on.

Simplified (on purpose; documented so nobody mistakes the model for the service):

- Deletes: the proxy does not know the old item's size, so a DeleteItem (or a BatchWriteItem DeleteRequest) costs
  1 unit plus 1 per index of the table, unless the answer carries the old item (``ReturnValues=ALL_OLD``).
  A PutItem costs the new item's size (the service charges the larger of old and new); an UpdateItem the item's
  size after the update, which the proxy reads back from the target with a consistent GetItem.
- Reads are charged for the items returned: a ProjectionExpression lowers the cost (the service charges the whole
  item) and ``Select=COUNT`` pages cost the minimum. We use neither.
- GSIs and LSIs share the table's buckets (no separate GSI capacity, no GSI back-pressure on table writes); GSI
  writes are not charged to any partition, LSI writes are charged to the item's partition.
- A Scan charges only the table bucket; a Query charges its key's partition too (not on a GSI).
- Partitions are fixed: no adaptive capacity, no split for heat, no growth with size. An item's partition is the
  md5 of its canonical partition-key value modulo the number of partitions.
- Not modelled (forwarded untouched): transactions, PartiQL, control-plane calls, account-level limits.
- On-demand tables: the caller passes ``read_units``/``write_units`` anyway (the rate to hold them to).

Run in-process: ``with CapacityProxy(moto_url) as proxy: proxy.watch("T", read_units=100, write_units=50)``, then
point boto3 at ``proxy.url``. As a separate process: ``python standins/capacity.py --target URL [--port P]``
prints its URL on the first line of stdout; steer it with :func:`control` (``POST /__capacity__`` JSON
``{"reset": true, "unwatch": "T", "watch": {"table": "T", "read_units": .., ...}, "watch_pending": {...}}``;
``GET /__capacity__`` for the watches and their totals, ``GET /__capacity__?table=T`` for the table's timeline).
Stdlib only.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import inspect
import json
import math
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from faultproxy import THROTTLE_MESSAGES, THROTTLE_TYPES, LoopbackServer, _error_body, _make_handler

CONTROL_PATH = "/__capacity__"
DYNAMODB_PREFIX = "DynamoDB_20120810."
STREAMS_PREFIX = "DynamoDBStreams_20120810."
THROTTLED = "ProvisionedThroughputExceededException"
STREAM_LIMIT = "LimitExceededException"
DEFAULT_REGION = "us-east-1"
SERIES = ("read", "write", "stream_reads", "throttled", "throttled_read", "throttled_write", "throttled_stream",
          "requests")
READ_OPS = ("Scan", "Query", "GetItem")
WRITE_OPS = ("PutItem", "UpdateItem", "DeleteItem")
BATCH_OPS = ("BatchWriteItem", "BatchGetItem")
# Shard iterators remembered for mapping GetRecords calls to tables: enough for any test run, bounded for long ones.
_MAX_ITERATORS = 100_000
# moto reads the region from the Authorization header's credential scope (.../<date>/<region>/...).
_REGION = re.compile(r"Credential=[^/,]+/\d{8}/([^/,]+)/")
_EQUALITY = re.compile(r"([#\w.-]+)\s*=\s*(:[\w-]+)")

# A forwarder: request body -> (status, answer body, answer headers), as the fault proxy's handler relays.
Forward = Callable[[bytes], Tuple[int, bytes, Sequence[Tuple[str, str]]]]


# -- sizes and units (pure) --------------------------------------------------------------------------------------

def value_size(value: Mapping[str, Any]) -> int:  # noqa: PLR0911 - one return per type tag
    """DynamoDB's size in bytes of one attribute value in DynamoDB JSON (``{"S": "abc"}``).

    S: UTF-8 bytes; B: decoded bytes (base64 in the JSON); N: (significant digits + 1) // 2 + 1, zero counting as
    one digit; BOOL and NULL: 1; SS/NS/BS: the sum of their members; L: 3 plus (1 + size) per element; M: 3 plus
    (1 + UTF-8 length of the name + size) per element.
    """
    (tag, val), = value.items()
    if tag == "S":
        return len(val.encode("utf-8"))
    if tag == "N":
        return _number_size(val)
    if tag == "B":
        return len(base64.b64decode(val))
    if tag in ("BOOL", "NULL"):
        return 1
    if tag == "SS":
        return sum(len(m.encode("utf-8")) for m in val)
    if tag == "NS":
        return sum(_number_size(m) for m in val)
    if tag == "BS":
        return sum(len(base64.b64decode(m)) for m in val)
    if tag == "L":
        return 3 + sum(1 + value_size(v) for v in val)
    if tag == "M":
        return 3 + sum(1 + len(k.encode("utf-8")) + value_size(v) for k, v in val.items())
    raise ValueError(f"unknown DynamoDB type tag {tag!r}")


def _number_size(text: str) -> int:
    digits = Decimal(text).normalize().as_tuple().digits  # significant digits only; zero is (0,)
    return (len(digits) + 1) // 2 + 1


def item_size(item: Mapping[str, Mapping[str, Any]]) -> int:
    """DynamoDB's size of an item: the UTF-8 length of every attribute name plus its value's size."""
    return sum(len(name.encode("utf-8")) + value_size(value) for name, value in item.items())


def read_cost(size: int, consistent: bool) -> float:
    """Read units for ``size`` bytes read at once (one item, or a Scan/Query page): per 4 KB step, at least one."""
    steps = max(1, math.ceil(size / 4096))
    return float(steps) if consistent else steps * 0.5


def write_cost(size: int) -> int:
    """Write units for one item of ``size`` bytes, per table or index it lands in: 1 per KB, at least 1."""
    return max(1, math.ceil(size / 1024))


def partition_of(key_value: Mapping[str, Any], partitions: int) -> int:
    """The partition (0-based) of a partition-key value: md5 of its canonical bytes, modulo ``partitions``.

    Canonical: S as UTF-8, N as its plain decimal text (so "1.50" and "1.5" agree), B as the decoded bytes."""
    (tag, val), = key_value.items()
    if tag == "S":
        raw = val.encode("utf-8")
    elif tag == "N":
        raw = format(Decimal(val).normalize(), "f").encode()
    elif tag == "B":
        raw = base64.b64decode(val)
    else:
        raise ValueError(f"a key value is S, N or B, not {tag}")
    return int(hashlib.md5(raw).hexdigest(), 16) % partitions


# -- windows (pure) ----------------------------------------------------------------------------------------------

def windows(per_second: Mapping[int, float], seconds: int = 10) -> List[float]:
    """Sums of every run of ``seconds`` consecutive seconds between the first and the last second in
    ``per_second`` (seconds missing from it count as 0). A span shorter than ``seconds`` is one window."""
    if not per_second:
        return []
    first, last = min(per_second), max(per_second)
    span = [float(per_second.get(s, 0.0)) for s in range(first, last + 1)]
    if len(span) <= seconds:
        return [sum(span)]
    return [sum(span[i:i + seconds]) for i in range(len(span) - seconds + 1)]


def summary(per_second: Mapping[int, float], budget: float, seconds: int = 10) -> Dict[str, float]:
    """How a per-second series sits against ``budget`` (units per second), for assertions and their messages.

    ``peak_rate``: the busiest window's sum divided by its width (``seconds``, or the whole span when shorter);
    ``mean_rate``: the total over the span from the first to the last active second; ``utilisation`` =
    mean_rate / budget; ``peak_ratio`` = peak_rate / budget.
    """
    sums = windows(per_second, seconds)
    if not sums:
        return {"span_s": 0, "total": 0.0, "peak_rate": 0.0, "mean_rate": 0.0, "utilisation": 0.0,
                "peak_ratio": 0.0}
    span = max(per_second) - min(per_second) + 1
    total = float(sum(per_second.values()))
    peak_rate = max(sums) / min(seconds, span)
    mean_rate = total / span
    return {"span_s": span, "total": total, "peak_rate": round(peak_rate, 3), "mean_rate": round(mean_rate, 3),
            "utilisation": round(mean_rate / budget, 3), "peak_ratio": round(peak_rate / budget, 3)}


# -- the model ---------------------------------------------------------------------------------------------------

class TokenBucket:
    """Units refilled at ``rate`` per second, holding at most ``rate * burst_seconds``; may go into debt.

    Not locked itself: the proxy's lock guards every bucket."""

    def __init__(self, rate: float, burst_seconds: float, initial_seconds: float, now: float) -> None:
        self.rate = rate
        self.capacity = rate * burst_seconds
        self.tokens = min(self.capacity, rate * initial_seconds)
        self.stamp = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def ready(self, now: float) -> bool:
        self._refill(now)
        return self.tokens > 0

    def charge(self, units: float, now: float) -> None:
        """Take ``units`` (a negative figure gives units back, when a reservation settles lower)."""
        self._refill(now)
        self.tokens -= units


@dataclass
class Cost:
    """Units one request (or one item of a batch) consumes: the table's own share and each index's."""

    table: float = 0.0
    gsi: Dict[str, float] = field(default_factory=dict)
    lsi: Dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.table + sum(self.gsi.values()) + sum(self.lsi.values())

    @property
    def local(self) -> float:
        """The share that lands in the item's own partition: the table's and its LSIs' (GSIs live elsewhere)."""
        return self.table + sum(self.lsi.values())

    def add(self, other: Cost) -> None:
        self.table += other.table
        for mine, theirs in ((self.gsi, other.gsi), (self.lsi, other.lsi)):
            for name, units in theirs.items():
                mine[name] = mine.get(name, 0.0) + units

    def consumed(self, table: str, indexes: bool) -> Dict[str, Any]:
        """The response's ``ConsumedCapacity`` entry, with the per-index breakdown when ``indexes``."""
        doc: Dict[str, Any] = {"TableName": table, "CapacityUnits": self.total}
        if indexes:
            doc["Table"] = {"CapacityUnits": self.table}
            if self.gsi:
                doc["GlobalSecondaryIndexes"] = {n: {"CapacityUnits": u} for n, u in self.gsi.items()}
            if self.lsi:
                doc["LocalSecondaryIndexes"] = {n: {"CapacityUnits": u} for n, u in self.lsi.items()}
        return doc


@dataclass
class Schema:
    """What the model needs from DescribeTable: the partition key and, per index, the attributes an item must
    have to land in it (a GSI's key attributes, an LSI's sort key)."""

    hash_key: str
    gsi: Dict[str, Tuple[str, ...]]
    lsi: Dict[str, Tuple[str, ...]]

    @classmethod
    def from_description(cls, table: Mapping[str, Any]) -> Schema:
        hash_key = next(k["AttributeName"] for k in table["KeySchema"] if k["KeyType"] == "HASH")
        gsi = {i["IndexName"]: tuple(k["AttributeName"] for k in i["KeySchema"])
               for i in table.get("GlobalSecondaryIndexes") or []}
        lsi = {i["IndexName"]: tuple(k["AttributeName"] for k in i["KeySchema"] if k["KeyType"] == "RANGE")
               for i in table.get("LocalSecondaryIndexes") or []}
        return cls(hash_key, gsi, lsi)

    def write_cost(self, item: Mapping[str, Any]) -> Cost:
        units = float(write_cost(item_size(item)))
        return Cost(table=units,
                    gsi={n: units for n, attrs in self.gsi.items() if all(a in item for a in attrs)},
                    lsi={n: units for n, attrs in self.lsi.items() if all(a in item for a in attrs)})

    def delete_cost(self) -> Cost:
        """1 unit for the table and each index: the old item's size and index membership are unknown."""
        return Cost(table=1.0, gsi=dict.fromkeys(self.gsi, 1.0), lsi=dict.fromkeys(self.lsi, 1.0))

    def read_cost(self, units: float, index: Optional[str]) -> Cost:
        if index in self.gsi:
            return Cost(gsi={index: units})
        if index in self.lsi:
            return Cost(lsi={index: units})
        return Cost(table=units)


class Watch:
    """One watched table: its limits, buckets and timeline. Guarded by the proxy's lock."""

    def __init__(self, table: str, region: str, schema: Schema, *, read_units: float, write_units: float,
                 partitions: Optional[int], partition_read_units: float, partition_write_units: float,
                 burst_seconds: float, initial_burst_seconds: float, stream_reads_per_shard: Optional[int]) -> None:
        if read_units < 0 or write_units < 0 or partition_read_units <= 0 or partition_write_units <= 0:
            raise ValueError("capacity rates must be positive (table rates may be 0)")
        if burst_seconds <= 0 or not 0 <= initial_burst_seconds <= burst_seconds:
            raise ValueError("burst_seconds must be > 0 and initial_burst_seconds within 0..burst_seconds")
        if partitions is None:
            partitions = max(1, math.ceil(read_units / partition_read_units),
                             math.ceil(write_units / partition_write_units))
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self.table = table
        self.region = region
        self.schema = schema
        self.settings = {"table": table, "region": region, "read_units": read_units, "write_units": write_units,
                         "partitions": partitions, "partition_read_units": partition_read_units,
                         "partition_write_units": partition_write_units, "burst_seconds": burst_seconds,
                         "initial_burst_seconds": initial_burst_seconds,
                         "stream_reads_per_shard": stream_reads_per_shard}
        self.partitions = partitions
        self.stream_reads_per_shard = stream_reads_per_shard
        now = time.monotonic()
        self.buckets = {"read": TokenBucket(read_units, burst_seconds, initial_burst_seconds, now),
                        "write": TokenBucket(write_units, burst_seconds, initial_burst_seconds, now)}
        # The per-partition limit is a per-second ceiling: a one-second bucket, starting no fuller than the table's.
        first = min(1.0, initial_burst_seconds)
        self.partition_buckets = {
            "read": [TokenBucket(partition_read_units, 1.0, first, now) for _ in range(partitions)],
            "write": [TokenBucket(partition_write_units, 1.0, first, now) for _ in range(partitions)]}
        self.series: Dict[str, Dict[int, float]] = {name: {} for name in SERIES}
        self.shard_calls: Dict[str, Tuple[int, int]] = {}  # shard id -> (second, GetRecords calls admitted in it)

    def partition(self, key_value: Optional[Mapping[str, Any]]) -> Optional[int]:
        return None if key_value is None else partition_of(key_value, self.partitions)

    def ready(self, kind: str, partition: Optional[int], now: float) -> bool:
        if not self.buckets[kind].ready(now):
            return False
        return partition is None or self.partition_buckets[kind][partition].ready(now)

    def charge(self, kind: str, cost: Cost, partition: Optional[int], now: float, sign: float = 1.0) -> None:
        self.buckets[kind].charge(sign * cost.total, now)
        if partition is not None:
            self.partition_buckets[kind][partition].charge(sign * cost.local, now)

    def record(self, name: str, amount: float) -> None:
        second = int(time.time())
        self.series[name][second] = self.series[name].get(second, 0) + amount

    def throttled(self, kind: str) -> None:
        self.record("throttled", 1)
        self.record("throttled_" + kind, 1)

    def timeline(self) -> Dict[str, Dict[int, float]]:
        return {name: dict(values) for name, values in self.series.items()}

    def totals(self) -> Dict[str, float]:
        return {name: sum(values.values()) for name, values in self.series.items()}


def _table_name(name: str) -> str:
    """A TableName may be a table ARN (``arn:aws:dynamodb:<region>:<account>:table/<name>``)."""
    return name.split(":table/", 1)[1].split("/", 1)[0] if name.startswith("arn:") else name


def _stream_table(stream_arn: str) -> Tuple[Optional[str], Optional[str]]:
    """(table, region) of a stream ARN ``arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<label>``."""
    match = re.match(r"arn:[^:]+:dynamodb:([^:]*):[^:]*:table/([^/]+)/stream/", stream_arn or "")
    return (match.group(2), match.group(1)) if match else (None, None)


def _query_key(doc: Mapping[str, Any], hash_key: str) -> Optional[Mapping[str, Any]]:
    """The partition-key value a Query names, from KeyConditionExpression (or the legacy KeyConditions)."""
    legacy = (doc.get("KeyConditions") or {}).get(hash_key)
    if legacy:
        return legacy["AttributeValueList"][0]
    names = doc.get("ExpressionAttributeNames") or {}
    values = doc.get("ExpressionAttributeValues") or {}
    for name, placeholder in _EQUALITY.findall(doc.get("KeyConditionExpression") or ""):
        if names.get(name, name) == hash_key:
            return values.get(placeholder)
    return None


def _throttle_reply() -> Tuple[int, bytes, Sequence[Tuple[str, str]]]:
    return 400, _error_body(THROTTLED, THROTTLE_MESSAGES[THROTTLED], THROTTLE_TYPES[THROTTLED]), []


def _with_body(headers: Sequence[Tuple[str, str]], doc: Any) -> Tuple[int, bytes, Sequence[Tuple[str, str]]]:
    # The handler's _reply recomputes Content-Length and x-amz-crc32 for the new body.
    return 200, json.dumps(doc).encode(), headers


class CapacityProxy(LoopbackServer):
    """The proxy server on 127.0.0.1 (a background thread). ``url`` is where clients should send requests."""

    thread_name = "capacity"

    def __init__(self, target_url: str, port: int = 0) -> None:
        self._forward_to(target_url)
        self._lock = threading.Lock()
        self._watches: Dict[str, Watch] = {}
        # Tables to watch once a data-plane request names them: name -> (region, watch's keywords, the settings).
        self._pending: Dict[str, Tuple[str, Dict[str, Any], Dict[str, Any]]] = {}
        self._activating = threading.Lock()  # one pending watch started at a time; held while it describes
        self._iterators: OrderedDict[str, Tuple[str, str, str]] = OrderedDict()  # iterator -> (table, shard, arn)
        self._server = _Server(("127.0.0.1", port), _make_capacity_handler(self))

    # -- control ---------------------------------------------------------------------------------------------

    def watch(self, table: str, *, read_units: float, write_units: float, partitions: Optional[int] = None,
              partition_read_units: float = 3000, partition_write_units: float = 1000, burst_seconds: float = 300,
              initial_burst_seconds: float = 0, stream_reads_per_shard: Optional[int] = None,
              region: str = DEFAULT_REGION) -> Dict[str, Any]:
        """Enforce ``table`` (in ``region``) at these per-second rates from now on, with an empty timeline.

        The key schema and indexes come from a DescribeTable sent to the target now (a missing table raises
        ValueError). Watching a watched table again starts it afresh. Returns the settings in force (with the
        partition count worked out)."""
        schema = Schema.from_description(self._describe(table, region))
        watch = Watch(table, region, schema, read_units=read_units, write_units=write_units, partitions=partitions,
                      partition_read_units=partition_read_units, partition_write_units=partition_write_units,
                      burst_seconds=burst_seconds, initial_burst_seconds=initial_burst_seconds,
                      stream_reads_per_shard=stream_reads_per_shard)
        with self._lock:
            self._watches[table] = watch
            self._pending.pop(table, None)
        return dict(watch.settings)

    def watch_pending(self, table: str, *, region: str = DEFAULT_REGION, **limits: Any) -> Dict[str, Any]:
        """Watch ``table`` (in ``region``), which need not exist yet, from the first data-plane request that names
        it (Scan, Query, GetItem, PutItem, UpdateItem, DeleteItem, BatchWriteItem, BatchGetItem; not CreateTable or
        DescribeTable): that request is the first one charged. ``limits`` are :meth:`watch`'s keywords, checked
        now (a wrong one raises TypeError or ValueError), except that ``initial_burst_seconds`` defaults to 1: the
        watch starts at the very moment of the first request, and buckets starting empty then would refuse most of
        it, where a new table takes its rate from its first second. Returns the settings that will be in force."""
        limits.setdefault("initial_burst_seconds", min(1.0, limits.get("burst_seconds", 300)))
        bound = inspect.signature(self.watch).bind(table, region=region, **limits)
        bound.apply_defaults()
        settings = dict(bound.arguments)
        del settings["table"], settings["region"]
        # A Watch on a stand-in schema checks the figures now, not inside the request that starts it.
        checked = Watch(table, region, Schema("", {}, {}), **settings).settings
        with self._lock:
            self._watches.pop(table, None)
            self._pending[table] = (region, settings, checked)
        return dict(checked)

    def unwatch(self, table: str) -> None:
        """Stop watching ``table`` (its timeline goes with it), or waiting for it; its requests pass untouched."""
        with self._lock:
            self._watches.pop(table, None)
            self._pending.pop(table, None)

    def reset(self) -> None:
        """No watches, pending or not, no timelines: a plain forwarder again."""
        with self._lock:
            self._watches.clear()
            self._pending.clear()
            self._iterators.clear()

    def timeline(self, table: str) -> Dict[str, Dict[int, float]]:
        """``{series: {second: amount}}`` for a watched table; series: read, write (units), stream_reads
        (GetRecords calls), throttled, throttled_read, throttled_write, throttled_stream, requests (counts)."""
        with self._lock:
            watch = self._watches.get(table)
            if watch is None and table in self._pending:
                raise KeyError(f"table {table!r} is not watched yet: no data-plane request has named it")
            if watch is None:
                raise KeyError(f"table {table!r} is not watched")
            return watch.timeline()

    def counters(self) -> Dict[str, Any]:
        """``{table: {"settings": {...}, "totals": {series: sum}, "pending": bool}}`` for every watched table and
        every pending one (the settings it will start with, its totals zero)."""
        with self._lock:
            answer = {table: {"settings": dict(w.settings), "totals": w.totals(), "pending": False}
                      for table, w in self._watches.items()}
            for table, (_, _, settings) in self._pending.items():
                answer[table] = {"settings": dict(settings), "totals": dict.fromkeys(SERIES, 0), "pending": True}
            return answer

    def _control(self, method: str, query: str, body: bytes) -> Any:
        if method == "POST":
            doc = json.loads(body or b"{}")
            if doc.get("reset"):
                self.reset()
            if doc.get("unwatch"):
                self.unwatch(doc["unwatch"])
            if doc.get("watch"):
                self.watch(**doc["watch"])
            if doc.get("watch_pending"):
                self.watch_pending(**doc["watch_pending"])
        table = urllib.parse.parse_qs(query).get("table")
        if method == "GET" and table:
            return self.timeline(table[0])
        return self.counters()

    def _describe(self, table: str, region: str) -> Dict[str, Any]:
        status, answer = self._call_target("DescribeTable", {"TableName": table}, region)
        if status != 200:
            raise ValueError(f"DescribeTable {table} in {region} answered {status}: {answer.get('message', answer)}")
        return answer["Table"]

    def _call_target(self, op: str, doc: Dict[str, Any], region: str) -> Tuple[int, Dict[str, Any]]:
        """The proxy's own request to the target. moto and dynalite check no signature; moto takes the region
        from the credential scope, so the Authorization header has SigV4's shape and a dummy signature."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        headers = {
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": DYNAMODB_PREFIX + op,
            "X-Amz-Date": stamp,
            "Authorization": (f"AWS4-HMAC-SHA256 Credential=capacityproxy/{stamp[:8]}/{region}/dynamodb/aws4_request, "
                              f"SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={'0' * 64}"),
        }
        conn = http.client.HTTPConnection(self.target_host, self.target_port, timeout=60)
        try:
            conn.request("POST", "/", body=json.dumps(doc).encode(), headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            conn.close()

    # -- requests --------------------------------------------------------------------------------------------

    def _watched(self, table: str, region: Optional[str]) -> Optional[Watch]:
        """The watch on ``table`` if the request is for the watched table's region (or names none)."""
        watch = self._watches.get(_table_name(table))
        if watch is None or (region is not None and region != watch.region):
            return None
        return watch

    def _route(self, target: str, body: bytes, region: Optional[str], forward: Forward) -> Tuple[int, bytes, Any]:
        # Nothing watched: not even the body is parsed (a dict's truth value is safe to read without the lock).
        doc = self._parse(body) if self._watches or self._pending else None
        op = target.rsplit(".", 1)[-1]
        if doc is None:
            return forward(body)
        if self._pending and target.startswith(DYNAMODB_PREFIX) and op in READ_OPS + WRITE_OPS + BATCH_OPS:
            named = (doc.get("RequestItems") or {}) if op in BATCH_OPS else [doc.get("TableName") or ""]
            self._start_pending([_table_name(name) for name in named], region)
        if target.startswith(STREAMS_PREFIX):
            return self._stream(op, doc, body, forward)
        if target.startswith(DYNAMODB_PREFIX):
            if op == "BatchWriteItem":
                return self._batch_write(doc, body, region, forward)
            if op == "BatchGetItem":
                return self._batch_get(doc, body, region, forward)
            with self._lock:
                watch = self._watched(doc.get("TableName") or "", region) if op in READ_OPS + WRITE_OPS else None
            if watch is not None:
                return self._single(op, doc, body, watch=watch, region=region or watch.region, forward=forward)
        return forward(body)

    def _start_pending(self, names: Sequence[str], region: Optional[str]) -> None:
        """Start the pending watches on ``names`` (for the request's region). Requests that name a table being
        started wait for it, so none passes uncharged; a table the target does not know stays pending (the request
        goes on, and the target answers it)."""
        if not any(name in self._pending for name in names):
            return
        with self._activating:
            for name in names:
                with self._lock:
                    pending = self._pending.get(name)
                if pending is None or (region is not None and region != pending[0]):
                    continue
                try:
                    self.watch(name, region=pending[0], **pending[1])
                except ValueError:
                    pass  # not there yet: DescribeTable failed, so this request fails too; the next one tries again

    @staticmethod
    def _parse(body: bytes) -> Optional[Dict[str, Any]]:
        """The request's JSON object, or None for anything else (the target will answer it as it sees fit)."""
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    def _single(self, op: str, doc: Dict[str, Any], body: bytes, *, watch: Watch, region: str,
                forward: Forward) -> Tuple[int, bytes, Any]:
        """Scan, Query, GetItem, PutItem, UpdateItem, DeleteItem on a watched table: admit, forward, settle."""
        schema = watch.schema
        kind = "write" if op in WRITE_OPS else "read"
        consistent = bool(doc.get("ConsistentRead"))
        if op == "PutItem":
            item = doc.get("Item") or {}
            key, reserved = item.get(schema.hash_key), schema.write_cost(item)
        elif kind == "write":
            key, reserved = doc.get("Key", {}).get(schema.hash_key), Cost(table=1.0)  # settled once the size is known
        elif op == "Query":
            index = doc.get("IndexName")
            key = None if index in schema.gsi else _query_key(doc, schema.hash_key)
            reserved = schema.read_cost(read_cost(0, consistent), index)
        elif op == "GetItem":
            key, reserved = doc.get("Key", {}).get(schema.hash_key), Cost(table=read_cost(0, consistent))
        else:  # Scan
            key, reserved = None, schema.read_cost(read_cost(0, consistent), doc.get("IndexName"))
        with self._lock:
            partition = watch.partition(key)
            now = time.monotonic()
            watch.record("requests", 1)
            if not watch.ready(kind, partition, now):
                watch.throttled(kind)
                return _throttle_reply()
            watch.charge(kind, reserved, partition, now)
        status, answer, headers = forward(body)
        result = json.loads(answer or b"{}") if answer else {}
        cost = self._actual(op, doc, status=status, result=result, reserved=reserved, watch=watch, region=region)
        with self._lock:
            now = time.monotonic()
            watch.charge(kind, reserved, partition, now, sign=-1.0)
            watch.charge(kind, cost, partition, now)
            watch.record(kind, cost.total)
        if status == 200 and doc.get("ReturnConsumedCapacity") in ("TOTAL", "INDEXES"):
            result["ConsumedCapacity"] = cost.consumed(watch.table, doc["ReturnConsumedCapacity"] == "INDEXES")
            return _with_body(headers, result)
        return status, answer, headers

    def _actual(self, op: str, doc: Dict[str, Any], *, status: int, result: Dict[str, Any], reserved: Cost,
                watch: Watch, region: str) -> Cost:
        """What a single-item or single-page request really consumed, from its answer."""
        schema = watch.schema
        consistent = bool(doc.get("ConsistentRead"))
        if status != 200:
            failed_condition = str(result.get("__type", "")).endswith("ConditionalCheckFailedException")
            # A failed condition still costs the table (not the indexes: nothing was written); errors cost nothing.
            return Cost(table=reserved.table) if failed_condition else Cost()
        if op in ("Scan", "Query"):
            size = sum(item_size(item) for item in result.get("Items") or [])
            return schema.read_cost(read_cost(size, consistent), doc.get("IndexName"))
        if op == "GetItem":
            return Cost(table=read_cost(item_size(result.get("Item") or {}), consistent))
        if op == "PutItem":
            return reserved
        if op == "DeleteItem":
            old = result.get("Attributes")  # present with ReturnValues=ALL_OLD: then the size is known
            return schema.write_cost(old) if old else schema.delete_cost()
        # UpdateItem: the item as it is now, read back from the target (not counted against the watch).
        got_status, got = self._call_target("GetItem", {"TableName": watch.table, "Key": doc.get("Key"),
                                                        "ConsistentRead": True}, region)
        return schema.write_cost(got.get("Item") or {}) if got_status == 200 else reserved

    def _batch_write(self, doc: Dict[str, Any], body: bytes, region: Optional[str],
                     forward: Forward) -> Tuple[int, bytes, Any]:
        """Admit a BatchWriteItem item by item; forward the admitted ones, defer the rest as UnprocessedItems."""
        kept: Dict[str, List[Any]] = {}
        deferred: Dict[str, List[Any]] = {}
        charged: Dict[str, List[Tuple[Any, Cost, Optional[int]]]] = {}  # per watched table: (request, cost, partition)
        with self._lock:
            now = time.monotonic()
            watches = {t: w for t in doc.get("RequestItems", {}) if (w := self._watched(t, region)) is not None}
            if not watches:
                return forward(body)
            for table, requests in doc["RequestItems"].items():
                watch = watches.get(table)
                if watch is None:
                    kept[table] = requests
                    continue
                watch.record("requests", 1)
                charged[table] = []
                for request in requests:
                    if "PutRequest" in request:
                        item = request["PutRequest"]["Item"]
                        cost, key = watch.schema.write_cost(item), item.get(watch.schema.hash_key)
                    else:
                        cost = watch.schema.delete_cost()
                        key = request["DeleteRequest"]["Key"].get(watch.schema.hash_key)
                    partition = watch.partition(key)
                    if watch.ready("write", partition, now):
                        watch.charge("write", cost, partition, now)
                        kept.setdefault(table, []).append(request)
                        charged[table].append((request, cost, partition))
                    else:
                        deferred.setdefault(table, []).append(request)
                if table in deferred:
                    watch.throttled("write")
        if not kept:
            return _throttle_reply()  # nothing admitted: the service throttles the whole call
        if deferred:
            body = json.dumps({**doc, "RequestItems": kept}).encode()
        status, answer, headers = forward(body)
        result = json.loads(answer or b"{}") if status == 200 else {}
        unprocessed = result.get("UnprocessedItems") or {}
        consumed = {table: Cost() for table in watches}
        with self._lock:
            now = time.monotonic()
            for table, entries in charged.items():
                watch = watches[table]
                returned = unprocessed.get(table) or []
                for request, cost, partition in entries:
                    if status != 200 or request in returned:  # not written: give its units back
                        watch.charge("write", cost, partition, now, sign=-1.0)
                    else:
                        consumed[table].add(cost)
                watch.record("write", consumed[table].total)
        if status != 200:
            return status, answer, headers
        for table, requests in deferred.items():
            unprocessed.setdefault(table, []).extend(requests)
        result["UnprocessedItems"] = unprocessed
        return self._batch_answer(doc, result, headers, watches, consumed)

    def _batch_get(self, doc: Dict[str, Any], body: bytes, region: Optional[str],
                   forward: Forward) -> Tuple[int, bytes, Any]:
        """Admit a BatchGetItem key by key (each reserving one 4 KB step); defer the rest as UnprocessedKeys."""
        kept: Dict[str, Dict[str, Any]] = {}
        deferred: Dict[str, Dict[str, Any]] = {}
        with self._lock:
            now = time.monotonic()
            watches = {t: w for t in doc.get("RequestItems", {}) if (w := self._watched(t, region)) is not None}
            if not watches:
                return forward(body)
            for table, request in doc["RequestItems"].items():
                watch = watches.get(table)
                if watch is None:
                    kept[table] = request
                    continue
                watch.record("requests", 1)
                step = Cost(table=read_cost(0, bool(request.get("ConsistentRead"))))
                admitted, refused = [], []
                for key in request["Keys"]:
                    partition = watch.partition(key.get(watch.schema.hash_key))
                    if watch.ready("read", partition, now):
                        watch.charge("read", step, partition, now)
                        admitted.append(key)
                    else:
                        refused.append(key)
                if admitted:
                    kept[table] = {**request, "Keys": admitted}
                if refused:
                    deferred[table] = {**request, "Keys": refused}
                    watch.throttled("read")
        if not kept:
            return _throttle_reply()
        if deferred:
            body = json.dumps({**doc, "RequestItems": kept}).encode()
        status, answer, headers = forward(body)
        result = json.loads(answer or b"{}") if status == 200 else {}
        unprocessed = result.get("UnprocessedKeys") or {}
        consumed = {table: Cost() for table in watches}
        with self._lock:
            now = time.monotonic()
            for table, watch in watches.items():
                request = kept.get(table)
                if request is None:
                    continue
                consistent = bool(request.get("ConsistentRead"))
                step = Cost(table=read_cost(0, consistent))
                returned = (unprocessed.get(table) or {}).get("Keys") or []
                for key in request["Keys"]:
                    if status != 200 or key in returned:  # not read: its reserved step goes back
                        watch.charge("read", step, watch.partition(key.get(watch.schema.hash_key)), now, sign=-1.0)
                    else:
                        consumed[table].add(step)  # found or not, a key costs at least one step
                for item in (result.get("Responses") or {}).get(table) or []:
                    extra = Cost(table=read_cost(item_size(item), consistent) - step.table)
                    watch.charge("read", extra, watch.partition(item.get(watch.schema.hash_key)), now)
                    consumed[table].add(extra)
                watch.record("read", consumed[table].total)
        if status != 200:
            return status, answer, headers
        for table, request in deferred.items():
            unprocessed.setdefault(table, {**request, "Keys": []})["Keys"].extend(request["Keys"])
        result["UnprocessedKeys"] = unprocessed
        return self._batch_answer(doc, result, headers, watches, consumed)

    @staticmethod
    def _batch_answer(doc: Dict[str, Any], result: Dict[str, Any], headers: Any, watches: Dict[str, Watch],
                      consumed: Dict[str, Cost]) -> Tuple[int, bytes, Any]:
        """The batch answer, its ConsumedCapacity list computed for watched tables when asked (the target's
        entries kept for the others)."""
        mode = doc.get("ReturnConsumedCapacity")
        if mode in ("TOTAL", "INDEXES"):
            others = [c for c in result.get("ConsumedCapacity") or [] if c.get("TableName") not in watches]
            result["ConsumedCapacity"] = others + [cost.consumed(watches[t].table, mode == "INDEXES")
                                                   for t, cost in consumed.items()]
        return _with_body(headers, result)

    def _stream(self, op: str, doc: Dict[str, Any], body: bytes, forward: Forward) -> Tuple[int, bytes, Any]:
        """DynamoDB Streams: trace shard iterators to tables; count, and limit, GetRecords per shard per second."""
        if op == "GetShardIterator":
            table, stream_region = _stream_table(doc.get("StreamArn", ""))
            with self._lock:
                watch = self._watched(table, stream_region) if table else None
            status, answer, headers = forward(body)
            if watch is not None and status == 200:
                iterator = json.loads(answer).get("ShardIterator")
                if iterator:
                    self._remember(iterator, (watch.table, doc.get("ShardId", ""), doc["StreamArn"]))
            return status, answer, headers
        if op != "GetRecords":
            return forward(body)
        with self._lock:
            traced = self._iterators.get(doc.get("ShardIterator", ""))
            watch = self._watches.get(traced[0]) if traced else None
            if watch is None:
                return forward(body)
            table, shard, arn = traced
            second = int(time.time())
            watch.record("requests", 1)
            last, calls = watch.shard_calls.get(shard, (second, 0))
            calls = calls if last == second else 0
            limit = watch.stream_reads_per_shard
            if limit is not None and calls >= limit:
                watch.throttled("stream")
                return 400, _error_body(STREAM_LIMIT, f"Rate exceeded for shard {shard} in stream {arn}"), []
            watch.shard_calls[shard] = (second, calls + 1)
            watch.record("stream_reads", 1)
        status, answer, headers = forward(body)
        if status == 200:
            following = json.loads(answer).get("NextShardIterator")
            if following:
                self._remember(following, traced)
        return status, answer, headers

    def _remember(self, iterator: str, traced: Tuple[str, str, str]) -> None:
        with self._lock:
            self._iterators[iterator] = traced
            while len(self._iterators) > _MAX_ITERATORS:
                self._iterators.popitem(last=False)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops connections when many clients open them at once


def _region_of(headers: Any) -> Optional[str]:
    match = _REGION.search(headers.get("Authorization") or "")
    return match.group(1) if match else None


def _make_capacity_handler(proxy: CapacityProxy) -> type:
    # The fault proxy's handler brings body reading, forwarding and replying (with Content-Length and x-amz-crc32
    # recomputed); only the decision differs.
    class Handler(_make_handler(proxy)):  # type: ignore[misc]
        # Headers and body go out in two writes: with Nagle's algorithm on, the body waits for the client's
        # delayed ACK of the headers, about 40 ms per request.
        disable_nagle_algorithm = True

        def _handle(self) -> None:
            body = self._body()
            path, _, query = self.path.partition("?")
            if path == CONTROL_PATH:
                try:
                    status, answer = 200, proxy._control(self.command, query, body)
                except (KeyError, ValueError, TypeError) as exc:
                    status, answer = 400, {"error": str(exc.args[0] if exc.args else exc)}
                self._reply(status, json.dumps(answer).encode(), [("Content-Type", "application/json")])
                return
            target = self.headers.get("X-Amz-Target") or ""
            self._reply(*proxy._route(target, body, _region_of(self.headers), self._relay))

    return Handler


def control(proxy_url: str, *, watch: Optional[Dict[str, Any]] = None, unwatch: Optional[str] = None,
            reset: bool = False, table: Optional[str] = None,
            watch_pending: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Steer a capacity proxy in another process, then read it.

    ``reset`` drops every watch, ``unwatch`` one table's, ``watch`` (``{"table": .., "read_units": ..,
    ...}``, the arguments of :meth:`CapacityProxy.watch`) starts one, ``watch_pending`` (the same keys) waits for
    a table's first data-plane request (:meth:`CapacityProxy.watch_pending`), in that order. Returns the counters
    (:meth:`CapacityProxy.counters`), or with ``table`` that table's timeline with integer seconds. A refused
    request raises ValueError with the proxy's reason."""
    doc: Dict[str, Any] = {}
    if reset:
        doc["reset"] = True
    if unwatch:
        doc["unwatch"] = unwatch
    if watch:
        doc["watch"] = watch
    if watch_pending:
        doc["watch_pending"] = watch_pending
    if doc:
        _fetch(urllib.request.Request(proxy_url + CONTROL_PATH, data=json.dumps(doc).encode(), method="POST",
                                      headers={"Content-Type": "application/json"}))
    query = "?" + urllib.parse.urlencode({"table": table}) if table else ""
    answer = _fetch(urllib.request.Request(proxy_url + CONTROL_PATH + query))
    if table:
        return {name: {int(s): v for s, v in values.items()} for name, values in answer.items()}
    return answer


def _fetch(request: urllib.request.Request) -> Any:
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise ValueError(json.loads(exc.read() or b"{}").get("error", str(exc))) from None


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Capacity-model proxy in front of a DynamoDB endpoint.")
    parser.add_argument("--target", required=True, help="the real endpoint, e.g. http://127.0.0.1:5000")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0 = any free port)")
    args = parser.parse_args(argv)
    proxy = CapacityProxy(args.target, port=args.port)
    print(proxy.url, flush=True)
    try:
        proxy._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        proxy._server.server_close()


if __name__ == "__main__":
    main()

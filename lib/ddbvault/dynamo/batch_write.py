"""BatchWriteItem puts (and deletes) with pacing, retries, and no item ever silently dropped.

Runs inside Spark executors: no Spark here. ``UnprocessedItems`` comes back in a 200 response, so no SDK
retry covers it: we re-send those items ourselves with backoff and slow the shared pace, and raise
:class:`UnprocessedItemsError` (naming the keys) rather than drop anything.
"""
from __future__ import annotations

import functools
import logging
import math
import queue
import threading
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Dict, Hashable, Iterable, Iterator, List, Optional, Sequence, Tuple

from ddbvault import aws, codec
from ddbvault.dynamo import retry, wire
from ddbvault.dynamo.pacing import RateLimiter
from ddbvault.errors import TableError, UnprocessedItemsError

log = logging.getLogger(__name__)

MAX_BATCH_ITEMS = 25
MAX_BATCH_BYTES = 16 * 1024 * 1024
WRITE_ADVICE = ("lower --max-write-units or raise the table's write capacity, or raise --max-throttle-minutes "
                "(throttling) or --max-retries (server errors)")
_POLL_S = 0.1
_KEYS_SHOWN = 5

Key = Tuple[Hashable, ...]


@dataclass
class WriteStats:
    """What a write did: items written, WCU consumed (as reported, else estimated), calls, and retries
    (``retries``: calls repeated after an error such as a throttle; ``unprocessed_retries``: calls that
    re-sent items DynamoDB returned as unprocessed)."""

    items: int = 0
    wcu: float = 0.0
    batches: int = 0
    retries: int = 0
    unprocessed_retries: int = 0

    def add(self, other: WriteStats) -> None:
        self.items += other.items
        self.wcu += other.wcu
        self.batches += other.batches
        self.retries += other.retries
        self.unprocessed_retries += other.unprocessed_retries


@dataclass
class _Record:
    key: Key
    item: Any   # the item to put, or the key to delete: a low-level dict, or a wire.WireItem (its text)
    size: int
    delete: bool = False

    def request(self) -> Dict[str, Any]:
        item = codec.decode_item(self.item.text) if isinstance(self.item, wire.WireItem) else self.item
        return {"DeleteRequest": {"Key": item}} if self.delete else {"PutRequest": {"Item": item}}


def item_wcu(size: int) -> int:
    """WCU of one put: 1 per KB, rounded up (at least 1)."""
    return max(1, math.ceil(size / 1024))


def key_of(item: Dict[str, Any], key_names: Sequence[str], table: str) -> Key:
    """The item's primary key as a hashable tuple; numbers compare by value ("1.5" is "1.50"). A
    ``wire.WireItem`` carries its key already."""
    if isinstance(item, wire.WireItem):
        return item.key
    parts: List[Hashable] = []
    for name in key_names:
        value = item.get(name)
        if not isinstance(value, dict) or len(value) != 1:
            raise TableError(f"an item for table {table} lacks key attribute {name!r} "
                             f"(key attributes {list(key_names)}): check the vault matches the table's key schema")
        (tag, raw), = value.items()
        if tag == "N":
            try:
                raw = Decimal(raw)
            except InvalidOperation as exc:
                raise TableError(f"an item for table {table} has key attribute {name!r} = {raw!r}, "
                                 "not a number") from exc
        elif tag == "B" and isinstance(raw, bytearray):
            raw = bytes(raw)
        parts.append((tag, raw))
    return tuple(parts)


def describe_key(key: Key, key_names: Sequence[str]) -> str:
    """``{pk=S:"a", sk=N:5}`` for error messages."""
    shown = []
    for name, (tag, raw) in zip(key_names, key):
        shown.append(f"{name}={tag}:{raw!r}" if tag != "N" else f"{name}=N:{raw}")
    return "{" + ", ".join(shown) + "}"


def batches(records: Iterable[tuple], key_names: Sequence[str], table: str, *,
            call_units: Optional[Callable[[], Optional[float]]] = None,
            wcu_multiplier: float = 1.0) -> Iterator[List[_Record]]:
    """Group records into BatchWriteItem calls: <= 25 requests, <= 16 MB, no key twice in one call, and, with
    ``call_units`` (the limiter's ``call_units``), no more estimated WCU than one call should cost now (at
    least one item), so a small budget gets small, evenly spaced calls instead of 25-item bursts.

    A record is ``(item, size)`` for a put, or ``(key, size, True)`` for a delete of that key (``size`` then
    estimates the deleted item's size, which is what the delete costs). ``item`` may be a ``wire.WireItem`` (the
    item's or key's text, sent as it is; its ``delete`` says which).

    A key already in the current batch closes it and starts the next one, so the later put lands after
    the earlier one (later wins) and DynamoDB never sees duplicate keys in a call (it rejects the whole call).
    """
    current: List[_Record] = []
    keys: set = set()
    size = 0
    units = 0.0
    cap = call_units() if call_units is not None else None
    for entry in records:
        item, item_size = entry[0], entry[1]
        delete = (len(entry) > 2 and bool(entry[2])) or (isinstance(item, wire.WireItem) and item.delete)
        record = _Record(key_of(item, key_names, table), item, int(item_size), delete)
        cost = item_wcu(record.size) * wcu_multiplier
        if current and (record.key in keys or len(current) >= MAX_BATCH_ITEMS
                        or size + record.size > MAX_BATCH_BYTES or (cap is not None and units + cost > cap)):
            yield current
            current, keys, size, units = [], set(), 0, 0.0
            cap = call_units() if call_units is not None else None
        current.append(record)
        keys.add(record.key)
        size += record.size
        units += cost
    if current:
        yield current


class _Cancelled(Exception):
    """Internal: another writer thread failed; stop."""


class _Writer:
    """Sends batches for one thread; keeps its own stats (merged by the caller)."""

    def __init__(self, table: str, *, key_names: Sequence[str], region: Optional[str],
                 limiter: Optional[RateLimiter], policy: retry.RetryPolicy, wcu_multiplier: float,
                 cancel: Optional[threading.Event] = None) -> None:
        self.table = table
        self.key_names = key_names
        self.client = aws.client("dynamodb", region, data_plane=True, events=wire.EVENTS)
        self.sender = wire.Sender.of(self.client, aws.credentials())
        self.limiter = limiter
        self.policy = policy
        self.multiplier = wcu_multiplier
        self.cancel = cancel
        self.stats = WriteStats()
        self.what = f"BatchWriteItem to table {table}"

    def _estimate(self, records: Sequence[_Record]) -> float:
        return sum(item_wcu(r.size) for r in records) * self.multiplier

    def _consumed(self, response: Dict[str, Any]) -> Optional[float]:
        found = None
        for capacity in response.get("ConsumedCapacity") or []:
            if capacity.get("TableName") == self.table and capacity.get("CapacityUnits") is not None:
                found = (found or 0.0) + float(capacity["CapacityUnits"])
        return found

    def send(self, batch: List[_Record]) -> None:
        pending = batch
        stalled = 0      # consecutive calls that wrote nothing
        stalled_s = 0.0  # the backoff slept over them: deferred items are throttling, budgeted by time
        while True:
            if self.cancel is not None and self.cancel.is_set():
                raise _Cancelled()
            estimate = self._estimate(pending)
            if self.limiter is not None and not self.limiter.acquire(estimate, cancel=self.cancel):
                self.limiter.settle(estimate, 0.0)  # reserved, never spent: not part of what the table was charged
                raise _Cancelled()
            try:
                calls, response = self._call(pending)
            except BaseException:
                if self.limiter is not None:
                    self.limiter.settle(estimate, 0.0)  # nothing was written by the call that failed
                raise
            self.stats.batches += 1
            self.stats.retries += calls - 1
            left = self._unprocessed(response, pending)
            consumed = self._consumed(response)
            if consumed is None:  # no ConsumedCapacity (a stand-in): what the processed items should cost
                consumed = estimate - self._estimate(left)
            if self.limiter is not None:
                self.limiter.settle(estimate, consumed)
            self.stats.wcu += consumed
            self.stats.items += len(pending) - len(left)
            if not left:
                return
            # DynamoDB accepted the call but deferred some puts. When nothing got through, the table (or a GSI) is
            # over its capacity: the job's one rate comes down. When some did, one partition is hot (a key with
            # many items): its items are retried with backoff, and the other partitions keep the budget's pace.
            if self.limiter is not None and len(left) == len(pending):
                self.limiter.throttled()
            # Backoff grows while nothing gets through; a call that made progress resets it (the limiter,
            # told above, still keeps the pace down). Only calls that wrote nothing count towards giving up.
            if len(left) == len(pending):
                stalled += 1
            else:
                stalled, stalled_s = 0, 0.0
            if stalled and stalled_s >= self.policy.throttle_s:
                raise self._exhausted(left, stalled, stalled_s)
            self.stats.unprocessed_retries += 1
            delay = self.policy.delay(stalled)
            if stalled:
                stalled_s += delay
            self.policy.sleep(delay)
            pending = left

    def _call(self, pending: List[_Record]) -> Tuple[int, Dict[str, Any]]:
        """One BatchWriteItem through ``retry.call``; returns (attempts made, response). A batch of wire items
        only is sent as their text (``wire``: by the writer's ``Sender``, or through the client when it lends
        none); any other through botocore's serialiser."""
        send: Callable[[], Dict[str, Any]]
        if all(isinstance(r.item, wire.WireItem) for r in pending):
            body = wire.request_body(self.table, [r.item for r in pending])
            if self.sender is not None:
                send = functools.partial(self.sender.batch_write_item, body)
            else:
                send = functools.partial(self.client.batch_write_item, RequestItems=wire.WireBody(self.table, body),
                                         ReturnConsumedCapacity="TOTAL")
        else:
            send = functools.partial(self.client.batch_write_item,
                                     RequestItems={self.table: [r.request() for r in pending]},
                                     ReturnConsumedCapacity="TOTAL")
        calls = 0

        def put_batch() -> Dict[str, Any]:
            nonlocal calls
            calls += 1
            return send()

        response = retry.call(put_batch, policy=self.policy, what=self.what, limiter=self.limiter,
                              advice=WRITE_ADVICE)
        return calls, response

    def _unprocessed(self, response: Dict[str, Any], pending: List[_Record]) -> List[_Record]:
        returned = (response.get("UnprocessedItems") or {}).get(self.table) or []
        if not returned:
            return []
        by_key = {r.key: r for r in pending}
        left = []
        for request in returned:
            delete = "DeleteRequest" in request
            item = request["DeleteRequest"]["Key"] if delete else request.get("PutRequest", {}).get("Item")
            if item is None:
                continue
            key = key_of(item, self.key_names, self.table)
            # Re-send our own copy (same content, our size); an unknown key (should not happen) as returned.
            left.append(by_key.get(key) or _Record(key, item, max(r.size for r in pending), delete))
        return left

    def _exhausted(self, left: List[_Record], attempts: int, waited_s: float) -> UnprocessedItemsError:
        keys = ", ".join(describe_key(r.key, self.key_names) for r in left[:_KEYS_SHOWN])
        more = f" and {len(left) - _KEYS_SHOWN} more" if len(left) > _KEYS_SHOWN else ""
        error = UnprocessedItemsError(
            f"{self.what}: {len(left)} items did not finish: DynamoDB returned them as UnprocessedItems on "
            f"{attempts} calls in a row over {waited_s:.0f}s of backoff (keys {keys}{more}); this writer had "
            f"written {self.stats.items} items "
            f"before, later items were not attempted. The table or one of its indexes is over its "
            f"write capacity: {WRITE_ADVICE}. Puts are idempotent: rerunning the restore is safe.")
        error.unprocessed_keys = [r.key for r in left]  # type: ignore[attr-defined]
        error.stats = self.stats  # type: ignore[attr-defined]
        return error


def write_items(
    table: str,
    records: Iterable[Tuple[Dict[str, Any], int]],
    *,
    key_names: Sequence[str],
    region: Optional[str] = None,
    limiter: Optional[RateLimiter] = None,
    policy: Optional[retry.RetryPolicy] = None,
    wcu_multiplier: float = 1.0,
    threads: int = 1,
    queue_items: int = 4 * MAX_BATCH_ITEMS,
) -> WriteStats:
    """Put every ``(item, size_bytes)`` of ``records`` into ``table`` (and delete the key of every
    ``(key, size_bytes, True)``); returns what it took.

    ``key_names`` are the table's key attributes (hash, then range). ``size_bytes`` is DynamoDB's item size;
    each put is estimated at ``ceil(size / 1 KB) * wcu_multiplier`` WCU before the call (the multiplier counts
    the GSIs an item lands in) and settled with the ConsumedCapacity DynamoDB reports. Within one key, later
    records win. With ``threads > 1`` records are spread over threads by key hash, so one key is always
    written by one thread in input order; at most ``queue_items`` records wait per thread.

    Items DynamoDB returns as unprocessed are re-sent with backoff (full jitter) and slow the limiter; a
    call that wrote some of them resets the backoff. Raises ``UnprocessedItemsError`` once calls that wrote
    none of a batch's remaining items have kept it waiting ``policy.throttle_s`` seconds in a row,
    ``CapacityError`` when it keeps throttling or failing, and lets other errors (validation, missing table)
    through unchanged.
    """
    policy = policy or retry.RetryPolicy()
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    if threads == 1:
        writer = _Writer(table, key_names=key_names, region=region, limiter=limiter, policy=policy,
                         wcu_multiplier=wcu_multiplier)
        for batch in batches(records, key_names, table, call_units=_call_units(limiter),
                             wcu_multiplier=wcu_multiplier):
            writer.send(batch)
        return writer.stats
    return _write_threaded(table, records, threads=threads, queue_items=queue_items, key_names=key_names,
                           region=region, limiter=limiter, policy=policy, wcu_multiplier=wcu_multiplier)


_END = object()


def _call_units(limiter: Any) -> Optional[Callable[[], Optional[float]]]:
    return None if limiter is None else limiter.call_units


def _write_threaded(table: str, records: Iterable[Tuple[Dict[str, Any], int]], *, threads: int,
                    queue_items: int, **writer_args: Any) -> WriteStats:
    key_names = writer_args["key_names"]
    stop = threading.Event()
    inboxes: List[queue.Queue[Any]] = [queue.Queue(maxsize=max(1, queue_items)) for _ in range(threads)]
    totals = WriteStats()
    errors: List[BaseException] = []
    lock = threading.Lock()

    def incoming(inbox: queue.Queue[Any]) -> Iterator[Tuple[Dict[str, Any], int]]:
        while True:
            try:
                entry = inbox.get(timeout=_POLL_S)
            except queue.Empty:
                if stop.is_set():
                    raise _Cancelled() from None
                continue
            if entry is _END:
                return
            yield entry

    def work(inbox: queue.Queue[Any]) -> None:
        writer = None
        try:
            writer = _Writer(table, cancel=stop, **writer_args)
            for batch in batches(incoming(inbox), key_names, table, call_units=_call_units(writer_args["limiter"]),
                                 wcu_multiplier=writer_args["wcu_multiplier"]):
                writer.send(batch)
        except _Cancelled:
            pass
        except BaseException as exc:  # handed to the consuming thread, which re-raises it
            with lock:
                errors.append(exc)
            stop.set()
        finally:
            if writer is not None:
                with lock:
                    totals.add(writer.stats)

    pool = [threading.Thread(target=work, args=(inbox,), name=f"ddbvault-write-{table}-{i}", daemon=True)
            for i, inbox in enumerate(inboxes)]
    for thread in pool:
        thread.start()

    def hand(inbox: queue.Queue[Any], entry: Any) -> bool:
        while not stop.is_set():
            try:
                inbox.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    try:
        for entry in records:
            # Key errors surface here, in the caller's thread, before anything is queued for that item.
            index = hash(key_of(entry[0], key_names, table)) % threads
            if not hand(inboxes[index], entry):
                break
        for inbox in inboxes:
            if not hand(inbox, _END):
                break
    except BaseException:
        stop.set()
        raise
    finally:
        for thread in pool:
            thread.join()
    if errors:
        raise errors[0]
    return totals

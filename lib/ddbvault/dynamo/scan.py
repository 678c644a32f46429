"""Parallel Scan of a DynamoDB table, one segment at a time or several at once on threads.

Runs inside Spark executors: no Spark here. Every page goes through ``retry.call`` and the task's
``RateLimiter``; items are low-level attribute-value dicts exactly as the client returns them (B as bytes).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ddbvault import aws
from ddbvault.dynamo import retry
from ddbvault.dynamo.pacing import RateLimiter

log = logging.getLogger(__name__)

# A Scan page reads at most 1 MB: 128 RCU eventually consistent (1 RCU per 8 KB), 256 strongly consistent.
FULL_PAGE_RCU = 128.0
# DynamoDB charges at least 0.5 RCU (eventually consistent) for any read, even an empty page.
MIN_PAGE_RCU = 0.5


@dataclass
class Page:
    """One Scan response. ``done`` marks a segment's last page; ``last_key`` resumes after it (None at the end).
    With ``items_json`` (the scan's ``raw_bytes`` mode) ``items`` is empty: the page's items are those bytes, a JSON
    array as DynamoDB sent it, ``count`` of them."""

    items: List[Dict[str, Any]]
    consumed: float
    scanned: int
    segment: int = 0
    done: bool = False
    last_key: Optional[Dict[str, Any]] = field(default=None, repr=False)
    items_json: Optional[bytes] = field(default=None, repr=False)
    count: int = 0


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        # Size proxy only: one byte per byte; base64 would inflate it by a third.
        return "x" * len(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return str(value)


def estimate_rcu(items: Sequence[Dict[str, Any]], consistent_read: bool) -> float:
    """RCU a page of ``items`` would cost when the response carries no ConsumedCapacity (some stand-ins).

    DynamoDB's rule: 0.5 RCU (eventually consistent) or 1 RCU (strongly consistent) per 4 KB, rounded up
    over the page's total bytes. The bytes are approximated by the length of each item's JSON text, which is
    close to DynamoDB's own size (attribute names + values) plus a little for the JSON syntax; it is a pacing
    estimate, not a bill.
    """
    total = sum(len(json.dumps(item, default=_json_default, separators=(",", ":"))) for item in items)
    per_4kb = 1.0 if consistent_read else 0.5
    return max(1, math.ceil(total / 4096)) * per_4kb


def estimate_rcu_of_bytes(size: int, consistent_read: bool) -> float:
    """:func:`estimate_rcu` of a page given as the bytes of its items' JSON."""
    return max(1, math.ceil(size / 4096)) * (1.0 if consistent_read else 0.5)


def _consumed(response: Dict[str, Any]) -> Optional[float]:
    capacity = response.get("ConsumedCapacity")
    if isinstance(capacity, list):  # batch-shaped; Scan returns one dict, but be lenient
        capacity = capacity[0] if capacity else None
    if not capacity or capacity.get("CapacityUnits") is None:
        return None
    return float(capacity["CapacityUnits"])


# The export's fast paths: Items as json.loads makes them (``aws.RawMember``), or as the bytes DynamoDB sent
# (``aws.RawBytes``).
RAW_JSON_EVENTS = (("before-parse.dynamodb.Scan", aws.RawMember("Items")),)
RAW_BYTES_EVENTS = (("before-parse.dynamodb.Scan", aws.RawBytes("Items")),)


def first_estimate(limiter: Optional[RateLimiter], consistent_read: bool) -> float:
    """What to acquire before a segment's first page: a full 1 MB page, capped at the limiter's burst."""
    guess = FULL_PAGE_RCU * (2 if consistent_read else 1)
    burst = limiter.burst if limiter is not None else None
    return guess if burst is None else max(MIN_PAGE_RCU, min(guess, burst))


def unit_of_read(consistent_read: bool) -> float:
    """What DynamoDB charges per 4 KB read (and at least, for any page)."""
    return 1.0 if consistent_read else MIN_PAGE_RCU


def page_limit(call_units: Optional[float], units_per_item: float) -> Optional[int]:
    """Items per Scan page so that a page costs about ``call_units`` (None: no Limit, DynamoDB's 1 MB)."""
    if call_units is None or units_per_item <= 0:
        return None
    return max(1, math.floor(call_units / units_per_item))


# What an item of a table cost in the pages read so far in this process: a task's first page starts from it, so
# only the first page an executor reads of a table is sized by a guess (Spark reuses its Python workers).
_LEARNED: Dict[Tuple[str, bool], float] = {}


def learn_units_per_item(previous: float, consumed: float, scanned: int, consistent_read: bool) -> float:
    """Units per item after a page: the page's own figure, unless the page cost DynamoDB's minimum (it read
    less than 4 KB), which only says items are at most that big."""
    if scanned <= 0:
        return previous
    figure = consumed / scanned
    if consumed <= unit_of_read(consistent_read):
        return min(previous, figure)
    return figure


def scan_segment(
    table: str,
    segment: int,
    total_segments: int,
    *,
    region: Optional[str] = None,
    limiter: Optional[RateLimiter] = None,
    policy: Optional[retry.RetryPolicy] = None,
    consistent_read: bool = False,
    page_size: Optional[int] = None,
    exclusive_start_key: Optional[Dict[str, Any]] = None,
    cancel: Optional[threading.Event] = None,
    raw_json: bool = False,
    units_per_item: Optional[float] = None,
    raw_bytes: bool = False,
) -> Iterator[Page]:
    """Every page of one segment, in order, until DynamoDB stops returning ``LastEvaluatedKey``.

    A page with no items can still continue; the last page has ``done=True``. ``exclusive_start_key``
    resumes a segment after a page's ``last_key`` (valid only with the same ``total_segments``).
    ``cancel`` (used by :func:`scan_segments`) stops waiting for capacity and retrying as soon as it is set.
    ``raw_json`` gives items as DynamoDB's JSON (binaries as base64 text) without botocore's per-attribute
    parsing (see :class:`ddbvault.aws.RawMember`); ``raw_bytes`` gives no items but each page's ``items_json``, the
    bytes DynamoDB sent (:class:`ddbvault.aws.RawBytes`): the export's fastest path, for the JVM codec.

    Without ``page_size``, pages follow the budget: each page's ``Limit`` is what the limiter says one call
    should cost (``call_units``) over the units an item costs, first ``units_per_item`` (from the table's
    average item size; default one 4 KB unit, a careful first guess) and then what the pages so far cost.
    """
    if not 0 <= segment < total_segments:
        raise ValueError(f"segment {segment} is not in 0..{total_segments - 1}")
    events = RAW_BYTES_EVENTS if raw_bytes else RAW_JSON_EVENTS if raw_json else ()
    client = aws.client("dynamodb", region, data_plane=True, events=events)
    what = f"Scan of table {table} segment {segment}/{total_segments}"
    params: Dict[str, Any] = {
        "TableName": table,
        "Segment": segment,
        "TotalSegments": total_segments,
        "ReturnConsumedCapacity": "TOTAL",
    }
    if consistent_read:
        params["ConsistentRead"] = True
    full_page = FULL_PAGE_RCU * (2 if consistent_read else 1)
    learned_key = (table, consistent_read)
    per_item = _LEARNED.get(learned_key) or units_per_item or unit_of_read(consistent_read)
    start_key = exclusive_start_key
    estimate = first_estimate(limiter, consistent_read)
    while True:
        if cancel is not None and cancel.is_set():
            raise _Cancelled()
        if start_key is not None:
            params["ExclusiveStartKey"] = start_key
        limit = page_size
        if limit is None and limiter is not None:
            limit = page_limit(limiter.call_units(), per_item)
            if limit is not None:
                estimate = max(unit_of_read(consistent_read), min(full_page, limit * per_item))
        if limit:
            params["Limit"] = limit
        if limiter is not None and not limiter.acquire(estimate, cancel=cancel):
            limiter.settle(estimate, 0.0)  # reserved, never spent: not part of what the table was charged
            raise _Cancelled()
        try:
            response = retry.call(lambda: client.scan(**params), policy=policy, what=what, limiter=limiter)
        except BaseException:
            if limiter is not None:
                limiter.settle(estimate, 0.0)  # nothing was read: the job's figure counts only what was charged
            raise
        items = response.get("Items", [])
        items_json = None
        if raw_bytes:
            if items and not isinstance(items, bytes):  # never: RawBytes hands Items over whenever a body has them
                raise TypeError(f"{what}: items arrived parsed, not as bytes")
            items_json, items = items or b"[]", []
        count = response.get("Count")
        if count is None:  # DynamoDB always says; a stand-in might not
            count = len(json.loads(items_json)) if items_json is not None else len(items)
        count = int(count)
        consumed = _consumed(response)
        if consumed is None:
            consumed = estimate_rcu(items, consistent_read) if items_json is None else \
                estimate_rcu_of_bytes(len(items_json), consistent_read)
        if limiter is not None:
            limiter.settle(estimate, consumed)
        start_key = response.get("LastEvaluatedKey") or None
        scanned = int(response.get("ScannedCount", count))
        per_item = learn_units_per_item(per_item, consumed, scanned, consistent_read)
        _LEARNED[learned_key] = per_item
        yield Page(items=items, consumed=consumed, scanned=scanned, segment=segment, done=start_key is None,
                   last_key=start_key, items_json=items_json, count=count)
        if start_key is None:
            return
        estimate = max(MIN_PAGE_RCU, consumed)


class _Cancelled(Exception):
    """Internal: a worker was told to stop (another segment failed or the consumer went away)."""


@dataclass
class _Failure:
    error: BaseException


_WORKER_DONE = object()


def scan_segments(
    table: str,
    segments: Sequence[int],
    total_segments: int,
    *,
    threads: int,
    region: Optional[str] = None,
    limiter: Optional[RateLimiter] = None,
    policy: Optional[retry.RetryPolicy] = None,
    consistent_read: bool = False,
    page_size: Optional[int] = None,
    max_pending_pages: Optional[int] = None,
    raw_json: bool = False,
    units_per_item: Optional[float] = None,
    raw_bytes: bool = False,
) -> Iterator[Tuple[int, Page]]:
    """Scan ``segments`` on up to ``threads`` threads; yield ``(segment, page)`` as pages arrive.

    Pages of one segment arrive in order and its last has ``done=True`` (that is the per-segment completion
    signal: checkpoint the segment when you see it). At most ``max_pending_pages`` (default ``2 * threads``)
    pages wait in memory; workers block until the consumer takes more, so memory stays bounded at about
    ``(max_pending_pages + threads)`` MB. The first error in any worker is raised here, and the other workers
    stop at their next page, capacity wait or retry sleep. Closing the generator early (``break``,
    ``close()``, garbage collection) stops and joins the workers too.

    Made for Spark's ``mapPartitions``: call it from the partition function and yield from it; the threads
    live only as long as the iteration. Each worker thread builds its own boto3 client (clients are cached
    per thread by ``ddbvault.aws``).
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    todo: queue.Queue[int] = queue.Queue()
    for segment in segments:
        todo.put(segment)
    workers_n = min(threads, len(segments))
    if workers_n == 0:
        return
    pages: queue.Queue[Any] = queue.Queue(maxsize=max_pending_pages or 2 * threads)
    stop = threading.Event()
    if policy is None:
        policy = retry.RetryPolicy()
    worker_policy = dataclasses.replace(policy, sleep=_interruptible(policy.sleep, stop))

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                pages.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            while not stop.is_set():
                try:
                    segment = todo.get_nowait()
                except queue.Empty:
                    break
                for page in scan_segment(table, segment, total_segments, region=region, limiter=limiter,
                                         policy=worker_policy, consistent_read=consistent_read,
                                         page_size=page_size, cancel=stop, raw_json=raw_json,
                                         units_per_item=units_per_item, raw_bytes=raw_bytes):
                    if not put((segment, page)):
                        return
        except _Cancelled:
            return
        except BaseException as exc:  # handed to the consuming thread, which re-raises it
            if not stop.is_set():
                put(_Failure(exc))
            return
        finally:
            # The sentinel must arrive even when the queue is full and stop is not set: block for it.
            if not stop.is_set():
                put(_WORKER_DONE)

    pool = [threading.Thread(target=work, name=f"ddbvault-scan-{table}-{i}", daemon=True)
            for i in range(workers_n)]
    for thread in pool:
        thread.start()
    finished = 0
    try:
        while finished < workers_n:
            item = pages.get()
            if item is _WORKER_DONE:
                finished += 1
            elif isinstance(item, _Failure):
                raise item.error
            else:
                yield item
    finally:
        stop.set()
        for thread in pool:
            thread.join()


_POLL_S = 0.1


def _interruptible(sleep: Any, stop: threading.Event) -> Any:
    """A retry sleep that ends early (raising ``_Cancelled``) once ``stop`` is set."""

    def sleep_or_stop(seconds: float) -> None:
        if stop.is_set():
            raise _Cancelled()
        if sleep is time.sleep:
            if stop.wait(seconds):
                raise _Cancelled()
        else:
            sleep(seconds)
            if stop.is_set():
                raise _Cancelled()

    return sleep_or_stop

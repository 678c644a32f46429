"""Read one shard of a DynamoDB stream on an executor: every record from a start position up to a cut time.

``GetRecords`` goes through the shared retry policy (throttling, 5xx, connection errors; ``LimitExceeded`` is
the Streams API's throttle). An iterator that expires (15 minutes) is renewed after the last record read.
``TrimmedDataAccessException`` and a vanished stream or shard become :class:`StreamGapError`: the records the vault
needs are gone. Every GetShardIterator and GetRecords call is paid for from the job's stream-read budget (calls
per second, whatever the number of shards read at once): the shards' read limits are shared with the stream's
other consumers (Lambda triggers, global tables). No Spark here.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Dict, Iterator, Optional

from botocore.exceptions import ClientError

from ddbvault import aws
from ddbvault.changes import records
from ddbvault.changes.shards import NEW_EXPORT, ShardTask, StreamGapError
from ddbvault.dynamo import budget as budget_service
from ddbvault.dynamo import retry

log = logging.getLogger(__name__)

# An open shard is caught up after this many empty answers in a row (DynamoDB may answer empty while a
# shard's iterator moves through a quiet stretch; a few calls tell the two apart).
EMPTY_ANSWERS = 3
EMPTY_PAUSE_S = 0.2
GONE_CODES = ("TrimmedDataAccessException", "ResourceNotFoundException")
# Records as the JSON the service sent (see ``aws.RawMember``): their images are most of a merge's parsing.
RAW_RECORDS_EVENTS = (("before-parse.dynamodb-streams.GetRecords", aws.RawMember("Records")),)


@dataclass(frozen=True)
class ReadPlan:
    """What every shard-reading task needs (pickled to executors)."""

    stream_arn: str
    region: str
    hash_key: str
    range_key: Optional[str]
    cut: datetime          # records at or after this time stay for the next merge
    run_id: str
    max_attempts: int = 12
    budget: Optional[budget_service.Endpoint] = None   # the job's GetRecords/GetShardIterator calls per second
    throttle_s: float = retry.RetryPolicy.throttle_s


def _gap(task: ShardTask, exc: ClientError) -> StreamGapError:
    code = exc.response["Error"].get("Code")
    return StreamGapError(f"stream records of shard {task.shard_id} are no longer readable ({code}): the vault "
                     f"needs records the stream has trimmed or lost: {NEW_EXPORT}")


def read_shard(plan: ReadPlan, task: ShardTask, client: Any = None,
               sleep: Callable[[float], Any] = time.sleep) -> Iterator[tuple]:
    """Change rows of ``task``'s shard in order, then one position dict (``records.position_dict``) as the last
    item: the last sequence number read and whether the shard is finished."""
    client = client or aws.client("dynamodbstreams", plan.region, data_plane=True, events=RAW_RECORDS_EVENTS)
    policy = retry.RetryPolicy(max_attempts=plan.max_attempts, sleep=sleep, throttle_s=plan.throttle_s)
    limiter = budget_service.limiter_for(plan.budget)
    try:
        yield from _read(plan, task, client, policy, limiter=limiter, sleep=sleep)
    finally:
        budget_service.close(limiter)


def _read(plan: ReadPlan, task: ShardTask, client: Any, policy: retry.RetryPolicy, *, limiter: Any,
          sleep: Callable[[float], Any]) -> Iterator[tuple]:
    names = records.KeyNames(plan.hash_key, plan.range_key)
    what = f"GetRecords of stream shard {task.shard_id}"
    last_seq: Optional[str] = None

    def iterator() -> str:
        kwargs: Dict[str, Any] = {"StreamArn": plan.stream_arn, "ShardId": task.shard_id}
        if last_seq is not None:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=last_seq)
        elif task.seq is not None:
            kwargs.update(ShardIteratorType=task.start, SequenceNumber=task.seq)
        else:
            kwargs.update(ShardIteratorType=task.start)
        limiter.acquire(1.0)
        try:
            return retry.call(lambda: client.get_shard_iterator(**kwargs), policy=policy, what=what,
                              advice=retry.STREAMS_ADVICE, limiter=limiter)["ShardIterator"]
        except ClientError as exc:
            if exc.response["Error"].get("Code") in GONE_CODES:
                raise _gap(task, exc) from exc
            raise

    shard_iterator: Optional[str] = iterator()
    count, empty, done = 0, 0, False
    while True:
        if shard_iterator is None:
            done = True  # a closed shard read to its end
            break
        current = shard_iterator
        limiter.acquire(1.0)
        try:
            answer = retry.call(lambda it=current: client.get_records(ShardIterator=it, Limit=1000), policy=policy,
                                what=what, advice=retry.STREAMS_ADVICE, limiter=limiter)
        except ClientError as exc:
            code = exc.response["Error"].get("Code")
            if code == "ExpiredIteratorException":
                shard_iterator = iterator()
                continue
            if code in GONE_CODES:
                raise _gap(task, exc) from exc
            raise
        reached_cut = False
        for record in answer.get("Records", []):
            row = records.change_row(record, names, task.generation, task.shard_id, plan.run_id)
            if row[6] >= plan.cut:
                reached_cut = True
                break
            last_seq = row[8]
            count += 1
            yield row
        if reached_cut:
            break
        shard_iterator = answer.get("NextShardIterator")
        if answer.get("Records"):
            empty = 0
        elif shard_iterator is not None:
            empty += 1
            if empty >= EMPTY_ANSWERS:
                break  # caught up with an open shard
            sleep(EMPTY_PAUSE_S)
    yield records.position_dict(task.shard_id, last_seq, done, count)

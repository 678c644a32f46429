"""Merge: the table's DynamoDB stream folded into its vault, ordered and exactly once, with a change log.

One merge (a *batch*) does, under the vault's writer lease:

1. check that the stream is the one the vault's export recorded and still holds what the vault needs;
2. read every shard of the stream tree on the executors from the committed checkpoint up to the cut (the job's
   start, or ``--until``), staging the records and each shard's end position in one Spark job;
3. append the new records to ``<vault>/changes`` with the new checkpoint in the same commit (exactly once:
   a rerun starts from the committed checkpoint, and records already in the log are dropped by event id);
4. fold the batch (after an export, every logged change since the export's scan start too) into
   ``<vault>/items`` with one MERGE: newest in stream order wins, REMOVE deletes.

A job killed between 3 and 4 leaves the log one batch ahead of ``items``; the next run applies that batch
from the log first, so the vault ends as one uninterrupted run would leave it.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Tuple

from botocore.exceptions import ClientError

from ddbvault import aws, merge_files
from ddbvault.changes import records, shards, streams
from ddbvault.dynamo import budget as budget_service
from ddbvault.dynamo import retry
from ddbvault.dynamo import table as tables
from ddbvault.errors import StreamGapError, TableError, UsageError, VaultError, raising_executor_errors
from ddbvault.merge_batch import (  # noqa: F401 - MergeOptions and apply_batches are this module's API too
    JOB,
    REPLAY_SLACK,
    MergeOptions,
    apply_batches,
    catch_up,
    log_and_apply,
    whole_second,
)
from ddbvault.vault import changelog, items, layout, lock, maintenance, metadata, store

log = logging.getLogger(__name__)

STREAM_RETENTION = timedelta(hours=24)
RETENTION_MARGIN = timedelta(minutes=10)  # clock skew and the trimming's own slack
# A shard serves a few reads per second to all its consumers together (AWS advises at most two readers per
# shard; Lambda polls each shard 4 times a second): one reader's pace per shard read, unless told otherwise.
STREAM_READS_PER_SHARD = 5.0


def stream_read_budget(max_stream_reads: Optional[float], shards_read: int) -> Tuple[float, str]:
    """GetRecords (and GetShardIterator) calls per second for the whole merge, and how it was chosen."""
    if max_stream_reads is not None:
        return float(max_stream_reads), "--max-stream-reads"
    shards_read = max(1, shards_read)
    return STREAM_READS_PER_SHARD * shards_read, f"{STREAM_READS_PER_SHARD:g} per shard read x {shards_read}"


def _stream(arn: str, region: str) -> Dict[str, Any]:
    """DescribeStream, every page of shards."""
    client = aws.client("dynamodbstreams", region)
    kwargs: Dict[str, Any] = {"StreamArn": arn}
    found: List[Dict[str, Any]] = []
    while True:
        try:
            answer = retry.call(lambda: client.describe_stream(**kwargs), what=f"DescribeStream {arn}")
        except ClientError as exc:
            if exc.response["Error"].get("Code") == "ResourceNotFoundException":
                raise StreamGapError(f"stream {arn} no longer exists: {shards.NEW_EXPORT}") from exc
            raise
        description = answer["StreamDescription"]
        found.extend(description.get("Shards", []))
        if not description.get("LastEvaluatedShardId"):
            description["Shards"] = found
            return description
        kwargs["ExclusiveStartShardId"] = description["LastEvaluatedShardId"]


def _check_stream(opts: MergeOptions, export: Dict[str, Any]) -> Dict[str, Any]:
    """The table's current stream, refused unless it is the one the export recorded, with new images."""
    recorded = export.get("stream_arn")
    if not recorded:
        raise StreamGapError(f"the vault's export (run {export.get('run_id')}) recorded no stream for table "
                             f"{opts.table}: enable a NEW_AND_OLD_IMAGES stream, then {shards.NEW_EXPORT}")
    description = tables.describe(opts.table, opts.region)
    if description is None:
        raise TableError(f"table {opts.table} does not exist in region {opts.region}: check --table and --region")
    current = description.get("LatestStreamArn") if tables.stream_view(description) else None
    if current != recorded:
        now = f"is now {current}" if current else "is disabled"
        raise StreamGapError(f"the stream of table {opts.table} {now}, but the vault's export recorded {recorded}: "
                             f"the stream was disabled or re-created and the changes in between are lost: "
                             f"{shards.NEW_EXPORT}")
    stream = _stream(current, opts.region)
    if stream.get("StreamViewType") not in tables.NEW_IMAGE_VIEWS:
        raise StreamGapError(f"stream {current} has view type {stream.get('StreamViewType')}, which carries no new "
                             f"item images: switch the table to a NEW_AND_OLD_IMAGES stream, then "
                             f"{shards.NEW_EXPORT}")
    return stream


def _read_tasks(plan: streams.ReadPlan, tasks) -> Any:
    """One Spark task: read its shards; change rows, then one position row per shard (staging layout)."""
    blanks = (None,) * len(records.CHANGE_COLUMNS)
    for task in tasks:
        for out in streams.read_shard(plan, task):
            if isinstance(out, dict):
                yield (*blanks, json.dumps(out))
            else:
                yield (*tuple(out), None)


def staging_schema():
    from pyspark.sql import types as T

    fields = [T.StructField(f.name, f.dataType, True) for f in records.change_schema().fields]
    return T.StructType([*fields, T.StructField("position", T.StringType(), True)])


def read_stream(spark, opts: MergeOptions, run_id: str, staging: str, *, stream_arn: str,
                keys: Tuple[str, Optional[str]], tasks: List[shards.ShardTask], cut: datetime):
    """Read ``tasks`` on the executors into ``staging``: (change rows DataFrame, {shard: position}, figures of the
    job's stream-read budget)."""
    from pyspark.sql import functions as F

    hash_key, range_key = keys
    units, source = stream_read_budget(opts.max_stream_reads, len(tasks))
    slots = spark.sparkContext.defaultParallelism
    log.info("merge %s: reading %d shards at %g GetRecords calls/s (%s) for the whole job", opts.table, len(tasks),
             units, source)
    with budget_service.BudgetService(units, host=budget_service.driver_host(spark), unit_name="GetRecords calls",
                                      callers=min(max(1, len(tasks)), slots)) as reads:
        plan = streams.ReadPlan(stream_arn, opts.region, hash_key, range_key, cut, run_id, opts.max_attempts,
                                reads.endpoint, opts.throttle_s)
        rdd = spark.sparkContext.parallelize(tasks, max(1, len(tasks))) \
            .mapPartitions(lambda part: _read_tasks(plan, part))
        with raising_executor_errors():
            spark.createDataFrame(rdd, staging_schema(), verifySchema=False).write.mode("overwrite").parquet(staging)
    calls = dict(reads.summary(judged=False), source=source)
    staged = spark.read.schema(staging_schema()).parquet(staging)
    positions = {}
    for row in staged.where(F.col("position").isNotNull()).select("position").collect():
        found = json.loads(row.position)
        positions[found["shard_id"]] = found
    rows = staged.where(F.col("position").isNull()).drop("position")
    return rows, positions, calls


def merge_once(spark, opts: MergeOptions, run, writer: lock.WriterLock, until: Optional[datetime] = None, *,
               keys: Tuple[str, Optional[str]]) -> Dict[str, Any]:
    """One batch (see the module docstring); returns its figures. ``keys``: the table's (hash, range) key."""

    started = time.time()
    cut = whole_second(until or datetime.now(timezone.utc))
    state = items.newest_state(spark, opts.vault) if items.exists(spark, opts.vault, opts.vault_region) else None
    if state is None or not state.get("export"):
        raise VaultError(f"{opts.vault} holds no export of {opts.table} yet: run export_table first")
    export = state["export"]
    stream = _check_stream(opts, export)
    arn = stream["StreamArn"]
    previous = changelog.newest_checkpoint(spark, opts.vault, opts.vault_region)
    last_batch = int(previous["batch"]) if previous else 0
    scan_started = datetime.fromisoformat(export["scan_started"])
    now = datetime.now(timezone.utc)

    state, items_batch = catch_up(spark, opts, run, writer, state=state, previous=previous)
    if previous and previous.get("source") and state.get("replayed"):
        raise StreamGapError(f"{opts.vault} follows change files ({previous['source']['format']} from "
                             f"{previous['source']['uri']}), not the stream: their orders differ, so switching needs "
                             f"a new base: run export_table, then merge from the stream")

    same_stream = previous is not None and previous.get("stream_arn") == arn
    if same_stream:
        complete_since = datetime.fromisoformat(previous["complete_since"])
        if not state.get("replayed") and scan_started < complete_since:
            raise StreamGapError(f"the vault's export scan started {scan_started.isoformat()}, before the change "
                                 f"log's first record ({complete_since.isoformat()}): {shards.NEW_EXPORT}")
        checkpoint = previous.get("shards") or {}
        stream_first_batch = int(previous.get("stream_first_batch", 1))
        covered = [list(span) for span in previous.get("covered", [])]
    else:
        if scan_started < now - STREAM_RETENTION + RETENTION_MARGIN:
            raise StreamGapError(f"the vault's export scan started {scan_started.isoformat()}, more than "
                                 f"{STREAM_RETENTION - RETENTION_MARGIN} ago: the stream keeps records for 24 "
                                 f"hours, so changes made since may be trimmed: {shards.NEW_EXPORT}")
        complete_since = scan_started
        checkpoint = None
        stream_first_batch = last_batch + 1
        # A new stream starts a new span of answerable time: nothing between the old stream's last cut and this
        # export is known (the stream was off or another one), so no point in time there is offered.
        covered = [list(span) for span in (previous or {}).get("covered", [])] + [[export["committed_at"], None]]
    if cut <= (datetime.fromisoformat(previous["cut"]) if same_stream else scan_started - REPLAY_SLACK):
        raise UsageError(f"--until {cut.isoformat()} is not after what the vault already holds "
                         f"({previous['cut'] if same_stream else scan_started.isoformat()})")

    tasks = shards.plan(stream.get("Shards", []), checkpoint)
    staging = layout.join(opts.vault, layout.META_DIR, "staging", f"{run.run_id}-{last_batch + 1}")
    try:
        rows, positions, calls = read_stream(spark, opts, run.run_id, staging, stream_arn=arn, keys=keys,
                                              tasks=tasks, cut=cut)
        run.summary["stream_reads"] = calls
        next_shards = shards.next_checkpoint(stream.get("Shards", []), checkpoint, tasks, positions)
        batch = last_batch + 1
        read_count = sum(p["records"] for p in positions.values())
        new_checkpoint = {"stream_arn": arn, "shards": next_shards, "batch": batch, "cut": cut.isoformat(),
                          "complete_since": complete_since.isoformat(), "stream_first_batch": stream_first_batch,
                          "covered": [*covered[:-1], [covered[-1][0], cut.isoformat()]]}
        counts, applied = log_and_apply(spark, opts, run, writer, rows=rows, state=state, export=export,
                                        checkpoint=new_checkpoint, items_batch=items_batch, cut=cut)
    finally:
        store.delete_tree(staging, opts.vault_region)
    open_shards = [t.shard_id for t in tasks if not positions[t.shard_id]["done"]]
    return {
        "batch": batch, "records_read": read_count, "records_new": sum(counts.values()),
        "inserts": counts.get(records.INSERT, 0), "modifies": counts.get(records.MODIFY, 0),
        "removes": counts.get(records.REMOVE, 0), "shards_read": len(tasks), "shards_open": len(open_shards),
        **applied,
        "recoverable_until": (cut - timedelta(seconds=1)).isoformat(),
        "lag_s": round((datetime.now(timezone.utc) - cut).total_seconds(), 1),
        "merge_s": round(time.time() - started, 3),
    }


class _Stop:
    """SIGTERM / SIGINT during ``--follow``: finish the current merge, commit, then stop."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.saved: Dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.saved[sig] = signal.signal(sig, lambda *_: self.event.set())
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def merge_increments(opts: MergeOptions, run, spark=None) -> Dict[str, Any]:
    """Merge the stream into the vault once, or every ``opts.follow_s`` seconds until SIGTERM."""
    from ddbvault.session import build_session, set_vault_region

    merge_files.check_options(opts)
    if opts.follow_s is not None and opts.follow_s < 1:
        raise UsageError("--follow must be at least 1 second: a merge reads up to the whole second it starts in")
    if opts.follow_s is not None and opts.until is not None:
        raise UsageError("--until and --follow exclude each other: --until is for one merge up to a moment")
    maintenance.check_retention(opts.retention_days)
    stamp = metadata.read_stamp(opts.vault, opts.vault_region)
    keys = tables.key_names({"table": {"KeySchema": stamp["key_schema"]}})  # the stamp's: no history walk
    run.finalizers.append(lambda summary: metadata.record_run(opts.vault, summary, opts.vault_region))
    run.summary.update({"table": opts.table, "region": opts.region, "vault": opts.vault})
    spark = set_vault_region(spark or build_session(f"ddbvault-{run.job}-{opts.table}"), opts.vault, opts.vault_region)
    with lock.WriterLock(opts.vault, run.job, run.run_id, opts.vault_region, ttl_s=opts.lock_ttl_s,
                         wait_s=opts.lock_wait_s) as writer, _Stop() as stop:
        if items.exists(spark, opts.vault, opts.vault_region):  # deletion vectors before the first MERGE
            maintenance.ensure(spark, opts.vault, opts.retention_days, opts.vault_region)
        merges = 0
        while True:
            figures = (merge_files.merge_once(spark, opts, run, writer, keys=keys) if opts.source
                       else merge_once(spark, opts, run, writer, opts.until, keys=keys))
            merges += 1
            figures.update(maintenance.maintain(spark, opts.vault, opts.retention_days, opts.compact_files,
                                                opts.vault_region))
            run.summary.update(figures, merges=merges)
            log.info("merge %s batch %d: %d new records (%d read), vault version %s, recoverable until %s",
                     opts.table, figures["batch"], figures["records_new"], figures["records_read"],
                     figures["vault_version"], figures["recoverable_until"])
            if opts.follow_s is None or stop.event.wait(opts.follow_s):
                break
    return run.summary

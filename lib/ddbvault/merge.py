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
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Tuple

from botocore.exceptions import ClientError

from ddbvault import aws
from ddbvault.changes import records, shards, streams
from ddbvault.dynamo import budget as budget_service
from ddbvault.dynamo import retry
from ddbvault.dynamo import table as tables
from ddbvault.errors import StreamGapError, TableError, UsageError, VaultError, raising_executor_errors
from ddbvault.vault import changelog, integrity, items, layout, lock, maintenance, metadata, store

log = logging.getLogger(__name__)

JOB = items.MERGE_JOB
STREAM_RETENTION = timedelta(hours=24)
RETENTION_MARGIN = timedelta(minutes=10)  # clock skew and the trimming's own slack
REPLAY_SLACK = timedelta(seconds=1)       # ApproximateCreationDateTime is rounded down to the second
# A shard serves a few reads per second to all its consumers together (AWS advises at most two readers per
# shard; Lambda polls each shard 4 times a second): one reader's pace per shard read, unless told otherwise.
STREAM_READS_PER_SHARD = 5.0


@dataclass
class MergeOptions:
    table: str
    vault: str
    region: str
    vault_region: Optional[str] = None
    until: Optional[datetime] = None
    follow_s: Optional[float] = None
    lock_wait_s: float = 0.0
    lock_ttl_s: float = lock.DEFAULT_TTL_S
    max_attempts: int = 12
    throttle_s: float = retry.RetryPolicy.throttle_s
    max_stream_reads: Optional[float] = None   # GetRecords calls/s for the job; None: STREAM_READS_PER_SHARD each
    retention_days: float = maintenance.DEFAULT_RETENTION_DAYS
    compact_files: int = maintenance.DEFAULT_COMPACT_FILES
    source: Optional[str] = None               # s3://bucket/prefix of landed change files; None: the stream
    source_format: Optional[str] = None        # with source: lambda, kinesis or incremental-export
    start_export: bool = False                 # incremental-export: ask DynamoDB for the next export first
    export_wait_s: float = 3 * 3600.0          # how long --start-export waits for it


def stream_read_budget(max_stream_reads: Optional[float], shards_read: int) -> Tuple[float, str]:
    """GetRecords (and GetShardIterator) calls per second for the whole merge, and how it was chosen."""
    if max_stream_reads is not None:
        return float(max_stream_reads), "--max-stream-reads"
    shards_read = max(1, shards_read)
    return STREAM_READS_PER_SHARD * shards_read, f"{STREAM_READS_PER_SHARD:g} per shard read x {shards_read}"


def whole_second(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(microsecond=0)


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
    calls = dict(reads.summary(), source=source)
    staged = spark.read.schema(staging_schema()).parquet(staging)
    positions = {}
    for row in staged.where(F.col("position").isNotNull()).select("position").collect():
        found = json.loads(row.position)
        positions[found["shard_id"]] = found
    rows = staged.where(F.col("position").isNull()).drop("position")
    return rows, positions, calls


def _commit(job: str, run_id: str, **fields: Any) -> str:
    return metadata.commit_metadata(job, run_id, **fields)


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


def catch_up(spark, opts: MergeOptions, run, writer: lock.WriterLock, *, state: Dict[str, Any],
             previous: Optional[Dict[str, Any]]) -> Tuple[Dict[str, Any], int]:
    """(items state, its batch) once a merge killed after its log commit and before its items commit has had
    its logged batches folded into items."""
    items_batch = int(state.get("batch") or 0)
    last_batch = int(previous["batch"]) if previous else 0
    if previous and state.get("job") == JOB and items_batch < last_batch and previous.get("new_records", 1):
        log.info("applying batches %d..%d from the change log first (the run that logged them stopped before "
                 "its items commit)", items_batch + 1, last_batch)
        apply_batches(spark, opts.vault, run.run_id, export=state["export"], checkpoint=previous, after=items_batch,
                      batch=last_batch, replay=False, cut=datetime.fromisoformat(previous["cut"]), check=writer.check,
                      region=opts.vault_region)
        return items.newest_state(spark, opts.vault), last_batch
    return state, items_batch


def log_and_apply(spark, opts: MergeOptions, run, writer: lock.WriterLock, *, rows, state: Dict[str, Any],
                  export: Dict[str, Any], checkpoint: Dict[str, Any], items_batch: int,
                  cut: datetime) -> Tuple[Dict[str, int], Dict[str, Any]]:
    """Steps 3 and 4 of a batch, for any source: ``rows`` less what the log holds appended to the log with
    ``checkpoint`` in the same commit, then folded into items. Returns (counts by event, items figures)."""
    batch = int(checkpoint["batch"])
    new_rows = _not_logged(spark, opts.vault, rows, opts.vault_region,
                           first_batch=int(checkpoint.get("stream_first_batch", 1))).cache()
    counts = {r["event_name"]: r["count"] for r in new_rows.groupBy("event_name").count().collect()}
    checkpoint["new_records"] = sum(counts.values())
    writer.check()
    changelog.append(spark, changelog.with_batch(new_rows, batch), opts.vault,
                     _commit(JOB, run.run_id, batch=batch, checkpoint=checkpoint), empty=not sum(counts.values()))
    new_rows.unpersist()
    replay = not state.get("replayed")
    if sum(counts.values()) or replay:
        applied = apply_batches(spark, opts.vault, run.run_id, export=export, checkpoint=checkpoint,
                                after=items_batch, batch=batch, replay=replay, cut=cut, check=writer.check,
                                region=opts.vault_region)
    else:  # nothing new: items stays as it is (no commit)
        applied = {"vault_version": state["version"], "items_inserted": 0, "items_updated": 0, "items_deleted": 0}
    return counts, dict(applied, replayed_since_export=replay)


def _not_logged(spark, vault: str, rows, region: Optional[str] = None, *, first_batch: int = 1):
    """``rows`` less those the change log already holds (same event id) since batch ``first_batch`` (where the
    current source's span began): a rerun logs nothing twice, and a record another source logged before a new
    export (a Lambda's eventID is the stream's) is logged again for the span that replays it."""
    from pyspark.sql import functions as F

    if not changelog.exists(spark, vault, region):
        return rows
    first = rows.agg(F.min("change_time")).first()[0]
    if first is None:
        return rows
    logged = changelog.read(spark, vault).where(
        (F.col(changelog.DAY) >= F.to_date(F.lit(first))) & (F.col("change_time") >= F.lit(first))
        & (F.col(changelog.BATCH) >= first_batch)
    ).select("event_id")
    return rows.join(logged, on="event_id", how="left_anti").select(*records.CHANGE_COLUMNS)


def apply_batches(spark, vault: str, run_id: str, *, export: Dict[str, Any], checkpoint: Dict[str, Any],
                  after: int, batch: int, replay: bool, cut: datetime, check: Any = None,
                  region: Optional[str] = None) -> Dict[str, Any]:
    """Fold the change log's batches ``after + 1 .. batch`` (after an export: every change logged since its scan
    start) into items, in one MERGE commit that records the vault's new state; ``check`` runs just before it."""
    from pyspark.sql import functions as F

    logged = changelog.read(spark, vault)
    if replay:
        since = datetime.fromisoformat(export["scan_started"]) - REPLAY_SLACK
        source = logged.where((F.col(changelog.BATCH) >= int(checkpoint.get("stream_first_batch", 1)))
                              & (F.col(changelog.BATCH) <= batch)
                              & (F.col(changelog.DAY) >= F.to_date(F.lit(since)))
                              & (F.col("change_time") >= F.lit(since)))
    else:
        source = logged.where((F.col(changelog.BATCH) > after) & (F.col(changelog.BATCH) <= batch))
    newest = changelog.newest_per_key(source).select(
        layout.PK, layout.SK, "event_name", layout.ITEM, layout.ITEM_SIZE, layout.CHANGE_TIME, layout.CHANGE_SEQ,
        F.lit(run_id).alias(layout.RUN_ID), F.lit(layout.SOURCE_STREAM).alias(layout.SOURCE),
        integrity.share_column(F.col(layout.ITEM)).alias(layout.ITEM_DIGEST))
    state = {"export": export, "batch": batch, "replayed": True, "upper": cut.isoformat(),
             "first_batch": int(checkpoint.get("stream_first_batch", 1))}
    if check is not None:
        check()
    metrics = items.merge_changes(spark, vault, newest, _commit(JOB, run_id, batch=batch, state=state), region)
    return {"vault_version": metrics["version"], "items_inserted": metrics["numTargetRowsInserted"],
            "items_updated": metrics["numTargetRowsUpdated"], "items_deleted": metrics["numTargetRowsDeleted"]}


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
    from ddbvault import merge_files
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

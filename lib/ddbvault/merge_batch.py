"""What a merge batch does whatever its source (``ddbvault.merge``: the stream; ``ddbvault.merge_files``: files
landed in S3): the options, a killed batch's catch-up, logging new change rows with their checkpoint in one commit,
and folding logged batches into items."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Optional, Tuple

from ddbvault.changes import records
from ddbvault.dynamo import retry
from ddbvault.vault import changelog, integrity, items, layout, lock, maintenance, metadata

log = logging.getLogger(__name__)

JOB = items.MERGE_JOB
REPLAY_SLACK = timedelta(seconds=1)       # ApproximateCreationDateTime is rounded down to the second


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


def whole_second(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(microsecond=0)


def _commit(job: str, run_id: str, **fields: Any) -> str:
    return metadata.commit_metadata(job, run_id, **fields)


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

"""Merge from change files landed in S3 (``merge_increments --source s3://bucket/prefix --format F``).

The same batch as the stream's (``ddbvault.merge_batch``): read what is new on the executors, log it with the
checkpoint in one commit, fold it into items. What is new:

- ``lambda`` and ``kinesis``: files not applied yet. The checkpoint keeps a landing watermark and the files that
  landed after it: every file that started landing ``LANDING_MARGIN`` before a merge's listing is in that listing
  (a Lambda runs at most 15 minutes; Firehose writes an object in one request), so files older than the watermark
  are applied, and a newer one is applied unless the checkpoint names it with the same ETag. A file landing late,
  with changes older than ones already merged, is still applied, and only where it is newer (``change_seq``) does it
  change an item; a rewritten file (a retried Lambda) is read again and adds only records the log lacks (event id).
- ``incremental-export``: exports not applied yet, oldest first, each whole (through its manifest); the first must
  start at or before the vault's export and each next one where the one before ended, or the merge is refused with
  the missing window. The vault is then complete up to the last one's ExportToTime.

Files are in the vault's region. Changes made before the vault's export began are in the export already and are
left out. Lambda and Kinesis files say nothing about what has not landed yet: a point in time is answered from
what has landed, up to the newest change merged.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Tuple

from ddbvault.changes import landed, native_export, records
from ddbvault.dynamo import table as tables
from ddbvault.errors import ExportError, StreamGapError, UsageError, VaultError, raising_executor_errors
from ddbvault.merge_batch import REPLAY_SLACK, MergeOptions, catch_up, log_and_apply, whole_second
from ddbvault.vault import changelog, items, layout, lock, store

log = logging.getLogger(__name__)

LANDING_MARGIN = timedelta(minutes=15)
INCREMENTAL_MAX = timedelta(hours=24)   # the longest window one incremental export may cover
INCREMENTAL_MIN = timedelta(minutes=15)  # the shortest
NEW_EXPORT = "run export_table for a new base, then merge again"


def source_of(opts: MergeOptions) -> Dict[str, str]:
    return {"format": str(opts.source_format), "uri": str(opts.source).rstrip("/")}


def _pending_files(opts: MergeOptions, ledger: Dict[str, Any], listed_at: datetime
                   ) -> Tuple[List[landed.Landed], Dict[str, Any]]:
    """(files to read, the ledger once they are applied) for lambda and kinesis."""
    files = landed.list_landed(str(opts.source), opts.vault_region)
    mark = ledger.get("landed_before")
    watermark = datetime.fromisoformat(mark) if mark else None
    recent: Dict[str, str] = dict(ledger.get("recent") or {})
    pending = [f for f in files if (watermark is None or datetime.fromisoformat(f.landed_at) >= watermark)
               and recent.get(f.uri) != f.etag]
    new_mark = listed_at - LANDING_MARGIN
    keep = {f.uri: f.etag for f in files if datetime.fromisoformat(f.landed_at) >= new_mark}
    return pending, {"landed_before": new_mark.isoformat(), "recent": keep}


def _pending_exports(opts: MergeOptions, ledger: Dict[str, Any], table_name: str, since: datetime
                     ) -> Tuple[List[native_export.ExportManifest], Dict[str, Any]]:
    """(incremental exports to apply, oldest first, the ledger once they are applied); refuses a gap."""
    found = [m for m in native_export.list_exports(str(opts.source), opts.vault_region)
             if m.export_type == native_export.INCREMENTAL_EXPORT]
    for manifest in found:
        if landed.table_of(manifest.table_arn) != table_name:
            raise ExportError(f"{manifest.uri} is an export of {manifest.table_arn}, not of table {table_name}: give "
                              f"each table its own --source prefix")
    done = ledger.get("exported_to")
    reached = datetime.fromisoformat(done) if done else since
    pending: List[native_export.ExportManifest] = []
    for manifest in sorted(found, key=lambda m: (m.from_time, m.to_time)):
        if manifest.to_time <= reached:
            continue  # applied already (or wholly before the vault's export)
        if manifest.from_time > reached:
            raise StreamGapError(f"no incremental export under {opts.source} covers {reached.isoformat()} .. "
                                 f"{manifest.from_time.isoformat()} (the next one, {manifest.export_arn}, starts "
                                 f"there): export that window (ExportTableToPointInTime, INCREMENTAL_EXPORT, from "
                                 f"{reached.isoformat()} to {manifest.from_time.isoformat()}) and merge again, or "
                                 f"{NEW_EXPORT}")
        pending.append(manifest)
        reached = manifest.to_time
    exported_to = pending[-1].to_time.isoformat() if pending else done
    return pending, {"exported_to": exported_to,
                     "exports": [m.export_arn for m in pending] or list(ledger.get("exports") or [])}


def start_incremental(opts: MergeOptions, since: datetime) -> Optional[str]:
    """``--start-export``: ask DynamoDB for the incremental export from what the vault holds to now (at most 24
    hours; less than 15 minutes is too short to ask for), into ``--source``, and wait for it."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    end = min(now, since + INCREMENTAL_MAX)
    if end - since < INCREMENTAL_MIN:
        log.info("the vault holds changes up to %s: less than %s ago, too short a window for an incremental export",
                 since.isoformat(), INCREMENTAL_MIN)
        return None
    description = tables.describe(opts.table, opts.region)
    if description is None:
        raise UsageError(f"table {opts.table} does not exist in region {opts.region}: check --table and --region")
    bucket, _, prefix = str(opts.source)[len("s3://"):].partition("/")
    arn = native_export.start_export(description["TableArn"], bucket, prefix, opts.region, incremental=(since, end))
    native_export.wait_export(arn, opts.region, timeout_s=opts.export_wait_s)
    return arn


def _read(spark, plan: landed.FilePlan, files: List[landed.Landed], staging: str):
    """The change rows of ``files``, read on the executors (one task per few files) and staged once."""
    slots = max(1, spark.sparkContext.defaultParallelism)
    rdd = spark.sparkContext.parallelize(files, max(1, min(len(files), slots * 4))) \
        .mapPartitions(lambda part: landed.read_files(plan, part))
    with raising_executor_errors():
        spark.createDataFrame(rdd, records.change_schema(), verifySchema=False).write.mode("overwrite") \
            .parquet(staging)
    return spark.read.schema(records.change_schema()).parquet(staging).dropDuplicates(["event_id"])


class _Span:
    """The span of answerable time a batch adds to: the one going on, or a new one starting at the export."""

    def __init__(self, *, fresh: bool, ledger: Dict[str, Any], first_batch: int, covered: List[List[Any]],
                 complete_since: datetime, cut: datetime) -> None:
        self.fresh, self.ledger, self.first_batch = fresh, ledger, first_batch
        self.covered, self.complete_since, self.cut = covered, complete_since, cut

    @classmethod
    def go_on(cls, previous: Dict[str, Any]) -> _Span:
        return cls(fresh=False, ledger=dict(previous.get("ledger") or {}),
                   first_batch=int(previous.get("stream_first_batch", 1)),
                   covered=[list(span) for span in previous.get("covered", [])],
                   complete_since=datetime.fromisoformat(previous["complete_since"]),
                   cut=datetime.fromisoformat(previous["cut"]))

    @classmethod
    def new(cls, previous: Optional[Dict[str, Any]], last_batch: int, export: Dict[str, Any],
            scan_started: datetime) -> _Span:
        return cls(fresh=True, ledger={}, first_batch=last_batch + 1,
                   covered=[list(span) for span in (previous or {}).get("covered", [])]
                   + [[export["committed_at"], None]],
                   complete_since=scan_started, cut=scan_started)

    def points(self, exports: List[native_export.ExportManifest], committed_at: datetime,
               retention_days: float) -> List[List[str]]:
        """Answerable time for incremental exports: each one holds an item's last change in its window only, so
        the moments it can answer are the ends of its windows (a span [t, t]), not the time between them. The
        open span the export began is dropped; ends older than the point-in-time window are let go."""
        keep = [span for span in self.covered if span[1] is not None]
        horizon = datetime.now(timezone.utc) - timedelta(days=retention_days)
        keep = [span for span in keep if span[0] != span[1] or datetime.fromisoformat(span[1]) >= horizon]
        ends = [m.to_time.isoformat() for m in exports if m.to_time >= committed_at]
        return keep + [[end, end] for end in ends]


def merge_once(spark, opts: MergeOptions, run, writer: lock.WriterLock, *,
               keys: Tuple[str, Optional[str]]) -> Dict[str, Any]:
    """One batch from the landed files (see the module docstring); returns its figures."""
    from pyspark.sql import functions as F

    started = time.time()
    listed_at = datetime.now(timezone.utc)
    state = items.newest_state(spark, opts.vault) if items.exists(spark, opts.vault, opts.vault_region) else None
    if state is None or not state.get("export"):
        raise VaultError(f"{opts.vault} holds no export of {opts.table} yet: run export_table first")
    export = state["export"]
    source = source_of(opts)
    previous = changelog.newest_checkpoint(spark, opts.vault, opts.vault_region)
    last_batch = int(previous["batch"]) if previous else 0
    scan_started = datetime.fromisoformat(export["scan_started"])
    state, items_batch = catch_up(spark, opts, run, writer, state=state, previous=previous)

    same = previous is not None and previous.get("source") == source
    if previous is not None and not same and state.get("replayed"):
        was = previous.get("source") or {"format": "stream", "uri": previous.get("stream_arn")}
        raise StreamGapError(f"{opts.vault} follows {was['format']} changes from {was['uri']}, not {source['format']} "
                             f"from {source['uri']}: two sources order changes differently, so switching needs a new "
                             f"base: {NEW_EXPORT} with --source")
    fmt = opts.source_format
    started_export = None
    exports: List[native_export.ExportManifest] = []
    span = _Span.go_on(previous) if same else _Span.new(previous, last_batch, export, scan_started)
    if same and not state.get("replayed") and scan_started < span.complete_since:
        raise StreamGapError(f"the vault's export began {scan_started.isoformat()}, before the change log's first "
                             f"change from {source['uri']} ({span.complete_since.isoformat()}): {NEW_EXPORT}")
    if fmt == landed.INCREMENTAL:
        if opts.start_export:
            reached = span.ledger.get("exported_to")
            started_export = start_incremental(opts, datetime.fromisoformat(reached) if reached else scan_started)
        try:
            exports, next_ledger = _pending_exports(opts, span.ledger, opts.table, scan_started)
        except StreamGapError:
            if not (same and not state.get("replayed")):
                raise
            # A new export since: the exports may go on from it instead, as a new span of answerable time.
            span = _Span.new(previous, last_batch, export, scan_started)
            exports, next_ledger = _pending_exports(opts, span.ledger, opts.table, scan_started)
        files = [f for m in exports for f in landed.export_files(m)]
        missing = [u for m in exports for u in native_export.missing_files(m, opts.vault_region)]
        if missing:
            raise ExportError(f"the incremental export's manifest names {len(missing)} data files that are not in S3 "
                              f"(first: {missing[0]}): the export is incomplete; take it again")
    else:
        files, next_ledger = _pending_files(opts, span.ledger, listed_at)

    batch = last_batch + 1
    staging = layout.join(opts.vault, layout.META_DIR, "staging", f"{run.run_id}-{batch}")
    plan = landed.FilePlan(fmt, opts.table, keys[0], keys[1], opts.vault_region, run.run_id)
    log.info("merge %s from %s %s: %d new files", opts.table, fmt, opts.source, len(files))
    try:
        rows = _read(spark, plan, files, staging) if files else spark.createDataFrame([], records.change_schema())
        if span.fresh:
            # A new span starts at the export: changes before its scan began are in it already. Lambda and Kinesis
            # files cannot say whether every change since has landed; what they can show is that landing began
            # before the export, i.e. that some landed change is older than it.
            oldest = rows.agg(F.min(layout.CHANGE_TIME)).first()[0]
            since = scan_started - REPLAY_SLACK
            if fmt != landed.INCREMENTAL and oldest is not None and oldest.replace(tzinfo=timezone.utc) >= scan_started:
                raise StreamGapError(f"the oldest change landed under {opts.source} was made "
                                     f"{oldest.replace(tzinfo=timezone.utc).isoformat()}, after the vault's export "
                                     f"began ({scan_started.isoformat()}): changes made in between may never have "
                                     f"landed; let the files land from before an export, then {NEW_EXPORT}")
            rows = rows.where(F.col(layout.CHANGE_TIME) >= F.lit(since))
        figures = rows.agg(F.count(F.lit(1)).alias("n"), F.max(layout.CHANGE_TIME).alias("newest")).first()
        if fmt == landed.INCREMENTAL:
            reached = next_ledger.get("exported_to")
            cut = datetime.fromisoformat(reached) if reached else scan_started
            covered = span.points(exports, datetime.fromisoformat(export["committed_at"]), opts.retention_days)
        else:  # as far as the changes landed reach: the newest change's second, whole
            newest = figures["newest"].replace(tzinfo=timezone.utc) if figures["newest"] else None
            cut = max(span.cut, whole_second(newest) + timedelta(seconds=1)) if newest else span.cut
            covered = None
        if not state.get("replayed"):  # items will hold the export: nothing older than its commit is its bound
            cut = max(cut, datetime.fromisoformat(export["committed_at"]))
        if covered is None:
            covered = [*span.covered[:-1], [span.covered[-1][0], cut.isoformat()]]
        checkpoint = {"source": source, "ledger": next_ledger, "batch": batch, "cut": cut.isoformat(),
                      "complete_since": span.complete_since.isoformat(), "stream_first_batch": span.first_batch,
                      "files": len(files), "covered": covered}
        counts, applied = log_and_apply(spark, opts, run, writer, rows=rows, state=state, export=export,
                                        checkpoint=checkpoint, items_batch=items_batch, cut=cut)
    finally:
        store.delete_tree(staging, opts.vault_region)
    out = {
        "batch": batch, "source": source, "files_read": len(files), "records_read": int(figures["n"]),
        "records_new": sum(counts.values()), "inserts": counts.get(records.INSERT, 0),
        "modifies": counts.get(records.MODIFY, 0), "removes": counts.get(records.REMOVE, 0), **applied,
        "recoverable_until": (cut - timedelta(seconds=1)).isoformat(),
        "lag_s": round((datetime.now(timezone.utc) - cut).total_seconds(), 1),
        "merge_s": round(time.time() - started, 3),
    }
    if exports:
        out["exports_applied"] = [m.export_arn for m in exports]
    if started_export:
        out["export_started"] = started_export
    return out


def check_sources(source: Optional[str], fmt: Optional[str], start_export: bool, until: Optional[datetime]) -> None:
    """Refuse source flags that do not go together, before anything is read (UsageError)."""
    if source is None:
        if fmt or start_export:
            raise UsageError("--format and --start-export go with --source s3://bucket/prefix")
        return
    if not source.startswith("s3://") or not source[len("s3://"):].split("/")[0]:
        raise UsageError(f"--source {source!r} is not s3://bucket/prefix")
    if fmt not in landed.FORMATS:
        raise UsageError(f"--source needs --format, one of {', '.join(landed.FORMATS)}")
    if until is not None:
        raise UsageError("--until is for the stream: a merge of landed files goes as far as they reach")
    if start_export and fmt != landed.INCREMENTAL:
        raise UsageError("--start-export asks DynamoDB for an incremental export: it goes with "
                         "--format incremental-export")


def check_options(opts: MergeOptions) -> None:
    check_sources(opts.source, opts.source_format, opts.start_export, opts.until)

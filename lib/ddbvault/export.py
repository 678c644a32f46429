"""Export: a segmented, paced parallel scan of a live table into its vault, in one atomic Delta commit.

Planning (budget, segments, task groups) is pure and tested on its own; ``scan_partition`` is what each Spark
task runs; ``export_table`` wires them to Spark and Delta.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ddbvault import codec, export_native
from ddbvault.dynamo import budget as budget_service
from ddbvault.dynamo import retry, scan
from ddbvault.dynamo import table as tables
from ddbvault.errors import UsageError, raising_executor_errors
from ddbvault.export_commit import (  # noqa: F401 - check_stream is this module's API too
    check_stream,
    commit_staged,
    deal,
    record_commit,
    staged_rows,
)
from ddbvault.progress import ProgressSender, ProgressServer
from ddbvault.vault import integrity, layout, lock, metadata, staging

log = logging.getLogger(__name__)

SEGMENT_BYTES = 128 * 1024 * 1024      # within the 100-256 MB per segment that scales well
ON_DEMAND_DEFAULT_RCU = budget_service.KINDS["read"].on_demand_default
MAX_SEGMENTS = 1_000_000


@dataclass
class ExportOptions:
    table: str
    vault: str
    region: str
    vault_region: Optional[str] = None
    segments: Optional[int] = None
    max_read_units: Optional[float] = None
    read_percent: Optional[float] = None
    consistent_read: bool = False
    require_stream: bool = False
    readers_per_task: int = 4
    max_attempts: int = 12
    throttle_s: float = retry.RetryPolicy.throttle_s
    lock_wait_s: float = 0.0
    table_recreated: bool = False
    # DynamoDB's own export instead of a scan (ddbvault.export_native): an export's folder to ingest, or a bucket
    # to have DynamoDB export the table into (then waited for, at most export_wait_s, and ingested).
    from_export: Optional[str] = None
    export_bucket: Optional[str] = None
    export_prefix: Optional[str] = None
    export_bucket_owner: Optional[str] = None
    export_wait_s: float = 6 * 3600.0
    # Items parsed by the JVM codec at the commit when its jar is on the classpath (False: always in Python).
    jvm_codec: bool = True


def read_budget(description: Dict[str, Any], max_read_units: Optional[float],
                read_percent: Optional[float]) -> Tuple[float, str]:
    """The job's read budget in RCU/s and how it was chosen (``budget.table_budget``)."""
    return budget_service.table_budget(description, "read", max_read_units, read_percent)


def plan_segments(table_bytes: int, slots: int, readers_per_task: int, override: Optional[int]) -> int:
    """TotalSegments: ~128 MB each, and at least two tasks' worth per Spark slot, so the tail stays short."""
    if override is not None:
        if not 1 <= override <= MAX_SEGMENTS:
            raise UsageError(f"--segments must be 1..{MAX_SEGMENTS}")
        return override
    by_size = math.ceil(max(table_bytes, 0) / SEGMENT_BYTES)
    return int(min(MAX_SEGMENTS, max(by_size, 2 * slots * readers_per_task, 1)))


def group_segments(total: int, per_task: int) -> List[List[int]]:
    """Segments dealt round-robin into tasks of at most ``per_task`` each (neighbours spread apart)."""
    tasks = max(1, math.ceil(total / max(per_task, 1)))
    return [list(range(first, total, tasks)) for first in range(min(tasks, total))]


@dataclass(frozen=True)
class ScanPlan:
    """What every export task needs to know (pickled to executors)."""

    table: str
    region: str
    hash_key: str
    range_key: Optional[str]
    total_segments: int
    budget: Optional[budget_service.Endpoint]
    readers: int
    consistent_read: bool
    max_attempts: int
    change_time: datetime
    run_id: str
    progress: Optional[Tuple[str, int]]
    units_per_item: Optional[float] = None
    throttle_s: float = retry.RetryPolicy.throttle_s


def units_per_item(description: Dict[str, Any], consistent_read: bool) -> Optional[float]:
    """What one item costs to scan, from the table's average size (None when DynamoDB has no figures yet)."""
    size, count = int(description.get("TableSizeBytes") or 0), int(description.get("ItemCount") or 0)
    if size <= 0 or count <= 0:
        return None
    return (size / count) / 4096.0 * scan.unit_of_read(consistent_read)


def scan_partition(plan: ScanPlan, segments: Iterator[int], pages: bool = False) -> Iterator[tuple]:
    """One Spark task: scan its segments on ``plan.readers`` threads, paced by the job's budget; yield item rows,
    or with ``pages`` a row per Scan page holding its items as DynamoDB sent them, for the JVM codec
    (``staging.rows_of_pages``). Verify's and repair's scan of a table; what the scan consumed is counted by the
    job's budget service."""
    limiter = budget_service.limiter_for(plan.budget, plan.readers)
    sender = ProgressSender(plan.progress)
    try:
        for _segment, page in scan.scan_segments(
                plan.table, list(segments), plan.total_segments, threads=plan.readers, region=plan.region,
                limiter=limiter, policy=retry.RetryPolicy(max_attempts=plan.max_attempts, throttle_s=plan.throttle_s),
                consistent_read=plan.consistent_read, raw_json=not pages, raw_bytes=pages,
                units_per_item=plan.units_per_item):
            if pages:
                yield (page.items_json,)
            for item in page.items:
                pk, sk, text, size = codec.to_vault_record(item, plan.hash_key, plan.range_key)
                yield (pk, sk, text, size, layout.SOURCE_EXPORT, plan.change_time, None, plan.run_id,
                       integrity.item_hash(text))
            sender.add(items=page.count if pages else len(page.items), units=page.consumed,
                       parts_done=1 if page.done else 0)
    finally:
        sender.close()
        budget_service.close(limiter)


def stage_partition(plan: ScanPlan, staged_at: str, vault_region: Optional[str],
                    segments: Iterator[int], pages: bool = False) -> Iterator[Dict[str, Any]]:
    """One Spark task of an export: scan its segments, paced by the job's budget, and stage each finished
    segment in the vault (``vault.staging``); one small dict per segment. Segments a previous attempt of
    this task already finished are skipped, so a retried task reads only what it had not finished.

    ``pages``: stage each Scan page's items as the bytes DynamoDB sent, for the JVM codec at the commit (Python
    never parses an item); otherwise make each item's row here."""
    already = staging.finished(staged_at, vault_region)
    todo = [s for s in segments if s not in already]
    limiter = budget_service.limiter_for(plan.budget, plan.readers)
    sender = ProgressSender(plan.progress)
    files: Dict[int, staging.SegmentFile] = {}
    try:
        for segment, page in scan.scan_segments(
                plan.table, todo, plan.total_segments, threads=plan.readers, region=plan.region,
                limiter=limiter, policy=retry.RetryPolicy(max_attempts=plan.max_attempts, throttle_s=plan.throttle_s),
                consistent_read=plan.consistent_read, raw_json=not pages, raw_bytes=pages,
                units_per_item=plan.units_per_item):
            out = files.get(segment)
            if out is None:
                out = files[segment] = staging.SegmentFile(staged_at, segment, vault_region, pages=pages)
            if pages:
                out.add_page(page.items_json, page.count)
            else:
                rows = []
                for item in page.items:
                    pk, sk, text, size = codec.to_vault_record(item, plan.hash_key, plan.range_key)
                    rows.append((pk, sk, text, size, integrity.item_hash(text)))
                out.add_rows(rows)
            sender.add(items=page.count if pages else len(page.items), units=page.consumed,
                       parts_done=1 if page.done else 0)
            if page.done:
                finished = files.pop(segment).finish()
                yield {"segment": segment, "items": finished.items}
    finally:
        staging.discard_all(files.values())
        sender.close()
        budget_service.close(limiter)


def export_table(opts: ExportOptions, run, spark=None) -> Dict[str, Any]:
    """Scan ``opts.table`` into ``opts.vault`` as one new Delta version; returns the run's figures.

    The table and the vault are checked before Spark starts (``spark`` None: built here), so a wrong name or
    path fails in a second, not after a JVM start.
    """
    from ddbvault.session import build_session, set_vault_region

    if opts.from_export or opts.export_bucket:
        return export_native.ingest(opts, run, spark)
    meta = tables.capture(opts.table, opts.region)
    description = meta["table"]
    hash_key, range_key = tables.key_names(meta)
    view = check_stream(description, opts.require_stream)
    budget, budget_source = read_budget(description, opts.max_read_units, opts.read_percent)  # before any write
    metadata.claim(opts.vault, meta, opts.vault_region, table_recreated=opts.table_recreated)
    # Only a vault that is this table's gets the run's record (never a foreign path we refused).
    run.finalizers.append(lambda summary: metadata.record_run(opts.vault, summary, opts.vault_region))

    spark = set_vault_region(spark or build_session(f"ddbvault-{run.job}-{opts.table}"), opts.vault, opts.vault_region)
    slots = spark.sparkContext.defaultParallelism
    expected = int(description.get("ItemCount") or 0)
    driver_host = budget_service.driver_host(spark)
    staged_at = staging.root(opts.vault)
    started = time.time()
    with lock.WriterLock(opts.vault, run.job, run.run_id, opts.vault_region, wait_s=opts.lock_wait_s) as writer:
        # Recorded before the first page: replaying the stream from here on makes the vault exact (AWS's advice).
        # A resumed export keeps its first run's start and segments.
        manifest = staging.resume_or_start(opts.vault, opts.vault_region, {
            "run_id": run.run_id, "table_arn": description.get("TableArn"),
            "table_created": str(description.get("CreationDateTime")), "consistent_read": opts.consistent_read,
            "stream_arn": description.get("LatestStreamArn"),
            "total_segments": plan_segments(int(description.get("TableSizeBytes") or 0), slots,
                                            opts.readers_per_task, opts.segments),
            "scan_started": datetime.now(timezone.utc).isoformat(),
            "staged_as": staging.AS_PAGES if opts.jvm_codec and staging.register_jvm_codec(spark) else staging.AS_ROWS,
        }, datetime.now(timezone.utc))
        pages = manifest.get("staged_as") == staging.AS_PAGES
        total = int(manifest["total_segments"])
        scan_started = datetime.fromisoformat(manifest["scan_started"])
        kept = staging.finished(staged_at, opts.vault_region)
        groups = deal(sorted(set(range(total)) - set(kept)), opts.readers_per_task)
        run.summary.update({"table": opts.table, "region": opts.region, "vault": opts.vault, "segments": total,
                            "item_codec": "jvm" if pages else "python",
                            "segments_reused": len(kept), "tasks": len(groups), "read_budget_rcu": budget,
                            "stream_view": view, "resumed_from": manifest["run_id"] if kept else None})
        log.info("export %s (%s) -> %s: %d segments (%d kept from run %s) in %d tasks x %d readers; budget %.0f RCU/s "
                 "(%s) for the whole job, however many tasks run", opts.table, opts.region, opts.vault, total,
                 len(kept), manifest["run_id"], len(groups), opts.readers_per_task, budget, budget_source)
        with budget_service.BudgetService(budget, host=driver_host, unit_name="RCU",
                                          callers=max(1, min(len(groups), slots)) * opts.readers_per_task) as reads, \
                ProgressServer(f"export {opts.table}", expected_items=expected or None, budget=budget, parts=total,
                               advertise=driver_host) as progress:
            plan = ScanPlan(opts.table, opts.region, hash_key, range_key, total, reads.endpoint,
                            opts.readers_per_task, opts.consistent_read, opts.max_attempts, scan_started, run.run_id,
                            progress.address, units_per_item(description, opts.consistent_read), opts.throttle_s)
            if groups:
                with raising_executor_errors():
                    spark.sparkContext.parallelize(groups, len(groups)).flatMap(lambda group: group) \
                        .mapPartitions(lambda segs: stage_partition(plan, staged_at, opts.vault_region, segs, pages)) \
                        .collect()  # one small dict per segment, never items
        run.summary["read_capacity"] = reads.summary()
        log.info("export %s, its pace: %s", opts.table, run.summary["read_capacity"]["advice"])
        scanned, digest = commit_staged(spark, opts, run, meta, writer=writer, total=total, change_time=scan_started,
                                        pages_of=(hash_key, range_key) if pages else None,
                                        stream_arn=description.get("LatestStreamArn"), stream_view=view)
    elapsed = time.time() - started
    version, written = record_commit(spark, opts, run, meta, manifest=manifest, scanned=scanned, digest=digest,
                                     change_time=scan_started)
    run.summary.update({
        "items": written, "vault_version": version, "consumed_rcu": round(reads.consumed, 1),
        "scan_write_s": round(elapsed, 3), "items_per_s": round(written / elapsed, 1) if elapsed else None,
        "scan_started": scan_started.isoformat(), "stream_arn": description.get("LatestStreamArn"),
    })
    log.info("export %s done: %d items, vault version %d, %.1f RCU consumed, %.1fs", opts.table, written,
             version, reads.consumed, elapsed)
    return run.summary

"""An export's staged parts (scan segments, or a DynamoDB export's data files) committed as the items table's new
version, and what a scan export and a native export both check first. Used by ``ddbvault.export`` and
``ddbvault.export_native``."""
from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Any, Dict, List, Optional, Tuple

from ddbvault.dynamo import table as tables
from ddbvault.errors import TableError, VaultError, raising_executor_errors
from ddbvault.vault import integrity, items, layout, lock, metadata, staging

log = logging.getLogger(__name__)


def check_stream(description: Dict[str, Any], require: bool) -> Optional[str]:
    """The stream view type; warns (or refuses, with ``require``) when later merges could not be exact."""
    view = tables.stream_view(description)
    if view in tables.NEW_IMAGE_VIEWS:
        return view
    problem = (f"table {description.get('TableName')} has {'a ' + view if view else 'no'} stream"
               f"{'' if not view else ' view'}: changes made during and after this export cannot be merged "
               f"into the vault, so it will only be exact as of a moment; enable a NEW_AND_OLD_IMAGES stream")
    if require:
        raise TableError(problem + " (or drop --require-stream)")
    log.warning("%s", problem)
    return view


def deal(segments: List[int], per_task: int) -> List[List[int]]:
    """``segments`` dealt round-robin into tasks of at most ``per_task`` each (neighbours spread apart)."""
    if not segments:
        return []
    tasks = max(1, math.ceil(len(segments) / max(per_task, 1)))
    return [segments[first::tasks] for first in range(min(tasks, len(segments)))]


def staged_rows(spark, paths: List[str], change_time: datetime, run_id: str,
                pages_of: Optional[Tuple[str, Optional[str]]] = None):
    """The staged segments as the items table's rows (FAILFAST: a damaged line fails the job, never drops).
    ``pages_of``: the staging holds Scan pages of a table with these (hash, range) key names, for the JVM codec."""
    from pyspark.sql import functions as F

    if pages_of is not None:
        staged = staging.page_rows(spark, paths, *pages_of)
    else:
        staged = spark.read.schema(staging.stage_schema()).option("mode", "FAILFAST").json(paths)
    return staged.select(
        F.col(staging.PK).alias(layout.PK), F.col(staging.SK).alias(layout.SK),
        F.col(staging.ITEM).alias(layout.ITEM), F.col(staging.SIZE).alias(layout.ITEM_SIZE),
        F.lit(layout.SOURCE_EXPORT).alias(layout.SOURCE),
        F.lit(change_time).cast("timestamp").alias(layout.CHANGE_TIME),
        F.lit(None).cast("string").alias(layout.CHANGE_SEQ), F.lit(run_id).alias(layout.RUN_ID),
        F.col(staging.DIGEST).alias(layout.ITEM_DIGEST))


def commit_staged(spark, opts: Any, run, meta: Dict[str, Any], *, writer: lock.WriterLock, total: int,
                  change_time: datetime, pages_of: Optional[Tuple[str, Optional[str]]] = None,
                  **commit_fields: Any) -> Tuple[int, Optional[int]]:
    """The staged parts 0..total-1 (scan segments or export files) as the items table's new version, in one Delta
    overwrite whose commit says where the rows came from (``scan_started``: where the next merge starts to replay
    the stream). Returns (items, digest) of what was staged; for staged pages (``pages_of``), whose rows are made
    at this commit, the digest is observed as they are written (None if Spark did not report it). Under the
    writer lease."""
    staged_at = staging.root(opts.vault)
    done = staging.finished(staged_at, opts.vault_region)
    try:
        paths = staging.data_paths(done, total)
    except ValueError as exc:
        raise VaultError(f"the export of {opts.table} did not finish every part ({exc}): rerun the same "
                         f"command; finished parts are kept and not read again") from exc
    scanned = sum(done[s].items for s in range(total))
    digest = sum(done[s].digest for s in range(total))
    commit = metadata.commit_metadata(run.job, run.run_id, table_meta=meta, scan_started=change_time.isoformat(),
                                      **commit_fields)
    writer.check()
    with staging.raising_codec_errors(f"what the scan of table {opts.table} read; nothing was committed, the vault "
                                      f"is as it was: check that the endpoint is DynamoDB's, then rerun the export"), \
            raising_executor_errors():
        rows = staged_rows(spark, paths, change_time, run.run_id, pages_of)
        if pages_of is not None:  # the rows are made here: their digest too
            rows, observed_digest = integrity.observed(rows)
        rows.write.format("delta").mode("overwrite").option("userMetadata", commit) \
            .save(layout.join(opts.vault, layout.ITEMS_DIR))
    return scanned, observed_digest() if pages_of is not None else digest


def record_commit(spark, opts: Any, run, meta: Dict[str, Any], *, manifest: Dict[str, Any], scanned: int,
                  digest: Optional[int], change_time: datetime) -> Tuple[int, int]:
    """After :func:`commit_staged`: find this run's commit, mark the staged export committed, keep the table's
    capture and the version's integrity record (``digest`` None: the sum of the version's digest shares, which
    the commit made). Returns (version, items written)."""
    items_path = layout.join(opts.vault, layout.ITEMS_DIR)
    # This run's own commit, by its run id: "the newest" may already be another writer's (an operator's OPTIMIZE).
    mine = metadata.commit_by_run_id(spark, items_path, run.run_id)
    if mine is None:
        raise VaultError(f"the export of {opts.table} wrote {opts.vault}, but none of the newest "
                         f"{metadata.RUN_COMMIT_LOOKBACK} commits of {items_path} is this run's ({run.run_id}): "
                         f"other writers are committing to the vault; do not restore the newest version until a "
                         f"rerun of the export succeeds")
    version = mine["version"]
    staging.committed(opts.vault, opts.vault_region, manifest, version)  # whatever follows, never committed twice
    # The capture in a file of the vault's own: Delta's log cleanup will delete this commit's userMetadata.
    metadata.record_capture(opts.vault, version, meta, opts.vault_region, job=run.job,
                            run_id=run.run_id, scan_started=change_time.isoformat())
    written = int(mine["metrics"].get("numOutputRows", 0))
    if written != scanned:
        raise VaultError(f"the export of {opts.table} read {scanned} items but Delta version {version} of "
                         f"{opts.vault} holds {written}: do not restore that version; run the export again")
    if digest is None:
        digest = integrity.shares(items.read(spark, opts.vault, version))
    integrity.record(opts.vault, version, written, digest, opts.vault_region, job=run.job, run_id=run.run_id)
    metadata.store.write_json(layout.join(opts.vault, layout.META_DIR, "table.json"), meta, opts.vault_region)
    return version, written

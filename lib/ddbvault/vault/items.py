"""The one owner of ``<vault>/items``: read it at a version, know what state a version holds, and fold change
rows into it with Delta MERGE.

Every ddbvault commit to ``items`` carries its state in the commit's ``userMetadata`` (see :func:`state_of`):
which export it builds on, the newest change batch applied, and ``upper``: no change at or after that time is
reflected in the version. Point-in-time reads (``ddbvault.vault.pointintime``) pick their base version by it.

Deletion vectors are enabled on ``items``: a merge of a few thousand changes into millions of rows then marks
the replaced rows in small vector files instead of rewriting every Parquet file that holds one of them, so a
merge costs what its changes cost, not what the table costs. Spark and delta-rs (through its DataFusion query
engine, ``deltalake.QueryBuilder``) read such tables; the maintenance step purges the vectors when it compacts.
"""
from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, Optional, Tuple

from ddbvault.vault import integrity, layout, metadata, store

TABLE_PROPERTIES = {"delta.enableDeletionVectors": "true"}
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"

EXPORT_JOB = "export_table"
MERGE_JOB = "merge_increments"


def path(vault: str) -> str:
    return layout.join(vault, layout.ITEMS_DIR)


def exists(spark, vault: str, region: Optional[str] = None) -> bool:
    return store.delta_table_exists(path(vault), region)


def read(spark, vault: str, version: Optional[int] = None):
    """The items as they are, or as of Delta ``version``."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(path(vault))


def _utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    return datetime.fromisoformat(str(value)).astimezone(timezone.utc)


def state_of(commit: Dict[str, Any]) -> Dict[str, Any]:
    """What an items commit (from ``metadata.commits``) holds.

    ``export``: the export the version builds on (its version, run id, scan start, stream ARN); ``batch``: the
    newest change batch applied since (None for the export itself); ``replayed``: whether the changes made
    since the export's scan start have been applied; ``upper``: no change at or after this time is in it
    (an export: its commit time; a merge: its read cut).
    """
    meta = commit["meta"]
    if meta.get("job") == EXPORT_JOB:
        committed = _utc(commit["timestamp"]).isoformat()
        return {"export": {"version": commit["version"], "run_id": meta.get("run_id"), "committed_at": committed,
                           "scan_started": meta.get("scan_started"), "stream_arn": meta.get("stream_arn")},
                "batch": None, "replayed": False, "upper": committed,
                "version": commit["version"], "job": EXPORT_JOB}
    state = dict(meta.get("state") or {})
    state.update(version=commit["version"], job=meta.get("job"))
    return state


def newest_state(spark, vault: str) -> Optional[Dict[str, Any]]:
    found = metadata.newest_commit(spark, path(vault))
    return None if found is None else state_of(found)


@contextmanager
def commit_metadata(spark, text: str) -> Iterator[None]:
    """Session-wide commit metadata for operations that take no ``userMetadata`` option (MERGE, OPTIMIZE)."""
    before = spark.conf.get(USER_METADATA_CONF, None)
    spark.conf.set(USER_METADATA_CONF, text)
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(USER_METADATA_CONF)
        else:
            spark.conf.set(USER_METADATA_CONF, before)


def ensure_properties(spark, location: str, properties: Dict[str, str]) -> None:
    """Set table properties that are missing or different (one commit, only when something changes)."""
    from delta.tables import DeltaTable

    current = DeltaTable.forPath(spark, location).detail().select("properties").first()[0] or {}
    wanted = {k: v for k, v in properties.items() if current.get(k) != v}
    if wanted:
        settings = ", ".join(f"'{k}' = '{v}'" for k, v in sorted(wanted.items()))
        spark.sql(f"ALTER TABLE delta.`{location}` SET TBLPROPERTIES ({settings})")


def merge_changes(spark, vault: str, newest, user_metadata: str, region: Optional[str] = None) -> Dict[str, int]:
    """Fold change rows (one per key, the newest: see ``changelog.newest_per_key``) into ``items``.

    A row applies only when it is newer in stream order than what the vault holds for its key (an export's
    row, with no ``change_seq``, is older than any change), so a replayed or older record changes nothing;
    a REMOVE deletes; an insert or update writes the new image. One Delta commit, and the new version's
    integrity record: the previous one's, less the rows replaced or deleted, plus the rows written.
    """
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    newer = "(t.change_seq IS NULL OR s.change_seq > t.change_seq)"
    values = {c: F.col("s." + c) for c in layout.ITEM_COLUMNS if c != layout.SOURCE}
    values[layout.SOURCE] = F.lit(layout.SOURCE_STREAM)
    table = DeltaTable.forPath(spark, path(vault))
    before = table.history(1).select("version").first()[0]
    previous = integrity.recorded(vault, before, region)
    newest = newest.cache()
    change = _content_change(newest, read(spark, vault, before)) if previous else None
    try:
        with commit_metadata(spark, user_metadata):
            (table.alias("t")
             .merge(newest.alias("s"), "t.pk = s.pk AND t.sk <=> s.sk")
             .whenMatchedDelete(condition=f"s.event_name = 'REMOVE' AND {newer}")
             .whenMatchedUpdate(condition=newer, set=values)
             .whenNotMatchedInsert(condition="s.event_name <> 'REMOVE'", values=values)
             .execute())
    finally:
        newest.unpersist()
    last = DeltaTable.forPath(spark, path(vault)).history(1).first()
    counted = ("numTargetRowsInserted", "numTargetRowsUpdated", "numTargetRowsDeleted")
    if last.version == before:  # Delta commits nothing when no row changes (every change was already held)
        return dict({"version": int(before)}, **{name: 0 for name in counted})
    if previous is not None and change is not None:
        integrity.record(vault, int(last.version), int(previous["items"]) + change[0],
                         int(previous["digest"]) + change[1], region, job=MERGE_JOB)
    metrics = dict(last.operationMetrics or {})
    return dict({"version": int(last.version)}, **{name: int(metrics.get(name, 0)) for name in counted})


def _content_change(newest, target) -> Optional[Tuple[int, int]]:
    """(change in item count, change in digest) that MERGE of ``newest`` into ``target`` makes (same guards).

    The changes (a few thousand rows, narrow columns) are broadcast to the scan of the target's key, order and
    digest columns: no shuffle of the table, and its item text is never read.
    """
    from pyspark.sql import functions as F

    decimal = "decimal(38,0)"
    writes_all = F.col("event_name") != "REMOVE"
    s = newest.select(layout.PK, layout.SK, F.col(layout.CHANGE_SEQ).alias("s_seq"), "event_name",
                      F.col(layout.ITEM_DIGEST).cast(decimal).alias("s_h"))
    every = s.agg(F.sum(F.when(writes_all, 1).otherwise(0)).alias("n"),
                  F.sum(F.when(writes_all, F.col("s_h"))).alias("d")).first()
    t = target.select(F.col(layout.PK).alias("t_pk"), F.col(layout.SK).alias("t_sk"),
                      F.col(layout.CHANGE_SEQ).alias("t_seq"), F.col(layout.ITEM_DIGEST).cast(decimal).alias("t_h"))
    matched = t.join(F.broadcast(s), on=(F.col("t_pk") == F.col(layout.PK)) & F.col("t_sk").eqNullSafe(
        F.col(layout.SK)), how="inner")
    applies = F.col("t_seq").isNull() | (F.col("s_seq") > F.col("t_seq"))
    zero = F.lit(0).cast(decimal)
    row = matched.agg(
        F.sum(F.when(writes_all, 1).otherwise(0)).alias("matched_writes"),
        F.sum(F.when(writes_all, F.col("s_h")).otherwise(zero)).alias("matched_writes_d"),
        F.sum(F.when(applies & writes_all, 1).otherwise(0)).alias("applied_writes"),
        F.sum(F.when(applies & writes_all, F.col("s_h")).otherwise(zero)).alias("applied_writes_d"),
        F.sum(F.when(applies, 1).otherwise(0)).alias("removed"),
        F.sum(F.when(applies, F.col("t_h")).otherwise(zero)).alias("removed_d"),
        F.sum(F.when(applies & F.col("t_h").isNull(), 1).otherwise(0)).alias("unknown")).first()
    if row["unknown"]:
        return None  # rows written before item_digest existed: this version cannot be recorded
    # Written: every unmatched insert or update, and the matched ones that pass the guard.
    added = int(every["n"] or 0) - int(row["matched_writes"] or 0) + int(row["applied_writes"] or 0)
    added_d = int(every["d"] or 0) - int(row["matched_writes_d"] or 0) + int(row["applied_writes_d"] or 0)
    return added - int(row["removed"] or 0), added_d - int(row["removed_d"] or 0)

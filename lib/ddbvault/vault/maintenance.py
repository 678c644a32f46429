"""Keeping a vault that merges often as fast to read as a fresh one, within its point-in-time window.

Frequent merges leave many small files in ``items`` and ``changes`` and deletion vectors in ``items``. After a
merge, once ``items`` holds more than ``compact_files`` files, the merge compacts both tables (Delta OPTIMIZE),
purges ``items``' deletion vectors into rewritten files (REORG ... APPLY (PURGE)), and vacuums files that left
the tables more than the retention window ago. The window (``--retention-days``, default 7) is how far back a
point-in-time restore can go: Delta keeps its log and every file a version within the window needs that long
(``delta.logRetentionDuration``, ``delta.deletedFileRetentionDuration``), so the versions a restore reads stay.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, Optional

from ddbvault.errors import UsageError
from ddbvault.vault import changelog, integrity, items, layout

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 7.0
DEFAULT_COMPACT_FILES = 64
MIN_RETENTION_DAYS = 1.0
RETENTION_CHECK_CONF = "spark.databricks.delta.retentionDurationCheck.enabled"


def check_retention(days: float) -> None:
    if not days >= MIN_RETENTION_DAYS:
        raise UsageError(f"--retention-days must be at least {MIN_RETENTION_DAYS:g} (the point-in-time window "
                         f"that compaction and vacuum keep), not {days}")


def properties(retention_days: float) -> Dict[str, str]:
    hours = math.ceil(retention_days * 24)
    return {"delta.logRetentionDuration": f"interval {max(hours, 30 * 24)} hours",
            "delta.deletedFileRetentionDuration": f"interval {hours} hours"}


def ensure(spark, vault: str, retention_days: float, region: Optional[str] = None) -> None:
    """Table properties the merge relies on: deletion vectors on items, the retention window on both. A property
    commit to items changes no content: the integrity record carries over to it."""
    from delta.tables import DeltaTable

    before = int(DeltaTable.forPath(spark, items.path(vault)).history(1).select("version").first()[0])
    items.ensure_properties(spark, items.path(vault), dict(items.TABLE_PROPERTIES, **properties(retention_days)))
    if layout.ITEM_DIGEST not in DeltaTable.forPath(spark, items.path(vault)).toDF().columns:  # an older vault
        spark.sql(f"ALTER TABLE delta.`{items.path(vault)}` ADD COLUMNS ({layout.ITEM_DIGEST} BIGINT)")
    _carry_record(spark, vault, before, region)
    if changelog.exists(spark, vault, region):
        items.ensure_properties(spark, changelog.path(vault), properties(retention_days))


def _carry_record(spark, vault: str, before: int, region: Optional[str]) -> None:
    """Copy version ``before``'s integrity record to the versions committed since (same content)."""
    from delta.tables import DeltaTable

    content = integrity.recorded(vault, before, region)
    newest = int(DeltaTable.forPath(spark, items.path(vault)).history(1).select("version").first()[0])
    if content is not None:
        for version in range(before + 1, newest + 1):
            integrity.record(vault, version, int(content["items"]), int(content["digest"]), region,
                             job="maintenance")


def _files(spark, location: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, location).detail().select("numFiles").first()[0] or 0)


def maintain(spark, vault: str, retention_days: float, compact_files: int = DEFAULT_COMPACT_FILES,
             region: Optional[str] = None) -> Dict[str, Any]:
    """Compact, purge and vacuum when ``items`` has grown past ``compact_files`` files; the figures. The table
    properties are the merge job's to set, once (:func:`ensure`)."""
    from delta.tables import DeltaTable

    before = _files(spark, items.path(vault))
    if before <= compact_files:
        return {"items_files": before, "compacted": False}
    last = DeltaTable.forPath(spark, items.path(vault)).history(1).select("version", "userMetadata").first()
    with items.commit_metadata(spark, last.userMetadata or ""):  # maintenance commits keep the state they found
        DeltaTable.forPath(spark, items.path(vault)).optimize().executeCompaction()
        spark.sql(f"REORG TABLE delta.`{items.path(vault)}` APPLY (PURGE)")
    last_log = DeltaTable.forPath(spark, changelog.path(vault)).history(1).select("userMetadata").first()[0]
    with items.commit_metadata(spark, last_log or ""):
        DeltaTable.forPath(spark, changelog.path(vault)).optimize().executeCompaction()
    hours = retention_days * 24
    check = spark.conf.get(RETENTION_CHECK_CONF, "true")
    spark.conf.set(RETENTION_CHECK_CONF, "false")  # a window under 7 days is the operator's choice
    try:
        DeltaTable.forPath(spark, items.path(vault)).vacuum(hours)
        DeltaTable.forPath(spark, changelog.path(vault)).vacuum(hours)
    finally:
        spark.conf.set(RETENTION_CHECK_CONF, check)
    _carry_record(spark, vault, int(last.version), region)  # compaction and purge rewrite files, not content
    after = _files(spark, items.path(vault))
    log.info("compacted %s: items %d -> %d files; vacuumed files older than %.0f hours", vault, before, after,
             hours)
    return {"items_files": after, "compacted": True}

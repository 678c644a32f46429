"""What the vault held at a Delta version, or what the table held at a moment (point in time).

The state at time T is a base version of ``items`` that reflects no change after T (the newest such version:
an export, or a merge whose read cut is at or before T) plus every logged change made up to T that the base
does not hold (newest in stream order per key wins; REMOVE deletes). Times are taken to the whole second:
ApproximateCreationDateTime is, so "as of T" means every change made before the end of T's second.
A moment the vault cannot answer (before its first retained export, after its newest merge's cut, or while
the table's stream was off) is refused with the range it can answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional

from ddbvault.errors import UsageError, VaultError
from ddbvault.vault import changelog, integrity, items, layout, metadata

ONE_SECOND = timedelta(seconds=1)


@dataclass
class VaultView:
    """Items as of a version or a time, the table capture that belongs to them, and a label for run records."""

    frame: Any
    meta: Dict[str, Any]
    version: int             # the Delta version read (the base version for a point in time)
    label: str               # "v<version>" or "t<epoch seconds>"
    as_of_time: Optional[str] = None
    integrity: Optional[Dict[str, Any]] = None  # the check of the version read (see vault.integrity)


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def answerable(checkpoint: Optional[Dict[str, Any]]) -> List[List[str]]:
    """The spans [from, to) of time the vault can answer, oldest first."""
    return [span for span in (checkpoint or {}).get("covered", []) if span[1]]


def describe_spans(spans: List[List[str]]) -> str:
    if not spans:
        return "none yet: run merge_increments after an export"
    return ", ".join(f"{(_t(b) - ONE_SECOND).isoformat()} (an incremental export's end)" if a == b
                     else f"{a} .. {(_t(b) - ONE_SECOND).isoformat()}" for a, b in spans)


def newest_state_at(states: List[Dict[str, Any]], end: datetime) -> Optional[Dict[str, Any]]:
    """The newest items state (newest first in ``states``) that reflects no change at or after ``end``."""
    return next((s for s in states if _t(s["upper"]) <= end), None)


def span_first_batch(states: List[Dict[str, Any]], export_state: Dict[str, Any]) -> Optional[int]:
    """The first change-log batch of the span that replayed the export of ``export_state`` (from the merge states
    built on it), or None when no merge recorded it."""
    version = export_state["export"]["version"]
    found = [int(s["first_batch"]) for s in states if s.get("replayed") and s.get("first_batch") is not None
             and (s.get("export") or {}).get("version") == version]
    return min(found) if found else None


def apply_changes(base, newest):
    """``base`` items with ``newest`` (one change row per key) applied: pure, like ``items.merge_changes``."""
    from pyspark.sql import functions as F

    b = base.select(*[F.col(c).alias("b_" + c) for c in layout.ITEM_COLUMNS])
    newest = newest.withColumn(layout.ITEM_DIGEST, integrity.share_column(F.col(layout.ITEM)))
    n = newest.select(*[F.col(c).alias("n_" + c) for c in (*layout.ITEM_COLUMNS, "event_name") if c != layout.SOURCE])
    joined = b.join(n, on=(F.col("b_pk") == F.col("n_pk")) & F.col("b_sk").eqNullSafe(F.col("n_sk")), how="full_outer")
    takes = F.col("n_pk").isNotNull() & (F.col("b_pk").isNull() | F.col("b_change_seq").isNull()
                                          | (F.col("n_change_seq") > F.col("b_change_seq")))
    out = []
    for c in layout.ITEM_COLUMNS:
        new = F.lit(layout.SOURCE_STREAM) if c == layout.SOURCE else F.col("n_" + c)
        out.append(F.when(takes, new).otherwise(F.col("b_" + c)).alias(c))
    return joined.where(~(takes & (F.col("n_event_name") == "REMOVE"))).select(*out)


def view(spark, vault: str, version: Optional[int] = None, as_of_time: Optional[datetime] = None,
         region: Optional[str] = None) -> VaultView:
    """The vault's items at ``version``, at ``as_of_time``, or as they are (neither)."""
    from pyspark.sql import functions as F

    if version is not None and as_of_time is not None:
        raise UsageError("--as-of-version and --as-of-time exclude each other: pick one")
    if not items.exists(spark, vault, region):
        raise VaultError(f"{vault} holds no items table yet: run export_table first")
    if as_of_time is None:
        found, meta = metadata.table_meta_at(spark, vault, version, region)
        frame = items.read(spark, vault, found)
        return VaultView(frame, meta, found, f"v{found}", integrity=integrity.check(vault, found, frame, region))
    moment = as_of_time.astimezone(timezone.utc)
    end = moment.replace(microsecond=0) + ONE_SECOND
    spans = answerable(changelog.newest_checkpoint(spark, vault, region))
    if not any(_t(a) <= end <= _t(b) for a, b in spans):
        raise VaultError(f"--as-of-time {moment.isoformat()} is outside what {vault} can answer; it can answer "
                         f"(UTC) {describe_spans(spans)}")
    states = [items.state_of(c) for c in metadata.commits(spark, items.path(vault))]
    base = newest_state_at(states, end)
    if base is None:
        raise VaultError(f"no version of {vault} is old enough for {moment.isoformat()} (its history was cleaned "
                         f"up); it can answer (UTC) {describe_spans(spans)} only where a version is kept")
    logged = changelog.read(spark, vault).where(F.col(layout.CHANGE_TIME) < F.lit(end))
    if base.get("replayed"):
        changes = logged.where(F.col(changelog.BATCH) > int(base["batch"]))
    else:
        since = _t(base["export"]["scan_started"]) - ONE_SECOND
        changes = logged.where((F.col(changelog.DAY) >= F.to_date(F.lit(since)))
                               & (F.col(layout.CHANGE_TIME) >= F.lit(since)))
        # Only the span that replays this export: a source used before it orders its changes another way.
        first = span_first_batch(states, base)
        if first is not None:
            changes = changes.where(F.col(changelog.BATCH) >= first)
    newest = changelog.newest_per_key(changes)
    _, meta = metadata.table_meta_at(spark, vault, base["version"], region)  # the capture files: no log walk
    base_frame = items.read(spark, vault, base["version"])
    checked = integrity.check(vault, base["version"], base_frame, region)
    return VaultView(apply_changes(base_frame, newest), meta, base["version"], f"t{int(end.timestamp()) - 1}",
                     moment.isoformat(), checked)

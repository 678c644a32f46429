"""The vault's identity, its table descriptions, and its run history.

Each export keeps its table capture (DescribeTable, TTL, tags, PITR) in a file of the vault's own,
``_ddbvault/captures/v<version>.json`` (the Delta version the export committed), written right after its commit:
Delta's log cleanup deletes commit files older than ``delta.logRetentionDuration``, and a capture kept only in a
commit's ``userMetadata`` would go with it. A restore ``--as-of-version N`` takes the newest capture at or before
N from a listing of that folder. The export commit's ``userMetadata`` still carries the capture too (vaults written
before the capture files exist are read that way). ``_ddbvault/table.json`` keeps a readable copy of the newest.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Dict, List, Optional, Tuple

from ddbvault.errors import VaultError
from ddbvault.vault import layout, store

log = logging.getLogger(__name__)

COMMIT_KEY = "ddbvault"
RUN_COMMIT_LOOKBACK = 100  # commits searched for a run's own (it committed moments ago)
CAPTURES_DIR = "captures"  # under _ddbvault/: one table capture per export, by version


def format_uri(vault: str) -> str:
    return layout.join(vault, layout.META_DIR, "format.json")


def claim(vault: str, table_meta: Dict[str, Any], region: Optional[str] = None, *,
          table_recreated: bool = False) -> Dict[str, Any]:
    """Check that ``vault`` is empty or already this table's vault, and stamp it on first use.

    Refuses a path holding anything else (another table's vault, a newer format, foreign files), and a table of
    the same name that is another table (another ARN: another region or account, or deleted and created again)
    unless ``table_recreated`` says the operator means the re-created one; the stamp then records the change.
    """
    table = table_meta["table_name"]
    stamp = store.read_json(format_uri(vault), region)
    if stamp is None:
        foreign = [n for n in store.list_names(vault, region) if n not in layout.VAULT_DIRS]
        if foreign or layout.ITEMS_DIR in store.list_names(vault, region):
            shown = ", ".join((foreign or [layout.ITEMS_DIR])[:5])
            raise VaultError(f"{vault} is not empty ({shown}) and is not a ddbvault vault: "
                             f"choose an empty path or the vault of table {table}")
        stamp = {
            "format_version": layout.FORMAT_VERSION,
            "table_name": table,
            "table_arn": table_meta["table"].get("TableArn"),
            "table_created_at": table_meta["table"].get("CreationDateTime"),
            "source_region": table_meta["region"],
            "key_schema": table_meta["table"]["KeySchema"],
            "created_at": table_meta["captured_at"],
        }
        store.write_json(format_uri(vault), stamp, region)
        log.info("new vault %s for table %s", vault, table)
        return stamp
    check_format(vault, stamp)
    if stamp.get("table_name") != table:
        raise VaultError(f"{vault} is the vault of table {stamp.get('table_name')} "
                         f"(region {stamp.get('source_region')}), not of {table}: use that table's own vault path")
    if stamp.get("key_schema") != table_meta["table"]["KeySchema"]:
        raise VaultError(f"table {table} now has key schema {table_meta['table']['KeySchema']} but {vault} holds "
                         f"{stamp.get('key_schema')}: the table was recreated; export it to a new vault path")
    arn, created = table_meta["table"].get("TableArn"), table_meta["table"].get("CreationDateTime")
    if stamp.get("table_arn") and arn and arn != stamp["table_arn"]:
        raise VaultError(f"{vault} protects table {table} {stamp['table_arn']} (region {stamp.get('source_region')}), "
                         f"not {arn}: export that table to its own vault path")
    if stamp.get("table_created_at") and created and created != stamp["table_created_at"]:
        # DynamoDB keeps a table's ARN when it is deleted and created again under its name: its creation time tells.
        if not table_recreated:
            raise VaultError(f"table {table} in {table_meta['region']} was created at {created}, but {vault} protects "
                             f"the one created at {stamp['table_created_at']}: the table was deleted and created "
                             f"again; pass --table-recreated to let this vault follow the new table, or export it "
                             f"to a new vault path")
        stamp = dict(stamp, table_created_at=created, previous_tables=[
            *stamp.get("previous_tables", []), {"table_arn": stamp["table_arn"],
                                                "created_at": stamp["table_created_at"],
                                                "replaced_at": table_meta["captured_at"]}])
        store.write_json(format_uri(vault), stamp, region)
        log.warning("vault %s now protects table %s created at %s", vault, table, created)
    return stamp


def check_format(vault: str, stamp: Dict[str, Any]) -> None:
    version = stamp.get("format_version")
    if not isinstance(version, int) or version > layout.FORMAT_VERSION:
        raise VaultError(f"{vault} has vault format {version}; this ddbvault reads format "
                         f"{layout.FORMAT_VERSION}: upgrade ddbvault")


def read_stamp(vault: str, region: Optional[str] = None) -> Dict[str, Any]:
    """The vault's format stamp; a clear error when ``vault`` is no vault."""
    stamp = store.read_json(format_uri(vault), region)
    if stamp is None:
        raise VaultError(f"{vault} is not a ddbvault vault (no {layout.META_DIR}/format.json): "
                         f"check --vault, or run export_table first")
    check_format(vault, stamp)
    return stamp


def commit_metadata(job: str, run_id: str, **fields: Any) -> str:
    """The ``userMetadata`` text of a ddbvault commit to ``items``."""
    return json.dumps({COMMIT_KEY: {"format_version": layout.FORMAT_VERSION, "job": job, "run_id": run_id,
                                    **fields}}, sort_keys=True, default=str)


def parse_commit(user_metadata: Optional[str]) -> Optional[Dict[str, Any]]:
    """The ddbvault part of a commit's ``userMetadata``; None for commits of others (or unreadable ones)."""
    if not user_metadata:
        return None
    try:
        found = json.loads(user_metadata)
    except ValueError:
        return None
    return found.get(COMMIT_KEY) if isinstance(found, dict) else None


def commits(spark, path: str, limit: Optional[int] = None) -> List[Dict[str, Any]]:
    """ddbvault's commits to the Delta table at ``path``, newest first: ``{version, timestamp, meta}`` each.
    Commits without ddbvault metadata (another writer's, or maintenance without it) are left out."""
    from delta.tables import DeltaTable

    try:
        table = DeltaTable.forPath(spark, path)
        history = table.history(limit) if limit else table.history()
        rows = history.select("version", "timestamp", "userMetadata").orderBy("version", ascending=False).collect()
    except Exception as exc:
        raise damaged_log(path, exc) from exc
    out = []
    for row in rows:
        meta = parse_commit(row.userMetadata)
        if meta is not None:
            out.append({"version": int(row.version), "timestamp": row.timestamp, "meta": meta})
    return out


def commit_by_run_id(spark, path: str, run_id: str, limit: int = RUN_COMMIT_LOOKBACK) -> Optional[Dict[str, Any]]:
    """The commit of the Delta table at ``path`` whose ddbvault metadata names ``run_id``, among its newest
    ``limit`` commits: ``{version, timestamp, operation, metrics, meta}``; None when none of them does.

    A job finds its own commit this way, not as "the newest": another writer (a maintenance job, an operator's
    OPTIMIZE) may have committed after it.
    """
    from delta.tables import DeltaTable

    try:
        rows = (DeltaTable.forPath(spark, path).history(limit)
                .select("version", "timestamp", "operation", "operationMetrics", "userMetadata")
                .orderBy("version", ascending=False).collect())
    except Exception as exc:
        raise damaged_log(path, exc) from exc
    for row in rows:
        meta = parse_commit(row.userMetadata)
        if meta is not None and meta.get("run_id") == run_id:
            return {"version": int(row.version), "timestamp": row.timestamp, "operation": row.operation,
                    "metrics": dict(row.operationMetrics or {}), "meta": meta}
    return None


def damaged_log(path: str, exc: BaseException) -> VaultError:
    """The error for a Delta log that cannot be read (a corrupt or half-written commit file)."""
    java = getattr(exc, "java_exception", None)
    text = str(java.toString()) if java is not None else str(exc)
    first = text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
    return VaultError(f"the Delta log of {path} cannot be read ({first}): the vault is damaged; restore its "
                      f"_delta_log files from S3 versioning, or start a new vault path with export_table")


def newest_commit(spark, path: str) -> Optional[Dict[str, Any]]:
    """The newest ddbvault commit of ``path`` (looking at the last 50 commits first, then the whole log)."""
    found = commits(spark, path, 50)
    if not found:
        found = commits(spark, path)
    return found[0] if found else None


def capture_uri(vault: str, version: int) -> str:
    return layout.join(vault, layout.META_DIR, CAPTURES_DIR, f"v{version:020d}.json")


def record_capture(vault: str, version: int, table_meta: Dict[str, Any], region: Optional[str] = None,
                   **extra: Any) -> None:
    """Keep the table capture an export committed as ``version`` (see the module docstring)."""
    store.write_json(capture_uri(vault, version), dict({"version": version, "table_meta": table_meta}, **extra),
                     region)


def captured_versions(vault: str, region: Optional[str] = None) -> List[int]:
    """Versions with a capture file, oldest first (one listing of the captures folder)."""
    names = store.list_names(layout.join(vault, layout.META_DIR, CAPTURES_DIR), region)
    return sorted(int(n[1:-5]) for n in names if n.startswith("v") and n.endswith(".json") and n[1:-5].isdigit())


def latest_version(spark, path: str) -> int:
    """The newest version of the Delta table at ``path`` (its newest commit only, not the whole history)."""
    from delta.tables import DeltaTable

    try:
        return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])
    except Exception as exc:
        raise damaged_log(path, exc) from exc


def table_meta_at(spark, vault: str, version: Optional[int] = None,
                  region: Optional[str] = None) -> Tuple[int, Dict[str, Any]]:
    """(``version``, or the newest version when None; the table capture of the newest export at or before it).
    Commits without a capture (stream merges, maintenance) still count as versions: "the newest" is the newest
    data, never the last export's. The capture comes from the vault's capture files; a vault written before they
    existed falls back to the export commits' ``userMetadata`` (as long as Delta's log still holds them)."""
    items = layout.join(vault, layout.ITEMS_DIR)
    if not store.delta_table_exists(items, region):
        raise VaultError(f"{vault} holds no items table yet: run export_table first")
    newest = latest_version(spark, items)
    if version is not None and (version < 0 or version > newest):
        raise VaultError(f"{vault} has versions 0..{newest}; --as-of-version {version} is not one of them")
    at = newest if version is None else version
    kept = [v for v in captured_versions(vault, region) if v <= at]
    if kept:
        found = store.read_json(capture_uri(vault, kept[-1]), region) or {}
        if "table_meta" in found:
            return at, found["table_meta"]
    return at, _table_meta_from_log(spark, vault, items, at)


def _table_meta_from_log(spark, vault: str, items: str, version: int) -> Dict[str, Any]:
    """The capture in the newest export commit at or before ``version``: vaults from before the capture files."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    try:
        history = DeltaTable.forPath(spark, items).history().select("version", "userMetadata")
        rows = history.where(F.col("version") <= version).orderBy(F.col("version").desc()).toLocalIterator()
        for row in rows:
            found = parse_commit(row.userMetadata)
            if found and "table_meta" in found:
                return found["table_meta"]
    except Exception as exc:
        raise damaged_log(items, exc) from exc
    raise VaultError(f"no table description in {vault} at or before version {version}: "
                     f"the vault's history was cleaned up; restore a newer version")


def record_run(vault: str, summary: Dict[str, Any], region: Optional[str] = None) -> None:
    """Append the run to ``_ddbvault/runs/`` (one file per run, named by its id)."""
    store.write_json(layout.join(vault, layout.META_DIR, "runs", summary["run_id"] + ".json"), summary, region)

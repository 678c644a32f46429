"""Verify: prove a replica table equals its vault, item by item.

Both sides are reduced to (key, sha256 of the canonical item text): the replica by a parallel scan through
the same codec the export uses, the vault by its stored text. A full outer join on the key classifies every
key as same, missing (in the vault, not the table), extra (in the table, not the vault) or different.
A vault item absent from the table counts as expired, not missing, only when the replica has TTL on for an
attribute the item holds as a number of seconds in the past, and less than five years in the past: DynamoDB
deletes such items on its own, and ignores older TTL values.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple

from ddbvault.dynamo import budget as budget_service
from ddbvault.dynamo import retry
from ddbvault.dynamo import table as tables
from ddbvault.errors import TableError, VaultError, VerifyMismatch, raising_executor_errors
from ddbvault.export import (
    ScanPlan,
    group_segments,
    plan_segments,
    read_budget,
    scan_partition,
    units_per_item,
)
from ddbvault.progress import ProgressServer
from ddbvault.vault import integrity, items, layout, metadata, pointintime, staging, store

log = logging.getLogger(__name__)

STATUS = "status"
SAME, MISSING, EXTRA, DIFFERENT, EXPIRED = "same", "missing", "extra", "different", "expired"
MISMATCHES = (MISSING, EXTRA, DIFFERENT)
TTL_WINDOW_S = 5 * 365 * 24 * 3600
ITEM_HASH = "item_sha256"  # a scanned replica kept as (pk, sk, hash): what the comparison needs of it
SCRATCH_DIR = "tmp"        # under _ddbvault/: per run, the replica's scanned hashes, removed when the run ends


@dataclass
class VerifyOptions:
    vault: str
    table: Optional[str]
    region: str
    vault_region: Optional[str] = None
    as_of_version: Optional[int] = None
    as_of_time: Optional[datetime] = None
    segments: Optional[int] = None
    max_read_units: Optional[float] = None
    read_percent: Optional[float] = None
    readers_per_task: int = 4
    max_attempts: int = 12
    throttle_s: float = retry.RetryPolicy.throttle_s
    examples: int = 5


def ttl_seconds(item_col, attribute: str):
    """The item's TTL attribute as epoch seconds (null when absent or not a number)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    # A one-field schema, not a JSON path: get_json_object's $['name'] cannot hold a quote, and an attribute
    # name may be any text. Only that field is parsed; its N stays text until the cast.
    schema = T.StructType([T.StructField(attribute, T.StructType([T.StructField("N", T.StringType())]))])
    return F.from_json(item_col, schema).getField(attribute).getField("N").cast("double")


def expired(ttl_col, now: float):
    """An item absent from a table with TTL on counts as deleted by TTL: its TTL time has passed, and is less
    than five years ago (DynamoDB ignores older values)."""
    from pyspark.sql import functions as F

    return (ttl_col < F.lit(now)) & (ttl_col >= F.lit(now - TTL_WINDOW_S))


def compare(vault_items, replica_items, ttl_attribute: Optional[str] = None, now_epoch: Optional[float] = None):
    """Per key: (pk, sk, status). Both inputs have the items columns PK, SK and ITEM. Pure: no I/O."""
    from pyspark.sql import functions as F

    v = vault_items.select(F.col(layout.PK).alias("v_pk"), F.col(layout.SK).alias("v_sk"),
                           F.sha2(F.col(layout.ITEM), 256).alias("v_hash"),
                           (ttl_seconds(F.col(layout.ITEM), ttl_attribute) if ttl_attribute
                            else F.lit(None).cast("double")).alias("v_ttl"))
    # The replica side may come as item text or already as its hashes (see :func:`replica_hashes`).
    r_hash = F.col(ITEM_HASH) if ITEM_HASH in replica_items.columns else F.sha2(F.col(layout.ITEM), 256)
    r = replica_items.select(F.col(layout.PK).alias("r_pk"), F.col(layout.SK).alias("r_sk"), r_hash.alias("r_hash"))
    joined = v.join(r, on=(F.col("v_pk") == F.col("r_pk")) & F.col("v_sk").eqNullSafe(F.col("r_sk")),
                    how="full_outer")
    now = time.time() if now_epoch is None else now_epoch
    status = (F.when(F.col("r_hash").isNull() & expired(F.col("v_ttl"), now), F.lit(EXPIRED))
              .when(F.col("r_hash").isNull(), F.lit(MISSING))
              .when(F.col("v_hash").isNull(), F.lit(EXTRA))
              .when(F.col("v_hash") != F.col("r_hash"), F.lit(DIFFERENT))
              .otherwise(F.lit(SAME)))
    return joined.select(F.coalesce("v_pk", "r_pk").alias(layout.PK), F.coalesce("v_sk", "r_sk").alias(layout.SK),
                         status.alias(STATUS))


def summarize(statuses, examples: int) -> Dict[str, Any]:
    """Counts per status and up to ``examples`` keys of each mismatch kind.

    Two actions on ``statuses``: its lineage must not reach a live table's Scan (a cache can be evicted, and
    Spark then recomputes it from its lineage); :func:`verify_replica` hands it a replica read from scratch files.
    """
    from pyspark.sql import functions as F

    statuses = statuses.cache()
    counts = {row[STATUS]: row["count"] for row in statuses.groupBy(STATUS).count().collect()}
    out: Dict[str, Any] = {kind: int(counts.get(kind, 0)) for kind in (SAME, *MISMATCHES, EXPIRED)}
    shown: Dict[str, List[Dict[str, Optional[str]]]] = {}
    for kind in MISMATCHES:
        if out[kind]:
            rows = statuses.where(F.col(STATUS) == kind).orderBy(layout.PK, layout.SK).limit(examples).collect()
            shown[kind] = [{layout.PK: r[layout.PK], layout.SK: r[layout.SK]} for r in rows]
    out["examples"] = shown
    statuses.unpersist()
    return out


def replica_items(spark, plan: ScanPlan, groups: List[List[int]]):
    """The replica table scanned in parallel into the items columns (the export's scan and codec): at least
    ``pk``, ``sk``, ``item`` and ``item_size``. With the JVM codec on the classpath the scan hands Python's
    workers' pages to it untouched; an item it refuses raises ``ItemCodecError`` from the action (wrap it in
    ``staging.raising_codec_errors``)."""
    from pyspark.sql import functions as F

    pages = staging.register_jvm_codec(spark)
    rows = spark.sparkContext.parallelize(groups, len(groups)).flatMap(lambda group: group) \
        .mapPartitions(lambda segs: scan_partition(plan, segs, pages))
    if not pages:
        return spark.createDataFrame(rows, layout.items_schema(), verifySchema=False)
    made = staging.rows_of_pages(spark.createDataFrame(rows, "page binary", verifySchema=False), plan.hash_key,
                                 plan.range_key)
    return made.select(F.col(staging.PK).alias(layout.PK), F.col(staging.SK).alias(layout.SK),
                       F.col(staging.ITEM).alias(layout.ITEM), F.col(staging.SIZE).alias(layout.ITEM_SIZE))


def replica_hashes(replica):
    """(pk, sk, sha256 of the item text) of scanned replica items: all :func:`compare` needs, kept on storage so
    the replica is scanned once, a fraction of its size."""
    from pyspark.sql import functions as F

    return replica.select(layout.PK, layout.SK, F.sha2(F.col(layout.ITEM), 256).alias(ITEM_HASH))


def vault_bytes(vault_items) -> int:
    """DynamoDB's size of the vault's items in bytes (the sum of ``item_size``: one narrow aggregate)."""
    return vault_figures(vault_items)[0]


def vault_figures(vault_items) -> Tuple[int, int]:
    """(bytes, items) of the vault's items, in one narrow aggregate."""
    from pyspark.sql import functions as F

    row = vault_items.agg(F.sum(layout.ITEM_SIZE), F.count(F.lit(1))).first()
    return int(row[0] or 0), int(row[1] or 0)


def planning_bytes(description: Dict[str, Any], vault_size: int) -> int:
    """The size the replica's scan segments are planned by: the larger of the replica's ``TableSizeBytes`` and the
    vault's. DynamoDB updates ``TableSizeBytes`` about every six hours, so a replica restored a moment ago reports
    0 (or an older, smaller size) while it holds every item of the vault."""
    return max(int(description.get("TableSizeBytes") or 0), int(vault_size or 0), 0)


def verify_vault(opts: VerifyOptions, run, spark=None) -> Dict[str, Any]:
    """Without a table: check every version of the vault that has an integrity record and is still kept."""
    from delta.tables import DeltaTable

    from ddbvault.session import build_session, set_vault_region

    metadata.read_stamp(opts.vault, opts.vault_region)
    run.finalizers.append(lambda summary: metadata.record_run(opts.vault, summary, opts.vault_region))
    spark = set_vault_region(spark or build_session(f"ddbvault-{run.job}-vault"), opts.vault, opts.vault_region)
    kept = {int(r.version) for r in DeltaTable.forPath(spark, items.path(opts.vault)).history().select("version")
            .collect()}
    results, damaged = [], []
    for version in integrity.versions(opts.vault, opts.vault_region):
        if version not in kept:
            continue  # its commit left Delta's log: time travel cannot read it any more
        try:
            results.append(integrity.check(opts.vault, version, items.read(spark, opts.vault, version),
                                           opts.vault_region))
        except VaultError as exc:
            results.append({"version": version, "status": "damaged", "error": str(exc)})
            damaged.append(version)
    unrecorded = sorted(kept - {r["version"] for r in results})
    run.summary.update({"vault": opts.vault, "versions_checked": len(results), "versions_damaged": damaged,
                        "versions_unrecorded": unrecorded, "checks": results})
    if damaged:
        raise VaultError(f"{opts.vault}: versions {damaged} are damaged (their content does not match what was "
                         f"written; see the run record for each); restore another version or run a new export")
    log.info("vault %s: %d versions whole", opts.vault, len(results))
    return run.summary


def verify_replica(opts: VerifyOptions, run, spark=None) -> Dict[str, Any]:
    """Compare ``opts.table`` with ``opts.vault``; raises VerifyMismatch unless they are equal."""
    from ddbvault.session import build_session, set_vault_region

    metadata.read_stamp(opts.vault, opts.vault_region)
    run.finalizers.append(lambda summary: metadata.record_run(opts.vault, summary, opts.vault_region))
    description = tables.describe(opts.table, opts.region)
    if description is None:
        raise TableError(f"table {opts.table} does not exist in region {opts.region}: check --table and --region, "
                         f"or run restore_table first")
    spark = set_vault_region(spark or build_session(f"ddbvault-{run.job}-{opts.table}"), opts.vault, opts.vault_region)
    view = pointintime.view(spark, opts.vault, opts.as_of_version, opts.as_of_time, opts.vault_region)
    version, meta, vault_items = view.version, view.meta, view.frame
    run.summary.update({"table": opts.table, "region": opts.region, "vault": opts.vault, "vault_version": version,
                        "as_of_time": view.as_of_time, "vault_check": view.integrity})
    # Only the replica's own TTL can have deleted an item from it: TTL off there means nothing is expired.
    ttl_attribute = tables.ttl_attribute(opts.table, opts.region)
    run.summary["replica_ttl_attribute"] = ttl_attribute

    hash_key, range_key = tables.key_names(meta)
    budget, _ = read_budget(description, opts.max_read_units, opts.read_percent)
    slots = spark.sparkContext.defaultParallelism
    # The vault's size (its base version's: a point in time adds only its changes) when the replica's lags.
    vault_size, vault_count = vault_figures(items.read(spark, opts.vault, version))
    size = planning_bytes(description, vault_size if opts.segments is None else 0)
    total = plan_segments(size, slots, opts.readers_per_task, opts.segments)
    groups = group_segments(total, opts.readers_per_task)
    run.summary.update({"segments": total, "read_budget_rcu": budget, "planned_bytes": size})
    started = time.time()
    host = budget_service.driver_host(spark)
    with budget_service.BudgetService(budget, host=host, unit_name="RCU",
                                      callers=min(len(groups), slots) * opts.readers_per_task) as reads, \
            ProgressServer(f"verify {opts.table}", expected_items=int(description.get("ItemCount") or 0) or None,
                           budget=budget, parts=total, advertise=host) as progress:
        plan = ScanPlan(opts.table, opts.region, hash_key, range_key, total, reads.endpoint, opts.readers_per_task,
                        False, opts.max_attempts, datetime.now(timezone.utc), run.run_id, progress.address,
                        units_per_item({"TableSizeBytes": vault_size, "ItemCount": vault_count}, False)
                        or units_per_item(description, False), opts.throttle_s)
        replica = replica_items(spark, plan, groups)
        # The live table is scanned exactly once, by this write: everything after reads the scratch copy, so no
        # second action and no evicted cache can scan it again (twice the RCU, and a second, different reading).
        scratch = layout.join(opts.vault, layout.META_DIR, SCRATCH_DIR, run.run_id)
        scanned = layout.join(scratch, "replica")
        try:
            with staging.raising_codec_errors(f"what the scan of table {opts.table} read"), raising_executor_errors():
                replica_hashes(replica).write.mode("overwrite").parquet(scanned)
                result = summarize(compare(vault_items, spark.read.parquet(scanned), ttl_attribute), opts.examples)
        finally:
            store.delete_tree(scratch, opts.vault_region)
    run.summary["settings_differences"] = tables.settings_differences(meta, tables.capture(opts.table, opts.region))
    for difference in run.summary["settings_differences"]:
        log.warning("verify %s: settings differ from the vault's table: %s", opts.table, difference)
    run.summary.update({
        "vault_items": result[SAME] + result[MISSING] + result[DIFFERENT] + result[EXPIRED],
        "replica_items": result[SAME] + result[EXTRA] + result[DIFFERENT],
        "same": result[SAME], "missing": result[MISSING], "extra": result[EXTRA], "different": result[DIFFERENT],
        "expired": result[EXPIRED], "examples": result["examples"], "consumed_rcu": round(reads.consumed, 1),
        "compare_s": round(time.time() - started, 3), "read_capacity": reads.summary(),
    })
    log.info("verify %s, its pace: %s", opts.table, run.summary["read_capacity"]["advice"])
    bad = {kind: result[kind] for kind in MISMATCHES if result[kind]}
    if bad:
        shown = "; ".join(f"{kind} {count} (e.g. {result['examples'][kind][0]})" for kind, count in bad.items())
        raise VerifyMismatch(f"table {opts.table} in {opts.region} differs from {opts.vault} {view.label}: {shown}; "
                             f"rerun restore_table with --existing-table to repair it (it puts what is missing or "
                             f"different and deletes what the vault does not hold), then verify again")
    log.info("verify %s: %d items equal to vault %s", opts.table, result[SAME], view.label)
    return run.summary

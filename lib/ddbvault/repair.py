"""Repair: make an existing table equal the vault, writing only what differs.

What ``verify_replica`` recommends after a mismatch. The table is scanned once (the export's parallel scan and
codec), joined with the vault by key and content hash, and then, at the write budget: vault items missing from
the table or different in it are put, items the vault does not hold are deleted, and items the table's own TTL
has removed (verify's ``expired``) are left out. No marker of an earlier load is consulted, so a rerun repairs
whatever is still wrong; a repair of an exact table writes nothing.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, Optional, Tuple

from ddbvault import codec
from ddbvault.dynamo import batch_write, retry, wire
from ddbvault.dynamo import budget as budget_service
from ddbvault.dynamo import table as tables
from ddbvault.errors import raising_executor_errors
from ddbvault.export import ScanPlan, group_segments, plan_segments, read_budget
from ddbvault.vault import layout, staging
from ddbvault.verify import expired, planning_bytes, replica_items, ttl_seconds, vault_bytes

log = logging.getLogger(__name__)

DELETE_SIZE_ESTIMATE = 1024  # a delete costs the deleted item's size; unknown until DynamoDB reports it


@dataclass(frozen=True)
class RepairPlan:
    table: str
    region: str
    key_names: Tuple[str, ...]
    budget: Optional[budget_service.Endpoint]
    writers: int
    wcu_multiplier: float
    max_attempts: int
    throttle_s: float = retry.RetryPolicy.throttle_s
    key_types: Tuple[str, ...] = ()  # the key attributes' types, hash then range (for the wire path)
    wire: bool = True                # send stored text as it is (dynamo.wire); False: decode, botocore


def repair_partition(plan: RepairPlan, rows: Iterator[Any]) -> Iterator[Dict[str, Any]]:
    """One Spark task: put or delete its rows' items (rows of item text, size, delete, pk, sk); one stats
    dict."""
    counts = {"puts": 0, "deletes": 0}

    def records():
        for item_text, size, delete, pk, sk in rows:
            if plan.wire:
                values = (pk, sk)[:len(plan.key_types)]
                key = wire.key_tuple(plan.key_types, values)
                if delete:
                    counts["deletes"] += 1
                    yield wire.WireItem(wire.key_text(plan.key_names, plan.key_types, values), key, True), \
                        DELETE_SIZE_ESTIMATE
                else:
                    counts["puts"] += 1
                    yield wire.WireItem(item_text, key), int(size)
                continue
            item = codec.decode_item(item_text)
            if delete:
                counts["deletes"] += 1
                yield {name: item[name] for name in plan.key_names}, DELETE_SIZE_ESTIMATE, True
            else:
                counts["puts"] += 1
                yield item, int(size)

    stats = write_paced(plan, records())
    yield dict(asdict(stats), **counts)


def write_paced(plan: Any, records: Iterator[tuple]) -> batch_write.WriteStats:
    """One task's writes (a restore's load or a repair) at the job's write budget: ``plan`` names the table, its
    key, the budget's endpoint, the writer threads, the WCU multiplier and the retry limits."""
    limiter = budget_service.limiter_for(plan.budget, plan.writers)
    try:
        return batch_write.write_items(
            plan.table, records, key_names=plan.key_names, region=plan.region, limiter=limiter,
            policy=retry.RetryPolicy(max_attempts=plan.max_attempts, throttle_s=plan.throttle_s),
            wcu_multiplier=plan.wcu_multiplier, threads=plan.writers)
    finally:
        budget_service.close(limiter)


def differences(vault_items, replica, ttl_attribute: Optional[str], now_epoch: Optional[float] = None):
    """(item text, size, delete) of every write that makes the replica equal the vault. Pure."""
    from pyspark.sql import functions as F

    v = vault_items.select(F.col(layout.PK).alias("v_pk"), F.col(layout.SK).alias("v_sk"),
                           F.col(layout.ITEM).alias("v_item"), F.col(layout.ITEM_SIZE).alias("v_size"),
                           F.sha2(F.col(layout.ITEM), 256).alias("v_hash"),
                           (ttl_seconds(F.col(layout.ITEM), ttl_attribute) if ttl_attribute
                            else F.lit(None).cast("double")).alias("v_ttl"))
    r = replica.select(F.col(layout.PK).alias("r_pk"), F.col(layout.SK).alias("r_sk"),
                       F.col(layout.ITEM).alias("r_item"), F.sha2(F.col(layout.ITEM), 256).alias("r_hash"))
    joined = v.join(r, on=(F.col("v_pk") == F.col("r_pk")) & F.col("v_sk").eqNullSafe(F.col("r_sk")),
                    how="full_outer")
    now = time.time() if now_epoch is None else now_epoch
    put = (F.col("v_pk").isNotNull()
           & ((F.col("r_pk").isNull() & ~F.coalesce(expired(F.col("v_ttl"), now), F.lit(False)))
              | (F.col("r_hash") != F.col("v_hash"))))
    puts = joined.where(put).select(F.col("v_pk").alias(layout.PK), F.col("v_sk").alias(layout.SK),
                                    F.col("v_item").alias(layout.ITEM),
                                    F.col("v_size").alias(layout.ITEM_SIZE), F.lit(False).alias("delete"))
    deletes = joined.where(F.col("v_pk").isNull()).select(
        F.col("r_pk").alias(layout.PK), F.col("r_sk").alias(layout.SK), F.col("r_item").alias(layout.ITEM),
        F.lit(DELETE_SIZE_ESTIMATE).cast("long").alias(layout.ITEM_SIZE), F.lit(True).alias("delete"))
    return puts.unionByName(deletes)


def key_types(meta: Dict[str, Any]) -> Tuple[str, ...]:
    """The types of the table's key attributes (S, N, B), hash key then range key."""
    types = {a["AttributeName"]: a["AttributeType"] for a in meta["table"]["AttributeDefinitions"]}
    return tuple(types[name] for name in tables.key_names(meta) if name)


def spread(frame, partitions: int):
    """The load's rows dealt to ``partitions`` by a hash of the whole key (hash and range key), each partition in
    the order of a second hash of the key. A partition key with many items (30% of a table under one key is
    common: a tenant, a day) then reaches every task, and within a task its items are interleaved with other
    keys instead of arriving as one long run: a run of one partition key goes to one DynamoDB partition, which
    takes at most 1,000 WCU/s whatever the table's capacity. Deterministic, so a resumed load sees the same
    partitions."""
    from pyspark.sql import functions as F

    key = [F.col(layout.PK), F.col(layout.SK)]
    return frame.repartition(partitions, *key).sortWithinPartitions(F.xxhash64(*key))


def repair_table(spark, opts, frame, *, meta: Dict[str, Any], target: Dict[str, Any], budget: float,
                 wcu_multiplier: float, run_id: str) -> Dict[str, Any]:
    """Scan ``target`` once and write what differs from ``frame`` (the vault's items); the figures."""
    hash_key, range_key = tables.key_names(meta)
    slots = spark.sparkContext.defaultParallelism
    read, _ = read_budget(target, None, None)
    # TableSizeBytes lags by hours (0 right after a restore): the vault's size plans the segments when larger.
    total = plan_segments(planning_bytes(target, vault_bytes(frame)), slots, 4, None)
    groups = group_segments(total, 4)
    ttl_attribute = tables.ttl_attribute(opts.table, opts.region)
    partitions = max(2 * slots, 1)
    host = budget_service.driver_host(spark)
    started = time.time()
    # The scan (read budget) and the writes (write budget) run in the same Spark job: two budgets, one each.
    with budget_service.BudgetService(read, host=host, unit_name="RCU") as reads, \
            budget_service.BudgetService(budget, host=host, unit_name="WCU") as writes_budget:
        scan = ScanPlan(opts.table, opts.region, hash_key, range_key, total, reads.endpoint, 4, False,
                        opts.max_attempts, datetime.now(timezone.utc), run_id, None, None, opts.throttle_s)
        writes = differences(frame, replica_items(spark, scan, groups), ttl_attribute)
        plan = RepairPlan(opts.table, opts.region, (hash_key,) + ((range_key,) if range_key else ()),
                          writes_budget.endpoint, opts.writers_per_task, wcu_multiplier, opts.max_attempts,
                          opts.throttle_s, key_types(meta), getattr(opts, "wire", True))
        with staging.raising_codec_errors(f"what the scan of table {opts.table} read"), raising_executor_errors():
            results = (spread(writes.select(layout.PK, layout.SK, layout.ITEM, layout.ITEM_SIZE, "delete"),
                              partitions)
                       .select(layout.ITEM, layout.ITEM_SIZE, "delete", layout.PK, layout.SK).rdd
                       .mapPartitions(lambda rows: repair_partition(plan, rows)).collect())
    puts, deletes = sum(r["puts"] for r in results), sum(r["deletes"] for r in results)
    log.info("repair of %s: %d items put, %d deleted, %.1f RCU read", opts.table, puts, deletes, reads.consumed)
    return {"repaired_puts": puts, "repaired_deletes": deletes,
            "consumed_wcu": round(writes_budget.consumed, 1), "consumed_rcu": round(reads.consumed, 1),
            "load_s": round(time.time() - started, 3),
            "throttle_retries": sum(r["retries"] for r in results),
            "unprocessed_retries": sum(r["unprocessed_retries"] for r in results),
            "scan_segments": total, "partitions": partitions, "ttl_attribute_on_table": ttl_attribute}

"""Merge cost follows the changes, not the table: 10,000 changes merged into vaults of 200,000 and 2,000,000 items,
each against rewriting that vault (a Delta overwrite of the same rows). Figures, not tests.

Vault rows are generated directly (no DynamoDB, no scan): the merge's own path is timed, the change log append
and the MERGE into ``items`` (``merge.apply_batches``), exactly as ``merge_increments`` runs them once the stream
records are read.

    .venv/bin/python bench/bench_merge.py [--sizes 200000 2000000] [--changes 10000] [--item-bytes 800]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(os.path.dirname(HERE), "lib"), HERE]

import common  # noqa: E402

from ddbvault.merge import apply_batches  # noqa: E402
from ddbvault.vault import changelog, integrity, items, layout, maintenance, metadata  # noqa: E402

SCAN_STARTED = datetime(2026, 11, 27, 0, 0, tzinfo=timezone.utc)


def payload(seed, item_bytes: int, salt: str):
    """About ``item_bytes`` of hex text that differs per item (compresses like real attribute text, unlike a
    repeated character, so the Parquet files are of a realistic size)."""
    from pyspark.sql import functions as F

    parts = [F.sha2(F.concat(seed.cast("string"), F.lit(f"{salt}{k}")), 512) for k in range(max(item_bytes // 128, 1))]
    return F.concat(*parts)


def vault_rows(spark, n: int, item_bytes: int):
    """``n`` items rows of about ``item_bytes`` each, as an export writes them (built by Spark SQL, no Python)."""
    from pyspark.sql import functions as F

    pk = F.concat(F.lit("user-"), (F.col("id") % F.lit(max(n // 4, 1))).cast("string"))
    sk = F.col("id").cast("string")
    text = F.concat(F.lit('{"payload":{"S":"'), payload(F.col("id"), item_bytes, "v"), F.lit('"},"pk":{"S":"'), pk,
                    F.lit('"},"sk":{"N":"'), sk, F.lit('"}}'))
    return (spark.range(n).select(pk.alias(layout.PK), sk.alias(layout.SK), text.alias(layout.ITEM))
            .withColumn(layout.ITEM_SIZE, F.length(layout.ITEM).cast("long"))
            .withColumn(layout.SOURCE, F.lit(layout.SOURCE_EXPORT))
            .withColumn(layout.CHANGE_TIME, F.lit(SCAN_STARTED).cast("timestamp"))
            .withColumn(layout.CHANGE_SEQ, F.lit(None).cast("string"))
            .withColumn(layout.RUN_ID, F.lit("bench-export"))
            .withColumn(layout.ITEM_DIGEST, integrity.share_column(F.col(layout.ITEM)))
            .select(*layout.ITEM_COLUMNS))


def change_rows(spark, n_vault: int, n_changes: int, item_bytes: int, batch: int):
    """``n_changes`` change rows: 40% updates and 20% deletes of existing keys spread over the whole vault, 40%
    inserts of new keys; each with its own stream order, one batch."""
    from pyspark.sql import functions as F

    stride = max(n_vault // max(int(n_changes * 0.6), 1), 1)
    kind = F.when(F.col("id") % 5 < 2, F.lit("MODIFY")).when(F.col("id") % 5 == 2, F.lit("REMOVE")) \
        .otherwise(F.lit("INSERT"))
    existing = (F.col("id") * F.lit(stride) + F.lit(batch)) % F.lit(n_vault)  # other keys in every batch
    key_id = F.when(kind == "INSERT", F.lit(n_vault + batch * n_changes) + F.col("id")).otherwise(existing)
    pk = F.concat(F.lit("user-"), (key_id % F.lit(max(n_vault // 4, 1))).cast("string"))
    sk = key_id.cast("string")
    text = F.concat(F.lit('{"payload":{"S":"'), payload(F.col("id"), item_bytes, f"c{batch}-"),
                    F.lit('"},"pk":{"S":"'), pk, F.lit('"},"sk":{"N":"'), sk, F.lit('"}}'))
    seq = F.lpad((F.lit(batch * 10 ** 9) + F.col("id")).cast("string"), 40, "0")
    change_time = F.lit(SCAN_STARTED + timedelta(hours=1)).cast("timestamp")
    rows = spark.range(n_changes).select(
        pk.alias("pk"), sk.alias("sk"), kind.alias("event_name"),
        F.concat(F.lit('{"pk":{"S":"'), pk, F.lit('"},"sk":{"N":"'), sk, F.lit('"}}')).alias("keys"),
        F.when(kind == "REMOVE", F.lit(None)).otherwise(text).alias("item"),
        F.when(kind == "REMOVE", F.lit(None)).otherwise(F.length(text)).cast("long").alias("item_size"),
        change_time.alias("change_time"), F.concat(F.lit("000000"), seq).alias("change_seq"),
        seq.alias("sequence_number"), F.lit("shardId-bench").alias("shard_id"),
        F.concat(F.lit("event-"), F.col("id").cast("string"), F.lit(f"-{batch}")).alias("event_id"),
        F.lit(False).alias("ttl_delete"), F.lit("bench-merge").alias("run_id"))
    return changelog.with_batch(rows, batch)


def one_size(spark, root: str, n: int, changes: int, item_bytes: int) -> dict:
    vault = common.fresh_dir(os.path.join(root, f"vault-{n}"))
    rows = vault_rows(spark, n, item_bytes)
    write_s, _, _ = common.timed(lambda: rows.write.format("delta").option("userMetadata", metadata.commit_metadata(
        "export_table", "bench-export", scan_started=SCAN_STARTED.isoformat())).save(items.path(vault)))
    count, digest = integrity.measure(items.read(spark, vault, 0))  # as an export records it: merges keep it up
    integrity.record(vault, 0, count, digest)                         # to date from their changes alone
    maintenance.ensure(spark, vault, maintenance.DEFAULT_RETENTION_DAYS)
    export = {"version": 0, "run_id": "bench-export", "scan_started": SCAN_STARTED.isoformat()}
    figures = []
    for batch in (1, 2, 3):  # three merges in a row: the first pays for warm-up, report each
        frame = change_rows(spark, n, changes, item_bytes, batch)
        meta = metadata.commit_metadata("merge_increments", "bench-merge", batch=batch, checkpoint={"batch": batch})

        def merge_once(frame=frame, meta=meta, batch=batch):
            changelog.append(spark, frame, vault, meta, empty=False)
            return apply_batches(spark, vault, "bench-merge", export=export, checkpoint={"batch": batch},
                                 after=batch - 1, batch=batch, replay=False,
                                 cut=SCAN_STARTED + timedelta(hours=batch + 1))

        seconds, applied, load = common.timed(merge_once)
        figures.append({"batch": batch, "seconds": round(seconds, 2), "load1": round(load, 2), **applied})
    newest = items.newest_state(spark, vault)["version"]
    check = integrity.check(vault, newest, items.read(spark, vault, newest))  # the kept-up record is right
    rewrite = common.fresh_dir(os.path.join(root, f"rewrite-{n}"))
    current = items.read(spark, vault)
    rewrite_s, _, load = common.timed(lambda: current.write.format("delta").mode("overwrite").save(rewrite))
    shutil.rmtree(rewrite, ignore_errors=True)
    best = min(f["seconds"] for f in figures)
    return {"vault_items": n, "changes": changes, "initial_write_s": round(write_s, 2), "merges": figures,
            "integrity_after_merges": check["status"],
            "merge_s_best": best, "merge_s_median": sorted(f["seconds"] for f in figures)[1],
            "rewrite_s": round(rewrite_s, 2), "merge_share_of_rewrite": round(best / rewrite_s, 3)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 2_000_000])
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--item-bytes", type=int, default=800)
    parser.add_argument("--work-dir", default=os.path.join(common.OUT_DIR, "merge"))
    args = parser.parse_args(argv)
    spark = common.build_spark("ddbvault-bench-merge", {"spark.sql.shuffle.partitions": "8"})
    results = []
    try:
        for n in args.sizes:
            started = time.time()
            found = one_size(spark, args.work_dir, n, args.changes, args.item_bytes)
            results.append(found)
            print(json.dumps(found), flush=True)
            print(f"  ({time.time() - started:.0f}s for this size)", flush=True)
    finally:
        shutil.rmtree(args.work_dir, ignore_errors=True)
    print(f"\nMERGE of {args.changes:,} changes (best of 3 merges; rewrite = Delta overwrite of the same rows)")
    print(f"{'vault items':>12} {'merge s':>8} {'median s':>9} {'rewrite s':>10} {'merge/rewrite':>14}")
    for r in results:
        print(f"{r['vault_items']:>12,} {r['merge_s_best']:>8.2f} {r['merge_s_median']:>9.2f} {r['rewrite_s']:>10.2f} "
              f"{r['merge_share_of_rewrite']:>14.3f}")
    if len(results) >= 2:
        print(f"largest / smallest vault merge time: {results[-1]['merge_s_best'] / results[0]['merge_s_best']:.2f} "
              f"(target <= 2); every merge/rewrite target < 0.25")
    print(f"figures written to {common.write_json('bench-merge.json', results)}")


if __name__ == "__main__":
    main()

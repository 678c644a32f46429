"""Restore throughput: ddbvault's restore_table against dynamodump and a raw threaded BatchWriteItem loop.

Each contender writes the same items into a new table of its own on the same dynalite, back to back:

1. ddbvault ``restore_table`` of the vault the export benchmark made, in this process once the SparkSession is
   up (budget 1e9 WCU/s so pacing is never the limit); then ``jobs/restore_table.py`` as a subprocess for the
   end-to-end figure (JVM and session start included).
2. ``dynamodump -m restore`` of the dump the export benchmark made (``-d`` another table name, on-demand,
   ``--skipThroughputUpdate``).
3. raw boto3: threads of BatchWriteItem (25 puts each, UnprocessedItems re-sent), as many threads as ddbvault's
   writers in flight (concurrent tasks x writers per task), items generated in memory before the clock starts.

Every contender creates its table inside its timing. "ddbvault x faster" = contender seconds / ddbvault seconds
(issue targets: >= 1.5 against dynamodump end to end; >= 0.8 against the raw loop once Spark is up).
Never asserts on time.

    .venv/bin/python bench/bench_restore.py [--items 100000] [--writers-per-task W]

Run alone it first makes the vault and the dump itself (untimed).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Any, Dict

import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--writers-per-task", type=int, default=4, help="ddbvault's concurrent writers per task")


def make_artefacts(bench: common.Bench) -> None:
    """The vault and the dump to restore from, when the export benchmark did not run first (untimed)."""
    from ddbvault.export import ExportOptions, export_table
    from ddbvault.runner import Run

    bench.vault = common.fresh_dir(bench.path("vault"))
    export_table(ExportOptions(table=bench.table, vault=bench.vault, region=common.REGION, max_read_units=1e9),
                 Run(job="export_table"), bench.spark())
    bench.dump_dir = common.fresh_dir(bench.path("dump"))
    subprocess.run([common.tool("dynamodump"), "-m", "backup", "-r", common.REGION, "--host", "127.0.0.1",
                    "--port", str(bench.port), "--accessKey", "a", "--secretKey", "a", "-s", bench.table,
                    "--dumpPath", bench.dump_dir, "--log", "WARNING"], check=True)


def run(bench: common.Bench, args: argparse.Namespace) -> Dict[str, Any]:
    from ddbvault.restore import RestoreOptions, partitions_for, restore_table
    from ddbvault.runner import Run

    spark = bench.spark()
    if bench.vault is None or bench.dump_dir is None:
        make_artefacts(bench)
    n = bench.n
    slots = spark.sparkContext.defaultParallelism
    partitions = partitions_for(n, slots)
    writers = min(partitions, slots) * args.writers_per_task
    rows = []

    options = RestoreOptions(vault=bench.vault, table="restored_ddbvault", region=common.REGION,
                             max_write_units=1e9, writers_per_task=args.writers_per_task)
    seconds, summary, load = common.timed(lambda: restore_table(options, Run(job="restore_table"), spark))
    rows.append(common.row("ddbvault restore_table (Spark up)", seconds, common.count_items("restored_ddbvault"),
                           load, partitions=summary.get("partitions"), writers_per_task=args.writers_per_task,
                           load_s=summary.get("load_s")))

    items = list(common.items(n, bench.range_key))

    def raw() -> int:
        common.create_table("restored_raw", bench.range_key)
        return common.write_threaded("restored_raw", iter(items), writers)

    seconds, _, load = common.timed(raw)
    rows.append(common.row(f"raw boto3 BatchWriteItem ({writers} threads)", seconds,
                           common.count_items("restored_raw"), load))

    cmd = [common.tool("dynamodump"), "-m", "restore", "-r", common.REGION, "--host", "127.0.0.1",
           "--port", str(bench.port), "--accessKey", "a", "--secretKey", "a", "-s", bench.table,
           "-d", "restored_dynamodump", "--dumpPath", bench.dump_dir, "--billingMode", "PAY_PER_REQUEST",
           "--skipThroughputUpdate", "--noConfirm", "--log", "WARNING"]
    load = common.load_average()
    seconds, _ = common.run_subprocess(cmd, "dynamodump-restore.log")
    rows.append(common.row("dynamodump -m restore (1 thread)", seconds, common.count_items("restored_dynamodump"),
                           load))

    if not args.skip_job:
        cmd = [sys.executable, os.path.join(common.REPO_ROOT, "jobs", "restore_table.py"),
               "--vault", bench.vault, "--table", "restored_job", "--region", common.REGION,
               "--max-write-units", "1e9", "--writers-per-task", str(args.writers_per_task)]
        load = common.load_average()
        seconds, out = common.run_subprocess(cmd, "restore-job.log")
        job = common.last_json_line(out)
        rows.append(common.row("ddbvault jobs/restore_table.py (incl. JVM+session)", seconds,
                               common.count_items("restored_job"), load, job_load_s=job.get("load_s")))

    common.print_table(f"RESTORE of {n:,} items (~1 KB) into dynalite, ddbvault {partitions} partitions, "
                       f"{writers} writers in flight", rows, rows[0]["contender"])
    mismatched = [r["contender"] for r in rows if r["items"] != n]
    if mismatched:
        print(f"WARNING: item counts differ from {n}: {mismatched}")
    return {"benchmark": "restore", "items": n, "partitions": partitions, "writers": writers,
            "writers_per_task": args.writers_per_task, "rows": rows}


def main(argv=None) -> None:
    common.bench_main(__doc__.splitlines()[0], run, add_arguments, "restore.json", argv)


if __name__ == "__main__":
    main()

"""Export throughput: ddbvault's export_table against a raw threaded boto3 parallel scan and dynamodump.

All contenders read the same table on the same dynalite (in memory, loopback), back to back in one run:

1. ddbvault ``export_table`` in this process once the SparkSession is up (the session start is left out;
   the read budget is 1e9 RCU/s so pacing is never the limit), then, for honesty, ``jobs/export_table.py`` as a
   subprocess: the job's whole wall time, JVM and session start included.
2. raw boto3: a Scan with the same TotalSegments, one thread per segment, low-level client, items discarded.
3. ``dynamodump -m backup`` of the same table to a temporary directory.

Figures: seconds, items/s, and "ddbvault x faster" = contender seconds / ddbvault seconds (issue targets:
>= 5 against dynamodump; >= 0.8 against the raw scan, once Spark is up). Never asserts on time.

    .venv/bin/python bench/bench_export.py [--items 100000] [--segments S] [--readers-per-task R]

The default is 30,000 items, not the 150,000 first asked for: dynalite serves ~1,000 puts/s and ~2,000 scanned
items/s on this 2-core machine, so 150k would take well over 20 minutes end to end (load, export, restore);
``--items 150000`` runs it anyway.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional

import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--segments", type=int, help="Scan TotalSegments for ddbvault and the raw scan "
                                                     "(default: what ddbvault plans for this table)")
    parser.add_argument("--readers-per-task", type=int, default=4, help="ddbvault's concurrent readers per task")


def raw_scan(table: str, total_segments: int) -> int:
    """Parallel Scan, one thread and one low-level client per segment; items are counted, then dropped."""
    counts = [0] * total_segments
    errors: List[BaseException] = []

    def work(segment: int) -> None:
        try:
            client = common.ddb()
            kwargs: Dict[str, Any] = {"TableName": table, "Segment": segment, "TotalSegments": total_segments}
            while True:
                page = client.scan(**kwargs)
                counts[segment] += len(page["Items"])
                if not page.get("LastEvaluatedKey"):
                    return
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except BaseException as exc:
            errors.append(exc)

    common.run_threads(work, [(s,) for s in range(total_segments)], errors)
    return sum(counts)


def planned_segments(bench: common.Bench, readers_per_task: int, override: Optional[int]) -> int:
    from ddbvault import export

    size = int(common.ddb().describe_table(TableName=bench.table)["Table"].get("TableSizeBytes") or 0)
    slots = bench.spark().sparkContext.defaultParallelism
    return export.plan_segments(size, slots, readers_per_task, override)


def run(bench: common.Bench, args: argparse.Namespace) -> Dict[str, Any]:
    """Every contender once, back to back; returns the figures (also printed)."""
    from ddbvault.export import ExportOptions, export_table
    from ddbvault.runner import Run

    spark = bench.spark()
    segments = planned_segments(bench, args.readers_per_task, args.segments)
    n = bench.n
    rows = []

    bench.vault = common.fresh_dir(bench.path("vault"))
    options = ExportOptions(table=bench.table, vault=bench.vault, region=common.REGION, segments=segments,
                            max_read_units=1e9, readers_per_task=args.readers_per_task)
    seconds, summary, load = common.timed(lambda: export_table(options, Run(job="export_table"), spark))
    ours = summary["items"]
    rows.append(common.row("ddbvault export_table (Spark up)", seconds, ours, load,
                           segments=segments, tasks=summary.get("tasks"), readers_per_task=args.readers_per_task))

    seconds, scanned, load = common.timed(lambda: raw_scan(bench.table, segments))
    rows.append(common.row(f"raw boto3 parallel scan ({segments} threads)", seconds, scanned, load,
                           segments=segments))

    bench.dump_dir = common.fresh_dir(bench.path("dump"))
    cmd = [common.tool("dynamodump"), "-m", "backup", "-r", common.REGION, "--host", "127.0.0.1",
           "--port", str(bench.port), "--accessKey", "a", "--secretKey", "a", "-s", bench.table,
           "--dumpPath", bench.dump_dir, "--log", "WARNING"]
    load = common.load_average()
    seconds, _ = common.run_subprocess(cmd, "dynamodump-backup.log")
    dumped = common.dump_item_count(bench.dump_dir, bench.table)
    rows.append(common.row("dynamodump -m backup (1 thread, JSON files)", seconds, dumped, load))
    # dynamodump 1.11.1 reads args.read_capacity (the attribute is readCapacity): the AttributeError sends
    # even a single-table backup down its wildcard path, which starts 25 workers 1 s apart. Shown without it too.
    rows.append(common.row(f"  same, minus its {common.DYNAMODUMP_START_SLEEP_S:.0f} s of thread-start sleeps",
                           seconds - common.DYNAMODUMP_START_SLEEP_S, dumped, load))

    if not args.skip_job:
        job_vault = common.fresh_dir(bench.path("vault-job"))
        cmd = [sys.executable, os.path.join(common.REPO_ROOT, "jobs", "export_table.py"),
               "--table", bench.table, "--vault", job_vault, "--region", common.REGION,
               "--segments", str(segments), "--max-read-units", "1e9",
               "--readers-per-task", str(args.readers_per_task)]
        load = common.load_average()
        seconds, out = common.run_subprocess(cmd, "export-job.log")
        job = common.last_json_line(out)
        rows.append(common.row("ddbvault jobs/export_table.py (incl. JVM+session)", seconds,
                               int(job.get("items") or 0), load, job_scan_write_s=job.get("scan_write_s")))

    mismatched = [r["contender"] for r in rows if r["items"] != n]
    common.print_table(f"EXPORT of {n:,} items (~1 KB) from dynalite, TotalSegments {segments}", rows,
                       rows[0]["contender"])
    if mismatched:
        print(f"WARNING: item counts differ from {n}: {mismatched}")
    return {"benchmark": "export", "items": n, "segments": segments, "readers_per_task": args.readers_per_task,
            "rows": rows, "load_table_s": round(bench.load_s, 2)}


def main(argv=None) -> None:
    common.bench_main(__doc__.splitlines()[0], run, add_arguments, "export.json", argv)


if __name__ == "__main__":
    main()

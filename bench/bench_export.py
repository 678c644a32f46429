"""Export: ddbvault's export against raw boto3 scans (each at its best) and dynamodump, wall time and the CPU of
our processes per item.

All contenders read the same table on the same server, back to back in one run:

1. ddbvault ``export_table`` in this process once the SparkSession is up (CPU: this process's tree, JVM and
   Python workers included, the server left out; read budget 1e9 RCU/s so pacing is never the limit), and
   ``jobs/export_table.py`` as a child process: the whole job, JVM and session start included.
2. raw boto3 segmented scans (``contenders.py scan``), each a process of its own: a sweep of threads x segments
   (``--scan-grid``), reported at the fastest; then the same sweep with the JSON fast path (``before-parse``).
3. ``dynamodump -m backup`` of the same table to JSON files (it has no thread setting: one scanning thread).

Child processes are measured by ``cpu.measure`` (a subreaper wrapper and ``os.wait4``). Never asserts on time.

    .venv/bin/python bench/bench_export.py [--items 100000] [--segments S] [--scan-grid 2x2,4x4,8x8,8x16]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

import common

SERVER = "dynalite"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--segments", type=int, help="Scan TotalSegments for ddbvault "
                                                     "(default: what ddbvault plans for this table)")
    parser.add_argument("--readers-per-task", type=int, default=4, help="ddbvault's concurrent readers per task")
    parser.add_argument("--scan-grid", default="2x2,4x4,8x8,8x16",
                        help="raw scan configurations swept, THREADSxSEGMENTS, comma-separated")


def grid(text: str) -> List[Tuple[int, int]]:
    out = []
    for part in text.split(","):
        threads, _, segments = part.strip().partition("x")
        out.append((int(threads), int(segments or threads)))
    return out


def raw_scan_sweep(table: str, configs: List[Tuple[int, int]], *, json_path: bool, server: str,
                   benchmark: str = "export") -> Dict[str, Any]:
    """Every configuration as a process of its own; the fastest as a row, the sweep in its notes."""
    tried = []
    for threads, segments in configs:
        cmd = [sys.executable, os.path.join(common.BENCH_DIR, "contenders.py"), "scan", "--table", table,
               "--threads", str(threads), "--segments", str(segments)] + (["--json-fast-path"] if json_path else [])
        wall, cpu_s, out, load = common.measured_process(cmd, f"raw-scan-{server}-{threads}x{segments}.log")
        inner = common.last_json_line(out)
        tried.append({"threads": threads, "segments": segments, "wall_s": round(wall, 2), "cpu_s": round(cpu_s, 2),
                      "items": int(inner.get("items") or 0),
                      "server_cpu_s": common.last_server_cpu(), "loop_cpu_s": inner.get("cpu_s"), "load1": load})
    best = min(tried, key=lambda t: t["wall_s"])
    name = "raw boto3 segmented scan" + (" + JSON fast path" if json_path else "")
    sweep = ", ".join(f"{t['threads']}x{t['segments']} {t['wall_s']:.1f}s" for t in tried)
    return common.cpu_row(benchmark, server, f"{name}, best {best['threads']} threads x {best['segments']} segments",
                          best["items"], best["wall_s"], cpu_s=best["cpu_s"], load=best["load1"],
                          server_cpu_s=best["server_cpu_s"], sweep=tried,
                          notes=f"sweep (threads x segments, wall): {sweep}")


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
    wall, cpu_s, summary, load = common.measured_in_process(
        lambda: export_table(options, Run(job="export_table"), spark))
    rows.append(common.cpu_row("export", SERVER, "ddbvault export_table, Spark up (in process)", summary["items"],
                               wall, cpu_s=cpu_s, load=load,
                               server_cpu_s=common.last_server_cpu(), segments=segments, tasks=summary.get("tasks"),
                               notes=f"{segments} segments, {summary.get('tasks')} tasks x "
                                     f"{args.readers_per_task} readers"))

    if not args.skip_job:
        job_vault = common.fresh_dir(bench.path("vault-job"))
        cmd = [sys.executable, os.path.join(common.REPO_ROOT, "jobs", "export_table.py"),
               "--table", bench.table, "--vault", job_vault, "--region", common.REGION,
               "--segments", str(segments), "--max-read-units", "1e9",
               "--readers-per-task", str(args.readers_per_task)]
        wall, cpu_s, out, load = common.measured_process(cmd, "export-job.log")
        job = common.last_json_line(out)
        scan_write = job.get("scan_write_s")
        rows.append(common.cpu_row("export", SERVER, "ddbvault jobs/export_table.py, whole job (JVM start incl.)",
                                   int(job.get("items") or 0), wall, cpu_s=cpu_s, load=load,
                                   server_cpu_s=common.last_server_cpu(), scan_write_s=scan_write,
                                   notes=f"its scan and write {scan_write:.1f} s" if scan_write else ""))

    configs = grid(args.scan_grid)
    rows.append(raw_scan_sweep(bench.table, configs, json_path=False, server=SERVER))
    rows.append(raw_scan_sweep(bench.table, configs, json_path=True, server=SERVER))

    bench.dump_dir = common.fresh_dir(bench.path("dump"))
    cmd = [common.tool("dynamodump"), "-m", "backup", "-r", common.REGION, "--host", "127.0.0.1",
           "--port", str(bench.port), "--accessKey", "a", "--secretKey", "a", "-s", bench.table,
           "--dumpPath", bench.dump_dir, "--log", "WARNING"]
    wall, cpu_s, _, load = common.measured_process(cmd, "dynamodump-backup.log")
    # dynamodump 1.11.1 reads args.read_capacity (the attribute is readCapacity): the AttributeError sends even
    # a single-table backup down its wildcard path, which starts 25 workers 1 s apart (sleeping, no CPU).
    rows.append(common.cpu_row("export", SERVER, "dynamodump -m backup (1 scanning thread, JSON files)",
                               common.dump_item_count(bench.dump_dir, bench.table), wall, cpu_s=cpu_s, load=load,
                               server_cpu_s=common.last_server_cpu(),
                               notes=f"wall includes its {common.DYNAMODUMP_START_SLEEP_S:.0f} s of thread-start "
                                     f"sleeps (1.11.1); it has no thread setting"))

    mismatched = [r["contender"] for r in rows if r["items"] != n]
    print(f"\nEXPORT of {n:,} items from {SERVER}\n{common.markdown_table(rows)}", flush=True)
    if mismatched:
        print(f"WARNING: item counts differ from {n}: {mismatched}")
    return {"benchmark": "export", "items": n, "segments": segments, "readers_per_task": args.readers_per_task,
            "rows": rows, "mismatched": mismatched}


def main(argv=None) -> None:
    common.bench_main(__doc__.splitlines()[0], run, add_arguments, "export.json", argv)


if __name__ == "__main__":
    main()

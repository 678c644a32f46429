"""Every contender in one run, one markdown table: wall time, items/s, and the CPU of our processes per item.

1. On dynalite (one server, one loaded table, one warmed SparkSession): export (``bench_export.py``), then
   restore of what the export made (``bench_restore.py``), each contender at its best configuration.
2. Against the wire-speed stand-in (``bench_wirespeed.py``, a process of its own with its own SparkSession):
   export, merge, restore and verify, as items per second per core, with the raw loops beside them.
3. With ``--with-budget``, the budget benchmark (``bench_budget.py``, through the capacity model).

Prints the table and a summary against the issue's targets; the figures go to ``bench/.out/bench-<time>.json``,
``bench/.out/latest.json`` and the table to ``bench/.out/latest.md``. Never asserts on time.

    .venv/bin/python bench/run_all.py [--items 100000] [--scan-grid 2x2,4x4,8x8,8x16] [--write-threads 4,8]
                                      [--wire-scan-grid 4x4,8x8] [--wire-write-threads 4,8] [--skip-wirespeed]
                                      [--with-budget]
    make bench
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from typing import Any, Dict, List, Optional

import bench_budget
import bench_export
import bench_restore
import bench_wirespeed
import common


def budget(args: argparse.Namespace):
    """bench_budget.py in a process of its own (its own dynalite, table and SparkSession); its figures."""
    cmd = [sys.executable, os.path.join(common.BENCH_DIR, "bench_budget.py"), "--items", str(args.items),
           "--max-read-units", str(args.max_read_units), "--max-write-units", str(args.max_write_units),
           "--headroom", str(args.headroom)] + (["--hash-only"] if args.hash_only else [])
    print(f"\nbudget benchmark (its own dynalite and SparkSession; log in {common.OUT_DIR}/budget.log) ...",
          flush=True)
    _, out = common.run_subprocess(cmd, "budget.log")
    print(out.rstrip())
    with open(os.path.join(common.OUT_DIR, "budget.json"), encoding="utf-8") as handle:
        return json.load(handle)


def wirespeed(args: argparse.Namespace):
    """bench_wirespeed.py in a process of its own (its SparkSession must reach the stand-in only)."""
    cmd = [sys.executable, os.path.join(common.BENCH_DIR, "bench_wirespeed.py"), "--items", str(args.items),
           "--wire-scan-grid", args.scan_grid_wire, "--wire-write-threads", args.write_threads_wire] + \
        (["--hash-only"] if args.hash_only else [])
    print(f"\nwire-speed benchmark (its own stand-in and SparkSession; log in {common.OUT_DIR}/wirespeed-run.log)",
          flush=True)
    _, out = common.run_subprocess(cmd, "wirespeed-run.log")
    print(out.rstrip())
    with open(os.path.join(common.OUT_DIR, "wirespeed.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _find(rows: List[Dict[str, Any]], benchmark: str, server: str, start: str) -> Optional[Dict[str, Any]]:
    return next((r for r in rows if r["benchmark"] == benchmark and r["server"] == server
                 and r["contender"].startswith(start)), None)


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.2f}" if a and b else "n/a"


def summary(rows: List[Dict[str, Any]]) -> List[str]:
    """The issue's targets, each with what this run measured (figures, not pass/fail)."""
    out = []
    dyn, wire = "dynalite", bench_wirespeed.SERVER
    for what, raw_prefix, dump_prefix in (("export", "raw boto3 segmented scan", "dynamodump -m backup"),
                                          ("restore", "raw boto3 BatchWriteItem", "dynamodump -m restore")):
        raws = [r for r in rows if r["benchmark"] == what and r["server"] == dyn
                and r["contender"].startswith(raw_prefix) and r["cpu_s_per_100k"]]
        best_raw = min(raws, key=lambda r: r["cpu_s_per_100k"]) if raws else None
        dump = _find(rows, what, dyn, dump_prefix)
        for kind in ("ddbvault jobs/", "ddbvault " + what):
            ours = _find(rows, what, dyn, kind)
            if ours is None:
                continue
            label = "whole job" if kind.endswith("/") else "Spark up"
            if best_raw:
                out.append(f"{what} ({label}) CPU per item / best raw boto3 loop's ({best_raw['contender']}): "
                           f"{_ratio(ours['cpu_s_per_100k'], best_raw['cpu_s_per_100k'])} (target <= 0.5)")
            if dump:
                out.append(f"{what} ({label}) dynamodump's CPU per item / ours: "
                           f"{_ratio(dump['cpu_s_per_100k'], ours['cpu_s_per_100k'])} (target >= 3)")
    for what, target in (("export", 10_000), ("restore", 5_000), ("merge", None), ("verify", None)):
        for kind, label in (("ddbvault " + what, "Spark up"), ("ddbvault jobs/", "whole job")):
            ours = _find(rows, what, wire, kind)
            if ours:
                aim = f" (target >= {target:,})" if target else ""
                out.append(f"{what} ({label}) against the stand-in: {ours['items_per_core_s'] or 0:,.0f} items/s "
                           f"per core{aim}")
    job = _find(rows, "restore", dyn, "ddbvault jobs/")
    dump = _find(rows, "restore", dyn, "dynamodump -m restore")
    raws = [r for r in rows if r["benchmark"] == "restore" and r["server"] == dyn
            and r["contender"].startswith("raw boto3 BatchWriteItem")]
    if job and dump:
        out.append(f"restore whole job wall / dynamodump's: {_ratio(job['wall_s'], dump['wall_s'])} (target <= 1)")
    timed = [r for r in raws if r.get("load_s")]
    fastest = min(timed, key=lambda r: r["load_s"]) if timed else None
    for row in [r for r in (job, _find(rows, "restore", dyn, "ddbvault restore")) if r and r.get("load_s")]:
        if fastest:
            out.append(f"{row['contender']}: load rate / the fastest raw loop's ({fastest['contender']}): "
                       f"{_ratio(fastest['load_s'], row['load_s'])} (target >= 0.9); fixed cost beyond the load "
                       f"{row['wall_s'] - row['load_s']:.1f} s")
    job, floor = _find(rows, "restore", wire, "ddbvault jobs/"), _find(rows, "restore", wire, "floor:")
    if job and floor and job.get("load_s"):
        out.append(f"restore whole job against the stand-in: fixed cost beyond the load "
                   f"{job['wall_s'] - job['load_s']:.1f} s, of which the floor (a job that only starts Spark and "
                   f"reads the vault) {floor['wall_s']:.1f} s and the restore's own steps "
                   f"{job['wall_s'] - job['load_s'] - floor['wall_s']:.1f} s")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=common.DEFAULT_ITEMS, help="items in the source table")
    parser.add_argument("--hash-only", action="store_true", help="a hash-key-only table (default: hash + range)")
    parser.add_argument("--verbose", action="store_true", help="ddbvault's INFO log lines (progress)")
    parser.add_argument("--skip-job", action="store_true", help="do not run the jobs as child processes on dynalite")
    parser.add_argument("--skip-wirespeed", action="store_true", help="do not run the wire-speed benchmark")
    parser.add_argument("--with-budget", action="store_true",
                        help="also run the budget benchmark (about 6 minutes at 100,000 items)")
    bench_export.add_arguments(parser)
    bench_restore.add_arguments(parser)
    parser.add_argument("--wire-scan-grid", dest="scan_grid_wire", default="4x4,8x8",
                        help="raw scan configurations swept against the stand-in")
    parser.add_argument("--wire-write-threads", dest="write_threads_wire", default="4,8",
                        help="raw BatchWriteItem thread counts swept against the stand-in")
    bench_budget.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.time()
    results: Dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "items": args.items, "machine": {
        "cpus": os.cpu_count(), "python": platform.python_version(), "load_at_start": os.getloadavg()}}
    with common.prepared(args.items, range_key=not args.hash_only) as bench:
        results["load_table_s"] = round(bench.load_s, 2)
        results["export"] = bench_export.run(bench, args)
        results["restore"] = bench_restore.run(bench, args)
    if not args.skip_wirespeed:
        results["wirespeed"] = wirespeed(args)
    if args.with_budget:
        results["budget"] = budget(args)
    rows = [r for part in ("export", "restore", "wirespeed") for r in (results.get(part) or {}).get("rows", [])]
    results["rows"] = rows
    results["summary"] = summary(rows)
    results["wall_s"] = round(time.time() - started, 1)
    table = common.markdown_table(rows)
    print(f"\nALL CONTENDERS, {args.items:,} items (load average at start "
          f"{results['machine']['load_at_start'][0]:.1f}, at end {os.getloadavg()[0]:.1f})\n{table}")
    print("\nSUMMARY (figures, not pass/fail: a loaded machine or the server itself may be the limit)")
    for line in results["summary"]:
        print("  " + line)
    for row in (results.get("budget") or {}).get("rows", []):
        print(f"  {row['job']} at {row['budget']:g} {row['unit']}/s: active span / floor {row['span_over_floor']}, "
              f"whole job / floor {row['wall_over_floor']} (target <= {bench_budget.TARGET:g})")
    path = common.write_json(f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json", results)
    common.write_json("latest.json", results)
    with open(os.path.join(common.OUT_DIR, "latest.md"), "w", encoding="utf-8") as handle:
        handle.write(table + "\n\n" + "\n".join("- " + line for line in results["summary"]) + "\n")
    print(f"\nfigures written to {path} and {common.OUT_DIR}/latest.md (whole run {results['wall_s']:.0f}s)")


if __name__ == "__main__":
    main()

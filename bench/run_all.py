"""Every benchmark in one run: one dynalite, one loaded table, one warmed SparkSession; export, then restore
of what the export made. Then the budget benchmark (``bench_budget.py``) as a process of its own, since its
SparkSession must reach DynamoDB through the capacity model. Prints the tables and a summary against the
issue's targets; the figures also go to ``bench/.out/bench-<time>.json`` and ``bench/.out/latest.json``, the
budget pictures to ``bench/.out/budget-*.png``. Never asserts on time.

    .venv/bin/python bench/run_all.py [--items 100000] [--segments S] [--readers-per-task R] [--writers-per-task W]
                                      [--max-read-units 200] [--max-write-units 500] [--skip-budget]
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

import bench_budget
import bench_export
import bench_restore
import common

TARGETS = [
    # (benchmark, contender prefix, minimum "ddbvault x faster", what the issue asks)
    ("export", "dynamodump -m backup", 5.0, "ddbvault export >= 5x faster than dynamodump (Spark up)"),
    ("export", "raw boto3", 0.8, "ddbvault export >= 0.8 of the raw scan, once Spark is up"),
    ("restore", "dynamodump -m restore", 1.5, "ddbvault restore >= 1.5x faster than dynamodump (Spark up)"),
    ("restore", "raw boto3", 0.8, "ddbvault restore >= 0.8 of the raw loop, once Spark is up"),
]


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


def summary(results) -> None:
    print("\nSUMMARY (figures, not pass/fail: a loaded machine or dynalite itself may be the limit)")
    for name, prefix, target, text in TARGETS:
        rows = results[name]["rows"]
        found = next((r for r in rows if r["contender"].startswith(prefix)), None)
        if found is None:
            continue
        print(f"  {text:<62} measured {found['ddbvault_x_faster']:.2f} (target {target:g})")
    for name in ("export", "restore"):
        rows = results[name]["rows"]
        job = next((r for r in rows if "jobs/" in r["contender"]), None)
        dump = next((r for r in rows if r["contender"].startswith("dynamodump")), None)
        if job and dump:
            print(f"  {name}: dynamodump seconds / whole ddbvault job seconds (JVM start included)"
                  f"{'':<8} {dump['seconds'] / job['seconds']:.2f}")
    for row in (results.get("budget") or {}).get("rows", []):
        print(f"  {row['job']} at {row['budget']:g} {row['unit']}/s: active span / floor {row['span_over_floor']}, "
              f"whole job / floor {row['wall_over_floor']} (target <= {bench_budget.TARGET:g})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=common.DEFAULT_ITEMS, help="items in the source table")
    parser.add_argument("--hash-only", action="store_true", help="a hash-key-only table (default: hash + range)")
    parser.add_argument("--verbose", action="store_true", help="ddbvault's INFO log lines (progress)")
    parser.add_argument("--skip-job", action="store_true", help="do not time the jobs as subprocesses")
    bench_export.add_arguments(parser)
    bench_restore.add_arguments(parser)
    bench_budget.add_arguments(parser)
    parser.add_argument("--skip-budget", action="store_true", help="do not run the budget benchmark")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.time()
    results = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": {
        "cpus": os.cpu_count(), "python": platform.python_version(), "load_at_start": os.getloadavg()}}
    with common.prepared(args.items, range_key=not args.hash_only) as bench:
        results["load_table_s"] = round(bench.load_s, 2)
        results["export"] = bench_export.run(bench, args)
        results["restore"] = bench_restore.run(bench, args)
    if not args.skip_budget:
        results["budget"] = budget(args)
    results["wall_s"] = round(time.time() - started, 1)
    summary(results)
    path = common.write_json(f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json", results)
    common.write_json("latest.json", results)
    print(f"\nfigures written to {path} (whole run {results['wall_s']:.0f}s)")


if __name__ == "__main__":
    main()

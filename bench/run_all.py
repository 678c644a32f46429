"""Every benchmark in one run: one dynalite, one loaded table, one warmed SparkSession; export, then restore
of what the export made. Prints both tables and a summary against the issue's targets; the figures also go to
``bench/.out/bench-<time>.json`` and ``bench/.out/latest.json``. Never asserts on time.

    .venv/bin/python bench/run_all.py [--items 100000] [--segments S] [--readers-per-task R] [--writers-per-task W]
    make bench
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import time

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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=common.DEFAULT_ITEMS, help="items in the source table")
    parser.add_argument("--hash-only", action="store_true", help="a hash-key-only table (default: hash + range)")
    parser.add_argument("--verbose", action="store_true", help="ddbvault's INFO log lines (progress)")
    parser.add_argument("--skip-job", action="store_true", help="do not time the jobs as subprocesses")
    bench_export.add_arguments(parser)
    bench_restore.add_arguments(parser)
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
    results["wall_s"] = round(time.time() - started, 1)
    summary(results)
    path = common.write_json(f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json", results)
    common.write_json("latest.json", results)
    print(f"\nfigures written to {path} (whole run {results['wall_s']:.0f}s)")


if __name__ == "__main__":
    main()

"""The client side's ceiling: export, merge, restore and verify against the wire-speed stand-in
(``standins/wirespeed.py``, answers from memory), as items per second per core of our processes.

A process of its own (run_all.py starts it), so its SparkSession's executors and Python workers reach the
stand-in and nothing else. In order, on one table of ``--items`` items:

1. an untimed export and restore in this process (class loading and JIT of the Delta paths land in no figure);
2. ``export_table`` in process (Spark up) into vault A, then ``jobs/export_table.py`` into vault B;
3. the stand-in renders one MODIFY stream record per item (and changes the table to match); ``merge_increments``
   in process into A, then ``jobs/merge_increments.py`` into B (stream-read budget lifted: the stand-in has no
   shard read limit to respect);
4. ``restore_table`` from A in process, then ``jobs/restore_table.py`` from B (the stand-in counts what it is sent);
5. ``verify_replica`` of A in process against the changed table, then ``jobs/verify_replica.py`` of B;
6. the raw boto3 scan (plain and JSON fast path) and BatchWriteItem loops, swept, against the same stand-in.

CPU: this process's tree for the in-process rows, ``cpu.measure`` for child processes; never the stand-in's.
Never asserts on time.

    .venv/bin/python bench/bench_wirespeed.py [--items 100000] [--hash-only] [--wire-scan-grid 4x4,8x8]
                                              [--wire-write-threads 4,8]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from typing import Any, Dict, List

import bench_export
import bench_restore
import common

from servers import free_port, running

FLOOR = "floor: a job that only starts Spark and reads the vault, whole job"
SERVER = "wire-speed stand-in"
TABLE = "bench_source"


def stand_in(url: str, path: str, body: Any = None) -> Dict[str, Any]:
    data = None if body is None else json.dumps(body).encode("utf-8")
    with urllib.request.urlopen(urllib.request.Request(url + path, data=data), timeout=60) as answer:
        return json.loads(answer.read())


def run(args: argparse.Namespace, workdir: str) -> Dict[str, Any]:
    from ddbvault.export import ExportOptions, export_table
    from ddbvault.merge import MergeOptions, merge_increments
    from ddbvault.restore import RestoreOptions, restore_table
    from ddbvault.runner import Run
    from ddbvault.verify import VerifyOptions, verify_replica

    n = args.items
    items_file = common.write_items_file(os.path.join(workdir, "items.jsonl"), n, not args.hash_only)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, os.path.join(common.REPO_ROOT, "standins", "wirespeed.py"), "--items-file", items_file,
           "--table", TABLE, "--hash-key", "pk", "--port", str(port)]
    cmd += [] if args.hash_only else ["--range-key", "sk"]
    rows: List[Dict[str, Any]] = []
    with running(cmd, url + "/bench/stats", os.path.join(common.OUT_DIR, "wirespeed.log")):
        common.use_endpoint(url)
        region = common.REGION
        started = time.perf_counter()
        spark = common.build_spark("ddbvault-bench-wirespeed")
        vault_w = common.fresh_dir(os.path.join(workdir, "vault-warmup"))
        export_table(ExportOptions(table=TABLE, vault=vault_w, region=region, max_read_units=1e9),
                     Run(job="export_table"), spark)
        restore_table(RestoreOptions(vault=vault_w, table="warmup_restored", region=region, max_write_units=1e9),
                      Run(job="restore_table"), spark)
        print(f"SparkSession up and warmed in {time.perf_counter() - started:.1f}s; in no figure below", flush=True)

        def job(name: str, argv: List[str]) -> tuple:
            found = common.measured_process([sys.executable, os.path.join(common.REPO_ROOT, "jobs", name), *argv],
                                            f"wirespeed-{name}.log")
            return found[0], found[1], common.last_json_line(found[2]), found[3], common.last_server_cpu()

        def add(what: str, contender: str, items: int, figures: tuple, notes: str = "", **extra: Any) -> None:
            rows.append(common.cpu_row(what, SERVER, contender, items, figures[0], cpu_s=figures[1], load=figures[3],
                                       server_cpu_s=figures[4] if len(figures) > 4 else common.last_server_cpu(),
                                       notes=notes, **extra))

        vault_a = common.fresh_dir(os.path.join(workdir, "vault-a"))
        vault_b = common.fresh_dir(os.path.join(workdir, "vault-b"))
        figures = common.measured_in_process(lambda: export_table(
            ExportOptions(table=TABLE, vault=vault_a, region=region, max_read_units=1e9), Run(job="export_table"),
            spark))
        add("export", "ddbvault export_table, Spark up (in process)", figures[2]["items"], figures,
            f"{figures[2].get('segments')} segments")
        figures = job("export_table.py", ["--table", TABLE, "--vault", vault_b, "--region", region,
                                          "--max-read-units", "1e9"])
        add("export", "ddbvault jobs/export_table.py, whole job (JVM start incl.)", int(figures[2].get("items") or 0),
            figures, f"its scan and write {figures[2].get('scan_write_s')} s")

        changes = stand_in(url, "/bench/stream", {"changes": n})["records"]
        time.sleep(1.1)  # the records' second is over: a merge's cut (its start) is after every one of them
        figures = common.measured_in_process(lambda: merge_increments(
            MergeOptions(table=TABLE, vault=vault_a, region=region, max_stream_reads=1e9), Run(job="merge_increments"),
            spark))
        add("merge", "ddbvault merge_increments, Spark up (in process)", int(figures[2].get("records_read") or 0),
            figures, f"{changes:,} MODIFY records, merge {figures[2].get('merge_s')} s")
        figures = job("merge_increments.py", ["--table", TABLE, "--vault", vault_b, "--region", region,
                                              "--max-stream-reads", "1e9"])
        add("merge", "ddbvault jobs/merge_increments.py, whole job (JVM start incl.)",
            int(figures[2].get("records_read") or 0), figures, f"merge {figures[2].get('merge_s')} s")

        figures = common.measured_in_process(lambda: restore_table(
            RestoreOptions(vault=vault_a, table="restored_a", region=region, max_write_units=1e9),
            Run(job="restore_table"), spark))
        load_s = figures[2].get("load_s")
        written = stand_in(url, "/bench/stats")["written"]
        add("restore", "ddbvault restore_table, Spark up (in process)", written.get("restored_a", 0), figures,
            bench_restore.fixed_note(figures[0], load_s, figures[2].get("method")), load_s=load_s)
        figures = job("restore_table.py", ["--vault", vault_b, "--table", "restored_b", "--region", region,
                                           "--max-write-units", "1e9"])
        written = stand_in(url, "/bench/stats")["written"]
        add("restore", "ddbvault jobs/restore_table.py, whole job (JVM start incl.)", written.get("restored_b", 0),
            figures, bench_restore.fixed_note(figures[0], figures[2].get("load_s"), figures[2].get("method")),
            load_s=figures[2].get("load_s"))
        found = common.measured_process([sys.executable, os.path.join(common.BENCH_DIR, "floor_job.py"), vault_b],
                                        "wirespeed-floor.log")
        floor = common.last_json_line(found[2])
        add("restore", FLOOR, int(floor.get("items") or 0), (*found[:2], floor, found[3]),
            f"session {floor.get('session_s')} s; what any job pays before its first item")

        figures = common.measured_in_process(lambda: verify_replica(
            VerifyOptions(vault=vault_a, table=TABLE, region=region, max_read_units=1e9), Run(job="verify_replica"),
            spark))
        add("verify", "ddbvault verify_replica, Spark up (in process)", int(figures[2].get("replica_items") or 0),
            figures, f"same {figures[2].get('same')}, different {figures[2].get('different')}")
        figures = job("verify_replica.py", ["--vault", vault_b, "--table", TABLE, "--region", region,
                                            "--max-read-units", "1e9"])
        add("verify", "ddbvault jobs/verify_replica.py, whole job (JVM start incl.)",
            int(figures[2].get("replica_items") or 0), figures,
            f"same {figures[2].get('same')}, different {figures[2].get('different')}")
        spark.stop()

        configs = bench_export.grid(args.scan_grid)
        rows.append(bench_export.raw_scan_sweep(TABLE, configs, json_path=False, server=SERVER))
        rows.append(bench_export.raw_scan_sweep(TABLE, configs, json_path=True, server=SERVER))
        threads = [int(t) for t in args.write_threads.split(",")]
        for wire_body, signed in ((False, False), (True, False), (True, True)):
            rows.append(bench_restore.raw_write_sweep(
                items_file, args.hash_only, threads, SERVER,
                lambda table: stand_in(url, "/bench/stats")["written"].get(table, 0), wire_body=wire_body,
                signed=signed))
    mismatched = [r["contender"] for r in rows if r["items"] != n]
    print(f"\nAGAINST THE WIRE-SPEED STAND-IN, {n:,} items\n{common.markdown_table(rows)}", flush=True)
    if mismatched:
        print(f"WARNING: item counts differ from {n}: {mismatched}")
    return {"benchmark": "wirespeed", "items": n, "rows": rows, "mismatched": mismatched}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wire-scan-grid", dest="scan_grid", default="4x4,8x8",
                        help="raw scan configurations swept against the stand-in, THREADSxSEGMENTS")
    parser.add_argument("--wire-write-threads", dest="write_threads", default="4,8",
                        help="raw BatchWriteItem thread counts swept against the stand-in")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=common.DEFAULT_ITEMS)
    parser.add_argument("--hash-only", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workdir = tempfile.mkdtemp(prefix="ddbvault-bench-wire-")
    try:
        result = run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"figures written to {common.write_json('wirespeed.json', result)}")


if __name__ == "__main__":
    main()

"""Restore: ddbvault's restore against a raw threaded BatchWriteItem loop (at its best thread count) and
dynamodump, wall time and the CPU of our processes per item.

Each contender writes the same items into a new table of its own on the same server, back to back, and creates
that table inside its timing; every table's items are counted afterwards (a COUNT scan) and it is deleted:

1. ddbvault ``restore_table`` of the vault the export benchmark made, in this process once the SparkSession is
   up (budget 1e9 WCU/s so pacing is never the limit), and ``jobs/restore_table.py`` as a child process (the
   whole job, JVM and session start included). Whatever method the restore picks is what is measured; its
   summary's ``load_s`` gives the load, and the rest of the wall time is the restore's fixed cost.
2. raw boto3 (``contenders.py write``), a process of its own per thread count (``--write-threads``): it reads the
   items from a wire-JSON file, decodes binaries, creates the table, then sends BatchWriteItem of 25 puts.
3. ``dynamodump -m restore`` of the dump the export benchmark made (it has no thread setting).

    .venv/bin/python bench/bench_restore.py [--items 100000] [--writers-per-task W] [--write-threads 4,8]

Run alone it first makes the vault and the dump itself (untimed).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Any, Callable, Dict, List

import common

SERVER = "dynalite"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--writers-per-task", type=int, default=4, help="ddbvault's concurrent writers per task")
    parser.add_argument("--write-threads", default="4,8",
                        help="thread counts swept for the raw BatchWriteItem loop, comma-separated")


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


def counted(table: str) -> int:
    """Items in ``table`` (a COUNT scan), then the table is dropped so the server's memory stays flat."""
    found = common.count_items(table)
    common.ddb().delete_table(TableName=table)
    return found


def raw_write_sweep(items_file: str, hash_only: bool, threads_list: List[int], server: str,
                    count: Callable[[str], int], *, wire_body: bool = False, signed: bool = False) -> Dict[str, Any]:
    """One process per thread count; the fastest as a row, the sweep in its notes. ``wire_body``: the loop sends
    request bodies it built from the items' wire text, never decoding an item (as ddbvault's restore does);
    ``signed`` as well: it signs and sends each call itself on the client's HTTP session (as ddbvault's does)."""
    tried = []
    flavour = ("wire_signed_" if signed else "wire_") if wire_body else ""
    for threads in threads_list:
        table = f"restored_raw_{flavour}{threads}"
        cmd = [sys.executable, os.path.join(common.BENCH_DIR, "contenders.py"), "write", "--table", table,
               "--threads", str(threads), "--items-file", items_file] + (["--hash-only"] if hash_only else []) \
            + (["--wire-body"] if wire_body else []) + (["--signed"] if signed else [])
        log_name = f"raw-write-{flavour.replace('_', '-')}{server}-{threads}.log"
        wall, cpu_s, out, load = common.measured_process(cmd, log_name)
        inner, server_cpu_s = common.last_json_line(out), common.last_server_cpu()
        tried.append({"threads": threads, "wall_s": round(wall, 2), "cpu_s": round(cpu_s, 2), "items": count(table),
                      "server_cpu_s": server_cpu_s, "loop_cpu_s": inner.get("cpu_s"),
                      "loop_wall_s": inner.get("wall_s"), "load1": load})
    best = min(tried, key=lambda t: t["wall_s"])
    sweep = ", ".join(f"{t['threads']} {t['wall_s']:.1f}s" for t in tried)
    what = "raw boto3 BatchWriteItem loop" + (" + pre-built request bodies" if wire_body else "") \
        + (" + own signed requests" if signed else "")
    return common.cpu_row("restore", server, f"{what}, best {best['threads']} threads",
                          best["items"], best["wall_s"], cpu_s=best["cpu_s"], load=best["load1"],
                          server_cpu_s=best["server_cpu_s"], sweep=tried,
                          load_s=best["loop_wall_s"], notes=f"sweep (threads, wall): {sweep}")


def fixed_note(wall: float, load_s: Any, method: Any) -> str:
    if not load_s:
        return f"method {method}" if method else ""
    return f"method {method}, its load {load_s:.1f} s, fixed cost {wall - load_s:.1f} s"


def run(bench: common.Bench, args: argparse.Namespace) -> Dict[str, Any]:
    from ddbvault.restore import RestoreOptions, restore_table
    from ddbvault.runner import Run

    spark = bench.spark()
    if bench.vault is None or bench.dump_dir is None:
        make_artefacts(bench)
    n = bench.n
    rows = []

    options = RestoreOptions(vault=bench.vault, table="restored_ddbvault", region=common.REGION,
                             max_write_units=1e9, writers_per_task=args.writers_per_task)
    wall, cpu_s, summary, load = common.measured_in_process(
        lambda: restore_table(options, Run(job="restore_table"), spark))
    rows.append(common.cpu_row("restore", SERVER, "ddbvault restore_table, Spark up (in process)",
                               counted("restored_ddbvault"), wall, cpu_s=cpu_s, load=load,
                               server_cpu_s=common.last_server_cpu(), load_s=summary.get("load_s"),
                               method=summary.get("method"), partitions=summary.get("partitions"),
                               notes=fixed_note(wall, summary.get("load_s"), summary.get("method"))))

    if not args.skip_job:
        cmd = [sys.executable, os.path.join(common.REPO_ROOT, "jobs", "restore_table.py"),
               "--vault", bench.vault, "--table", "restored_job", "--region", common.REGION,
               "--max-write-units", "1e9", "--writers-per-task", str(args.writers_per_task)]
        wall, cpu_s, out, load = common.measured_process(cmd, "restore-job.log")
        job = common.last_json_line(out)
        rows.append(common.cpu_row("restore", SERVER, "ddbvault jobs/restore_table.py, whole job (JVM start incl.)",
                                   counted("restored_job"), wall, cpu_s=cpu_s, load=load,
                                   server_cpu_s=common.last_server_cpu(), load_s=job.get("load_s"),
                                   method=job.get("method"),
                                   notes=fixed_note(wall, job.get("load_s"), job.get("method"))))

    items_file = common.write_items_file(bench.path("items.jsonl"), n, bench.range_key)
    threads = [int(t) for t in args.write_threads.split(",")]
    rows.append(raw_write_sweep(items_file, not bench.range_key, threads, SERVER, counted))
    rows.append(raw_write_sweep(items_file, not bench.range_key, threads, SERVER, counted, wire_body=True))
    rows.append(raw_write_sweep(items_file, not bench.range_key, threads, SERVER, counted, wire_body=True,
                                signed=True))

    cmd = [common.tool("dynamodump"), "-m", "restore", "-r", common.REGION, "--host", "127.0.0.1",
           "--port", str(bench.port), "--accessKey", "a", "--secretKey", "a", "-s", bench.table,
           "-d", "restored_dynamodump", "--dumpPath", bench.dump_dir, "--billingMode", "PAY_PER_REQUEST",
           "--skipThroughputUpdate", "--noConfirm", "--log", "WARNING"]
    wall, cpu_s, _, load = common.measured_process(cmd, "dynamodump-restore.log")
    rows.append(common.cpu_row("restore", SERVER, "dynamodump -m restore (1 writing thread)",
                               counted("restored_dynamodump"), wall, cpu_s=cpu_s, load=load,
                               server_cpu_s=common.last_server_cpu(),
                               notes="it has no thread setting"))

    mismatched = [r["contender"] for r in rows if r["items"] != n]
    print(f"\nRESTORE of {n:,} items into {SERVER}\n{common.markdown_table(rows)}", flush=True)
    if mismatched:
        print(f"WARNING: item counts differ from {n}: {mismatched}")
    return {"benchmark": "restore", "items": n, "writers_per_task": args.writers_per_task, "rows": rows,
            "mismatched": mismatched}


def main(argv=None) -> None:
    common.bench_main(__doc__.splitlines()[0], run, add_arguments, "restore.json", argv)


if __name__ == "__main__":
    main()

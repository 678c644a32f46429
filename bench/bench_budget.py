"""Budgets: an export and a restore at a fixed capacity budget, timed against the floor (capacity / budget).

What an operator wants to know before pointing a job at a production table: does it keep to the budget it was
given, and does it use all of it? Both jobs run through the capacity model (``standins/capacity.py``, a proxy
that charges every call by DynamoDB's rules and records the units each second) in front of dynalite:

1. The source table is loaded straight into dynalite (untimed); then ``AWS_ENDPOINT_URL_DYNAMODB`` points at the
   proxy *before* the SparkSession is built, so the executors' calls go through it.
2. ``export_table`` with ``--max-read-units`` (default 200 RCU/s). The model watches the source at ``--headroom``
   (10) times the budget, so what is measured is the job's own pace, not the model's throttling.
3. ``restore_table`` of that vault into a new table with ``--max-write-units`` (default 500 WCU/s); the model
   starts watching the table at the restore's first write (``watch_pending``), with the same headroom.

Per job: the units the model charged, the floor (charged / budget: the fastest the job could be at that
budget), the active span (first to last second with units charged), the whole job's wall time, span/floor and
wall/floor against the issue's target of 1.1, the busiest 10-second window's rate and the mean rate against the
budget, and throttles. A PNG per job (``bench/.out/budget-export.png``, ``budget-restore.png``) draws the
units charged each second against the budget line. Figures, not tests: nothing here asserts on time.

    .venv/bin/python bench/bench_budget.py [--items 100000] [--max-read-units 200] [--max-write-units 500]

The defaults make each job last over a minute on 2 cores, paced by its budget: 100,000 items of ~1 KB are
~12,800 RCU to scan (eventually consistent, 0.5 RCU per 4 KB a page) and ~142,000 WCU to write (42% of them
are just over 1 KB: 2 WCU). dynalite serves ~3,500 scanned and ~1,300 written items/s here, so 200 RCU/s
(~1,500 items/s) and 500 WCU/s (~350 items/s) leave it, and the proxy, room to spare.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import common
from capacity import CapacityProxy, summary

WINDOW_S = 10
TARGET = 1.1  # the issue: within 1.1x of the floor
SOURCE_WRITES = 1000.0  # the source table's modelled write capacity (the export writes nothing)
TARGET_READS = 1000.0  # the new table's modelled read capacity (the restore reads nothing from it)
RESTORED = "budget_restored"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-read-units", type=float, default=200.0, help="the export's read budget (RCU/s)")
    parser.add_argument("--max-write-units", type=float, default=500.0, help="the restore's write budget (WCU/s)")
    parser.add_argument("--headroom", type=float, default=10.0,
                        help="the modelled tables' capacity as a multiple of the budget (well above it, so the "
                             "model never throttles a job that keeps to its budget)")


# -- figures (pure) ------------------------------------------------------------------------------------------

def job_figures(job: str, unit: str, budget: float, *, per_second: Mapping[int, float], started: float,
                finished: float, throttled: Mapping[int, float], job_summary: Mapping[str, Any]) -> Dict[str, Any]:
    """One job's figures from the model's per-second units (``{wall-clock second: units}``) and its wall time."""
    figures = summary(per_second, budget, WINDOW_S)
    charged = figures["total"]
    floor = charged / budget if budget else 0.0
    span = figures["span_s"]
    wall = finished - started
    capacity_key = "read_capacity" if unit == "RCU" else "write_capacity"
    own = job_summary.get(capacity_key) or {}
    return {
        "job": job, "unit": unit, "budget": budget, "charged": round(charged, 1),
        "job_consumed": own.get("consumed"), "floor_s": round(floor, 2), "span_s": span, "wall_s": round(wall, 2),
        "span_over_floor": round(span / floor, 3) if floor else None,
        "wall_over_floor": round(wall / floor, 3) if floor else None,
        "peak_window_rate": figures["peak_rate"], "peak_ratio": figures["peak_ratio"],
        "mean_rate": figures["mean_rate"], "utilisation": figures["utilisation"],
        "model_throttles": int(sum(throttled.values())), "job_throttles": own.get("throttles"),
        "job_limited_by": own.get("limited_by"), "items": job_summary.get("items"), "started": started,
        "finished": finished,
        "first_second": min(per_second) if per_second else None,
        "last_second": max(per_second) if per_second else None,
    }


def print_figures(title: str, rows: List[Dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(f"{'job':<8} {'budget/s':>10} {'charged':>9} {'floor s':>8} {'span s':>7} {'wall s':>7} "
          f"{'span/floor':>10} {'wall/floor':>10} {'peak10s/s':>9} {'mean/s':>7} {'thr':>4} {'load1':>6}")
    for r in rows:
        print(f"{r['job']:<8} {r['budget']:>6,.0f} {r['unit']:<3} {r['charged']:>9,.0f} {r['floor_s']:>8.1f} "
              f"{r['span_s']:>7} {r['wall_s']:>7.1f} {_num(r['span_over_floor']):>10} {_num(r['wall_over_floor']):>10} "
              f"{r['peak_window_rate']:>9.1f} {r['mean_rate']:>7.1f} {r['model_throttles']:>4} {r['load1']:>6.2f}")
    print(f"target: span/floor and wall/floor <= {TARGET:g}; the busiest {WINDOW_S}-s window at or under the budget "
          f"(+10%)")
    for r in rows:
        verdict = "paced by its budget" if r["utilisation"] >= 0.9 else (
            "NOT paced by its budget: something else (dynalite, the proxy, the CPU) set the pace; lower the budget")
        print(f"  {r['job']}: mean {r['utilisation']:.0%} of the budget over its active span, busiest window "
              f"{r['peak_ratio']:.0%}: {verdict}; the job counted {r['job_consumed']:,.1f} {r['unit']}, the model "
              f"{r['charged']:,.1f}; this process (model, budget service, driver) used {r['bench_process_cpu']:.0%} "
              f"of a core; the job's own verdict on its pace: {r['job_limited_by']}")


def _num(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# -- the picture ---------------------------------------------------------------------------------------------

def draw(path: str, figures: Mapping[str, Any], per_second: Mapping[int, float]) -> str:
    """A PNG of the units charged each second of the job (and their 10-s mean) against the budget line."""
    # Imported here: only this benchmark needs matplotlib (the bench extra); Agg draws without a display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    started, finished = figures["started"], figures["finished"]
    budget, unit = figures["budget"], figures["unit"]
    first, last = int(started), int(finished)
    seconds = list(range(first, last + 1))
    values = [float(per_second.get(s, 0.0)) for s in seconds]
    xs = [s - started for s in seconds]
    # The trailing window's mean over the job's own seconds (the first ones have fewer than WINDOW_S behind them).
    rolling = [sum(values[max(0, i - WINDOW_S + 1):i + 1]) / min(i + 1, WINDOW_S) for i in range(len(values))]

    fig = Figure(figsize=(10, 5.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.step(xs, values, where="post", color="#4c72b0", linewidth=0.8, label=f"{unit} charged each second")
    ax.plot([x + 1 for x in xs], rolling, color="#1f3b73", linewidth=1.8, label=f"mean of the last {WINDOW_S} s")
    ax.axhline(budget, color="#c44e52", linewidth=1.6, label=f"budget {budget:g} {unit}/s")
    ax.axhline(budget * 1.1, color="#c44e52", linewidth=1.0, linestyle="--", label="budget + 10%")
    ax.axvline(finished - started, color="0.4", linewidth=1.0, linestyle=":", label="job finished")
    ax.set_xlim(0, max(finished - started + 1, 1))
    ax.set_ylim(0, max(max(values, default=0.0), budget * 1.1) * 1.15)
    ax.set_xlabel("seconds since the job started")
    ax.set_ylabel(f"{unit} per second (capacity model)")
    ax.set_title(f"{figures['job']}: {figures['charged']:,.0f} {unit} at {budget:g} {unit}/s, floor "
                 f"{figures['floor_s']:.1f}s; span/floor {_num(figures['span_over_floor'], 2)}, wall/floor "
                 f"{_num(figures['wall_over_floor'], 2)} (target {TARGET:g})\nbusiest {WINDOW_S}-s window "
                 f"{figures['peak_window_rate']:.1f} {unit}/s, mean {figures['mean_rate']:.1f} {unit}/s, "
                 f"{figures['model_throttles']} throttled", fontsize=9.5)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=8, ncol=5, frameon=False)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path)
    return path


# -- the run -------------------------------------------------------------------------------------------------

def run(bench: common.Bench, args: argparse.Namespace) -> Dict[str, Any]:
    if bench._spark is not None:
        raise RuntimeError("bench_budget needs its own SparkSession: the executors must reach DynamoDB through the "
                           "capacity model, which is only possible if it is in place before the session starts")
    with CapacityProxy(bench.url) as proxy:
        # Only DynamoDB goes through the model (the vault is a local path); set before the JVM inherits it.
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = proxy.url
        print(f"capacity model at {proxy.url} in front of dynalite {bench.url}", flush=True)
        return measure(bench, proxy, args)


def timed_job(proxy: CapacityProxy, table: str, job: str, budget: float,
              call: Callable[[], Dict[str, Any]]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Run one job; (its summary, its figures with the load average and the picture's path)."""
    kind, unit = ("read", "RCU") if job == "export" else ("write", "WCU")
    load = common.load_average()
    cpu = time.process_time()
    started = time.time()
    job_summary = call()
    finished = time.time()
    # This process holds the capacity model, the job's budget service and the Spark driver: its share of a core
    # says whether the model could have been the limit (the executors and dynalite are other processes).
    cpu = (time.process_time() - cpu) / max(finished - started, 1e-9)
    timeline = proxy.timeline(table)
    row = job_figures(job, unit, budget, per_second=timeline[kind], started=started, finished=finished,
                      throttled=timeline["throttled"], job_summary=job_summary)
    row.update(load1=round(load, 2), load1_after=round(common.load_average(), 2), bench_process_cpu=round(cpu, 3))
    row["png"] = draw(os.path.join(common.OUT_DIR, f"budget-{job}.png"), row, timeline[kind])
    return job_summary, row


def measure(bench: common.Bench, proxy: CapacityProxy, args: argparse.Namespace) -> Dict[str, Any]:
    from ddbvault.export import ExportOptions, export_table
    from ddbvault.restore import RestoreOptions, restore_table
    from ddbvault.runner import Run

    spark = bench.spark()
    read_budget, write_budget = args.max_read_units, args.max_write_units
    vault = common.fresh_dir(bench.path("vault-budget"))
    rows: List[Dict[str, Any]] = []

    proxy.watch(bench.table, read_units=read_budget * args.headroom, write_units=SOURCE_WRITES,
                region=common.REGION)
    exported, row = timed_job(proxy, bench.table, "export", read_budget, lambda: export_table(
        ExportOptions(table=bench.table, vault=vault, region=common.REGION, max_read_units=read_budget),
        Run(job="export_table"), spark))
    rows.append(dict(row, segments=exported.get("segments"), tasks=exported.get("tasks")))
    proxy.unwatch(bench.table)

    # The restore creates the table: the model starts watching it at the first write that names it (with a
    # second of capacity on hand, as a new table has).
    proxy.watch_pending(RESTORED, region=common.REGION, read_units=TARGET_READS,
                        write_units=write_budget * args.headroom)
    restored, row = timed_job(proxy, RESTORED, "restore", write_budget, lambda: restore_table(
        RestoreOptions(vault=vault, table=RESTORED, region=common.REGION, max_write_units=write_budget),
        Run(job="restore_table"), spark))
    rows.append(dict(row, partitions=restored.get("partitions"), load_s=restored.get("load_s")))

    n = bench.n
    print_figures(f"BUDGETS: {n:,} items (~1 KB) through the capacity model on dynalite, "
                  f"{spark.sparkContext.defaultParallelism} cores", rows)
    counted = common.count_items(RESTORED)
    if counted != n or any(r["items"] != n for r in rows):
        print(f"WARNING: item counts differ from {n}: export {rows[0]['items']}, restore {rows[1]['items']}, "
              f"table {counted}")
    for r in rows:
        print(f"  {r['job']} picture: {r['png']}")
    return {"benchmark": "budget", "items": n, "window_s": WINDOW_S, "target": TARGET, "headroom": args.headroom,
            "rows": rows}


def main(argv: Optional[List[str]] = None) -> None:
    common.bench_main(__doc__.splitlines()[0], run, add_arguments, "budget.json", argv)


if __name__ == "__main__":
    main()

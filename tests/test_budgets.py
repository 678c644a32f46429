"""Budgets against the capacity model (standins/capacity.py): what the table sees, per second, from each job.

The model charges every call by DynamoDB's rules and records it per wall-clock second. Each job must stay at or
under its budget in every 10-second window (10% tolerance) and use at least 85% of it over the run, however many
tasks run at once: 2 (this session's Spark), 8, and 2 growing to 8 mid-job (what EMR's dynamic allocation does).
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Dict, List

import boto3
import capacity as capacity_model
import pytest
from jobs_helpers import create_table, name, put_items, table_texts, vault_texts

from ddbvault.dynamo import budget as budget_service
from ddbvault.export import ExportOptions, ScanPlan, export_table, group_segments, scan_partition
from ddbvault.merge import MergeOptions, merge_increments
from ddbvault.restore import RestoreOptions, restore_table
from ddbvault.runner import Run
from ddbvault.verify import VerifyOptions, verify_replica
from servers import REGION_A, REGION_B

WINDOW_S = 10
PAD = "x" * 7900  # ~8 KB items: a Scan reads ~1 RCU of each, a put costs 8 WCU


def series(timeline: Dict[str, Dict], kind: str) -> Dict[int, float]:
    return {int(second): float(units) for second, units in timeline.get(kind, {}).items()}


def assert_within(per_second: Dict[int, float], budget: float, label: str) -> Dict[str, float]:
    """Every 10-second window at or under 110% of the budget, and at least 85% of it used over the run (its first
    and last seconds are partial: the mean is over the whole seconds between them)."""
    assert per_second, f"{label}: the capacity model saw nothing"
    seconds = sorted(per_second)
    shown = [round(per_second.get(s, 0.0)) for s in range(seconds[0], seconds[-1] + 1)]
    figures = capacity_model.summary(per_second, budget, WINDOW_S)
    inner = {s: u for s, u in per_second.items() if seconds[0] < s < seconds[-1]}
    mean = sum(inner.values()) / max(1, len(range(seconds[0] + 1, seconds[-1])))
    message = (f"{label}: units per second {shown}; busiest {WINDOW_S}s window {figures['peak_rate']:.1f}/s, "
               f"mean {mean:.1f}/s over {len(inner)} whole seconds, budget {budget:g}/s")
    assert figures["peak_rate"] <= 1.1 * budget, message
    assert mean >= 0.85 * budget, message
    print(message)  # the figures, for the record (pytest -s)
    return dict(figures, mean_whole_seconds=mean)


def padded_items(n: int) -> List[dict]:
    return [{"pk": {"S": f"k{i:05d}"}, "n": {"N": str(i)}, "pad": {"S": PAD}} for i in range(n)]


@pytest.fixture
def big_table(ddb, capacity):
    """A table of 700 ~8 KB items (~700 RCU to scan), watched by the capacity model at a capacity well above the
    budgets used here (so what it measures is the job's own pace)."""
    client, made = ddb
    table = name("budget")
    create_table(client, table, [("pk", "S")])
    made.append(table)
    put_items(client, table, padded_items(700))
    capacity.watch(table, read_units=1000, write_units=1000)
    return table


def test_export_and_verify_hold_their_read_budget_with_two_tasks(spark, big_table, capacity, tmp_path):
    budget = 30.0
    vault = str(tmp_path / "vault")
    summary = export_table(ExportOptions(table=big_table, vault=vault, region=REGION_A, segments=8,
                                         readers_per_task=2, max_read_units=budget), Run(job="export_table"), spark)
    reads = series(capacity.timeline(big_table), "read")
    assert_within(reads, budget, "export at 30 RCU/s, 2 tasks x 2 readers")
    assert summary["items"] == 700
    assert summary["consumed_rcu"] == pytest.approx(sum(reads.values()), rel=0.02)

    capacity.watch(big_table, read_units=1000, write_units=1000)  # a fresh timeline for verify
    result = verify_replica(VerifyOptions(vault=vault, table=big_table, region=REGION_A, max_read_units=budget,
                                          segments=8, readers_per_task=2), Run(job="verify_replica"), spark)
    assert (result["same"], result["missing"], result["extra"], result["different"]) == (700, 0, 0, 0)
    assert_within(series(capacity.timeline(big_table), "read"), budget, "verify at 30 RCU/s, 2 tasks x 2 readers")


def run_tasks(endpoint, plan: ScanPlan, groups: List[List[int]], joins: List[tuple]) -> int:
    """Run the export's per-task scan in threads, as executors would: ``joins`` = (start offset s, tasks)."""
    items = [0]
    lock = threading.Lock()
    errors: List[BaseException] = []
    pending = list(groups)

    def task(group: List[int]) -> None:
        try:
            n = sum(1 for _ in scan_partition(plan, iter(group)))
            with lock:
                items[0] += n
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    threads = []
    began = time.monotonic()
    for offset, count in joins:
        time.sleep(max(0.0, began + offset - time.monotonic()))
        for _ in range(count):
            if pending:
                thread = threading.Thread(target=task, args=(pending.pop(0),))
                thread.start()
                threads.append(thread)
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return items[0]


@pytest.mark.parametrize("joins,label", [
    ([(0, 8)], "8 tasks at once"),
    ([(0, 2), (4, 6)], "2 tasks, 6 more after 4 s (dynamic allocation)"),
])
def test_the_budget_holds_whatever_the_number_of_tasks(big_table, capacity, monkeypatch, joins, label):
    """The export's task function on threads, through the capacity model (as executors reach DynamoDB)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", capacity.url)
    budget = 30.0
    total = 8
    with budget_service.BudgetService(budget, host="127.0.0.1", callers=joins[0][1]) as service:
        plan = ScanPlan(big_table, REGION_A, "pk", None, total, service.endpoint, 1, False, 3,
                        datetime.now(timezone.utc), "run", None)
        scanned = run_tasks(service.endpoint, plan, group_segments(total, 1), joins)
    assert scanned == 700
    reads = series(capacity.timeline(big_table), "read")
    assert_within(reads, budget, label)
    assert service.consumed == pytest.approx(sum(reads.values()), rel=0.02)


@pytest.mark.parametrize("per_partition", [60.0, 40.0])
def test_restore_holds_its_write_budget_and_spreads_a_hot_partition_key(spark, ddb, capacity, tmp_path,
                                                                        per_partition):
    """30% of the items under one partition key; the replica has 4 partitions. Dealt by the whole key, every task
    writes a mix, so the hot key's partition takes its share all along and the load runs within 1.15x of the floor
    set by the budget and the per-partition limit (the larger of: all the WCU over the budget, and each
    partition's WCU over its limit), inside the budget. At 60 WCU a partition the budget is the floor (and at
    least 85% of it is used); at 40 the hot key's partition is, and a load that wrote the hot key in long runs
    (dealt by the hash key alone) would leave it idle early and alone at the end."""
    client, made = ddb
    source = name("hot-src")
    create_table(client, source, [("pk", "S"), ("sk", "N")])
    made.append(source)
    items = [{"pk": {"S": "hot" if i % 10 < 3 else f"k{i}"}, "sk": {"N": str(i)}, "pad": {"S": "y" * 900}}
             for i in range(2000)]  # ~1 KB: 1 WCU each
    put_items(client, source, items)
    vault = str(tmp_path / "vault")
    export_table(ExportOptions(table=source, vault=vault, region=REGION_A, segments=2, max_read_units=5000.0),
                 Run(job="export_table"), spark)

    replica = name("hot-rep")
    # The restore creates the replica: the model starts watching it at its first data-plane call.
    partitions, budget = 4, 100.0
    capacity.watch_pending(replica, region=REGION_B, read_units=1000, write_units=1000, partitions=partitions,
                           partition_write_units=per_partition)
    started = time.time()
    summary = restore_table(RestoreOptions(vault=vault, table=replica, region=REGION_B, max_write_units=budget,
                                           writers_per_task=4), Run(job="restore_table"), spark)
    load_s = summary["load_s"]
    assert summary["items"] == 2000 and time.time() - started >= load_s
    writes = series(capacity.timeline(replica), "write")
    loads = [0.0] * partitions
    for item in items:
        loads[capacity_model.partition_of(item["pk"], partitions)] += 1  # 1 WCU each
    floor = max(sum(writes.values()) / budget, max(loads) / per_partition)
    label = f"restore at {budget:g} WCU/s, {partitions} partitions of {per_partition:g} WCU/s, a hot partition key"
    if floor * budget > sum(writes.values()) + 1e-9:  # a partition is the floor: the budget cannot all be used
        figures = capacity_model.summary(writes, budget, WINDOW_S)
        assert figures["peak_rate"] <= 1.1 * budget, (label, figures)
    else:
        figures = assert_within(writes, budget, label)
    active = max(writes) - min(writes) + 1
    assert active <= 1.15 * floor, (f"the load took {active}s of writes against a floor of {floor:.1f}s (partition "
                                    f"loads {loads} WCU at {per_partition:g} each, budget {budget:g}): {figures}")
    replica_client = boto3.client("dynamodb", region_name=REGION_B)
    try:
        assert vault_texts(spark, vault) == table_texts(replica_client, replica)
    finally:
        replica_client.delete_table(TableName=replica)


def test_merge_holds_its_stream_read_budget(spark, ddb, capacity, tmp_path):
    """GetRecords calls against --max-stream-reads: 7,000 changes are 7 full GetRecords answers and the empty
    ones that show the shard is caught up, at one call a second."""
    client, made = ddb
    table = name("budget-merge")
    create_table(client, table, [("pk", "S")], stream="NEW_AND_OLD_IMAGES")
    made.append(table)
    vault = str(tmp_path / "vault")
    export_table(ExportOptions(table=table, vault=vault, region=REGION_A, segments=2), Run(job="export_table"), spark)
    put_items(client, table, [{"pk": {"S": f"k{i}"}, "n": {"N": str(i)}} for i in range(7000)])
    capacity.watch(table, read_units=1000, write_units=1000)
    time.sleep(1.1)  # a merge reads up to the second it starts in
    run = Run(job="merge_increments")
    merge_increments(MergeOptions(table=table, vault=vault, region=REGION_A, max_stream_reads=1.0), run, spark)
    assert run.summary["records_new"] == 7000
    calls = series(capacity.timeline(table), "stream_reads")
    figures = capacity_model.summary(calls, 1.0, WINDOW_S)
    shown = [round(calls.get(s, 0)) for s in range(min(calls), max(calls) + 1)]
    assert figures["peak_rate"] <= 1.1, (shown, figures)
    assert sum(calls.values()) >= 7 and max(calls.values()) <= 2, (shown, figures)
    assert run.summary["stream_reads"]["budget"] == 1.0


def test_consumed_capacity_is_what_the_table_paid_when_spark_retries_tasks(spark, big_table, capacity, tmp_path,
                                                                          executor_faults):
    """Every 4th Scan call fails and a call gets one attempt, so tasks fail and Spark runs them again. The job's
    consumed RCU is what the table was charged over every attempt (the capacity model's sum), counted once."""
    executor_faults.set([{"op": "Scan", "fault": "server_error", "every": 4}])
    vault = str(tmp_path / "vault")
    summary = export_table(ExportOptions(table=big_table, vault=vault, region=REGION_A, segments=8,
                                         readers_per_task=2, max_read_units=400.0, max_attempts=1),
                           Run(job="export_table"), spark)
    assert executor_faults.injected("Scan", "server_error") >= 1
    charged = sum(series(capacity.timeline(big_table), "read").values())
    assert summary["items"] == 700
    assert summary["consumed_rcu"] == pytest.approx(charged, rel=0.01), (summary["read_capacity"], charged)

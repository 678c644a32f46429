"""The run's CloudWatch metrics: what each job's summary publishes, published to the stand-in only with --metrics
(or DDBVAULT_METRICS=1), and a failure to publish never changes the job's exit code."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from ddbvault import cli, metrics
from ddbvault.errors import VerifyMismatch
from ddbvault.runner import run_job
from servers import REGION_B

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=timezone.utc)
VAULT = "s3://vault-bucket/orders"


def dims(table="orders", vault=VAULT):
    return [{"Name": "Table", "Value": table}, {"Name": "Vault", "Value": vault}]


def datum(name, value, unit, **kw):
    return {"MetricName": name, "Dimensions": dims(**kw), "Timestamp": NOW, "Value": value, "Unit": unit}


def test_a_merge_publishes_its_lag_and_that_it_did_not_fail():
    summary = {"job": "merge_increments", "status": "ok", "table": "orders", "vault": VAULT, "lag_s": 75.5}
    assert metrics.metric_data(summary, now=NOW) == [datum("RunFailed", 0.0, "Count"),
                                                     datum("VaultLagSeconds", 75.5, "Seconds")]
    # Without lag_s, from recoverable_until.
    summary = {"job": "merge_increments", "status": "ok", "table": "orders", "vault": VAULT,
               "recoverable_until": (NOW - timedelta(seconds=90)).isoformat()}
    assert metrics.metric_data(summary, now=NOW)[1] == datum("VaultLagSeconds", 90.0, "Seconds")


def test_a_failed_merge_publishes_no_lag_so_the_staleness_alarm_sees_missing_data():
    summary = {"job": "merge_increments", "status": "failed", "table": "orders", "vault": VAULT, "error": "x"}
    assert metrics.metric_data(summary, now=NOW) == [datum("RunFailed", 1.0, "Count")]


def test_verify_publishes_its_mismatches_and_a_vault_check_its_damaged_versions():
    summary = {"job": "verify_replica", "status": "failed", "table": "orders", "vault": VAULT,
               "missing": 2, "extra": 1, "different": 4, "same": 10, "expired": 3}
    assert metrics.metric_data(summary, now=NOW) == [datum("RunFailed", 1.0, "Count"),
                                                     datum("VerifyMismatches", 7.0, "Count")]
    summary = {"job": "verify_replica", "status": "failed", "vault": VAULT, "versions_damaged": [3, 5]}
    assert metrics.metric_data(summary, now=NOW) == [datum("RunFailed", 1.0, "Count", table="-"),
                                                     datum("VerifyMismatches", 2.0, "Count", table="-")]


def test_other_jobs_publish_only_run_failed_named_by_the_given_table_and_vault():
    summary = {"job": "export_table", "status": "ok", "items": 5}
    assert metrics.metric_data(summary, "orders", VAULT, now=NOW) == [datum("RunFailed", 0.0, "Count")]


def test_the_metrics_flag_is_taken_off_before_the_job_parses():
    assert cli.take_metrics_flag(["--table", "t", "--metrics", "--vault", "v"]) == (["--table", "t", "--vault", "v"],
                                                                                    True)
    assert cli.take_metrics_flag(["--table", "t"]) == (["--table", "t"], False)


def probe_parser(argv):
    parser = cli.parser("verify_replica", "probe")
    parser.add_argument("--table")
    cli.add_vault(parser)
    return parser.parse_args(argv)


def mismatch(args, run):
    run.summary.update({"table": args.table, "vault": args.vault, "missing": 1, "extra": 0, "different": 2})
    raise VerifyMismatch("table differs")


def published(table):
    cloudwatch = boto3.client("cloudwatch", region_name=REGION_B)
    found = {}
    for name in ("RunFailed", "VerifyMismatches"):
        points = cloudwatch.get_metric_statistics(
            Namespace="ddbvault", MetricName=name, Dimensions=dims(table=table), Statistics=["Maximum"],
            StartTime=datetime.now(timezone.utc) - timedelta(hours=1),
            EndTime=datetime.now(timezone.utc) + timedelta(minutes=5), Period=60)["Datapoints"]
        found[name] = sorted(p["Maximum"] for p in points)
    return found


@pytest.mark.parametrize("how", ["flag", "environment", "off"])
def test_the_runner_publishes_in_the_vaults_region_only_when_asked(aws_endpoint, monkeypatch, capsys, how):
    table = f"metrics-{how}"
    argv = ["--table", table, "--vault", VAULT, "--vault-region", REGION_B]
    if how == "flag":
        argv.append("--metrics")
    if how == "environment":
        monkeypatch.setenv("DDBVAULT_METRICS", "1")
    code = run_job("verify_replica", argv, probe_parser, mismatch)
    assert code == VerifyMismatch("x").exit_code
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["status"], summary["missing"]) == ("failed", 1)
    expected = {"RunFailed": [], "VerifyMismatches": []} if how == "off" else \
        {"RunFailed": [1.0], "VerifyMismatches": [3.0]}
    assert published(table) == expected


def test_a_failure_to_publish_is_a_warning_and_keeps_the_exit_code(aws_endpoint, monkeypatch, capsys, caplog):
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    ok = run_job("export_table", ["--table", "t", "--vault", VAULT, "--metrics"], probe_parser,
                 lambda args, run: run.summary.update(items=1))
    assert ok == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["status"] == "ok"
    assert "could not publish the run's CloudWatch metrics (the job's result stands)" in caplog.text

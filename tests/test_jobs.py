"""The job contract, end to end: jobs/export_table.py run as its own process (its own JVM when it gets that far)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import boto3
import pytest
from jobs_helpers import create_table, every_type, name, put_items, table_texts, vault_texts

from ddbvault.vault import layout
from servers import REGION_A

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORT_JOB = os.path.join(REPO, "jobs", "export_table.py")


def run_job(args, timeout):
    env = dict(os.environ, DDBVAULT_SPARK_MASTER="local[2]", PYTHONUNBUFFERED="1")
    env.pop("DDBVAULT_DEBUG", None)
    return subprocess.run([sys.executable, EXPORT_JOB, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def last_json(stdout):
    lines = stdout.strip().splitlines()
    assert lines, "no output on stdout"
    return json.loads(lines[-1])


def test_missing_table_fails_with_one_stderr_line_and_a_json_summary(aws_endpoint, tmp_path):
    vault = tmp_path / "vault"
    done = run_job(["--table", "no-such-table", "--vault", str(vault), "--region", REGION_A], timeout=120)

    assert done.returncode == 1
    # The table is checked before Spark starts: no JVM, so nothing else on stderr.
    assert done.stderr.strip().splitlines() == [
        f"ddbvault export_table: table no-such-table does not exist in region {REGION_A}: "
        f"check --table and --region"]
    summary = last_json(done.stdout)
    assert summary["job"] == "export_table" and summary["status"] == "failed"
    assert summary["error"] == f"table no-such-table does not exist in region {REGION_A}: check --table and --region"
    assert isinstance(summary["duration_s"], float) and 0 <= summary["duration_s"] < 60
    assert not vault.exists()


def test_successful_export_prints_an_ok_summary(spark, aws_endpoint, tmp_path):
    ddb = boto3.client("dynamodb", region_name=REGION_A)
    table = name("job-ok")
    create_table(ddb, table, [("pk", "S"), ("sk", "B")])
    try:
        put_items(ddb, table, [dict(every_type(i), pk={"S": f"p{i}"}, sk={"B": bytes([i])}) for i in range(7)])
        vault = str(tmp_path / "vault")
        done = run_job(["--table", table, "--vault", vault, "--region", REGION_A, "--segments", "2",
                        "--max-read-units", "1000"], timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        summary = last_json(done.stdout)
        assert {k: summary[k] for k in ("job", "status", "items", "vault_version", "segments", "table", "vault")} \
            == {"job": "export_table", "status": "ok", "items": 7, "vault_version": 0, "segments": 2,
                "table": table, "vault": vault}
        assert isinstance(summary["duration_s"], float) and summary["duration_s"] > 0
        assert "error" not in summary
        assert "ddbvault export_table:" not in done.stderr
        # The vault holds the table, and the run is recorded in it with the same summary.
        assert vault_texts(spark, vault) == table_texts(ddb, table)
        with open(os.path.join(vault, layout.META_DIR, "runs", summary["run_id"] + ".json"),
                  encoding="utf-8") as handle:
            assert json.load(handle) == summary
    finally:
        ddb.delete_table(TableName=table)


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("DDBVAULT_DEBUG", raising=False)

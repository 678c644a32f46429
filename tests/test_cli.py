"""Every bad flag is refused before anything is read, written, created or started: exit 2, one
``ddbvault <job>:`` line on stderr, a JSON summary with status ``failed``, and no vault folder made."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = [
    ("export_table", ["--vault", "ftp://x/y"],
     "argument --vault: 'ftp://x/y': a vault is s3://bucket/prefix, s3a://bucket/prefix or a local path, not ftp://"),
    ("export_table", ["--max-read-units", "-5"], "argument --max-read-units: -5 is out of range: must be above 0"),
    ("export_table", ["--read-percent", "150"],
     "argument --read-percent: 150 is out of range: must be above 0 and at most 100"),
    ("export_table", ["--max-retries", "0"], "argument --max-retries: 0 is out of range: must be at least 1"),
    ("export_table", ["--readers-per-task", "0"],
     "argument --readers-per-task: 0 is out of range: must be at least 1"),
    ("export_table", ["--segments", "two"], "argument --segments: 'two' is not a whole number"),
    ("export_table", ["--max-read-units", "10", "--read-percent", "5"],
     "argument --read-percent: not allowed with argument --max-read-units"),
    ("restore_table", ["--max-write-units", "-5"], "argument --max-write-units: -5 is out of range: must be above 0"),
    ("restore_table", ["--write-percent", "150"],
     "argument --write-percent: 150 is out of range: must be above 0 and at most 100"),
    ("restore_table", ["--as-of-time", "yesterday"],
     "argument --as-of-time: 'yesterday' is not an ISO-8601 time such as 2026-11-27T04:05:06Z"),
    ("restore_table", ["--as-of-time", "2026-11-27T04:05:06Z", "--as-of-version", "3"],
     "argument --as-of-version: not allowed with argument --as-of-time"),
    ("restore_table", ["--writers-per-task", "0"],
     "argument --writers-per-task: 0 is out of range: must be at least 1"),
    ("verify_replica", ["--as-of-version", "-1"], "argument --as-of-version: -1 is out of range: must be at least 0"),
    ("verify_replica", ["--vault", "s3://"], "argument --vault: 's3://' names no bucket: use s3://bucket/prefix"),
    ("merge_increments", ["--follow", "0.5"], "argument --follow: 0.5 is out of range: must be at least 1"),
    ("merge_increments", ["--follow", "5", "--until", "2026-11-27T04:05:06Z"],
     "argument --until: not allowed with argument --follow"),
    ("merge_increments", ["--retention-days", "0.5"],
     "argument --retention-days: 0.5 is out of range: must be at least 1"),
    ("merge_increments", ["--lock-wait", "-1"], "argument --lock-wait: -1 is out of range: must be at least 0"),
    ("merge_increments", ["--format", "kinesis"], "--format and --start-export go with --source s3://bucket/prefix"),
    ("merge_increments", ["--source", "s3://landing/orders"],
     "--source needs --format, one of lambda, kinesis, incremental-export"),
    ("merge_increments", ["--source", "/tmp/landing", "--format", "lambda"],
     "--source '/tmp/landing' is not s3://bucket/prefix"),
    ("merge_increments", ["--source", "s3://landing/o", "--format", "lambda", "--until", "2026-11-27T04:05:06Z"],
     "--until is for the stream: a merge of landed files goes as far as they reach"),
    ("merge_increments", ["--source", "s3://landing/o", "--format", "kinesis", "--start-export"],
     "--start-export asks DynamoDB for an incremental export: it goes with --format incremental-export"),
    ("merge_increments", ["--source", "s3://landing/o", "--format", "parquet"],
     "argument --format: invalid choice: 'parquet' (choose from 'lambda', 'kinesis', 'incremental-export')"),
]


@pytest.mark.parametrize("job,flags,message", CASES, ids=[f"{c[0]}{' '.join(c[1])}" for c in CASES])
def test_a_bad_flag_is_refused_before_anything_happens(tmp_path, job, flags, message):
    vault = str(tmp_path / "vault")
    args = ["--table", "orders", "--vault", vault, "--region", "us-east-1", *flags]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT")}
    env.update(AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_REGION="us-east-1")  # nothing may be called
    done = subprocess.run([sys.executable, os.path.join(REPO, "jobs", f"{job}.py"), *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    expected = f"{message} (see --help)"
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"ddbvault {job}: {expected}"]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["job"], summary["status"], summary["error"]) == (job, "failed", expected)
    assert not os.path.exists(vault)
    assert os.listdir(tmp_path) == []


def test_help_still_prints_help():
    done = subprocess.run([sys.executable, os.path.join(REPO, "jobs", "merge_increments.py"), "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and "--follow SECONDS" in done.stdout and done.stderr == ""

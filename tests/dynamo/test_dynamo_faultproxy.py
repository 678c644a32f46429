"""standins/faultproxy.py run as a separate process and steered through its control endpoint."""
from __future__ import annotations

import os
import subprocess
import sys

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from faultproxy import Rule, control
from servers import REGION_A


@pytest.fixture
def proxy_process(aws_endpoint):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = os.path.join(root, "standins", "faultproxy.py")
    proc = subprocess.Popen([sys.executable, script, "--target", aws_endpoint, "--rule", "ListTables:throttle:first=2",
                             "--record"], stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_script_injects_and_is_steered_at_run_time(proxy_process):
    url = proxy_process
    ddb = boto3.client("dynamodb", region_name=REGION_A, endpoint_url=url,
                       config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
    codes = []
    for _ in range(3):
        try:
            ddb.list_tables()
            codes.append("ok")
        except ClientError as exc:
            codes.append(exc.response["Error"]["Code"])
    assert codes == ["ProvisionedThroughputExceededException"] * 2 + ["ok"]
    assert control(url)["injected"] == {"ListTables:throttle": 2}

    control(url, ["ListTables:server_error:every=2", "ListTables:throttle:code=RequestLimitExceeded"])
    codes = []
    for _ in range(2):
        with pytest.raises(ClientError) as caught:
            ddb.list_tables()
        codes.append((caught.value.response["Error"]["Code"],
                      caught.value.response["ResponseMetadata"]["HTTPStatusCode"]))
    assert codes == [("RequestLimitExceeded", 400), ("InternalServerError", 500)]
    counters = control(url)
    assert counters["requests"] == {"ListTables": 2}
    assert [(r["fault"], r["matched"], r["injected"]) for r in counters["rules"]] == [
        ("server_error", 2, 1), ("throttle", 1, 1)]
    control(url, clear=True)
    assert ddb.list_tables()["TableNames"] is not None


def test_rule_parsing():
    assert Rule.parse("Scan:throttle:first=3,code=ThrottlingException") == Rule(
        op="Scan", fault="throttle", first=3, code="ThrottlingException")
    assert Rule.parse('{"op": "BatchWriteItem", "fault": "unprocessed", "keep": 2}').keep == 2
    with pytest.raises(ValueError):
        Rule.parse("Scan:explode")
    with pytest.raises(ValueError):
        Rule(op="Scan", fault="throttle", first=1, every=2)
    rule = Rule(op="Scan", fault="throttle", after=2)
    assert [rule.fires() for _ in range(5)] == [False, False, True, True, True]
    rule = Rule(op="Scan", fault="throttle", every=3)
    assert [rule.fires() for _ in range(6)] == [False, False, True, False, False, True]

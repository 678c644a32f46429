"""Session fixtures: one moto server, one SparkSession, a vault bucket in the recovery region, and a fault proxy
between the SparkSession's executors and moto's DynamoDB."""
from __future__ import annotations

import os
import time
import uuid

import boto3
import pytest

from faultproxy import FaultProxy, control
from servers import REGION_A, REGION_B, aws_environment, moto_server

_STARTED = time.time()


@pytest.fixture(scope="session")
def aws_endpoint(tmp_path_factory):
    """moto server on loopback; every ``AWS_*`` variable points at it for this test run."""
    log_path = str(tmp_path_factory.mktemp("servers") / "moto.log")
    with moto_server(log_path) as url:
        saved = dict(os.environ)
        os.environ.update(aws_environment(url))
        try:
            yield url
        finally:
            os.environ.clear()
            os.environ.update(saved)


@pytest.fixture(scope="session")
def executor_proxy(aws_endpoint):
    """One fault proxy in front of moto for the whole run; the SparkSession's executors reach DynamoDB through it.

    A plain forwarder until a test sets rules (fixture ``executor_faults``). Only the executors use it: the
    driver's own DynamoDB calls (DescribeTable, CreateTable, the tests' checks) go straight to moto.
    """
    with FaultProxy(aws_endpoint) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def spark(aws_endpoint, executor_proxy, tmp_path_factory):
    """The one SparkSession of the run, built by the project's session builder (after the endpoints are set,
    so executors inherit them).

    ``AWS_ENDPOINT_URL_DYNAMODB`` (and ``..._DYNAMODB_STREAMS``) point at :func:`executor_proxy` while the session is
    built: the builder hands
    it to the executors (``spark.executorEnv.*``), whose Python workers keep it for the run; S3 stays direct to
    moto. The driver's variable is put back afterwards, so driver-side clients keep talking to moto directly.
    """
    from ddbvault.session import build_session

    warehouse = str(tmp_path_factory.mktemp("warehouse"))
    names = ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_DYNAMODB_STREAMS")
    saved = {n: os.environ.get(n) for n in names}
    os.environ.update({n: executor_proxy.url for n in names})
    try:
        session = build_session("ddbvault-tests", {
            "spark.master": "local[2,3]",  # 3 attempts per task: tests kill a task and see Spark retry it
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "4",
            "spark.sql.warehouse.dir": warehouse,
            "spark.driver.memory": "2g",
        })
    finally:
        for n, value in saved.items():
            if value is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = value
    yield session
    session.stop()


class ExecutorFaults:
    """Rules for the executors' proxy, set through its control endpoint (as a proxy in another process would be)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def set(self, rules, record: bool = False) -> dict:
        """Replace the rules (counters restart); ``rules`` as in ``faultproxy.Rule.parse``."""
        return control(self.url, rules, record=record)

    def counters(self) -> dict:
        return control(self.url)

    def injected(self, op: str, fault: str) -> int:
        return self.counters()["injected"].get(f"{op}:{fault}", 0)

    def clear(self) -> dict:
        return control(self.url, clear=True)


@pytest.fixture
def executor_faults(spark, executor_proxy):
    """The executors' proxy, cleared before and after the test, so no test leaks rules into the next."""
    faults = ExecutorFaults(executor_proxy.url)
    faults.clear()
    try:
        yield faults
    finally:
        faults.clear()


@pytest.fixture(scope="session")
def vault_bucket(aws_endpoint):
    """A bucket in the recovery region (region B), where vaults live."""
    name = "vault-" + uuid.uuid4().hex[:10]
    boto3.client("s3", region_name=REGION_B).create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION_B})
    return name


@pytest.fixture
def ddb(aws_endpoint):
    """(client in region A, list of table names): the tables a test adds to the list are deleted after it."""
    client = boto3.client("dynamodb", region_name=REGION_A)
    made = []
    yield client, made
    for table in made:
        client.delete_table(TableName=table)


@pytest.fixture
def ddb_a(aws_endpoint):
    return boto3.client("dynamodb", region_name=REGION_A)


@pytest.fixture
def ddb_b(aws_endpoint):
    return boto3.client("dynamodb", region_name=REGION_B)


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"suite wall time: {time.time() - _STARTED:.1f}s")

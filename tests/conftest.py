"""Session fixtures: one moto server, one SparkSession, a vault bucket in the recovery region, and between the
SparkSession's executors and moto's DynamoDB a fault proxy and a capacity-model proxy
(executor -> fault proxy -> capacity proxy -> moto)."""
from __future__ import annotations

import os
import time
import uuid

import boto3
import capacity as capacity_model
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
def capacity_proxy(aws_endpoint):
    """One capacity-model proxy in front of moto for the whole run (``standins/capacity.py``).

    Tables nobody watches pass through untouched; a test watches a table (fixture ``capacity``) to have its
    capacity enforced and its consumption recorded per second.
    """
    with capacity_model.CapacityProxy(aws_endpoint) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def executor_proxy(capacity_proxy):
    """One fault proxy for the whole run; the SparkSession's executors reach DynamoDB through it, and it forwards
    to :func:`capacity_proxy` (so executor -> fault proxy -> capacity proxy -> moto).

    A plain forwarder until a test sets rules (fixture ``executor_faults``). Only the executors use it: the
    driver's own DynamoDB calls (DescribeTable, CreateTable, the tests' checks) go straight to moto.
    """
    with FaultProxy(capacity_proxy.url) as proxy:
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


class Capacity:
    """Watches on the session's capacity proxy, set through its control endpoint (as for a proxy in another
    process). ``url`` is the proxy's, for clients that should go through it."""

    def __init__(self, url: str) -> None:
        self.url = url

    def watch(self, table: str, **limits) -> dict:
        """Enforce ``table``; ``limits`` as the keywords of ``capacity.CapacityProxy.watch``. Returns the settings."""
        return capacity_model.control(self.url, watch={"table": table, **limits})[table]["settings"]

    def watch_pending(self, table: str, **limits) -> dict:
        """Watch ``table``, which the code under test will create, from the first data-plane request naming it;
        ``limits`` as for :meth:`watch` (``region`` too). Returns the settings it will start with."""
        return capacity_model.control(self.url, watch_pending={"table": table, **limits})[table]["settings"]

    def timeline(self, table: str) -> dict:
        """``{series: {second: amount}}``; series and units as in ``capacity.CapacityProxy.timeline``."""
        return capacity_model.control(self.url, table=table)

    def counters(self) -> dict:
        return capacity_model.control(self.url)

    def clear(self) -> None:
        capacity_model.control(self.url, reset=True)


@pytest.fixture
def capacity(capacity_proxy):
    """The capacity proxy with no watches; every watch the test sets is cleared after it."""
    model = Capacity(capacity_proxy.url)
    model.clear()
    try:
        yield model
    finally:
        model.clear()


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

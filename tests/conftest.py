"""Session fixtures: one moto server, one SparkSession, a vault bucket in the recovery region."""
from __future__ import annotations

import os
import time
import uuid

import boto3
import pytest

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
def spark(aws_endpoint, tmp_path_factory):
    """The one SparkSession of the run, built by the project's session builder (after the endpoints are set,
    so executors inherit them)."""
    from ddbvault.session import build_session

    warehouse = str(tmp_path_factory.mktemp("warehouse"))
    session = build_session("ddbvault-tests", {
        "spark.master": "local[2,3]",  # 3 attempts per task: tests kill a task and see Spark retry it
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.warehouse.dir": warehouse,
        "spark.driver.memory": "2g",
    })
    yield session
    session.stop()


@pytest.fixture(scope="session")
def vault_bucket(aws_endpoint):
    """A bucket in the recovery region (region B), where vaults live."""
    name = "vault-" + uuid.uuid4().hex[:10]
    boto3.client("s3", region_name=REGION_B).create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION_B})
    return name


@pytest.fixture
def ddb_a(aws_endpoint):
    return boto3.client("dynamodb", region_name=REGION_A)


@pytest.fixture
def ddb_b(aws_endpoint):
    return boto3.client("dynamodb", region_name=REGION_B)


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"suite wall time: {time.time() - _STARTED:.1f}s")

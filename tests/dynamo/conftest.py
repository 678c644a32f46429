"""Fixtures for the DynamoDB access tests: a fault proxy in front of moto, tables, a fake clock."""
from __future__ import annotations

import boto3
import pytest
from dynamo_helpers import FakeClock, Tables

from ddbvault import aws
from faultproxy import FaultProxy
from servers import REGION_A


@pytest.fixture(scope="session")
def fault_proxy(aws_endpoint):
    """One proxy in front of moto for the session; each test sets its own rules (see ``faults``)."""
    with FaultProxy(aws_endpoint) as proxy:
        yield proxy


@pytest.fixture
def faults(fault_proxy, monkeypatch):
    """The proxy, cleared, with ``AWS_ENDPOINT_URL_DYNAMODB`` pointing at it for this test.

    ``ddbvault.aws`` keys its cached clients by endpoint too, but a test that registers handlers on a cached
    client (``capture_bodies``) must not leave them on the client the next test gets: give the test a fresh
    cache and put the old one back afterwards.
    """
    fault_proxy.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", fault_proxy.url)
    monkeypatch.setattr(aws, "_clients", {})
    yield fault_proxy
    fault_proxy.reset()


@pytest.fixture
def direct(aws_endpoint):
    """A client straight to moto (no proxy), for setting up and checking tables."""
    return boto3.client("dynamodb", region_name=REGION_A, endpoint_url=aws_endpoint)


@pytest.fixture
def tables(direct):
    made = Tables(direct)
    yield made
    for name in made.names:
        direct.delete_table(TableName=name)


@pytest.fixture
def clock():
    return FakeClock()

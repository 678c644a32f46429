"""boto3 clients for every part of ddbvault, driver and executors alike.

Endpoints are left to boto3, which honours ``AWS_ENDPOINT_URL`` and the service-specific
``AWS_ENDPOINT_URL_DYNAMODB``, ``AWS_ENDPOINT_URL_DYNAMODB_STREAMS`` and ``AWS_ENDPOINT_URL_S3`` natively;
the session builder forwards those variables to executors so both sides talk to the same endpoints.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Callable, Dict, Optional, Tuple

import boto3
from botocore.config import Config

from ddbvault.errors import UsageError

ENDPOINT_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_DYNAMODB_STREAMS",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_STS",
)

_local = threading.local()


def resolve_region(region: Optional[str] = None) -> str:
    """The region to use: the explicit one, else ``AWS_REGION``, else ``AWS_DEFAULT_REGION``."""
    found = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not found:
        raise UsageError("no AWS region given: pass --region or set AWS_REGION")
    return found


def client(service: str, region: Optional[str] = None, *, data_plane: bool = False, pool: int = 16,
           events: Tuple[Tuple[str, Callable[..., Any]], ...] = ()) -> Any:
    """A cached low-level client for ``service`` in ``region`` (per thread; boto3 sessions are not thread-safe).

    ``data_plane=True`` turns botocore's own retries off: ddbvault's retry loop (``ddbvault.dynamo.retry``)
    then sees every throttle, backs off with jitter and slows the shared pace, instead of botocore retrying
    blindly inside one call. ``events`` are (event name, handler) pairs registered on the new client (and part
    of the cache key, so a client with handlers is never shared with one without).
    """
    region = resolve_region(region)
    # The endpoint is part of the key: a test (or a tool) that repoints AWS_ENDPOINT_URL_* gets a new client.
    endpoint = os.environ.get("AWS_ENDPOINT_URL_" + service.upper().replace("-", "_")) or \
        os.environ.get("AWS_ENDPOINT_URL") or ""
    key = (service, region, data_plane, endpoint, events)
    cache: Dict[Any, Any] = getattr(_local, "clients", None) or {}
    _local.clients = cache
    if key not in cache:
        retries = {"mode": "standard", "total_max_attempts": 1 if data_plane else 6}
        config = Config(
            region_name=region,
            retries=retries,
            max_pool_connections=pool,
            connect_timeout=10,
            read_timeout=60,
        )
        made = boto3.session.Session().client(service, config=config)
        for event, handler in events:
            made.meta.events.register(event, handler)
        cache[key] = made
    return cache[key]


def endpoint_environment() -> Dict[str, str]:
    """The endpoint and region variables set in this process, to hand on to executors."""
    names = (*ENDPOINT_VARIABLES, "AWS_REGION", "AWS_DEFAULT_REGION")
    return {name: os.environ[name] for name in names if os.environ.get(name)}

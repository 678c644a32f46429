"""boto3 clients for every part of ddbvault, driver and executors alike.

Endpoints are left to boto3, which honours ``AWS_ENDPOINT_URL`` and the service-specific
``AWS_ENDPOINT_URL_DYNAMODB``, ``AWS_ENDPOINT_URL_DYNAMODB_STREAMS`` and ``AWS_ENDPOINT_URL_S3`` natively;
the session builder forwards those variables to executors so both sides talk to the same endpoints.
"""
from __future__ import annotations

import json
import os
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

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

# One boto3 session and one client per (service, region, flavour, endpoint) in each process, shared by its threads:
# botocore's clients are thread-safe (boto3's guide: make the client once and pass it to the threads), while
# building one reads and parses the service model and endpoint rules again (~50 ms of CPU with a new session).
# Per thread, every scan reader and batch writer of every Spark task paid that; per process, a reused PySpark
# worker pays it once. A forked child starts afresh: sockets and locks do not survive a fork.
_lock = threading.Lock()
_clients: Dict[Any, Any] = {}
_session: List[Any] = []


def _forget_after_fork() -> None:
    global _lock
    _lock = threading.Lock()
    _clients.clear()
    _session.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def resolve_region(region: Optional[str] = None) -> str:
    """The region to use: the explicit one, else ``AWS_REGION``, else ``AWS_DEFAULT_REGION``."""
    found = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not found:
        raise UsageError("no AWS region given: pass --region or set AWS_REGION")
    return found


def client(service: str, region: Optional[str] = None, *, data_plane: bool = False, pool: int = 64,
           events: Tuple[Tuple[str, Callable[..., Any]], ...] = ()) -> Any:
    """A cached low-level client for ``service`` in ``region``, shared by every thread of this process.

    ``pool`` connections are kept for reuse: more than the threads that share the client (a task's scan readers
    or batch writers), so none of them waits for or reopens a connection.

    ``data_plane=True`` turns botocore's own retries off: ddbvault's retry loop (``ddbvault.dynamo.retry``)
    then sees every throttle, backs off with jitter and slows the shared pace, instead of botocore retrying
    blindly inside one call. ``events`` are (event name, handler) pairs registered on the new client (and part
    of the cache key, so a client with handlers is never shared with one without).
    """
    region = resolve_region(region)
    # The endpoint is part of the key: a test (or a tool) that repoints AWS_ENDPOINT_URL_* gets a new client.
    endpoint = os.environ.get("AWS_ENDPOINT_URL_" + service.upper().replace("-", "_")) or \
        os.environ.get("AWS_ENDPOINT_URL") or ""
    key = (service, region, data_plane, endpoint, events, pool)
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:  # a boto3 session is not thread-safe: clients are made one at a time
        found = _clients.get(key)
        if found is not None:
            return found
        retries = {"mode": "standard", "total_max_attempts": 1 if data_plane else 6}
        config = Config(
            region_name=region,
            retries=retries,
            max_pool_connections=pool,
            connect_timeout=10,
            read_timeout=60,
        )
        made = _shared_session().client(service, config=config)
        for event, handler in events:
            made.meta.events.register(event, handler)
        _clients[key] = made
        return made


def _shared_session() -> Any:
    if not _session:
        _session.append(boto3.session.Session())
    return _session[0]


def credentials() -> Any:
    """The credentials of this process's clients (botocore's, refreshed as they near expiry; None when there are
    none): for a request ddbvault signs itself (``dynamo.wire.Sender``)."""
    with _lock:
        return _shared_session().get_credentials()


class RawMember:
    """A botocore ``before-parse`` handler that hands one list of a JSON response over as ``json.loads`` made it.

    botocore would walk every attribute of every item (a Scan's ``Items``, a GetRecords' ``Records`` with their
    images) through its shape model in Python and base64-decode every binary; ``json.loads`` (in C) does the
    same job several times faster and leaves binaries as the base64 text the vault stores anyway (and the codec
    takes either form). botocore still parses the small rest of the response (LastEvaluatedKey, ConsumedCapacity,
    NextShardIterator), and error responses untouched. Timestamps in the list stay JSON numbers (epoch seconds).
    The CRC32 check reads the raw HTTP body, not this.
    """

    def __init__(self, member: str) -> None:
        self.member = member

    def __call__(self, response_dict: Dict[str, Any], customized_response_dict: Dict[str, Any], **_: Any) -> None:
        if response_dict.get("status_code") != 200:
            return
        body = json.loads(response_dict["body"])
        found = body.pop(self.member, None)
        if found is None:
            return
        customized_response_dict[self.member] = found
        response_dict["body"] = json.dumps(body).encode("utf-8")


# Right-to-left tries for the end of a member's array before giving up on the fast split (each is a small parse).
_MAX_SPLIT_TRIES = 64


def split_member(body: bytes, member: str) -> Optional[Tuple[bytes, bytes]]:
    """``(the array, the rest)`` of a JSON response holding a top-level ``member`` array, without parsing the
    array: the array's bytes exactly as sent, and the rest of the response with the array emptied. None when the
    body is not in the compact shape this expects (then parse it whole).

    Made for DynamoDB's responses, where the other members are small and hold no array (Scan's Count,
    ScannedCount, ConsumedCapacity and LastEvaluatedKey): the first ``"<member>":[`` opens the member (inside a
    string every quote is escaped, and no other member holds an array), and its end is the rightmost ``]`` after
    which the rest parses as JSON. A ``]`` further right sits inside a string of the rest, and cutting there leaves
    a quote of DynamoDB's own next to the cut, which no JSON parses; one further left than the true end leaves
    a truncated array, which the consumer's parse refuses.
    """
    key = b'"' + member.encode("ascii") + b'":['
    start = body.find(key)
    if start < 0:
        return None
    open_at = start + len(key) - 1
    head = body[:start] + key + b"]"
    end = len(body)
    for _ in range(_MAX_SPLIT_TRIES):
        close = body.rfind(b"]", open_at, end)
        if close < 0:
            return None
        rest = head + body[close + 1:]
        try:
            parsed = json.loads(rest)
        except ValueError:
            end = close
            continue
        return (body[open_at:close + 1], rest) if isinstance(parsed, dict) else None
    return None


class RawBytes:
    """A botocore ``before-parse`` handler that hands one top-level list of a JSON response over as the bytes the
    service sent (the export's fastest path: a Scan's ``Items`` go to the vault's staging untouched and are parsed
    once, by the JVM codec at the commit). Bytes that are not UTF-8 are refused here, since the reader of the
    staged text would replace them. A body of another shape is parsed whole and the list re-serialised."""

    def __init__(self, member: str) -> None:
        self.member = member

    def __call__(self, response_dict: Dict[str, Any], customized_response_dict: Dict[str, Any], **_: Any) -> None:
        if response_dict.get("status_code") != 200:
            return
        split = split_member(response_dict["body"], self.member)
        if split is None:
            body = json.loads(response_dict["body"])
            found = body.pop(self.member, None)
            if found is None:
                return
            response_dict["body"] = json.dumps(body).encode("utf-8")
            customized_response_dict[self.member] = json.dumps(found, ensure_ascii=False,
                                                               separators=(",", ":")).encode("utf-8")
            return
        found, response_dict["body"] = split
        if not found.isascii():
            found.decode("utf-8")  # DynamoDB sends UTF-8 only: anything else stops the job (UnicodeDecodeError)
        customized_response_dict[self.member] = found


def endpoint_environment() -> Dict[str, str]:
    """The endpoint and region variables set in this process, to hand on to executors."""
    names = (*ENDPOINT_VARIABLES, "AWS_REGION", "AWS_DEFAULT_REGION")
    return {name: os.environ[name] for name in names if os.environ.get(name)}

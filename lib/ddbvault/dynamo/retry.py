"""Retries for DynamoDB data-plane calls: capped exponential backoff with full jitter.

Data-plane clients (``ddbvault.aws.client(..., data_plane=True)``) have botocore's own retries turned off, so
every throttle reaches :func:`call`: it backs off and tells the job's limiter so every reader or writer slows
down. Throttling is budgeted by time, not by a count: minutes of throttling are normal on a busy table (a
burst from another workload, a partition split), so a call keeps backing off until it has waited
``throttle_s`` (10 minutes by default) in a row on throttles; server and connection errors give up after
``max_attempts``. Either way it then raises a :class:`CapacityError` that says what to change. Thread-safe: a
policy is read-only and the loop keeps its state on the stack.
"""
from __future__ import annotations

import logging
import random as _random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TypeVar

from botocore.exceptions import ChecksumError, ClientError, ConnectionError, HTTPClientError

from ddbvault.errors import CapacityError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Error codes DynamoDB (and the shared AWS front end) use to say "slow down". RequestLimitExceeded is the
# account-level one that emr-dynamodb-connector forgot (its issue #183); "Throttling" and
# "TooManyRequestsException" are in botocore's own throttle list and cost nothing to honour.
THROTTLE_CODES = frozenset({
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "Throttling",
    "TooManyRequestsException",
    "LimitExceededException",  # DynamoDB Streams: too many GetRecords/GetShardIterator calls on a shard
})

# Transient server-side failures: retrying the same request is safe (Scan pages and PutRequests are idempotent).
SERVER_ERROR_CODES = frozenset({
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
})

DEFAULT_ADVICE = ("lower --max-read-units or raise the table's capacity, or raise --max-throttle-minutes "
                  "(throttling) or --max-retries (server errors)")
STREAMS_ADVICE = ("make sure no more than two readers poll the stream's shards at once, or lower "
                  "--max-stream-reads, or raise --max-throttle-minutes")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry. ``sleep`` and ``random`` are injectable for tests.

    Retry ``n`` (0-based) sleeps ``random.uniform(0, min(max_delay_s, base_delay_s * 2**n))`` ("full jitter"),
    so many threads hitting the same throttle spread out instead of retrying in lock-step.
    """

    max_attempts: int = 12
    base_delay_s: float = 0.05
    max_delay_s: float = 10.0
    throttle_s: float = 600.0
    sleep: Callable[[float], Any] = field(default=time.sleep, repr=False, compare=False)
    random: Any = field(default=_random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("retry delays must not be negative")
        if self.throttle_s < 0:
            raise ValueError(f"throttle_s must not be negative, not {self.throttle_s}")

    def delay(self, retry: int) -> float:
        """The sleep before retry number ``retry`` (0 = the first retry)."""
        # min() before 2**n would overflow a float only past ~1000 retries; cap the exponent anyway.
        cap = min(self.max_delay_s, self.base_delay_s * (2 ** min(retry, 62)))
        return self.random.uniform(0, cap)


def error_code(exc: BaseException) -> str:
    """The AWS error code of ``exc`` (``ClientError``), else its class name (connection errors and the like)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or type(exc).__name__)
    return type(exc).__name__


def _status(exc: BaseException) -> int:
    if isinstance(exc, ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return 0


def is_throttle(exc: BaseException) -> bool:
    """True when DynamoDB asked us to slow down (the pace should drop, not just this call wait)."""
    return isinstance(exc, ClientError) and (error_code(exc) in THROTTLE_CODES or _status(exc) == 429)


def is_retryable(exc: BaseException) -> bool:
    """Throttles, 5xx / InternalServerError / ServiceUnavailable, and connection or read-timeout failures."""
    if isinstance(exc, ClientError):
        return is_throttle(exc) or error_code(exc) in SERVER_ERROR_CODES or _status(exc) >= 500
    # ConnectionError: endpoint unreachable, connect timeout; HTTPClientError: connection closed,
    # read timeout, response stream broken. A request cut off this way may or may not have been applied;
    # both our calls (Scan, BatchWriteItem of puts) are idempotent, so sending it again is safe. ChecksumError:
    # the answer's x-amz-crc32 does not match what arrived (dynamo.wire.Sender checks it), the same case.
    return isinstance(exc, (ConnectionError, HTTPClientError, ChecksumError))


def call(
    fn: Callable[[], T],
    *,
    policy: Optional[RetryPolicy] = None,
    what: str,
    limiter: Any = None,
    advice: str = DEFAULT_ADVICE,
) -> T:
    """``fn()``, retried on retryable errors; non-retryable errors propagate unchanged.

    ``what`` names the call for people ("Scan of table T segment 3/16"); ``limiter`` (a ``RateLimiter`` or the
    job's budget client) hears about every throttle (``throttled()``) and every success (``recover()``);
    ``advice`` ends the :class:`CapacityError` raised once throttles have kept this call waiting
    ``policy.throttle_s`` seconds in a row, or ``policy.max_attempts`` attempts failed on other errors.
    """
    policy = policy or RetryPolicy()
    failures = 0          # server and connection errors: counted against max_attempts
    throttled_s = 0.0     # backoff slept on throttles since the last other outcome
    throttle_retries = 0
    while True:
        try:
            result = fn()
        except Exception as exc:
            if not is_retryable(exc):
                raise
            throttle = is_throttle(exc)
            if throttle:
                if limiter is not None:
                    limiter.throttled()
                if throttled_s >= policy.throttle_s:
                    raise CapacityError(_exhausted_message(what, exc, failures + throttle_retries + 1, True,
                                                           advice, throttled_s=throttled_s)) from exc
                delay = policy.delay(throttle_retries)
                throttle_retries += 1
                throttled_s += delay
            else:
                failures += 1
                throttled_s, throttle_retries = 0.0, 0
                if failures >= policy.max_attempts:
                    raise CapacityError(_exhausted_message(what, exc, failures, False, advice)) from exc
                delay = policy.delay(failures - 1)
            log.debug("%s: %s, retrying in %.3fs", what, error_code(exc), delay)
            policy.sleep(delay)
            continue
        if limiter is not None:
            limiter.recover()
        return result


def _exhausted_message(what: str, exc: BaseException, attempts: int, throttle: bool, advice: str, *,
                       throttled_s: float = 0.0) -> str:
    code = error_code(exc)
    detail = str(exc).splitlines()[0] if str(exc) else code
    if throttle:
        why = f"DynamoDB kept throttling it for {throttled_s:.0f}s of backoff"
        todo = advice
    else:
        why = "DynamoDB kept failing (server or connection errors)"
        todo = f"check the endpoint, region and AWS service health, then rerun; or {advice}"
    return (f"{what} failed after {attempts} attempts; last error {code}: {detail}. "
            f"{why}: {todo}.")

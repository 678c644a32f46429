"""ddbvault.dynamo.retry: backoff shape, which errors are retried, and what the final error says."""
from __future__ import annotations

import random

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from ddbvault.dynamo import retry
from ddbvault.dynamo.retry import RetryPolicy
from ddbvault.errors import CapacityError


def client_error(code: str, status: int = 400, message: str = "boom") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "Scan")


class MaxRandom:
    """Full jitter's upper edge: uniform(lo, hi) -> hi, recording the bounds asked for."""

    def __init__(self) -> None:
        self.bounds = []

    def uniform(self, lo: float, hi: float) -> float:
        self.bounds.append((lo, hi))
        return hi


class RecordingLimiter:
    def __init__(self) -> None:
        self.events = []

    def throttled(self) -> None:
        self.events.append("throttled")

    def recover(self) -> None:
        self.events.append("recover")


def failing(errors, result="ok"):
    """fn() raising each of ``errors`` in turn, then returning ``result``; counts calls."""
    state = {"calls": 0}

    def fn():
        state["calls"] += 1
        if state["calls"] <= len(errors):
            raise errors[state["calls"] - 1]
        return result

    return fn, state


def test_backoff_is_exponential_capped_and_full_jitter():
    rnd = MaxRandom()
    sleeps = []
    policy = RetryPolicy(max_attempts=7, base_delay_s=0.1, max_delay_s=1.0, sleep=sleeps.append, random=rnd)
    fn, state = failing([client_error("ProvisionedThroughputExceededException")] * 6)
    assert retry.call(fn, policy=policy, what="Scan of table T segment 0/1") == "ok"
    assert state["calls"] == 7
    assert rnd.bounds == [(0, 0.1), (0, 0.2), (0, 0.4), (0, 0.8), (0, 1.0), (0, 1.0)]
    assert sleeps == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_jitter_spreads_delays_within_the_cap():
    policy = RetryPolicy(base_delay_s=0.05, max_delay_s=10.0, random=random.Random(7))
    delays = [policy.delay(n) for n in range(12) for _ in range(20)]
    caps = [min(10.0, 0.05 * 2 ** n) for n in range(12) for _ in range(20)]
    assert all(0 <= d <= c for d, c in zip(delays, caps))
    assert len(set(delays)) == len(delays)  # jittered, not one fixed delay per attempt
    assert max(delays) <= 10.0
    # Full jitter: some delays land well below half the cap (equal jitter would not).
    assert any(d < c / 4 for d, c in zip(delays, caps))


@pytest.mark.parametrize("error", [
    client_error("ProvisionedThroughputExceededException"),
    client_error("ThrottlingException"),
    client_error("RequestLimitExceeded"),
    client_error("Throttling"),
    client_error("TooManyRequestsException"),
])
def test_throttle_then_success_slows_the_limiter(error):
    limiter = RecordingLimiter()
    sleeps = []
    fn, state = failing([error, error])
    policy = RetryPolicy(sleep=sleeps.append, random=MaxRandom())
    assert retry.call(fn, policy=policy, what="w", limiter=limiter) == "ok"
    assert state["calls"] == 3
    assert len(sleeps) == 2
    assert limiter.events == ["throttled", "throttled", "recover"]
    assert retry.is_throttle(error) and retry.is_retryable(error)


@pytest.mark.parametrize("error", [
    client_error("InternalServerError", 500),
    client_error("ServiceUnavailable", 503),
    client_error("SomethingNew", 502),
    EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
])
def test_server_and_connection_errors_are_retried_without_slowing_the_pace(error):
    limiter = RecordingLimiter()
    fn, state = failing([error])
    assert retry.call(fn, policy=RetryPolicy(sleep=lambda s: None), what="w", limiter=limiter) == "ok"
    assert state["calls"] == 2
    assert limiter.events == ["recover"]
    assert retry.is_retryable(error) and not retry.is_throttle(error)


def test_exhausted_throttles_raise_capacity_error_that_says_what_to_do():
    error = client_error("ProvisionedThroughputExceededException", message="Rate of requests exceeds")
    fn, state = failing([error] * 100)
    top = type("Top", (), {"uniform": staticmethod(lambda low, high: high)})
    # Throttles are budgeted by the time they keep a call waiting, not by attempts: backoffs of 0.05, 0.1,
    # 0.2 and 0.4 s (jitter at its top) reach 0.75 s on the fifth attempt.
    policy = RetryPolicy(max_attempts=1, sleep=lambda s: None, throttle_s=0.75, random=top)
    with pytest.raises(CapacityError) as caught:
        retry.call(fn, policy=policy, what="Scan of table orders segment 3/16")
    assert state["calls"] == 5
    message = str(caught.value)
    assert message.startswith("Scan of table orders segment 3/16 failed after 5 attempts")
    assert "last error ProvisionedThroughputExceededException" in message
    assert "kept throttling it for 1s of backoff" in message
    assert "lower --max-read-units or raise the table's capacity, or raise --max-throttle-minutes" in message
    assert caught.value.__cause__ is error


def test_exhausted_server_errors_say_so():
    fn, _ = failing([client_error("InternalServerError", 500)] * 3)
    with pytest.raises(CapacityError) as caught:
        retry.call(fn, policy=RetryPolicy(max_attempts=3, sleep=lambda s: None), what="Scan of table T",
                   advice="lower --max-write-units")
    message = str(caught.value)
    assert "after 3 attempts; last error InternalServerError" in message
    assert "server or connection errors" in message and "lower --max-write-units" in message


@pytest.mark.parametrize("error", [
    client_error("ValidationException"),
    client_error("ResourceNotFoundException"),
    client_error("ConditionalCheckFailedException"),
    ValueError("a bug"),
])
def test_non_retryable_errors_propagate_unchanged_at_once(error):
    sleeps = []
    limiter = RecordingLimiter()
    fn, state = failing([error])
    with pytest.raises(type(error)) as caught:
        retry.call(fn, policy=RetryPolicy(sleep=sleeps.append), what="w", limiter=limiter)
    assert caught.value is error
    assert state["calls"] == 1 and sleeps == [] and limiter.events == []


def test_policy_validates():
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    assert RetryPolicy() == RetryPolicy(max_attempts=12, base_delay_s=0.05, max_delay_s=10.0)

"""Pacing of DynamoDB reads and writes in capacity units (RCU / WCU): a token bucket.

A job has one budget (``--max-read-units`` / ``--max-write-units``), never split into per-task shares (those are
wrong as soon as dynamic allocation adds executors): the driver holds it in one :class:`RateLimiter` and serves
it to every task (``ddbvault.dynamo.budget``). A local limiter serves the threads of one process (tests, tools).

The bucket is charged before a call with an estimate (``acquire``) and corrected after it with what DynamoDB
reports it charged (``settle``), so the pace follows real consumption. Throttles halve the rate (``throttled``)
and successes raise it back linearly in time towards the target (``recover``): AIMD, as TCP does, so several
tasks that together overrun a table settle near what it can take.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional

# While a caller waits with a ``cancel`` event it re-checks the event at least this often.
_CANCEL_CHECK_S = 0.2
_EPSILON = 1e-9


class RateLimiter:
    """Thread-safe token bucket in capacity units; ``units_per_second=None`` means unlimited.

    ``acquire(units)`` waits until the bucket is not in debt, then takes ``units`` (in pieces of at most one
    burst), so acquiring never takes the bucket more than one burst (``rate * burst_seconds``) into debt and a
    request bigger than the bucket still gets through. ``settle(estimated, actual)`` then charges the
    difference: when DynamoDB charged more than estimated, the debt deepens and later acquires wait it off, so
    the long-run rate is what DynamoDB actually charged, not what we guessed.

    ``throttled()`` multiplies the rate by ``decrease`` (at most once per ``cooldown_s``: one throttle storm
    hits every thread at once and should count once), never below ``max(1, min_fraction * target)`` units/s;
    ``recover()`` (called on each success) adds ``target / recovery_s`` units/s per second since the last
    change, up to the target. ``start_full=False`` starts with an empty bucket (no burst at the start).
    ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        units_per_second: Optional[float],
        burst_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        *,
        decrease: float = 0.5,
        min_fraction: float = 0.05,
        recovery_s: float = 10.0,
        cooldown_s: float = 1.0,
        start_full: bool = True,
    ) -> None:
        if units_per_second is not None and units_per_second <= 0:
            raise ValueError(f"units_per_second must be positive or None, not {units_per_second}")
        if burst_seconds <= 0:
            raise ValueError(f"burst_seconds must be positive, not {burst_seconds}")
        self.target = units_per_second
        self.burst_seconds = burst_seconds
        self._clock = clock
        self._sleep = sleep
        self._decrease = decrease
        self._recovery_s = recovery_s
        self._cooldown_s = cooldown_s
        self._floor = None if units_per_second is None else min(
            units_per_second, max(1.0, min_fraction * units_per_second))
        self._lock = threading.Lock()
        self._rate = units_per_second
        self._tokens = 0.0 if units_per_second is None or not start_full else units_per_second * burst_seconds
        now = clock()
        self._last_refill = now
        self._last_recover = now
        self._last_decrease: Optional[float] = None
        self._consumed = 0.0
        self._throttles = 0

    # -- read-only views -------------------------------------------------------------------------------

    @property
    def rate(self) -> Optional[float]:
        """The current rate in units/s (None = unlimited)."""
        with self._lock:
            return self._rate

    @property
    def consumed(self) -> float:
        """Units consumed so far: estimates acquired, corrected by every settle."""
        with self._lock:
            return self._consumed

    @property
    def throttles(self) -> int:
        """How many times ``throttled()`` was called."""
        with self._lock:
            return self._throttles

    @property
    def burst(self) -> Optional[float]:
        """The bucket size at the target rate (None = unlimited); callers cap first guesses with it."""
        return None if self.target is None else self.target * self.burst_seconds

    # -- internals (call with the lock held) ----------------------------------------------------------------

    def _capacity(self) -> float:
        assert self._rate is not None
        return self._rate * self.burst_seconds

    def _refill(self, now: float) -> None:
        if self._rate is None:
            return
        elapsed = max(0.0, now - self._last_refill)
        self._tokens = min(self._capacity(), self._tokens + elapsed * self._rate)
        self._last_refill = now

    # -- the API ----------------------------------------------------------------------------------------

    def acquire(self, units: float, cancel: Optional[threading.Event] = None) -> bool:
        """Block until the bucket can pay ``units`` (an estimate); False only if ``cancel`` was set first."""
        units = max(0.0, float(units))
        remaining = units
        while True:
            with self._lock:
                if self._rate is None:
                    self._consumed += remaining
                    return True
                self._refill(self._clock())
                # Tolerance: float rounding in refill can leave a debt of 1e-17 that no sleep can repay.
                while remaining > 0 and self._tokens >= -_EPSILON * self._capacity():
                    piece = min(remaining, self._capacity())
                    self._tokens -= piece
                    self._consumed += piece
                    remaining -= piece
                if remaining <= 0:
                    return True
                wait = -self._tokens / self._rate
            if cancel is not None:
                if cancel.is_set():
                    return False
                wait = min(wait, _CANCEL_CHECK_S)
            self._sleep(wait)

    def reserve(self, units: float) -> float:
        """Take ``units`` now, without waiting, and return how many seconds the caller must wait before it
        spends them (0 when the bucket had them): the reservation form of :meth:`acquire`, for a limiter that
        serves callers elsewhere (the job's budget service). Reservations queue up in order of arrival: the
        n-th caller waits until the debt the callers before it made is repaid."""
        units = max(0.0, float(units))
        with self._lock:
            self._consumed += units
            if self._rate is None:
                return 0.0
            self._refill(self._clock())
            self._tokens -= units
            return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def call_units(self, callers: int = 1) -> Optional[float]:
        """How many units one call should cost so that ``callers`` calling at once stay about one second of
        the current rate ahead of it (None = unlimited): callers size their pages and batches by it."""
        rate = self.rate
        if rate is None:
            return None
        return rate * self.burst_seconds / max(1, callers)

    def settle(self, estimated: float, actual: float) -> None:
        """After the call: charge (or refund) the difference between what was acquired and what it cost."""
        diff = float(actual) - float(estimated)
        with self._lock:
            self._consumed += diff
            if self._rate is None:
                return
            self._refill(self._clock())
            self._tokens = min(self._capacity(), self._tokens - diff)

    def throttled(self) -> None:
        """DynamoDB throttled a call: cut the rate (multiplicative decrease)."""
        with self._lock:
            self._throttles += 1
            if self._rate is None:
                return
            now = self._clock()
            if self._last_decrease is not None and now - self._last_decrease < self._cooldown_s:
                return
            self._refill(now)
            assert self._floor is not None
            self._rate = max(self._floor, self._rate * self._decrease)
            self._tokens = min(self._tokens, self._capacity())
            self._last_decrease = now
            self._last_recover = now

    def recover(self) -> None:
        """A call succeeded: move the rate back towards the target (additive increase, linear in time)."""
        with self._lock:
            if self._rate is None or self.target is None:
                return
            now = self._clock()
            if self._rate < self.target:
                self._refill(now)
                step = self.target / self._recovery_s * max(0.0, now - self._last_recover)
                self._rate = min(self.target, self._rate + step)
            self._last_recover = now

    def __repr__(self) -> str:
        return f"RateLimiter(target={self.target}, rate={self.rate}, consumed={self.consumed:.1f})"

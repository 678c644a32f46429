"""ddbvault.dynamo.pacing: token bucket timing on a simulated clock, settle, AIMD."""
from __future__ import annotations

import threading
import time

import pytest

from ddbvault.dynamo.pacing import RateLimiter


def limiter_on(clock, rate, **kwargs):
    return RateLimiter(rate, clock=clock, sleep=clock.sleep, **kwargs)


def test_n_acquires_take_the_expected_simulated_time(clock):
    limiter = limiter_on(clock, 100.0, burst_seconds=1.0)
    for _ in range(1000):
        limiter.acquire(1)
    # 100 come out of the full bucket, one more goes into debt, the other 899 wait 1/100 s each.
    assert clock.now == pytest.approx(8.99, abs=0.02)
    assert limiter.consumed == pytest.approx(1000)


def test_big_request_goes_at_most_one_burst_into_debt(clock):
    limiter = limiter_on(clock, 100.0, burst_seconds=1.0)
    limiter.acquire(1000)  # 10 bursts: paid a burst at a time, the last one as debt
    assert clock.now == pytest.approx(8.0, abs=0.01)
    limiter.acquire(1)  # waits the debt off first: exactly one burst at 100 units/s
    assert clock.now == pytest.approx(9.0, abs=0.01)


def test_settle_with_more_than_estimated_slows_down(clock):
    honest, under = limiter_on(clock, 100.0), None
    for _ in range(50):
        honest.acquire(10)
        honest.settle(10, 10)
    honest_time = clock.now
    clock.now = 0.0
    under = limiter_on(clock, 100.0)
    for _ in range(50):
        under.acquire(10)
        under.settle(10, 30)  # DynamoDB charged three times the estimate
    assert honest.consumed == pytest.approx(500) and under.consumed == pytest.approx(1500)
    assert honest_time == pytest.approx((500 - 100) / 100, abs=0.2)
    assert clock.now == pytest.approx((1500 - 100) / 100, abs=0.5)


def test_settle_with_less_than_estimated_refunds(clock):
    limiter = limiter_on(clock, 100.0)
    for _ in range(100):
        limiter.acquire(128)  # a full-page guess ...
        limiter.settle(128, 8)  # ... for pages that cost 8
    assert limiter.consumed == pytest.approx(800)
    assert clock.now == pytest.approx((800 - 100) / 100, abs=1.5)


def test_throttled_halves_once_per_cooldown_to_a_floor_and_recovers_linearly(clock):
    limiter = limiter_on(clock, 100.0, cooldown_s=1.0, recovery_s=10.0)
    limiter.throttled()
    assert limiter.rate == 50
    limiter.throttled()  # same storm: counted, not applied again
    assert limiter.rate == 50 and limiter.throttles == 2
    clock.advance(1.0)
    limiter.recover()  # +10 units/s per second since the decrease
    assert limiter.rate == pytest.approx(60)
    limiter.throttled()
    assert limiter.rate == pytest.approx(30)
    for _ in range(10):
        clock.advance(1.0)
        limiter.throttled()
    assert limiter.rate == pytest.approx(5)  # floor: 5% of the target
    clock.advance(3.0)
    limiter.recover()
    assert limiter.rate == pytest.approx(35)
    clock.advance(60.0)
    limiter.recover()
    assert limiter.rate == 100  # never above the target


def test_floor_is_at_least_one_unit(clock):
    limiter = limiter_on(clock, 4.0, cooldown_s=0.0)
    for _ in range(10):
        limiter.throttled()
    assert limiter.rate == 1.0


def test_throttled_rate_paces_slower(clock):
    limiter = limiter_on(clock, 100.0)
    limiter.acquire(100)  # empty the bucket
    start = clock.now
    limiter.throttled()
    for _ in range(100):
        limiter.acquire(1)
    assert clock.now - start == pytest.approx(100 / 50, abs=0.05)


def test_unlimited_never_waits_but_counts(clock):
    limiter = limiter_on(clock, None)
    for _ in range(1000):
        limiter.acquire(128)
        limiter.settle(128, 64)
    limiter.throttled()
    limiter.recover()
    assert clock.now == 0 and clock.sleeps == []
    assert limiter.rate is None and limiter.burst is None
    assert limiter.consumed == pytest.approx(64000)


def test_cancel_stops_a_wait(clock):
    limiter = limiter_on(clock, 1.0)
    limiter.acquire(1)
    limiter.acquire(1)  # one burst of debt
    cancel = threading.Event()
    cancel.set()
    assert limiter.acquire(5, cancel=cancel) is False


def test_threads_share_one_bucket():
    limiter = RateLimiter(4000.0, burst_seconds=0.05)
    start = time.monotonic()

    def work():
        for _ in range(200):
            limiter.acquire(1)

    workers = [threading.Thread(target=work) for _ in range(8)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    elapsed = time.monotonic() - start
    assert limiter.consumed == pytest.approx(1600)
    # 1600 units at 4000/s less one burst (200) and one burst of debt: at least 0.3 s.
    assert elapsed >= (1600 - 2 * 200) / 4000 - 0.01


def test_rejects_nonsense():
    with pytest.raises(ValueError):
        RateLimiter(0)
    with pytest.raises(ValueError):
        RateLimiter(10, burst_seconds=0)

"""Counters and exponents that grow with uptime (issue 11): after days of running, a
breaker tripped thousands of times, a transport retry count past a thousand and odd
token expiries must still give numbers, never an OverflowError. Fake clocks and direct
state stand in for long runs."""

from __future__ import annotations

import pytest
from urllib3.util.retry import RequestHistory

from multi_llm_orchestrator.breaker import OPEN, PROBE, BreakerPolicy, CircuitBreaker
from multi_llm_orchestrator.errors import ProviderUnavailableError, RateLimitError
from multi_llm_orchestrator.http import make_retry
from multi_llm_orchestrator.providers.gigachat import DEFAULT_TOKEN_LIFETIME, _lifetime
from multi_llm_orchestrator.validation import capped_growth


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_breaker_tripped_thousands_of_times_stays_at_max_cooldown():
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, cooldown=5, max_cooldown=60), clock=clock)
    error = ProviderUnavailableError("down", provider="p")
    breaker.record_failure(error, breaker.reserve())
    for _ in range(3000):  # every probe fails: one trip each (1,029 overflowed the float power)
        clock.now += 61
        reservation = breaker.reserve()
        assert reservation == PROBE
        breaker.record_failure(error, reservation)
    assert breaker.state == OPEN
    assert breaker.snapshot()["open_for_s"] == 60.0


def test_sustained_rate_limits_without_retry_after_never_overflow():
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, cooldown=0.5, cooldown_multiplier=3), clock=clock)
    breaker._trips = 10**6  # as after a very long run of 429s
    breaker.record_failure(RateLimitError("slow down", provider="p"), breaker.reserve(force=True))
    assert breaker.snapshot()["open_for_s"] == 60.0


@pytest.mark.parametrize(
    "start, multiplier, times, cap, expected",
    [
        (5.0, 2.0, 0, 60.0, 5.0),
        (5.0, 2.0, 3, 60.0, 40.0),
        (5.0, 2.0, 4, 60.0, 60.0),
        (5.0, 2.0, 1029, 60.0, 60.0),
        (5.0, 1e300, 2, 1e308, 1e308),
        (1e-300, 10.0, 10**9, 1e10, 1e10),
        (5.0, 1.0, 10**100, 60.0, 5.0),
        (0.0, 2.0, 10, 60.0, 0.0),
        (100.0, 2.0, 1, 60.0, 60.0),
    ],
)
def test_capped_growth(start, multiplier, times, cap, expected):
    assert capped_growth(start, multiplier, times, cap) == pytest.approx(expected)


def test_transport_backoff_after_a_thousand_consecutive_errors_is_backoff_max():
    retry = make_retry(2000)
    retry.history = tuple(RequestHistory("POST", "/x", None, 503, None) for _ in range(1100))
    assert 4.0 <= retry.get_backoff_time() <= 4.25  # backoff_max plus jitter; urllib3's own overflowed
    retry.history = retry.history[:3]
    assert 1.0 <= retry.get_backoff_time() <= 1.25  # 0.25 * 2 ** 2, plus jitter


@pytest.mark.parametrize("expires_at", [float("nan"), float("inf"), "1e400", 10**400, "nan"])
def test_gigachat_token_expiry_that_is_not_a_time_gets_the_default_lifetime(expires_at):
    assert _lifetime(expires_at) == DEFAULT_TOKEN_LIFETIME

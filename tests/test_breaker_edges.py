"""Circuit-breaker behaviour users rely on beyond the basic trip and recover (issue 18).

Each test pins a rule whose breaking no other test noticed in a mutation run: recovery
after a successful probe, cooldown escalation starting over after a success, defaults,
what ``remaining()`` and ``stats()`` say, and the probe slot. All on a fake clock.
"""

import pytest

from multi_llm_orchestrator import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitError,
)
from multi_llm_orchestrator.breaker import CLOSED, HALF_OPEN, NORMAL, OPEN, PROBE, BreakerPolicy, CircuitBreaker

DOWN = ProviderUnavailableError("down")


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def tripped(policy=None, clock=None):
    """A breaker opened by one failure (threshold 1, cooldown 2 s unless told otherwise)."""
    clock = clock or FakeClock()
    breaker = CircuitBreaker(policy or BreakerPolicy(failure_threshold=1, cooldown=2), clock)
    breaker.record_failure(DOWN, breaker.reserve())
    assert breaker.state == OPEN
    return breaker, clock


def test_a_breaker_that_recovered_lets_a_probe_through_the_next_time_it_trips():
    breaker, clock = tripped()
    clock.now += 2
    probe = breaker.reserve()
    assert probe == PROBE
    breaker.record_success(probe)
    assert breaker.state == CLOSED
    breaker.record_failure(DOWN, breaker.reserve())  # trips again
    clock.now += 2
    assert breaker.state == HALF_OPEN
    assert breaker.is_available()
    assert breaker.reserve() == PROBE  # not stuck open behind the first probe's slot


def test_a_success_starts_the_cooldown_escalation_over():
    breaker, clock = tripped(BreakerPolicy(failure_threshold=1, cooldown=2, cooldown_multiplier=3, max_cooldown=100))
    clock.now += 2
    breaker.record_failure(DOWN, breaker.reserve())  # failed probe: 2 * 3
    assert breaker.remaining() == 6
    clock.now += 6
    breaker.record_success(breaker.reserve())
    breaker.record_failure(DOWN, breaker.reserve())
    assert breaker.remaining() == 2  # the first cooldown again, not 18


def test_a_success_resets_the_consecutive_failure_count():
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=2), FakeClock())
    breaker.record_failure(DOWN, breaker.reserve())
    breaker.record_success(breaker.reserve())
    breaker.record_failure(DOWN, breaker.reserve())
    assert breaker.state == CLOSED
    assert breaker.snapshot()["consecutive_failures"] == 1


def test_defaults_are_the_documented_ones():
    assert BreakerPolicy() == BreakerPolicy(
        failure_threshold=5, cooldown=5.0, cooldown_multiplier=2.0, max_cooldown=60.0, auth_cooldown=300.0, enabled=True
    )
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerPolicy(), clock)
    for _ in range(4):
        breaker.record_failure(DOWN, breaker.reserve())
    assert breaker.state == CLOSED
    breaker.record_failure(DOWN, breaker.reserve())
    assert breaker.state == OPEN and breaker.remaining() == 5.0
    clock.now += 5
    breaker.record_failure(DOWN, breaker.reserve())
    assert breaker.remaining() == 10.0


def test_from_value_accepts_a_policy_a_dict_and_booleans():
    policy = BreakerPolicy(failure_threshold=2)
    assert BreakerPolicy.from_value(policy) is policy
    assert BreakerPolicy.from_value(None) == BreakerPolicy()
    assert BreakerPolicy.from_value(True) == BreakerPolicy()
    assert BreakerPolicy.from_value(False) == BreakerPolicy(enabled=False)
    assert BreakerPolicy.from_value({"cooldown": 1}) == BreakerPolicy(cooldown=1)
    with pytest.raises(ConfigurationError, match=r"Unknown breaker setting in \['threshold'\]; valid: failure_threshold, cooldown"):
        BreakerPolicy.from_value({"threshold": 3})
    with pytest.raises(ConfigurationError, match="breaker must be a BreakerPolicy, a dict or a bool; got str"):
        BreakerPolicy.from_value("on")


@pytest.mark.parametrize(
    "settings, name",
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"cooldown": -1}, "cooldown"),
        ({"max_cooldown": -0.5}, "max_cooldown"),
        ({"auth_cooldown": -1}, "auth_cooldown"),
        ({"cooldown_multiplier": 0.5}, "cooldown_multiplier"),
        ({"enabled": "yes"}, "enabled must be True or False"),
    ],
)
def test_bad_policy_values_are_rejected_by_name(settings, name):
    with pytest.raises(ConfigurationError, match=name):
        BreakerPolicy(**settings)


def test_boundary_policy_values_are_accepted():
    policy = BreakerPolicy(failure_threshold=1, cooldown=0, max_cooldown=0, auth_cooldown=0, cooldown_multiplier=1)
    assert policy.failure_threshold == 1 and policy.cooldown_multiplier == 1


def test_remaining_is_zero_unless_open_and_counts_down_below_a_second():
    clock = FakeClock()
    fresh = CircuitBreaker(BreakerPolicy(failure_threshold=1, cooldown=0.5), clock)
    assert fresh.remaining() == 0.0
    fresh.record_failure(DOWN, fresh.reserve())
    assert fresh.remaining() == 0.5
    assert fresh.snapshot() == {"state": OPEN, "consecutive_failures": 1, "open_for_s": 0.5}
    clock.now += 0.25
    assert fresh.remaining() == 0.25
    clock.now += 0.25
    assert fresh.state == HALF_OPEN
    assert fresh.remaining() == 0.0
    assert fresh.snapshot() == {"state": HALF_OPEN, "consecutive_failures": 1, "open_for_s": 0.0}


def test_snapshot_of_a_closed_breaker_and_its_repr():
    breaker = CircuitBreaker(BreakerPolicy(), FakeClock())
    assert breaker.snapshot() == {"state": CLOSED, "consecutive_failures": 0, "open_for_s": 0.0}
    assert repr(breaker) == "CircuitBreaker(state='closed')"


def test_a_forced_probe_through_an_open_breaker_holds_the_probe_slot():
    breaker, clock = tripped()
    assert breaker.reserve() is None
    forced = breaker.reserve(force=True)
    assert forced == PROBE
    clock.now += 2  # cooldown over while the forced probe is still running
    assert not breaker.is_available()
    assert breaker.reserve() is None
    breaker.release(forced)
    assert breaker.is_available()
    assert breaker.reserve() == PROBE


def test_releasing_a_normal_reservation_does_not_free_a_running_probe():
    breaker, clock = tripped()
    clock.now += 2
    probe = breaker.reserve()
    breaker.release(NORMAL)
    assert breaker.reserve() is None
    breaker.release(probe)
    assert breaker.try_acquire()


def test_a_half_open_breaker_is_available_until_its_probe_is_taken():
    breaker, clock = tripped()
    assert not breaker.is_available()
    clock.now += 1.999
    assert breaker.state == OPEN and not breaker.is_available()
    clock.now += 0.001
    assert breaker.state == HALF_OPEN and breaker.is_available()
    assert breaker.try_acquire()
    assert not breaker.is_available() and not breaker.try_acquire()


def test_a_disabled_breaker_lets_everything_through_and_never_opens():
    breaker = CircuitBreaker(BreakerPolicy(enabled=False, failure_threshold=1), FakeClock())
    for _ in range(3):
        assert breaker.reserve() == NORMAL
        breaker.record_failure(AuthenticationError("bad key"), NORMAL)
    assert breaker.state == CLOSED and breaker.is_available()
    assert breaker.snapshot()["consecutive_failures"] == 0


def test_invalid_requests_are_not_counted_at_all():
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=2), FakeClock())
    breaker.record_failure(DOWN, breaker.reserve())
    breaker.record_failure(InvalidRequestError("bad prompt"), breaker.reserve())
    assert breaker.state == CLOSED
    assert breaker.snapshot()["consecutive_failures"] == 1


def test_a_rate_limit_without_retry_after_counts_like_any_failure():
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=2), FakeClock())
    breaker.record_failure(RateLimitError("slow down"), breaker.reserve())
    assert breaker.state == CLOSED
    breaker.record_failure(RateLimitError("slow down"), breaker.reserve())
    assert breaker.state == OPEN and breaker.remaining() == 5.0


def test_a_quota_error_opens_for_the_auth_cooldown_at_once():
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=5, auth_cooldown=120), FakeClock())
    breaker.record_failure(QuotaExceededError("insufficient_quota"), breaker.reserve())
    assert breaker.state == OPEN and breaker.remaining() == 120


def test_late_failures_of_calls_started_before_the_trip_do_not_extend_it():
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, cooldown=2), clock)
    early = [breaker.reserve() for _ in range(3)]  # three calls in flight while closed
    breaker.record_failure(DOWN, early[0])
    clock.now += 1
    breaker.record_failure(DOWN, early[1])
    breaker.record_failure(DOWN, early[2])
    assert breaker.remaining() == 1  # still the first trip's cooldown
    clock.now += 1
    assert breaker.state == HALF_OPEN


def test_a_retry_after_from_a_late_failure_extends_an_open_breaker_but_never_shortens_it():
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, cooldown=10), clock)
    early = [breaker.reserve() for _ in range(3)]
    breaker.record_failure(DOWN, early[0])
    breaker.record_failure(RateLimitError("later", retry_after=3), early[1])
    assert breaker.remaining() == 10
    breaker.record_failure(RateLimitError("much later", retry_after=30), early[2])
    assert breaker.remaining() == 30


def test_an_auth_error_on_a_failed_probe_opens_for_the_auth_cooldown():
    breaker, clock = tripped(BreakerPolicy(failure_threshold=1, cooldown=2, auth_cooldown=50))
    clock.now += 2
    breaker.record_failure(AuthenticationError("revoked"), breaker.reserve())
    assert breaker.remaining() == 50


def test_a_breaker_closed_by_another_thread_between_the_look_and_the_lock_lets_the_call_through():
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, cooldown=60))
    breaker.record_failure(DOWN, NORMAL)
    assert breaker.state == OPEN

    class ClosedMeanwhile:
        """The breaker's lock, as seen by a thread another one overtook: a success
        closed the breaker after this thread read it open, before it got the lock."""

        def __enter__(self):
            breaker._state = CLOSED

        def __exit__(self, *exc_info):
            return False

    breaker._lock = ClosedMeanwhile()
    assert breaker.reserve() == NORMAL

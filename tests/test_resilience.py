"""Circuit breakers, total deadline, hedging, strategies and health checks (issue 6)."""

import http.server
import math
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from multi_llm_orchestrator import (
    AllProvidersFailedError,
    AuthenticationError,
    ConfigurationError,
    DeadlineExceededError,
    InvalidRequestError,
    ProviderUnavailableError,
    RateLimitError,
    Router,
)
from multi_llm_orchestrator.breaker import CLOSED, HALF_OPEN, OPEN, BreakerPolicy, CircuitBreaker
from multi_llm_orchestrator.health import HealthChecker
from multi_llm_orchestrator.hedging import HedgeBudget, HedgePolicy
from multi_llm_orchestrator.http import HttpProvider
from multi_llm_orchestrator.metrics import ProviderMetrics
from multi_llm_orchestrator.providers import MockProvider, ProviderConfig
from multi_llm_orchestrator.types import Completion

from fakes.mocks import mock, router_with






class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def library_threads():
    return [t for t in threading.enumerate() if t.name.startswith("mlo-") and t.is_alive()]


# Circuit breaker ------------------------------------------------------------------------


def test_breaker_opens_after_threshold_consecutive_failures_and_success_resets_the_count():
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=3, cooldown=5), clock)
    failure = ProviderUnavailableError("down")
    breaker.record_failure(failure)
    breaker.record_failure(failure)
    breaker.record_success()
    breaker.record_failure(failure)
    breaker.record_failure(failure)
    assert breaker.state == CLOSED
    breaker.record_failure(failure)
    assert breaker.state == OPEN
    assert not breaker.try_acquire()
    assert breaker.remaining() == pytest.approx(5)


def test_half_open_lets_exactly_one_probe_through_and_success_closes():
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, cooldown=5), clock)
    breaker.record_failure(ProviderUnavailableError("down"))
    clock.now += 5
    assert breaker.state == HALF_OPEN
    results = []
    barrier = threading.Barrier(16)

    def contend():
        barrier.wait()
        results.append(breaker.try_acquire())

    threads = [threading.Thread(target=contend) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    breaker.record_success()
    assert breaker.state == CLOSED
    assert breaker.try_acquire() and breaker.try_acquire()


def test_failed_probe_reopens_for_a_growing_cooldown_up_to_the_cap():
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, cooldown=2, cooldown_multiplier=2, max_cooldown=5), clock)
    cooldowns = []
    for _ in range(4):
        assert breaker.try_acquire()
        breaker.record_failure(ProviderUnavailableError("down"))
        cooldowns.append(breaker.remaining())
        clock.now += breaker.remaining()
    assert cooldowns == [2, 4, 5, 5]


def test_rate_limit_opens_for_exactly_retry_after_and_auth_for_a_long_cooldown():
    clock = FakeClock()
    policy = BreakerPolicy(failure_threshold=5, cooldown=1, auth_cooldown=300)
    limited = CircuitBreaker(policy, clock)
    limited.record_failure(RateLimitError("slow down", retry_after=7.5))
    assert limited.state == OPEN and limited.remaining() == pytest.approx(7.5)
    clock.now += 7.5
    assert limited.state == HALF_OPEN
    denied = CircuitBreaker(policy, clock)
    denied.record_failure(AuthenticationError("bad key"))
    assert denied.remaining() == pytest.approx(300)


def test_invalid_requests_do_not_trip_the_breaker():
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1))
    breaker.record_failure(InvalidRequestError("bad prompt"))
    assert breaker.state == CLOSED


def test_bad_breaker_settings_are_rejected():
    with pytest.raises(ConfigurationError, match="failure_threshold"):
        BreakerPolicy(failure_threshold=0)
    with pytest.raises(ConfigurationError, match="valid: failure_threshold"):
        Router(breaker={"threshold": 3})


def test_router_skips_open_providers_and_shows_breaker_state():
    bad = mock("bad", "mock-unavailable")
    good = mock("good")
    router = router_with(bad, good, breaker={"failure_threshold": 2, "cooldown": 60})
    for _ in range(6):
        router.complete("hi")
    assert bad.calls == 2  # opened after two failures, skipped afterwards
    stats = router.stats()
    assert stats["providers"]["bad"]["breaker"]["state"] == "open"
    assert stats["providers"]["good"]["breaker"]["state"] == "closed"
    assert stats["providers"]["bad"]["breaker"]["open_for_s"] > 50


def test_when_every_circuit_is_open_the_closest_to_recovery_is_still_tried():
    a = mock("a", "mock-unavailable")
    b = mock("b", "mock-unavailable")
    router = router_with(a, b, breaker={"failure_threshold": 1, "cooldown": 30})
    with pytest.raises(AllProvidersFailedError):
        router.route("hi")  # opens a (30 s) then b (30 s, a little later)
    calls_before = (a.calls, b.calls)
    with pytest.raises(AllProvidersFailedError) as info:
        router.route("hi")
    assert [e.provider for e in info.value.errors] == ["a"]  # a recovers first
    assert (a.calls, b.calls) == (calls_before[0] + 1, calls_before[1])


def test_when_every_circuit_is_open_fail_mode_refuses_without_an_attempt():
    a = mock("a", "mock-unavailable")
    router = router_with(a, breaker={"failure_threshold": 1, "cooldown": 30}, when_all_open="fail")
    with pytest.raises(AllProvidersFailedError):
        router.route("hi")
    with pytest.raises(AllProvidersFailedError, match="circuit is open"):
        router.route("hi")
    assert a.calls == 1


def test_half_open_provider_gets_one_probe_and_recovers():
    flaky = mock("flaky")
    router = router_with(flaky, mock("backup"), breaker={"failure_threshold": 1, "cooldown": 0.2})
    state = router._states[0]
    state.breaker.record_failure(ProviderUnavailableError("down"))
    assert router.stats()["providers"]["flaky"]["breaker"]["state"] == "open"
    time.sleep(0.25)
    assert router.stats()["providers"]["flaky"]["breaker"]["state"] == "half-open"
    answered = {router.complete("hi").provider for _ in range(4)}
    assert "flaky" in answered
    assert router.stats()["providers"]["flaky"]["breaker"]["state"] == "closed"


# Total deadline -------------------------------------------------------------------------


def test_deadline_bounds_a_provider_that_never_answers():
    router = router_with(mock("stuck", "mock-timeout"), mock("also-stuck", "mock-timeout"), timeout=0.4)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError) as info:
        router.route("hi")
    elapsed = time.monotonic() - started
    assert 0.35 <= elapsed < 3.0  # generous: only a hang (30 s) must fail
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, AllProvidersFailedError)
    assert "stuck" in str(info.value)
    router.close()


def test_deadline_bounds_a_provider_that_ignores_its_timeout():
    release = threading.Event()

    class Sleeper(MockProvider):
        def complete(self, messages, params=None, *, timeout=None):
            release.wait(30)  # ignores timeout, like a badly written custom provider
            return super().complete(messages, params, timeout=timeout)

    router = router_with(Sleeper(ProviderConfig(name="sleeper", extra={"delay": 0})), timeout=0.3)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        router.route("hi")
    assert time.monotonic() - started < 3.0  # the provider would block for 30 s
    release.set()
    router.close()
    assert library_threads() == []


def test_deadline_gives_fallbacks_only_the_time_left():
    router = router_with(mock("fails-late", "mock-unavailable", delay=0.2), mock("slow", delay=0.2), timeout=0.6)
    started = time.monotonic()
    completion = router.complete("hi")
    assert completion.provider == "slow"
    assert time.monotonic() - started < 3.0
    router.close()

    given = []

    class Recording(MockProvider):
        def complete(self, messages, params=None, *, timeout=None):
            given.append(timeout)
            return super().complete(messages, params, timeout=timeout)

    slow = Recording(ProviderConfig(name="slow", extra={"delay": 0.3}))
    router = router_with(mock("fails-late", "mock-unavailable", delay=0.3), slow, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError) as info:
        router.route("hi")
    assert time.monotonic() - started < 3.0
    assert [e.provider for e in info.value.errors] == ["fails-late", "slow"]
    assert len(given) == 1 and 0 < given[0] <= 0.21  # slow was given only the time left
    router.close()


class _RetryAfterHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    hits = 0

    def do_POST(self):
        type(self).hits += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"error": {"message": "slow down"}}'
        self.send_response(429)
        self.send_header("Retry-After", "30")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _TinyHttpProvider(HttpProvider):
    def complete(self, messages, params=None, *, timeout=None):
        self.request_json("POST", self.base_url + "/chat", timeout=self._timeout(timeout), json_body={"q": 1})
        raise AssertionError("the server only answers 429")

    def stream(self, messages, params=None, *, timeout=None):
        raise NotImplementedError

    def health_check(self, timeout=None):
        return True


def test_retry_after_longer_than_the_budget_is_not_slept_and_falls_back():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RetryAfterHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        limited = _TinyHttpProvider(
            ProviderConfig(name="limited", base_url=f"http://127.0.0.1:{server.server_port}", max_retries=3)
        )
        router = router_with(limited, mock("backup"), timeout=2.0)
        started = time.monotonic()
        completion = router.complete("hi")
        assert time.monotonic() - started < 1.9  # Retry-After: 30 was not slept
        assert completion.provider == "backup"
        assert completion.attempts[0].error_type == "RateLimitError"
        assert _RetryAfterHandler.hits == 1
        assert router.stats()["providers"]["limited"]["breaker"]["open_for_s"] > 25
        router.close()
    finally:
        server.shutdown()
        server.server_close()


# Hedging --------------------------------------------------------------------------------


def test_hedge_wins_when_the_primary_is_slow():
    slow, fast = mock("slow", delay=5.0), mock("fast", delay=0.01)
    router = router_with(slow, fast, hedge_after=0.05)
    started = time.monotonic()
    completion = router.complete("hi")
    assert time.monotonic() - started < 2.5  # the primary alone takes 5 s
    assert completion.provider == "fast"
    assert [(a.provider, a.outcome, a.hedge) for a in completion.attempts] == [
        ("slow", "lost", False), ("fast", "ok", True)
    ]
    stats = router.stats()["providers"]
    assert (stats["fast"]["hedges_started"], stats["fast"]["hedges_won"]) == (1, 1)
    router.close()
    assert library_threads() == []


def test_hedge_loses_when_the_primary_answers_first():
    primary, backup = mock("primary", delay=0.15), mock("backup", delay=1.0)
    router = router_with(primary, backup, hedge_after=0.05)
    completion = router.complete("hi")
    assert completion.provider == "primary"
    assert [(a.provider, a.outcome, a.hedge) for a in completion.attempts] == [
        ("primary", "ok", False), ("backup", "lost", True)
    ]
    assert router.stats()["providers"]["backup"]["hedges_lost"] == 1
    router.close()
    assert library_threads() == []


def test_a_failed_primary_starts_the_next_attempt_at_once_without_waiting_for_the_hedge_delay():
    router = router_with(mock("broken", "mock-unavailable"), mock("fine", delay=0.01), hedge_after=10.0)
    started = time.monotonic()
    completion = router.complete("hi")
    assert time.monotonic() - started < 5.0  # not the 10 s hedge delay
    assert completion.provider == "fine"
    assert [a.hedge for a in completion.attempts] == [False, False]
    router.close()


def test_hedge_budget_caps_the_share_of_extra_requests():
    providers = [mock(f"p{i}", delay=0.03) for i in range(2)]
    policy = HedgePolicy(after=0.005, budget=0.1, budget_reserve=0)
    router = router_with(*providers, hedge_after=policy)
    for _ in range(50):
        router.complete("hi")
    started = sum(s["hedges_started"] for s in router.stats()["providers"].values())
    assert 1 <= started <= 5
    router.close()


def test_max_hedges_bounds_hedges_per_call():
    providers = [mock(f"p{i}", delay=0.4) for i in range(4)]
    router = router_with(*providers, hedge_after=0.02, max_hedges=2)
    completion = router.complete("hi")
    assert sum(a.hedge for a in completion.attempts) == 2
    assert sum(p.calls for p in providers) == 3
    router.close()


def test_adaptive_hedge_delay_follows_the_p95_of_successful_calls():
    policy = HedgePolicy(after="p95", min_samples=20, default_delay=0.3, min_delay=0.01)
    metrics = ProviderMetrics()
    assert policy.delay(metrics) == 0.3
    for i in range(100):
        metrics.started()
        metrics.succeeded(0.001 * (i + 1), None)
    assert policy.delay(metrics) == pytest.approx(0.095)
    fast = ProviderMetrics()
    for _ in range(30):
        fast.started()
        fast.succeeded(0.0001, None)
    assert policy.delay(fast) == 0.01  # the floor


def test_hedge_budget_window_forgets_old_calls():
    clock = FakeClock()
    budget = HedgeBudget(0.5, window=10, clock=clock)
    for _ in range(4):
        budget.record_call()
    assert budget.try_spend() and budget.try_spend()
    assert not budget.try_spend()
    clock.now += 11
    budget.record_call()
    budget.record_call()
    assert budget.try_spend()
    assert not budget.try_spend()


@pytest.mark.parametrize("value", [0, -1, "p0", "p100", "fast", True])
def test_bad_hedge_settings_are_rejected(value):
    with pytest.raises(ConfigurationError, match="hedge_after"):
        Router(hedge_after=value)


def test_hedged_stream_races_on_the_first_chunk():
    router = router_with(mock("slow", delay=2.0), mock("fast", delay=0.01), hedge_after=0.05)
    stream = router.route_stream("stream me")
    assert "".join(stream) == "Mock response to: stream me"
    assert stream.provider == "fast"
    router.close()
    assert library_threads() == []


# Strategies -----------------------------------------------------------------------------


def test_weighted_strategy_follows_the_weights():
    a = MockProvider(ProviderConfig(name="a", weight=1, extra={"delay": 0}))
    b = MockProvider(ProviderConfig(name="b", weight=3, extra={"delay": 0}))
    zero = MockProvider(ProviderConfig(name="zero", weight=0, extra={"delay": 0}))
    router = router_with(a, b, zero, strategy="weighted")
    counts = Counter(router.complete("hi").provider for _ in range(4000))
    assert counts["zero"] == 0
    assert 0.70 <= counts["b"] / 4000 <= 0.80


def test_least_busy_prefers_the_provider_with_fewest_calls_in_flight():
    busy = mock("busy", delay=3.0)
    idle = mock("idle", delay=0.05)
    router = router_with(busy, idle, strategy="least-busy")
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(router.complete, "occupy")  # round-robin tie-break starts at busy
        time.sleep(0.1)
        providers = [router.complete("x").provider for _ in range(3)]  # busy still has one in flight
    assert first.result().provider == "busy"
    assert providers == ["idle", "idle", "idle"]


def test_least_busy_spreads_ties_round_robin():
    router = router_with(mock("a"), mock("b"), strategy="least-busy")
    assert Counter(router.complete("hi").provider for _ in range(10)) == {"a": 5, "b": 5}


def test_best_available_prefers_healthy_then_fast():
    slow, fast, flaky = mock("slow", delay=0.03), mock("fast"), mock("flaky", failure_rate=1.0, seed=1)
    router = router_with(slow, fast, flaky, strategy="best-available", breaker=False)
    for _ in range(3):  # everyone gets a latency or an error record
        for state in router._states:
            try:
                state.provider.complete("warm")
                state.metrics.started()
                state.metrics.succeeded(0.03 if state.name == "slow" else 0.001, None)
            except ProviderUnavailableError as error:
                state.metrics.started()
                state.metrics.failed(error)
    order = [s.name for s in router.strategy.order(router._states, router._health)]
    assert order == ["fast", "slow", "flaky"]
    assert {router.complete("hi").provider for _ in range(10)} == {"fast"}


def test_best_available_ranks_a_failed_health_check_last():
    router = router_with(mock("sick", "mock-unhealthy"), mock("well", delay=0.01), strategy="best-available")
    router.health_check()
    order = [s.name for s in router.strategy.order(router._states, router._health)]
    assert order == ["well", "sick"]


def test_random_strategy_is_uniform_over_many_calls():
    router = router_with(*(mock(f"p{i}") for i in range(4)), strategy="random")
    counts = Counter(router.complete("hi").provider for _ in range(4000))
    assert all(850 <= n <= 1150 for n in counts.values()), counts


# Health checks --------------------------------------------------------------------------


def test_a_hanging_health_check_counts_as_unhealthy_at_its_timeout():
    release = threading.Event()

    class Hanging(MockProvider):
        def health_check(self, timeout=None):
            release.wait(30)  # ignores its timeout
            return True

    checker = HealthChecker(timeout=0.3, ttl=10)
    providers = [Hanging(ProviderConfig(name="hang")), mock("fine", health_delay=0.05)]
    started = time.monotonic()
    results = checker.check(providers)
    elapsed = time.monotonic() - started
    assert results["hang"].healthy is False and results["fine"].healthy is True
    assert "0.3" in results["hang"].error
    assert 0.25 <= elapsed < 3.0  # generous: the hanging check would take 30 s
    release.set()
    checker.close()


def test_parallel_health_checks_take_about_the_slowest_check():
    providers = [mock(f"p{i}", health_delay=0.3) for i in range(10)]
    router = router_with(*providers)
    started = time.monotonic()
    assert all(router.health_check().values())
    assert time.monotonic() - started < 1.5  # sequential would take 3 s
    router.close()


def test_health_results_are_cached_for_the_ttl():
    clock = FakeClock()
    checker = HealthChecker(timeout=1, ttl=10, clock=clock)
    provider = mock("a")
    calls = Counter()
    original = provider.health_check
    provider.health_check = lambda timeout=None: calls.update(["check"]) or original(timeout)
    assert checker.status([provider]) == {"a": True}
    assert checker.status([provider]) == {"a": True}
    assert calls["check"] == 1
    clock.now += 11
    checker.status([provider])
    assert calls["check"] == 2
    checker.close()


def test_background_health_refresh_runs_and_stops_on_close():
    provider = mock("a")
    calls = Counter()
    original = provider.health_check
    provider.health_check = lambda timeout=None: calls.update(["check"]) or original(timeout)
    router = router_with(provider, health_interval=0.05)
    deadline = time.monotonic() + 5
    while calls["check"] < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert calls["check"] >= 3
    assert any(t.name == "mlo-health-refresh" for t in threading.enumerate())
    router.close()
    assert library_threads() == []


def test_no_library_thread_outlives_close_after_mixed_load():
    router = router_with(
        mock("slow", delay=0.3), mock("fast", delay=0.01), mock("broken", "mock-unavailable"),
        hedge_after=0.02, timeout=2.0, health_interval=0.05,
    )
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: router.complete(f"q{i}"), range(40)))
    assert all(isinstance(r, Completion) for r in results)
    router.health_check()
    router.close()
    assert library_threads() == []


def test_latency_percentile_stays_exact_after_every_sample_once_asked():
    metrics = ProviderMetrics()
    for i in range(100):
        metrics.started()
        metrics.succeeded(0.001 * (i + 1), None)
    assert metrics.latency_percentile(0.95) == pytest.approx(0.095)  # the first ask sorts the window
    samples = [0.001 * (i + 1) for i in range(100)]
    for latency in (10.0, 0.0005, 10.0):  # from then on kept in order, sample by sample
        metrics.started()
        metrics.succeeded(latency, None)
        samples.append(latency)
        fresh = sorted(samples)
        assert metrics.latency_percentile(0.95) == fresh[math.ceil(0.95 * len(fresh)) - 1]
    assert metrics.latency_percentile(0.99) == 10.0
    assert metrics.snapshot()["latency_p50_s"] == round(sorted(samples)[math.ceil(0.5 * len(samples)) - 1], 6)


def test_latency_percentile_follows_the_window_as_old_samples_leave_it():
    metrics = ProviderMetrics(latency_window=4)
    window = []
    for step, latency in enumerate([0.4, 0.1, 0.3, 0.2, 0.9, 0.9, 0.05, 0.5, 0.5, 0.7]):
        metrics.started()
        metrics.succeeded(latency, None)
        window = (window + [latency])[-4:]
        if step == 1:
            assert metrics.latency_percentile(0.5) == 0.1  # asked: sorted from here on
        if step >= 1:
            ranked = sorted(window)
            for share in (0.25, 0.5, 0.75, 1.0):
                assert metrics.latency_percentile(share) == ranked[math.ceil(share * len(ranked)) - 1], (step, share)
    assert metrics.latency_percentile(0.5, min_samples=5) is None


def test_when_every_breaker_refuses_the_error_says_why():
    router = router_with(mock("a"), breaker={"failure_threshold": 1, "cooldown": 0.05})
    state = router._states[0]
    state.breaker.record_failure(ProviderUnavailableError("down"))
    time.sleep(0.06)
    # The race this covers: the plan saw the half-open breaker free, then another caller
    # took its single probe before this call could.
    state.breaker.is_available = lambda: True
    assert state.breaker.try_acquire()
    with pytest.raises(AllProvidersFailedError, match="already probing") as info:
        router.complete("hi")
    assert info.value.errors == []
    assert router.stats()["failed"] == 1


def test_close_gives_a_running_hedge_loser_only_the_grace_period():
    router = router_with(mock("stuck", delay=30.0), mock("fast", delay=0.01), hedge_after=0.02)
    assert router.complete("hi").provider == "fast"  # "stuck" is still running, abandoned
    started = time.monotonic()
    router.close(grace=0.2)
    assert time.monotonic() - started < 5.0  # not the loser's 30 s
    assert library_threads() == []


def test_a_fast_non_timeout_failure_near_the_deadline_is_not_called_a_deadline():
    router = router_with(mock("late-auth", "mock-auth-error", delay=0.29), timeout=0.3)
    with pytest.raises(AllProvidersFailedError) as info:
        router.route("hi")
    assert not isinstance(info.value, DeadlineExceededError) or isinstance(info.value.errors[-1], TimeoutError)
    router.close()

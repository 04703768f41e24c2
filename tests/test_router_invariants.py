"""Invariants found broken by review: books balance, breakers recover, nothing spins.

Each test names the review item it pins down.
"""

import gc
import threading
import time

import pytest

from multi_llm_orchestrator import ProviderUnavailableError, Router
from multi_llm_orchestrator.breaker import CLOSED, HALF_OPEN, OPEN, BreakerPolicy, CircuitBreaker

from fakes.mocks import mock, router_with


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def balanced(router):
    stats = router.stats()
    return stats["calls"] == stats["succeeded"] + stats["failed"]


# 1. A stream closed or dropped before its first read still records its outcome ----


@pytest.mark.parametrize("how", ["close", "drop"])
def test_a_stream_never_iterated_still_settles_books_and_breaker(how):
    clock = FakeClock()
    router = router_with(mock("a"), breaker=BreakerPolicy(failure_threshold=1, cooldown=1.0))
    state = router._states[0]
    state.breaker._clock = clock
    state.breaker.record_failure(ProviderUnavailableError("down", provider="a"))
    clock.now += 2  # half-open: the next call is the probe
    stream = router.route_stream("hi")
    if how == "close":
        stream.close()
    else:
        del stream
        gc.collect()
    snapshot = router.stats()["providers"]["a"]
    assert snapshot["in_flight"] == 0
    assert balanced(router) and router.stats()["succeeded"] == 1
    assert state.breaker.state == CLOSED and state.breaker.is_available()
    router.close()


def test_a_stream_read_to_the_end_is_recorded_once():
    events = []
    router = router_with(mock("a"))
    router.add_listener(events.append)
    stream = router.route_stream("one two")
    assert "".join(stream) == "Mock response to: one two"
    stream.close()
    assert [e.kind for e in events] == ["attempt", "call"]
    assert balanced(router) and router.stats()["providers"]["a"]["in_flight"] == 0
    router.close()


# 2. Failures already in flight do not ratchet an open breaker; only the probe frees its slot


def test_concurrent_failures_past_the_threshold_open_the_breaker_once():
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=5, cooldown=5, max_cooldown=60), clock)
    reservations = [breaker.reserve() for _ in range(10)]  # ten calls in flight at once
    for reservation in reservations:
        breaker.record_failure(ProviderUnavailableError("down"), reservation)
    assert breaker.state == OPEN and breaker.remaining() == pytest.approx(5)
    clock.now += 5
    probe = breaker.reserve()
    assert probe == "probe"
    breaker.record_failure(ProviderUnavailableError("down"), probe)
    assert breaker.remaining() == pytest.approx(10)  # the second trip doubles, once


def test_a_retry_after_may_extend_an_open_breaker_without_counting_a_trip():
    from multi_llm_orchestrator import RateLimitError

    clock = FakeClock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, cooldown=5), clock)
    late = breaker.reserve()
    breaker.record_failure(ProviderUnavailableError("down"), breaker.reserve())
    breaker.record_failure(RateLimitError("slow", retry_after=30), late)
    assert breaker.remaining() == pytest.approx(30)
    clock.now += 30
    breaker.record_failure(ProviderUnavailableError("down"), breaker.reserve())
    assert breaker.remaining() == pytest.approx(10)  # second trip, not third


def test_only_the_probe_frees_the_half_open_slot():
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, cooldown=5), clock)
    straggler = breaker.reserve()  # started while closed
    breaker.record_failure(ProviderUnavailableError("down"), breaker.reserve())
    clock.now += 5
    assert breaker.reserve() == "probe"
    breaker.release(straggler)  # the straggler finishing must not let a second probe in
    breaker.record_failure(ProviderUnavailableError("down"), straggler)
    assert breaker.state == HALF_OPEN
    assert breaker.reserve() is None


# 3. A hedge with no candidate left to start neither spins nor drains the budget -----


def test_race_stops_hedging_when_every_remaining_candidate_is_skipped():
    from concurrent.futures import Future

    from multi_llm_orchestrator.hedging import RaceFailed, race

    class CountingBudget:
        spent = 0

        def try_spend(self):
            self.spent += 1
            return True

    slow = Future()  # the primary never answers
    budget = CountingBudget()
    started = time.monotonic()
    with pytest.raises(RaceFailed) as info:
        race(
            ["a", "b", "c"],
            lambda candidate, hedge: slow if candidate == "a" else None,  # b and c: breaker refused
            deadline=time.monotonic() + 0.3,
            hedge_delay=lambda candidate: 0.01,
            max_hedges=1,
            budget=budget,
            on_lost=lambda future: None,
        )
    assert info.value.deadline_hit and time.monotonic() - started < 2
    assert budget.spent == 1


# 4. close() waits for calls in flight before closing providers; a closed pool says so


class ClosingMock:
    """A MockProvider whose calls fail once it is closed, like an HTTP provider's pool."""

    @staticmethod
    def make(name, delay):
        from multi_llm_orchestrator.providers import MockProvider

        class Provider(MockProvider):
            shut = False

            def close(self):
                self.shut = True

            def complete(self, messages, params=None, *, timeout=None):
                time.sleep(delay)
                if self.shut:
                    raise ProviderUnavailableError("pool closed", provider=self.name)
                return super().complete(messages, params, timeout=timeout)

        return Provider(mock(name).config)


def test_close_lets_calls_in_flight_finish_before_closing_providers():
    router = router_with(ClosingMock.make("a", 0.3), timeout=5)
    answers = []
    worker = threading.Thread(target=lambda: answers.append(router.complete("hi")))
    worker.start()
    time.sleep(0.1)
    router.close()
    worker.join(5)
    assert answers and answers[0].provider == "a"
    assert balanced(router)


def test_a_call_racing_close_gets_a_closed_error_and_releases_its_probe():
    from multi_llm_orchestrator import OrchestratorError

    router = router_with(mock("a"), timeout=5, breaker={"failure_threshold": 1, "cooldown": 0.01})
    state = router._states[0]
    state.breaker.record_failure(ProviderUnavailableError("down"))
    time.sleep(0.02)
    router._pool().shutdown()  # what close() does between this call's plan and its submit
    with pytest.raises(OrchestratorError, match="Router is closed"):
        router.complete("hi")
    assert state.breaker.is_available()  # the probe reservation was given back
    assert balanced(router)
    router.close()


# 5. Every call is reported once, whatever ends it --------------------------------


def test_a_call_that_cannot_be_planned_is_reported_to_listeners_and_counted():
    from multi_llm_orchestrator import NoProvidersError

    router = Router()
    events = []
    router.add_listener(events.append)
    with pytest.raises(NoProvidersError):
        router.complete("hi")
    assert [(e.kind, e.outcome, e.error_type) for e in events] == [("call", "error", "NoProvidersError")]
    assert router.stats()["calls"] == router.stats()["failed"] == 1
    router.close()


@pytest.mark.parametrize("settings", [{}, {"timeout": 5}])
def test_a_strategy_that_raises_still_balances_the_books(settings):
    from multi_llm_orchestrator.strategies import Strategy

    class Broken(Strategy):
        def order(self, states, health):
            raise KeyError("bug in a custom strategy")

    router = router_with(mock("a"), strategy=Broken(), **settings)
    with pytest.raises(KeyError):
        router.complete("hi")
    assert balanced(router) and router.stats()["failed"] == 1
    router.close()


def test_an_interrupt_while_waiting_on_a_race_balances_the_books(monkeypatch):
    import multi_llm_orchestrator.hedging as hedging

    router = router_with(mock("a", delay=0.2), mock("b", delay=0.2), timeout=5, hedge_after=0.01)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hedging, "wait", interrupted)  # several attempts in flight
    monkeypatch.setattr(hedging, "wait_one", interrupted)  # one attempt in flight
    with pytest.raises(KeyboardInterrupt):
        router.complete("hi")
    monkeypatch.undo()
    router.close()  # waits for the abandoned attempt
    assert balanced(router)
    assert router.stats()["providers"]["a"]["in_flight"] == 0


def test_an_interrupt_while_waiting_on_a_deadline_attempt_balances_the_books(monkeypatch):
    from concurrent.futures import Future

    router = router_with(mock("a", delay=0.2), timeout=5)  # a deadline, no hedging: one hop per attempt
    waiter = threading.current_thread()
    real_exception = Future.exception

    def interrupted(self, timeout=None):
        if threading.current_thread() is waiter:
            raise KeyboardInterrupt
        return real_exception(self, timeout)

    monkeypatch.setattr(Future, "exception", interrupted)
    with pytest.raises(KeyboardInterrupt):
        router.complete("hi")
    monkeypatch.undo()
    router.close()  # waits for the abandoned attempt
    assert balanced(router)
    stats = router.stats()["providers"]["a"]
    assert stats["in_flight"] == 0
    assert router.stats()["failed"] == 1


# 6. first-available waits for health checks only within the call's time --------------


def test_first_available_with_a_slow_health_check_still_answers_within_the_timeout():
    router = router_with(
        mock("a", health_delay=0.9), mock("b", health_delay=0.9),
        strategy="first-available", timeout=0.5, health_timeout=1.0,
    )
    started = time.monotonic()
    results = []
    threads = [threading.Thread(target=lambda: results.append(router.complete("hi"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert time.monotonic() - started < 0.45  # the checks alone take 0.9 s
    assert [r.provider for r in results] == ["a"] * 4  # unknown health: registration order
    time.sleep(1.2)  # the single background check per provider fills the cache
    assert router.complete("hi").provider == "a"
    assert router._health.cached("a").healthy and router._health.cached("b").healthy
    router.close()


def test_health_status_runs_one_check_per_provider_for_concurrent_callers():
    from multi_llm_orchestrator.health import HealthChecker

    checker = HealthChecker(timeout=1.0, ttl=60)
    provider = mock("a", health_delay=0.2)
    calls = []
    original = provider.health_check
    provider.health_check = lambda timeout=None: calls.append(1) or original(timeout)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(checker.status([provider]))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert answers == [{"a": True}] * 8 and len(calls) == 1
    assert checker.status([provider], wait=0) == {"a": True}  # cached now
    checker.close()


# 7. One number check everywhere: no NaN, no infinity, no bool --------------------

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda: Router(hedge_after=NAN), "hedge_after must be seconds > 0"),
        (lambda: Router(hedge_after=INF), "hedge_after must be seconds > 0"),
        (lambda: Router(hedge_after=0.1, hedge_budget=True), "hedge_budget must be a share in [0, 1]; got True"),
        (lambda: Router(timeout=NAN), "timeout must be a number of seconds > 0 (or None); got nan"),
        (lambda: BreakerPolicy(cooldown=NAN), "cooldown must be a number of seconds >= 0; got nan"),
        (lambda: BreakerPolicy(cooldown_multiplier=NAN), "cooldown_multiplier must be a number >= 1; got nan"),
        (lambda: BreakerPolicy(cooldown_multiplier=True), "cooldown_multiplier must be a number >= 1; got True"),
        (lambda: mock("m", failure_rate="abc"), "extra['failure_rate'] of 'm' must be a number in [0, 1]; got 'abc'"),
        (lambda: mock("m", fail_after_chunks="x"), "extra['fail_after_chunks'] of 'm' must be an integer >= 0"),
        (lambda: mock("m", delay=NAN), "extra['delay'] must be a number of seconds >= 0; got nan"),
        (lambda: mock("m", weight=INF), "weight of 'm' must be a number >= 0; got inf"),
        (lambda: mock("m", price_per_1k_prompt_tokens=-1), "price_per_1k_prompt_tokens of 'm' must be a number >= 0"),
    ],
)
def test_bad_numbers_are_rejected_with_a_clear_message(build, fragment):
    from multi_llm_orchestrator import ConfigurationError

    with pytest.raises(ConfigurationError) as info:
        build()
    assert fragment in str(info.value)


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-Infinity"])
def test_config_files_do_not_turn_nan_or_inf_strings_into_numbers(text):
    from multi_llm_orchestrator import ConfigurationError
    from multi_llm_orchestrator.configuration import load_config

    with pytest.raises(ConfigurationError, match="hedge_after must be"):
        load_config({"hedge_after": text, "providers": [{"type": "mock", "name": "m"}]}).build()
    with pytest.raises(ConfigurationError, match="cooldown must be a number; got"):
        load_config({"breaker": {"cooldown": text}, "providers": [{"type": "mock", "name": "m"}]})


# 8. A hedge still queued when the race ends never calls its provider --------------


def test_a_hedge_still_queued_when_the_race_ends_is_cancelled_not_run(monkeypatch):
    from multi_llm_orchestrator import DeadlineExceededError
    from multi_llm_orchestrator.calls import Call

    recorded = []
    original = Call.record
    monkeypatch.setattr(Call, "record", lambda self, attempt, order: recorded.append(attempt) or original(self, attempt, order))
    spare = mock("spare")
    # One worker: the primary (which ignores its timeout) holds it, so the hedge waits in the queue.
    router = router_with(ClosingMock.make("slow", 0.5), spare, hedge_after=0.05, timeout=0.2, max_workers=1)
    with pytest.raises(DeadlineExceededError):
        router.complete("hi")
    router.close()
    assert [(a.provider, a.latency_s) for a in recorded if a.outcome == "lost"][-1] == ("spare", 0.0)
    assert spare.calls == 0
    assert router._states[1].breaker.is_available() and balanced(router)
    assert router.stats()["providers"]["spare"]["in_flight"] == 0


# 9. A stream failing part-way is one attempt, recorded as an error ----------------


def test_a_stream_failing_part_way_is_one_failed_attempt():
    events = []
    router = router_with(mock("a", fail_after_chunks=2))
    router.add_listener(events.append)
    stream = router.route_stream("one two three")
    with pytest.raises(ProviderUnavailableError):
        list(stream)
    call = [e for e in events if e.kind == "call"]
    assert [(e.outcome, e.attempts) for e in call] == [("error", 1)]
    assert balanced(router) and router.stats()["failed"] == 1
    router.close()


# 10. Secret keys are whole words; URL credentials never shown -------------------------


def test_max_tokens_and_tokenizer_are_not_secrets_but_tokens_and_api_keys_are():
    from multi_llm_orchestrator.providers import ProviderConfig

    config = ProviderConfig(
        name="p",
        extra={"max_tokens": 64, "tokenizer": "bpe", "refresh_token": "s3cret1", "headers": {"X-Api-Key": "s3cret2"}},
    )
    data = config.to_dict()
    assert data["extra"] == {"max_tokens": 64, "tokenizer": "bpe", "headers": {}}
    shown = repr(config)
    assert "'max_tokens': 64" in shown and "'tokenizer': 'bpe'" in shown
    assert "s3cret1" not in shown and "s3cret2" not in shown and "s3cret" not in config.to_json()


def test_url_credentials_are_masked_in_repr_and_left_out_of_to_dict():
    from multi_llm_orchestrator.providers import ProviderConfig

    config = ProviderConfig(
        name="p", base_url="https://user:hunter2@llm.example/v1?api_key=hunter3&region=eu",
        auth_url="https://auth.example/token?tenant=t1",
    )
    shown = repr(config)
    assert "hunter2" not in shown and "hunter3" not in shown and "user:<redacted>@llm.example" in shown
    data = config.to_dict()
    assert data["base_url"] == "https://user@llm.example/v1?region=eu"
    assert data["auth_url"] == "https://auth.example/token?tenant=t1"
    assert ProviderConfig.from_dict(data).base_url == data["base_url"]

"""The executor paths: a call with a deadline runs each attempt as one hop to the
Router's pool (``AttemptRun.hop``); with hedging, an attempt still running at its hedge
delay is handed to ``hedging.race`` (``HedgeDue``). What each must keep: the deadline,
the books, the order of attempts and errors across the hand-over, and close().
"""

import threading
import time

import pytest

from multi_llm_orchestrator import (
    AllProvidersFailedError, DeadlineExceededError, MockProvider, OrchestratorError, ProviderUnavailableError,
)
from multi_llm_orchestrator.breaker import NORMAL, BreakerPolicy

from fakes.mocks import mock, router_with


class Blocking(MockProvider):
    """Answers once ``release`` is set, whatever timeout it is given (it ignores it)."""

    def __init__(self, config):
        super().__init__(config)
        self.release = threading.Event()
        self.entered = threading.Event()

    def complete(self, messages, params=None, *, timeout=None):
        self.entered.set()
        self.release.wait(10)
        return super().complete(messages, params, timeout=timeout)


def blocking(name, **settings):
    return Blocking(mock(name, **settings).config)


def balanced(router):
    stats = router.stats()
    return stats["calls"] == stats["succeeded"] + stats["failed"]


def test_a_provider_ignoring_its_timeout_is_left_at_the_deadline_and_no_later_provider_is_tried():
    slow = blocking("slow")
    router = router_with(slow, mock("next"), timeout=0.2)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError) as caught:
        router.complete("hi")
    assert time.monotonic() - started < 2.0  # the caller left at the deadline, not after 10 s
    assert [error.message for error in caught.value.errors] == ["still running when the deadline passed"]
    assert router.stats()["providers"]["next"]["calls"] == 0  # no time left: not tried
    slow.release.set()  # the abandoned attempt ends later: its books still close
    deadline = time.monotonic() + 5
    while router.stats()["providers"]["slow"]["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert router.stats()["providers"]["slow"]["in_flight"] == 0
    assert balanced(router)
    router.close()


def test_close_cancels_a_queued_deadline_attempt_and_gives_its_reservation_back():
    slow = blocking("slow", limits={"max_concurrency": 2})
    router = router_with(slow, timeout=30, max_workers=1)
    outcomes = {}

    def call(key):
        try:
            outcomes[key] = router.complete("hi").text
        except (AllProvidersFailedError, OrchestratorError) as error:
            outcomes[key] = error

    first = threading.Thread(target=call, args=("first",))
    first.start()
    assert slow.entered.wait(5)  # the only worker is busy
    second = threading.Thread(target=call, args=("second",))
    second.start()
    deadline = time.monotonic() + 5
    while router._executor._work_queue.qsize() == 0 and time.monotonic() < deadline:
        time.sleep(0.005)  # the second call's attempt is queued behind the first
    closer = threading.Thread(target=router.close, kwargs={"grace": 0.2})
    closer.start()
    time.sleep(0.3)  # grace passes: the running attempt is cut, the queued one cancelled
    slow.release.set()
    for thread in (first, second, closer):
        thread.join(10)
    queued = outcomes["second"]
    assert isinstance(queued, AllProvidersFailedError)
    assert [error.message for error in queued.errors] == ["cancelled before it started"]
    state = router.stats()["providers"]["slow"]
    assert state["in_flight"] == 0 and state["calls"] == 1  # the cancelled attempt never started
    assert state["failures"] == 0  # a cancelled attempt is no breaker failure
    assert router._states[0].breaker.snapshot()["consecutive_failures"] == 0
    assert router._states[0].admission.limiter.snapshot()["in_flight"] == 0  # its capacity is back too
    assert balanced(router)


def test_a_hedge_due_after_a_failed_attempt_keeps_the_order_and_the_errors():
    slow = blocking("slow")
    router = router_with(mock("broken", model="mock-unavailable"), slow, mock("fast"), timeout=5, hedge_after=0.05)
    try:
        completion = router.complete("hi")
    finally:
        slow.release.set()
    assert completion.provider == "fast"
    assert [(a.provider, a.outcome, a.hedge) for a in completion.attempts] == [
        ("broken", "error", False), ("slow", "lost", False), ("fast", "ok", True),
    ]
    router.close()


def test_a_failed_race_after_a_failed_attempt_reports_every_error_in_order():
    router = router_with(
        mock("broken", model="mock-unavailable"), Blocking(mock("slow", model="mock-unavailable").config),
        mock("also-broken", model="mock-unavailable"), timeout=5, hedge_after=0.05,
    )
    slow = router._states[1].provider
    threading.Timer(0.3, slow.release.set).start()  # the hedge fails first, then the slow one
    with pytest.raises(AllProvidersFailedError) as caught:
        router.complete("hi")
    assert [error.provider for error in caught.value.errors] == ["broken", "also-broken", "slow"]
    assert not isinstance(caught.value, DeadlineExceededError)
    router.close()


def test_the_attempt_handed_to_the_race_is_hedged_at_once_not_after_a_second_delay():
    # The hedge is due at 0.3 s; the slow provider answers at 0.6 s. Waiting one more
    # delay inside the race (hedge at 0.6 s) would let the slow answer win.
    router = router_with(mock("slow", delay=0.6), mock("fast"), timeout=5, hedge_after=0.3)
    completion = router.complete("hi")
    assert completion.provider == "fast"
    assert [(a.provider, a.outcome, a.hedge) for a in completion.attempts] == [("slow", "lost", False), ("fast", "ok", True)]
    router.close()


def test_close_during_a_race_gives_a_queued_hedge_its_capacity_back_while_the_first_attempt_wins():
    first = blocking("first")
    router = router_with(first, mock("hedge", limits={"max_concurrency": 1}), timeout=30, hedge_after=0.05, max_workers=1)
    outcome = {}
    caller = threading.Thread(target=lambda: outcome.setdefault("completion", router.complete("hi")))
    caller.start()
    assert first.entered.wait(5)  # the only worker runs the first attempt
    deadline = time.monotonic() + 5
    while router._executor._work_queue.qsize() == 0 and time.monotonic() < deadline:
        time.sleep(0.005)  # the hedge is queued behind it
    closer = threading.Thread(target=router.close, kwargs={"grace": 5})
    closer.start()  # cancels the queued hedge, waits for the running attempt
    time.sleep(0.2)
    first.release.set()
    for thread in (caller, closer):
        thread.join(10)
    assert outcome["completion"].provider == "first"
    hedge = router._states[1]
    assert hedge.admission.limiter.snapshot()["in_flight"] == 0  # the cancelled hedge's capacity is back
    assert router.stats()["providers"]["hedge"]["calls"] == 0
    assert balanced(router)


def test_a_hedge_whose_circuit_opened_after_planning_is_skipped_not_forced():
    router = None

    class OpensTheOther(MockProvider):
        """Slow; while it runs, the other provider's circuit opens (another call's failures)."""

        def complete(self, messages, params=None, *, timeout=None):
            other = router._states[1].breaker
            other.record_failure(ProviderUnavailableError("down"), NORMAL)
            time.sleep(0.4)
            return super().complete(messages, params, timeout=timeout)

    router = router_with(OpensTheOther(mock("slow").config), mock("other"), timeout=5, hedge_after=0.1,
                         breaker=BreakerPolicy(failure_threshold=1, cooldown=60))
    completion = router.complete("hi")
    assert completion.provider == "slow"  # no probe forced through the open circuit
    assert [(a.provider, a.outcome, a.error_type) for a in completion.attempts] == [
        ("slow", "ok", None), ("other", "skipped", "CircuitOpen"),
    ]
    assert router.stats()["providers"]["other"]["calls"] == 0
    router.close()


def test_a_router_closed_while_a_deadline_call_plans_refuses_it_and_makes_no_new_pool():
    from multi_llm_orchestrator.strategies import Strategy

    class ClosesTheRouter(Strategy):
        name = "closes-the-router"

        def order(self, states, health):
            router.close()  # close() from another thread, between the plan and the hop
            return list(states)

    router = router_with(mock("a"), strategy=ClosesTheRouter(), timeout=5)
    with pytest.raises(OrchestratorError, match="closed"):
        router.complete("hi")
    assert router._executor is None  # no pool made for a closed Router (its threads would leak)
    assert router.stats()["providers"]["a"]["calls"] == 0

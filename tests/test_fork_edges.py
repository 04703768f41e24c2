"""Locks of the resilience core held by a parent thread at ``os.fork()`` are new in the
child (issue 18: no test held these two at the fork)."""

import threading
import time

from multi_llm_orchestrator.breaker import PROBE, BreakerPolicy, CircuitBreaker
from multi_llm_orchestrator.errors import ProviderUnavailableError
from multi_llm_orchestrator.hedging import HedgeBudget

from fakes.mocks import mock, router_with
from test_fork_safety import child_result, in_child


def test_a_breaker_lock_held_at_the_fork_is_new_in_the_child():
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, cooldown=0))
    breaker.record_failure(ProviderUnavailableError("down"), breaker.reserve())
    with breaker._lock:  # as a parent thread recording an outcome at the moment of the fork
        pid, pipe = in_child(lambda: {"reservation": breaker.reserve()})
    assert child_result(pid, pipe) == {"reservation": PROBE}


def test_a_hedge_budget_lock_held_at_the_fork_is_new_in_the_child():
    budget = HedgeBudget(1.0, reserve=1)
    with budget._lock:
        pid, pipe = in_child(lambda: {"spent": budget.try_spend()})
    assert child_result(pid, pipe) == {"spent": True}
    started = time.monotonic()
    assert budget.try_spend() and time.monotonic() - started < 5  # the parent's own lock works too


def _answers_in_the_child(router):
    """What the child's ``router.complete`` returned, or "hung" (a lock of the parent's)."""
    done = []
    worker = threading.Thread(target=lambda: done.append(router.complete("from the child").text), daemon=True)
    worker.start()
    worker.join(5)
    return done[0] if done else "hung"


def test_router_and_call_totals_locks_held_at_the_fork_are_new_in_the_child():
    router = router_with(mock("a"), breaker=False, timeout=10)  # a deadline: attempts go through the pool
    for lock in (router._lock, router._telemetry._lock):  # a parent thread adding a provider, counting a call
        with lock:
            pid, pipe = in_child(lambda: {"answer": _answers_in_the_child(router)})
        assert child_result(pid, pipe)["answer"] == "Mock response to: from the child"
    router.close()


def test_a_strategy_lock_held_at_the_fork_is_new_in_the_child():
    router = router_with(mock("a"), mock("b"), breaker=False, strategy="random")
    with router._strategy._lock:  # a parent thread choosing the next provider
        pid, pipe = in_child(lambda: {"answer": _answers_in_the_child(router)})
    assert child_result(pid, pipe)["answer"] == "Mock response to: from the child"
    router.close()


def test_a_stream_the_parent_is_reading_does_not_hold_up_close_in_the_child():
    router = router_with(mock("a"), breaker=False)
    stream = router.route_stream("a long answer the parent is still reading")
    next(stream)

    def close_in_child():
        started = time.monotonic()
        router.close(grace=5)  # nothing of the child's own is running: returns at once
        return {"seconds": time.monotonic() - started}

    pid, pipe = in_child(close_in_child)
    assert child_result(pid, pipe)["seconds"] < 2.5
    assert stream.text and not stream.done  # the parent's stream is untouched
    router.close(grace=0)

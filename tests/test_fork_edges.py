"""Locks of the resilience core held by a parent thread at ``os.fork()`` are new in the
child (issue 18: no test held these two at the fork)."""

import time

from multi_llm_orchestrator.breaker import PROBE, BreakerPolicy, CircuitBreaker
from multi_llm_orchestrator.errors import ProviderUnavailableError
from multi_llm_orchestrator.hedging import HedgeBudget

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

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

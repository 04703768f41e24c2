"""The plain call skips work that cannot apply (issue 17): the paths it skips still work.

Each test here takes a Router that starts on the fast path (no cache, no queue, no
context window, no planning check with anything to say) and then needs the slow one.
"""

from __future__ import annotations

import threading
import time

import pytest

from fakes.mocks import mock, router_with
from multi_llm_orchestrator import GenerationParams, MockProvider, ProviderConfig, Router, Usage
from multi_llm_orchestrator.calls import LiveAttempts
from multi_llm_orchestrator.state import call_deadline, time_to_deadline

LONG_PROMPT = "word " * 400  # ~504 estimated tokens


def test_a_provider_added_later_with_a_context_window_is_planned_around():
    router = router_with(mock("big"), strategy="first-available")
    assert router.complete(LONG_PROMPT).provider == "big"  # no window anywhere: nothing planned
    router.add_provider(mock("small", context_window=100))
    router.remove_provider("big")
    router.add_provider(mock("big"))  # now after "small" in first-available order
    completion = router.complete(LONG_PROMPT)
    assert completion.provider == "big"
    assert [(a.provider, a.outcome) for a in completion.attempts] == [("small", "skipped"), ("big", "ok")]
    assert "context window of 100 tokens" in completion.attempts[0].error


def test_removing_the_only_provider_with_a_window_ends_its_planning():
    router = router_with(mock("small", context_window=100), mock("big"), strategy="first-available")
    assert router.complete(LONG_PROMPT).provider == "big"
    router.remove_provider("small")
    router.add_provider(mock("small"))  # same name, no window any more
    assert router.complete(LONG_PROMPT).provider == "big"  # first-available: big was added first now
    assert [a.outcome for a in router.complete(LONG_PROMPT).attempts] == ["ok"]


def test_removing_the_only_provider_with_a_window_returns_plain_calls_to_the_fast_path(monkeypatch):
    router = router_with(mock("small", context_window=100), mock("big"), strategy="first-available")
    router.remove_provider("small")
    windows = router._windows
    consulted = []  # the calls the window check had something to say about
    real_prepare = windows.prepare

    def prepare(request):
        reason_of = real_prepare(request)
        if reason_of is not None:
            consulted.append(request)
        return reason_of

    monkeypatch.setattr(windows, "prepare", prepare)
    completion = router.complete(LONG_PROMPT)
    assert completion.provider == "big" and [a.outcome for a in completion.attempts] == ["ok"]
    assert consulted == []  # no window left anywhere: the check says so at once, no provider looked at
    router.add_provider(mock("tiny", context_window=10))
    attempts = router.complete(LONG_PROMPT).attempts
    assert [(a.provider, a.outcome) for a in attempts] == [("tiny", "skipped"), ("big", "ok")]
    assert len(consulted) == 1  # a window again: planned around


def test_cache_true_per_call_still_uses_a_cache_the_router_leaves_off():
    from multi_llm_orchestrator.cache import ResponseCache

    provider = mock("a")
    router = Router(cache=ResponseCache(enabled=False))
    router.add_provider(provider)
    router.complete("same question")  # cache off for this call: not stored
    first = router.complete("same question", cache=True)
    second = router.complete("same question", cache=True)
    assert provider.calls == 2 and second.text == first.text  # the third was a hit
    assert router.stats()["cache_hits"] == 1


def test_cache_false_per_call_bypasses_a_cache_the_router_has_on():
    provider = mock("a")
    router = router_with(provider, cache=True)
    router.complete("same question")
    for _ in range(2):
        assert router.complete("same question", cache=False).provider == "a"
    assert provider.calls == 3 and router.stats()["cache_hits"] == 0
    assert router.complete("same question").provider == "a" and router.stats()["cache_hits"] == 1
    stream = router.route_stream("same question", cache=False)
    assert "".join(stream) and provider.calls == 4
    with pytest.raises(Exception, match="cache must be True, False or None"):
        router.complete("q", cache="yes")


def test_a_call_without_a_deadline_inside_one_with_a_deadline_keeps_the_outer_bound():
    # A provider that itself calls a Router (an agent, say) runs inside the outer call:
    # shared state's round trips of the inner call stay within the outer call's deadline.
    seen = []

    class Nested(MockProvider):
        def complete(self, messages, params=None, *, timeout=None):
            seen.append(time_to_deadline())
            return super().complete(messages, params, timeout=timeout)

    router = Router()
    router.add_provider(Nested(ProviderConfig(name="inner", extra={"delay": 0})))
    router.complete("q")
    assert seen == [None]
    with call_deadline(time.monotonic() + 30):
        router.complete("q")
    assert seen[1] is not None and 0 < seen[1] <= 30
    assert time_to_deadline() is None  # restored after the block


def test_live_attempts_wake_close_only_when_it_waits():
    live = LiveAttempts()

    class Attempt:
        def __init__(self):
            self.cut_with = None

        def cut(self, error):
            self.cut_with = error

    first = Attempt()
    live.add(first)
    live.discard(first)  # nobody waits: no notify needed, and none of this may block
    running = Attempt()
    live.add(running)
    closed = threading.Event()

    def close():
        live.close(5.0, RuntimeError("closing"))
        closed.set()

    thread = threading.Thread(target=close)
    thread.start()
    assert not closed.wait(0.05)  # close() waits for the running attempt
    live.discard(running)  # ... and is woken as soon as it ends
    assert closed.wait(5.0)
    thread.join()
    assert running.cut_with is None


@pytest.mark.parametrize("usage,plausible", [
    (Usage(1, 2, 3), True),
    (Usage(0, 0, 0, 0, 0), True),
    (Usage(10**12, 0, 10**12), True),
    (Usage(10**12 + 1, 0, 1), False),
    (Usage(-1, 2, 1), False),
    (Usage(1, 2, 3, -1), False),
    (Usage(1, 2, 3, 0, -1), False),
    (Usage(1.0, 2, 3), True),  # a whole float still counts (the slow path)
    (Usage(1.5, 2, 3), False),
    (Usage(True, 2, 3), False),
    (Usage("1", 2, 3), False),
    (Usage(float("nan"), 2, 3), False),
])
def test_usage_plausibility_on_the_fast_and_the_slow_path(usage, plausible):
    assert usage.plausible is plausible


def test_keywords_still_parse_after_plain_calls():
    router = router_with(mock("a"), mock("b"))
    assert router.complete("q").provider in ("a", "b")
    assert router.complete("q", provider="b").provider == "b"
    with pytest.raises(Exception, match="Unknown keyword"):
        router.complete("q", temprature=0.1)
    assert router.complete("q", GenerationParams(max_tokens=5), temperature=0.5).provider in ("a", "b")


def test_a_shared_state_still_sees_the_calls_deadline_on_both_paths():
    from multi_llm_orchestrator.state import LocalSequence, State

    seen = []

    class Sequence(LocalSequence):
        def next(self):
            seen.append(time_to_deadline())  # what a RedisState round trip would be bounded by
            return super().next()

    class Shared(State):  # any State but the local one may make round trips
        def sequence(self, name):
            return Sequence()

    for hedged in (False, True):
        seen.clear()
        router = Router(state=Shared(), timeout=5, hedge_after=0.5 if hedged else None)
        router.add_provider(mock("a"))
        router.add_provider(mock("b"))
        router.complete("q")
        router.complete("q", timeout=None)  # the Router's timeout still applies
        assert len(seen) == 2 and all(left is not None and 0 < left <= 5 for left in seen), seen
        router.close()
    router = Router(state=Shared())
    router.add_provider(mock("a"))
    seen.clear()
    router.complete("q")
    assert seen == [None]


def test_an_attempt_sets_its_thread_state_while_the_provider_runs_and_restores_it():
    from multi_llm_orchestrator.failover import has_fallback
    from multi_llm_orchestrator.limits import attempt_feedback
    from multi_llm_orchestrator.transfers import _local

    seen = []

    class Looking(MockProvider):
        def complete(self, messages, params=None, *, timeout=None):
            from multi_llm_orchestrator.limits import _feedback

            seen.append((self.name, has_fallback(), getattr(_feedback, "limiter", None), getattr(_local, "scope", None)))
            if self.name == "first":
                raise RuntimeError("down")
            return super().complete(messages, params, timeout=timeout)

    events = []
    router = Router(strategy="first-available", breaker=False)
    router.add_listener(lambda event: events.append((event.kind, has_fallback(), getattr(_local, "scope", None))))
    for name in ("first", "second"):
        router.add_provider(Looking(ProviderConfig(name=name, extra={"delay": 0},
                                                   limits={"rpm": 1000})))
    outer = object()
    with attempt_feedback(outer):
        assert router.complete("q").provider == "second"
        from multi_llm_orchestrator.limits import _feedback

        assert _feedback.limiter is outer  # restored after each attempt, failed or not
    (first, fallback1, limiter1, scope1), (second, fallback2, limiter2, scope2) = seen
    assert (first, fallback1, second, fallback2) == ("first", True, "second", False)
    assert limiter1 is not None and limiter2 is not None and limiter1 is not limiter2
    assert scope1 is not None and scope2 is not None and scope1 is not scope2
    assert not has_fallback() and getattr(_local, "scope", None) is None
    assert events and all(fallback is False and scope is None for _, fallback, scope in events)

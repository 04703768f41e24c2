"""The response cache (in memory): keys, rules, TTL and size bound, single-flight, streams."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from multi_llm_orchestrator import Router
from multi_llm_orchestrator.cache import MemoryResponseStore, ResponseCache
from multi_llm_orchestrator.errors import AllProvidersFailedError, ConfigurationError, DeadlineExceededError
from multi_llm_orchestrator.providers import MockProvider, ProviderConfig
from multi_llm_orchestrator.types import Completion, GenerationParams, ToolCall

from fakes.mocks import mock, router_with


def test_an_identical_call_is_answered_from_the_cache_whatever_provider_is_next():
    a, b = mock("a"), mock("b")
    router = router_with(a, b, cache=True)
    first = router.complete("What is Python?")
    second = router.complete("What is Python?")
    assert (first.cached, second.cached) == (False, True)
    assert second.text == first.text and second.provider == "a" and second.attempts == []
    assert second.usage == first.usage and second.finish_reason == "stop"
    assert (a.calls, b.calls) == (1, 0)  # round-robin would have picked b: the key has no provider
    stats = router.stats()
    assert (stats["calls"], stats["succeeded"], stats["cache_hits"], stats["cache_misses"]) == (2, 2, 1, 1)


def test_different_messages_or_params_are_different_entries():
    provider = mock("a")
    router = router_with(provider, cache=True)
    router.complete("one")
    router.complete("two")
    router.complete("one", GenerationParams(max_tokens=2))
    router.complete([{"role": "system", "content": "be brief"}, {"role": "user", "content": "one"}])
    assert provider.calls == 4
    assert router.complete("one", GenerationParams(max_tokens=2)).cached


def test_per_call_opt_in_and_bypass():
    provider = mock("a")
    router = router_with(provider)  # no cache by default
    router.complete("q")
    router.complete("q")
    assert provider.calls == 2
    assert not router.complete("q", cache=True).cached  # opts in: fills the cache
    assert router.complete("q", cache=True).cached
    assert not router.complete("q").cached  # the Router's default is still off
    cached_router = router_with(mock("b"), cache=True)
    cached_router.complete("q")
    assert not cached_router.complete("q", cache=False).cached
    with pytest.raises(ConfigurationError, match="cache must be True, False or None"):
        cached_router.complete("q", cache="yes")


def test_sampled_calls_are_not_cached_unless_asked():
    provider = mock("a")
    router = router_with(provider, cache=True)
    hot = GenerationParams(temperature=0.7)
    router.complete("q", hot)
    assert not router.complete("q", hot).cached
    assert router.stats()["cache_misses"] == 0  # not even looked up
    router.complete("q", GenerationParams(temperature=0))
    assert router.complete("q", GenerationParams(temperature=0)).cached
    sampled = router_with(mock("b"), cache=ResponseCache(sampled=True))
    sampled.complete("q", hot)
    assert sampled.complete("q", hot).cached


def test_failures_are_never_cached():
    flaky = mock("a", failure_rate=1.0, seed=1)
    router = router_with(flaky, cache=True, breaker=False)
    with pytest.raises(AllProvidersFailedError):
        router.complete("q")
    flaky.failure_rate = 0.0
    assert not router.complete("q").cached
    assert router.complete("q").cached


@pytest.mark.parametrize("allowed", [False, True])
def test_tool_call_answers_are_not_cached_unless_asked(allowed):
    from multi_llm_orchestrator.cache import Responses
    from multi_llm_orchestrator.types import Message

    responses = Responses(ResponseCache(tool_calls=allowed), MemoryResponseStore, lambda name: None)
    produced = []

    call = ToolCall("call_1", "get_weather", {"city": "Kazan"})

    def produce():
        produced.append(1)
        return Completion("", "p", "m", tool_calls=[call], reasoning="it is about weather")

    messages, params = [Message("user", "weather?")], GenerationParams()
    answers = [responses.complete(messages, params, None, None, (), produce) for _ in range(2)]
    assert len(produced) == (1 if allowed else 2)
    assert answers[1].cached == allowed
    assert answers[1].tool_calls == [call] and answers[1].reasoning == "it is about weather"


def test_memory_store_expires_entries_and_keeps_the_most_recently_used():
    now = [0.0]
    store = MemoryResponseStore(ttl=10, max_entries=2, clock=lambda: now[0])
    store.put("a", {"text": "A"})
    store.put("b", {"text": "B"})
    assert store.get("a") == {"text": "A"}  # a is now the most recently used
    store.put("c", {"text": "C"})
    assert (store.get("a"), store.get("b"), store.get("c")) == ({"text": "A"}, None, {"text": "C"})
    now[0] = 10.0
    assert store.get("a") is None and len(store) == 1


def test_the_router_cache_is_bounded():
    provider = mock("a")
    router = router_with(provider, cache=ResponseCache(max_entries=2))
    for prompt in ("1", "2", "3"):
        router.complete(prompt)
    assert router.complete("3").cached and router.complete("2").cached
    assert not router.complete("1").cached  # evicted


def test_64_identical_concurrent_calls_make_one_provider_call():
    provider = mock("a", delay=0.2)
    router = router_with(provider, cache=True)
    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(lambda _: router.complete("same question", timeout=10), range(64)))
    assert provider.calls == 1
    assert {r.text for r in results} == {"Mock response to: same question"}
    assert sum(not r.cached for r in results) == 1
    assert router.stats()["cache_hits"] == 63


def test_an_answer_landing_between_a_miss_and_the_claim_is_used_not_produced_again():
    # A thread preempted after its miss: meanwhile another call produced the answer and
    # its flight ended, so this thread leads a new flight; it must find the answer.
    provider = mock("a")
    router = router_with(provider, cache=True)
    store = router._responses.store
    miss, raced = store.get, []

    def get_then_let_another_call_finish(key):
        entry = miss(key)
        if entry is None and not raced:
            raced.append(key)
            assert not router.complete("same question").cached
        return entry

    store.get = get_then_let_another_call_finish
    assert router.complete("same question", timeout=5).cached
    assert provider.calls == 1
    assert router.stats()["cache_hits"] == 1 and router.stats()["cache_misses"] == 1


def test_waiters_share_the_producers_failure_and_the_provider_is_called_once():
    provider = mock("a", model="mock-unavailable", delay=0.2)
    router = router_with(provider, cache=True, breaker=False)

    def call(_):
        try:
            return router.complete("q", timeout=5)
        except AllProvidersFailedError as exc:
            return exc

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(8)))
    assert all(isinstance(r, AllProvidersFailedError) for r in results)
    assert provider.calls == 1


def test_a_waiter_gives_up_at_its_own_deadline():
    provider = mock("a", delay=1.0)
    router = router_with(provider, cache=True)
    leader = threading.Thread(target=lambda: router.complete("slow", timeout=5))
    leader.start()
    time.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        router.complete("slow", timeout=0.1)
    assert time.monotonic() - started < 0.5
    leader.join(5)
    assert router.complete("slow").cached  # the leader's answer still landed


def test_a_waiter_whose_producer_ran_out_of_time_produces_itself():
    provider = mock("a", delay=0.3)
    router = router_with(provider, cache=True)
    errors = []
    leader = threading.Thread(target=lambda: errors.append(pytest.raises(DeadlineExceededError, router.complete, "q", timeout=0.1)))
    leader.start()
    time.sleep(0.02)
    answer = router.complete("q", timeout=5)
    leader.join(5)
    assert errors and answer.text == "Mock response to: q" and not answer.cached


def test_a_stream_is_cached_as_its_full_text_and_replayed_as_a_stream():
    provider = mock("a")
    router = router_with(provider, cache=True)
    first = router.route_stream("tell me a story")
    chunks = list(first)
    assert len(chunks) > 1 and not first.cached
    replay = router.route_stream("tell me a story")
    assert "".join(replay) == first.text and replay.cached
    assert replay.usage == first.usage and replay.finish_reason == first.finish_reason and replay.provider == "a"
    assert router.complete("tell me a story").cached  # one entry serves both kinds of call
    assert provider.calls == 1


def test_listeners_see_a_hit_as_a_call_without_attempts_or_usage():
    router = router_with(mock("a"), cache=True)
    events = []
    router.add_listener(events.append)
    router.complete("What is Python?")
    assert [(e.kind, e.attempts) for e in events] == [("attempt", 1), ("call", 1)]
    events.clear()
    router.complete("What is Python?")
    "".join(router.route_stream("What is Python?"))
    assert [(e.kind, e.provider, e.model, e.outcome, e.attempts, e.usage, e.streaming) for e in events] == [
        ("call", "a", "mock-normal", "ok", 0, None, False),  # nothing spent now: no usage
        ("call", "a", "mock-normal", "ok", 0, None, True),
    ]
    assert all(0 <= e.latency_s < 5 for e in events)
    assert router.stats()["cache_hits"] == 2


def test_a_stream_closed_early_is_not_cached():
    provider = mock("a")
    router = router_with(provider, cache=True)
    stream = router.route_stream("tell me a story")
    next(stream)
    stream.close()
    assert not router.complete("tell me a story").cached


def test_concurrent_identical_streams_make_one_provider_call():
    provider = mock("a", delay=0.1, chunk_delay=0.01)
    router = router_with(provider, cache=True)
    with ThreadPoolExecutor(16) as pool:
        texts = list(pool.map(lambda _: "".join(router.route_stream("story", timeout=10)), range(16)))
    assert provider.calls == 1
    assert len(set(texts)) == 1 and texts[0].startswith("Mock response")


def test_cache_settings_are_validated():
    with pytest.raises(ConfigurationError, match="Unknown cache setting"):
        Router(cache={"size": 3})
    with pytest.raises(ConfigurationError, match="ttl"):
        ResponseCache(ttl=0)
    with pytest.raises(ConfigurationError, match="cache must be"):
        Router(cache="on")


def test_cache_from_a_configuration_file_and_in_prometheus():
    from prometheus_client import CollectorRegistry, generate_latest

    from multi_llm_orchestrator.prometheus import RouterCollector

    router = Router.from_config({"cache": {"ttl": 60}, "providers": [{"type": "mock", "name": "m", "extra": {"delay": 0}}]})
    router.complete("q")
    router.complete("q")
    registry = CollectorRegistry()
    registry.register(RouterCollector(router))
    text = generate_latest(registry).decode()
    assert 'mlo_router_cache_total{result="hit"} 1.0' in text
    assert 'mlo_router_cache_total{result="miss"} 1.0' in text
    assert isinstance(router.complete("q"), Completion)


def test_per_provider_keys_separate_routers_with_different_providers():
    from multi_llm_orchestrator.cache import Responses
    from multi_llm_orchestrator.types import Message

    plain, separate = (Responses(ResponseCache(per_provider=flag), MemoryResponseStore, lambda name: None)
                       for flag in (False, True))
    one, two = router_with(mock("a")), router_with(mock("b"))
    messages, params = [Message("user", "q")], GenerationParams()
    assert plain.key(messages, params, None, one._states) == plain.key(messages, params, None, two._states)
    assert separate.key(messages, params, None, one._states) != separate.key(messages, params, None, two._states)


def test_a_router_with_a_cache_is_freed_without_waiting_for_the_garbage_collector():
    import gc
    import weakref

    gc.disable()
    try:
        router = router_with(mock("a"), cache=True)
        router.complete("q")
        ref = weakref.ref(router)
        del router
        assert ref() is None  # no reference cycle keeps it (and its threads) alive
    finally:
        gc.enable()


def test_a_forked_child_does_not_wait_for_an_answer_its_parent_was_producing():
    import os

    provider = mock("a", delay=0.5)
    router = router_with(provider, cache=True)
    leader = threading.Thread(target=lambda: router.complete("q", timeout=5))
    leader.start()
    time.sleep(0.1)  # the parent's flight for "q" is under way
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own call, not a wait for the parent's thread that is not here
        try:
            answer = router.complete("q", timeout=2)
            os.write(write, b"ok" if not answer.cached else b"cached")
        finally:
            os._exit(0)
    os.close(write)
    outcome = os.read(read, 16)
    os.waitpid(pid, 0)
    leader.join(5)
    assert outcome == b"ok"

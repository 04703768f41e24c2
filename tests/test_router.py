"""The Router's core behaviour over MockProviders: strategies, fallback, streams, threads."""

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from multi_llm_orchestrator import (
    AllProvidersFailedError,
    AuthenticationError,
    Completion,
    ConfigurationError,
    GenerationParams,
    Message,
    NoProvidersError,
    OrchestratorError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitError,
    Router,
)
from multi_llm_orchestrator.providers import MockProvider, ProviderConfig

from fakes.mocks import mock, router_with






def test_seed_quickstart_works_unchanged_in_sync_form():
    router = Router(strategy="round-robin")
    for i in range(3):
        router.add_provider(MockProvider(ProviderConfig(name=f"provider-{i+1}", model="mock-normal")))
    assert router.route("What is Python?") == "Mock response to: What is Python?"
    router.close()


def test_round_robin_rotates_through_providers_in_order():
    router = router_with(mock("a"), mock("b"), mock("c"))
    answered = [router.complete("hi").provider for _ in range(7)]
    assert answered == ["a", "b", "c", "a", "b", "c", "a"]


def test_random_strategy_uses_every_provider_roughly_evenly():
    router = router_with(mock("a"), mock("b"), mock("c"), strategy="random")
    counts = Counter(router.complete("hi").provider for _ in range(600))
    assert set(counts) == {"a", "b", "c"}
    assert all(140 <= n <= 260 for n in counts.values()), counts


def test_first_available_skips_unhealthy_and_uses_cached_health():
    sick = mock("sick", "mock-unhealthy")
    well = mock("well")
    router = router_with(sick, well, mock("other"), strategy="first-available", health_ttl=60)
    checks = Counter()
    for provider in (sick, well):
        original = provider.health_check

        def counting(timeout=None, _original=original, _name=provider.name):
            checks[_name] += 1
            return _original(timeout)

        provider.health_check = counting
    answered = {router.complete("hi").provider for _ in range(20)}
    assert answered == {"well"}
    assert checks == {"sick": 1, "well": 1}  # cached: one check each for 20 calls


def test_first_available_with_no_healthy_provider_still_answers_in_order():
    router = router_with(mock("a", "mock-unhealthy"), mock("b", "mock-unhealthy"), strategy="first-available")
    assert router.complete("hi").provider == "a"


def test_unknown_strategy_lists_valid_ones():
    with pytest.raises(ConfigurationError) as info:
        Router(strategy="fastest")
    message = str(info.value)
    for name in ("round-robin", "random", "first-available", "best-available", "weighted", "least-busy"):
        assert name in message
    assert isinstance(info.value, ValueError)


def test_fallback_goes_round_in_circular_order_from_the_selected_provider():
    router = router_with(mock("a", "mock-unavailable"), mock("b", "mock-unavailable"), mock("c", "mock-unavailable"), mock("d"))
    router.complete("warm-up")  # a is selected first; the next call starts at b
    completion = router.complete("hi")
    assert [a.provider for a in completion.attempts] == ["b", "c", "d"]
    assert [a.outcome for a in completion.attempts] == ["error", "error", "ok"]
    assert completion.provider == "d"
    assert completion.attempts[0].error_type == "ProviderUnavailableError"


def test_fallback_wraps_around_to_providers_before_the_selected_one():
    router = router_with(mock("a"), mock("b", "mock-unavailable"), mock("c", "mock-ratelimit"))
    router.complete("warm-up")  # a
    completion = router.complete("hi")  # starts at b, then c, then wraps to a
    assert [a.provider for a in completion.attempts] == ["b", "c", "a"]


def test_all_fail_error_names_every_provider_and_chains_the_last_error():
    router = router_with(
        mock("p1", "mock-unavailable"), mock("p2", "mock-auth-error"), mock("p3", "mock-ratelimit"), breaker=False
    )
    with pytest.raises(AllProvidersFailedError) as info:
        router.route("hi")
    error = info.value
    assert [e.provider for e in error.errors] == ["p1", "p2", "p3"]
    assert [type(e) for e in error.errors] == [ProviderUnavailableError, AuthenticationError, RateLimitError]
    message = str(error)
    for fragment in ("p1", "ProviderUnavailableError", "p2", "AuthenticationError", "p3", "RateLimitError"):
        assert fragment in message
    assert error.__cause__ is error.errors[-1]
    assert isinstance(error, OrchestratorError)


def test_routing_with_no_providers_raises_a_clear_error():
    with pytest.raises(NoProvidersError, match="add_provider"):
        Router().route("hi")


def test_duplicate_names_are_refused_and_remove_provider_works():
    router = router_with(mock("a"), mock("b"))
    with pytest.raises(ConfigurationError, match="already registered"):
        router.add_provider(mock("a"))
    removed = router.remove_provider("a")
    assert removed.name == "a"
    assert [p.name for p in router.providers] == ["b"]
    assert {router.complete("x").provider for _ in range(3)} == {"b"}
    with pytest.raises(ConfigurationError, match="registered: b"):
        router.remove_provider("zzz")


def test_add_provider_rejects_non_providers():
    with pytest.raises(ConfigurationError, match="BaseProvider"):
        Router().add_provider("gigachat")


def test_messages_and_plain_prompts_are_both_accepted():
    router = router_with(mock("a"))
    messages = [Message("system", "Be brief"), {"role": "user", "content": "Tell me"}]
    assert router.route(messages) == "Mock response to: Tell me"
    assert router.route("Tell me") == "Mock response to: Tell me"


@pytest.mark.parametrize(
    "prompt, fragment",
    [
        ("", "empty"),
        ("   ", "empty"),
        ([], "empty"),
        (42, "got int"),
        (b"bytes", "got bytes"),
        ([{"role": "user"}], "content"),
        ([{"role": "wizard", "content": "x"}], "role must be one of"),
        ([Message("user", "")], "empty"),
    ],
)
def test_bad_prompts_get_a_configuration_error(prompt, fragment):
    router = router_with(mock("a"))
    with pytest.raises(ConfigurationError, match=fragment):
        router.route(prompt)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"temperature": -0.1}, r"temperature must be in \[0, 2\]"),
        ({"temperature": 2.5}, r"temperature must be in \[0, 2\]"),
        ({"temperature": "hot"}, "temperature must be a number"),
        ({"max_tokens": 0}, "max_tokens must be an integer > 0"),
        ({"max_tokens": 1.5}, "max_tokens must be an integer > 0"),
        ({"top_p": 0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.01}, r"top_p must be in \(0, 1\]"),
        ({"stop": [1]}, "stop must be a str or a list of str"),
    ],
)
def test_generation_params_are_validated_with_the_field_and_range(kwargs, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        GenerationParams(**kwargs)


def test_generation_params_accept_edges_and_reject_wrong_type_in_route():
    GenerationParams(temperature=0, max_tokens=1, top_p=1, stop="END")
    GenerationParams(temperature=2)
    with pytest.raises(ConfigurationError, match="GenerationParams"):
        router_with(mock("a")).route("hi", {"temperature": 1})


def test_provider_config_repr_and_serialised_form_hide_the_api_key():
    config = ProviderConfig(name="giga", model="GigaChat", api_key="SUPER-SECRET-KEY", extra={"access_token": "TOK-123"})
    for shown in (repr(config), str(config), json.dumps(config.to_dict()), config.to_json()):
        assert "SUPER-SECRET-KEY" not in shown
        assert "TOK-123" not in shown
    assert "api_key=<redacted>" in repr(config)
    assert "api_key" not in config.to_dict()
    assert ProviderConfig.from_dict({"name": "x", "api_key": "k"}).api_key == "k"


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"name": ""}, "name must be a non-empty str"),
        ({"name": "a", "timeout": 0}, "timeout"),
        ({"name": "a", "max_retries": -1}, "max_retries"),
        ({"name": "a", "base_url": "localhost:8000"}, "base_url"),
        ({"name": "a", "weight": -1}, "weight"),
        ({"name": "a", "extra": []}, "extra"),
    ],
)
def test_provider_config_is_validated(kwargs, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        ProviderConfig(**kwargs)


def test_unknown_mock_model_lists_the_modes():
    with pytest.raises(ConfigurationError, match="mock-normal"):
        mock("m", "mock-weird")


def test_completion_reports_usage_model_and_serialises():
    completion = router_with(mock("a")).complete("one two three")
    assert completion.model == "mock-normal"
    assert completion.usage.prompt_tokens == 3
    assert completion.usage.completion_tokens == len(completion.text.split())
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert completion.finish_reason == "stop"
    assert completion.latency_s >= 0
    restored = Completion.from_json(completion.to_json())
    assert restored == completion


def test_stream_yields_words_and_reports_usage():
    stream = router_with(mock("a")).route_stream("stream me")
    chunks = list(stream)
    assert len(chunks) > 3
    assert "".join(chunks) == "Mock response to: stream me"
    assert stream.text == "Mock response to: stream me"
    assert stream.provider == "a"
    assert stream.usage.completion_tokens == 5
    assert stream.finish_reason == "stop"


def test_stream_falls_back_before_the_first_chunk():
    router = router_with(mock("broken", "mock-unavailable"), mock("fine"))
    stream = router.route_stream("hello")
    assert "".join(stream) == "Mock response to: hello"
    assert stream.provider == "fine"
    assert [a.provider for a in stream.attempts] == ["broken", "fine"]


def test_stream_broken_after_the_first_chunk_raises_naming_the_provider_without_fallback():
    other = mock("other")
    router = router_with(mock("flaky", fail_after_chunks=2), other)
    stream = router.route_stream("hello there")
    received = []
    with pytest.raises(ProviderError) as info:
        for chunk in stream:
            received.append(chunk)
    assert received == ["Mock ", "response "]
    assert info.value.provider == "flaky"
    assert "flaky" in str(info.value)
    assert other.calls == 0
    stats = router.stats()
    assert stats["providers"]["flaky"]["failures"] == 1
    assert stats["failed"] == 1


def test_one_router_shared_by_32_threads_gives_exact_round_robin_shares():
    providers = [mock(f"p{i}") for i in range(3)]
    router = router_with(*providers)
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda i: router.complete(f"q{i}"), range(9000)))
    assert len(results) == 9000
    assert all(r.text == f"Mock response to: q{i}" for i, r in enumerate(results))
    assert Counter(r.provider for r in results) == {"p0": 3000, "p1": 3000, "p2": 3000}
    assert [p.calls for p in providers] == [3000, 3000, 3000]
    stats = router.stats()
    assert (stats["calls"], stats["succeeded"], stats["failed"]) == (9000, 9000, 0)
    assert all(stats["providers"][f"p{i}"]["successes"] == 3000 for i in range(3))
    assert all(stats["providers"][f"p{i}"]["in_flight"] == 0 for i in range(3))


def test_health_check_runs_in_parallel_and_reports_each_provider():
    router = router_with(
        *(mock(f"ok{i}", health_delay=0.4) for i in range(5)), mock("sick", "mock-unhealthy")
    )
    t0 = time.monotonic()
    health = router.health_check()
    elapsed = time.monotonic() - t0
    assert health == {"ok0": True, "ok1": True, "ok2": True, "ok3": True, "ok4": True, "sick": False}
    assert elapsed < 1.6  # sequential would be 2 s


def test_context_manager_closes_the_router_and_its_providers():
    provider = mock("a")
    with Router() as router:
        router.add_provider(provider)
        router.route("hi")
    assert provider._closed.is_set()
    with pytest.raises(OrchestratorError, match="closed"):
        router.route("hi")
    router.close()  # idempotent


def test_unexpected_exceptions_in_a_provider_become_provider_errors_and_fall_back():
    class Buggy(MockProvider):
        def complete(self, messages, params=None, *, timeout=None):
            raise KeyError("boom")

    router = router_with(Buggy(ProviderConfig(name="buggy", extra={"delay": 0})), mock("fine"))
    completion = router.complete("hi")
    assert completion.provider == "fine"
    assert completion.attempts[0].error_type == "ProviderError"
    assert "KeyError" in completion.attempts[0].error


def test_batch_keeps_input_order_and_returns_failures_in_place():
    router = router_with(mock("a"), breaker=False)
    prompts = [f"prompt {i}" for i in range(20)] + [""]
    seen = []
    results = router.batch(prompts, max_workers=4, progress=lambda done, total: seen.append((done, total)))
    assert [r.text for r in results[:20]] == [f"Mock response to: prompt {i}" for i in range(20)]
    assert isinstance(results[20], ConfigurationError)
    assert sorted(done for done, _ in seen) == list(range(1, 22))
    assert {total for _, total in seen} == {21}


def test_validated_messages_are_not_validated_again_but_plain_lists_are():
    from multi_llm_orchestrator.types import to_messages

    validated = to_messages("Hi")
    assert to_messages(validated) is validated
    with pytest.raises(ConfigurationError, match="empty"):
        to_messages([Message("user", " ")])  # a plain list is checked every time

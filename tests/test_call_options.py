"""Per-call keywords: GenerationParams fields, provider pinning and model= (call_options.py)."""

from __future__ import annotations

import re

import pytest

from multi_llm_orchestrator import AllProvidersFailedError, ConfigurationError, GenerationParams
from multi_llm_orchestrator.providers import ProviderConfig
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider

from fakes import FakeOpenAIServer
from fakes.mocks import mock, router_with

PARAM_NAMES = ("temperature", "max_tokens", "top_p", "stop", "extra", "tools", "tool_choice",
               "response_format", "reasoning_effort")


@pytest.fixture
def server():
    with FakeOpenAIServer(models=["fake-model", "fake-large"]) as running:
        yield running


def openai(server, name="oa", model="fake-model"):
    return OpenAICompatibleProvider(ProviderConfig(name=name, model=model, base_url=server.url, max_retries=0))


@pytest.mark.parametrize("settings", [{}, {"timeout": 5}, {"hedge_after": 5}])
def test_parameter_keywords_reach_the_wire_on_every_path(server, settings):
    # {}: the caller's thread; timeout/hedging: the Router's executor.
    with router_with(openai(server), **settings) as router:
        assert router.route("Hi", temperature=0.2, max_tokens=100, top_p=0.5, stop="END") == "Fake answer to: Hi"
        body = server.requests[-1].json
        assert (body["temperature"], body["max_tokens"], body["top_p"], body["stop"]) == (0.2, 100, 0.5, ["END"])
        assert "".join(router.route_stream("Hi", temperature=0.7)) == "Fake answer to: Hi"
        assert server.requests[-1].json["temperature"] == 0.7


def test_keywords_replace_the_fields_of_params_and_keep_the_others(server):
    with router_with(openai(server)) as router:
        router.complete("Hi", GenerationParams(temperature=1.0, max_tokens=5), temperature=0.1)
        body = server.requests[-1].json
        assert (body["temperature"], body["max_tokens"]) == (0.1, 5)


@pytest.mark.parametrize("keywords, message", [
    ({"temperature": 5}, "temperature must be in [0, 2]"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"top_p": 2}, "top_p"),
    ({"stop": 3}, "stop must be a str or a list of str"),
])
def test_parameter_keywords_are_validated_as_generation_params(keywords, message):
    with pytest.raises(ConfigurationError) as direct:
        GenerationParams(**keywords)
    with router_with(mock("a")) as router:
        for call in (router.route, router.complete, router.route_stream):
            with pytest.raises(ConfigurationError, match=re.escape(message)) as info:
                call("Hi", **keywords)
            assert str(info.value) == str(direct.value)
        assert router.stats()["calls"] == 0  # refused before any call started


def test_unknown_keyword_lists_the_valid_ones():
    with router_with(mock("a")) as router:
        for call in (router.route, router.complete, router.route_stream):
            with pytest.raises(ConfigurationError) as info:
                call("Hi", temprature=0.2, max_token=3)
            message = str(info.value)
            assert "'max_token', 'temprature'" in message
            for name in PARAM_NAMES + ("provider", "providers", "model", "timeout", "max_cost", "cache"):
                assert name in message.split("valid ones: ")[1]


def test_provider_pins_the_call_and_the_others_are_skipped():
    with router_with(mock("a"), mock("b"), mock("c")) as router:
        for _ in range(3):  # round-robin would move on: the pin holds
            completion = router.complete("Hi", provider="b")
            assert completion.provider == "b"
            skipped = [(a.provider, a.outcome, a.error, a.error_type) for a in completion.attempts if a.provider != "b"]
            assert skipped == [("a", "skipped", "pinned to b", "Pinned"), ("c", "skipped", "pinned to b", "Pinned")]
        stats = router.stats()["providers"]
        assert (stats["a"]["calls"], stats["b"]["calls"], stats["c"]["calls"]) == (0, 3, 0)
        stream = router.route_stream("Hi", provider="c")
        assert "".join(stream) == "Mock response to: Hi"
        assert stream.provider == "c"


def test_a_subset_keeps_fallback_within_it():
    with router_with(mock("down", "mock-unavailable"), mock("b"), mock("c")) as router:
        seen = []
        for _ in range(2):  # round-robin starts once at each of the two
            completion = router.complete("Hi", providers=["down", "c"])
            assert completion.provider == "c"
            seen.append({a.provider: a.outcome for a in completion.attempts})
        assert {"b": "skipped", "down": "error", "c": "ok"} in seen
        with pytest.raises(AllProvidersFailedError) as info:
            router.complete("Hi", provider="down")
        assert "down" in str(info.value) and "Mock service unavailable" in str(info.value)


def test_a_pinned_call_keeps_the_breaker():
    with router_with(mock("down", "mock-unavailable"), mock("b"),
                     breaker={"failure_threshold": 1, "cooldown": 60}, when_all_open="fail") as router:
        with pytest.raises(AllProvidersFailedError):
            router.complete("Hi", provider="down")
        with pytest.raises(AllProvidersFailedError, match="circuit is open"):
            router.complete("Hi", provider="down")
        assert router.stats()["providers"]["down"]["calls"] == 1  # the open circuit was not called
        assert router.complete("Hi").provider == "b"


def test_a_pinned_call_keeps_the_deadline():
    with router_with(mock("slow", delay=5), mock("fast"), timeout=0.2) as router:
        with pytest.raises(AllProvidersFailedError) as info:
            router.complete("Hi", provider="slow")
        assert type(info.value).__name__ == "DeadlineExceededError"
        assert [error.provider for error in info.value.errors] == ["slow"]


@pytest.mark.parametrize("keywords, message", [
    ({"provider": "nope"}, "No provider named 'nope'; registered: a, b"),
    ({"providers": ["a", "zz"]}, "No provider named 'zz'; registered: a, b"),
    ({"provider": "a", "providers": ["b"]}, "not both"),
    ({"provider": ["a"]}, "provider must be a provider's name"),
    ({"providers": "a"}, "providers must be a list"),
    ({"providers": []}, "non-empty list"),
    ({"model": "m"}, "pin the call to it too"),
    ({"providers": ["a", "b"], "model": "m"}, "pin the call to it too"),
    ({"provider": "a", "model": ""}, "model must be a non-empty str"),
    ({"provider": "a", "cache": True}, "cache=True cannot serve a call pinned"),
])
def test_bad_pins_are_configuration_errors(keywords, message):
    with router_with(mock("a"), mock("b")) as router:
        with pytest.raises(ConfigurationError, match=re.escape(message)):
            router.complete("Hi", **keywords)


def test_model_overrides_the_providers_model_for_one_call(server):
    provider = openai(server)
    with router_with(provider, openai(server, "other")) as router:
        completion = router.complete("Hi", provider="oa", model="fake-large")
        assert (completion.provider, completion.model) == ("oa", "fake-large")
        assert server.requests[-1].json["model"] == "fake-large"
        assert "".join(router.route_stream("Hi", provider="oa", model="fake-large")) == "Fake answer to: Hi"
        assert server.requests[-1].json["model"] == "fake-large"
        # The next call, and the provider itself, are unchanged.
        assert router.complete("Hi", provider="oa").model == "fake-model"
        assert server.requests[-1].json["model"] == "fake-model"
        assert provider.model == "fake-model"


def test_model_alone_on_a_single_provider_router(server):
    with router_with(openai(server), timeout=5) as router:  # on the executor: the override follows
        assert router.complete("Hi", model="fake-large").model == "fake-large"
        assert server.requests[-1].json["model"] == "fake-large"


def test_model_override_does_not_leak_to_concurrent_calls():
    # mock-unavailable fails: were the override shared, plain calls would fail too.
    with router_with(mock("a"), max_workers=8) as router:
        failing = [router.complete] * 5
        for call in failing:
            with pytest.raises(AllProvidersFailedError):
                call("y", model="mock-unavailable")
        results = router.batch(["x"] * 20)
        assert [r.text for r in results] == ["Mock response to: x"] * 20


def test_pinned_calls_bypass_the_response_cache():
    with router_with(mock("a"), mock("b"), cache=True, strategy="first-available") as router:
        assert router.complete("Hi").provider == "a"  # cached
        assert router.complete("Hi", provider="b").provider == "b"  # not a's cached answer
        assert router.complete("Hi").provider == "a"
        assert router.stats()["providers"]["a"]["calls"] == 1

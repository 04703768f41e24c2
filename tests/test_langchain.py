"""ChatRouter beyond LangChain's standard suite: what the Router adds (who answered, every
attempt, fallback), parameters reaching the provider, async on a worker thread, single
provider mode, retries, and bad input as typed errors."""

from __future__ import annotations

import asyncio
import threading

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from pydantic import ValidationError

from multi_llm_orchestrator import (
    AllProvidersFailedError,
    AuthenticationError,
    ConfigurationError,
    DeadlineExceededError,
    MockProvider,
    ProviderConfig,
)
from multi_llm_orchestrator.langchain import ChatRouter

from fakes.mocks import mock, router_with


class SpyProvider(MockProvider):
    """A mock that keeps the messages and params of each call and the thread it ran on."""

    def __init__(self, config):
        super().__init__(config)
        self.seen = []

    def complete(self, messages, params=None, *, timeout=None):
        self.seen.append((list(messages), params, timeout, threading.current_thread()))
        return super().complete(messages, params, timeout=timeout)

    def stream(self, messages, params=None, *, timeout=None):
        self.seen.append((list(messages), params, timeout, threading.current_thread()))
        return super().stream(messages, params, timeout=timeout)


def spy(name="spy", **extra):
    return SpyProvider(ProviderConfig(name=name, extra={"delay": 0, **extra}))


def test_invoke_says_who_answered_after_which_attempts_with_usage():
    chat = ChatRouter(router=router_with(mock("down", "mock-unavailable"), mock("up")))
    reply = chat.invoke("What is Python?")
    assert isinstance(reply, AIMessage) and reply.content == "Mock response to: What is Python?"
    metadata = reply.response_metadata
    assert metadata["provider"] == "up" and metadata["model_name"] == "mock-normal"
    assert metadata["finish_reason"] == "stop"
    assert [(a["provider"], a["outcome"]) for a in metadata["attempts"]] == [("down", "error"), ("up", "ok")]
    assert metadata["attempts"][0]["error_type"] == "ProviderUnavailableError"
    assert reply.usage_metadata == {"input_tokens": 3, "output_tokens": 6, "total_tokens": 9}


def test_messages_and_parameters_reach_the_provider():
    provider = spy()
    chat = ChatRouter(router=router_with(provider), temperature=0.3, max_tokens=64, top_p=0.5, timeout=20)
    chat.invoke([SystemMessage("be brief"), HumanMessage("hi"), AIMessage("hello"), HumanMessage("again")], stop=["\n"])
    messages, params, timeout, _ = provider.seen[-1]
    assert [(m.role, m.content) for m in messages] == [
        ("system", "be brief"), ("user", "hi"), ("assistant", "hello"), ("user", "again")
    ]
    assert (params.temperature, params.max_tokens, params.top_p, params.stop) == (0.3, 64, 0.5, ["\n"])
    assert 0 < timeout <= 20  # the Router's deadline: the time left of 20 s
    chat.bind(temperature=1.5, max_tokens=8).invoke("x")
    _, params, _, _ = provider.seen[-1]
    assert (params.temperature, params.max_tokens) == (1.5, 8)


def test_text_content_blocks_are_joined():
    provider = spy()
    ChatRouter(router=router_with(provider)).invoke([HumanMessage(content=[{"type": "text", "text": "a"}, "b"])])
    assert provider.seen[-1][0][0].content == "ab"


def test_stream_yields_text_chunks_then_usage_and_provider_on_the_last():
    tokens = []

    class Tokens(BaseCallbackHandler):
        def on_llm_new_token(self, token, **kwargs):
            tokens.append(token)

    chat = ChatRouter(router=router_with(mock("streamer")))
    chunks = list(chat.stream("tell me", config={"callbacks": [Tokens()]}))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert [c.content for c in chunks[:-1]] == ["Mock ", "response ", "to: ", "tell ", "me"] == tokens[:5]
    assert "".join(tokens) == "Mock response to: tell me"  # each chunk reported once
    last = chunks[-1]
    assert last.chunk_position == "last" and last.content == ""
    assert last.usage_metadata["output_tokens"] == 5
    assert last.response_metadata["provider"] == "streamer"
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    assert full.content == "Mock response to: tell me" and full.usage_metadata["input_tokens"] == 2


def test_a_stream_left_early_closes_the_provider_stream():
    router = router_with(mock("streamer"))
    chat = ChatRouter(router=router)
    stream = chat.stream("one two three four")
    next(stream)
    stream.close()
    assert router.stats()["succeeded"] == 1  # the Router call was settled, not left in flight
    assert router.stats()["providers"]["streamer"]["in_flight"] == 0


def test_invoke_with_streaming_true_streams_inside():
    provider = spy()
    reply = ChatRouter(router=router_with(provider), streaming=True).invoke("hi")
    assert reply.content == "Mock response to: hi" and reply.response_metadata["provider"] == "spy"


def test_batch_answers_each_prompt_in_order():
    replies = ChatRouter(router=router_with(mock("m"))).batch(["one", "two", "three"])
    assert [r.content for r in replies] == [f"Mock response to: {w}" for w in ("one", "two", "three")]


def test_ainvoke_and_astream_run_the_blocking_path_on_another_thread():
    provider = spy()
    chat = ChatRouter(router=router_with(provider))

    async def main():
        loop_thread = threading.current_thread()
        reply = await chat.ainvoke("hi")
        chunks = [chunk async for chunk in chat.astream("hi")]
        return loop_thread, reply, chunks

    loop_thread, reply, chunks = asyncio.run(main())
    assert reply.content == "Mock response to: hi"
    assert "".join(c.content for c in chunks) == "Mock response to: hi"
    assert [seen[3] for seen in provider.seen] and all(seen[3] is not loop_thread for seen in provider.seen)


def test_over_a_single_provider():
    provider = spy("solo")
    chat = ChatRouter(provider=provider, max_tokens=2)
    reply = chat.invoke("hi there")
    assert reply.content == "Mock response"  # max_tokens=2 words from the mock
    assert reply.response_metadata["provider"] == "solo" and reply.response_metadata["attempts"] == []
    assert "".join(c.content for c in chat.stream("hi")) == "Mock response to: hi"
    assert chat._get_ls_params()["ls_model_name"] == "mock-normal"


def test_a_router_built_from_a_config_dict():
    chat = ChatRouter(config={"providers": [{"type": "mock", "name": "from-dict", "extra": {"delay": 0}}]})
    assert chat.invoke("hi").response_metadata["provider"] == "from-dict"


def test_failures_are_the_routers_typed_errors():
    chat = ChatRouter(router=router_with(mock("a", "mock-auth-error"), mock("b", "mock-unavailable")))
    with pytest.raises(AllProvidersFailedError) as failure:
        chat.invoke("hi")
    assert [type(e).__name__ for e in failure.value.errors] == ["AuthenticationError", "ProviderUnavailableError"]
    with pytest.raises(DeadlineExceededError):
        ChatRouter(router=router_with(mock("slow", delay=5)), timeout=0.05).invoke("hi")


def test_max_retries_repeats_only_retryable_failures():
    flaky = mock("flaky", failure_rate=0.5, seed=3)  # fails, then answers (seeded)
    chat = ChatRouter(router=router_with(flaky, breaker=False), max_retries=3)
    assert chat.invoke("hi").content == "Mock response to: hi"
    assert flaky.calls >= 2
    denied = mock("denied", "mock-auth-error")
    with pytest.raises(AuthenticationError):
        ChatRouter(provider=denied, max_retries=3).invoke("hi")
    assert denied.calls == 1  # a bad key is not retried
    unavailable = mock("gone", "mock-unavailable")
    with pytest.raises(AllProvidersFailedError):
        ChatRouter(router=router_with(unavailable, breaker=False), max_retries=2).invoke("hi")
    assert unavailable.calls == 3


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({}, "MULTI_LLM_ORCHESTRATOR_CONFIG"),
        ({"router": "not a router"}, "must be a multi_llm_orchestrator Router"),
        ({"provider": object()}, "must be a BaseProvider"),
        ({"router": router_with(mock("m")), "provider": mock("p")}, "one of router, provider or config"),
        ({"router": router_with(mock("m")), "api_key": "sk-x"}, "api_key"),
        ({"router": router_with(mock("m")), "temperature": 3}, "temperature"),
        ({"router": router_with(mock("m")), "max_tokens": 0}, "max_tokens"),
        ({"router": router_with(mock("m")), "timeout": -1}, "timeout"),
        ({"router": router_with(mock("m")), "max_retries": -1}, "max_retries"),
    ],
)
def test_bad_construction_is_refused_with_what_to_do(arguments, message, monkeypatch):
    monkeypatch.delenv("MULTI_LLM_ORCHESTRATOR_CONFIG", raising=False)
    with pytest.raises((ValidationError, ConfigurationError), match=message):
        ChatRouter(**arguments)


@pytest.mark.parametrize(
    "prompt, keywords, message",
    [
        ([HumanMessage(content=[{"type": "image_url", "image_url": {"url": "data:..."}}])], {}, "'image_url' content block"),
        ([ToolMessage("42", tool_call_id="1")], {}, "ToolMessage"),
        ("hi", {"model": "other"}, "does not take model per call"),
        ("hi", {"temperature": 5}, "temperature"),
        ("hi", {"timeout": 0}, "timeout"),
        ([SystemMessage("   ")], {}, "empty"),
    ],
)
def test_bad_calls_are_configuration_errors(prompt, keywords, message):
    chat = ChatRouter(router=router_with(mock("m")))
    with pytest.raises(ConfigurationError, match=message):
        chat.invoke(prompt, **keywords)


def test_the_langchain_example_runs_on_mocks_without_keys():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(root / "examples" / "langchain_agent.py")], capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "MULTI_LLM_ORCHESTRATOR_CONFIG"},
    )
    assert result.returncode == 0, result.stderr
    assert "answered by steady after [('flaky', 'error'), ('steady', 'ok')]" in result.stdout
    assert "stream: Mock response to: Explain hedged requests" in result.stdout
    assert "ainvoke: Mock response to: Explain thread pools" in result.stdout

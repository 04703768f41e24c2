"""ChatRouter beyond LangChain's standard suite: what the Router adds (who answered, every
attempt, fallback), parameters reaching the provider, async on a worker thread, single
provider mode, retries, and bad input as typed errors."""

from __future__ import annotations

import asyncio
import threading

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, ChatMessage, HumanMessage, SystemMessage, ToolMessage
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
from fakes.scripted import ScriptedProvider


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
        ({"router": router_with(mock("m")), "provider": "absent"}, "provider='absent' names no provider"),
        ({"provider": "m", "config": {"providers": [{"type": "mock", "name": "n"}]}}, "registered: n"),
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
        ([ChatMessage(role="critic", content="x")], {}, "ChatMessage"),
        ("hi", {"api_key": "sk-x"}, "does not take api_key per call"),
        ("hi", {"provider": "absent"}, "No provider named 'absent'"),
        ("hi", {"provider": "m", "providers": ["m"]}, "not both"),
        ("hi", {"model": ""}, "non-empty"),
        ("hi", {"temperature": 5}, "temperature"),
        ("hi", {"timeout": 0}, "timeout"),
        ([SystemMessage("   ")], {}, "empty"),
    ],
)
def test_bad_calls_are_configuration_errors(prompt, keywords, message):
    chat = ChatRouter(router=router_with(mock("m")))
    with pytest.raises(ConfigurationError, match=message):
        chat.invoke(prompt, **keywords)


def two_models():
    """A Router whose first provider would answer unpinned calls, and a scripted one that
    reports whatever model it is asked to run as."""
    return router_with(mock("m"), ScriptedProvider(ProviderConfig(name="scripted")))


def test_a_call_pinned_per_call_runs_the_model_asked_for():
    chat = ChatRouter(router=two_models())
    reply = chat.invoke("Hi", provider="scripted", model="scripted-2")
    metadata = reply.response_metadata
    assert (metadata["provider"], metadata["model_name"]) == ("scripted", "scripted-2")
    assert [(a["provider"], a["outcome"]) for a in metadata["attempts"]] == [("m", "skipped"), ("scripted", "ok")]
    assert metadata["attempts"][0]["error"] == "pinned to scripted"
    chunks = list(chat.stream("Hi", provider="scripted", model="scripted-3"))
    assert "".join(c.content for c in chunks) == "Scripted answer to: Hi"
    assert chunks[-1].response_metadata["model_name"] == "scripted-3"
    # The override lasted one call: the provider's own model is back.
    assert chat.invoke("Hi", provider="scripted").response_metadata["model_name"] == "scripted-1"
    assert chat.bind(providers=["scripted"]).invoke("Hi").response_metadata["provider"] == "scripted"


def test_a_chat_router_pinned_at_construction_takes_model_per_call():
    router = two_models()
    chat = ChatRouter(router=router, provider="scripted")
    assert chat.model_name == "scripted-1" and chat._get_ls_params()["ls_model_name"] == "scripted-1"
    assert chat.invoke("Hi", model="scripted-2").response_metadata["model_name"] == "scripted-2"
    assert asyncio.run(chat.ainvoke("Hi", model="scripted-4")).response_metadata["model_name"] == "scripted-4"
    # A call that pins itself replaces the constructor's pin.
    assert chat.invoke("Hi", provider="m").response_metadata["provider"] == "m"
    assert chat.invoke("Hi").response_metadata["provider"] == "scripted"


def test_model_per_call_without_a_pin_over_several_providers_is_refused():
    chat = ChatRouter(router=two_models())
    with pytest.raises(ConfigurationError, match="pin the call to it too"):
        chat.invoke("Hi", model="scripted-2")
    with pytest.raises(ConfigurationError, match="pin the call to it too"):
        list(chat.stream("Hi", providers=["m", "scripted"], model="scripted-2"))
    # One provider in the Router: nothing to choose, the model applies to it.
    lone = ChatRouter(router=router_with(ScriptedProvider(ProviderConfig(name="scripted"))))
    assert lone.invoke("Hi", model="scripted-2").response_metadata["model_name"] == "scripted-2"


def test_model_per_call_over_a_single_provider():
    provider = ScriptedProvider(ProviderConfig(name="solo"))
    chat = ChatRouter(provider=provider)
    assert chat.invoke("Hi", model="scripted-2").response_metadata["model_name"] == "scripted-2"
    chunks = list(chat.stream("Hi", provider="solo", model="scripted-3"))
    assert chunks[-1].response_metadata["model_name"] == "scripted-3"
    assert provider.model == "scripted-1"
    with pytest.raises(ConfigurationError, match="No provider named 'other'; registered: solo"):
        chat.invoke("Hi", provider="other", model="x")


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
    assert "tool call: get_weather({'city': 'Kazan'}) by agent" in result.stdout
    assert "answer: Mock answer from tool results: get_weather: sunny, 21 C in Kazan" in result.stdout
    assert "structured: CityFacts(" in result.stdout


# Embeddings -------------------------------------------------------------------------------


class EmbedSpy(MockProvider):
    def __init__(self, config):
        super().__init__(config)
        self.batches = []

    def embed(self, texts, *, purpose=None, timeout=None):
        self.batches.append((list(texts), purpose))
        return super().embed(texts, purpose=purpose, timeout=timeout)


def test_embeddings_go_through_router_embed_with_the_purpose():
    from multi_llm_orchestrator.langchain import RouterEmbeddings
    from multi_llm_orchestrator.providers.mock import mock_vector

    provider = EmbedSpy(ProviderConfig(name="vectors", extra={"delay": 0}))
    embeddings = RouterEmbeddings(router=router_with(provider))
    assert embeddings.embed_documents(["first text", "second"]) == [mock_vector("first text", 16), mock_vector("second", 16)]
    assert embeddings.embed_query("a question") == mock_vector("a question", 16)
    assert embeddings.embed_documents([]) == []
    assert provider.batches == [(["first text", "second"], "document"), (["a question"], "query")]
    assert asyncio.run(embeddings.aembed_query("async")) == mock_vector("async", 16)


def test_embeddings_keep_to_the_space_asked_for_and_fail_with_typed_errors():
    from multi_llm_orchestrator.langchain import RouterEmbeddings

    router = router_with(mock("a", embedding_space="space-a"), mock("b", "mock-unavailable", embedding_space="space-b"))
    assert len(RouterEmbeddings(router=router, space="space-a").embed_query("hi")) == 16
    with pytest.raises(AllProvidersFailedError):
        RouterEmbeddings(router=router, space="space-b").embed_query("hi")
    with pytest.raises(ConfigurationError, match="space"):
        RouterEmbeddings(router=router).embed_query("hi")  # two spaces: which one?


def test_embeddings_over_one_provider_and_bad_construction():
    from multi_llm_orchestrator.langchain import RouterEmbeddings

    provider = EmbedSpy(ProviderConfig(name="solo", extra={"delay": 0}))
    assert len(RouterEmbeddings(provider=provider).embed_documents(["x", "y"])) == 2
    with pytest.raises((ValidationError, ConfigurationError), match="single provider"):
        RouterEmbeddings(provider=provider, space="other")
    with pytest.raises((ValidationError, ConfigurationError), match="one of router, provider or config"):
        RouterEmbeddings(provider=provider, router=router_with(mock("m")))



# Tools and structured output --------------------------------------------------------------


class ScriptedSpy(ScriptedProvider):
    def complete(self, messages, params=None, *, timeout=None):
        self.seen = (list(messages), params)
        return super().complete(messages, params, timeout=timeout)


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_bind_tools_gives_tool_calls_from_the_provider_that_can_call_tools():
    scripted = ScriptedSpy(ProviderConfig(name="tools"))
    chat = ChatRouter(router=router_with(mock("text-only"), scripted))
    reply = chat.bind_tools([add], tool_choice="any").invoke("What is 1 + 2?")
    assert reply.tool_calls == [{"name": "add", "args": {"a": 1, "b": 2}, "id": reply.tool_calls[0]["id"], "type": "tool_call"}]
    _, params = scripted.seen
    assert [t.name for t in params.tools] == ["add"] and params.tool_choice == "required"
    attempts = reply.response_metadata["attempts"]
    assert [(a["provider"], a["outcome"]) for a in attempts] == [("text-only", "skipped"), ("tools", "ok")]
    assert "tools" in attempts[0]["error"]  # the skip says which capability was missing


def test_a_tool_call_streams_as_a_tool_call_chunk_on_the_last_chunk():
    chat = ChatRouter(router=router_with(ScriptedProvider(ProviderConfig(name="tools"))))
    chunks = list(chat.bind_tools([add], tool_choice="add").stream("add(3, 4)"))
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    assert [(c["name"], c["args"]) for c in full.tool_calls] == [("add", {"a": 3, "b": 4})]


@pytest.mark.parametrize("choice, expected", [
    ("any", "required"), (True, "required"), ("auto", "auto"), ("none", "none"), ("add", "add"),
    ({"type": "function", "function": {"name": "add"}}, "add"), (None, None),
])
def test_tool_choice_values_map_to_the_routers(choice, expected):
    scripted = ScriptedSpy(ProviderConfig(name="tools"))
    ChatRouter(router=router_with(scripted)).bind_tools([add], tool_choice=choice).invoke("What is 1 + 2?")
    assert scripted.seen[1].tool_choice == expected


def test_a_tool_round_trip_sends_the_call_and_its_result_back():
    scripted = ScriptedSpy(ProviderConfig(name="tools"))
    chat = ChatRouter(router=router_with(scripted)).bind_tools([add])
    question = HumanMessage("What is 1 + 2?")
    call = chat.invoke([question])
    result = ToolMessage("3", tool_call_id=call.tool_calls[0]["id"], name="add")
    answer = chat.invoke([question, call, result])
    assert answer.content == "The tool add returned 3" and answer.tool_calls == []
    sent, _ = scripted.seen
    assert sent[1].role == "assistant" and sent[1].tool_calls[0].arguments == {"a": 1, "b": 2}
    assert (sent[2].role, sent[2].content, sent[2].tool_call_id, sent[2].name) == ("tool", "3", call.tool_calls[0]["id"], "add")


def test_bad_tools_and_choices_are_refused():
    chat = ChatRouter(router=router_with(ScriptedProvider(ProviderConfig(name="tools"))))
    with pytest.raises(ConfigurationError, match="tool_choice"):
        chat.bind_tools([add], tool_choice="subtract").invoke("hi")
    with pytest.raises(ConfigurationError, match="share the name add"):
        chat.bind_tools([add, add]).invoke("hi")
    with pytest.raises(ConfigurationError, match="tool_choice dict"):
        chat.bind_tools([add], tool_choice={"type": "function"})
    with pytest.raises(ConfigurationError, match="method"):
        chat.with_structured_output({"type": "object"}, method="xml")


def test_tool_calls_need_a_capable_provider():
    from multi_llm_orchestrator.errors import CapabilityError

    with pytest.raises(CapabilityError, match="tools"):
        ChatRouter(router=router_with(mock("text-only"))).bind_tools([add]).invoke("hi")


class Joke(__import__("pydantic").BaseModel):
    setup: str
    punchline: str


@pytest.mark.parametrize("method, response_format", [
    ("json_schema", "schema"), ("json_mode", "json"), ("function_calling", None),
])
def test_with_structured_output_by_each_method(method, response_format):
    scripted = ScriptedSpy(ProviderConfig(name="tools"))
    chat = ChatRouter(router=router_with(scripted))
    joke = chat.with_structured_output(Joke, method=method).invoke("Tell a joke with 'setup' and 'punchline'")
    assert isinstance(joke, Joke)
    params = scripted.seen[1]
    if response_format == "schema":
        assert params.response_format["required"] == ["setup", "punchline"]
    else:
        assert params.response_format == response_format
    if method == "function_calling":
        assert params.tool_choice == "required" and [t.name for t in params.tools] == ["Joke"]


def test_structured_output_with_raw_keeps_the_message_and_the_parsing_error():
    chat = ChatRouter(router=router_with(ScriptedProvider(ProviderConfig(name="tools"))))
    result = chat.with_structured_output(Joke, include_raw=True).invoke("Tell a joke")
    assert isinstance(result["parsed"], Joke) and result["parsing_error"] is None
    assert isinstance(result["raw"], AIMessage) and result["raw"].response_metadata["provider"] == "tools"
    bad = ChatRouter(router=router_with(ScriptedProvider(ProviderConfig(name="tools"))))
    schema = {"title": "Count", "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    parsed = bad.with_structured_output(Joke, method="json_mode", include_raw=True).invoke("Give 'n'")
    assert parsed["parsed"] is None and parsed["parsing_error"] is not None  # {"n": ...} is not a Joke
    assert bad.with_structured_output(schema).invoke("count")["n"] == 1


def test_reasoning_effort_reaches_the_provider_and_its_thinking_stays_out_of_the_text():
    thinker = mock("thinker", "mock-tools")
    chat = ChatRouter(router=router_with(thinker), reasoning_effort="high")
    reply = chat.invoke("Why is the sky blue?")
    assert reply.additional_kwargs["reasoning_content"]
    assert reply.additional_kwargs["reasoning_content"] not in reply.content
    chunks = list(chat.stream("Why is the sky blue?"))
    thinking = "".join(c.additional_kwargs.get("reasoning_content", "") for c in chunks)
    text = "".join(c.content for c in chunks)
    assert thinking.strip() == reply.additional_kwargs["reasoning_content"].strip() and text == reply.content
    with pytest.raises(ConfigurationError, match="reasoning_effort"):
        chat.invoke("hi", reasoning_effort="enormous")

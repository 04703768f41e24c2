"""Tools, structured output and reasoning on each provider's wire (``responses``): the
request body, the answer (whole and streamed), tool results sent back, and the Router
falling back between providers by capability and on malformed answers."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import responses

from multi_llm_orchestrator import (
    AllProvidersFailedError,
    ConfigurationError,
    GenerationParams,
    InvalidRequestError,
    Message,
    MockProvider,
    ProviderConfig,
    ResponseFormatError,
    Router,
    Tool,
    ToolCall,
    Usage,
)
from multi_llm_orchestrator.providers.gigachat import GigaChatProvider
from multi_llm_orchestrator.providers.ollama import OllamaProvider
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider, is_reasoning_model
from multi_llm_orchestrator.providers.yandexgpt import YandexGPTProvider

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "gigachat"


def get_weather(city: str, num_days: int = 1) -> str:
    """Weather forecast for a city.

    Args:
        city: the city name
        num_days: how many days ahead
    """
    return f"sunny in {city}"


def get_time(city: str) -> str:
    """Local time in a city."""
    return "12:00"


TOOLS = GenerationParams(tools=[get_weather, get_time])
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}, "n": {"type": "integer"}},
          "required": ["answer", "n"], "additionalProperties": False}


@pytest.fixture
def wire():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def sent(call) -> dict:
    return json.loads(call.request.body)


def sse(*events) -> str:
    return "".join(f"data: {json.dumps(e, ensure_ascii=False)}\n\n" for e in events) + "data: [DONE]\n\n"


# GigaChat ---------------------------------------------------------------------------------

GIGA_API = "https://gigachat.devices.sberbank.ru/api/v1"
GIGA_CHAT = GIGA_API + "/chat/completions"
GIGA_OAUTH = "https://ngw.devices.sberbank.ru:9443/api/v2/oauth"
STATE_ID = "0199e210-2f13-744c-8fe5-c9a19fe27db7"


def giga(wire, **extra) -> GigaChatProvider:
    wire.post(GIGA_OAUTH, json={"access_token": "tok-1", "expires_at": 4102444800000})
    key = base64.b64encode(b"id:secret").decode()
    return GigaChatProvider(ProviderConfig(name="giga", api_key=key, max_retries=0, extra=extra))


def giga_answer(message: dict, finish: str = "stop", usage: dict = None) -> dict:
    return {"choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", **message}}],
            "created": 1760434335, "model": "GigaChat-2-Pro:2.0.28.2", "object": "chat.completion",
            "usage": usage or {"prompt_tokens": 278, "completion_tokens": 35, "total_tokens": 313,
                               "precached_prompt_tokens": 256}}


def test_gigachat_tool_call_answer_from_the_recorded_fixture(wire):
    provider = giga(wire)
    wire.post(GIGA_CHAT, body=(FIXTURES / "chat_completion_function.json").read_bytes(),
              content_type="application/json")
    recorded = json.loads((FIXTURES / "chat_function.json").read_text())["functions"][0]
    completion = provider.complete("Какая погода в Москве сегодня?", GenerationParams(tools=[recorded]))
    assert completion.tool_calls[0].name == "fc"
    assert completion.tool_calls[0].arguments == {"location": "Москва", "num_days": 0}
    assert completion.finish_reason == "tool_calls" and completion.text == ""
    body = sent(wire.calls[1])
    assert body["functions"] == [{"name": "fc", "description": recorded["description"],
                                  "parameters": recorded["parameters"]}]
    assert body["function_call"] == "auto"  # tools without tool_choice: the model may call them


@pytest.mark.parametrize("choice, tools, wire_choice", [
    ("none", [get_weather], "none"),
    ("get_time", [get_weather, get_time], {"name": "get_time"}),
    ("required", [get_weather], {"name": "get_weather"}),
    ("required", [get_weather, get_time], "auto"),  # GigaChat cannot force one of several
])
def test_gigachat_tool_choice(wire, choice, tools, wire_choice):
    provider = giga(wire)
    wire.post(GIGA_CHAT, json=giga_answer({"content": "ok"}))
    provider.complete("hi", GenerationParams(tools=tools, tool_choice=choice))
    assert sent(wire.calls[1])["function_call"] == wire_choice


def test_gigachat_tool_result_round_trip_keeps_the_state_id(wire):
    provider = giga(wire)
    call_answer = giga_answer({"content": "", "function_call": {"name": "get_weather",
                                                                 "arguments": {"city": "Kazan", "num_days": 3}},
                               "functions_state_id": STATE_ID}, finish="function_call")
    wire.post(GIGA_CHAT, json=call_answer)
    first = provider.complete("Weather in Kazan for 3 days?", TOOLS)
    assert first.tool_calls == [ToolCall(STATE_ID, "get_weather", {"city": "Kazan", "num_days": 3})]
    assert first.usage.cached_prompt_tokens == 256
    wire.replace(responses.POST, GIGA_CHAT, json=giga_answer({"content": "Sunny, +21"}))
    history = [Message("user", "Weather in Kazan for 3 days?"), first.message,
               Message.tool_result(first.tool_calls[0], {"temperature": 21})]
    second = provider.complete(history, TOOLS)
    assert second.text == "Sunny, +21" and second.finish_reason == "stop"
    messages = sent(wire.calls[2])["messages"]
    assert messages[1] == {"role": "assistant", "content": "", "functions_state_id": STATE_ID,
                           "function_call": {"name": "get_weather", "arguments": {"city": "Kazan", "num_days": 3}}}
    assert messages[2] == {"role": "function", "name": "get_weather", "content": '{"temperature": 21}'}


def test_gigachat_replays_parallel_calls_as_pairs_and_wraps_non_object_results(wire):
    provider = giga(wire)
    wire.post(GIGA_CHAT, json=giga_answer({"content": "Paris 18, Rome 21"}))
    history = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": "call_2", "content": "21C"},  # answered out of order
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]
    provider.complete(history, TOOLS)
    messages = sent(wire.calls[1])["messages"]
    assert [(m["role"], m.get("function_call", {}).get("arguments") or m.get("content")) for m in messages] == [
        ("user", "Weather in Paris and Rome?"),
        ("assistant", {"city": "Paris"}), ("function", '{"result": "18C"}'),
        ("assistant", {"city": "Rome"}), ("function", '{"result": "21C"}'),
    ]
    assert all("functions_state_id" not in m for m in messages)  # OpenAI ids are not GigaChat state ids


def test_gigachat_stream_assembles_the_function_call_and_keeps_reasoning_apart(wire):
    provider = giga(wire)
    events = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "User wants weather. "}}]},
        {"choices": [{"index": 0, "delta": {"reasoning_content": "Call the function."}}]},
        {"choices": [{"index": 0, "finish_reason": "function_call", "delta": {
            "content": "", "functions_state_id": STATE_ID,
            "function_call": {"name": "get_weather", "arguments": {"city": "Kazan"}}}}],
         "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}},
    ]
    wire.post(GIGA_CHAT, body=sse(*events), content_type="text/event-stream")
    stream = provider.stream("Weather in Kazan?", TOOLS)
    assert list(stream) == []
    assert stream.tool_calls == [ToolCall(STATE_ID, "get_weather", {"city": "Kazan"})]
    assert stream.finish_reason == "tool_calls"
    assert stream.reasoning == "User wants weather. Call the function."


def test_gigachat_structured_output_and_reasoning_effort(wire):
    provider = giga(wire)
    # As recorded: pretty-printed JSON, and "chat.completions" (plural) as the object.
    recorded = giga_answer({"content": '{\n    "answer": "ok",\n    "n": 3\n}'})
    recorded["object"] = "chat.completions"
    wire.post(GIGA_CHAT, json=recorded)
    router = Router()
    router.add_provider(provider)
    completion = router.complete("Answer", GenerationParams(response_format=SCHEMA, reasoning_effort="xhigh"))
    assert completion.json() == {"answer": "ok", "n": 3}
    body = sent(wire.calls[1])
    assert body["response_format"] == {"type": "json_schema", "schema": SCHEMA}
    assert body["reasoning_effort"] == "high"
    wire.post(GIGA_CHAT, json=giga_answer({"content": "{}"}))
    provider.complete("x", GenerationParams(response_format="json", reasoning_effort="none"))
    body = sent(wire.calls[-1])
    assert body["response_format"] == {"type": "json_schema", "schema": {"type": "object"}}  # no JSON-object mode
    assert "reasoning_effort" not in body


def test_gigachat_session_request_and_client_id_headers(wire):
    provider = giga(wire, session_id="sess-1", client_id="app-7")
    wire.post(GIGA_CHAT, json=giga_answer({"content": "ok"}))
    provider.complete("hi")
    headers = wire.calls[1].request.headers
    assert (headers["X-Session-ID"], headers["X-Client-ID"]) == ("sess-1", "app-7")
    assert "X-Request-ID" not in headers
    provider.complete("hi", GenerationParams(extra={"session_id": "sess-2", "request_id": "req-9", "profanity_check": False}))
    call = wire.calls[2]
    assert (call.request.headers["X-Session-ID"], call.request.headers["X-Request-ID"]) == ("sess-2", "req-9")
    assert call.request.headers["X-Client-ID"] == "app-7"
    assert sent(call) == {"model": "GigaChat", "messages": [{"role": "user", "content": "hi"}], "profanity_check": False}
    wire.post(GIGA_CHAT, body=sse({"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}),
              content_type="text/event-stream")
    list(provider.stream("hi", GenerationParams(extra={"request_id": "req-10"})))
    assert wire.calls[-1].request.headers["X-Request-ID"] == "req-10"
    with pytest.raises(ConfigurationError, match="X-Session-ID"):
        giga(wire, session_id="bad\nvalue")


def test_gigachat_bad_arguments_and_unknown_builtin_function(wire):
    provider = giga(wire)
    broken = giga_answer({"content": "", "function_call": {"name": "get_weather", "arguments": "{city: Kazan"}},
                         finish="function_call")
    wire.post(GIGA_CHAT, json=broken)
    with pytest.raises(ResponseFormatError, match="get_weather.*not valid JSON"):
        provider.complete("Weather?", TOOLS)
    # The built-in trap: the model calls text2image, which the caller never offered.
    wire.replace(responses.POST, GIGA_CHAT, json=giga_answer(
        {"content": "", "function_call": {"name": "text2image", "arguments": {"query": "cat"}}}, finish="function_call"))
    router = Router()
    router.add_provider(provider)
    with pytest.raises(AllProvidersFailedError) as caught:
        router.complete("Weather?", TOOLS)
    assert "text2image" in caught.value.errors[0].message


# YandexGPT --------------------------------------------------------------------------------

YANDEX = "https://llm.api.cloud.yandex.net/foundationModels/v1/completion"


def yandex() -> YandexGPTProvider:
    return YandexGPTProvider(ProviderConfig(name="yandex", api_key="t1.iam", folder_id="b1gfolder", max_retries=0))


def yandex_answer(message: dict, status: str = "ALTERNATIVE_STATUS_FINAL", reasoning: str = "0") -> dict:
    return {"result": {"alternatives": [{"message": {"role": "assistant", **message}, "status": status}],
                       "usage": {"inputTextTokens": "74", "completionTokens": "14", "totalTokens": "88",
                                 "completionTokensDetails": {"reasoningTokens": reasoning}},
                       "modelVersion": "23.10.2024"}}


def yandex_calls(*calls) -> dict:
    return {"toolCallList": {"toolCalls": [{"functionCall": {"name": n, "arguments": a}} for n, a in calls]}}


def test_yandex_parallel_tool_calls_with_integer_arguments(wire):
    wire.post(YANDEX, json=yandex_answer(
        yandex_calls(("get_weather", {"city": "Saint Petersburg", "num_days": 3.0}), ("get_time", {"city": "Omsk"})),
        status="ALTERNATIVE_STATUS_TOOL_CALLS", reasoning="12"))
    completion = yandex().complete("Weather in Saint Petersburg, time in Omsk?",
                                   GenerationParams(tools=[get_weather, get_time], tool_choice="auto"))
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [
        ("get_weather", {"city": "Saint Petersburg", "num_days": 3}), ("get_time", {"city": "Omsk"})]
    assert isinstance(completion.tool_calls[0].arguments["num_days"], int)  # protobuf doubles made ints
    assert len({c.id for c in completion.tool_calls}) == 2  # Yandex sends no ids: unique ones made up
    assert completion.finish_reason == "tool_calls" and completion.usage.reasoning_tokens == 12
    body = sent(wire.calls[0])
    assert body["tools"][0] == {"function": {"name": "get_weather", "description": "Weather forecast for a city.",
                                             "parameters": Tool.from_function(get_weather).parameters}}
    assert "type" not in body["tools"][0]
    assert body["toolChoice"] == {"mode": "AUTO"}


@pytest.mark.parametrize("choice, wire_choice", [
    ("none", {"mode": "NONE"}), ("required", {"mode": "REQUIRED"}), ("get_time", {"functionName": "get_time"})])
def test_yandex_tool_choice(wire, choice, wire_choice):
    wire.post(YANDEX, json=yandex_answer({"text": "ok"}))
    yandex().complete("x", GenerationParams(tools=[get_weather, get_time], tool_choice=choice))
    assert sent(wire.calls[0])["toolChoice"] == wire_choice


def test_yandex_tool_result_round_trip(wire):
    wire.post(YANDEX, json=yandex_answer({"text": "8°C in both"}))
    first = [ToolCall("c1", "get_weather", {"city": "Paris"}), ToolCall("c2", "get_weather", {"city": "Rome"})]
    history = [Message("system", "Be brief"), Message("user", "Paris and Rome?"), Message("assistant", "", first),
               Message("tool", "8°C", tool_call_id="c1"),  # no name: found from the call it answers
               Message.tool_result(first[1], "8°C")]
    completion = yandex().complete(history, TOOLS)
    assert completion.text == "8°C in both" and completion.tool_calls == []
    messages = sent(wire.calls[0])["messages"]
    assert messages[2] == {"role": "assistant", "toolCallList": {"toolCalls": [
        {"functionCall": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"functionCall": {"name": "get_weather", "arguments": {"city": "Rome"}}}]}}
    assert messages[3] == {"role": "user", "toolResultList": {"toolResults": [
        {"functionResult": {"name": "get_weather", "content": "8°C"}},
        {"functionResult": {"name": "get_weather", "content": "8°C"}}]}}
    assert len(messages) == 4


def test_yandex_stream_takes_the_tool_calls_of_the_final_frame(wire):
    frames = [yandex_answer({"text": ""}, status="ALTERNATIVE_STATUS_PARTIAL"),
              yandex_answer(yandex_calls(("get_weather", {"city": "Kazan"})), status="ALTERNATIVE_STATUS_TOOL_CALLS")]
    wire.post(YANDEX, body="".join(json.dumps(f) + "\n" for f in frames))
    stream = yandex().stream("Weather?", TOOLS)
    assert list(stream) == []
    assert [(c.name, c.arguments) for c in stream.tool_calls] == [("get_weather", {"city": "Kazan"})]
    assert stream.finish_reason == "tool_calls"


def test_yandex_structured_output_and_reasoning_options(wire):
    wire.post(YANDEX, json=yandex_answer({"text": '{"answer": "ok", "n": 2}'}))
    provider = yandex()
    router = Router()
    router.add_provider(provider)
    assert router.complete("x", GenerationParams(response_format=SCHEMA, reasoning_effort="high")).json()["n"] == 2
    body = sent(wire.calls[0])
    assert body["jsonSchema"] == {"schema": SCHEMA} and "jsonObject" not in body
    assert body["completionOptions"]["reasoningOptions"] == {"mode": "ENABLED_HIDDEN"}
    provider.complete("x", GenerationParams(response_format="json", reasoning_effort="none"))
    body = sent(wire.calls[1])
    assert body["jsonObject"] is True and body["completionOptions"]["reasoningOptions"] == {"mode": "DISABLED"}


def test_yandex_bad_arguments_and_nameless_results(wire):
    wire.post(YANDEX, json=yandex_answer(yandex_calls(("get_weather", "not json")),
                                         status="ALTERNATIVE_STATUS_TOOL_CALLS"))
    with pytest.raises(ResponseFormatError, match="not valid JSON"):
        yandex().complete("x", TOOLS)
    with pytest.raises(ConfigurationError, match="matches tool results by function name"):
        yandex().complete([Message("user", "x"), Message("tool", "8°C", tool_call_id="unknown")], TOOLS)


# Ollama -------------------------------------------------------------------------------------

OLLAMA = "http://localhost:11434/api/chat"


def ollama(**fields) -> OllamaProvider:
    return OllamaProvider(ProviderConfig(name="local", model="qwen3", max_retries=0, **fields))


def ollama_answer(message: dict, done_reason: str = "stop") -> dict:
    return {"model": "qwen3", "created_at": "2025-07-07T20:22:19Z", "done": True, "done_reason": done_reason,
            "message": {"role": "assistant", "content": "", **message}, "prompt_eval_count": 30, "eval_count": 12}


def test_ollama_parallel_tool_calls_and_thinking(wire):
    wire.post(OLLAMA, json=ollama_answer({"thinking": "Two cities.", "tool_calls": [
        {"id": "call_ab12cd34", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "New York"}}},
        {"function": {"index": 1, "name": "get_time", "arguments": {"city": "Paris"}}},  # older builds: no id
    ]}))
    completion = ollama().complete("Weather in New York, time in Paris?",
                                   GenerationParams(tools=[get_weather, get_time], reasoning_effort="high"))
    assert completion.finish_reason == "tool_calls"  # Ollama says "stop"
    assert completion.tool_calls[0] == ToolCall("call_ab12cd34", "get_weather", {"city": "New York"})
    assert completion.tool_calls[1].name == "get_time" and completion.tool_calls[1].id.startswith("call_")
    assert completion.reasoning == "Two cities."
    body = sent(wire.calls[0])
    assert body["tools"] == [Tool.from_function(get_weather).to_openai(), Tool.from_function(get_time).to_openai()]
    assert body["think"] == "high" and "options" not in body


def test_ollama_tool_result_round_trip(wire):
    wire.post(OLLAMA, json=ollama_answer({"content": "22°C"}))
    call = ToolCall("call_1", "get_weather", {"city": "New York"})
    ollama().complete([Message("user", "Weather?"), Message("assistant", "", [call]),
                       Message.tool_result(call, "22°C")], TOOLS)
    messages = sent(wire.calls[0])["messages"]
    assert messages[1] == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "New York"}}}]}
    assert messages[2] == {"role": "tool", "content": "22°C", "tool_name": "get_weather", "tool_call_id": "call_1"}


def test_ollama_stream_gathers_whole_calls_across_chunks_and_thinking_apart(wire):
    def chunk(message, done=False):
        event = {"model": "qwen3", "created_at": "2025-07-07T20:22:19Z",
                 "message": {"role": "assistant", "content": "", **message}, "done": done}
        if done:
            event.update(done_reason="stop", prompt_eval_count=5, eval_count=9)
        return event

    chunks = [chunk({"thinking": "Let me "}), chunk({"thinking": "check."}),
              chunk({"tool_calls": [{"function": {"index": 0, "name": "get_weather", "arguments": {"city": "Oslo"}}}]}),
              chunk({"tool_calls": [{"function": {"index": 1, "name": "get_time", "arguments": {"city": "Oslo"}}}]}),
              chunk({}, done=True)]
    wire.post(OLLAMA, body="".join(json.dumps(c) + "\n" for c in chunks))
    stream = ollama().stream("Oslo?", TOOLS)
    events = list(stream.events())
    assert events == ["Let me ", "check."] and stream.text == ""
    assert [c.name for c in stream.tool_calls] == ["get_weather", "get_time"]
    assert stream.finish_reason == "tool_calls" and stream.reasoning == "Let me check."


def test_ollama_format_think_and_top_level_fields_stay_top_level(wire):
    wire.post(OLLAMA, json=ollama_answer({"content": '{"answer": "ok", "n": 1}'}))
    provider = ollama(extra={"options": {"num_ctx": 8192}})
    provider.complete("x", GenerationParams(
        response_format=SCHEMA, reasoning_effort="none", temperature=0.2,
        extra={"truncate": False, "shift": False, "logprobs": True, "top_logprobs": 3, "seed": 7}))
    body = sent(wire.calls[0])
    assert body["format"] == SCHEMA and body["think"] is False
    assert (body["truncate"], body["shift"], body["logprobs"], body["top_logprobs"]) == (False, False, True, 3)
    assert body["options"] == {"num_ctx": 8192, "temperature": 0.2, "seed": 7}
    provider.complete("x", GenerationParams(response_format="json", tools=[get_weather], tool_choice="none"))
    body = sent(wire.calls[1])
    assert body["format"] == "json" and "tools" not in body  # no tool_choice in Ollama: "none" sends no tools


def test_ollama_arguments_that_are_not_an_object(wire):
    wire.post(OLLAMA, json=ollama_answer({"tool_calls": [{"function": {"name": "get_weather", "arguments": [1, 2]}}]}))
    with pytest.raises(ResponseFormatError, match="get_weather.*not an object"):
        ollama().complete("x", TOOLS)


# OpenAI-compatible --------------------------------------------------------------------------

OPENAI = "https://api.openai.com/v1/chat/completions"


def openai(model="gpt-4.1-mini", **fields) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(ProviderConfig(name="oai", model=model, base_url="https://api.openai.com/v1",
                                                   api_key="sk-test-not-real", max_retries=0, **fields))


def openai_answer(message: dict, finish: str = "stop", usage: dict = None) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4.1-mini-2025-04-14",
            "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", **message}}],
            "usage": usage or {"prompt_tokens": 100, "completion_tokens": 14, "total_tokens": 114}}


def test_openai_parallel_tool_calls_with_string_arguments(wire):
    wire.post(OPENAI, json=openai_answer({"content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
    ]}, finish="tool_calls", usage={"prompt_tokens": 100, "completion_tokens": 14, "total_tokens": 114,
                                    "prompt_tokens_details": {"cached_tokens": 64},
                                    "completion_tokens_details": {"reasoning_tokens": 0}}))
    completion = openai().complete("Weather in Paris and Rome?", GenerationParams(tools=[get_weather],
                                                                                   tool_choice="required"))
    assert completion.tool_calls == [ToolCall("call_1", "get_weather", {"city": "Paris"}),
                                     ToolCall("call_2", "get_weather", {"city": "Rome"})]
    assert completion.finish_reason == "tool_calls" and completion.usage.cached_prompt_tokens == 64
    body = sent(wire.calls[0])
    assert body["tools"] == [Tool.from_function(get_weather).to_openai()] and body["tool_choice"] == "required"
    named = GenerationParams(tools=[get_weather], tool_choice="get_weather")
    wire.post(OPENAI, json=openai_answer({"content": "ok"}))
    openai().complete("x", named)
    assert sent(wire.calls[1])["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_openai_tool_result_round_trip(wire):
    wire.post(OPENAI, json=openai_answer({"content": "Paris 18C"}))
    call = ToolCall("call_1", "get_weather", {"city": "Paris"})
    openai().complete([Message("user", "Weather?"), Message("assistant", "", [call]),
                       Message.tool_result(call, "18C")], TOOLS)
    messages = sent(wire.calls[0])["messages"]
    assert messages[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
    assert messages[2] == {"role": "tool", "content": "18C", "tool_call_id": "call_1", "name": "get_weather"}


def test_openai_stream_assembles_fragments_keyed_by_index(wire):
    def delta(d, finish=None):
        return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}

    events = [
        delta({"role": "assistant", "content": None, "reasoning_content": "Two calls."}),
        delta({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                               "function": {"name": "get_weather", "arguments": ""}}]}),
        delta({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":\"Pa"}}]}),
        # vLLM-style continuation: empty strings, never absent
        delta({"tool_calls": [{"index": 0, "id": "", "type": "", "function": {"name": "", "arguments": "ris\"}"}}]}),
        delta({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                               "function": {"name": "get_time", "arguments": "{\"city\": \"Rome\"}"}}]}),
        delta({}, finish="tool_calls"),
    ]
    wire.post(OPENAI, body=sse(*events), content_type="text/event-stream")
    stream = openai().stream("Paris weather, Rome time?", TOOLS)
    assert list(stream) == []
    assert stream.tool_calls == [ToolCall("call_1", "get_weather", {"city": "Paris"}),
                                 ToolCall("call_2", "get_time", {"city": "Rome"})]
    assert stream.finish_reason == "tool_calls" and stream.reasoning == "Two calls."
    # YandexGPT /v1 sends the whole call in one chunk, its id the function name.
    whole = {"role": "assistant", "tool_calls": [{"index": 0, "id": "get_weather", "type": "function",
                                                   "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}
    wire.replace(responses.POST, OPENAI, body=sse(delta(whole, finish="tool_calls")), content_type="text/event-stream")
    stream = openai().stream("Oslo?", TOOLS)
    list(stream)
    assert stream.tool_calls == [ToolCall("get_weather", "get_weather", {"city": "Oslo"})]


def test_openai_structured_output(wire):
    wire.post(OPENAI, json=openai_answer({"content": '{"answer": "ok", "n": 3}'}))
    titled = dict(SCHEMA, title="Short answer!")
    router = Router()
    router.add_provider(openai())
    assert router.complete("x", GenerationParams(response_format=titled)).json() == {"answer": "ok", "n": 3}
    assert sent(wire.calls[0])["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "Short_answer_", "schema": titled}}
    router.complete("x", GenerationParams(response_format="json"))
    assert sent(wire.calls[1])["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize("model", ["o3-mini", "o1", "gpt-5", "gpt-5.1-codex", "openai/o4-mini"])
def test_openai_reasoning_models_known_by_name_get_max_completion_tokens(wire, model):
    assert is_reasoning_model(model)
    wire.post(OPENAI, json=openai_answer({"content": "ok"}, usage={
        "prompt_tokens": 10, "completion_tokens": 300, "total_tokens": 310,
        "completion_tokens_details": {"reasoning_tokens": 256}}))
    completion = openai(model).complete("x", GenerationParams(max_tokens=500, temperature=0.2, top_p=0.9, stop=["\n"],
                                                              reasoning_effort="low"))
    body = sent(wire.calls[0])
    assert body["max_completion_tokens"] == 500 and body["reasoning_effort"] == "low"
    assert not {"max_tokens", "temperature", "top_p", "stop"} & set(body)
    assert completion.usage.reasoning_tokens == 256 and len(wire.calls) == 1


def test_openai_other_models_keep_their_parameters(wire):
    assert not is_reasoning_model("gpt-5-chat-latest") and not is_reasoning_model("gpt-4o")
    wire.post(OPENAI, json=openai_answer({"content": "ok"}))
    openai("gpt-4o").complete("x", GenerationParams(max_tokens=5, temperature=0.2))
    assert sent(wire.calls[0])["max_tokens"] == 5 and sent(wire.calls[0])["temperature"] == 0.2


def unsupported(param: str, code: str = "unsupported_parameter") -> dict:
    message = (f"Unsupported parameter: '{param}' is not supported with this model. Use 'max_completion_tokens' instead."
               if code == "unsupported_parameter" else
               f"Unsupported value: '{param}' does not support 0.2 with this model. Only the default (1) value is supported.")
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def test_openai_reasoning_parameter_retry_once_then_remembered(wire):
    provider = openai("my-azure-deployment")  # a name that says nothing
    wire.post(OPENAI, status=400, json=unsupported("max_tokens"))
    wire.post(OPENAI, status=400, json=unsupported("temperature", "unsupported_value"))
    wire.post(OPENAI, json=openai_answer({"content": "ok"}))
    params = GenerationParams(max_tokens=100, temperature=0.2)
    assert provider.complete("x", params).text == "ok"
    bodies = [sent(call) for call in wire.calls]
    assert bodies[0]["max_tokens"] == 100 and bodies[0]["temperature"] == 0.2
    assert bodies[1]["max_completion_tokens"] == 100 and "max_tokens" not in bodies[1]
    assert "temperature" not in bodies[2] and bodies[2]["max_completion_tokens"] == 100
    provider.complete("x", params)  # remembered for the model: one request
    assert len(wire.calls) == 4 and "temperature" not in sent(wire.calls[3])
    # A stream gets the same treatment.
    wire.post(OPENAI, body=sse({"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}),
              content_type="text/event-stream")
    assert "".join(provider.stream("x", params)) == "hi"
    assert "max_completion_tokens" in sent(wire.calls[4])


def test_openai_parameter_retry_is_once_per_parameter_and_never_drops_what_was_asked_for(wire):
    provider = openai("my-deployment")
    wire.post(OPENAI, status=400, json=unsupported("max_tokens"))
    wire.post(OPENAI, status=400, json=unsupported("max_tokens"))
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        provider.complete("x", GenerationParams(max_tokens=5))
    assert len(wire.calls) == 2
    wire.post(OPENAI, status=400, json=unsupported("response_format"))
    with pytest.raises(InvalidRequestError):
        provider.complete("x", GenerationParams(response_format="json"))
    assert len(wire.calls) == 3


def test_openai_bad_arguments_json_and_unknown_tool(wire):
    wire.post(OPENAI, json=openai_answer({"content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Par"}}]},
        finish="tool_calls"))
    with pytest.raises(ResponseFormatError, match="get_weather.*not valid JSON"):
        openai().complete("x", TOOLS)
    wire.replace(responses.POST, OPENAI, json=openai_answer({"content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "rm_rf", "arguments": "{}"}}]}, finish="tool_calls"))
    router = Router(strategy="round-robin")  # a fresh round-robin starts at the first provider
    router.add_provider(openai())
    router.add_provider(MockProvider(ProviderConfig(name="mock", model="mock-tools", extra={"delay": 0})))
    completion = router.complete("Weather in Paris?", TOOLS)
    assert completion.provider == "mock" and completion.tool_calls[0].name == "get_weather"
    assert "rm_rf" in completion.attempts[0].error


# Routing ------------------------------------------------------------------------------------


def test_fallback_from_a_provider_without_tools_to_one_with_them(wire):
    # An Ollama model without tool support, declared so: skipped at planning.
    plain = ollama(capabilities=[])
    wire.post(OPENAI, json=openai_answer({"content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
        finish="tool_calls"))
    router = Router(strategy="round-robin")
    router.add_provider(plain)
    router.add_provider(openai())
    completion = router.complete("Weather in Oslo?", TOOLS)
    assert completion.provider == "oai" and completion.tool_calls[0].arguments == {"city": "Oslo"}
    assert [(a.provider, a.outcome, a.error) for a in completion.attempts] == [
        ("local", "skipped", "does not support tools"), ("oai", "ok", None)]
    assert not [call for call in wire.calls if "11434" in call.request.url]
    # Undeclared, the model says so itself (400): an ordinary fallback.
    undeclared = Router(strategy="round-robin")
    undeclared.add_provider(ollama())
    undeclared.add_provider(openai())
    wire.post(OLLAMA, status=400, json={"error": "registry.ollama.ai/library/gemma:2b does not support tools"})
    completion = undeclared.complete("Weather in Oslo?", TOOLS)
    assert completion.provider == "oai" and completion.attempts[0].error_type == "InvalidRequestError"


def test_a_hedged_tool_call_is_won_by_the_fast_provider():
    slow = MockProvider(ProviderConfig(name="slow", model="mock-tools", extra={"delay": 2.0}))
    fast = MockProvider(ProviderConfig(name="fast", model="mock-tools", extra={"delay": 0}))
    router = Router(strategy="round-robin", hedge_after=0.05)
    router.add_provider(slow)
    router.add_provider(fast)
    with router:
        completion = router.complete("Weather in Kazan?", TOOLS)
        assert completion.provider == "fast" and completion.tool_calls[0].name == "get_weather"
        assert completion.finish_reason == "tool_calls"
        assert [(a.provider, a.outcome, a.hedge) for a in completion.attempts] == [
            ("slow", "lost", False), ("fast", "ok", True)]
        stats = router.stats()["providers"]["fast"]
        assert stats["successes"] == 1 and stats["hedges_won"] == 1


def test_a_tool_call_answer_is_a_success_for_breaker_and_metrics():
    router = Router(breaker={"failure_threshold": 1})
    router.add_provider(MockProvider(ProviderConfig(name="m", model="mock-tools", extra={"delay": 0})))
    for _ in range(3):
        assert router.complete("Weather?", TOOLS).tool_calls
    stats = router.stats()
    assert stats["succeeded"] == 3 and stats["providers"]["m"]["successes"] == 3
    assert stats["providers"]["m"]["breaker"]["state"] == "closed"



def test_gigachat_pairs_calls_that_share_an_id_in_order(wire):
    # YandexGPT /v1 uses the function name as the id: two calls of one function share it.
    provider = giga(wire)
    wire.post(GIGA_CHAT, json=giga_answer({"content": "ok"}))
    calls = [ToolCall("get_weather", "get_weather", {"city": "Paris"}),
             ToolCall("get_weather", "get_weather", {"city": "Rome"})]
    history = [Message("user", "Paris and Rome?"), Message("assistant", "", calls),
               Message.tool_result(calls[0], "18C"), Message.tool_result(calls[1], "21C")]
    provider.complete(history, TOOLS)
    messages = sent(wire.calls[1])["messages"]
    assert [m.get("content") for m in messages[1:]] == ["", '{"result": "18C"}', "", '{"result": "21C"}']
    assert [m["function_call"]["arguments"]["city"] for m in messages[1::2]] == ["Paris", "Rome"]

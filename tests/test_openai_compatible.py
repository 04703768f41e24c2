"""OpenAICompatibleProvider on the wire (``responses``): URL, headers, payload, SSE edge
cases, every error body shape, quota vs rate limit, secrets."""

from __future__ import annotations

import json
import logging
import time
from email.utils import formatdate

import pytest
import requests
import responses

from multi_llm_orchestrator.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    ProviderError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitError,
    ResponseFormatError,
)
from multi_llm_orchestrator.providers import provider_class
from multi_llm_orchestrator.providers.base import ProviderConfig
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider
from multi_llm_orchestrator.types import GenerationParams, Message, Usage

BASE = "http://localhost:8000/v1"
CHAT = BASE + "/chat/completions"
# Looks like a key but not like a real one (the repository's secret scan looks for sk-<20 alnum>).
SECRET = "sk-test-SECRET-do-not-leak-4242"

ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "qwen2.5-7b-instruct",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there"},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
}


def sse(*events, done=True) -> str:
    """An SSE body: dict events as JSON data, str events verbatim (comments, raw lines)."""
    parts = [f"data: {json.dumps(e)}\n\n" if isinstance(e, dict) else e for e in events]
    return "".join(parts) + ("data: [DONE]\n\n" if done else "")


def delta(text=None, finish=None, role=None, index=0) -> dict:
    d = {}
    if role:
        d["role"] = role
    if text is not None:
        d["content"] = text
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "served-model",
            "choices": [{"index": index, "delta": d, "finish_reason": finish}]}


USAGE_CHUNK = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "served-model",
               "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}


@pytest.fixture
def wire():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def make(**fields) -> OpenAICompatibleProvider:
    settings = {"name": "oai", "model": "qwen2.5-7b-instruct", "max_retries": 0}
    settings.update(fields)
    return OpenAICompatibleProvider(ProviderConfig(**settings))


@pytest.fixture
def llm():
    provider = make(api_key=SECRET)
    yield provider
    provider.close()


def sent_json(call) -> dict:
    return json.loads(call.request.body)


# Request wire ------------------------------------------------------------------------------


def test_complete_posts_chat_completions_with_bearer_and_params(wire, llm):
    wire.post(CHAT, json=ANSWER)
    params = GenerationParams(temperature=0.2, top_p=0.5, max_tokens=32, stop=["END"], extra={"seed": 1, "top_k": 20})
    completion = llm.complete([Message("system", "Be brief."), Message("user", "Привет")], params)
    call = wire.calls[0]
    assert call.request.url == CHAT
    assert call.request.headers["Authorization"] == f"Bearer {SECRET}"
    assert call.request.headers["Content-Type"] == "application/json"
    assert call.request.headers["Accept"] == "application/json"
    assert sent_json(call) == {
        "model": "qwen2.5-7b-instruct",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Привет"}],
        "temperature": 0.2, "top_p": 0.5, "max_tokens": 32, "stop": ["END"], "seed": 1, "top_k": 20,
    }
    assert (completion.text, completion.finish_reason, completion.model) == ("Hi there", "stop", "qwen2.5-7b-instruct")
    assert completion.usage == Usage(10, 5, 15)
    assert completion.provider == "oai"


def test_without_api_key_no_authorization_header_and_extra_headers_are_sent(wire):
    provider = make(base_url="http://127.0.0.1:1234/v1/", extra={"headers": {"HTTP-Referer": "https://example.org"}})
    wire.post("http://127.0.0.1:1234/v1/chat/completions", json=ANSWER)
    provider.complete("Hi")
    headers = wire.calls[0].request.headers
    assert "Authorization" not in headers
    assert headers["HTTP-Referer"] == "https://example.org"
    assert sent_json(wire.calls[0]) == {"model": "qwen2.5-7b-instruct", "messages": [{"role": "user", "content": "Hi"}]}


# Response parsing --------------------------------------------------------------------------


def test_absent_usage_is_zero_and_null_content_is_empty_text(wire, llm):
    answer = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]}
    wire.post(CHAT, json=answer)
    completion = llm.complete("Call a tool")
    assert completion.text == ""
    assert completion.usage == Usage(0, 0, 0)
    assert completion.finish_reason == "tool_calls"
    assert completion.model == "qwen2.5-7b-instruct"  # no model in the answer: the configured one


def test_usage_without_total_is_summed(wire, llm):
    wire.post(CHAT, json=dict(ANSWER, usage={"prompt_tokens": 3, "completion_tokens": 4}))
    assert llm.complete("Hi").usage == Usage(3, 4, 7)


@pytest.mark.parametrize("body", [
    {"choices": []},
    {"object": "chat.completion"},
    {"choices": [{"message": {"content": ["a", "b"]}}]},
    [1, 2],
])
def test_malformed_answer_is_response_format_error(wire, llm, body):
    wire.post(CHAT, json=body)
    with pytest.raises(ResponseFormatError):
        llm.complete("Hi")


def test_not_json_is_response_format_error(wire, llm):
    wire.post(CHAT, body="<html>proxy page</html>")
    with pytest.raises(ResponseFormatError, match="not valid JSON"):
        llm.complete("Hi")


def test_error_body_under_http_200_raises_typed_error(wire, llm):
    wire.post(CHAT, json={"error": {"code": 502, "message": "upstream model is down"}})
    with pytest.raises(ProviderUnavailableError, match="upstream model is down"):
        llm.complete("Hi")


# Streaming ---------------------------------------------------------------------------------


def test_stream_appends_deltas_and_takes_usage_from_the_final_empty_choices_chunk(wire, llm):
    body = sse(delta("", role="assistant"), delta("The "), delta("sky"), delta(None, finish="stop"), USAGE_CHUNK)
    wire.post(CHAT, body=body, content_type="text/event-stream")
    stream = llm.stream("Why?", GenerationParams(max_tokens=5))
    assert list(stream) == ["The ", "sky"]
    assert (stream.text, stream.finish_reason, stream.model) == ("The sky", "stop", "served-model")
    assert stream.usage == Usage(9, 3, 12)
    call = wire.calls[0]
    assert sent_json(call) == {
        "model": "qwen2.5-7b-instruct", "messages": [{"role": "user", "content": "Why?"}], "max_tokens": 5,
        "stream": True, "stream_options": {"include_usage": True},
    }
    assert call.request.headers["Accept"] == "text/event-stream"
    assert call.request.headers["Authorization"] == f"Bearer {SECRET}"


def test_stream_ignores_keepalive_comments_other_fields_and_empty_chunks(wire, llm):
    body = sse(
        ": OPENROUTER PROCESSING\n\n",
        "event: message\nid: 1\nretry: 100\n",
        delta("a"),
        ":keep-alive\n\n",
        {"choices": [{"index": 0, "delta": {}}]},
        {"choices": [{"index": 0}]},
        {"choices": None},
        delta("ignored", index=1),
        delta("b", finish="length"),
    )
    wire.post(CHAT, body=body)
    stream = llm.stream("Hi")
    assert list(stream) == ["a", "b"]
    assert stream.finish_reason == "length"
    assert stream.usage is None  # the server sent no usage


def test_stream_stops_at_done_even_if_more_follows(wire, llm):
    wire.post(CHAT, body=sse(delta("x")) + "data: " + json.dumps(delta("after done")) + "\n\n")
    assert list(llm.stream("Hi")) == ["x"]


def test_stream_crlf_and_multiline_data_are_understood(wire, llm):
    event = json.dumps(delta("multi"), indent=1).replace("\n", "\r\ndata: ")
    wire.post(CHAT, body=f"data: {event}\r\n\r\ndata: [DONE]\r\n\r\n")
    assert list(llm.stream("Hi")) == ["multi"]


def test_stream_without_done_is_a_cut_stream(wire, llm):
    wire.post(CHAT, body=sse(delta("partial"), done=False))
    stream = llm.stream("Hi")
    with pytest.raises(ProviderUnavailableError, match=r"\[DONE\]"):
        list(stream)
    assert stream.text == "partial"


@pytest.mark.parametrize(
    "event, error_type, text",
    [
        ({"error": {"message": "Rate limit exceeded upstream", "code": 429}}, RateLimitError, "Rate limit"),
        ({"error": {"message": "Provider returned error", "code": 502, "metadata": {}}},
         ProviderUnavailableError, "Provider returned error"),
        ({"error": {"message": "overloaded", "type": "server_error"}}, ProviderUnavailableError, "overloaded"),
        ({"object": "error", "message": "engine dead", "type": "InternalServerError", "param": None, "code": 500},
         ProviderUnavailableError, "engine dead"),
        ({"error": "plain string error"}, ProviderUnavailableError, "plain string error"),
    ],
)
def test_error_event_under_http_200_raises_typed_error(wire, llm, event, error_type, text):
    wire.post(CHAT, body=sse(delta("Once"), event))
    stream = llm.stream("Hi")
    assert next(stream) == "Once"
    with pytest.raises(error_type, match=text):
        next(stream)
    assert stream.done


def test_stream_event_that_is_not_json_is_response_format_error(wire, llm):
    wire.post(CHAT, body="data: {not json\n\n")
    with pytest.raises(ResponseFormatError):
        list(llm.stream("Hi"))


STREAM_OPTIONS_REJECTED = [
    {"object": "error", "type": "BadRequestError", "param": None, "code": 400,
     "message": "[{'type': 'extra_forbidden', 'loc': ('body', 'stream_options'), 'msg': 'Extra inputs are not permitted'}]"},
    {"error": {"message": "Unrecognized request argument supplied: stream_options", "type": "invalid_request_error"}},
]


@pytest.mark.parametrize("rejection", STREAM_OPTIONS_REJECTED)
def test_server_rejecting_stream_options_still_streams_and_is_remembered(wire, llm, rejection):
    wire.post(CHAT, status=400, json=rejection)
    wire.post(CHAT, body=sse(delta("ok")))
    wire.post(CHAT, body=sse(delta("again")))
    assert list(llm.stream("Hi")) == ["ok"]
    assert list(llm.stream("Hi")) == ["again"]
    bodies = [sent_json(call) for call in wire.calls]
    assert len(bodies) == 3
    assert "stream_options" in bodies[0]
    assert "stream_options" not in bodies[1] and "stream_options" not in bodies[2]
    assert all(body["stream"] is True for body in bodies)


def test_stream_usage_false_never_sends_stream_options(wire):
    provider = make(extra={"stream_usage": False})
    wire.post(CHAT, body=sse(delta("ok")))
    list(provider.stream("Hi"))
    assert "stream_options" not in sent_json(wire.calls[0])


def test_other_400_on_stream_is_raised_not_retried(wire, llm):
    wire.post(CHAT, status=400, json={"error": {"message": "max_tokens is too large", "type": "invalid_request_error"}})
    with pytest.raises(InvalidRequestError, match="max_tokens is too large"):
        llm.stream("Hi")
    assert len(wire.calls) == 1
    wire.post(CHAT, body=sse(delta("ok")))
    llm.stream("Hi").close()
    assert "stream_options" in sent_json(wire.calls[1])  # still asked for usage


# Errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, body, error_type, text",
    [
        (400, {"error": {"message": "Invalid 'messages'", "type": "invalid_request_error", "param": "messages",
                         "code": None}}, InvalidRequestError, "Invalid 'messages'"),
        (400, {"object": "error", "message": "This model's maximum context length is 4096 tokens",
               "type": "BadRequestError", "param": None, "code": 400}, InvalidRequestError, "maximum context length"),
        (404, {"error": {"message": "The model `gpt-9` does not exist", "type": "invalid_request_error",
                         "code": "model_not_found"}}, InvalidRequestError, "does not exist"),
        (404, {"object": "error", "message": "The model `x` does not exist.", "type": "NotFoundError",
               "param": None, "code": 404}, InvalidRequestError, "does not exist"),
        (401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                         "code": "invalid_api_key"}}, AuthenticationError, "check api_key"),
        (403, {"error": {"code": 403, "message": "Input flagged by moderation"}}, AuthenticationError, "moderation"),
        (422, {"detail": [{"loc": ["body", "messages"], "msg": "field required"}]}, InvalidRequestError,
         "field required"),
        (500, {"error": {"message": "The server had an error", "type": "server_error"}}, ProviderUnavailableError,
         "server had an error"),
        (503, {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}},
         ProviderUnavailableError, "Loading model"),
        (502, "<html>Bad Gateway</html>", ProviderUnavailableError, "Bad Gateway"),
    ],
)
def test_error_bodies_map_to_typed_errors(wire, llm, status, body, error_type, text):
    if isinstance(body, dict):
        wire.post(CHAT, status=status, json=body)
    else:
        wire.post(CHAT, status=status, body=body)
    with pytest.raises(error_type, match=text) as caught:
        llm.complete("Hi")
    assert caught.value.status_code == status
    assert caught.value.provider == "oai"


RATE_LIMITED = {"error": {"message": "Rate limit reached for requests", "type": "requests",
                          "code": "rate_limit_exceeded"}}


@pytest.mark.parametrize(
    "headers, retry_after",
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5),
        ({"Retry-After": "HTTP date 30 s ahead"}, 30.0),
        ({}, None),
    ],
)
def test_rate_limit_429_is_rate_limit_error_with_retry_after_and_not_retried(wire, headers, retry_after):
    if headers.get("Retry-After", "").startswith("HTTP date"):
        headers = {"Retry-After": formatdate(time.time() + 30, usegmt=True)}
    provider = make(max_retries=3)
    wire.post(CHAT, status=429, json=RATE_LIMITED, headers=headers)
    with pytest.raises(RateLimitError, match="Rate limit reached") as caught:
        provider.complete("Hi")
    error = caught.value
    assert error.retryable and error.status_code == 429
    if retry_after is None:
        assert error.retry_after is None
    else:
        assert error.retry_after == pytest.approx(retry_after, abs=2)
    assert len(wire.calls) == 1  # 429 is left to the Router: no transport retry


@pytest.mark.parametrize(
    "status, body",
    [
        (429, {"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                         "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}),
        (429, {"error": {"message": "Your credit balance is too low", "type": "invalid_request_error",
                         "code": "credit_balance_exhausted"}}),
        (429, {"object": "error", "message": "quota", "type": "insufficient_quota", "code": 429}),
        (402, {"error": {"code": 402, "message": "Insufficient credits. Add more using https://openrouter.ai/credits"}}),
    ],
)
def test_quota_is_quota_exceeded_error_requested_exactly_once(wire, status, body):
    provider = make(max_retries=3)
    wire.post(CHAT, status=status, json=body, headers={"Retry-After": "1"})
    with pytest.raises(QuotaExceededError) as caught:
        provider.complete("Hi")
    error = caught.value
    assert not isinstance(error, RateLimitError)
    assert not error.retryable and error.status_code == status
    assert "plan" in str(error) and "balance" in str(error)
    assert len(wire.calls) == 1


def test_quota_on_stream_request_is_quota_exceeded_error(wire, llm):
    wire.post(CHAT, status=429, json={"error": {"message": "quota", "type": "insufficient_quota"}})
    with pytest.raises(QuotaExceededError):
        llm.stream("Hi")
    assert len(wire.calls) == 1


def test_server_errors_are_still_retried_by_the_transport(wire):
    provider = make(max_retries=2)
    wire.post(CHAT, status=503, json={"error": {"message": "busy"}})
    wire.post(CHAT, status=502, body="bad gateway")
    wire.post(CHAT, json=ANSWER)
    assert provider.complete("Hi").text == "Hi there"
    assert len(wire.calls) == 3


# Secrets -----------------------------------------------------------------------------------


def test_api_key_never_in_repr_errors_or_debug_logs(wire, llm, caplog):
    caplog.set_level(logging.DEBUG)
    echoed = {"error": {"message": f"Invalid token passed. Received API Key = {SECRET}", "type": "auth_error"}}
    wire.post(CHAT, status=401, json=echoed)
    wire.post(CHAT, body=sse(delta("ok"), {"error": {"message": f"key {SECRET} revoked mid-stream"}}))
    wire.post(CHAT, json=ANSWER)
    wire.get(BASE + "/models", json={"object": "list", "data": [{"id": "m"}]})
    texts = [repr(llm), str(llm), repr(llm.config), str(llm.config), llm.config.to_json()]
    with pytest.raises(AuthenticationError) as first:
        llm.complete("Hi")
    stream = llm.stream("Hi")
    with pytest.raises(ProviderError) as second:
        list(stream)
    completion = llm.complete("Hi")
    llm.list_models()
    for error in (first.value, second.value):
        texts += [str(error), repr(error), error.message, *map(str, error.args)]
    texts += [repr(completion), repr(stream), caplog.text]
    assert "<redacted>" in str(first.value) and "<redacted>" in str(second.value)
    assert any(record.levelname == "DEBUG" for record in caplog.records)  # logging really was on
    for text in texts:
        assert SECRET not in text


def test_placeholder_keys_are_sent_but_not_scrubbed_from_messages(wire):
    provider = make(api_key="ollama")  # Ollama's /v1 wants any key
    wire.post(CHAT, status=400, json={"error": {"message": "ollama cannot do that"}})
    with pytest.raises(InvalidRequestError, match="ollama cannot do that"):
        provider.complete("Hi")
    assert wire.calls[0].request.headers["Authorization"] == "Bearer ollama"


# Health and models -------------------------------------------------------------------------


def test_health_check_and_list_models_use_models_endpoint_with_key(wire, llm):
    wire.get(BASE + "/models", json={"object": "list", "data": [
        {"id": "qwen2.5-7b-instruct", "object": "model", "created": 0, "owned_by": "vllm"}, {"id": "other"}]})
    assert llm.health_check() is True
    assert llm.list_models() == ["qwen2.5-7b-instruct", "other"]
    assert all(call.request.headers["Authorization"] == f"Bearer {SECRET}" for call in wire.calls)


@pytest.mark.parametrize("failure", [
    {"status": 401, "json": {"error": {"message": "bad key"}}},
    {"status": 503, "json": {"error": {"message": "loading"}}},
    {"body": requests.exceptions.ConnectTimeout("slow")},
    {"body": "not json"},
])
def test_health_check_is_false_and_never_raises(wire, llm, failure):
    wire.get(BASE + "/models", **failure)
    assert llm.health_check(timeout=1) is False


def test_list_models_with_unexpected_body_is_response_format_error(wire, llm):
    wire.get(BASE + "/models", json={"models": []})
    with pytest.raises(ResponseFormatError):
        llm.list_models()


# Configuration -----------------------------------------------------------------------------


def test_defaults_and_registry():
    provider = make()
    assert provider.base_url == "http://localhost:8000/v1"
    assert provider_class("openai") is OpenAICompatibleProvider
    assert 429 not in provider.session.get_adapter(BASE).max_retries.status_forcelist
    assert 503 in provider.session.get_adapter(BASE).max_retries.status_forcelist


def test_model_is_required_with_a_hint():
    with pytest.raises(ConfigurationError, match="OPENAI_MODEL"):
        OpenAICompatibleProvider(ProviderConfig(name="oai"))


@pytest.mark.parametrize("extra", [{"headers": ["x"]}, {"headers": {"X": 1}}, {"stream_usage": "no"}])
def test_bad_extra_is_configuration_error(extra):
    with pytest.raises(ConfigurationError):
        make(extra=extra)


def test_from_env_reads_base_url_key_and_model_and_fields_win():
    env = {"OPENAI_BASE_URL": "https://api.openai.com/v1", "OPENAI_API_KEY": SECRET, "OPENAI_MODEL": "gpt-4o-mini"}
    provider = OpenAICompatibleProvider.from_env(environ=env)
    assert (provider.name, provider.base_url, provider.model) == ("openai", "https://api.openai.com/v1", "gpt-4o-mini")
    assert provider.config.api_key == SECRET and SECRET not in repr(provider.config)
    provider = OpenAICompatibleProvider.from_env("lmstudio", environ=env, base_url="http://localhost:1234/v1",
                                                 api_key=None)
    assert (provider.name, provider.base_url, provider.config.api_key) == ("lmstudio", "http://localhost:1234/v1", None)


def test_from_env_defaults_to_openais_api_says_so_and_needs_a_model(monkeypatch, caplog):
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="OPENAI_MODEL"):
        OpenAICompatibleProvider.from_env()
    monkeypatch.setenv("OPENAI_MODEL", "gpt-4o-mini")
    caplog.set_level(logging.INFO, logger="multi_llm_orchestrator.providers.openai")
    provider = OpenAICompatibleProvider.from_env("openai")
    assert (provider.base_url, provider.model, provider.config.api_key) == (
        "https://api.openai.com/v1", "gpt-4o-mini", None)
    assert [r.getMessage() for r in caplog.records] == [
        "provider 'openai': OpenAI-compatible API at https://api.openai.com/v1 (default: OPENAI_BASE_URL not set)"]
    caplog.clear()
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:8000/v1")
    assert OpenAICompatibleProvider.from_env().base_url == BASE
    assert "at http://localhost:8000/v1 (OPENAI_BASE_URL)" in caplog.records[0].getMessage()
    caplog.clear()
    assert OpenAICompatibleProvider.from_env(base_url="http://gpu:9000/v1").base_url == "http://gpu:9000/v1"
    assert "(base_url=)" in caplog.records[0].getMessage()
    # The constructor itself keeps the local default (vLLM's).
    assert OpenAICompatibleProvider(ProviderConfig(name="local", model="m")).base_url == BASE


def test_from_env_bad_url_is_configuration_error():
    with pytest.raises(ConfigurationError, match="base_url"):
        OpenAICompatibleProvider.from_env(environ={"OPENAI_BASE_URL": "localhost:8000", "OPENAI_MODEL": "m"})


@pytest.mark.parametrize("event", [
    {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}},
    {"object": "error", "message": "out of credit", "type": "insufficient_quota", "code": 429},
])
def test_quota_reported_mid_stream_is_quota_exceeded_not_retryable(wire, llm, event):
    wire.post(CHAT, body=sse(delta("Once"), event))
    stream = llm.stream("Hi")
    assert next(stream) == "Once"
    with pytest.raises(QuotaExceededError) as info:
        next(stream)
    assert not info.value.retryable


def test_from_env_unknown_keyword_lists_the_valid_fields():
    with pytest.raises(ConfigurationError) as info:
        OpenAICompatibleProvider.from_env(environ={"OPENAI_MODEL": "m"}, modle="typo")
    assert "'modle'" in str(info.value) and "model" in str(info.value) and "base_url" in str(info.value)


def test_extra_headers_are_read_once_at_construction(wire):
    provider = make(extra={"headers": {"X-Title": "app"}})
    provider.config.extra["headers"]["X-Title"] = "changed"
    wire.post(CHAT, json=ANSWER)
    wire.get(BASE + "/models", json={"data": []})
    provider.complete("Hi")
    provider.list_models()
    assert [call.request.headers["X-Title"] for call in wire.calls] == ["app", "app"]

"""OllamaProvider on the wire (``responses``): URL, headers, payload, parsing, errors."""

from __future__ import annotations

import json

import pytest
import requests
import responses

from multi_llm_orchestrator.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    ProviderUnavailableError,
    ResponseFormatError,
)
from multi_llm_orchestrator.providers import provider_class
from multi_llm_orchestrator.providers.base import ProviderConfig
from multi_llm_orchestrator.providers.ollama import OllamaProvider, ollama_host_url
from multi_llm_orchestrator.types import GenerationParams, Message, Usage

BASE = "http://localhost:11434"
CHAT = BASE + "/api/chat"

ANSWER = {
    "model": "llama3.2",
    "created_at": "2023-12-12T14:13:43.416799Z",
    "message": {"role": "assistant", "content": "Hello! How are you today?"},
    "done": True,
    "done_reason": "stop",
    "total_duration": 5191566416,
    "load_duration": 2154458,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 383809000,
    "eval_count": 298,
    "eval_duration": 4799921000,
}


def ndjson(*events) -> str:
    return "".join(json.dumps(event) + "\n" for event in events)


def chunk(text: str) -> dict:
    return {"model": "llama3.2", "created_at": "2024-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": text}, "done": False}


FINAL = {"model": "llama3.2", "created_at": "2024-01-01T00:00:01Z", "message": {"role": "assistant", "content": ""},
         "done": True, "done_reason": "length", "prompt_eval_count": 7, "eval_count": 3}


@pytest.fixture
def wire():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def ollama():
    provider = OllamaProvider(ProviderConfig(name="local", max_retries=0))
    yield provider
    provider.close()


def sent_json(call) -> dict:
    return json.loads(call.request.body)


# Request wire -------------------------------------------------------------------------


def test_complete_posts_messages_and_options_to_api_chat(wire, ollama):
    wire.post(CHAT, json=ANSWER)
    params = GenerationParams(temperature=0.3, top_p=0.9, max_tokens=64, stop=["\n\n"],
                              extra={"num_ctx": 8192, "seed": 7, "format": "json"})
    completion = ollama.complete(
        [Message("system", "Be brief."), Message("user", "Привет")], params
    )
    call = wire.calls[0]
    assert call.request.url == CHAT
    assert call.request.method == "POST"
    assert call.request.headers["Content-Type"] == "application/json"
    assert call.request.headers["Accept"] == "application/json"
    assert "Authorization" not in call.request.headers
    assert "Привет".encode() in call.request.body  # UTF-8, not \u escapes
    assert sent_json(call) == {
        "model": "llama3.2",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Привет"}],
        "stream": False,
        "format": "json",
        "options": {"temperature": 0.3, "top_p": 0.9, "num_predict": 64, "stop": ["\n\n"],
                    "num_ctx": 8192, "seed": 7},
    }
    assert completion.text == "Hello! How are you today?"
    assert completion.usage == Usage(26, 298, 324)
    assert completion.finish_reason == "stop"
    assert completion.model == "llama3.2"
    assert completion.provider == "local"


def test_no_params_sends_no_options(wire, ollama):
    wire.post(CHAT, json=ANSWER)
    ollama.complete("Hi")
    body = sent_json(wire.calls[0])
    assert body == {"model": "llama3.2", "messages": [{"role": "user", "content": "Hi"}], "stream": False}


def test_config_extra_options_and_keep_alive_are_defaults_params_win(wire):
    provider = OllamaProvider(ProviderConfig(
        name="o", model="qwen2.5:7b", extra={"options": {"num_ctx": 4096, "temperature": 0.1}, "keep_alive": "10m"}))
    wire.post(CHAT, json=ANSWER)
    provider.complete("Hi", GenerationParams(temperature=0.9))
    body = sent_json(wire.calls[0])
    assert body["model"] == "qwen2.5:7b"
    assert body["keep_alive"] == "10m"
    assert body["options"] == {"num_ctx": 4096, "temperature": 0.9}
    assert provider.config.extra["options"] == {"num_ctx": 4096, "temperature": 0.1}  # not mutated


@pytest.mark.parametrize("base_url", ["http://gpu-box:11500", "http://gpu-box:11500/", "http://gpu-box:11500/api"])
def test_base_url_is_overridable_with_or_without_api_suffix(wire, base_url):
    wire.post("http://gpu-box:11500/api/chat", json=ANSWER)
    provider = OllamaProvider(ProviderConfig(name="o", base_url=base_url))
    assert provider.complete("Hi").text == ANSWER["message"]["content"]
    assert provider.base_url == "http://gpu-box:11500"


def test_cloud_api_key_is_sent_as_bearer_and_never_shown(wire):
    secret = "ollama-cloud-SECRET-0123456789"
    provider = OllamaProvider(ProviderConfig(name="cloud", base_url="https://ollama.com", api_key=secret))
    wire.post("https://ollama.com/api/chat", json=ANSWER)
    provider.complete("Hi")
    assert wire.calls[0].request.headers["Authorization"] == f"Bearer {secret}"
    assert secret not in repr(provider) and secret not in repr(provider.config)


# Response parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "counters, expected",
    [
        ({}, Usage(0, 0, 0)),
        ({"eval_count": 5}, Usage(0, 5, 5)),  # prompt served from cache (older servers)
        ({"prompt_eval_count": 4}, Usage(4, 0, 4)),
        ({"prompt_eval_count": None, "eval_count": "6"}, Usage(0, 6, 6)),
    ],
)
def test_absent_counters_mean_zero(wire, ollama, counters, expected):
    answer = {"model": "llama3.2", "message": {"role": "assistant", "content": "ok"}, "done": True, **counters}
    wire.post(CHAT, json=answer)
    completion = ollama.complete("Hi")
    assert completion.usage == expected
    assert completion.finish_reason is None


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", json.dumps({"done": True}).encode(), json.dumps({"message": "text"}).encode()],
)
def test_malformed_answer_is_response_format_error(wire, ollama, body):
    wire.post(CHAT, body=body)
    with pytest.raises(ResponseFormatError):
        ollama.complete("Hi")


def test_error_object_under_200_raises_typed_error(wire, ollama):
    wire.post(CHAT, json={"error": "an error was encountered while running the model"})
    with pytest.raises(ProviderUnavailableError, match="error was encountered while running the model"):
        ollama.complete("Hi")


# Streaming ---------------------------------------------------------------------------------


def test_stream_appends_deltas_and_ends_at_done(wire, ollama):
    wire.post(CHAT, body=ndjson(chunk("The "), chunk("sky "), chunk("is blue."), FINAL),
              content_type="application/x-ndjson")
    stream = ollama.stream("Why is the sky blue?", GenerationParams(max_tokens=3))
    assert list(stream) == ["The ", "sky ", "is blue."]
    assert stream.text == "The sky is blue."
    assert stream.usage == Usage(7, 3, 10)
    assert stream.finish_reason == "length"
    assert stream.model == "llama3.2"
    body = sent_json(wire.calls[0])
    assert body["stream"] is True and body["options"] == {"num_predict": 3}
    assert wire.calls[0].request.headers["Accept"] == "application/x-ndjson"


def test_stream_ignores_blank_lines_and_lines_after_done(wire, ollama):
    body = json.dumps(chunk("a")) + "\n\n\r\n" + json.dumps(FINAL) + "\n" + json.dumps(chunk("ignored")) + "\n"
    wire.post(CHAT, body=body)
    stream = ollama.stream("Hi")
    assert list(stream) == ["a"]
    assert stream.usage == Usage(7, 3, 10)


def test_stream_final_chunk_content_is_kept(wire, ollama):
    final = dict(FINAL, message={"role": "assistant", "content": "!"})
    wire.post(CHAT, body=ndjson(chunk("Hi"), final))
    assert list(ollama.stream("Hi")) == ["Hi", "!"]


def test_stream_error_line_raises_typed_error_after_earlier_text(wire, ollama):
    wire.post(CHAT, body=ndjson(chunk("Part"), {"error": "an error was encountered while running the model"}))
    stream = ollama.stream("Hi")
    assert next(stream) == "Part"
    with pytest.raises(ProviderUnavailableError, match="while running the model") as caught:
        next(stream)
    assert caught.value.provider == "local"
    assert stream.done


def test_stream_ending_without_done_is_a_cut_stream(wire, ollama):
    wire.post(CHAT, body=ndjson(chunk("Half "), chunk("an answer")))
    stream = ollama.stream("Hi")
    with pytest.raises(ProviderUnavailableError, match="cut"):
        list(stream)
    assert stream.text == "Half an answer"


def test_stream_with_empty_body_is_a_cut_stream(wire, ollama):
    wire.post(CHAT, body="")
    with pytest.raises(ProviderUnavailableError, match="cut"):
        list(ollama.stream("Hi"))


def test_stream_line_that_is_not_json_is_response_format_error(wire, ollama):
    wire.post(CHAT, body=ndjson(chunk("ok")) + "data: {oops}\n")
    stream = ollama.stream("Hi")
    assert next(stream) == "ok"
    with pytest.raises(ResponseFormatError):
        next(stream)


def test_stream_http_error_raises_when_stream_is_called(wire, ollama):
    wire.post(CHAT, status=404, json={"error": "model 'llama3.2' not found"})
    with pytest.raises(InvalidRequestError, match="ollama pull llama3.2"):
        ollama.stream("Hi")


# Errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    ["model 'llama3.2' not found", 'model "llama3.2" not found, try pulling it first'],
)
def test_model_not_pulled_says_ollama_pull(wire, message):
    provider = OllamaProvider(ProviderConfig(name="local", max_retries=3))
    wire.post(CHAT, status=404, json={"error": message})
    with pytest.raises(InvalidRequestError) as caught:
        provider.complete("Hi")
    assert "`ollama pull llama3.2`" in str(caught.value)
    assert caught.value.status_code == 404 and not caught.value.retryable
    assert len(wire.calls) == 1


@pytest.mark.parametrize(
    "status, body, error_type, text",
    [
        (400, {"error": "model is required"}, InvalidRequestError, "model is required"),
        (400, {"error": '"all-minilm" does not support chat'}, InvalidRequestError, "does not support chat"),
        (404, {"error": "page not found"}, InvalidRequestError, "page not found"),
        (401, {"error": "unauthorized"}, AuthenticationError, "unauthorized"),
        (500, {"error": "llama runner process has terminated"}, ProviderUnavailableError, "runner process"),
        (502, "Bad Gateway", ProviderUnavailableError, "Bad Gateway"),
    ],
)
def test_error_bodies_map_to_typed_errors(wire, ollama, status, body, error_type, text):
    if isinstance(body, dict):
        wire.post(CHAT, status=status, json=body)
    else:
        wire.post(CHAT, status=status, body=body)
    with pytest.raises(error_type, match=text) as caught:
        ollama.complete("Hi")
    assert caught.value.status_code == status
    if status == 404:
        assert "ollama pull" not in str(caught.value)


def test_server_errors_are_retried_by_the_transport(wire):
    provider = OllamaProvider(ProviderConfig(name="local", max_retries=2))
    wire.post(CHAT, status=503, json={"error": "busy"})
    wire.post(CHAT, json=ANSWER)
    assert provider.complete("Hi").text == ANSWER["message"]["content"]
    assert len(wire.calls) == 2


def test_rate_limit_with_retry_after_is_retried_by_the_transport(wire):
    # Ollama keeps the default policy: its 429 never means "out of quota".
    provider = OllamaProvider(ProviderConfig(name="local", max_retries=1))
    wire.post(CHAT, status=429, json={"error": "too many requests"}, headers={"Retry-After": "0"})
    wire.post(CHAT, json=ANSWER)
    assert provider.complete("Hi").text == ANSWER["message"]["content"]
    assert len(wire.calls) == 2


def test_413_with_retry_after_is_not_retried(wire):
    # urllib3 alone would retry 413 when it carries Retry-After; only listed statuses are.
    provider = OllamaProvider(ProviderConfig(name="local", max_retries=2))
    wire.post(CHAT, status=413, json={"error": "request too large"}, headers={"Retry-After": "0"})
    with pytest.raises(InvalidRequestError, match="too large"):
        provider.complete("Hi")
    assert len(wire.calls) == 1


# Health and models -------------------------------------------------------------------------


def test_health_check_uses_api_version(wire, ollama):
    wire.get(BASE + "/api/version", json={"version": "0.5.1"})
    assert ollama.health_check() is True
    assert wire.calls[0].request.url == BASE + "/api/version"


@pytest.mark.parametrize("failure", [
    {"status": 500, "json": {"error": "boom"}},
    {"body": requests.exceptions.ConnectionError("refused")},
    {"body": "<html>not json</html>"},
])
def test_health_check_is_false_and_never_raises(wire, ollama, failure):
    wire.get(BASE + "/api/version", **failure)
    assert ollama.health_check(timeout=1) is False


def test_list_models_reads_api_tags(wire, ollama):
    wire.get(BASE + "/api/tags", json={"models": [
        {"name": "llama3.2:latest", "model": "llama3.2:latest", "size": 2019393189},
        {"model": "qwen2.5:7b"},
    ]})
    assert ollama.list_models() == ["llama3.2:latest", "qwen2.5:7b"]


def test_list_models_with_unexpected_body_is_response_format_error(wire, ollama):
    wire.get(BASE + "/api/tags", json={"data": []})
    with pytest.raises(ResponseFormatError):
        ollama.list_models()


# Configuration -----------------------------------------------------------------------------


def test_defaults_and_registry():
    provider = OllamaProvider(ProviderConfig(name="o"))
    assert provider.base_url == "http://localhost:11434"
    assert provider.model == "llama3.2"
    assert provider_class("ollama") is OllamaProvider


def test_bad_options_is_configuration_error():
    with pytest.raises(ConfigurationError, match="options"):
        OllamaProvider(ProviderConfig(name="o", extra={"options": [1]}))


@pytest.mark.parametrize(
    "host, url",
    [
        ("127.0.0.1:11500", "http://127.0.0.1:11500"),
        ("gpu-box", "http://gpu-box:11434"),
        ("gpu-box:8080", "http://gpu-box:8080"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:11435", "http://127.0.0.1:11435"),
        (":11434", "http://127.0.0.1:11434"),
        ("http://gpu-box", "http://gpu-box:80"),
        ("https://gpu-box", "https://gpu-box:443"),
        ("https://gpu-box:8443/ollama/", "https://gpu-box:8443/ollama"),
        ("[::1]:11500", "http://[::1]:11500"),
        ("::1", "http://[::1]:11434"),
        ('"localhost:11434"', "http://localhost:11434"),
        ("  localhost  ", "http://localhost:11434"),
        ("ollama.com", "https://ollama.com:443"),
    ],
)
def test_ollama_host_is_read_like_the_cli(host, url):
    assert ollama_host_url(host) == url


@pytest.mark.parametrize("host", ["gpu-box:99999", "gpu-box:port", "ftp://gpu-box"])
def test_bad_ollama_host_is_configuration_error(host):
    with pytest.raises(ConfigurationError, match="OLLAMA_HOST"):
        OllamaProvider.from_env(environ={"OLLAMA_HOST": host})


def test_from_env_reads_host_model_and_key_and_fields_win():
    env = {"OLLAMA_HOST": "gpu-box:11500", "OLLAMA_MODEL": "qwen2.5:7b", "OLLAMA_API_KEY": "k" * 20}
    provider = OllamaProvider.from_env(environ=env)
    assert (provider.name, provider.base_url, provider.model) == ("ollama", "http://gpu-box:11500", "qwen2.5:7b")
    assert provider.config.api_key == "k" * 20
    provider = OllamaProvider.from_env("mine", environ=env, model="llama3.2", timeout=5)
    assert (provider.name, provider.model, provider.config.timeout) == ("mine", "llama3.2", 5)


def test_from_env_without_variables_uses_defaults(monkeypatch):
    for name in ("OLLAMA_HOST", "OLLAMA_MODEL", "OLLAMA_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    provider = OllamaProvider.from_env()
    assert (provider.base_url, provider.model, provider.config.api_key) == (BASE, "llama3.2", None)
    monkeypatch.setenv("OLLAMA_HOST", "10.0.0.5")
    assert OllamaProvider.from_env().base_url == "http://10.0.0.5:11434"


def test_from_env_unknown_field_is_configuration_error():
    with pytest.raises(ConfigurationError, match="ProviderConfig fields"):
        OllamaProvider.from_env(environ={}, modle="typo")


def test_from_env_unknown_keyword_lists_the_valid_fields():
    with pytest.raises(ConfigurationError) as info:
        OllamaProvider.from_env(environ={}, modle="typo")
    assert "'modle'" in str(info.value) and "model" in str(info.value) and "base_url" in str(info.value)


def test_options_and_keep_alive_are_read_once_at_construction(wire):
    config = ProviderConfig(name="local", max_retries=0, extra={"options": {"num_ctx": 8192}, "keep_alive": "5m"})
    provider = OllamaProvider(config)
    config.extra["options"]["num_ctx"] = 1  # the provider keeps what it was built with
    config.extra["keep_alive"] = "0"
    wire.post(CHAT, json=ANSWER)
    provider.complete("Hi")
    body = json.loads(wire.calls[0].request.body)
    assert body["options"] == {"num_ctx": 8192} and body["keep_alive"] == "5m"

"""Ollama and OpenAI-compatible providers over real loopback sockets: keep-alive,
incremental streaming, faults, timeouts, threads, and a Router mixing them with a mock."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional

import pytest
from fakes import FakeOpenAIServer, Fault, LoopbackServer, RecordedRequest
from fakes.openai_server import echo_reply, split_words

from multi_llm_orchestrator.errors import (
    AuthenticationError,
    InvalidRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitError,
)
from multi_llm_orchestrator.providers import MockProvider
from multi_llm_orchestrator.providers.base import ProviderConfig
from multi_llm_orchestrator.providers.ollama import OllamaProvider
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider
from multi_llm_orchestrator.types import GenerationParams, Usage

SECRET = "sk-test-SECRET-loopback-7777"
LONG_PROMPT = "one two three four five six seven eight"
QUOTA = {"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                   "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}


class FakeOllamaServer(LoopbackServer):
    """Ollama's native API: ``/api/chat`` (NDJSON stream by default, as Ollama does),
    ``/api/version``, ``/api/tags``; a model that is not pulled gets Ollama's 404."""

    def __init__(self, *, models=("llama3.2:latest",), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.models = list(models)

    def handle(self, handler, request: RecordedRequest, fault: Optional[Fault]) -> None:
        if request.method == "GET" and request.path == "/api/version":
            return self.send_body(handler, 200, {"version": "0.5.1"})
        if request.method == "GET" and request.path == "/api/tags":
            return self.send_body(handler, 200, {"models": [{"name": m, "model": m} for m in self.models]})
        if request.method != "POST" or request.path != "/api/chat":
            return self.send_body(handler, 404, "404 page not found")
        payload = request.json
        model = payload["model"] if ":" in payload["model"] else payload["model"] + ":latest"
        if model not in self.models:
            return self.send_body(handler, 404, {"error": f"model '{payload['model']}' not found"})
        pieces = split_words(echo_reply(payload))
        counters = {"prompt_eval_count": len(payload["messages"][-1]["content"].split()), "eval_count": len(pieces)}
        final = {"model": payload["model"], "message": {"role": "assistant", "content": ""}, "done": True,
                 "done_reason": "stop", **counters}
        if not payload.get("stream", True):
            return self.send_body(handler, 200, dict(final, message={"role": "assistant", "content": "".join(pieces)}))

        def line(event: Dict[str, Any]) -> bytes:
            return json.dumps(event).encode() + b"\n"

        self.stream_body(
            handler, "application/x-ndjson", pieces, fault=fault, error_frame=line, tail=line(final),
            frame=lambda piece: line({"model": payload["model"], "message": {"role": "assistant", "content": piece},
                                      "done": False}),
        )


@pytest.fixture
def openai_server():
    with FakeOpenAIServer(api_key=SECRET) as server:
        yield server


@pytest.fixture
def ollama_server():
    with FakeOllamaServer() as server:
        yield server


def openai_for(server: FakeOpenAIServer, **fields: Any) -> OpenAICompatibleProvider:
    settings = {"name": "vllm", "model": server.model, "base_url": server.url, "api_key": SECRET, "timeout": 5}
    settings.update(fields)
    return OpenAICompatibleProvider(ProviderConfig(**settings))


def ollama_for(server: FakeOllamaServer, **fields: Any) -> OllamaProvider:
    settings = {"name": "ollama", "base_url": server.base_url, "timeout": 5}
    settings.update(fields)
    return OllamaProvider(ProviderConfig(**settings))


def first_chunk_then_rest(stream, server: LoopbackServer, gate: threading.Event, pieces: int) -> List[str]:
    """Read the first chunk while the server is held at the gate, then release it."""
    started = time.monotonic()
    first = next(stream)
    waited = time.monotonic() - started
    sent_so_far = server.chunks_sent
    gate.set()
    rest = list(stream)
    # A client that buffered would have waited for the gate's 10 s timeout and only then
    # seen every chunk at once.
    assert waited < 3, f"the first chunk took {waited:.1f} s: the client waited for more data"
    assert sent_so_far < pieces, "the server had already sent everything when the first chunk arrived"
    return [first] + rest


# OpenAI-compatible over sockets ------------------------------------------------------------


def test_openai_calls_share_one_keepalive_connection(openai_server):
    with openai_for(openai_server) as provider:
        answers = [provider.complete(f"question {i}").text for i in range(3)]
        streamed = "".join(provider.stream("streamed question"))
        models = provider.list_models()
        healthy = provider.health_check()
    assert answers == [f"Fake answer to: question {i}" for i in range(3)]
    assert streamed == "Fake answer to: streamed question"
    assert (models, healthy) == (["fake-model"], True)
    assert openai_server.request_count == 6
    assert openai_server.connection_count == 1  # streams read to the end leave it reusable
    chat = openai_server.requests[0]
    assert (chat.method, chat.path) == ("POST", "/v1/chat/completions")
    assert chat.headers["authorization"] == f"Bearer {SECRET}"
    assert chat.json["messages"] == [{"role": "user", "content": "question 0"}]


def test_openai_stream_arrives_incrementally_with_usage(openai_server):
    gate = threading.Event()
    openai_server.add_fault(Fault(after_chunks=1, gate=gate))
    with openai_for(openai_server) as provider:
        stream = provider.stream(LONG_PROMPT)
        chunks = first_chunk_then_rest(stream, openai_server, gate, pieces=11)
    assert chunks == split_words(f"Fake answer to: {LONG_PROMPT}")
    assert stream.usage == Usage(8, 11, 19)  # from the include_usage chunk
    assert stream.finish_reason == "stop"
    assert openai_server.requests[0].json["stream_options"] == {"include_usage": True}


def test_openai_quota_429_is_requested_exactly_once_but_503_is_retried(openai_server):
    with openai_for(openai_server, max_retries=3) as provider:
        openai_server.add_fault(Fault(status=429, body=QUOTA, headers={"Retry-After": "0"}))
        with pytest.raises(QuotaExceededError, match="balance"):
            provider.complete("Hi")
        assert openai_server.request_count == 1
        openai_server.add_fault(Fault(status=503, body={"error": {"message": "busy"}}, headers={"Retry-After": "0"}),
                                times=2)
        assert provider.complete("Hi").text == "Fake answer to: Hi"
        assert openai_server.request_count == 4


def test_openai_rate_limit_surfaces_at_once_with_retry_after(openai_server):
    rate_limited = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
    openai_server.add_fault(Fault(status=429, body=rate_limited, headers={"retry-after-ms": "2500"}))
    with openai_for(openai_server, max_retries=3) as provider:
        started = time.monotonic()
        with pytest.raises(RateLimitError) as caught:
            provider.stream("Hi")
        assert time.monotonic() - started < 1  # no sleeping on it: the Router falls back
    assert caught.value.retry_after == pytest.approx(2.5)
    assert openai_server.request_count == 1


def test_openai_cut_stream_raises_after_partial_text_and_the_pool_recovers(openai_server):
    openai_server.add_fault(Fault(after_chunks=2, cut=True))
    with openai_for(openai_server) as provider:
        stream = provider.stream("Hi")
        with pytest.raises(ProviderUnavailableError):
            list(stream)
        assert stream.text == "Fake answer "
        assert provider.complete("again").text == "Fake answer to: again"


def test_openai_error_event_under_200_is_typed(openai_server):
    openai_server.add_fault(Fault(after_chunks=1, error_event={"error": {"message": "overloaded", "code": 503}}))
    with openai_for(openai_server) as provider:
        stream = provider.stream("Hi")
        assert next(stream) == "Fake "
        with pytest.raises(ProviderUnavailableError, match="overloaded"):
            next(stream)


def test_openai_server_rejecting_stream_options_still_streams():
    with FakeOpenAIServer(reject_stream_options=True, keepalive_comments=True) as server:
        with openai_for(server, api_key=None) as provider:
            first = provider.stream("Hi")
            assert "".join(first) == "Fake answer to: Hi"
            assert first.usage is None
            assert "".join(provider.stream("Again")) == "Fake answer to: Again"
        bodies = [request.json for request in server.requests]
    assert ["stream_options" in body for body in bodies] == [True, False, False]


def test_openai_timeouts_before_headers_and_mid_stream(openai_server):
    with openai_for(openai_server, timeout=0.3) as provider:
        openai_server.add_fault(Fault(delay=2))
        started = time.monotonic()
        with pytest.raises(ProviderTimeoutError):
            provider.complete("Hi")
        openai_server.add_fault(Fault(after_chunks=1, stall=2))
        stream = provider.stream("Hi")
        assert next(stream) == "Fake "
        with pytest.raises(ProviderTimeoutError):
            next(stream)
        assert time.monotonic() - started < 1.8


def test_openai_dropped_connection_is_unavailable(openai_server):
    openai_server.add_fault(Fault(drop=True))
    with openai_for(openai_server) as provider:
        with pytest.raises(ProviderUnavailableError):
            provider.complete("Hi")
        assert provider.complete("Hi").text == "Fake answer to: Hi"


def test_openai_wrong_key_is_authentication_error_without_the_key(openai_server):
    wrong = "sk-test-WRONG-key-0000000000"
    with openai_for(openai_server, api_key=wrong) as provider:
        with pytest.raises(AuthenticationError) as caught:
            provider.complete("Hi")
        assert provider.health_check() is False
    assert wrong not in str(caught.value) and SECRET not in str(caught.value)


def test_openai_key_stays_out_of_debug_logs_on_real_sockets(openai_server, caplog):
    caplog.set_level(logging.DEBUG)
    with openai_for(openai_server) as provider:
        provider.complete("Hi")
        list(provider.stream("Hi"))
        openai_server.add_fault(Fault(status=401, body={"error": {"message": f"bad key {SECRET}"}}))
        with pytest.raises(AuthenticationError) as caught:
            provider.complete("Hi")
    assert any(record.name.startswith("urllib3") for record in caplog.records)  # urllib3 logged too
    assert SECRET not in caplog.text and SECRET not in str(caught.value)


def test_openai_health_check_is_false_when_the_server_is_gone():
    server = FakeOpenAIServer().start()
    provider = openai_for(server, api_key=None, max_retries=0)
    assert provider.health_check() is True
    server.stop()
    started = time.monotonic()
    assert provider.health_check(timeout=1) is False
    assert time.monotonic() - started < 1.5
    provider.close()


def test_openai_provider_is_shared_safely_by_threads(openai_server):
    with openai_for(openai_server, pool_size=4) as provider:
        def ask(i: int) -> List[str]:
            answers = []
            for j in range(5):
                if j % 2:
                    answers.append("".join(provider.stream(f"t{i} q{j}")))
                else:
                    answers.append(provider.complete(f"t{i} q{j}").text)
            return answers

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(ask, range(8)))
    assert results == [[f"Fake answer to: t{i} q{j}" for j in range(5)] for i in range(8)]
    assert openai_server.request_count == 40
    assert openai_server.connection_count <= 8 + 4  # pooled, not one per request


def test_fake_server_counts_and_hook(openai_server):
    seen = []
    openai_server.fault_hook = lambda request: seen.append(request.path) or (
        Fault(status=500, body={"error": {"message": "hooked"}}) if "boom" in request.body.decode() else None)
    with openai_for(openai_server, max_retries=0) as provider:
        with pytest.raises(ProviderUnavailableError, match="hooked"):
            provider.complete("boom")
        assert provider.complete("fine").text == "Fake answer to: fine"
    assert seen == ["/v1/chat/completions"] * 2
    openai_server.reset()
    assert (openai_server.request_count, openai_server.chunks_sent, openai_server.requests) == (0, 0, [])


# Ollama over sockets -----------------------------------------------------------------------


def test_ollama_complete_and_stream_over_keepalive(ollama_server):
    with ollama_for(ollama_server) as provider:
        completion = provider.complete("Hi", GenerationParams(temperature=0.5))
        stream = provider.stream("Hi there")
        text = "".join(stream)
        assert provider.list_models() == ["llama3.2:latest"]
        assert provider.health_check() is True
    assert (completion.text, completion.finish_reason) == ("Fake answer to: Hi", "stop")
    assert completion.usage == Usage(1, 4, 5)
    assert text == "Fake answer to: Hi there"
    assert stream.usage == Usage(2, 5, 7)
    assert ollama_server.connection_count == 1
    assert ollama_server.requests[0].json == {
        "model": "llama3.2", "messages": [{"role": "user", "content": "Hi"}], "stream": False,
        "options": {"temperature": 0.5},
    }


def test_ollama_stream_arrives_incrementally(ollama_server):
    gate = threading.Event()
    ollama_server.add_fault(Fault(after_chunks=1, gate=gate))
    with ollama_for(ollama_server) as provider:
        stream = provider.stream(LONG_PROMPT)
        chunks = first_chunk_then_rest(stream, ollama_server, gate, pieces=11)
    assert "".join(chunks) == f"Fake answer to: {LONG_PROMPT}"
    assert stream.finish_reason == "stop"


def test_ollama_model_not_pulled_says_ollama_pull(ollama_server):
    with ollama_for(ollama_server, model="qwen2.5:7b", max_retries=2) as provider:
        with pytest.raises(InvalidRequestError, match=r"`ollama pull qwen2\.5:7b`"):
            provider.complete("Hi")
        with pytest.raises(InvalidRequestError, match="ollama pull"):
            provider.stream("Hi")
    assert ollama_server.request_count == 2


def test_ollama_error_line_and_cut_stream_are_typed(ollama_server):
    with ollama_for(ollama_server) as provider:
        error_line = {"error": "an error was encountered while running the model"}
        ollama_server.add_fault(Fault(after_chunks=1, error_event=error_line))
        stream = provider.stream("Hi")
        assert next(stream) == "Fake "
        with pytest.raises(ProviderUnavailableError, match="running the model"):
            next(stream)
        ollama_server.add_fault(Fault(after_chunks=2, cut=True))
        with pytest.raises(ProviderUnavailableError):
            list(provider.stream("Hi"))


def test_ollama_from_env_with_host_port_without_scheme(ollama_server, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{ollama_server.port}")
    monkeypatch.delenv("OLLAMA_MODEL", raising=False)
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    with OllamaProvider.from_env(timeout=5) as provider:
        assert provider.generate("Hi") == "Fake answer to: Hi"


# A Router over all three --------------------------------------------------------------------


def make_router(ollama_server, openai_server, **router_options):
    from multi_llm_orchestrator import Router

    router = Router(strategy="round-robin", **router_options)
    router.add_provider(ollama_for(ollama_server))
    router.add_provider(openai_for(openai_server))
    router.add_provider(MockProvider(ProviderConfig(name="mock", extra={"delay": 0})))
    return router


def test_router_round_robins_over_ollama_openai_and_mock(ollama_server, openai_server):
    with make_router(ollama_server, openai_server) as router:
        answers = [router.complete(f"q{i}") for i in range(6)]
        health = router.health_check()
    assert [a.provider for a in answers] == ["ollama", "vllm", "mock"] * 2
    assert [a.text for a in answers[:3]] == ["Fake answer to: q0", "Fake answer to: q1", "Mock response to: q2"]
    assert health == {"ollama": True, "vllm": True, "mock": True}
    assert (ollama_server.request_count, openai_server.request_count) == (2 + 1, 2 + 1)  # + health checks


def test_router_falls_back_from_quota_and_missing_model(ollama_server, openai_server):
    ollama_server.models = ["other:latest"]  # llama3.2 not pulled: 404
    openai_server.add_fault(Fault(status=429, body=QUOTA), times=10)
    with make_router(ollama_server, openai_server, breaker=False) as router:
        completion = router.complete("Hi")
        assert completion.provider == "mock"
        assert [(a.provider, a.outcome, a.error_type) for a in completion.attempts] == [
            ("ollama", "error", "InvalidRequestError"),
            ("vllm", "error", "QuotaExceededError"),
            ("mock", "ok", None),
        ]
    assert openai_server.request_count == 1  # the quota 429 was not retried


def test_router_stream_falls_back_when_ollama_is_down(ollama_server, openai_server):
    with make_router(ollama_server, openai_server) as router:
        ollama_server.stop()  # connection refused from now on
        stream = router.route_stream(LONG_PROMPT)
        text = "".join(stream)
    assert stream.provider == "vllm"
    assert text == f"Fake answer to: {LONG_PROMPT}"


def test_router_stream_falls_back_when_a_stream_breaks_before_its_first_chunk(ollama_server, openai_server):
    ollama_server.add_fault(Fault(after_chunks=0, cut=True))
    with make_router(ollama_server, openai_server) as router:
        stream = router.route_stream("Hi")
        assert "".join(stream) == "Fake answer to: Hi"
    assert stream.provider == "vllm"

"""Router.embed over real sockets: OpenAI-compatible and Ollama fakes on loopback, a
batch failing over to a replica of the same space, and the Router timeout."""

from __future__ import annotations

import threading
import time

import pytest

from fakes import Fault, LoopbackServer
from multi_llm_orchestrator import DeadlineExceededError, ProviderConfig, Router
from multi_llm_orchestrator.providers.ollama import OllamaProvider
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider


def vector_of(text: str):
    return [float(len(text)), float(sum(map(ord, text)) % 997)]


class FakeEmbeddingServer(LoopbackServer):
    """``POST /v1/embeddings`` (OpenAI shape, answered in reverse order: clients must
    place by index) and ``POST /api/embed`` (Ollama shape). ``fail_text``: a batch
    holding it gets a 503."""

    def __init__(self, *, fail_text: str = "", latency: float = 0.0) -> None:
        super().__init__(latency=latency)
        self.fail_text = fail_text
        self.batches = []
        self.batch_lock = threading.Lock()

    def handle(self, handler, request, fault):
        if request.path == "/v1/models":  # health checks of the first-available strategy
            self.send_body(handler, 200, {"object": "list", "data": [{"id": "bge-m3", "object": "model"}]})
            return
        body = request.json or {}
        texts = body.get("input") or []
        with self.batch_lock:
            self.batches.append(texts)
        if self.fail_text in texts:
            self.send_body(handler, 503, {"error": {"message": "overloaded", "type": "server_error"}})
        elif request.path == "/v1/embeddings":
            data = [{"object": "embedding", "index": i, "embedding": vector_of(t)} for i, t in enumerate(texts)]
            self.send_body(handler, 200, {"object": "list", "model": body["model"], "data": data[::-1],
                                          "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)}})
        elif request.path == "/api/embed":
            self.send_body(handler, 200, {"model": body["model"], "embeddings": [vector_of(t) for t in texts],
                                          "prompt_eval_count": len(texts)})
        else:
            self.send_body(handler, 404, {"error": "no route"})


TEXTS = [f"document {n} " + "x" * (n % 7) for n in range(50)]


def openai_provider(name, server, **extra):
    return OpenAICompatibleProvider(ProviderConfig(
        name=name, model="bge-m3", base_url=server.base_url + "/v1", max_retries=0,
        extra={"embedding_batch_size": 8, **extra}))


def test_replicas_of_one_space_share_the_batches_and_take_over_a_failed_one():
    with FakeEmbeddingServer(fail_text=TEXTS[20]) as flaky, FakeEmbeddingServer() as healthy:
        with Router(strategy="first-available", breaker=False) as router:
            router.add_provider(openai_provider("flaky", flaky))
            router.add_provider(openai_provider("healthy", healthy))
            result = router.embed(TEXTS, max_parallel=3)
    assert result.vectors == [vector_of(text) for text in TEXTS]
    assert result.space == "openai:bge-m3" and len(flaky.batches) == 7
    assert healthy.batches == [TEXTS[16:24]]  # only the batch that failed
    outcomes = [(a.provider, a.outcome) for a in result.attempts]
    assert outcomes.count(("flaky", "error")) == 1 and outcomes.count(("healthy", "ok")) == 1
    assert result.usage.prompt_tokens == 50


def test_ollama_hosts_as_one_space_over_sockets():
    with FakeEmbeddingServer() as first, FakeEmbeddingServer() as second:
        with Router(strategy="round-robin") as router:
            for name, server in (("gpu-1", first), ("gpu-2", second)):
                router.add_provider(OllamaProvider(ProviderConfig(
                    name=name, base_url=server.base_url, embedding_model="bge-m3", extra={"embedding_batch_size": 10})))
            result = router.embed(TEXTS)
            assert router.embedding_spaces() == {"ollama:bge-m3": ["gpu-1", "gpu-2"]}
    assert result.vectors == [vector_of(text) for text in TEXTS]
    assert first.batches and second.batches  # round-robin spread the batches over both hosts
    assert len(first.batches) + len(second.batches) == 5


def test_the_router_timeout_ends_a_slow_embedding_call_over_sockets():
    with FakeEmbeddingServer(latency=3.0) as slow:
        router = Router(timeout=0.3)
        router.add_provider(openai_provider("slow", slow))
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            router.embed(TEXTS, max_parallel=2)
        assert time.monotonic() - started < 2.5
        router.close()


def test_a_gateway_error_page_fails_over():
    with FakeEmbeddingServer() as dropping, FakeEmbeddingServer() as healthy:
        bad_gateway = Fault(status=502, body="<html>bad gateway</html>")
        dropping.fault_hook = lambda request: bad_gateway if request.method == "POST" else None
        with Router(strategy="first-available", breaker=False) as router:
            router.add_provider(openai_provider("dropping", dropping))
            router.add_provider(openai_provider("healthy", healthy))
            result = router.embed(TEXTS[:8])
    assert result.provider == "healthy" and result.attempts[0].error_type == "ProviderUnavailableError"

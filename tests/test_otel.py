"""OpenTelemetry spans of Router calls (multi_llm_orchestrator.otel), checked with the SDK's
in-memory exporter: parents (also across the executor hop), GenAI attributes, errors,
hedges and fallbacks as siblings, and that no prompt or answer text is recorded unless
asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from multi_llm_orchestrator import (
    AllProvidersFailedError,
    ConfigurationError,
    GenerationParams,
    MockProvider,
    ProviderConfig,
    Router,
)
from multi_llm_orchestrator.otel import CAPTURE_CONTENT_ENV, instrument, uninstrument

from fakes.mocks import mock, router_with

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "the secret launch code is 0451"


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter):
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider


def spans_by_kind(exporter):
    spans = exporter.get_finished_spans()
    calls = [s for s in spans if s.kind == SpanKind.INTERNAL and s.name == "chat"]
    attempts = [s for s in spans if s.kind == SpanKind.CLIENT]
    return calls, attempts


class CurrentSpanProvider(MockProvider):
    """A mock that notes which span is current while it runs, and on which thread."""

    def complete(self, messages, params=None, *, timeout=None):
        self.seen = (trace.get_current_span().get_span_context().span_id, __import__("threading").current_thread().name)
        return super().complete(messages, params, timeout=timeout)


# Parents ----------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [{}, {"timeout": 10.0}], ids=["caller-thread", "executor"])
def test_the_call_span_is_a_child_of_the_callers_span_and_the_attempt_is_current_while_the_provider_runs(
    settings, exporter, provider
):
    spy = CurrentSpanProvider(ProviderConfig(name="spy", extra={"delay": 0}))
    router = router_with(spy, **settings)
    instrument(router, tracer_provider=provider)
    with provider.get_tracer("app").start_as_current_span("handle request") as outer:
        router.complete("hi")
    router.close()
    calls, attempts = spans_by_kind(exporter)
    assert len(calls) == 1 and len(attempts) == 1
    call, attempt = calls[0], attempts[0]
    assert call.parent.span_id == outer.get_span_context().span_id
    assert call.context.trace_id == outer.get_span_context().trace_id == attempt.context.trace_id
    assert attempt.parent.span_id == call.context.span_id
    span_id, thread = spy.seen
    assert span_id == attempt.context.span_id  # an instrumented HTTP client would nest under it
    assert thread.startswith("mlo-router") == bool(settings)  # the executor hop did happen


def test_fallback_attempts_are_siblings_under_the_call(exporter, provider):
    router = router_with(mock("down", "mock-unavailable"), mock("up"))
    instrument(router, tracer_provider=provider)
    assert router.complete("hi").provider == "up"
    calls, attempts = spans_by_kind(exporter)
    assert [a.attributes["mlo.provider"] for a in attempts] == ["down", "up"]
    assert {a.parent.span_id for a in attempts} == {calls[0].context.span_id}
    down, up = attempts
    assert down.status.status_code == StatusCode.ERROR
    assert down.attributes["error.type"] == "ProviderUnavailableError"
    assert down.attributes["mlo.attempt.outcome"] == "error"
    assert up.status.status_code == StatusCode.UNSET and up.attributes["mlo.attempt.outcome"] == "ok"
    assert calls[0].attributes["mlo.attempts"] == 2 and calls[0].attributes["mlo.provider"] == "up"
    assert calls[0].status.status_code == StatusCode.UNSET


def test_a_hedge_and_the_attempt_it_raced_are_siblings_and_the_loser_is_marked_lost(exporter, provider):
    router = router_with(mock("slow", delay=5.0), mock("fast", delay=0.01), hedge_after=0.05)
    instrument(router, tracer_provider=provider)
    assert router.complete("hi").provider == "fast"
    router.close(grace=0)  # wakes the slow mock; its discarded answer ends its span
    calls, attempts = spans_by_kind(exporter)
    by_name = {a.attributes["mlo.provider"]: a for a in attempts}
    assert set(by_name) == {"slow", "fast"}
    assert {a.parent.span_id for a in attempts} == {calls[0].context.span_id}
    assert by_name["slow"].attributes["mlo.attempt.outcome"] == "lost"
    assert by_name["slow"].attributes["mlo.attempt.hedge"] is False
    assert by_name["fast"].attributes["mlo.attempt.outcome"] == "ok"
    assert by_name["fast"].attributes["mlo.attempt.hedge"] is True


# Attributes -------------------------------------------------------------------------------


def test_genai_attributes_on_the_call_and_the_attempt(exporter, provider):
    router = router_with(mock("local", extra={"delay": 0}))
    instrument(router, tracer_provider=provider)
    completion = router.complete("one two three", GenerationParams(temperature=0.2, max_tokens=50, top_p=0.9, stop=["END"]))
    (call,), (attempt,) = spans_by_kind(exporter)
    for span in (call, attempt):
        attributes = span.attributes
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.provider.name"] == attributes["gen_ai.system"] == "mock"
        assert attributes["gen_ai.request.model"] == "mock-normal"
        assert attributes["gen_ai.response.model"] == "mock-normal"
        assert attributes["gen_ai.usage.input_tokens"] == completion.usage.prompt_tokens == 3
        assert attributes["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens
        assert tuple(attributes["gen_ai.response.finish_reasons"]) == ("stop",)
        assert attributes["gen_ai.request.temperature"] == 0.2
        assert attributes["gen_ai.request.max_tokens"] == 50
        assert attributes["gen_ai.request.top_p"] == 0.9
        assert tuple(attributes["gen_ai.request.stop_sequences"]) == ("END",)
        assert "error.type" not in attributes
    assert attempt.name == "chat mock-normal"
    assert call.attributes["mlo.streaming"] is False


def test_a_failed_call_has_error_status_and_type(exporter, provider):
    router = router_with(mock("a", "mock-auth-error"), mock("b", "mock-ratelimit"))
    instrument(router, tracer_provider=provider)
    with pytest.raises(AllProvidersFailedError):
        router.complete("hi")
    (call,), attempts = spans_by_kind(exporter)
    assert call.status.status_code == StatusCode.ERROR
    assert call.attributes["error.type"] == "AllProvidersFailedError"
    assert [a.attributes["error.type"] for a in attempts] == ["AuthenticationError", "RateLimitError"]


def test_a_call_that_never_reaches_a_provider_still_ends_its_span(exporter, provider):
    router = Router()
    instrument(router, tracer_provider=provider)
    with pytest.raises(ConfigurationError):
        router.complete("hi")
    (call,), attempts = spans_by_kind(exporter)
    assert attempts == [] and call.attributes["error.type"] == "NoProvidersError"


def test_a_provider_skipped_by_its_open_breaker_is_an_event_on_the_call(exporter, provider):
    router = router_with(mock("flaky", "mock-unavailable"), mock("steady"), breaker={"failure_threshold": 1, "cooldown": 60})
    instrument(router, tracer_provider=provider)
    router.complete("first")  # flaky fails once: its breaker opens
    exporter.clear()
    router.complete("second")
    (call,), attempts = spans_by_kind(exporter)
    assert [a.attributes["mlo.provider"] for a in attempts] == ["steady"]
    assert call.attributes["mlo.attempts"] == 1


def test_a_stream_span_ends_when_the_stream_does_with_its_usage(exporter, provider):
    router = router_with(mock("streamer"))
    instrument(router, tracer_provider=provider)
    stream = router.route_stream("tell me")
    assert spans_by_kind(exporter)[0] == []  # still open while the caller reads
    text = "".join(stream)
    (call,), (attempt,) = spans_by_kind(exporter)
    assert text == "Mock response to: tell me"
    assert call.attributes["mlo.streaming"] is True
    assert call.attributes["gen_ai.usage.output_tokens"] == attempt.attributes["gen_ai.usage.output_tokens"] == 5
    assert tuple(call.attributes["gen_ai.response.finish_reasons"]) == ("stop",)


def test_a_stream_broken_midway_is_an_error_on_both_spans(exporter, provider):
    router = router_with(mock("breaks", fail_after_chunks=2))
    instrument(router, tracer_provider=provider)
    with pytest.raises(Exception):
        "".join(router.route_stream("tell me a long story"))
    (call,), (attempt,) = spans_by_kind(exporter)
    assert call.attributes["error.type"] == attempt.attributes["error.type"] == "ProviderUnavailableError"


def test_a_cache_hit_is_a_call_span_marked_as_such_without_attempts_or_usage(exporter, provider):
    router = router_with(mock("cached"), cache=True)
    instrument(router, tracer_provider=provider, capture_content=True)
    answer = router.complete("tell me")
    exporter.clear()
    assert router.complete("tell me").cached
    assert "".join(router.route_stream("tell me")) == answer.text
    calls, attempts = spans_by_kind(exporter)
    assert attempts == [] and len(calls) == 2
    for span, streaming in zip(calls, (False, True)):
        assert span.attributes["mlo.cache.hit"] is True and span.attributes["mlo.attempts"] == 0
        assert span.attributes["mlo.streaming"] is streaming
        assert span.attributes["gen_ai.response.model"] == "mock-normal"
        assert "gen_ai.usage.input_tokens" not in span.attributes  # nothing spent now
        assert span.status.is_ok
    assert "tell me" in calls[0].attributes["gen_ai.output.messages"]
    router.complete("something else")
    assert "mlo.cache.hit" not in spans_by_kind(exporter)[0][-1].attributes


def test_an_embed_call_is_an_embeddings_span_with_a_child_per_attempt(exporter, provider):
    router = router_with(mock("down", "mock-unavailable"), mock("up"), strategy="first-available")
    instrument(router, tracer_provider=provider, capture_content=True)
    result = router.embed(["first text", "second text here"])
    spans = exporter.get_finished_spans()
    (call,) = [s for s in spans if s.kind == SpanKind.INTERNAL]
    attempts = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert call.name == "embeddings" and call.attributes["gen_ai.operation.name"] == "embeddings"
    assert call.attributes["mlo.provider"] == "up"
    assert call.attributes["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens == 5
    assert all(a.parent.span_id == call.context.span_id for a in attempts)
    answered = [a for a in attempts if a.attributes["mlo.attempt.outcome"] == "ok"]
    assert [a.name for a in answered] == ["embeddings mock-embedding"]
    assert answered[0].attributes["gen_ai.request.model"] == "mock-embedding"
    assert answered[0].attributes["gen_ai.embeddings.dimension.count"] == result.dimensions
    assert "gen_ai.output.messages" not in call.attributes  # vectors are not content to record
    assert not any("second text" in text for text in all_strings(spans))


# Content ----------------------------------------------------------------------------------


def all_strings(spans):
    for span in spans:
        yield span.name
        for value in span.attributes.values():
            yield str(value)
        for event in span.events:
            yield event.name
            yield from (str(value) for value in event.attributes.values())
        yield span.status.description or ""


def test_no_prompt_or_answer_text_unless_asked(exporter, provider, monkeypatch):
    monkeypatch.delenv(CAPTURE_CONTENT_ENV, raising=False)
    router = router_with(mock("echo"))
    instrument(router, tracer_provider=provider)
    answer = router.route(PROMPT)
    "".join(router.route_stream(PROMPT))
    assert PROMPT in answer  # the mock echoes it: it would show if recorded
    recorded = list(all_strings(exporter.get_finished_spans()))
    assert len(exporter.get_finished_spans()) == 4
    assert not any("0451" in text for text in recorded)


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_content_is_recorded_on_the_call_span_when_asked(how, exporter, provider, monkeypatch):
    router = router_with(mock("echo"))
    if how == "argument":
        instrument(router, tracer_provider=provider, capture_content=True)
    else:
        monkeypatch.setenv(CAPTURE_CONTENT_ENV, "true")
        instrument(router, tracer_provider=provider)
    router.complete([{"role": "system", "content": "be brief"}, {"role": "user", "content": PROMPT}])
    (call,), (attempt,) = spans_by_kind(exporter)
    assert json.loads(call.attributes["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": PROMPT}]},
    ]
    assert json.loads(call.attributes["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": f"Mock response to: {PROMPT}"}], "finish_reason": "stop"}
    ]
    assert not any("0451" in text for text in all_strings([attempt]))


# Switching on and off, and failures of the tracer itself ---------------------------------


def test_uninstrument_stops_the_spans(exporter, provider):
    router = router_with(mock("m"))
    instrument(router, tracer_provider=provider)
    router.route("hi")
    uninstrument(router)
    router.route("hi")
    assert len(exporter.get_finished_spans()) == 2  # the first call's two spans only


def test_instrument_takes_only_a_router():
    with pytest.raises(ConfigurationError, match="Router"):
        instrument(object())


def test_the_api_no_op_tracer_costs_nothing_visible_and_the_call_works():
    router = router_with(mock("m"))
    instrument(router, tracer_provider=trace.NoOpTracerProvider())
    assert router.route("hi") == "Mock response to: hi"
    assert "".join(router.route_stream("hi")) == "Mock response to: hi"


class BrokenTracerProvider(trace.TracerProvider):
    def get_tracer(self, *args, **kwargs):
        return BrokenTracer()


class BrokenTracer(trace.NoOpTracer):
    def start_span(self, *args, **kwargs):
        raise RuntimeError("exporter misconfigured")


@pytest.mark.parametrize("settings", [{}, {"timeout": 10.0}], ids=["caller-thread", "executor"])
def test_a_broken_tracer_never_fails_a_call(settings, caplog):
    router = router_with(mock("m"), **settings)
    instrument(router, tracer_provider=BrokenTracerProvider())
    assert router.route("hi") == "Mock response to: hi"
    assert router.stats()["succeeded"] == 1
    assert "Could not start the span" in caplog.text
    router.close()


def test_a_router_that_is_not_instrumented_never_imports_opentelemetry():
    script = textwrap.dedent(
        """
        import sys
        from multi_llm_orchestrator import MockProvider, ProviderConfig, Router
        router = Router(timeout=5)
        router.add_provider(MockProvider(ProviderConfig(name="m", extra={"delay": 0})))
        assert router.route("hi") == "Mock response to: hi"
        assert "".join(router.route_stream("hi")) == "Mock response to: hi"
        router.close()
        print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_call_of_a_batch_is_a_child_of_the_callers_span(exporter, provider):
    router = router_with(mock("m"))
    instrument(router, tracer_provider=provider)
    with provider.get_tracer("app").start_as_current_span("nightly job") as outer:
        results = router.batch(["one", "two", "three"], max_workers=3)
    assert [r.text for r in results] == [f"Mock response to: {w}" for w in ("one", "two", "three")]
    calls, _ = spans_by_kind(exporter)
    assert len(calls) == 3
    assert {call.parent.span_id for call in calls} == {outer.get_span_context().span_id}


def test_with_a_no_op_tracer_the_callers_trace_context_still_reaches_the_attempt_thread(provider):
    # The Router's tracer records nothing (NoOpTracerProvider), but the application's span
    # (from its own SDK provider) must still be the current one where the provider runs,
    # so HTTP spans of an instrumented client stay in the application's trace.
    spy = CurrentSpanProvider(ProviderConfig(name="spy", extra={"delay": 0}))
    router = router_with(spy, timeout=10.0)
    instrument(router, tracer_provider=trace.NoOpTracerProvider())
    with provider.get_tracer("app").start_as_current_span("handle request") as outer:
        router.complete("hi")
    assert spy.seen[0] == outer.get_span_context().span_id and spy.seen[1].startswith("mlo-router")
    router.complete("outside any trace")
    assert spy.seen[0] == 0  # no trace: nothing current, nothing made up
    router.close()

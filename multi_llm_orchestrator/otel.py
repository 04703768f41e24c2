"""OpenTelemetry traces of a Router (optional extra: ``pip install 'multi-llm-orchestrator[otel]'``).

``instrument(router)`` makes every Router call one span and every provider attempt in it
a child span, with the GenAI semantic-convention attributes::

    from multi_llm_orchestrator.otel import instrument
    instrument(router)                       # the global TracerProvider, or tracer_provider=...

    chat                           the Router call (INTERNAL); parent: the caller's current span
    ├── chat GigaChat              attempt 1 (CLIENT): failed, error.type=ProviderUnavailableError
    ├── chat llama3.2              attempt 2 (fallback): answered
    └── chat llama3.2              a hedge started beside it (mlo.attempt.hedge=true), lost

Attempts that run on the Router's executor (hedging, a total ``timeout``) still get the call
span as parent, and each attempt span is the current span while its provider runs, so an
instrumented HTTP client nests its spans under it.

``router.embed`` calls are traced the same way, named "embeddings" (one attempt span per
batch and provider tried).

Attributes: ``gen_ai.operation.name`` ("chat" or "embeddings"), ``gen_ai.provider.name`` and
``gen_ai.system`` (the provider's type, e.g. "gigachat"), ``gen_ai.request.model``,
``gen_ai.request.temperature``/``max_tokens``/``top_p``/``stop_sequences`` when set,
``gen_ai.response.model``, ``gen_ai.usage.input_tokens``/``output_tokens``,
``gen_ai.response.finish_reasons``, ``gen_ai.embeddings.dimension.count``, ``error.type`` (the exception class) on failures, and
``mlo.provider`` (the provider's name in the Router), ``mlo.attempt.outcome`` ("ok",
"error", "lost"), ``mlo.attempt.hedge``, ``mlo.attempts``, ``mlo.streaming``. Providers
skipped by their circuit breaker are events (``mlo.attempt.skipped``) on the call span.
A call answered from the response cache is a call span with ``mlo.cache.hit`` and no
attempts (and no usage: nothing was spent).

Prompt and answer text are recorded only when asked (``capture_content=True``, or the
environment variable ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``), as
``gen_ai.input.messages`` and ``gen_ai.output.messages`` on the call span.

A Router that is not instrumented never imports OpenTelemetry and pays one ``is None``
test per call and per attempt; with the API's no-op tracer (no SDK configured) the cost
is shown by ``benchmarks/overhead.py``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Dict, List, Optional

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "multi_llm_orchestrator.otel needs opentelemetry-api: pip install 'multi-llm-orchestrator[otel]'"
    ) from exc

from .calls import AttemptRun, Call
from .errors import ConfigurationError

__all__ = ["instrument", "uninstrument", "RouterTracer", "CAPTURE_CONTENT_ENV"]

logger = logging.getLogger("multi_llm_orchestrator.otel")

#: The variable OpenTelemetry's GenAI instrumentations read to record message content.
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


def instrument(
    router: Any, *, tracer_provider: Any = None, capture_content: Optional[bool] = None
) -> "RouterTracer":
    """Trace every call of ``router`` (replacing an earlier ``instrument``); returns the tracer.

    ``tracer_provider``: an OpenTelemetry TracerProvider (default: the global one, looked up
    on each span, so an SDK configured later is still used). ``capture_content``: record
    prompt and answer text (default: ``$OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).
    """
    telemetry = _telemetry_of(router)
    if capture_content is None:
        capture_content = os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    tracer = RouterTracer(tracer_provider, bool(capture_content))
    telemetry.tracer = tracer
    return tracer


def uninstrument(router: Any) -> None:
    """Stop tracing ``router``'s calls (calls already started finish their spans)."""
    _telemetry_of(router).tracer = None


def _telemetry_of(router: Any) -> Any:
    telemetry = getattr(router, "_telemetry", None)
    if telemetry is None or not hasattr(telemetry, "tracer"):
        raise ConfigurationError(f"instrument takes a multi_llm_orchestrator Router; got {type(router).__name__}")
    return telemetry


class RouterTracer:
    """Turns a Router's calls and attempts into spans (see the module docstring)."""

    def __init__(self, tracer_provider: Any = None, capture_content: bool = False) -> None:
        from . import __version__

        self.tracer = trace.get_tracer("multi_llm_orchestrator", __version__, tracer_provider=tracer_provider)
        self.capture_content = capture_content

    def start_call(self, call: Call) -> Optional["_CallTrace"]:
        try:
            traced = _CallTrace(self, call)
            return traced if traced.context is not None else None
        except Exception:  # a tracing failure must never fail the call
            logger.exception("Could not start the span of a Router call; the call goes on untraced")
            return None


class _CallTrace:
    """The span of one Router call; parent of its attempts' spans, whatever their thread."""

    __slots__ = ("owner", "span", "context", "recording", "call", "operation")

    def __init__(self, owner: RouterTracer, call: Call) -> None:
        self.owner = owner
        self.operation = call.operation
        # No explicit context: the caller's current span (on the caller's thread) is the parent.
        self.span = owner.tracer.start_span(call.operation, kind=SpanKind.INTERNAL)
        self.recording = self.span.is_recording()
        self.call: Optional[Call] = None
        if not self.recording and not self.span.get_span_context().is_valid:
            # The API's no-op tracer (no SDK configured) outside any trace: nothing to record
            # and no trace context to hand on, so the call and its attempts go untraced.
            self.context = None
            return
        self.context = trace.set_span_in_context(self.span)
        if self.recording:
            attributes = {"gen_ai.operation.name": call.operation, "mlo.streaming": call.streaming}
            if getattr(call, "cache_hit", False):  # answered from the response cache: no attempts
                attributes["mlo.cache.hit"] = True
            attributes.update(_request_attributes(call.params))
            if owner.capture_content and call.messages:
                attributes["gen_ai.input.messages"] = _messages_json(call.messages)
            self.span.set_attributes(attributes)
            self.call = call

    def attempt(self, run: AttemptRun) -> Any:
        try:
            return _AttemptTrace(self, run)
        except Exception:
            logger.exception("Could not start the span of an attempt; it goes on untraced")
            return _UNTRACED

    def end(self, attempt: Optional[AttemptRun], error: Optional[BaseException], usage: Any, result: Any) -> None:
        span = self.span
        try:
            if self.recording:
                call = self.call
                attributes: Dict[str, Any] = {}
                attempts = call.attempt_list() if call is not None else []
                attributes["mlo.attempts"] = sum(1 for a in attempts if a.outcome != "skipped")
                for skipped in attempts:
                    if skipped.outcome == "skipped":
                        event = {"mlo.provider": skipped.provider}
                        if skipped.error:
                            event["mlo.reason"] = skipped.error
                        span.add_event("mlo.attempt.skipped", event)
                if attempt is not None:
                    attributes.update(_provider_attributes(attempt.state.provider, self.operation))
                attributes.update(_result_attributes(usage, result))
                if self.owner.capture_content and isinstance(getattr(result, "text", None), str) and error is None:
                    attributes["gen_ai.output.messages"] = _output_json(result)
                span.set_attributes(attributes)
                self.call = None  # drop the reference: the span may be exported later
            _set_error(span, error)
        except Exception:
            logger.exception("Could not record the outcome of a Router call on its span")
        finally:
            span.end()


class _AttemptTrace:
    """The span of one provider attempt, current on the attempt's thread while it runs."""

    __slots__ = ("span", "run_", "recording")

    def __init__(self, parent: _CallTrace, run: AttemptRun) -> None:
        provider, operation = run.state.provider, parent.operation
        self.span = parent.owner.tracer.start_span(
            f"{operation} {_model_of(provider, operation)}", context=parent.context, kind=SpanKind.CLIENT
        )
        self.recording = self.span.is_recording()
        if self.recording:
            attributes = {"gen_ai.operation.name": operation, "mlo.attempt.hedge": run.hedge}
            attributes.update(_provider_attributes(provider, operation))
            attributes.update(_request_attributes(run.call.params))
            self.span.set_attributes(attributes)
        self.run_ = run

    def run(self, invoke: Callable[[Any, Optional[float]], Any], provider: Any, remaining: Optional[float]) -> Any:
        token = otel_context.attach(trace.set_span_in_context(self.span))
        try:
            return invoke(provider, remaining)
        finally:
            otel_context.detach(token)

    def end(self, error: Optional[BaseException], usage: Any, result: Any) -> None:
        span = self.span
        try:
            if self.recording:
                attributes = _result_attributes(usage, result)
                attributes["mlo.attempt.outcome"] = "lost" if self.run_.lost else ("error" if error else "ok")
                span.set_attributes(attributes)
            _set_error(span, error)
        except Exception:
            logger.exception("Could not record the outcome of an attempt on its span")
        finally:
            span.end()


class _Untraced:
    """Stands in for an attempt span that could not be started."""

    @staticmethod
    def run(invoke: Callable[[Any, Optional[float]], Any], provider: Any, remaining: Optional[float]) -> Any:
        return invoke(provider, remaining)

    @staticmethod
    def end(error: Optional[BaseException], usage: Any, result: Any) -> None:
        return None


_UNTRACED = _Untraced()


def _model_of(provider: Any, operation: str) -> str:
    return provider.embedding_model if operation == "embeddings" else provider.model


def _provider_attributes(provider: Any, operation: str) -> Dict[str, Any]:
    system = type(provider).type_name or type(provider).__name__.lower()
    return {
        "gen_ai.provider.name": system,
        "gen_ai.system": system,
        "gen_ai.request.model": _model_of(provider, operation),
        "mlo.provider": provider.name,
    }


def _request_attributes(params: Any) -> Dict[str, Any]:
    attributes: Dict[str, Any] = {}
    if params is None:
        return attributes
    for name, key in (("temperature", "gen_ai.request.temperature"), ("max_tokens", "gen_ai.request.max_tokens"),
                      ("top_p", "gen_ai.request.top_p")):
        value = getattr(params, name, None)
        if value is not None:
            attributes[key] = value
    if getattr(params, "stop", None):
        attributes["gen_ai.request.stop_sequences"] = list(params.stop)
    return attributes


def _result_attributes(usage: Any, result: Any) -> Dict[str, Any]:
    """Usage, and the response model, finish reason and vector size of a Completion, a
    TextStream or an Embeddings result."""
    attributes: Dict[str, Any] = {}
    if usage is not None:
        attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
    if result is None:
        return attributes
    model = getattr(result, "model", None)
    if model:
        attributes["gen_ai.response.model"] = model
    finish_reason = getattr(result, "finish_reason", None)
    if finish_reason:
        attributes["gen_ai.response.finish_reasons"] = [finish_reason]
    dimensions = getattr(result, "dimensions", None)
    if dimensions:
        attributes["gen_ai.embeddings.dimension.count"] = dimensions
    return attributes


def _set_error(span: Any, error: Optional[BaseException]) -> None:
    if error is None:
        return
    span.set_attribute("error.type", type(error).__name__)
    span.set_status(Status(StatusCode.ERROR, str(error)))


def _messages_json(messages: List[Any]) -> str:
    return json.dumps(
        [{"role": m.role, "parts": [{"type": "text", "content": m.content}]} for m in messages], ensure_ascii=False
    )


def _output_json(result: Any) -> str:
    message: Dict[str, Any] = {"role": "assistant", "parts": [{"type": "text", "content": result.text}]}
    if getattr(result, "finish_reason", None):
        message["finish_reason"] = result.finish_reason
    return json.dumps([message], ensure_ascii=False)

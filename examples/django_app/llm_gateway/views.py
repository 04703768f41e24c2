"""JSON endpoints over the shared Router.

    POST /ask         {"prompt": "..."} or {"messages": [...]}  -> {"text", "provider", ...}
    POST /ask/stream  same body -> the answer as a streamed text/plain body
    GET  /health      every provider's health: cached for the Router's health_ttl (a status
                      page must not make paid calls per hit); ?refresh=1 checks all now
    GET  /stats       Router.stats()
"""

import json

from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from multi_llm_orchestrator import AllProvidersFailedError, ConfigurationError, NoProvidersError, OrchestratorError

from .apps import get_router

ASK_TIMEOUT_S = 60  # a request never waits longer than this for all fallbacks together


def _prompt(request):
    """The prompt or messages of a JSON body; ConfigurationError when there is none."""
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        raise ConfigurationError('The body must be JSON: {"prompt": "..."} or {"messages": [...]}') from None
    if not isinstance(body, dict) or not (body.get("prompt") or body.get("messages")):
        raise ConfigurationError('Send {"prompt": "..."} or {"messages": [{"role": "user", "content": "..."}]}')
    return body.get("prompt") or body["messages"]


def _failure(exc):
    """400 for the client's mistakes; 503 when the service cannot answer (every provider
    failed, no provider configured, the Router closed during shutdown)."""
    if isinstance(exc, ConfigurationError) and not isinstance(exc, NoProvidersError):
        return JsonResponse({"error": str(exc)}, status=400)
    errors = [{"provider": e.provider, "error_type": type(e).__name__} for e in getattr(exc, "errors", [])]
    message = "every provider failed" if isinstance(exc, AllProvidersFailedError) else str(exc)
    return JsonResponse({"error": message, "errors": errors}, status=503)


@csrf_exempt
@require_POST
def ask(request):
    try:
        completion = get_router().complete(_prompt(request), timeout=ASK_TIMEOUT_S)
    except OrchestratorError as exc:
        return _failure(exc)
    return JsonResponse({
        "text": completion.text,
        "provider": completion.provider,
        "model": completion.model,
        "usage": completion.usage.to_dict(),
        "latency_s": round(completion.latency_s, 4),
        "attempts": len(completion.attempts),
    })


@csrf_exempt
@require_POST
def ask_stream(request):
    try:
        # route_stream returns once the first chunk has arrived, so a failure of every
        # provider is still an HTTP 503 rather than a broken 200.
        stream = get_router().route_stream(_prompt(request), timeout=ASK_TIMEOUT_S)
    except OrchestratorError as exc:
        return _failure(exc)
    response = StreamingHttpResponse(stream, content_type="text/plain; charset=utf-8")
    response["X-LLM-Provider"] = stream.provider
    return response


@require_GET
def health(request):
    report = get_router().health_report(timeout=5, cached=request.GET.get("refresh") != "1")
    data = {name: {"healthy": r.healthy, "latency_s": round(r.latency_s, 4), "error": r.error} for name, r in report.items()}
    return JsonResponse(data, status=200 if any(r.healthy for r in report.values()) else 503)


@require_GET
def stats(request):
    return JsonResponse(get_router().stats())

"""A tour of the Router over mock providers: strategies, fallback, failure, streaming.

Needs no network and no keys; finishes in well under a second. Run it with
``multi-llm-orchestrator demo`` or ``python -m multi_llm_orchestrator demo``.

>>> run_demo()                                                      # doctest: +SKIP
== round-robin: each call starts at the next provider ==
...
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Optional, TextIO

from .config import ProviderConfig
from .errors import AllProvidersFailedError
from .providers.mock import MockProvider
from .router import Router

__all__ = ["run_demo"]

PROMPT = "What is Python?"


def _router(strategy: str, *models: str, **extra: float) -> Router:
    router = Router(strategy=strategy)
    for index, model in enumerate(models, 1):
        config = ProviderConfig(name=f"provider-{index}", model=model, extra={"delay": 0, **extra})
        router.add_provider(MockProvider(config))
    return router


def run_demo(out: Optional[TextIO] = None) -> int:
    """Print the tour to ``out`` (stdout by default); returns the exit status, 0."""
    out = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    say("== round-robin: each call starts at the next provider ==")
    with _router("round-robin", "mock-normal", "mock-normal", "mock-normal") as router:
        for call in range(1, 7):
            completion = router.complete(PROMPT)
            say(f"  call {call} -> {completion.provider}: {completion.text}")

    say("\n== random: a uniformly random provider per call ==")
    with _router("random", "mock-normal", "mock-normal", "mock-normal") as router:
        shares = Counter(router.complete(PROMPT).provider for _ in range(30))
        say("  30 calls: " + ", ".join(f"{name} x{shares[name]}" for name in sorted(shares)))

    say("\n== first-available: the first provider whose health check passes ==")
    with _router("first-available", "mock-unhealthy", "mock-normal", "mock-normal") as router:
        for name, result in router.health_report().items():
            say(f"  health {name}: {'healthy' if result.healthy else 'unhealthy'} ({result.latency_s * 1000:.1f} ms)")
        for call in range(1, 4):
            say(f"  call {call} -> {router.complete(PROMPT).provider}")

    say("\n== automatic fallback: provider-1 is down, the next one answers ==")
    with _router("round-robin", "mock-unavailable", "mock-ratelimit", "mock-normal") as router:
        completion = router.complete(PROMPT)
        for attempt in completion.attempts:
            detail = f"{attempt.error_type}: {attempt.error}" if attempt.error else "answered"
            say(f"  {attempt.provider}: {attempt.outcome} ({detail})")
        say(f"  -> {completion.provider}: {completion.text}")

    say("\n== every provider fails: one error listing each failure ==")
    with _router("round-robin", "mock-unavailable", "mock-auth-error", "mock-ratelimit") as router:
        try:
            router.route(PROMPT)
        except AllProvidersFailedError as exc:
            say(f"  {type(exc).__name__}: {exc}")

    say("\n== streaming: text arrives chunk by chunk ==")
    with _router("round-robin", "mock-normal", chunk_delay=0.02) as router:
        stream = router.route_stream("Tell me about streaming")
        out.write("  ")
        for chunk in stream:
            out.write(chunk)
            out.flush()
        say(f"\n  ({stream.provider}, {stream.usage.total_tokens if stream.usage else 0} tokens)")

    say("\n== stats after a few calls ==")
    with _router("round-robin", "mock-normal", "mock-unavailable") as router:
        for _ in range(6):
            router.route(PROMPT)
        for name, stats in router.stats()["providers"].items():
            say(
                f"  {name}: {stats['calls']} calls, {stats['successes']} ok, "
                f"failures {stats['failures_by_type'] or 0}, breaker {stats['breaker']['state']}"
            )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo())

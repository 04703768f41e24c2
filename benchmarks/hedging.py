"""Hedged requests against a heavy latency tail: p50/p99/p99.9 with and without hedging.

A loopback server (its own process, see ``_server.py``) answers each chat completion
after 20 ms, or after 1 s with probability 3 %, drawn independently per request. Two
``OpenAICompatibleProvider`` s point at it (different names, same URL). Each round sends
1,000 calls through ``Router()`` and through ``Router(hedge_after="p95")`` (the order
alternates between rounds); figures are medians over the rounds.

Calls arrive at a fixed rate (250 per second, run by a pool of 32 caller threads), not
from a fixed number of threads calling back to back: with closed-loop callers the
unhedged side, whose callers sit in 1 s calls, would run at half the load of the hedged
side, and the two latency distributions would not be comparable. The delay between a
call's scheduled and actual start is printed to show the callers kept up.

"extra requests" is counted on the server: requests received minus calls made. "slower
than the hedge delay" is the share of the unhedged calls that took longer than the
hedged Router's adaptive delay (each provider's rolling p95) at the end of the round:
hedging should add about that many requests and not many more.

    python benchmarks/hedging.py
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Tuple

import _common  # noqa: F401  (puts the repository on sys.path)
import _server
from _common import LoadWatch, median, quantile

from multi_llm_orchestrator import ProviderConfig, Router
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider

FAST, SLOW, SLOW_SHARE = 0.020, 1.0, 0.03
CALLS = 1000
RATE = 250.0  # calls per second, both sides
CALLERS = 32  # enough threads for the calls in flight at that rate (about 13 without hedging)
ROUNDS = 5
WARMUP = 200  # calls before measuring: the adaptive delay needs recent latencies
TARGET_P99 = 10.0
TARGET_EXTRA = 1.2
PROMPT = "Say hello"


def make_router(server: _server.ServerProcess, prefix: str, **options) -> Router:
    router = Router(**options)
    for name in ("a", "b"):
        router.add_provider(OpenAICompatibleProvider(
            ProviderConfig(name=f"{prefix}-{name}", model=_server.MODEL, base_url=server.url, timeout=10)
        ))
    return router


def run(router: Router, pool: ThreadPoolExecutor, calls: int) -> Tuple[List[float], float]:
    """The sorted latencies (s) of ``calls`` calls started at ``RATE`` per second on the
    pool's threads, and the largest delay (s) between a call's scheduled and actual start."""
    latencies = [0.0] * calls
    lateness = [0.0] * calls

    def one(index: int, scheduled: float) -> None:
        started = time.perf_counter()
        lateness[index] = started - scheduled
        router.route(PROMPT)
        latencies[index] = time.perf_counter() - started

    first = time.perf_counter() + 0.01
    futures = []
    for index in range(calls):
        scheduled = first + index / RATE
        pause = scheduled - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        futures.append(pool.submit(one, index, scheduled))
    for future in futures:
        future.result()
    return sorted(latencies), max(lateness)


def hedge_delay(router: Router) -> float:
    """The adaptive delay now: the mean over the providers of their rolling p95 latency."""
    delays = [p["latency_p95_s"] for p in router.stats()["providers"].values()]
    return sum(delays) / len(delays)


def main() -> None:
    watch = LoadWatch()
    with _server.spawn(fast=FAST, slow=SLOW, slow_share=SLOW_SHARE, seed=7) as server, \
            ThreadPoolExecutor(CALLERS) as pool:
        plain = make_router(server, "plain")
        hedged = make_router(server, "hedged", hedge_after="p95")
        run(plain, pool, WARMUP)
        run(hedged, pool, WARMUP)

        figures: Dict[str, Dict[str, List[float]]] = {"without": {}, "with": {}}
        slower: List[float] = []
        delays: List[float] = []
        for index in range(ROUNDS):
            order: List[Tuple[str, Router]] = [("without", plain), ("with", hedged)]
            latencies: Dict[str, List[float]] = {}
            for label, router in order if index % 2 == 0 else order[::-1]:
                before = server.requests()
                latencies[label], late = run(router, pool, CALLS)
                extra = (server.requests() - before - CALLS) / CALLS
                row = figures[label]
                for name, share in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)):
                    row.setdefault(name, []).append(quantile(latencies[label], share))
                row.setdefault("extra", []).append(extra)
                row.setdefault("late", []).append(late)
            delays.append(hedge_delay(hedged))
            slower.append(sum(1 for value in latencies["without"] if value > delays[-1]) / CALLS)
        hedge_stats = {name: p for name, p in hedged.stats()["providers"].items()}
        plain.close()
        hedged.close()
        served = server.stats()

    print(
        f"server latency: {FAST * 1000:.0f} ms, or {SLOW * 1000:.0f} ms for {SLOW_SHARE:.0%} of requests; "
        f"{CALLS} calls per round at {RATE:.0f}/s ({CALLERS} caller threads), {ROUNDS} rounds alternated, "
        f"after {WARMUP} warm-up calls"
    )
    for label in ("without", "with"):
        row = figures[label]
        text = "  ".join(f"{name} {median(row[name]) * 1000:7.1f} ms" for name in ("p50", "p99", "p99.9"))
        print(
            f"{label:>7} hedging: {text}  extra requests {median(row['extra']):5.1%}  "
            f"(callers' start lag at most {max(row['late']) * 1000:.1f} ms)"
        )
    print("p99 per round (ms): without " + " ".join(f"{v * 1000:.0f}" for v in figures["without"]["p99"])
          + "; with " + " ".join(f"{v * 1000:.0f}" for v in figures["with"]["p99"]))
    print(
        f"hedge delay (adaptive p95) at the end of each round: "
        + " ".join(f"{d * 1000:.1f}" for d in delays) + " ms; "
        f"unhedged calls slower than it: median {median(slower):.1%}"
    )
    for name, p in hedge_stats.items():
        print(f"  {name}: hedges started {p['hedges_started']}, won {p['hedges_won']}, lost {p['hedges_lost']}")
    print(
        f"server: {served['requests']} requests, {served['slow']} of them slow, "
        f"on {served['connections']} connections"
    )
    print(watch.summary())
    p99_ratio = median(figures["without"]["p99"]) / median(figures["with"]["p99"])
    extra_ratio = median(figures["with"]["extra"]) / median(slower) if median(slower) else float("inf")
    print(
        f"targets: p99 at least {TARGET_P99:g}x lower: {'met' if p99_ratio >= TARGET_P99 else 'MISSED'}; "
        f"extra requests / share slower than the delay = {extra_ratio:.2f} (<= {TARGET_EXTRA}): "
        f"{'met' if extra_ratio <= TARGET_EXTRA else 'MISSED'}"
    )
    print(f"ratio p99 without/with hedging: {p99_ratio:.1f}x")


if __name__ == "__main__":
    main()

"""Hedged requests against a heavy latency tail: p50/p99/p99.9 with and without hedging.

A loopback server (its own process, see ``_server.py``) answers each chat completion
after 20 ms, or after 1 s with probability 3 %, drawn independently per request. Two
``OpenAICompatibleProvider`` s point at it (different names, same URL) behind
``Router()``, and two more behind ``Router(hedge_after="p95")``. Each round sends 1,000
calls to each Router, interleaved (plain, hedged, plain, ...), so both sides run at the
same moment under the same load; figures are medians over the rounds.

Calls arrive at a fixed rate (125 per second per side, run by a pool of 32 caller
threads), not from a fixed number of threads calling back to back: closed-loop callers
stuck in 1 s calls would make the unhedged side run at a lower load than the hedged
one. The delay between a call's scheduled and actual start is printed to show the
callers kept up.

"extra requests" is counted on the server: requests received minus calls made (the
plain Router's attempts are one request each). "slower than the hedge delay" is the
share of the unhedged calls that took longer than the hedged Router's adaptive delay
(its providers' rolling p95 latency, sampled every 20 calls) in effect when they
started: hedging should add about that many requests and not many more.

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
from multi_llm_orchestrator.hedging import HedgePolicy
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider

FAST, SLOW, SLOW_SHARE = 0.020, 1.0, 0.03
CALLS = 1000  # per side and round
RATE = 125.0  # calls per second per side (250 per second in all)
CALLERS = 32  # enough threads for the calls in flight at that rate (about 10)
ROUNDS = 4
WARMUP = 200  # calls per side before measuring: the adaptive delay needs recent latencies
DELAY_EVERY = 20  # calls between two samples of the adaptive delay
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


class Round:
    """One round's results for both sides."""

    def __init__(self, calls: int) -> None:
        self.latency = {"without": [0.0] * calls, "with": [0.0] * calls}
        self.delay_at_start = [0.0] * calls  # the hedge delay when each unhedged call started
        self.lag = 0.0

    def slower_than_delay(self) -> float:
        pairs = zip(self.latency["without"], self.delay_at_start)
        return sum(1 for latency, delay in pairs if latency > delay) / len(self.delay_at_start)


def run(plain: Router, hedged: Router, pool: ThreadPoolExecutor, calls: int) -> Round:
    """``calls`` calls to each Router, interleaved, started at ``RATE`` per side per second."""
    result = Round(calls)
    lags = [0.0] * (2 * calls)

    def one(slot: int, router: Router, label: str, scheduled: float) -> None:
        started = time.perf_counter()
        lags[slot] = started - scheduled
        router.route(PROMPT)
        result.latency[label][slot // 2] = time.perf_counter() - started

    delay = hedge_delay(hedged)
    first = time.perf_counter() + 0.01
    futures = []
    for slot in range(2 * calls):
        scheduled = first + slot / (2 * RATE)
        pause = scheduled - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        if slot % 2 == 0:
            if slot % (2 * DELAY_EVERY) == 0:
                delay = hedge_delay(hedged)
            result.delay_at_start[slot // 2] = delay
            futures.append(pool.submit(one, slot, plain, "without", scheduled))
        else:
            futures.append(pool.submit(one, slot, hedged, "with", scheduled))
    for future in futures:
        future.result()
    result.lag = max(lags)
    return result


def hedge_delay(router: Router) -> float:
    """The adaptive delay now: the mean over the providers of their rolling p95 latency."""
    delays = [p["latency_p95_s"] for p in router.stats()["providers"].values()]
    # Before a provider has latencies the policy waits its default delay.
    delays = [HedgePolicy("p95").default_delay if d is None else d for d in delays]
    return sum(delays) / len(delays)


def attempts(router: Router) -> int:
    return sum(p["calls"] for p in router.stats()["providers"].values())


def main() -> None:
    watch = LoadWatch()
    with _server.spawn(fast=FAST, slow=SLOW, slow_share=SLOW_SHARE, seed=7) as server, \
            ThreadPoolExecutor(CALLERS) as pool:
        plain = make_router(server, "plain")
        hedged = make_router(server, "hedged", hedge_after="p95")
        run(plain, hedged, pool, WARMUP)

        figures: Dict[str, Dict[str, List[float]]] = {"without": {}, "with": {}}
        slower: List[float] = []
        delays: List[Tuple[float, float]] = []
        lags: List[float] = []
        for _ in range(ROUNDS):
            before, plain_before = server.requests(), attempts(plain)
            result = run(plain, hedged, pool, CALLS)
            extra = (server.requests() - before - (attempts(plain) - plain_before) - CALLS) / CALLS
            for label, latencies in result.latency.items():
                values = sorted(latencies)
                row = figures[label]
                for name, share in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)):
                    row.setdefault(name, []).append(quantile(values, share))
                row.setdefault("extra", []).append(extra if label == "with" else 0.0)
            slower.append(result.slower_than_delay())
            delays.append((min(result.delay_at_start), max(result.delay_at_start)))
            lags.append(result.lag)
        hedge_stats = {name: p for name, p in hedged.stats()["providers"].items()}
        plain.close()
        hedged.close()
        served = server.stats()

    print(
        f"server latency: {FAST * 1000:.0f} ms, or {SLOW * 1000:.0f} ms for {SLOW_SHARE:.0%} of requests; "
        f"{ROUNDS} rounds of {CALLS} calls per side, interleaved, at {RATE:.0f}/s per side "
        f"({CALLERS} caller threads), after {WARMUP} warm-up calls per side"
    )
    for label in ("without", "with"):
        row = figures[label]
        text = "  ".join(f"{name} {median(row[name]) * 1000:7.1f} ms" for name in ("p50", "p99", "p99.9"))
        print(f"{label:>7} hedging: {text}  extra requests {median(row['extra']):5.1%}")
    print("p99 per round (ms): without " + " ".join(f"{v * 1000:.0f}" for v in figures["without"]["p99"])
          + "; with " + " ".join(f"{v * 1000:.0f}" for v in figures["with"]["p99"]))
    print(
        "hedge delay (adaptive p95) range per round: "
        + ", ".join(f"{low * 1000:.1f}..{high * 1000:.1f}" for low, high in delays) + " ms"
    )
    print(
        "unhedged calls slower than the delay in effect when they started, per round: "
        + " ".join(f"{share:.1%}" for share in slower)
    )
    for name, p in hedge_stats.items():
        print(f"  {name}: hedges started {p['hedges_started']}, won {p['hedges_won']}, lost {p['hedges_lost']}")
    print(
        f"server: {served['requests']} requests, {served['slow']} of them slow, "
        f"on {served['connections']} connections; callers' start lag at most {max(lags) * 1000:.1f} ms"
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

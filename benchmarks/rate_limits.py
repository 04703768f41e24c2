"""Rate limits: a burst of 32 threads against two rate-limited providers, without and
with ``ProviderConfig.limits``.

Each provider is a loopback server in its own process that enforces "600 requests per
minute" as a provider does: at most 600 chat completions start in any window, beyond
that HTTP 429 with ``Retry-After`` saying when a slot frees. To keep the run short the
window is scaled from 60 s to ``--window`` seconds (default 6: 600 requests per 6 s,
i.e. 100 requests/s per provider, the same shape ten times faster); the Router's limits
get the same window (``{"rpm": 600, "window": 6}``).

32 threads call ``router.complete`` as fast as they can for ``--duration`` seconds
(default three windows), once with no limits (the Router learns of the limit from 429s:
transport retries after Retry-After, breakers opening, fallback) and once with
``limits={"rpm": 600, "window": W}`` on both providers and ``admission="wait"`` (calls
queue for capacity instead of failing). Printed side by side from one run: 429s the
servers sent, successful calls per second and their share of what the servers allow,
breaker trips, and the most starts any window held by the servers' own logs.

    python benchmarks/rate_limits.py [--window 6] [--duration 18] [--threads 32]
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List

import _common  # noqa: F401  (puts the repository on sys.path)
import _server
from _common import LoadWatch

from multi_llm_orchestrator import OrchestratorError, ProviderConfig, Router
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider

LIMIT = 600  # requests per window, as "600 rpm"


def run(servers: List[_server.ServerProcess], limits: Dict | None, threads: int, duration: float) -> Dict[str, float]:
    for server in servers:
        server.reset()
    options = {"admission": "wait", "timeout": 60.0} if limits else {}
    router = Router(strategy="round-robin", max_workers=threads, **options)
    for index, server in enumerate(servers):
        router.add_provider(OpenAICompatibleProvider(ProviderConfig(
            name=f"provider-{index + 1}", model=_server.MODEL, base_url=server.url, pool_size=threads,
            limits=limits,
        )))
    trips = 0
    stop = threading.Event()

    def watch_breakers() -> None:  # counts closed/half-open -> open transitions
        nonlocal trips
        last = {}
        while not stop.is_set():
            for name, row in router.stats()["providers"].items():
                state = row["breaker"]["state"]
                if state == "open" and last.get(name) != "open":
                    trips += 1
                last[name] = state
            stop.wait(0.005)

    outcomes = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    end = time.monotonic() + duration

    def worker(_: int) -> None:
        # Only calls that finish within the run count: a call queued near the end may
        # wait for the next window, and would otherwise stretch the measured time.
        ok = failed = 0
        while time.monotonic() < end:
            try:
                router.complete("Hello")
                ok += time.monotonic() <= end
            except OrchestratorError:
                failed += time.monotonic() <= end
        with lock:
            outcomes["ok"] += ok
            outcomes["failed"] += failed

    watcher = threading.Thread(target=watch_breakers, daemon=True)
    watcher.start()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    stop.set()
    watcher.join()
    router.close()
    stats = [server.stats() for server in servers]
    return {
        "rejected": sum(row["rejected"] for row in stats),
        "ok": outcomes["ok"],
        "failed": outcomes["failed"],
        "per_second": outcomes["ok"] / duration,
        "trips": trips,
        "max_in_window": max(row["max_in_window"] for row in stats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=6.0, help="seconds standing for the provider's minute")
    parser.add_argument("--duration", type=float, default=None, help="seconds per run (default: three windows)")
    parser.add_argument("--threads", type=int, default=32)
    args = parser.parse_args()
    window = args.window
    duration = args.duration or 3 * window
    load = LoadWatch()
    servers = [_server.spawn(limit=LIMIT, window=window) for _ in range(2)]
    try:
        without = run(servers, None, args.threads, duration)
        with_limits = run(servers, {"rpm": LIMIT, "window": window}, args.threads, duration)
    finally:
        for server in servers:
            server.close()
    allowed = 2 * LIMIT / window
    print(f"Rate limits: 2 providers, each a loopback server allowing {LIMIT} requests per {window:g} s "
          f"(600 rpm with the minute scaled to {window:g} s: {LIMIT / window:g} requests/s each, "
          f"{allowed:g}/s together), {args.threads} threads, {duration:g} s per run")
    print(f"Router with limits: limits={{'rpm': {LIMIT}, 'window': {window:g}}} on each provider, admission='wait'")
    print()
    rows = [
        ("429s sent by the servers", "{:d}", "rejected"),
        ("successful calls (finished within the run)", "{:d}", "ok"),
        ("failed calls (finished within the run)", "{:d}", "failed"),
        ("successful calls per second", "{:.1f}", "per_second"),
        ("breaker trips", "{:d}", "trips"),
        ("most starts in one window (server log)", "{:d}", "max_in_window"),
    ]
    print(f"{'':44}{'without limits':>16}{'with limits':>16}")
    for label, shape, key in rows:
        print(f"{label:44}{shape.format(int(without[key]) if 'd' in shape else without[key]):>16}"
              f"{shape.format(int(with_limits[key]) if 'd' in shape else with_limits[key]):>16}")
    share_without = without["per_second"] / allowed
    share_with = with_limits["per_second"] / allowed
    print(f"{'share of the allowed rate':44}{share_without:>15.1%}{share_with:>16.1%}")
    print()
    print(load.summary())
    target = with_limits["rejected"] == 0 and share_with >= 0.95
    print(f"target (0 429s with limits, >= 95% of the allowed rate): {'met' if target else 'NOT met'}")
    print(f"ratio with/without limits: successful calls per second {with_limits['per_second'] / without['per_second']:.2f}x, "
          f"429s {int(with_limits['rejected'])} vs {int(without['rejected'])}")


if __name__ == "__main__":
    main()

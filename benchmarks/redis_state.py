"""What ``RedisState`` costs: latency added per call, and fleet throughput, vs local state.

A real ``redis-server`` on loopback (started here; Debian's ``redis-server`` package).
Providers are zero-delay MockProviders, so the figures are the state's own cost, the
worst case relative to any real LLM call.

1. Latency: ``router.complete`` on one thread, a Router with local state vs one with
   ``RedisState`` (round-robin over two providers: per call one ``INCR`` for the
   position and one breaker reservation script; a success of a closed breaker costs no
   round trip). Rounds alternate the two; each round's median per-call latency is kept,
   and the median over rounds is shown (target: under 0.3 ms added).
2. Throughput: 4 processes x 8 threads (``tests/fleet_worker.py``) calling for a fixed
   time, with local state and with ``RedisState``, total calls per second.

    python benchmarks/redis_state.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import _common  # noqa: F401  (puts the repository on sys.path)
from _common import ROOT, LoadWatch, median, quantile, rounds_line

sys.path.insert(0, os.path.join(ROOT, "tests"))

from fakes.redis_server import RedisServer  # noqa: E402

from multi_llm_orchestrator import Router  # noqa: E402
from multi_llm_orchestrator.redis_state import RedisState  # noqa: E402

CALLS = 2_000
ROUNDS = 7
PROCESSES = 4
THREADS = 8
DURATION = 3.0
WORKER = os.path.join(ROOT, "tests", "fleet_worker.py")
PROVIDERS = [{"type": "mock", "name": name, "extra": {"delay": 0}} for name in ("a", "b")]


def per_call(router: Router) -> list:
    times = []
    for index in range(CALLS):
        started = time.perf_counter()
        router.complete(f"What is Python? {index % 50}")
        times.append(time.perf_counter() - started)
    return sorted(times)


def latency(url: str) -> None:
    local = Router.from_config({"providers": PROVIDERS})
    shared = Router.from_config({"state": {"redis": url, "prefix": "bench:"}, "providers": PROVIDERS})
    per_call(local), per_call(shared)  # warm up: imports, connections, scripts loaded
    local_medians, shared_medians, added, shared_p99 = [], [], [], []
    for _ in range(ROUNDS):
        local_times, shared_times = per_call(local), per_call(shared)
        local_medians.append(statistics.median(local_times))
        shared_medians.append(statistics.median(shared_times))
        added.append(shared_medians[-1] - local_medians[-1])
        shared_p99.append(quantile(shared_times, 0.99) - quantile(local_times, 0.99))
    print(rounds_line("local state, per call     ", local_medians, " ms", 1000, 3))
    print(rounds_line("RedisState, per call      ", shared_medians, " ms", 1000, 3))
    print(rounds_line("added by RedisState (p50) ", added, " ms", 1000, 3))
    print(rounds_line("added by RedisState (p99) ", shared_p99, " ms", 1000, 3))
    verdict = "met" if median(added) < 0.0003 else "NOT met"
    print(f"target: under 0.300 ms added at the median: {verdict}; "
          f"ratio RedisState/local {median(shared_medians) / median(local_medians):.1f}x")
    local.close()
    shared.close()


def fleet(router: dict) -> float:
    spec = json.dumps({"router": router, "threads": THREADS, "duration": DURATION})
    workers = [subprocess.Popen([sys.executable, WORKER, spec], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for _ in range(PROCESSES)]
    for worker in workers:
        worker.stdout.readline()  # "ready"
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()
    calls = errors = 0
    for worker in workers:
        report = json.loads(worker.communicate(timeout=120)[0].strip().splitlines()[-1])
        calls += sum(report["providers"].values())
        errors += sum(report["errors"].values())
    if errors:
        print(f"  ({errors} calls failed)")
    return calls / DURATION


def throughput(url: str) -> None:
    local = fleet({"providers": PROVIDERS})
    shared = fleet({"state": {"redis": url, "prefix": "bench:"}, "providers": PROVIDERS})
    print(f"local state : {local:10.0f} calls/s")
    print(f"RedisState  : {shared:10.0f} calls/s   ({shared / local:.2f}x of local)")


def main() -> None:
    watch = LoadWatch()
    with RedisServer() as server:
        print(f"Latency per call, 1 thread, {CALLS} calls x {ROUNDS} rounds (medians of rounds)")
        latency(server.url)
        print()
        print(f"Throughput, {PROCESSES} processes x {THREADS} threads, {DURATION:g} s each")
        throughput(server.url)
    print(watch.summary())


if __name__ == "__main__":
    main()

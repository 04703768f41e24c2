"""Parallel health checks: ``router.health_check()`` vs checking providers one by one.

Ten MockProviders whose health check takes 200 ms each. Sequential checking costs
10 x 200 ms; the Router checks them all at once on its pool, so the target is a wall
time of at most 1.3 x 200 ms. Rounds alternate parallel and sequential; medians shown.

    python benchmarks/health_check.py
"""

from __future__ import annotations

import time

import _common  # noqa: F401  (puts the repository on sys.path)
from _common import LoadWatch, median, rounds_line

from multi_llm_orchestrator import MockProvider, ProviderConfig, Router

PROVIDERS = 10
CHECK_DELAY = 0.2
ROUNDS = 7
TARGET = 1.3 * CHECK_DELAY


def main() -> None:
    watch = LoadWatch()
    providers = [
        MockProvider(ProviderConfig(name=f"mock-{i}", extra={"health_delay": CHECK_DELAY})) for i in range(PROVIDERS)
    ]
    router = Router()
    for provider in providers:
        router.add_provider(provider)
    router.health_check()  # warm-up: the pool's threads are started once, on first use

    parallel, sequential = [], []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        result = router.health_check()
        parallel.append(time.perf_counter() - started)
        assert all(result.values()) and len(result) == PROVIDERS, result

        started = time.perf_counter()
        healthy = [provider.health_check() for provider in providers]
        sequential.append(time.perf_counter() - started)
        assert all(healthy)
    router.close()

    print(f"{PROVIDERS} providers, each health check takes {CHECK_DELAY * 1000:.0f} ms; {ROUNDS} rounds alternated")
    print(rounds_line("sequential (provider.health_check() in a loop)", sequential, " ms", 1000))
    print(rounds_line("parallel   (router.health_check())           ", parallel, " ms", 1000))
    print(watch.summary())
    verdict = "met" if median(parallel) <= TARGET else "MISSED"
    print(f"target: parallel <= {TARGET * 1000:.0f} ms (1.3 x one check): {verdict}")
    print(
        f"ratio sequential/parallel: {median(sequential) / median(parallel):.2f}x "
        f"(parallel = {median(parallel) / CHECK_DELAY:.2f} x one check)"
    )


if __name__ == "__main__":
    main()

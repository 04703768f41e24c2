"""Failover cost: what a dead first provider adds to every call, breaker off and on.

The first provider points at a closed loopback port (connection refused at once), the
second at a healthy loopback server (its own process, answering at once). A strategy
that always tries them in that order makes every call start at the dead one. Compared
with a Router holding only the healthy provider:

- breaker off (``Router(breaker=False)``): every call pays a refused connection, the
  error mapping and the fallback;
- breaker on (the default): after 5 failures the dead provider's circuit opens and
  calls skip it, apart from one probe per cooldown (5 s, then 10 s, ...).

Both with ``max_retries=0`` on the dead provider (measured in alternating blocks,
medians shown), then with the default ``max_retries`` (2), from the very first call:
with another provider planned after it, the dead one's refused connection is not
retried by urllib3 (``failover.py``), so the default settings cost what
``max_retries=0`` costs. Target: at most 2 ms added per call.

    python benchmarks/failover.py
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Sequence

import _common  # noqa: F401  (puts the repository on sys.path)
import _server
from _common import LoadWatch, median

from multi_llm_orchestrator import ProviderConfig, Router
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider
from multi_llm_orchestrator.strategies import Strategy

BLOCK = 50
ROUNDS = 30
RETRY_CALLS_OFF = 6
FRESH_ROUNDS = 60
FRESH = ["healthy provider only", "dead first, breaker off", "dead first, breaker on"]
FRESH_MAKERS = {
    "healthy provider only": lambda router: router(None),
    "dead first, breaker off": lambda router: router(2, breaker=False),
    "dead first, breaker on": lambda router: router(2),
}
RETRY_CALLS_ON = 300
TARGET_OFF_MS = 2.0
PROMPT = "Say hello"


class InOrder(Strategy):
    """Always the providers in the order they were added: the dead one first."""

    name = "in-order"

    def order(self, states: Sequence, health: object) -> List:
        return list(states)


def per_call_ms(call: Callable[[], str], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1000


def main() -> None:
    watch = LoadWatch()
    dead_url = f"http://127.0.0.1:{_server.free_port_closed()}/v1"
    with _server.spawn() as server:

        def router(dead_retries: "int | None", **options) -> Router:
            result = Router(strategy=InOrder(), **options)
            if dead_retries is not None:
                result.add_provider(OpenAICompatibleProvider(ProviderConfig(
                    name="dead", model=_server.MODEL, base_url=dead_url, max_retries=dead_retries)))
            result.add_provider(OpenAICompatibleProvider(ProviderConfig(
                name="live", model=_server.MODEL, base_url=server.url)))
            return result

        routers: Dict[str, Router] = {
            "healthy provider only": router(None),
            "dead first, breaker off": router(0, breaker=False),
            "dead first, breaker on": router(0),
        }
        for item in routers.values():  # warm-up; the breaker-on Router's circuit opens here
            assert item.complete(PROMPT).provider == "live"
            per_call_ms(lambda: item.route(PROMPT), BLOCK)

        times: Dict[str, List[float]] = {name: [] for name in routers}
        names = list(routers)
        for index in range(ROUNDS):
            for name in names[index % 3:] + names[:index % 3]:
                times[name].append(per_call_ms(lambda: routers[name].route(PROMPT), BLOCK))
        breaker_stats = routers["dead first, breaker on"].stats()["providers"]["dead"]
        dead_calls = {name: r.stats()["providers"].get("dead", {}).get("calls", 0) for name, r in routers.items()}
        for item in routers.values():
            item.close()

        # Default max_retries, from the very first call: fresh Routers (new connections,
        # nothing learnt yet), each against a fresh healthy-only Router, alternated.
        fresh: Dict[str, List[float]] = {name: [] for name in FRESH}
        first: Dict[str, List[float]] = {name: [] for name in FRESH}
        for index in range(FRESH_ROUNDS):
            for name in FRESH[index % 3:] + FRESH[:index % 3]:
                item = FRESH_MAKERS[name](router)
                started = time.perf_counter()
                item.route(PROMPT)
                first[name].append((time.perf_counter() - started) * 1000)
                rest = per_call_ms(lambda: item.route(PROMPT), RETRY_CALLS_OFF)
                # Per call over the first 1 + RETRY_CALLS_OFF calls, the first included.
                fresh[name].append((first[name][-1] + rest * RETRY_CALLS_OFF) / (1 + RETRY_CALLS_OFF))
                item.close()
        on = router(2)
        retry_on = per_call_ms(lambda: on.route(PROMPT), RETRY_CALLS_ON)
        retry_on_dead = on.stats()["providers"]["dead"]["calls"]
        retry_on_breaker = on.stats()["providers"]["dead"]["breaker"]["state"]
        on.close()

    base = median(times["healthy provider only"])
    print(f"dead provider: connection refused on {dead_url}; healthy one: loopback server answering at once")
    print(f"max_retries=0 on the dead provider: {ROUNDS} rounds of {BLOCK} calls, alternated (median ms per call)")
    for name in names:
        values = sorted(times[name])
        added = median(values) - base
        extra = "" if name == names[0] else f"  added {added:+.2f} ms"
        print(
            f"  {name:<24} {median(values):5.2f} ms/call{extra:<16} (quartiles of the rounds "
            f"{values[len(values) // 4]:.2f}..{values[3 * len(values) // 4]:.2f}; dead tried {dead_calls[name]}x)"
        )
    print(f"  breaker of the dead provider at the end: {breaker_stats['breaker']}")
    print(
        f"default max_retries (2) on the dead provider, fresh Routers: {FRESH_ROUNDS} rounds, alternated "
        f"(median ms of the first call, and per call over the first {1 + RETRY_CALLS_OFF})"
    )
    first_base, fresh_base = median(first[FRESH[0]]), median(fresh[FRESH[0]])
    for name in FRESH:
        extra = "" if name == FRESH[0] else (
            f"  added {median(first[name]) - first_base:+.2f} / {median(fresh[name]) - fresh_base:+.2f} ms"
        )
        print(f"  {name:<24} first call {median(first[name]):6.2f} ms, first {1 + RETRY_CALLS_OFF} {median(fresh[name]):5.2f} ms/call{extra}")
    print(
        f"  dead first, breaker on, one Router: {retry_on:.2f} ms/call over {RETRY_CALLS_ON} calls "
        f"(added {retry_on - base:+.2f} ms; dead tried {retry_on_dead}x, then the circuit was {retry_on_breaker})"
    )
    # Paired: each round's difference to the healthy-only block measured next to it, so
    # a burst of load on the machine shifts both sides of a difference alike.
    def paired(series: Dict[str, List[float]], name: str, reference: str) -> float:
        return median(a - b for a, b in zip(series[name], series[reference]))

    added_off = paired(times, "dead first, breaker off", names[0])
    added_on = paired(times, "dead first, breaker on", names[0])
    print(f"added per call, median of the rounds' paired differences: breaker off {added_off:+.2f} ms, on {added_on:+.2f} ms")
    print(watch.summary())
    verdict = "met" if added_off < TARGET_OFF_MS else "MISSED"
    print(f"target: under {TARGET_OFF_MS:g} ms added with the breaker off: {verdict}")
    default_added = max(paired(fresh, name, FRESH[0]) for name in FRESH[1:])
    verdict = "met" if default_added < TARGET_OFF_MS else "MISSED"
    print(
        f"target: default max_retries, under {TARGET_OFF_MS:g} ms added from the first call "
        f"(per call over the first {1 + RETRY_CALLS_OFF}, median paired difference, worse of breaker off/on: {default_added:+.2f} ms): {verdict}"
    )
    print(f"target: near zero added with the breaker on: {added_on:+.2f} ms")
    off_ratio = median(times["dead first, breaker off"]) / base
    on_ratio = median(times["dead first, breaker on"]) / base
    print(
        f"ratio time per call vs the healthy provider alone (max_retries=0): "
        f"breaker off {off_ratio:.2f}x, on {on_ratio:.2f}x"
    )


if __name__ == "__main__":
    main()

"""HTTP throughput: the OpenAI-compatible provider through the Router vs bare requests.

A loopback server (its own process, see ``_server.py``) answers every
``POST /v1/chat/completions`` at once with a fixed completion. Three clients send the
same JSON body to it:

- ``router``: ``Router().route(prompt)`` over one ``OpenAICompatibleProvider``;
- ``raw``: ``requests.Session().post(url, json=body).json()`` and the answer's text, with
  one Session shared by all threads (as the provider shares its own);
- ``raw, trust_env=False``: the same Session without requests' per-request environment
  lookups (proxies, .netrc, CA bundle variables), which the provider also skips: the
  stricter baseline;
- ``provider.complete``: the provider alone, to split the gap between the provider and
  the Router.

Each is measured sequentially, with 8 and with 32 threads, in short blocks of calls: the blocks
of the clients alternate (in a rotating order), so a burst of load from elsewhere on the
machine hits all clients alike, and each figure is the median of its blocks. The client
process's CPU time per call is shown too: on a busy machine it moves less than wall time. Below the 0.9 target (or
with ``--profile``) the Router side is profiled with cProfile.

    python benchmarks/http_throughput.py [--profile]
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Tuple

import _common  # noqa: F401  (puts the repository on sys.path)
import _server
from _common import LoadWatch, median

import requests

from multi_llm_orchestrator import ProviderConfig, Router
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider

BLOCK = 24  # calls per block; blocks of the clients alternate, so drift hits all alike
BLOCKS = 40  # blocks per client and mode
THREAD_COUNTS = (8, 32)
BLOCKS_OF = {1: BLOCK, 8: BLOCK, 32: 64}  # calls per block: a multiple of the threads
TARGET = 0.9
PROMPT = "Say hello"


def block_rate(
    call: Callable[[], str], pool: Optional[ThreadPoolExecutor], calls: int, threads: int = 1
) -> Tuple[float, float]:
    """Calls per second of one block of ``calls`` calls (on this thread when ``pool`` is
    None, else spread evenly over the pool's threads) and this process's CPU seconds per
    call, which load from other processes on the machine barely changes."""

    def some(count: int) -> None:
        for _ in range(count):
            call()

    share = calls // threads if pool is not None else calls
    cpu, started = time.process_time(), time.perf_counter()
    if pool is None:
        some(calls)
    else:
        for future in [pool.submit(some, share) for _ in range(threads)]:
            future.result()
    done = share * (threads if pool is not None else 1)
    return done / (time.perf_counter() - started), (time.process_time() - cpu) / done


def profile(call: Callable[[], str], calls: int = 2000) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        call()
    profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    print(f"\ncProfile of {calls} sequential router.route calls: {stats.total_calls / calls:.0f} function calls each")
    print("top 12 by own time:")
    stats.sort_stats("tottime").print_stats(12)
    print("the library's own functions, top 12 by own time:")
    stats.sort_stats("tottime").print_stats("multi_llm_orchestrator", 12)


def main() -> None:
    watch = LoadWatch()
    with _server.spawn() as server:
        provider = OpenAICompatibleProvider(ProviderConfig(name="bench", model=_server.MODEL, base_url=server.url))
        router = Router()
        router.add_provider(provider)
        body = {"model": _server.MODEL, "messages": [{"role": "user", "content": PROMPT}]}
        default_session = requests.Session()
        strict_session = requests.Session()
        strict_session.trust_env = False

        def raw(session: requests.Session) -> Callable[[], str]:
            def call() -> str:
                response = session.post(server.chat_url, json=body, timeout=30)
                response.raise_for_status()
                return response.json()["choices"][0]["message"]["content"]

            return call

        clients: Dict[str, Callable[[], str]] = {
            "router": lambda: router.route(PROMPT),
            "provider.complete": lambda: provider.complete(PROMPT).text,
            "raw": raw(default_session),
            "raw, trust_env=False": raw(strict_session),
        }
        answers = {name: call() for name, call in clients.items()}
        assert len(set(answers.values())) == 1, answers

        names = list(clients)
        pools: Dict[int, Optional[ThreadPoolExecutor]] = {1: None}
        pools.update({threads: ThreadPoolExecutor(threads) for threads in THREAD_COUNTS})
        results: Dict[tuple, List[float]] = {(name, threads): [] for name in names for threads in pools}
        cpu: Dict[tuple, List[float]] = {(name, threads): [] for name in names for threads in pools}
        for threads, pool in pools.items():  # warm-up: connections opened, code paths hot
            for name in names:
                block_rate(clients[name], pool, 4 * BLOCKS_OF[threads], threads)
        for index in range(BLOCKS):
            order = names[index % len(names):] + names[:index % len(names)]
            for threads, pool in pools.items():
                for name in order:
                    rate, seconds = block_rate(clients[name], pool, BLOCKS_OF[threads], threads)
                    results[name, threads].append(rate)
                    cpu[name, threads].append(seconds)
        served = server.stats()
        for pool in pools.values():
            if pool is not None:
                pool.shutdown()

        print(
            f"{BLOCKS} blocks of {BLOCK} calls ({BLOCKS_OF[32]} with 32 threads) per client and mode, alternated; "
            f"server in its own process, no latency"
        )
        for threads in pools:
            label = "sequential" if threads == 1 else f"{threads} threads"
            for name in names:
                values = sorted(results[name, threads])
                rate = median(values)
                print(
                    f"{label:>10}  {name:<21} {rate:4.0f} calls/s = {1e6 / rate:5.0f} us/call "
                    f"(quartiles {values[len(values) // 4]:.0f}..{values[3 * len(values) // 4]:.0f} calls/s); "
                    f"client CPU {median(cpu[name, threads]) * 1e6:4.0f} us/call"
                )
        print(f"server: {served['requests']} completions on {served['connections']} TCP connections in all")

        ratios = {}
        for threads in pools:
            routed = median(results["router", threads])
            ratios[threads] = (routed / median(results["raw", threads]),
                               routed / median(results["raw, trust_env=False", threads]))
        print(watch.summary())
        worst = min(min(pair) for pair in ratios.values())
        verdict = "met" if worst >= TARGET else "MISSED"
        print(f"target: router/raw >= {TARGET} sequential and with {', '.join(map(str, THREAD_COUNTS))} threads (both baselines): {verdict}")
        if worst < TARGET or "--profile" in sys.argv:
            profile(clients["router"])
        router.close()
        default_session.close()
        strict_session.close()
        shown = ", ".join(
            f"{'sequential' if threads == 1 else f'{threads} threads'} {pair[0]:.2f}" for threads, pair in ratios.items()
        )
        strict = ", ".join(f"{pair[1]:.2f}" for pair in ratios.values())
        print(f"ratio router/raw calls per second: {shown} (vs raw with trust_env=False: {strict})")


if __name__ == "__main__":
    main()

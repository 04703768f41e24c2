"""Embeddings throughput: Router.embed's parallel batches vs a plain loop vs a hand-written pool.

A loopback server (its own process, see ``_server.py``) answers ``POST /v1/embeddings``
after a fixed per-request latency (default 20 ms, a nearby embeddings server), one small
vector per input. 10,000 short texts are embedded in batches of 100 texts (100 requests)
by three clients:

- ``plain loop``: one ``requests.Session``, the batches one after another (what a script
  without concurrency does);
- ``hand-written pool``: a ``ThreadPoolExecutor`` of 8 threads over raw ``requests``
  calls sharing one Session, the vectors put back in input order (the best a careful
  user writes by hand);
- ``router.embed``: ``Router().embed(texts, max_parallel=8)`` over one
  ``OpenAICompatibleProvider`` with ``embedding_batch_size=100``: the same batches, plus
  the Router's breaker, metrics, attempt list and checks of every vector.

Rounds alternate the clients, so load from elsewhere on the machine hits all alike; the
figures are medians over the rounds. Targets: the Router many times faster than the
plain loop (at least 5x), and within 10% of the hand-written pool.

    python benchmarks/embeddings.py [--latency 0.02] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List

import _common  # noqa: F401  (puts the repository on sys.path)
import _server
from _common import LoadWatch, median

import requests

from multi_llm_orchestrator import ProviderConfig, Router
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider

TEXTS = 10_000
BATCH = 100
WORKERS = 8
FASTER_THAN_LOOP = 5.0  # "many times faster"
WITHIN_POOL = 1.10


def raw_batch(session: requests.Session, url: str, texts: List[str]) -> List[List[float]]:
    response = session.post(url, json={"model": _server.MODEL, "input": texts, "encoding_format": "float"}, timeout=30)
    response.raise_for_status()
    data = sorted(response.json()["data"], key=lambda item: item["index"])
    return [item["embedding"] for item in data]


def batches(texts: List[str]) -> List[List[str]]:
    return [texts[start:start + BATCH] for start in range(0, len(texts), BATCH)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.02, help="server seconds per request (default 0.02)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    texts = [f"short text number {index}" for index in range(TEXTS)]
    watch = LoadWatch()
    with _server.spawn(fast=args.latency) as server:
        url = server.url + "/embeddings"
        session = requests.Session()
        session.trust_env = False  # no proxy lookups per request (the provider skips them too)
        pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="bench-pool")
        router = Router()
        router.add_provider(OpenAICompatibleProvider(ProviderConfig(
            name="local", model=_server.MODEL, base_url=server.url, pool_size=WORKERS,
            extra={"embedding_batch_size": BATCH})))

        def plain_loop() -> List[List[float]]:
            vectors: List[List[float]] = []
            for batch in batches(texts):
                vectors.extend(raw_batch(session, url, batch))
            return vectors

        def hand_pool() -> List[List[float]]:
            vectors: List[List[float]] = []
            for part in pool.map(lambda batch: raw_batch(session, url, batch), batches(texts)):
                vectors.extend(part)
            return vectors

        def router_embed() -> List[List[float]]:
            return router.embed(texts, max_parallel=WORKERS).vectors

        clients: Dict[str, Callable[[], List[List[float]]]] = {
            "plain loop": plain_loop, "hand-written pool": hand_pool, "router.embed": router_embed,
        }
        for client in clients.values():  # warm up connections and code paths
            assert len(client()) == TEXTS
        times: Dict[str, List[float]] = {name: [] for name in clients}
        for round_number in range(args.rounds):
            names = list(clients)
            names = names[round_number % len(names):] + names[:round_number % len(names)]
            for name in names:
                server.reset()
                started = time.perf_counter()
                vectors = clients[name]()
                times[name].append(time.perf_counter() - started)
                assert len(vectors) == TEXTS and vectors[7][3] == len(texts[7]), name
                assert server.requests() == TEXTS // BATCH, (name, server.requests())
        router.close()
        pool.shutdown()
        session.close()

    print(f"Embeddings: {TEXTS:,} texts, batches of {BATCH} ({TEXTS // BATCH} requests), "
          f"{args.latency * 1000:.0f} ms per request, {WORKERS} workers, {args.rounds} rounds")
    print("-" * 78)
    for name, values in times.items():
        shown = " ".join(f"{value:.3f}" for value in values)
        print(f"{name:<18} median {median(values):7.3f} s   {TEXTS / median(values):9,.0f} texts/s   (rounds: {shown})")
    loop, hand, routed = (median(times[name]) for name in clients)
    speedup, versus_pool = loop / routed, routed / hand
    print(watch.summary())
    verdict = "OK" if speedup >= FASTER_THAN_LOOP and versus_pool <= WITHIN_POOL else "MISSED"
    print(f"ratio plain loop/router.embed: {speedup:.1f}x (target >= {FASTER_THAN_LOOP:.0f}x); "
          f"router.embed/hand-written pool: {versus_pool:.3f} (target <= {WITHIN_POOL:.2f}) {verdict}")
    return 0 if speedup >= FASTER_THAN_LOOP and versus_pool <= WITHIN_POOL else 1


if __name__ == "__main__":
    sys.exit(main())

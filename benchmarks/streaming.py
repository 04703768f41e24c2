"""Stream reading speed: ``router.route_stream`` vs requests' own ``iter_lines``.

A loopback server (its own process, ``_stream_server.py``) streams prebuilt chunked
answers: "many" is 240 small events (one HTTP chunk each), "large" is 8 events of 32 KB
each. Clients, per stream shape:

- ``route_stream``: ``Router().route_stream(prompt)`` over one provider, every text
  piece read (the deadline checks and size limits of the reader in force);
- ``raw``: ``requests.Session().post(url, json=body, stream=True).iter_lines()`` on a
  naive Session, each event's JSON parsed and its text taken (what a caller of bare
  requests has to do to get what ``route_stream`` yields: the text pieces);
  ``raw, trust_env=False``: the same without requests' per-request environment lookups
  (the stricter baseline). ``raw lines only`` reads the lines without parsing them, for
  reference (no target).

The OpenAI-compatible SSE stream gives the targets; the GigaChat SSE, YandexGPT JSON
lines and Ollama NDJSON readers are timed beside their own raw ``iter_lines``.
Sequential and with 8 threads, in short alternating blocks (medians of the blocks);
time to first chunk is the median over the sequential streams.
Targets: ``route_stream`` at least 1.0x the naive session, at least 0.9x the tuned one.

    python benchmarks/streaming.py [--profile]
"""

from __future__ import annotations

import cProfile
import json
import pstats
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Tuple

import _common  # noqa: F401  (puts the repository on sys.path)
import _stream_server
from _common import LoadWatch, median

import requests

from multi_llm_orchestrator import ProviderConfig, Router
from multi_llm_orchestrator.providers.gigachat import GigaChatProvider
from multi_llm_orchestrator.providers.ollama import OllamaProvider
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider
from multi_llm_orchestrator.providers.yandexgpt import YandexGPTProvider

BLOCK = 8  # streams per block
BLOCKS = 8  # blocks per client and mode
THREADS = 8
PROMPT = "Say hello"
TARGET_NAIVE = 1.0
TARGET_TUNED = 0.9

Stream = Callable[[Callable[[], None]], int]  # reads one stream, calls first() at its first chunk


def routed(provider) -> Stream:
    router = Router()
    router.add_provider(provider)

    def read(first: Callable[[], None]) -> int:
        count = 0
        for _ in router.route_stream(PROMPT):
            if not count:
                first()
            count += 1
        return count

    read.router = router  # type: ignore[attr-defined]
    return read


def sse_text(line: bytes, state: dict) -> Optional[str]:
    """The text of an OpenAI/GigaChat SSE line (None: not a text event)."""
    if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
        return None
    choices = json.loads(line[5:])["choices"]
    return choices[0]["delta"].get("content") if choices else None


def yandex_text(line: bytes, state: dict) -> Optional[str]:
    """The new text of a YandexGPT frame (frames hold the text so far)."""
    text = json.loads(line)["result"]["alternatives"][0]["message"]["text"]
    previous, state["text"] = state.get("text", ""), text
    return text[len(previous):]


def ollama_text(line: bytes, state: dict) -> Optional[str]:
    return json.loads(line)["message"]["content"]


def raw(session: requests.Session, url: str, body: dict, text_of: Optional[Callable[[bytes, dict], Optional[str]]]) -> Stream:
    def read(first: Callable[[], None]) -> int:
        count = 0
        state: dict = {}
        with session.post(url, json=body, stream=True, timeout=30) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if line and (text_of is None or text_of(line, state)):
                    if not count:
                        first()
                    count += 1
        return count

    return read


def block(read: Stream, pool: Optional[ThreadPoolExecutor], streams: int, firsts: List[float]) -> float:
    """Streams per second of one block (``pool`` None: sequential, first-chunk times kept)."""

    def one() -> None:
        started = time.perf_counter()
        read(lambda: firsts.append(time.perf_counter() - started) if pool is None else None)

    started = time.perf_counter()
    if pool is None:
        for _ in range(streams):
            one()
    else:
        for future in [pool.submit(lambda: [one() for _ in range(streams // THREADS)]) for _ in range(THREADS)]:
            future.result()
    return streams / (time.perf_counter() - started)


def clients(url: str, kind: str, naive: requests.Session, tuned: requests.Session) -> Dict[str, Stream]:
    model = f"{kind}-model"
    chat = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "stream": True}
    return {
        "openai route_stream": routed(OpenAICompatibleProvider(ProviderConfig(name="openai", model=model, base_url=url + "/v1"))),
        "openai raw": raw(naive, url + "/v1/chat/completions", chat, sse_text),
        "openai raw, trust_env=False": raw(tuned, url + "/v1/chat/completions", chat, sse_text),
        "openai raw lines only, trust_env=False": raw(tuned, url + "/v1/chat/completions", chat, None),
        "gigachat route_stream": routed(GigaChatProvider(ProviderConfig(
            name="giga", model=model, base_url=url + "/giga", extra={"access_token": "bench-access-token"}))),
        "gigachat raw": raw(naive, url + "/giga/chat/completions", chat, sse_text),
        "yandex route_stream": routed(YandexGPTProvider(ProviderConfig(
            name="yandex", model=model, base_url=url, api_key="bench-iam-token", folder_id="b1gbench"))),
        "yandex raw": raw(naive, url + "/foundationModels/v1/completion", chat, yandex_text),
        "ollama route_stream": routed(OllamaProvider(ProviderConfig(name="ollama", model=model, base_url=url))),
        "ollama raw": raw(naive, url + "/api/chat", chat, ollama_text),
    }


def profile(read: Stream, streams: int = 200) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(streams):
        read(lambda: None)
    profiler.disable()
    print(f"\ncProfile of {streams} sequential openai route_stream reads (many), top 15 by own time:")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(15)


def main() -> None:
    watch = LoadWatch()
    naive = requests.Session()
    tuned = requests.Session()
    tuned.trust_env = False
    pool = ThreadPoolExecutor(THREADS)
    pools: Dict[int, Optional[ThreadPoolExecutor]] = {1: None, THREADS: pool}
    rates: Dict[Tuple[str, str, int], List[float]] = {}
    firsts: Dict[Tuple[str, str], List[float]] = {}
    chunks: Dict[Tuple[str, str], int] = {}
    every: Dict[str, Dict[str, Stream]] = {}
    with _stream_server.spawn() as server:
        for kind in ("many", "large"):
            every[kind] = clients(server.url, kind, naive, tuned)
            for name, read in every[kind].items():
                chunks[kind, name] = read(lambda: None)  # warm-up, and the count of chunks
                for threads, executor in pools.items():
                    rates[kind, name, threads] = []
                    block(read, executor, BLOCK, [])
                firsts[kind, name] = []
        for index in range(BLOCKS):
            for kind in ("many", "large"):
                names = list(every[kind])
                order = names[index % len(names):] + names[:index % len(names)]
                for threads, executor in pools.items():
                    for name in order:
                        rates[kind, name, threads].append(block(every[kind][name], executor, BLOCK, firsts[kind, name]))
        if "--profile" in sys.argv:
            profile(every["many"]["openai route_stream"])
        for kind in every:
            for read in every[kind].values():
                router = getattr(read, "router", None)
                if router is not None:
                    router.close()
    pool.shutdown()
    naive.close()
    tuned.close()

    print(f"{BLOCKS} blocks of {BLOCK} streams per client, shape and mode, alternated; "
          f""f"many: {_stream_server.MANY} events, large: {_stream_server.LARGE} x {_stream_server.LARGE_SIZE // 1024} KB")
    for kind in every:
        for threads in pools:
            label = "sequential" if threads == 1 else f"{threads} threads"
            for name in every[kind]:
                rate = median(rates[kind, name, threads])
                first = f"; first chunk {median(firsts[kind, name]) * 1e6:6.0f} us" if threads == 1 else ""
                print(f"{kind:>5} {label:>10}  {name:<38} {rate:6.1f} streams/s = "
                      f"{rate * chunks[kind, name]:8.0f} chunks/s ({chunks[kind, name]} a stream){first}")
    print(watch.summary())
    worst_naive = worst_tuned = float("inf")
    for kind in every:
        for threads in pools:
            routed_rate = median(rates[kind, "openai route_stream", threads])
            naive_ratio = routed_rate / median(rates[kind, "openai raw", threads])
            tuned_ratio = routed_rate / median(rates[kind, "openai raw, trust_env=False", threads])
            worst_naive, worst_tuned = min(worst_naive, naive_ratio), min(worst_tuned, tuned_ratio)
            others = ", ".join(
                f"{provider} {median(rates[kind, provider + ' route_stream', threads]) / median(rates[kind, provider + ' raw', threads]):.2f}x"
                for provider in ("gigachat", "yandex", "ollama")
            )
            print(f"ratio route_stream/raw streams per second, {kind}, "
                  f"{'sequential' if threads == 1 else f'{threads} threads'}: naive {naive_ratio:.2f}x, "
                  f"trust_env=False {tuned_ratio:.2f}x (lines only, unparsed: "
                  f"{routed_rate / median(rates[kind, 'openai raw lines only, trust_env=False', threads]):.2f}x); "
                  f"other readers vs their raw iter_lines: {others}")
    print(f"target: route_stream >= {TARGET_NAIVE}x the naive session: {'met' if worst_naive >= TARGET_NAIVE else 'MISSED'} "
          f"(worst {worst_naive:.2f}x)")
    print(f"target: route_stream >= {TARGET_TUNED}x trust_env=False: {'met' if worst_tuned >= TARGET_TUNED else 'MISSED'} "
          f"(worst {worst_tuned:.2f}x)")


if __name__ == "__main__":
    main()

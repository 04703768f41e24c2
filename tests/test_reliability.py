"""Reliability under faults (issue 8): many threads, one Router, three faulty servers.

32 threads make 2,400 calls (complete, route and fully consumed route_stream) through one
Router, once with plain fallback and once hedging, over two OpenAI-compatible providers and one GigaChat provider, each against its
own FaultServer answering ~30 % of chat requests with a 500, a 429, a reset, a response
slower than the timeout, malformed JSON, a cut body or stream, or an error event.

Checked: only the library's typed errors escape; no call outlives the Router's
deadline by more than 10 %; the stats add up; breakers open and recover; after
close() no library thread and no file descriptor is left behind.
"""

import base64
import gc
import logging
import os
import threading
import time
from collections import Counter

import pytest
from fakes.fault_server import THREAD_PREFIX, FaultServer

from multi_llm_orchestrator import (
    AllProvidersFailedError,
    Completion,
    GenerationParams,
    OrchestratorError,
    ProviderConfig,
    ProviderError,
    Router,
)
from multi_llm_orchestrator.breaker import BreakerPolicy
from multi_llm_orchestrator.providers.gigachat import GigaChatProvider
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider

THREADS = 32
CALLS_PER_THREAD = 75  # 2,400 calls in all
ROUTER_TIMEOUT = 2.0
PROVIDER_TIMEOUT = 0.9
DEADLINE_TOLERANCE = 1.10
AUTH_KEY = base64.b64encode(b"reliability-client:reliability-secret").decode()
FAULTS = {"500": 2, "429": 1, "reset": 2, "slow": 1, "malformed": 1, "cut": 2, "sse_error": 1}


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def fd_targets():
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return targets


def settle(condition, seconds=2.0):
    """Wait up to ``seconds`` for ``condition()`` to hold (sockets and threads wind down)."""
    deadline = time.monotonic() + seconds
    while True:
        gc.collect()
        if condition() or time.monotonic() > deadline:
            return condition()
        time.sleep(0.05)


def library_threads():
    return [t for t in threading.enumerate() if t.name.startswith("mlo-") and t.is_alive()]


def make_providers(servers):
    first, second, giga = servers
    common = dict(timeout=PROVIDER_TIMEOUT, max_retries=1, pool_size=THREADS)
    return [
        OpenAICompatibleProvider(ProviderConfig(
            name="openai-a", model=first.model, base_url=first.openai_url, api_key="reliability-key-a", **common)),
        OpenAICompatibleProvider(ProviderConfig(
            name="openai-b", model=second.model, base_url=second.openai_url, api_key="reliability-key-b", **common)),
        GigaChatProvider(ProviderConfig(
            name="giga", api_key=AUTH_KEY, base_url=giga.gigachat_url, auth_url=giga.auth_url, **common)),
    ]


class Outcomes:
    """What every call ended with, collected from all threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.kinds = Counter()
        self.escaped = []  # (type name, message) of anything not an OrchestratorError
        self.bad_results = []
        self.walls = []
        self.slowest = Counter()  # kind -> longest wall time
        self.answered_by = Counter()
        self.skipped_attempts = 0

    def record(self, wall, kind, answer=None, error=None):
        with self.lock:
            self.walls.append(wall)
            self.kinds[kind] += 1
            self.slowest[kind] = max(self.slowest[kind], round(wall, 3))
            if answer is not None:
                self.answered_by[answer.provider] += 1
                self.skipped_attempts += sum(1 for a in answer.attempts if a.outcome == "skipped")
            if error is not None and not isinstance(error, OrchestratorError):
                self.escaped.append((type(error).__name__, str(error)[:200]))


def one_call(router, index, outcomes):
    prompt = f"question {index}"
    params = GenerationParams(temperature=0.5, max_tokens=32) if index % 3 == 0 else None
    mode = ("complete", "complete", "route", "stream", "complete")[index % 5]
    started = time.monotonic()
    try:
        if mode == "stream":
            stream = router.route_stream(prompt, params)
            text = "".join(stream)
            wall = time.monotonic() - started
            ok = stream.done and text.startswith("Fault-free answer to: question")
            if not ok:
                outcomes.bad_results.append(("stream", text, stream.done))
            outcomes.record(wall, "stream-ok", Completion(text, stream.provider, stream.model, attempts=stream.attempts))
        elif mode == "route":
            text = router.route(prompt, params)
            wall = time.monotonic() - started
            if text != f"Fault-free answer to: {prompt}":
                outcomes.bad_results.append(("route", text))
            outcomes.record(wall, "route-ok")
        else:
            completion = router.complete(prompt, params)
            wall = time.monotonic() - started
            if not isinstance(completion, Completion) or completion.text != f"Fault-free answer to: {prompt}":
                outcomes.bad_results.append(("complete", completion))
            outcomes.record(wall, "complete-ok", completion)
    except AllProvidersFailedError as exc:
        outcomes.record(time.monotonic() - started, type(exc).__name__, error=exc)
    except ProviderError as exc:  # a stream that failed after its first chunk
        outcomes.record(time.monotonic() - started, f"mid-stream {type(exc).__name__}", error=exc)
    except Exception as exc:
        outcomes.record(time.monotonic() - started, f"escaped {type(exc).__name__}", error=exc)


@pytest.mark.parametrize("hedge_after", [None, "p95"], ids=["fallback", "hedged"])
def test_one_router_survives_thousands_of_faulty_calls_from_32_threads(hedge_after):
    gc.collect()
    fds_before = open_fds()
    threads_before = set(threading.enumerate())
    servers = [
        FaultServer("openai", fault_rate=0.3, faults=FAULTS, seed=1, slow_delay=1.8, retry_after=0.2,
                    api_key="reliability-key-a"),
        FaultServer("openai", fault_rate=0.3, faults=FAULTS, seed=2, slow_delay=1.8, retry_after=0.2,
                    api_key="reliability-key-b"),
        FaultServer("gigachat", fault_rate=0.3, faults=FAULTS, seed=3, slow_delay=1.8, retry_after=0.2,
                    auth_key=AUTH_KEY, token_ttl=3.0),  # tokens refreshed every ~1.5 s under load
    ]
    for server in servers:
        server.start()
    router = Router(
        "round-robin",
        timeout=ROUTER_TIMEOUT,
        hedge_after=hedge_after,
        breaker=BreakerPolicy(failure_threshold=3, cooldown=0.1, max_cooldown=0.4),
    )
    try:
        for provider in make_providers(servers):
            router.add_provider(provider)

        breaker_states = {provider: set() for provider in ("openai-a", "openai-b", "giga")}
        reopened_after_open = Counter()
        events = Counter()
        events_lock = threading.Lock()

        def listen(event):
            with events_lock:
                events[(event.kind, event.outcome)] += 1

        router.add_listener(listen)
        watching = threading.Event()

        def watch():
            was_open = set()
            while not watching.wait(0.01):
                for name, snapshot in router.stats()["providers"].items():
                    state = snapshot["breaker"]["state"]
                    breaker_states[name].add(state)
                    if state == "open":
                        was_open.add(name)
                    elif state == "closed" and name in was_open:
                        was_open.discard(name)
                        reopened_after_open[name] += 1

        watcher = threading.Thread(target=watch, name="test-breaker-watch")
        watcher.start()
        outcomes = Outcomes()
        counter = iter(range(THREADS * CALLS_PER_THREAD))
        counter_lock = threading.Lock()

        def worker():
            while True:
                with counter_lock:
                    index = next(counter, None)
                if index is None:
                    return
                one_call(router, index, outcomes)

        started = time.monotonic()
        workers = [threading.Thread(target=worker, name=f"test-caller-{n}") for n in range(THREADS)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(120)
        elapsed = time.monotonic() - started
        watching.set()
        watcher.join(5)
        assert not any(thread.is_alive() for thread in workers), "callers hung"

        calls = THREADS * CALLS_PER_THREAD
        print(f"\n{calls} calls in {elapsed:.1f} s; outcomes {dict(outcomes.kinds)}")
        print("served:", [dict(server.counts) for server in servers], "skipped attempts:", outcomes.skipped_attempts)
        assert sum(outcomes.kinds.values()) == calls
        assert outcomes.escaped == [], f"non-library exceptions escaped: {Counter(outcomes.escaped).most_common(5)}"
        assert outcomes.bad_results == []
        # Most calls succeed: each has three providers to try.
        succeeded = sum(count for kind, count in outcomes.kinds.items() if kind.endswith("-ok"))
        assert succeeded > calls * 0.8
        assert outcomes.kinds["stream-ok"] > 0 and outcomes.kinds["route-ok"] > 0
        assert set(outcomes.answered_by) == {"openai-a", "openai-b", "giga"}

        # Deadline: no call outlives the Router's timeout by more than 10 %.
        slowest = max(outcomes.walls)
        late = sorted(wall for wall in outcomes.walls if wall > ROUTER_TIMEOUT * DEADLINE_TOLERANCE)
        print(f"slowest call {slowest:.3f} s; p99 {sorted(outcomes.walls)[int(calls * 0.99)]:.3f} s; "
              f"slowest by outcome {dict(outcomes.slowest)}")
        assert late == [], f"{len(late)} call(s) outlived the deadline: {late[-5:]}"

        # Every fault kind was served, and faults hit every server.
        for server in servers:
            for kind in FAULTS:
                assert server.counts[kind] > 0, (server.wire, kind, dict(server.counts))
            assert server.counts["ok"] > server.counts["500"]
        assert servers[2].counts["oauth"] >= 2, "the GigaChat token was never refreshed"

        # Breakers opened under the faults and closed again.
        assert any("open" in states for states in breaker_states.values()), breaker_states
        assert sum(reopened_after_open.values()) > 0, breaker_states
    finally:
        for server in servers:
            server.stop()
        router.close()

    for server in servers:
        assert server.alive_threads() == []
    assert not [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]

    # The books balance once every attempt, abandoned ones included, has finished.
    stats = router.stats()
    assert stats["calls"] == calls
    assert stats["succeeded"] + stats["failed"] == calls
    assert stats["succeeded"] == succeeded
    for name, provider in stats["providers"].items():
        assert provider["in_flight"] == 0, name
        finished = provider["successes"] + provider["failures"] + provider["abandoned"]
        assert finished == provider["calls"], (name, provider)
        assert provider["calls"] > 0
    assert events[("call", "ok")] + events[("call", "error")] == calls
    attempts = sum(provider["calls"] for provider in stats["providers"].values())
    assert events[("attempt", "ok")] + events[("attempt", "error")] + events[("attempt", "lost")] == attempts
    hedges = sum(provider["hedges_started"] for provider in stats["providers"].values())
    if hedge_after is None:
        assert hedges == 0
    else:  # slow answers were raced, within the default budget of 10 % plus the reserve
        assert 0 < hedges <= calls * 0.1 + 3 * (elapsed / 10 + 1)
        assert sum(p["hedges_won"] + p["hedges_lost"] for p in stats["providers"].values()) <= hedges

    # Nothing left behind: library threads, other threads, sockets.
    assert settle(lambda: not library_threads()), library_threads()
    assert settle(lambda: set(threading.enumerate()) <= threads_before), set(threading.enumerate()) - threads_before
    assert settle(lambda: open_fds() <= fds_before), f"{open_fds()} fds open, {fds_before} before"


# Focused fault cases found while building the suite ------------------------------------


def test_a_stream_that_trickles_then_stalls_ends_at_the_deadline():
    # Each chunk comes before the read timeout, then the server goes silent: without the
    # read timeout capped to the time left, the call lasted one more whole read timeout.
    with FaultServer("openai", chunks=12, chunk_delay=0.08, slow_delay=10) as server:
        provider = OpenAICompatibleProvider(ProviderConfig(
            name="trickle", model=server.model, base_url=server.openai_url, max_retries=0))
        with Router(timeout=0.8) as router:
            router.add_provider(provider)
            prompt = "one two three four five six seven eight nine ten eleven twelve"
            for call in (lambda: provider.stream(prompt, timeout=0.8), lambda: router.route_stream(prompt)):
                server.force("slow", at_chunk=7)  # stalls ~0.5 s in
                started = time.monotonic()
                stream = call()
                with pytest.raises(ProviderError) as caught:
                    for _ in stream:
                        pass
                wall = time.monotonic() - started
                assert type(caught.value).__name__ == "ProviderTimeoutError"
                assert stream.text.startswith("Fault-free answer")  # text came before the stall
                assert 0.75 < wall < 0.8 * DEADLINE_TOLERANCE, wall


def test_a_fractional_retry_after_is_waited_for_not_blamed_on_our_headers():
    # urllib3 rejects Retry-After: 0.2 with InvalidHeader; it surfaced as "a request header
    # has whitespace or control characters ... check the key or token".
    with FaultServer("gigachat", auth_key=AUTH_KEY, retry_after=0.2) as server:
        provider = GigaChatProvider(ProviderConfig(
            name="giga", api_key=AUTH_KEY, base_url=server.gigachat_url, auth_url=server.auth_url,
            timeout=2, max_retries=1))
        with provider:
            server.force("429")
            started = time.monotonic()
            assert provider.complete("after a pause").text == "Fault-free answer to: after a pause"
            assert time.monotonic() - started >= 0.2
            assert server.counts["429"] == 1 and server.counts["ok"] == 1


@pytest.mark.parametrize("wire", ["openai", "gigachat"])
def test_every_fault_kind_maps_to_a_typed_error_on_both_wires(wire):
    with FaultServer(wire, auth_key=AUTH_KEY, slow_delay=1.0, retry_after=5) as server:
        if wire == "openai":
            provider = OpenAICompatibleProvider(ProviderConfig(
                name="p", model=server.model, base_url=server.openai_url, timeout=0.3, max_retries=0))
        else:
            provider = GigaChatProvider(ProviderConfig(
                name="p", api_key=AUTH_KEY, base_url=server.gigachat_url, auth_url=server.auth_url,
                timeout=0.3, max_retries=0))
        expected = {
            "500": "ProviderUnavailableError", "429": "RateLimitError", "reset": "ProviderUnavailableError",
            "slow": "ProviderTimeoutError", "malformed": "ResponseFormatError", "cut": "ProviderUnavailableError",
        }
        with provider:
            for kind, error in expected.items():
                for streaming in (False, True):
                    server.force(kind, at_chunk=1 if streaming else None)
                    with pytest.raises(ProviderError) as caught:
                        if streaming:
                            "".join(provider.stream("hi"))
                        else:
                            provider.complete("hi")
                    assert type(caught.value).__name__ == error, (kind, streaming, caught.value)
                    assert caught.value.provider == "p"
            server.force("sse_error", at_chunk=1)
            with pytest.raises(ProviderError, match="mid-stream"):
                "".join(provider.stream("hi"))
            assert provider.complete("hi").text == "Fault-free answer to: hi"  # the connection pool recovered


def test_stop_is_prompt_while_responses_are_still_sleeping():
    server = FaultServer("openai", fault_rate=1.0, faults={"slow": 1}, slow_delay=30).start()
    provider = OpenAICompatibleProvider(ProviderConfig(
        name="p", model=server.model, base_url=server.openai_url, timeout=0.2, max_retries=0))
    with provider:
        for _ in range(3):
            with pytest.raises(ProviderError):
                provider.complete("hi")
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    assert server.alive_threads() == []
    assert server.counts["slow"] == 3


# Hostile servers (issue 11) ---------------------------------------------------------------

HOSTILE_TIMEOUT = 0.8


def test_a_hostile_server_mix_leaves_no_untyped_error_no_late_call_and_nothing_behind(caplog):
    # Slow headers and bodies, trickled headers, 200 MB bodies, gzip bombs, endless
    # lines and events, resets mid-body: from a server in its own process, so the
    # threads and fds counted are the client's.
    from fakes.hostile_server import HostileServer

    # urllib3 logs "Failed to parse headers" (trickled headers) with its traceback, and
    # pytest keeps log records: their frames would hold the cut sockets' files open.
    caplog.set_level(logging.ERROR, logger="urllib3")
    gc.collect()
    fds_before = open_fds(); targets_before = fd_targets()
    threads_before = set(threading.enumerate())
    with HostileServer() as server:
        router = Router("round-robin", timeout=HOSTILE_TIMEOUT, hedge_after="p95",
                        breaker=BreakerPolicy(failure_threshold=5, cooldown=0.05, max_cooldown=0.2))
        for index in range(3):
            router.add_provider(OpenAICompatibleProvider(ProviderConfig(
                name=f"hostile-{index}", model="hostile-model", base_url=server.url("mix") + "/v1",
                timeout=HOSTILE_TIMEOUT, max_retries=0, max_response_bytes=1024 * 1024)))
        outcomes = Outcomes()
        counter = iter(range(16 * 12))
        counter_lock = threading.Lock()

        def worker():
            while True:
                with counter_lock:
                    index = next(counter, None)
                if index is None:
                    return
                prompt = f"question {index}"
                started = time.monotonic()
                try:
                    if index % 3 == 0:
                        stream = router.route_stream(prompt)
                        text = "".join(stream)
                        if text != f"Answer to: {prompt} ":
                            outcomes.bad_results.append(("stream", text))
                        outcomes.record(time.monotonic() - started, "stream-ok")
                    else:
                        text = router.route(prompt)
                        if text != f"Answer to: {prompt}":
                            outcomes.bad_results.append(("route", text))
                        outcomes.record(time.monotonic() - started, "route-ok")
                except OrchestratorError as exc:
                    outcomes.record(time.monotonic() - started, type(exc).__name__, error=exc)
                except Exception as exc:
                    outcomes.record(time.monotonic() - started, f"escaped {type(exc).__name__}", error=exc)

        workers = [threading.Thread(target=worker, name=f"test-hostile-{n}") for n in range(16)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(60)
        assert not any(thread.is_alive() for thread in workers), "callers hung"
        started = time.monotonic()
        router.close()
        closing = time.monotonic() - started
    print(f"\nhostile mix: {dict(outcomes.kinds)}; slowest {max(outcomes.walls):.3f} s; close {closing:.3f} s")
    assert sum(outcomes.kinds.values()) == 16 * 12
    assert outcomes.escaped == [] and outcomes.bad_results == []
    assert outcomes.kinds["route-ok"] > 0 and outcomes.kinds["stream-ok"] > 0
    late = [wall for wall in outcomes.walls if wall > HOSTILE_TIMEOUT * DEADLINE_TOLERANCE]
    assert late == [], late
    assert closing < 1.5, closing
    for name, provider in router.stats()["providers"].items():
        assert provider["in_flight"] == 0, name
        assert provider["successes"] + provider["failures"] + provider["abandoned"] == provider["calls"], provider
    assert settle(lambda: not library_threads()), library_threads()
    assert settle(lambda: set(threading.enumerate()) <= threads_before), set(threading.enumerate()) - threads_before
    assert settle(lambda: open_fds() <= fds_before), (sorted(targets_before), sorted(fd_targets()))

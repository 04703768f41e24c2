"""A fleet of 4 processes x 8 threads on one real Redis behaves like one Router.

Each process is ``tests/fleet_worker.py`` (a Router built from a configuration file's
dict with ``"state": {"redis": ...}``); the LLM servers run here, in the test process,
and count what the whole fleet sent them.
"""

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import redis

from multi_llm_orchestrator.tokens import estimate_tokens, text_tokens
from multi_llm_orchestrator.types import to_messages

from fakes import FakeOpenAIServer, Fault
from fakes.fault_server import FaultServer
from fakes.redis_server import RedisServer

# Redis "timeout" 2 s in these fleets: on a loaded machine a slow round trip must not pass
# for an outage (which would rightly fall back to per-process state).
WORKER = os.path.join(os.path.dirname(__file__), "fleet_worker.py")
PROCESSES = 4
THREADS = 8
AUTH_KEY = base64.b64encode(b"fleet-client:fleet-secret").decode()


def fleet(spec, processes=PROCESSES, during=None):
    """Run ``processes`` workers on ``spec``, all released at once; ``during()`` runs here
    meanwhile. Returns their reports."""
    workers = [
        subprocess.Popen([sys.executable, WORKER, json.dumps(spec)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
        for _ in range(processes)
    ]
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.flush()
        if during is not None:
            during()
        reports = []
        for worker in workers:
            out, _ = worker.communicate(timeout=60)
            assert worker.returncode == 0
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()


def total(reports, key):
    counter = Counter()
    for report in reports:
        counter.update(report[key])
    return counter


def openai(name, server, **fields):
    return {"type": "openai", "name": name, "model": server.model, "base_url": server.url, "max_retries": 0,
            **fields}


def test_a_cold_fleet_makes_one_oauth_request(redis_url):
    with FaultServer("gigachat", auth_key=AUTH_KEY, token_ttl=600) as server:
        server_oauth_delay(server, 0.2)  # every process asks while the first fetch is on its way
        router = {"state": {"redis": redis_url, "timeout": 2.0},
                  "providers": [{"type": "gigachat", "name": "giga", "api_key": AUTH_KEY,
                                 "base_url": server.gigachat_url, "auth_url": server.auth_url}]}
        reports = fleet({"router": router, "threads": THREADS, "calls": 2, "timeout": 10})
        assert total(reports, "errors") == Counter()
        assert sum(total(reports, "providers").values()) == PROCESSES * THREADS * 2
        assert server.counts["oauth"] == 1


def server_oauth_delay(server, seconds):
    """Slow the fault server's OAuth answers down (it has no knob for it)."""
    original = server._oauth

    def slow(handler, body):
        time.sleep(seconds)
        original(handler, body)

    server._oauth = slow


def test_a_killed_provider_is_abandoned_after_threshold_failures_in_all_and_probed_once(redis_url):
    threshold, cooldown = 5, 0.8
    failures = []  # arrival times of requests to the dead provider
    # The dead provider fails at once, the healthy one takes 0.1 s: the burst measures the
    # breaker, not how many calls a fast loop can start in a millisecond.
    with FakeOpenAIServer(latency=0.1) as healthy, FakeOpenAIServer() as doomed:
        killed = threading.Event()
        lock = threading.Lock()

        def dead(request):
            if not killed.is_set():
                return None
            with lock:
                failures.append(time.monotonic())
            return Fault(status=503, body={"error": {"message": "gone", "type": "server_error"}})

        doomed.fault_hook = dead
        router = {"state": {"redis": redis_url, "timeout": 2.0}, "breaker": {"failure_threshold": threshold, "cooldown": cooldown},
                  "providers": [openai("doomed", doomed), openai("healthy", healthy)]}
        reports = fleet({"router": router, "threads": THREADS, "duration": 2.2, "timeout": 10},
                        during=lambda: (time.sleep(0.5), killed.set()))
    assert total(reports, "errors") == Counter()  # every call fell back to the healthy one
    first = failures[0]
    burst = [t for t in failures if t - first < cooldown / 2]
    probes = [t for t in failures if t - first >= cooldown / 2]
    # Per-process breakers would need threshold failures in each of the 4 processes (20+);
    # shared, the fleet stops after the threshold plus the calls already on their way.
    assert threshold <= len(burst) < 3 * threshold, [round(t - first, 4) for t in burst]
    assert len(probes) == 1, [round(t - first, 3) for t in probes]  # one probe: the next is 2 x cooldown later


def test_an_rpm_limit_holds_across_the_fleet(redis_url):
    rpm, window = 15, 1.0
    arrivals = []
    with FakeOpenAIServer() as server:
        server.fault_hook = lambda request: arrivals.append(time.monotonic())
        router = {"state": {"redis": redis_url, "timeout": 2.0}, "admission": "wait",
                  "providers": [openai("limited", server, limits={"rpm": rpm, "window": window})]}
        reports = fleet({"router": router, "threads": THREADS, "duration": 2.5, "timeout": 10})
    arrivals.sort()
    busiest = max(sum(1 for t in arrivals[i:] if t - start < window) for i, start in enumerate(arrivals))
    assert busiest <= rpm  # no window of the server's clock saw more than rpm requests
    assert len(arrivals) >= 2 * rpm  # and the limit was used, not starved
    assert sum(total(reports, "providers").values()) == len(arrivals)


def test_a_monthly_budget_holds_to_within_one_calls_cost(redis_url):
    price = 1.0  # per 1k tokens: a mock call of ~10 tokens costs ~0.01
    limit = 0.5
    router = {"state": {"redis": redis_url, "timeout": 2.0}, "budget": {"limit": limit, "period": "month"},
              "providers": [{"type": "mock", "name": "m", "extra": {"delay": 0.005},
                             "prices": {"prompt": price, "completion": price}}]}
    reports = fleet({"router": router, "threads": THREADS, "duration": 3.0, "params": {"max_tokens": 8},
                     "stop_on": ["BudgetExceededError"]})
    spent = sum(r["prompt_tokens"] + r["completion_tokens"] for r in reports) * price / 1000
    # One call's cost as admission sees it before sending: the estimated prompt plus max_tokens.
    one_call = (estimate_tokens(to_messages("question 7-9999")) + 8) * price / 1000
    assert limit - one_call <= spent <= limit + 1e-9
    assert total(reports, "errors")["BudgetExceededError"] == PROCESSES * THREADS


def test_a_budget_holds_across_the_fleet_for_embeddings_too(redis_url):
    price = 10.0  # per 1k tokens: an embedded "question 7-9" (2 words) costs 0.02
    limit = 0.5
    router = {"state": {"redis": redis_url, "timeout": 2.0}, "budget": {"limit": limit, "period": "month"},
              "providers": [{"type": "mock", "name": "m", "extra": {"delay": 0.005}, "prices": {"prompt": price}}]}
    reports = fleet({"router": router, "threads": THREADS, "duration": 3.0, "embed": True,
                     "stop_on": ["BudgetExceededError"]})
    spent = sum(r["prompt_tokens"] for r in reports) * price / 1000
    one_batch = text_tokens("question 7-9999") * price / 1000  # what admission holds for one batch
    assert limit - one_batch <= spent <= limit + 1e-9
    assert total(reports, "errors")["BudgetExceededError"] == PROCESSES * THREADS


def test_round_robin_shares_are_exact_across_the_fleet(redis_url):
    router = {"state": {"redis": redis_url, "timeout": 2.0},
              "providers": [{"type": "mock", "name": name, "extra": {"delay": 0}} for name in "abc"]}
    reports = fleet({"router": router, "threads": THREADS, "calls": 30})
    assert total(reports, "providers") == {"a": 320, "b": 320, "c": 320}


def test_redis_killed_and_restarted_mid_run_fails_no_call_and_sharing_resumes():
    server = RedisServer().start()
    router = {"state": {"redis": server.url, "timeout": 0.05, "retry_interval": 0.1},
              "breaker": {"failure_threshold": 3},
              "providers": [{"type": "mock", "name": name, "extra": {"delay": 0.002}} for name in "ab"]}

    def outage():
        time.sleep(0.6)
        server.kill()
        time.sleep(0.6)
        server.start()

    try:
        reports = fleet({"router": router, "threads": THREADS, "duration": 2.0, "timeout": 5}, during=outage)
        assert total(reports, "errors") == Counter(), [report["samples"] for report in reports]
        assert all(not report["redis_down"] for report in reports)
        # The restarted server started empty: the counter there was written after it came back.
        assert int(redis.Redis.from_url(server.url).get("mlo:seq:round-robin")) > 100
    finally:
        server.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_64_identical_concurrent_calls_across_the_fleet_make_one_provider_call(redis_url, stream):
    with FakeOpenAIServer(latency=0.4) as server:
        router = {"state": {"redis": redis_url, "timeout": 2.0}, "cache": True, "providers": [openai("slow", server)]}
        reports = fleet({"router": router, "threads": 16, "calls": 1, "prompt": "the same question",
                         "timeout": 20, "stream": stream})
        assert total(reports, "errors") == Counter()
        assert sum(total(reports, "providers").values()) == 64
        assert server.request_count == 1
        assert sum(report["cached"] for report in reports) == 63

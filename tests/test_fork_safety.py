"""Fork safety (issue 11): a Router built before ``os.fork()`` (gunicorn --preload, Celery
prefork, multiprocessing) works in the child without sharing anything live with the
parent. Parent and child call one loopback server (its own process) at the same time with
unique nonces; each must get only its own answers."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from multi_llm_orchestrator import Router
from multi_llm_orchestrator.auth import TokenCache
from multi_llm_orchestrator.providers.base import ProviderConfig
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")

TESTS = Path(__file__).resolve().parent
CALLS, THREADS = 40, 4
CHILD_LIMIT_S = 60.0  # only to catch a hang

SERVER = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from fakes import FakeOpenAIServer
with FakeOpenAIServer(latency=0.002) as server:
    print(server.url, flush=True)
    sys.stdin.read()  # serve until the test closes stdin
"""


@pytest.fixture(scope="module")
def server_url():
    process = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield process.stdout.readline().strip()
    finally:
        process.stdin.close()
        process.wait(10)


def answers(router, who):
    """CALLS calls from THREADS threads, each with its own nonce: what came back wrong."""
    wrong, errors = [], []

    def one(index):
        nonce = f"{who}-{os.getpid()}-{index}"
        try:
            text = router.route(nonce)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
            return
        if text != f"Fake answer to: {nonce}":
            wrong.append(text)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, range(CALLS)))
    return {"wrong": wrong, "errors": errors}


def in_child(work):
    """Run ``work()`` in a forked child; return what it returned (JSON) or raise."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 0
        try:
            os.close(read_end)
            data = json.dumps(work()).encode()
        except BaseException as exc:  # report, do not run the parent's test code
            data, status = json.dumps({"crashed": repr(exc)}).encode(), 1
        try:
            os.write(write_end, data)
        finally:
            os._exit(status)
    os.close(write_end)
    return pid, read_end


def child_result(pid, read_end):
    chunks, deadline = [], time.monotonic() + CHILD_LIMIT_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([read_end], [], [], 0.5)
            if ready:
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        else:
            os.kill(pid, signal.SIGKILL)
            pytest.fail("the forked child hung")
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    return json.loads(b"".join(chunks) or b'{"crashed": "no output"}')


def warm_up(router):
    """Fill the parent's pool with keep-alive connections (and start its executor threads)."""
    with ThreadPoolExecutor(THREADS) as pool:
        assert all(pool.map(lambda i: router.route(f"warm-{i}").startswith("Fake answer"), range(THREADS * 2)))


@pytest.mark.parametrize(
    "settings",
    [{}, {"timeout": 10}, {"health_interval": 0.05}, {"timeout": 10, "hedge_after": 1.0}],
    ids=["plain", "router-timeout", "health-interval", "hedging"],
)
def test_parent_and_child_each_get_only_their_own_answers(server_url, settings):
    with Router(**settings) as router:
        router.add_provider(OpenAICompatibleProvider(
            ProviderConfig(name="fake", model="fake-model", base_url=server_url, timeout=5, max_retries=0)))
        warm_up(router)
        forked_at = time.monotonic()

        def child_work():
            result = answers(router, "child")
            if settings.get("health_interval"):
                # The refresher was restarted in the child and checks again.
                until = time.monotonic() + 5
                while time.monotonic() < until:
                    cached = router._health.cached("fake")
                    if cached is not None and cached.checked_at > forked_at:
                        break
                    time.sleep(0.02)
                result["health_refreshed"] = cached is not None and cached.checked_at > forked_at
                result["refresher_alive"] = any(
                    t.name == "mlo-health-refresh" and t.is_alive() for t in threading.enumerate())
            return result

        pid, pipe = in_child(child_work)
        parent = answers(router, "parent")
        child = child_result(pid, pipe)
        assert parent == {"wrong": [], "errors": []}
        assert child.pop("crashed", None) is None
        assert (child["wrong"], child["errors"]) == ([], [])
        if settings.get("health_interval"):
            assert child["health_refreshed"] and child["refresher_alive"]
        # The parent still works afterwards, on its own connections.
        assert router.route("after") == "Fake answer to: after"


def test_a_token_cache_lock_held_at_the_fork_is_new_in_the_child():
    tokens = TokenCache(lambda deadline: ("fresh-token-value", 60.0), owner="p")
    with tokens._lock:  # as a parent thread fetching a token at the moment of the fork
        pid, pipe = in_child(lambda: {"token": tokens.get(time.monotonic() + 2).value})
    assert child_result(pid, pipe) == {"token": "fresh-token-value"}


def test_breaker_probe_and_in_flight_of_parent_threads_do_not_stick_in_the_child():
    with Router(breaker={"failure_threshold": 1, "cooldown": 0}) as router:
        provider = OpenAICompatibleProvider(ProviderConfig(name="p", model="m", base_url="http://127.0.0.1:9/v1"))
        router.add_provider(provider)
        state = router._states[0]
        state.metrics.started()  # an attempt in flight in a parent thread...
        state.breaker._probe_in_flight = True  # ...which is the half-open probe
        state.breaker._state = "open"

        def child_work():
            return {"in_flight": router.stats()["providers"]["p"]["in_flight"],
                    "probe": state.breaker.reserve()}

        pid, pipe = in_child(child_work)
        assert child_result(pid, pipe) == {"in_flight": 0, "probe": "probe"}
        assert router.stats()["providers"]["p"]["in_flight"] == 1  # the parent is not touched


def test_fresh_locks_renews_every_kind_of_lock_and_keeps_event_state():
    from multi_llm_orchestrator import forking

    class Holder:
        def __init__(self):
            self.lock, self.rlock, self.cond = threading.Lock(), threading.RLock(), threading.Condition()
            self.set_event, self.clear_event, self.other = threading.Event(), threading.Event(), 3
            self.set_event.set()

    holder = Holder()
    old = dict(vars(holder))
    holder.lock.acquire()
    forking.fresh_locks(holder)
    assert all(getattr(holder, name) is not old[name] for name in ("lock", "rlock", "cond", "set_event", "clear_event"))
    assert holder.lock.acquire(timeout=0.1) and holder.rlock.acquire(timeout=0.1)
    assert holder.set_event.is_set() and not holder.clear_event.is_set() and holder.other == 3


APP_DIR = TESTS.parent / "examples" / "django_app"


def test_gunicorn_preload_with_two_workers_and_threads_answers_each_request(server_url, tmp_path):
    """The Django example under ``gunicorn --preload -w 2 --threads 4``: the Router (and
    its background health checks, already talking to the server) is built in the master
    and forked into both workers; every concurrent request gets its own answer."""
    pytest.importorskip("gunicorn")
    config = tmp_path / "router.json"
    config.write_text(json.dumps({"health_interval": 0.05, "providers": [
        {"type": "openai", "name": "fake", "model": "fake-model", "base_url": server_url, "timeout": 5, "max_retries": 0},
    ]}), encoding="utf-8")
    # In the master, after the app is loaded and before the workers are forked: use the
    # Router as a startup check would, so pools, executor threads and tokens are live.
    hooks = tmp_path / "gunicorn_hooks.py"
    hooks.write_text(
        "def when_ready(server):\n"
        "    from llm_gateway.apps import get_router\n"
        "    router = get_router()\n"
        "    from concurrent.futures import ThreadPoolExecutor\n"
        "    assert router.health_check(timeout=5) == {'fake': True}\n"
        "    with ThreadPoolExecutor(8) as pool:\n"
        "        answers = list(pool.map(lambda i: router.route(f'warm-up {i}', timeout=5), range(16)))\n"
        "    assert answers == [f'Fake answer to: warm-up {i}' for i in range(16)]\n",
        encoding="utf-8",
    )
    env = {**os.environ, "LLM_ROUTER_CONFIG": str(config), "PYTHONPATH": str(TESTS.parent)}
    command = [sys.executable, "-m", "gunicorn", "--preload", "-w", "2", "--threads", "4", "-b", "127.0.0.1:0",
               "-c", str(hooks), "--chdir", str(APP_DIR), "--graceful-timeout", "2", "project.wsgi"]
    from gunicorn.config import KNOWN_SETTINGS

    if any(setting.name == "control_socket" for setting in KNOWN_SETTINGS):  # gunicorn >= 25: none in ~/.gunicorn
        command.insert(-1, "--no-control-socket")
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    log, booted, url = [], threading.Event(), []

    def read_log():
        for line in process.stderr:
            log.append(line)
            if "Listening at: " in line:
                url.append(line.split("Listening at: ")[1].split()[0])
            if sum("Booting worker" in entry for entry in log) == 2 and url:
                booted.set()

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        assert booted.wait(30), "".join(log)

        import requests

        def ask(index):
            nonce = f"gunicorn-{index}"
            try:
                response = requests.post(url[0] + "/ask", json={"prompt": nonce}, timeout=15)
            except requests.RequestException as exc:
                return nonce, None, {"error": repr(exc)}
            return nonce, response.status_code, response.json()

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(ask, range(64)))
        wrong = [(nonce, status, body) for nonce, status, body in results
                 if status != 200 or body.get("text") != f"Fake answer to: {nonce}"]
        assert wrong == [], "".join(log[-20:])
        for _ in range(4):  # health checks run on each worker's own pool
            health = requests.get(url[0] + "/health?refresh=1", timeout=10)
            assert health.status_code == 200 and health.json()["fake"]["healthy"], health.text
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        reader.join(5)


def test_one_object_failing_to_reset_does_not_stop_the_others(caplog):
    from multi_llm_orchestrator import forking

    class Broken:
        def _after_fork(self):
            raise RuntimeError("cannot reset")

    broken = Broken()
    forking.register(broken)
    tokens = TokenCache(lambda deadline: ("fresh-token-value", 60.0), owner="p")
    with tokens._lock:
        pid, pipe = in_child(lambda: {"token": tokens.get(time.monotonic() + 2).value})
    assert child_result(pid, pipe) == {"token": "fresh-token-value"}
    del broken

"""The example Django app (examples/django_app): one Router built at startup from a config
file, shared by views running on many threads."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import requests

from multi_llm_orchestrator import MockProvider, ProviderConfig, Router

APP_DIR = Path(__file__).resolve().parents[1] / "examples" / "django_app"
PROVIDERS = ("giga-mock", "yandex-mock", "local-mock")


@pytest.fixture(scope="module")
def django_app(tmp_path_factory):
    """Django configured here, as the example's settings would, with a config file."""
    config = tmp_path_factory.mktemp("django") / "router.json"
    config.write_text(json.dumps({
        "strategy": "round-robin",
        "providers": [{"type": "mock", "name": name, "extra": {"delay": 0.05}} for name in PROVIDERS],
    }), encoding="utf-8")
    sys.path.insert(0, str(APP_DIR))
    built = []
    original = Router.from_config.__func__

    def counting_from_config(cls, source):
        built.append(source)
        return original(cls, source)

    Router.from_config = classmethod(counting_from_config)
    try:
        import django
        from django.conf import settings

        settings.configure(
            DEBUG=False,
            SECRET_KEY="test-only",
            ALLOWED_HOSTS=["testserver", "127.0.0.1"],
            INSTALLED_APPS=["llm_gateway"],
            MIDDLEWARE=[],
            ROOT_URLCONF="llm_gateway.urls",
            DATABASES={},
            LLM_ROUTER_CONFIG=str(config),
        )
        django.setup()
    finally:
        Router.from_config = classmethod(original)
    from llm_gateway.apps import get_router

    router = get_router()
    yield router, built
    router.close()  # its pool threads must not outlive this module (atexit would be too late)
    sys.path.remove(str(APP_DIR))


@pytest.fixture
def client(django_app):
    from django.test import Client

    return Client()


def post(client, path, body):
    return client.post(path, data=json.dumps(body) if not isinstance(body, str) else body,
                       content_type="application/json")


def test_the_router_is_built_once_at_startup_from_the_config_file(django_app, client):
    router, built = django_app
    assert len(built) == 1 and built[0].endswith("router.json")
    assert [p.name for p in router.providers] == list(PROVIDERS)
    for _ in range(3):
        assert post(client, "/ask", {"prompt": "Hi"}).status_code == 200
    from llm_gateway.apps import get_router

    assert get_router() is router and len(built) == 1


def test_ask_answers_json(client):
    response = post(client, "/ask", {"prompt": "What is Python?"})
    assert response.status_code == 200
    data = response.json()
    assert data["text"] == "Mock response to: What is Python?"
    assert data["provider"] in PROVIDERS and data["attempts"] == 1
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9,
                             "cached_prompt_tokens": 0, "reasoning_tokens": 0}
    messages = post(client, "/ask", {"messages": [{"role": "system", "content": "Be brief"},
                                                  {"role": "user", "content": "Hello"}]})
    assert messages.json()["text"] == "Mock response to: Hello"


def test_concurrent_requests_share_the_router_exactly(django_app):
    from django.test import Client

    router, _ = django_app
    before = Counter({name: row["successes"] for name, row in router.stats()["providers"].items()})

    def one(_):
        response = post(Client(), "/ask", {"prompt": "parallel"})  # a Client per thread
        return response.status_code, response.json()["provider"]

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(30)))
    assert all(status == 200 for status, _ in results)
    after = Counter({name: row["successes"] for name, row in router.stats()["providers"].items()})
    assert after - before == Counter({name: 10 for name in PROVIDERS})  # exact round-robin shares
    assert Counter(provider for _, provider in results) == Counter({name: 10 for name in PROVIDERS})


def test_stream_view_streams_the_answer(client):
    response = post(client, "/ask/stream", {"prompt": "stream this"})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/plain")
    assert response["X-LLM-Provider"] in PROVIDERS
    assert b"".join(response.streaming_content).decode() == "Mock response to: stream this"


@pytest.mark.parametrize("body", ["not json", {"text": "no prompt"}, {"prompt": ""}, [1, 2]])
def test_bad_requests_get_400_with_a_message(client, body):
    response = post(client, "/ask", body)
    assert response.status_code == 400
    assert "prompt" in response.json()["error"]


def test_wrong_methods(client):
    assert client.get("/ask").status_code == 405
    assert client.post("/stats").status_code == 405


def test_every_provider_failing_is_a_503(django_app, client, monkeypatch):
    from django.apps import apps

    failing = Router()
    failing.add_provider(MockProvider(ProviderConfig(name="down", model="mock-unavailable", extra={"delay": 0})))
    monkeypatch.setattr(apps.get_app_config("llm_gateway"), "router", failing)
    try:
        for path in ("/ask", "/ask/stream"):
            response = post(client, path, {"prompt": "x"})
            assert response.status_code == 503
            assert response.json()["errors"] == [{"provider": "down", "error_type": "ProviderUnavailableError"}]
        assert client.get("/health").status_code == 503
    finally:
        failing.close()


def test_health_and_stats_views(django_app, client):
    router, _ = django_app
    health = client.get("/health")
    assert health.status_code == 200
    assert set(health.json()) == set(PROVIDERS) and all(v["healthy"] for v in health.json().values())
    post(client, "/ask", {"prompt": "count me"})
    stats = client.get("/stats").json()
    assert stats["calls"] == router.stats()["calls"] >= 1
    assert set(stats["providers"]) == set(PROVIDERS)


def test_health_is_cached_unless_refresh_is_asked(django_app, client):
    router, _ = django_app
    checks = []
    provider = router.providers[0]
    original = provider.health_check
    provider.health_check = lambda timeout=None: checks.append(1) or original(timeout)
    try:
        client.get("/health?refresh=1")
        assert len(checks) == 1
        for _ in range(3):
            assert client.get("/health").status_code == 200
        assert len(checks) == 1  # served from the cache, no new check per hit
        client.get("/health?refresh=1")
        assert len(checks) == 2
    finally:
        provider.health_check = original


def test_a_router_without_providers_or_closed_is_a_503_not_a_client_error(django_app, client, monkeypatch):
    from django.apps import apps

    empty = Router()
    monkeypatch.setattr(apps.get_app_config("llm_gateway"), "router", empty)
    response = post(client, "/ask", {"prompt": "x"})
    assert response.status_code == 503 and "add_provider" in response.json()["error"]
    empty.close()
    response = post(client, "/ask/stream", {"prompt": "x"})
    assert response.status_code == 503 and "closed" in response.json()["error"]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def test_under_a_threaded_wsgi_server_requests_run_in_parallel(django_app):
    from django.core.handlers.wsgi import WSGIHandler

    router, _ = django_app
    server = make_server("127.0.0.1", 0, WSGIHandler(), _ThreadingServer, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/ask"
    peak = 0
    stop = threading.Event()

    def watch():
        nonlocal peak
        while not stop.is_set():
            in_flight = sum(row["in_flight"] for row in router.stats()["providers"].values())
            peak = max(peak, in_flight)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    session = requests.Session()
    session.trust_env = False  # loopback, never through a proxy
    try:
        def one(index):
            response = session.post(url, json={"prompt": f"request {index}"}, timeout=30)
            return response.status_code, response.json()["text"]

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(one, range(12)))
    finally:
        stop.set()
        watcher.join()
        session.close()
        server.shutdown()
        server.server_close()
    assert results == [(200, f"Mock response to: request {index}") for index in range(12)]
    assert peak >= 2  # several views were inside the shared Router at the same time

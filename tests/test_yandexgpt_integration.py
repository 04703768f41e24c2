"""YandexGPTProvider against a fake Yandex on 127.0.0.1: real sockets, threads, timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from multi_llm_orchestrator.config import ProviderConfig
from multi_llm_orchestrator.errors import (
    AuthenticationError,
    ProviderTimeoutError,
    RateLimitError,
)
from multi_llm_orchestrator.providers.mock import MockProvider
from multi_llm_orchestrator.providers.yandexgpt import YandexGPTProvider
from multi_llm_orchestrator.router import Router

REPO = Path(__file__).resolve().parent.parent
FOLDER = "b1gfolder123"
OLD_TOKEN = "t1.OLDsecretTOKEN"
NEW_TOKEN = "t1.NEWsecretTOKEN"
COMPLETION_PATH = "/foundationModels/v1/completion"
TOKENIZE_PATH = "/foundationModels/v1/tokenize"


def result(text, status="ALTERNATIVE_STATUS_FINAL", completion_tokens="5"):
    return {
        "result": {
            "alternatives": [{"message": {"role": "assistant", "text": text}, "status": status}],
            "usage": {"inputTextTokens": "7", "completionTokens": completion_tokens,
                      "totalTokens": str(7 + int(completion_tokens))},
            "modelVersion": "09.02.2025",
        }
    }


def line(obj) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")


class Exchange:
    """One request as the fake server saw it, and helpers to answer it."""

    def __init__(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        self.handler = handler
        self.path = handler.path
        self.headers = dict(handler.headers.items())
        self.json = json.loads(body) if body else None
        self.received_at = time.monotonic()

    def send_json(self, obj, status=200, headers=None) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.handler.send_response(status)
        self.handler.send_header("Content-Type", "application/json")
        self.handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.handler.send_header(name, value)
        self.handler.end_headers()
        self.handler.wfile.write(data)

    def start_chunked(self) -> None:
        self.handler.send_response(200)
        self.handler.send_header("Content-Type", "application/json")
        self.handler.send_header("Transfer-Encoding", "chunked")
        self.handler.end_headers()

    def chunk(self, data: bytes) -> None:
        self.handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.handler.wfile.flush()

    def end_chunked(self) -> None:
        self.handler.wfile.write(b"0\r\n\r\n")
        self.handler.wfile.flush()


class FakeYandex:
    """A threaded HTTP/1.1 server on 127.0.0.1; ``respond(exchange)`` answers each request."""

    def __init__(self) -> None:
        self.exchanges = []
        self.connections = 0
        self.lock = threading.Lock()
        self.respond = lambda exchange: exchange.send_json(result("ok"))
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                exchange = Exchange(self, body)
                with fake.lock:
                    fake.exchanges.append(exchange)
                fake.respond(exchange)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

            def get_request(self):
                pair = super().get_request()
                with fake.lock:
                    fake.connections += 1
                return pair

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def fake():
    server = FakeYandex()
    yield server
    server.close()


def provider_for(fake, api_key=OLD_TOKEN, **fields):
    token_provider = fields.pop("token_provider", None)
    fields.setdefault("max_retries", 0)
    fields.setdefault("timeout", 10)
    config = ProviderConfig(name=fields.pop("name", "yandex"), api_key=api_key, folder_id=FOLDER,
                            base_url=fake.url, **fields)
    return YandexGPTProvider(config, token_provider=token_provider)


class CountingTokens:
    """A slow token_provider: the delay widens the window in which callers could race."""

    def __init__(self, delay=0.0):
        self.delay = delay
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            self.calls += 1
        time.sleep(self.delay)
        return NEW_TOKEN


# Streaming over a real socket ----------------------------------------------------------


def test_stream_delivers_the_first_delta_before_the_server_sends_the_rest(fake):
    release = threading.Event()
    server_state = {}

    def respond(exchange):
        if exchange.path != COMPLETION_PATH:
            return exchange.send_json({"error": "wrong path"}, status=404)
        exchange.start_chunked()
        exchange.chunk(line(result("Привет", "ALTERNATIVE_STATUS_PARTIAL", "1")))
        server_state["released"] = release.wait(5)
        server_state["sent_rest"] = True
        exchange.chunk(line(result("Привет, мир", "ALTERNATIVE_STATUS_PARTIAL", "3")))
        exchange.chunk(line(result("Привет, мир! Как дела?", completion_tokens="6")))
        exchange.end_chunked()

    fake.respond = respond
    with provider_for(fake) as provider:
        stream = provider.stream("Поздоровайся")
        first = next(stream)
        assert first == "Привет"
        assert "sent_rest" not in server_state  # the rest is still held back by the server
        release.set()
        rest = list(stream)
    assert server_state["released"] is True  # the server did not give up waiting for us
    assert rest == [", мир", "! Как дела?"]
    assert first + "".join(rest) == stream.text == "Привет, мир! Как дела?"
    assert stream.finish_reason == "stop"
    assert stream.usage.completion_tokens == 6 and stream.usage.prompt_tokens == 7
    sent = fake.exchanges[0]
    assert sent.json["completionOptions"]["stream"] is True
    assert sent.headers["Authorization"] == f"Bearer {OLD_TOKEN}"
    assert sent.headers["x-folder-id"] == FOLDER


def test_stream_that_stalls_times_out(fake):
    release = threading.Event()

    def respond(exchange):
        exchange.start_chunked()
        exchange.chunk(line(result("Один", "ALTERNATIVE_STATUS_PARTIAL")))
        release.wait(5)

    fake.respond = respond
    try:
        with provider_for(fake, timeout=0.5) as provider:
            stream = provider.stream("Считай")
            assert next(stream) == "Один"
            started = time.monotonic()
            with pytest.raises(ProviderTimeoutError):
                next(stream)
            assert time.monotonic() - started < 4
    finally:
        release.set()


# Token refresh ---------------------------------------------------------------------------


def test_token_provider_called_once_for_32_concurrent_calls_after_expiry(fake):
    in_flight = threading.Barrier(32, timeout=5)

    def respond(exchange):
        try:
            # All 32 requests are on the wire together: the token lock is not held
            # across the API call.
            in_flight.wait()
        except threading.BrokenBarrierError:
            return exchange.send_json({"error": {"message": "requests were serialised"}}, status=500)
        exchange.send_json(result("ok"))

    fake.respond = respond
    tokens = CountingTokens(delay=0.05)
    with provider_for(fake, token_provider=tokens, extra={"token_max_age": 600}) as provider:
        now = [provider._tokens.clock()]
        provider._tokens.clock = lambda: now[0]
        now[0] += 601  # the configured token is now too old
        start = threading.Barrier(32, timeout=5)

        def call(_):
            start.wait()
            return provider.complete("Hi").text

        with ThreadPoolExecutor(32) as pool:
            texts = list(pool.map(call, range(32)))
    assert texts == ["ok"] * 32
    assert tokens.calls == 1
    assert len(fake.exchanges) == 32
    assert {e.headers["Authorization"] for e in fake.exchanges} == {f"Bearer {NEW_TOKEN}"}


def test_concurrent_401s_share_one_refresh(fake):
    def respond(exchange):
        if exchange.headers["Authorization"] == f"Bearer {OLD_TOKEN}":
            return exchange.send_json({"error": {"grpcCode": 16, "httpCode": 401, "message": "expired"}}, 401)
        exchange.send_json(result("ok"))

    fake.respond = respond
    tokens = CountingTokens(delay=0.05)
    with provider_for(fake, token_provider=tokens) as provider:
        start = threading.Barrier(16, timeout=5)

        def call(_):
            start.wait()
            return provider.complete("Hi").text

        with ThreadPoolExecutor(16) as pool:
            assert list(pool.map(call, range(16))) == ["ok"] * 16
    assert tokens.calls == 1
    fresh = [e for e in fake.exchanges if e.headers["Authorization"] == f"Bearer {NEW_TOKEN}"]
    assert len(fresh) == 16  # every call succeeded with the fresh token
    assert len(fake.exchanges) <= 32  # at most one retry per call


def test_401_refreshes_the_token_and_retries_once(fake):
    def respond(exchange):
        if exchange.headers["Authorization"] == f"Bearer {NEW_TOKEN}":
            return exchange.send_json(result("Новый токен принят"))
        exchange.send_json({"error": {"grpcCode": 16, "httpCode": 401, "message": "The token has expired",
                                      "httpStatus": "Unauthorized", "details": []}}, status=401)

    fake.respond = respond
    tokens = CountingTokens()
    with provider_for(fake, token_provider=tokens) as provider:
        completion = provider.complete("Hi")
    assert completion.text == "Новый токен принят"
    assert tokens.calls == 1
    assert [e.headers["Authorization"] for e in fake.exchanges] == [f"Bearer {OLD_TOKEN}", f"Bearer {NEW_TOKEN}"]


def test_401_after_refresh_is_authentication_error(fake):
    fake.respond = lambda e: e.send_json({"error": {"httpCode": 401, "message": "no"}}, status=401)
    tokens = CountingTokens()
    with provider_for(fake, token_provider=tokens) as provider:
        with pytest.raises(AuthenticationError) as info:
            provider.complete("Hi")
    assert info.value.status_code == 401
    assert tokens.calls == 1 and len(fake.exchanges) == 2
    assert OLD_TOKEN not in str(info.value) and NEW_TOKEN not in str(info.value)


# Retry-After -----------------------------------------------------------------------------


def test_429_retry_after_is_respected(fake):
    def respond(exchange):
        if len(fake.exchanges) == 1:
            return exchange.send_json(
                {"error": {"grpcCode": 8, "httpCode": 429, "message": "quota", "httpStatus": "Too Many Requests"}},
                status=429, headers={"Retry-After": "1"},
            )
        exchange.send_json(result("после паузы"))

    fake.respond = respond
    with provider_for(fake, max_retries=1) as provider:
        assert provider.complete("Hi").text == "после паузы"
    first, second = fake.exchanges
    assert second.received_at - first.received_at >= 0.99


def test_429_retry_after_past_the_deadline_fails_fast_with_retry_after(fake):
    fake.respond = lambda e: e.send_json({"error": {"httpCode": 429, "message": "quota"}}, status=429,
                                         headers={"Retry-After": "30"})
    with provider_for(fake, max_retries=2, timeout=2) as provider:
        started = time.monotonic()
        with pytest.raises(RateLimitError) as info:
            provider.complete("Hi")
    assert time.monotonic() - started < 1.5
    assert info.value.retry_after == pytest.approx(30)
    assert len(fake.exchanges) == 1


# Health check ----------------------------------------------------------------------------


def test_health_check_over_loopback(fake):
    fake.respond = lambda e: e.send_json({"tokens": [{"id": "1", "text": "ping", "special": False}]})
    with provider_for(fake, api_key="AQVNkey", extra={"auth": "api-key"}) as provider:
        assert provider.health_check(timeout=2) is True
    (exchange,) = fake.exchanges
    assert exchange.path == TOKENIZE_PATH
    assert exchange.headers["Authorization"] == "Api-Key AQVNkey"
    assert "x-folder-id" not in {name.lower() for name in exchange.headers}


def test_health_check_false_when_nothing_listens():
    config = ProviderConfig(name="down", api_key=OLD_TOKEN, folder_id=FOLDER, base_url="http://127.0.0.1:9",
                            max_retries=0)
    with YandexGPTProvider(config) as provider:
        assert provider.health_check(timeout=2) is False


# The demo --------------------------------------------------------------------------------


def run_demo(env_extra, *args):
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("YC_", "YANDEXGPT_"))}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, str(REPO / "examples" / "yandexgpt_demo.py"), *args],
        env=env, capture_output=True, text=True, timeout=30,
    )


def test_demo_without_environment_exits_2_naming_the_variables():
    done = run_demo({})
    assert done.returncode == 2
    assert "YC_FOLDER_ID" in done.stderr and "YC_IAM_TOKEN" in done.stderr and "YC_API_KEY" in done.stderr
    assert done.stdout == ""


def test_demo_against_the_fake(fake):
    def respond(exchange):
        if exchange.json["completionOptions"]["stream"]:
            exchange.start_chunked()
            exchange.chunk(line(result("Питон", "ALTERNATIVE_STATUS_PARTIAL")))
            exchange.chunk(line(result("Питон — язык.")))
            return exchange.end_chunked()
        exchange.send_json(result("Python — язык программирования."))

    fake.respond = respond
    done = run_demo({"YC_FOLDER_ID": FOLDER, "YC_IAM_TOKEN": OLD_TOKEN, "YANDEXGPT_BASE_URL": fake.url,
                     "PYTHONIOENCODING": "utf-8"}, "Что", "такое", "Python?")
    assert done.returncode == 0, done.stderr
    assert "Python — язык программирования." in done.stdout
    assert "Питон — язык." in done.stdout
    assert OLD_TOKEN not in done.stdout + done.stderr
    assert [e.json["messages"] for e in fake.exchanges] == [[{"role": "user", "text": "Что такое Python?"}]] * 2


# Router ----------------------------------------------------------------------------------


def test_router_falls_back_from_a_failing_yandex_to_the_mock(fake):
    fake.respond = lambda e: e.send_json(
        {"error": {"grpcCode": 13, "httpCode": 500, "message": "internal error"}}, status=500)

    def router():
        # Round-robin: the first call of a new Router selects the first provider, Yandex.
        built = Router(strategy="round-robin", breaker=False)
        built.add_provider(provider_for(fake, name="yandex"))
        built.add_provider(MockProvider(ProviderConfig(name="mock", extra={"delay": 0})))
        return built

    with router() as first:
        completion = first.complete("What is Python?")
    assert completion.text == "Mock response to: What is Python?"
    assert completion.provider == "mock"
    assert [(a.provider, a.outcome) for a in completion.attempts] == [("yandex", "error"), ("mock", "ok")]
    assert completion.attempts[0].error_type == "ProviderUnavailableError"
    assert len(fake.exchanges) == 1

    with router() as second:
        stream = second.route_stream("What is Python?")
        assert "".join(stream) == "Mock response to: What is Python?"
    assert stream.provider == "mock"
    assert len(fake.exchanges) == 2
    assert fake.exchanges[1].json["completionOptions"]["stream"] is True


def test_streams_give_their_connection_back_to_the_pool(fake):
    def stream(exchange):
        exchange.start_chunked()
        exchange.chunk(line(result("Hel", status="ALTERNATIVE_STATUS_PARTIAL")))
        exchange.chunk(line(result("Hello")))
        exchange.end_chunked()

    fake.respond = stream
    provider = provider_for(fake)
    for _ in range(3):
        assert "".join(provider.stream("Hi")) == "Hello"
    assert len(fake.exchanges) == 3
    assert fake.connections == 1
    provider.close()

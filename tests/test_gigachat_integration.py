"""GigaChatProvider against a fake GigaChat on loopback: real sockets, threads, pools, timing."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest
import yaml

from multi_llm_orchestrator import ProviderConfig
from multi_llm_orchestrator.errors import ProviderTimeoutError, ProviderUnavailableError, RateLimitError
from multi_llm_orchestrator.providers.gigachat import GigaChatProvider

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "gigachat"
AUTH_KEY = "Y2xpZW50LWlkOmNsaWVudC1zZWNyZXQ="
COMPLETION = (FIXTURES / "chat_completion.json").read_bytes()
STREAM = yaml.safe_load((FIXTURES / "cassettes" / "test_stream_simple.yaml").read_text("utf-8"))["interactions"][1][
    "response"
]["body"]["string"].encode("utf-8")
STREAM_TEXT_END = "Заканчиваем счётом числом три."


class FakeGigaChat(http.server.ThreadingHTTPServer):
    """OAuth at /oauth, the API under /api/v1; tokens really expire; every request recorded.

    ``chat_actions`` are functions ``(handler, payload)`` used, in order, for the next chat
    requests instead of the normal answer (after the token check, as the real API does).
    """

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeHandler)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.connections = 0
        self.oauth: List[Dict[str, Any]] = []
        self.api: List[Dict[str, Any]] = []
        self.tokens: Dict[str, float] = {}  # token -> monotonic expiry
        self.token_lifetime = 1800.0
        self.oauth_delay = 0.0
        self.api_delay = 0.0
        self.chat_actions: List[Callable] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def provider(self, **fields: Any) -> GigaChatProvider:
        fields.setdefault("name", "giga")
        fields.setdefault("api_key", AUTH_KEY)
        return GigaChatProvider(
            ProviderConfig(base_url=self.url + "/api/v1", auth_url=self.url + "/oauth", **fields)
        )

    def get_request(self):
        pair = super().get_request()
        with self.lock:
            self.connections += 1
        return pair

    def revoke_all(self) -> None:
        with self.lock:
            self.tokens.clear()

    def issue(self) -> Dict[str, Any]:
        token = f"fake-{uuid.uuid4().hex}"
        with self.lock:
            self.tokens[token] = time.monotonic() + self.token_lifetime
        return {"access_token": token, "expires_at": int((time.time() + self.token_lifetime) * 1000)}

    def valid(self, authorization: str) -> bool:
        token = authorization[len("Bearer "):] if authorization.startswith("Bearer ") else ""
        with self.lock:
            return self.tokens.get(token, 0) > time.monotonic()

    def next_chat_action(self) -> Optional[Callable]:
        with self.lock:
            return self.chat_actions.pop(0) if self.chat_actions else None


class FakeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: FakeGigaChat

    def log_message(self, *args: Any) -> None:
        pass

    def send_json(self, status: int, body: Any, headers: Optional[Dict[str, str]] = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def send_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server = self.server
        if self.path == "/oauth":
            with server.lock:
                server.oauth.append({"at": time.monotonic(), "headers": dict(self.headers), "body": body})
            if server.oauth_delay:
                time.sleep(server.oauth_delay)
            self.send_json(200, server.issue())
            return
        self.api_call(json.loads(body))

    def do_GET(self) -> None:
        self.api_call(None)

    def api_call(self, payload: Any) -> None:
        server = self.server
        authorization = self.headers.get("Authorization", "")
        with server.lock:
            server.api.append({"at": time.monotonic(), "path": self.path, "authorization": authorization})
        if server.api_delay:
            time.sleep(server.api_delay)
        if not server.valid(authorization):
            self.send_json(401, {"status": 401, "message": "Unauthorized"})
            return
        if self.path == "/api/v1/models":
            self.send_json(200, {"object": "list", "data": [{"id": "GigaChat", "object": "model"}]})
            return
        action = server.next_chat_action()
        if action is not None:
            action(self, payload)
        elif payload.get("stream"):
            self.start_stream()
            self.send_chunk(STREAM)
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_json(200, COMPLETION)


@pytest.fixture
def fake():
    server = FakeGigaChat()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()


def run_in_threads(count: int, work: Callable[[int], Any]) -> List[Any]:
    """Run ``work(i)`` on ``count`` threads released at the same instant."""
    barrier = threading.Barrier(count)

    def start(index: int) -> Any:
        barrier.wait(5)
        return work(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(start, range(count)))


def test_32_concurrent_first_calls_make_exactly_one_oauth_request(fake):
    fake.oauth_delay = 0.2  # every thread arrives while the token is still being fetched
    provider = fake.provider()
    results = run_in_threads(32, lambda i: provider.complete(f"Вопрос {i}"))
    assert all(r.text.startswith("Конечно") for r in results)
    assert len(fake.oauth) == 1
    request = fake.oauth[0]
    assert request["headers"]["Authorization"] == f"Basic {AUTH_KEY}"
    assert request["body"] == b"scope=GIGACHAT_API_PERS"
    assert len({call["authorization"] for call in fake.api}) == 1
    assert len(fake.api) == 32


def test_expiry_causes_exactly_one_refresh_for_many_threads(fake):
    fake.token_lifetime = 1.0  # refreshed halfway: 0.5 s after issue
    fake.oauth_delay = 0.1
    provider = fake.provider()
    provider.complete("Первый")
    assert len(fake.oauth) == 1
    time.sleep(0.6)
    run_in_threads(16, lambda i: provider.complete(f"Вопрос {i}"))
    assert len(fake.oauth) == 2
    assert len({call["authorization"] for call in fake.api[1:]}) == 1
    assert len(fake.api) == 17  # 1 + 16: the refresh came before expiry, no call met a 401


def test_the_token_lock_is_not_held_during_api_calls(fake):
    fake.api_delay = 0.3
    provider = fake.provider()
    provider.list_models()
    started = time.monotonic()
    run_in_threads(8, lambda i: provider.complete(f"Вопрос {i}"))
    assert time.monotonic() - started < 1.2  # 8 x 0.3 s would be 2.4 s if the calls were serialised


def test_401_refreshes_the_token_and_succeeds(fake):
    provider = fake.provider()
    provider.complete("Первый")
    fake.revoke_all()  # the server forgets every token, as after a restart
    assert provider.complete("Второй").text.startswith("Конечно")
    assert len(fake.oauth) == 2
    assert len(fake.api) == 3
    assert fake.api[1]["authorization"] == fake.api[0]["authorization"] != fake.api[2]["authorization"]


def test_401_storm_from_many_threads_refreshes_once(fake):
    provider = fake.provider()
    provider.complete("Первый")
    fake.revoke_all()
    fake.api_delay = 0.05  # all 16 threads hold the revoked token before the first 401 returns
    results = run_in_threads(16, lambda i: provider.complete(f"Вопрос {i}"))
    assert len(results) == 16
    assert len(fake.oauth) == 2


def test_429_retry_after_1_is_waited_for(fake):
    def too_many(handler, payload):
        handler.send_json(429, {"status": 429, "message": "Too many requests"}, {"Retry-After": "1"})

    fake.chat_actions = [too_many]
    provider = fake.provider(max_retries=1)
    provider.list_models()  # token first, so the chat timeline is the only thing measured
    assert provider.complete("Привет").text.startswith("Конечно")
    chats = [call for call in fake.api if call["path"].endswith("/chat/completions")]
    assert len(chats) == 2
    assert chats[1]["at"] - chats[0]["at"] >= 1.0


def test_retry_after_longer_than_the_timeout_returns_rate_limit_at_once(fake):
    def too_many(handler, payload):
        handler.send_json(429, {"status": 429, "message": "Too many requests"}, {"Retry-After": "30"})

    fake.chat_actions = [too_many]
    provider = fake.provider(max_retries=3)
    started = time.monotonic()
    with pytest.raises(RateLimitError) as info:
        provider.complete("Привет", timeout=3)
    assert time.monotonic() - started < 1.0
    assert info.value.retry_after == 30.0
    assert len([call for call in fake.api if call["path"].endswith("/chat/completions")]) == 1


def test_chunked_stream_is_read_incrementally(fake):
    release = threading.Event()
    first_sent = threading.Event()
    events = STREAM.split(b"\n\n")

    def slow_stream(handler, payload):
        handler.start_stream()
        handler.send_chunk(events[0] + b"\n\n")
        first_sent.set()
        release.wait(5)
        handler.send_chunk(b"\n\n".join(events[1:]))
        handler.wfile.write(b"0\r\n\r\n")

    fake.chat_actions = [slow_stream]
    stream = fake.provider().stream("Count from 1 to 3", timeout=10)
    first = next(stream)
    assert first.startswith("$1\\, 2\\, 3$")
    assert first_sent.wait(5) and not release.is_set()  # the rest has not been sent yet
    release.set()
    rest = "".join(stream)
    assert rest.endswith(STREAM_TEXT_END)
    assert stream.finish_reason == "stop" and stream.usage.total_tokens == 59


def test_stream_dropped_mid_way_raises_a_typed_error(fake):
    def dropped(handler, payload):
        handler.start_stream()
        handler.send_chunk(STREAM.split(b"\n\n")[0] + b"\n\n")
        handler.wfile.write(b"100\r\ndata: {\"choi")  # a chunk promised, never finished
        handler.wfile.flush()
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)

    fake.chat_actions = [dropped]
    stream = fake.provider().stream("Привет")
    assert next(stream)
    with pytest.raises(ProviderUnavailableError):
        list(stream)


def test_server_that_never_answers_times_out_within_the_timeout(fake):
    fake.chat_actions = [lambda handler, payload: fake.stop.wait(10)]
    provider = fake.provider(max_retries=2)
    provider.list_models()
    started = time.monotonic()
    with pytest.raises(ProviderTimeoutError):
        provider.complete("Привет", timeout=0.5)
    assert 0.4 <= time.monotonic() - started < 1.5


def pooled_rounds(provider: GigaChatProvider, threads: int = 32, rounds: int = 3) -> int:
    """Calls made in rounds where all ``threads`` are in flight together."""
    barrier = threading.Barrier(threads)

    def work(index: int) -> int:
        for n in range(rounds):
            barrier.wait(5)
            provider.complete(f"Вопрос {index}-{n}")
        return rounds

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(work, range(threads)))


def test_32_threads_open_at_most_pool_size_connections(fake):
    fake.api_delay = 0.03  # keeps the 32 calls of each round in flight together
    provider = fake.provider()
    assert provider.config.pool_size == 32
    assert pooled_rounds(provider) == 96
    assert len(fake.oauth) == 1
    assert fake.connections <= provider.config.pool_size


def test_a_pool_smaller_than_the_threads_opens_throwaway_connections(fake):
    """The counterpart of the test above: proves it would catch an unsized pool."""
    fake.api_delay = 0.03
    assert pooled_rounds(fake.provider(pool_size=8)) == 96
    assert fake.connections > 32


def test_demo_runs_against_the_fake(fake):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIGACHAT_")}
    env.update(
        GIGACHAT_CREDENTIALS=AUTH_KEY,
        GIGACHAT_BASE_URL=fake.url + "/api/v1",
        GIGACHAT_AUTH_URL=fake.url + "/oauth",
        GIGACHAT_TIMEOUT="10",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONIOENCODING="utf-8",
    )
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "gigachat_demo.py"), "Привет"],
        env=env, capture_output=True, text=True, encoding="utf-8", timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Конечно, у человечества" in done.stdout
    assert STREAM_TEXT_END in done.stdout
    assert AUTH_KEY not in done.stdout + done.stderr
    assert len(fake.oauth) == 1


def test_demo_without_credentials_exits_2_with_a_clear_message():
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIGACHAT_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "gigachat_demo.py")],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "GIGACHAT_CREDENTIALS" in done.stderr


def test_oauth_answer_cut_mid_body_is_a_broken_connection_not_bad_json():
    secret_part = b'{"access_token": "cut-token-Quendor-1234'

    class CutOAuth(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "400")  # promises more than it sends
            self.end_headers()
            self.wfile.write(secret_part)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CutOAuth)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        giga = GigaChatProvider(ProviderConfig(
            name="giga", api_key=AUTH_KEY, base_url=url + "/api/v1", auth_url=url + "/oauth", max_retries=0, timeout=5))
        with pytest.raises(ProviderUnavailableError) as info:
            giga.complete("Hi")
        assert "not valid JSON" not in str(info.value)
        assert "Quendor" not in str(info.value)
        giga.close()
    finally:
        server.shutdown()
        server.server_close()

"""A minimal OpenAI-compatible loopback server for the HTTP benchmarks (not a benchmark).

It answers ``POST .../chat/completions`` with one fixed chat completion,
``POST .../embeddings`` with one small vector per input (OpenAI's shape), and
``GET .../models`` with one model, after a latency drawn independently per request:
``fast`` seconds, or ``slow`` seconds with probability ``slow_share``. Everything else
is kept cheap on purpose (the response is prebuilt bytes, written with one send), so the
client side dominates what the benchmarks measure.

It runs in its own process by default (``spawn()``): the benchmark's client threads then
do not compete with the server's threads for the GIL, as with a real remote server.
The parent reads counters over HTTP (``GET /_stats``, ``POST /_reset``); the child
exits when the parent closes its stdin.

With ``limit`` and ``window`` it enforces a rate limit as a provider does: at most
``limit`` chat completions start in any ``window`` seconds; beyond that it answers 429
with ``Retry-After`` (and ``retry-after-ms``) saying when the oldest start leaves the
window. ``/_stats`` then also reports ``rejected`` (429s sent) and ``max_in_window``
(the most accepted starts any window held, from the server's own log).

    with spawn(fast=0.02, slow=1.0, slow_share=0.03) as server:
        provider = OpenAICompatibleProvider(ProviderConfig(name="a", model=MODEL, base_url=server.url))
        server.reset(); ...; server.requests()   # chat completions served since reset
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

MODEL = "bench-model"
COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": MODEL,
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello from the benchmark server."},
         "logprobs": None, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
}
MODELS = {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}]}


def _response(status: str, body: Any, headers: Optional[dict] = None) -> bytes:
    data = json.dumps(body).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 512

    def __init__(self, fast: float, slow: float, slow_share: float, seed: int,
                 limit: int = 0, window: float = 60.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fast, self.slow, self.slow_share = fast, slow, slow_share
        self.limit, self.window = limit, window
        self.accepted: list = []  # monotonic start times of accepted chat requests
        self.rejected = 0
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.chat_requests = 0
        self.slow_requests = 0
        self.connections = 0

    def latency(self) -> float:
        with self.lock:
            self.chat_requests += 1
            slow = self.slow_share > 0 and self.random.random() < self.slow_share
            self.slow_requests += slow
        return self.slow if slow else self.fast

    def admit(self) -> Optional[float]:
        """None if this request may start now (logged), else the seconds to wait."""
        if not self.limit:
            return None
        with self.lock:
            now = time.monotonic()
            start = len(self.accepted) - self.limit
            if start >= 0 and self.accepted[start] > now - self.window:
                self.rejected += 1
                return self.accepted[start] + self.window - now
            self.accepted.append(now)
            return None

    def max_in_window(self) -> int:
        with self.lock:
            starts = list(self.accepted)
        best = left = 0
        for right, start in enumerate(starts):
            while starts[left] <= start - self.window:
                left += 1
            best = max(best, right - left + 1)
        return best


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    CHAT = _response("200 OK", COMPLETION)
    MODELS = _response("200 OK", MODELS)
    NOT_FOUND = _response("404 Not Found", {"error": {"message": "no such route", "type": "invalid_request_error"}})

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path
        if path.endswith("/chat/completions"):
            wait = self.server.admit()
            if wait is not None:
                self.wfile.write(_response(
                    "429 Too Many Requests",
                    {"error": {"message": "Rate limit reached: too many requests per minute", "type": "requests",
                               "code": "rate_limit_exceeded"}},
                    {"Retry-After": f"{wait:.3f}", "retry-after-ms": f"{wait * 1000:.0f}"},
                ))
                return
            delay = self.server.latency()
            if delay:
                time.sleep(delay)
            self.wfile.write(self.CHAT)
        elif path.endswith("/embeddings"):
            delay = self.server.latency()
            if delay:
                time.sleep(delay)
            texts = json.loads(body).get("input") or []
            data = [{"object": "embedding", "index": index, "embedding": [0.5, -0.5, 0.25, float(len(text))]}
                    for index, text in enumerate(texts)]
            self.wfile.write(_response("200 OK", {"object": "list", "model": MODEL, "data": data,
                                                  "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)}}))
        elif path == "/_reset":
            server = self.server
            with server.lock:
                server.chat_requests = server.slow_requests = server.connections = server.rejected = 0
                server.accepted = []
            self.wfile.write(_response("200 OK", {}))
        else:
            self.wfile.write(self.NOT_FOUND)

    def do_GET(self) -> None:
        if self.path.endswith("/models"):
            self.wfile.write(self.MODELS)
        elif self.path == "/_stats":
            server = self.server
            with server.lock:
                stats = {"requests": server.chat_requests, "slow": server.slow_requests,
                         "connections": server.connections, "rejected": server.rejected}
            stats["max_in_window"] = server.max_in_window()
            self.wfile.write(_response("200 OK", stats))
        else:
            self.wfile.write(self.NOT_FOUND)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ServerProcess:
    """A ``_server.py`` child process; ``url`` is the base_url to give a provider."""

    def __init__(self, fast: float = 0.0, slow: float = 0.0, slow_share: float = 0.0, seed: int = 1,
                 limit: int = 0, window: float = 60.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--fast", str(fast), "--slow", str(slow),
             "--slow-share", str(slow_share), "--seed", str(seed), "--limit", str(limit), "--window", str(window)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line.startswith("PORT "):
            self.close()
            raise RuntimeError(f"the benchmark server did not start (it printed {line!r})")
        self.port = int(line.split()[1])
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = self.base + "/v1"
        self.chat_url = self.url + "/chat/completions"

    def _call(self, method: str, path: str) -> Any:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=b"" if method == "POST" else None)
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def stats(self) -> dict:
        """{"requests": chat completions and embeddings requests, "slow": how many got the slow latency, "connections": TCP}."""
        return self._call("GET", "/_stats")

    def requests(self) -> int:
        return self.stats()["requests"]

    def reset(self) -> None:
        self._call("POST", "/_reset")

    def close(self) -> None:
        if self.process.poll() is None:
            if self.process.stdin:
                self.process.stdin.close()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def spawn(fast: float = 0.0, slow: float = 0.0, slow_share: float = 0.0, seed: int = 1,
          limit: int = 0, window: float = 60.0) -> ServerProcess:
    """Start the server in a child process (see the module doc)."""
    return ServerProcess(fast, slow, slow_share, seed, limit, window)


def free_port_closed() -> int:
    """A loopback port with nothing listening (connections to it are refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", type=float, default=0.0)
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--slow-share", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--limit", type=int, default=0, help="chat requests allowed per window (0: no limit)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of the rate-limit window")
    args = parser.parse_args(argv)
    server = _Server(args.fast, args.slow, args.slow_share, args.seed, args.limit, args.window)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    print(f"PORT {server.server_address[1]}", flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    server.shutdown()


if __name__ == "__main__":
    main()

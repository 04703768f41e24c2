"""A hostile loopback server in its own process, for tests that count threads and fds.

Run in a child process (``HostileServer()``), so the test process holds only the
client's threads and sockets. The first path segment picks the behaviour; the rest is
an OpenAI-compatible (``/v1/chat/completions``, ``/v1/models``) or GigaChat-shaped
(``/api/v1/chat/completions``, ``/api/v1/models``, ``/oauth``) path, so a provider's
``base_url`` is ``server.url("trickle") + "/v1"``. A ``"stream": true`` chat request
gets Server-Sent Events.

==================  ================================================================
``ok``              the answer at once ("Answer to: <last message>")
``slow``            the answer after ``SLOW_S`` seconds (headers included)
``trickle``         headers at once, then the body one byte every ``TRICKLE_S``
``trickle-headers`` the status line, then one header byte every ``TRICKLE_S``
``huge``            an endless chunked JSON body (``{"pad": "xxxx...``)
``huge-length``     a 200 MB Content-Length, then the body at full speed
``gzip-bomb``       ``Content-Encoding: gzip``: 64 MB of spaces in 64 KB
``huge-line``       SSE whose first line never ends
``endless-event``   SSE ``data:`` lines without the blank line that ends an event
``stream-trickle``  SSE text events every ``TRICKLE_S``, without end
``reset-mid-body``  a Content-Length body cut after 100 bytes by a reset (RST)
``error-huge``      HTTP 500 with an endless body
``mix``             one of the above per request, seeded: half ``ok``, the rest slow,
                    trickling, huge (bodies, gzip bombs, lines) or reset mid-body
==================  ================================================================

The child exits when the parent closes its stdin.
"""

from __future__ import annotations

import gzip
import json
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

SLOW_S = 30.0
TRICKLE_S = 0.05
MODEL = "hostile-model"
BLOCK = b"x" * 65536


def completion(text: str) -> bytes:
    return json.dumps({
        "id": "c", "object": "chat.completion", "created": 0, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }).encode()


def event(text: str) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _bomb() -> bytes:
    out = gzip.compress(b" " * (64 * 1024 * 1024), compresslevel=9)
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    bomb: Optional[bytes] = None
    rng = random.Random(11)
    rng_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.handle_any()

    do_POST = do_GET

    def handle_any(self) -> None:
        _, behaviour, rest = self.path.split("/", 2)
        rest = "/" + rest
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            request = json.loads(body) if body.startswith(b"{") else {}
        except ValueError:
            request = {}
        stream = bool(request.get("stream"))
        messages = request.get("messages") or [{"content": ""}]
        text = f"Answer to: {messages[-1].get('content')}"
        try:
            getattr(self, "b_" + behaviour.replace("-", "_"))(rest, stream, text)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout, OSError):
            self.close_connection = True

    # helpers
    def answer(self, status: int, body: bytes, content_type: str = "application/json", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def normal(self, rest: str, stream: bool, text: str) -> None:
        if rest.endswith("/oauth"):
            self.answer(200, json.dumps({"access_token": "hostile-token", "expires_at": int(time.time() * 1000) + 3600_000}).encode())
        elif rest.endswith("/models"):
            self.answer(200, json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode())
        elif stream:
            body = b"".join(event(word + " ") for word in text.split()) + b"data: [DONE]\n\n"
            self.answer(200, body, "text/event-stream")
        else:
            self.answer(200, completion(text))

    def start_chunked(self, status: int = 200, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    # behaviours
    def b_ok(self, rest: str, stream: bool, text: str) -> None:
        self.normal(rest, stream, text)

    def b_slow(self, rest: str, stream: bool, text: str) -> None:
        time.sleep(SLOW_S)
        self.normal(rest, stream, text)

    def b_trickle(self, rest: str, stream: bool, text: str) -> None:
        body = completion(text) + b" " * 100000
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        for index in range(len(body)):
            self.wfile.write(body[index:index + 1])
            self.wfile.flush()
            time.sleep(TRICKLE_S)

    def b_trickle_headers(self, rest: str, stream: bool, text: str) -> None:
        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
        self.wfile.flush()
        for _ in range(100000):
            self.wfile.write(b"X")  # one endless header line, a byte at a time
            self.wfile.flush()
            time.sleep(TRICKLE_S)

    def b_huge(self, rest: str, stream: bool, text: str) -> None:
        self.start_chunked()
        self.chunk(b'{"pad": "')
        for _ in range(200 * 16):  # 200 MB
            self.chunk(BLOCK)

    def b_huge_length(self, rest: str, stream: bool, text: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(200 * 1024 * 1024))
        self.end_headers()
        for _ in range(200 * 16):
            self.wfile.write(BLOCK)

    def b_gzip_bomb(self, rest: str, stream: bool, text: str) -> None:
        body = self.server.bomb
        self.answer(200, body, Content_Encoding="gzip")

    def b_huge_line(self, rest: str, stream: bool, text: str) -> None:
        self.start_chunked(content_type="text/event-stream")
        self.chunk(b"data: ")
        for _ in range(100 * 16):  # 100 MB, no newline
            self.chunk(BLOCK)

    def b_endless_event(self, rest: str, stream: bool, text: str) -> None:
        self.start_chunked(content_type="text/event-stream")
        line = b"data: " + b"y" * 8000 + b"\n"
        for _ in range(100 * 128):  # 100 MB of data lines, no blank line
            self.chunk(line * 8)

    def b_stream_trickle(self, rest: str, stream: bool, text: str) -> None:
        self.start_chunked(content_type="text/event-stream")
        for index in range(100000):
            self.chunk(event(f"word{index} "))
            self.wfile.flush()
            time.sleep(TRICKLE_S)

    def b_reset_mid_body(self, rest: str, stream: bool, text: str) -> None:
        body = completion(text) + b" " * 1000
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:100])
        self.wfile.flush()
        time.sleep(0.05)
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    MIX = ("ok",) * 8 + ("slow", "trickle", "trickle-headers", "huge", "gzip-bomb", "reset-mid-body", "error-huge")
    STREAM_MIX = ("ok",) * 8 + ("slow", "stream-trickle", "huge-line", "endless-event", "reset-mid-body", "trickle-headers")

    def b_mix(self, rest: str, stream: bool, text: str) -> None:
        if rest.endswith("/models") or rest.endswith("/oauth"):
            return self.normal(rest, stream, text)
        with self.server.rng_lock:
            behaviour = self.server.rng.choice(self.STREAM_MIX if stream else self.MIX)
        getattr(self, "b_" + behaviour.replace("-", "_"))(rest, stream, text)

    def b_error_huge(self, rest: str, stream: bool, text: str) -> None:
        self.start_chunked(status=500)
        self.chunk(b'{"error": {"message": "overloaded"}, "pad": "')
        for _ in range(200 * 16):
            self.chunk(BLOCK)


class HostileServer:
    """The server in a child process: ``url(behaviour)``; ``close()`` ends it."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def url(self, behaviour: str) -> str:
        return f"http://127.0.0.1:{self.port}/{behaviour}"

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()

    def __enter__(self) -> "HostileServer":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def main() -> None:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.bomb = _bomb()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or dies)


if __name__ == "__main__":
    main()

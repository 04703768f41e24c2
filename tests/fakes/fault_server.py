"""A fault-injecting loopback server speaking the OpenAI-compatible and GigaChat wires.

For reliability tests: a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 (HTTP/1.1
keep-alive, Nagle off) that answers a seeded share of chat requests wrongly:

=============  ========================================================================
``500``        HTTP 500 with the wire's error body
``429``        HTTP 429 with ``Retry-After`` (``retry_after`` seconds) and ``retry-after-ms``
``reset``      the connection is reset (SO_LINGER 0, then close: the peer gets an RST)
``slow``       no answer for ``slow_delay`` seconds (set it above the client timeout);
               for a stream, half the time the stall comes after the first chunk
``malformed``  HTTP 200 whose JSON body (or one stream event) is not valid JSON
``cut``        the body stops mid-way: a short Content-Length body, or a chunked
               stream without its terminating chunk, then the socket is closed
``sse_error``  HTTP 200 carrying ``{"error": {...}}``: as the JSON body, or as a
               stream event after some chunks
=============  ========================================================================

Routes: OpenAI-compatible ``POST /v1/chat/completions`` (JSON, or SSE when
``"stream": true``) and ``GET /v1/models``; GigaChat ``POST /api/v2/oauth`` (answers
``{"access_token", "expires_at"}`` in epoch ms), ``POST /api/v1/chat/completions``
(JSON or SSE) and ``GET /api/v1/models``. Only chat requests get faults, unless
``oauth_fault_rate`` is set.

    with FaultServer("gigachat", fault_rate=0.3, seed=7, auth_key=KEY) as server:
        provider = GigaChatProvider(ProviderConfig(
            name="giga", api_key=KEY, base_url=server.gigachat_url, auth_url=server.auth_url))
        ...
        server.counts["reset"], server.counts["ok"], server.requests

``force(kind, times)`` queues faults for the next chat requests, for exact tests.
``stop()`` ends every handler thread: sleeps are cut by an Event and open sockets are
shut down, so a slow response never holds shutdown up.
"""

from __future__ import annotations

import collections
import itertools
import json
import random
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Deque, Dict, List, Mapping, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

__all__ = ["FaultServer", "FAULT_KINDS"]

FAULT_KINDS = ("500", "429", "reset", "slow", "malformed", "cut", "sse_error")
WIRES = ("openai", "gigachat")
THREAD_PREFIX = "fault-server"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # FaultServer.stop joins the handler threads itself
    request_queue_size = 128
    owner: "FaultServer"

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"{THREAD_PREFIX}-{self.server_address[1]}-conn",
            daemon=True,
        )
        self.owner._track(thread)
        thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up mid-answer is expected here; count, do not print.
        with self.owner._lock:
            self.owner.handler_errors += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "FaultServer/1.0"
    timeout = 15  # an idle keep-alive connection ends on its own after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.owner._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.owner._closed(self.connection)

    def do_GET(self) -> None:
        self.server.owner._dispatch(self)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FaultServer:
    """A loopback server for one wire (``"openai"`` or ``"gigachat"``) with seeded faults.

    - ``fault_rate``: share of chat requests that get a fault (0..1).
    - ``faults``: relative weights of the fault kinds (default: every kind, weight 1).
    - ``seed``: seeds the choice of faults, so a run's mix is reproducible in
      distribution (threads interleave, so not request by request).
    - ``slow_delay``: seconds a ``slow`` answer waits; ``retry_after``: seconds a 429 asks.
    - ``api_key`` (openai) / ``auth_key`` (gigachat OAuth): when set, requests without
      them get 401. GigaChat chat requests need a token this server issued.
    - ``token_ttl``: lifetime of GigaChat tokens (short values force refreshes).
    - ``echo_secrets``: error messages quote the received Authorization header, as
      some proxies do (to test that clients scrub it).
    - ``chunks``: number of text chunks in a stream; ``chunk_delay``: seconds between them.
    """

    def __init__(
        self,
        wire: str = "openai",
        *,
        fault_rate: float = 0.0,
        faults: Optional[Mapping[str, float]] = None,
        seed: int = 0,
        slow_delay: float = 1.0,
        retry_after: float = 1.0,
        api_key: Optional[str] = None,
        auth_key: Optional[str] = None,
        token_ttl: float = 1800.0,
        oauth_fault_rate: float = 0.0,
        echo_secrets: bool = False,
        chunks: int = 4,
        chunk_delay: float = 0.0,
        model: Optional[str] = None,
    ) -> None:
        if wire not in WIRES:
            raise ValueError(f"wire must be one of {WIRES}; got {wire!r}")
        weights = dict(faults) if faults is not None else {kind: 1.0 for kind in FAULT_KINDS}
        unknown = set(weights) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; valid: {FAULT_KINDS}")
        self.wire = wire
        self.fault_rate = fault_rate
        self.oauth_fault_rate = oauth_fault_rate
        self._kinds = [kind for kind in weights if weights[kind] > 0]
        self._weights = [weights[kind] for kind in self._kinds]
        self.slow_delay = slow_delay
        self.retry_after = retry_after
        self.api_key = api_key
        self.auth_key = auth_key
        self.token_ttl = token_ttl
        self.echo_secrets = echo_secrets
        self.chunks = chunks
        self.chunk_delay = chunk_delay
        self.model = model or ("GigaChat" if wire == "gigachat" else "fault-model")
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._forced: Deque[Tuple[str, Optional[int]]] = collections.deque()
        self._stopping = threading.Event()
        self._threads: List[threading.Thread] = []
        self._sockets: set = set()
        self._httpd: Optional[_Server] = None
        self._serve_thread: Optional[threading.Thread] = None
        self._ids = itertools.count(1)
        self.counts: collections.Counter = collections.Counter()
        self.requests = 0
        self.handler_errors = 0
        self.tokens_issued: List[str] = []

    # Lifecycle ------------------------------------------------------------------------

    def start(self) -> "FaultServer":
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._serve_thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{THREAD_PREFIX}-{self.port}",
            daemon=True,
        )
        self._serve_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving; cut every sleep, close every connection, join every thread."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)
        deadline = time.monotonic() + timeout
        for thread in self._all_threads():
            thread.join(max(0.0, deadline - time.monotonic()))
        self._httpd = None

    def _all_threads(self) -> List[threading.Thread]:
        with self._lock:
            threads = list(self._threads)
        return threads + ([self._serve_thread] if self._serve_thread is not None else [])

    def alive_threads(self) -> List[threading.Thread]:
        """Threads of this server still running (none after ``stop()``)."""
        return [thread for thread in self._all_threads() if thread.is_alive()]

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # Addresses ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        """base_url for OpenAICompatibleProvider."""
        return self.base_url + "/v1"

    @property
    def gigachat_url(self) -> str:
        """base_url for GigaChatProvider."""
        return self.base_url + "/api/v1"

    @property
    def auth_url(self) -> str:
        """auth_url for GigaChatProvider."""
        return self.base_url + "/api/v2/oauth"

    # Faults ---------------------------------------------------------------------------

    def force(self, kind: str, times: int = 1, *, at_chunk: Optional[int] = None) -> None:
        """The next ``times`` chat requests get fault ``kind`` ("ok" for none); in a
        stream, ``at_chunk`` text chunks are sent first (default: a random number,
        and a ``slow`` stream stalls before its headers)."""
        if kind not in FAULT_KINDS + ("ok",):
            raise ValueError(f"unknown fault kind {kind!r}")
        with self._lock:
            self._forced.extend([(kind, at_chunk)] * times)

    def _choose(self, rate: float) -> Tuple[str, Optional[int]]:
        with self._lock:
            if self._forced:
                return self._forced.popleft()
            if self._kinds and self._rng.random() < rate:
                return self._rng.choices(self._kinds, self._weights)[0], None
            return "ok", None

    def _track(self, thread: threading.Thread) -> None:
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _opened(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    # Requests -------------------------------------------------------------------------

    def _dispatch(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._lock:
            self.requests += 1
        path = urlsplit(handler.path).path.rstrip("/")
        route = (handler.command, path)
        try:
            if self.wire == "openai" and route == ("POST", "/v1/chat/completions"):
                self._chat(handler, body, self._openai_auth(handler))
            elif self.wire == "openai" and route == ("GET", "/v1/models"):
                if self._openai_auth(handler):
                    self._send_json(handler, 200, {"object": "list", "data": [
                        {"id": self.model, "object": "model", "owned_by": "fault"}]})
            elif self.wire == "gigachat" and route == ("POST", "/api/v2/oauth"):
                self._oauth(handler, body)
            elif self.wire == "gigachat" and route == ("POST", "/api/v1/chat/completions"):
                self._chat(handler, body, self._gigachat_auth(handler))
            elif self.wire == "gigachat" and route == ("GET", "/api/v1/models"):
                if self._gigachat_auth(handler):
                    self._send_json(handler, 200, {"object": "list", "data": [
                        {"id": self.model, "object": "model", "owned_by": "salutedevices"}]})
            else:
                self._send_json(handler, 404, self._error_body(404, f"no route {handler.command} {path}"))
        except OSError:  # the client hung up (e.g. after its timeout)
            handler.close_connection = True

    def _openai_auth(self, handler: _Handler) -> bool:
        received = handler.headers.get("Authorization", "")
        if self.api_key is None or received == f"Bearer {self.api_key}":
            return True
        self._count("unauthorized")
        message = "Incorrect API key provided"
        if self.echo_secrets:
            message += f": {received!r}"
        self._send_json(handler, 401, self._error_body(401, message))
        return False

    def _gigachat_auth(self, handler: _Handler) -> bool:
        received = handler.headers.get("Authorization", "")
        with self._lock:
            known = received.startswith("Bearer ") and received[7:] in self.tokens_issued
        if known:
            return True
        self._count("unauthorized")
        message = "Unauthorized"
        if self.echo_secrets:
            message += f": token {received[7:]!r} is not valid"
        self._send_json(handler, 401, self._error_body(401, message))
        return False

    def _oauth(self, handler: _Handler, body: bytes) -> None:
        self._count("oauth")
        fault = self._choose(self.oauth_fault_rate)[0] if self.oauth_fault_rate else "ok"
        if fault != "ok":
            self._count(fault)
            return self._fault_plain(handler, fault)
        received = handler.headers.get("Authorization", "")
        if not handler.headers.get("RqUID"):
            return self._send_json(handler, 400, {"code": 4, "message": "RqUID header is required"})
        if self.auth_key is not None and received != f"Basic {self.auth_key}":
            message = "credentials doesn't match db data"
            if self.echo_secrets:
                message += f" (got {received!r})"
            return self._send_json(handler, 401, {"code": 6, "message": message})
        scope = parse_qs(body.decode("utf-8", "replace")).get("scope", [""])[0]
        if not scope:
            return self._send_json(handler, 400, {"code": 5, "message": "scope is empty"})
        token = f"fault-access-token-{self.port}-{next(self._ids)}-{random.getrandbits(64):016x}"
        with self._lock:
            self.tokens_issued.append(token)
        expires_at = int((time.time() + self.token_ttl) * 1000)
        self._send_json(handler, 200, {"access_token": token, "expires_at": expires_at})

    def _chat(self, handler: _Handler, body: bytes, authorized: bool) -> None:
        if not authorized:
            return
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
            return self._send_json(handler, 400, self._error_body(400, "messages is required"))
        stream = bool(payload.get("stream"))
        fault, at_chunk = self._choose(self.fault_rate)
        self._count("stream" if stream else "chat")
        self._count(fault)
        last = payload["messages"][-1] if payload["messages"] else {}
        text = f"Fault-free answer to: {last.get('content', '') if isinstance(last, dict) else ''}"
        if fault in ("500", "429", "reset"):
            return self._fault_plain(handler, fault)
        with self._lock:
            stall_mid_stream = stream and (at_chunk is not None or self._rng.random() < 0.5)
        if fault == "slow" and not stall_mid_stream:
            self._stopping.wait(self.slow_delay)
            fault = "ok"
        if stream:
            return self._stream(handler, text, fault, at_chunk)
        if fault == "malformed":
            return self._send_raw(handler, 200, b'{"choices": [{"message": {"content": "unterminat', "application/json")
        if fault == "cut":
            data = json.dumps(self._completion(text)).encode()
            return self._cut_body(handler, data)
        if fault == "sse_error":
            return self._send_json(handler, 200, {"error": {
                "message": "the model crashed after accepting the request", "type": "server_error", "code": None}})
        self._send_json(handler, 200, self._completion(text))

    def _fault_plain(self, handler: _Handler, fault: str) -> None:
        if fault == "500":
            return self._send_json(handler, 500, self._error_body(500, "Internal Server Error"))
        if fault == "429":
            return self._send_json(handler, 429, self._error_body(429, "Too many requests"), {
                "Retry-After": f"{self.retry_after:g}",  # fractions too, as some proxies send
                "retry-after-ms": str(int(self.retry_after * 1000)),
            })
        if fault == "reset":
            return self._reset(handler)
        if fault == "slow":
            self._stopping.wait(self.slow_delay)
        return self._send_json(handler, 503, self._error_body(503, f"fault {fault} on this route"))

    # Wire shapes ----------------------------------------------------------------------

    def _error_body(self, status: int, message: str) -> Dict[str, Any]:
        if self.wire == "gigachat":
            return {"status": status, "message": message}
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}

    def _completion(self, text: str) -> Dict[str, Any]:
        return {
            "id": f"chatcmpl-fault-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        }

    def _stream(self, handler: _Handler, text: str, fault: str, at_chunk: Optional[int]) -> None:
        words = text.split(" ")
        count = max(1, min(self.chunks, len(words)))
        size = -(-len(words) // count)
        pieces = [" ".join(words[i:i + size]) + (" " if i + size < len(words) else "") for i in range(0, len(words), size)]
        with self._lock:
            fail_at = self._rng.randrange(len(pieces)) if at_chunk is None else min(at_chunk, len(pieces) - 1)
        base = {"id": f"chatcmpl-fault-{next(self._ids)}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": self.model}

        def event(data: Any) -> bytes:
            return b"data: " + (data if isinstance(data, bytes) else json.dumps(data).encode()) + b"\n\n"

        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for index, piece in enumerate(pieces):
            if index and self.chunk_delay:
                self._stopping.wait(self.chunk_delay)
            if index == fail_at and fault != "ok":
                if fault == "cut":
                    return self._reset(handler, abortive=False)
                if fault == "malformed":
                    _write_chunk(handler, event(b'{"choices": [{"delta": {"content": "bro'))
                elif fault == "sse_error":
                    _write_chunk(handler, event({"error": {
                        "message": "the model crashed mid-stream", "type": "server_error", "code": None}}))
                elif fault == "slow":
                    self._stopping.wait(self.slow_delay)
                    fault = "ok"
                if fault != "ok":
                    _write_chunk(handler, event(b"[DONE]"))
                    handler.wfile.write(b"0\r\n\r\n")
                    return
            _write_chunk(handler, event({**base, "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": piece}, "finish_reason": None}]}))
        tail = event({**base, "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}]})
        tail += event({**base, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": len(pieces),
                                                       "total_tokens": 5 + len(pieces)}})
        _write_chunk(handler, tail + event(b"[DONE]"))
        handler.wfile.write(b"0\r\n\r\n")

    # Writing --------------------------------------------------------------------------

    def _send_json(self, handler: _Handler, status: int, body: Any, headers: Optional[Dict[str, str]] = None) -> None:
        self._send_raw(handler, status, json.dumps(body).encode(), "application/json", headers)

    @staticmethod
    def _send_raw(
        handler: _Handler, status: int, data: bytes, content_type: str, headers: Optional[Dict[str, str]] = None
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _cut_body(self, handler: _Handler, data: bytes) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data[: len(data) // 2])
        self._reset(handler, abortive=False)

    @staticmethod
    def _reset(handler: _Handler, abortive: bool = True) -> None:
        """Close the connection now: with an RST (``abortive``) or a plain FIN."""
        handler.close_connection = True
        sock = handler.connection
        try:
            if abortive:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                sock.shutdown(socket.SHUT_RDWR)
            handler.rfile.close()  # the socket really closes once its makefile is gone
            sock.close()
        except OSError:
            pass


def _write_chunk(handler: BaseHTTPRequestHandler, data: bytes) -> None:
    handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass

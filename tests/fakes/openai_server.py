"""A loopback fake of an OpenAI-compatible server, over real sockets.

For integration tests, benchmarks and reliability suites: a stdlib ThreadingHTTPServer
on 127.0.0.1 (an OS-chosen port), HTTP/1.1 keep-alive, Nagle off, streaming with chunked
transfer encoding, written to the socket piece by piece as a real server does.

Serves ``POST /v1/chat/completions`` (JSON, or SSE when ``"stream": true``, with the
usage chunk when ``stream_options.include_usage``) and ``GET /v1/models``.

    from fakes import FakeOpenAIServer, Fault   # pytest puts tests/ on sys.path

    with FakeOpenAIServer(latency=0.005) as server:
        provider = OpenAICompatibleProvider(
            ProviderConfig(name="fake", model=server.model, base_url=server.url))
        provider.generate("Hi")                       # 'Fake answer to: Hi'
        server.add_fault(Fault(status=503), times=2)  # the next two requests get 503
        server.request_count, server.connection_count, server.requests[-1].json

Faults (``Fault``) are queued with ``add_fault`` and consumed one per request, or chosen
by ``fault_hook(request) -> Fault | None``: an HTTP error with any body and headers, an
extra delay, a dropped connection, and mid-stream: a cut connection, an error event, a
stall or a gate (the stream waits for a ``threading.Event`` after N chunks).

``LoopbackServer`` is the reusable base (start/stop, counters, faults, chunked writing);
subclass it and implement ``handle`` for another wire protocol (see the Ollama fake in
tests/test_ollama_openai_integration.py).
"""

from __future__ import annotations

import collections
import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Deque, Dict, List, Optional, Union
from urllib.parse import urlsplit

__all__ = ["Fault", "RecordedRequest", "LoopbackServer", "FakeOpenAIServer", "echo_reply"]

GATE_TIMEOUT = 10.0  # a gate never set still lets the stream finish: tests cannot hang


@dataclass
class Fault:
    """What to do wrong with one request.

    - ``status`` (+ ``body``: dict -> JSON, str/bytes as is; ``headers``): answer with that
      HTTP status instead of the normal answer.
    - ``delay``: seconds to wait before answering (added to the server's ``latency``).
    - ``drop``: close the connection without answering.
    - Streams only, once ``after_chunks`` content chunks were sent, in this order:
      ``gate`` (wait until the Event is set, at most 10 s), ``stall`` (seconds of
      silence), ``error_event`` (send it as an event and end the stream), ``cut`` (close
      the connection abruptly, without the final chunk).
    """

    status: Optional[int] = None
    body: Any = None
    headers: Dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    after_chunks: int = 0
    gate: Optional[threading.Event] = None
    stall: float = 0.0
    error_event: Optional[Dict[str, Any]] = None
    cut: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it. ``connection`` numbers the TCP connection
    it came on (1, 2, ...), so keep-alive reuse is visible."""

    method: str
    path: str
    headers: Dict[str, str]
    body: bytes
    connection: int

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() closes the sockets itself; never wait on idle keep-alive
    request_queue_size = 256  # benchmarks open many connections at once
    owner: "LoopbackServer"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "FakeLLM/1.0"
    timeout = 30  # an idle keep-alive connection ends after this
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection_number = self.server.owner._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._closed(self.connection)

    def do_GET(self) -> None:
        self.server.owner._dispatch(self)

    do_POST = do_GET
    do_PUT = do_GET
    do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


class LoopbackServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 with counters and fault injection.

    ``latency`` (seconds before each answer) and ``chunk_delay`` (seconds between streamed
    chunks) may be changed while running. Use as a context manager or start()/stop().
    """

    def __init__(self, *, latency: float = 0.0, chunk_delay: float = 0.0) -> None:
        self.latency = latency
        self.chunk_delay = chunk_delay
        self.fault_hook: Optional[Callable[[RecordedRequest], Optional[Fault]]] = None
        self._lock = threading.Lock()
        self._faults: Deque[Fault] = collections.deque()
        self._sockets: set = set()
        self._connection_numbers = itertools.count(1)
        self._stopping = threading.Event()
        self._httpd: Optional[_HTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.reset()

    # Lifecycle ------------------------------------------------------------------------

    def start(self) -> "LoopbackServer":
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=type(self).__name__, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection (streams in flight break)."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._httpd = None

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not started: call start() or use it in a with block")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (no path)."""
        return f"http://127.0.0.1:{self.port}"

    # Counters and faults --------------------------------------------------------------

    def reset(self) -> None:
        """Zero the counters, forget recorded requests and queued faults."""
        with self._lock:
            self.request_count = 0
            self.connection_count = 0
            self.chunks_sent = 0
            self.requests: List[RecordedRequest] = []
            self._faults.clear()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._sockets)

    def add_fault(self, fault: Fault, times: int = 1) -> None:
        """Apply ``fault`` to the next ``times`` requests (after earlier queued faults)."""
        with self._lock:
            self._faults.extend([fault] * times)

    def _next_fault(self, request: RecordedRequest) -> Optional[Fault]:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
        return self.fault_hook(request) if self.fault_hook is not None else None

    def _opened(self, sock: socket.socket) -> int:
        with self._lock:
            self.connection_count += 1
            self._sockets.add(sock)
            return next(self._connection_numbers)

    def _closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    # Request handling -----------------------------------------------------------------

    def _dispatch(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        request = RecordedRequest(
            method=handler.command,
            path=handler.path,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            connection=handler.connection_number,
        )
        with self._lock:
            self.request_count += 1
            self.requests.append(request)
        fault = self._next_fault(request)
        try:
            delay = self.latency + (fault.delay if fault is not None else 0.0)
            if delay:
                self._stopping.wait(delay)
            if fault is not None and fault.drop:
                self.abort(handler)
            elif fault is not None and fault.status is not None:
                self.send_body(handler, fault.status, fault.body, fault.headers)
            else:
                self.handle(handler, request, fault)
        except (BrokenPipeError, ConnectionResetError):  # the client left: nothing to answer
            handler.close_connection = True

    def handle(self, handler: BaseHTTPRequestHandler, request: RecordedRequest, fault: Optional[Fault]) -> None:
        """Answer one request (subclasses). ``fault`` is the request's fault, if any."""
        self.send_body(handler, 404, {"error": f"no route for {request.method} {request.path}"})

    # Writing helpers for subclasses -------------------------------------------------------

    def send_body(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: Any = None,
        headers: Optional[Dict[str, str]] = None,
        content_type: Optional[str] = None,
    ) -> None:
        """A whole response: ``body`` dict/list -> JSON, str -> UTF-8 text, bytes as is."""
        if isinstance(body, (dict, list)):
            data, content_type = json.dumps(body).encode(), content_type or "application/json"
        elif isinstance(body, str):
            data, content_type = body.encode(), content_type or "text/plain; charset=utf-8"
        else:
            data, content_type = body or b"", content_type or "application/octet-stream"
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def stream_body(
        self,
        handler: BaseHTTPRequestHandler,
        content_type: str,
        pieces: List[str],
        *,
        frame: Callable[[str], bytes],
        fault: Optional[Fault],
        head: bytes = b"",
        tail: bytes = b"",
        error_frame: Callable[[Dict[str, Any]], bytes] = lambda event: json.dumps(event).encode() + b"\n",
        keepalive: bytes = b"",
    ) -> None:
        """A 200 streamed with chunked encoding: ``head``, then each piece framed by
        ``frame`` (one socket write each, ``chunk_delay`` apart, preceded by ``keepalive``
        if given), then ``tail``. The fault's stream actions happen after
        ``fault.after_chunks`` pieces."""
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        if head:
            self._write_chunk(handler, head)
        for index in range(len(pieces) + 1):
            at_fault = fault is not None and index == min(fault.after_chunks, len(pieces))
            if at_fault and self._stream_fault(handler, fault, error_frame):
                return
            if index == len(pieces):
                break
            if index and self.chunk_delay:
                self._stopping.wait(self.chunk_delay)
            if keepalive:
                self._write_chunk(handler, keepalive)
            self._write_chunk(handler, frame(pieces[index]))
            with self._lock:
                self.chunks_sent += 1
        if tail:
            self._write_chunk(handler, tail)
        handler.wfile.write(b"0\r\n\r\n")

    def _stream_fault(self, handler: BaseHTTPRequestHandler, fault: Fault, error_frame: Callable) -> bool:
        """Apply the fault's stream actions; True when the stream is over."""
        if fault.gate is not None:
            fault.gate.wait(GATE_TIMEOUT)
        if fault.stall:
            self._stopping.wait(fault.stall)
        if fault.error_event is not None:
            self._write_chunk(handler, error_frame(fault.error_event))
            handler.wfile.write(b"0\r\n\r\n")
            return True
        if fault.cut:
            self.abort(handler)
            return True
        return False

    @staticmethod
    def _write_chunk(handler: BaseHTTPRequestHandler, data: bytes) -> None:
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    @staticmethod
    def abort(handler: BaseHTTPRequestHandler) -> None:
        """Close the connection at once, mid-response if need be."""
        handler.close_connection = True
        _shutdown(handler.connection)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def echo_reply(payload: Dict[str, Any]) -> str:
    """The default answer: 'Fake answer to: <last message content>'."""
    messages = payload.get("messages") or [{}]
    return f"Fake answer to: {messages[-1].get('content', '')}"


def split_words(text: str) -> List[str]:
    """``text`` as streamed pieces: words, each but the last with its following space."""
    words = text.split(" ")
    return [word + " " for word in words[:-1]] + words[-1:]


class FakeOpenAIServer(LoopbackServer):
    """An OpenAI-compatible server: ``url`` is the base_url to configure (``.../v1``).

    - ``reply``: the answer text, or a function of the request JSON (default: echo).
    - ``chunks``: the streamed pieces (default: ``reply`` split into words).
    - ``model``: reported in answers; ``models``: what ``/v1/models`` lists (default
      ``[model]``); a chat request for a model not listed gets OpenAI's 404.
    - ``api_key``: when set, requests without ``Authorization: Bearer <api_key>`` get 401.
    - ``reject_stream_options``: answer a stream request carrying ``stream_options`` with
      vLLM's 400 (older servers do).
    - ``keepalive_comments``: send ``: keep-alive`` SSE comments between chunks.
    - ``latency``, ``chunk_delay``: see ``LoopbackServer``.
    """

    def __init__(
        self,
        *,
        reply: Union[str, Callable[[Dict[str, Any]], str]] = echo_reply,
        chunks: Optional[List[str]] = None,
        model: str = "fake-model",
        models: Optional[List[str]] = None,
        api_key: Optional[str] = None,
        reject_stream_options: bool = False,
        keepalive_comments: bool = False,
        latency: float = 0.0,
        chunk_delay: float = 0.0,
    ) -> None:
        super().__init__(latency=latency, chunk_delay=chunk_delay)
        self.reply = reply
        self.chunks = chunks
        self.model = model
        self.models = models if models is not None else [model]
        self.api_key = api_key
        self.reject_stream_options = reject_stream_options
        self.keepalive_comments = keepalive_comments
        self._ids = itertools.count(1)

    def __enter__(self) -> "FakeOpenAIServer":
        self.start()
        return self

    @property
    def url(self) -> str:
        """The base_url for a provider: ``http://127.0.0.1:<port>/v1``."""
        return self.base_url + "/v1"

    def handle(self, handler: BaseHTTPRequestHandler, request: RecordedRequest, fault: Optional[Fault]) -> None:
        path = urlsplit(request.path).path.rstrip("/")
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self.send_body(handler, 401, _openai_error(
                "Incorrect API key provided. You can find your API key at https://example.invalid/keys.",
                "invalid_request_error", "invalid_api_key"))
        if request.method == "GET" and path == "/v1/models":
            return self.send_body(handler, 200, {"object": "list", "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "fake"} for name in self.models]})
        if request.method == "POST" and path == "/v1/chat/completions":
            return self._chat(handler, request, fault)
        self.send_body(handler, 404, _openai_error(f"Unknown route {request.method} {path}", "invalid_request_error"))

    def _chat(self, handler: BaseHTTPRequestHandler, request: RecordedRequest, fault: Optional[Fault]) -> None:
        payload = request.json
        if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
            error = _openai_error("'messages' is a required property", "invalid_request_error")
            return self.send_body(handler, 400, error)
        model = payload.get("model")
        if model not in self.models:
            return self.send_body(handler, 404, _openai_error(
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error", "model_not_found"))
        text = self.reply(payload) if callable(self.reply) else self.reply
        pieces = list(self.chunks) if self.chunks is not None else split_words(text)
        text = "".join(pieces)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in payload["messages"] if isinstance(m, dict))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(pieces),
                 "total_tokens": prompt_tokens + len(pieces)}
        base = {"id": f"chatcmpl-fake-{next(self._ids)}", "created": int(time.time()), "model": model}
        if not payload.get("stream"):
            return self.send_body(handler, 200, {**base, "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                 "finish_reason": "stop"}], "usage": usage})
        if "stream_options" in payload and self.reject_stream_options:
            return self.send_body(handler, 400, {
                "object": "error", "type": "BadRequestError", "param": None, "code": 400,
                "message": "[{'type': 'extra_forbidden', 'loc': ('body', 'stream_options'), "
                           "'msg': 'Extra inputs are not permitted'}]"})
        chunk = {**base, "object": "chat.completion.chunk"}

        def event(data: Dict[str, Any]) -> bytes:
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        def frame(piece: str) -> bytes:
            return event({**chunk, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})

        tail = event({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (payload.get("stream_options") or {}).get("include_usage"):
            tail += event({**chunk, "choices": [], "usage": usage})
        self.stream_body(
            handler, "text/event-stream", pieces, frame=frame, fault=fault,
            head=event({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                               "finish_reason": None}]}),
            tail=tail + b"data: [DONE]\n\n",
            error_frame=event,
            keepalive=b": keep-alive\n\n" if self.keepalive_comments else b"",
        )


def _openai_error(message: str, kind: str, code: Optional[str] = None) -> Dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}

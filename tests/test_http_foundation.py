"""The shared HTTP foundation: session factory, retry policy, error mapping, stream readers.

Stream readers are fed scripted chunks (exact control over where the network splits the
bytes); the retry policy and timeouts run against a real loopback server.
"""

from __future__ import annotations

import gzip
import http.server
import json
import logging
import socket
import threading
import time
from typing import Callable, List, Optional

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
import responses
import urllib3
from urllib3.exceptions import MaxRetryError, ProtocolError, ReadTimeoutError

from multi_llm_orchestrator.config import ProviderConfig
from multi_llm_orchestrator.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitError,
    ResponseFormatError,
)
from multi_llm_orchestrator import http as transport
from multi_llm_orchestrator.http import (
    MAX_RETRY_AFTER,
    RETRY_AFTER_CAP,
    DeadlineTimeout,
    HttpProvider,
    build_session,
    error_from_exception,
    error_from_status,
    error_message_from_body,
    make_retry,
    parse_retry_after,
)
from multi_llm_orchestrator.streaming import iter_json_lines, iter_lines, iter_sse_data, iter_sse_json, stream_error


class PlainProvider(HttpProvider):
    """The smallest HttpProvider: the foundation without any provider's quirks."""

    type_name = "plain"
    tls_hint = "pass ca_bundle"

    def complete(self, messages, params=None, *, timeout=None):  # pragma: no cover - unused
        raise NotImplementedError

    def stream(self, messages, params=None, *, timeout=None):  # pragma: no cover - unused
        raise NotImplementedError

    def health_check(self, timeout=None):  # pragma: no cover - unused
        return False


def plain(base_url: str = "http://127.0.0.1:9", **fields) -> PlainProvider:
    fields.setdefault("name", "plain")
    return PlainProvider(ProviderConfig(base_url=base_url, **fields))


# Stream readers over scripted chunks ----------------------------------------------------


class ScriptedRaw:
    """``response.raw`` whose ``read1`` returns the given chunks (or raises them)."""

    def __init__(self, chunks):
        self.chunks = list(chunks)

    def read1(self, amount, decode_content=None):
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        if isinstance(chunk, BaseException):
            raise chunk
        return chunk


class ScriptedResponse:
    def __init__(self, chunks):
        self.raw = ScriptedRaw(chunks)
        self.closed = 0

    def close(self):
        self.closed += 1


def lines_of(chunks, deadline: Optional[float] = None, mapper: Optional[Callable] = None):
    response = ScriptedResponse(chunks)
    mapper = mapper or (lambda exc: error_from_exception(exc, provider="p", timeout=1.0, tls_hint="hint"))
    return response, iter_lines(response, provider="p", deadline=deadline, map_exception=mapper)


def sse(chunks, **kwargs) -> List[str]:
    _, lines = lines_of(chunks)
    return list(iter_sse_data(lines, provider="p", **kwargs))


def test_sse_blank_lines_comments_and_other_fields():
    body = b"\n\n: keep-alive\nevent: message\nid: 7\nretry: 100\ndata: one\n\n\n\n:\ndata:two\n\ndata: [DONE]\n\n"
    assert sse([body]) == ["one", "two"]


def test_sse_multi_line_data_is_joined_with_newlines():
    assert sse([b"data: first\ndata: second\ndata:\ndata: fourth\n\ndata: [DONE]\n\n"]) == [
        "first\nsecond\n\nfourth"
    ]


def test_sse_crlf_line_endings():
    assert sse([b"data: a\r\n\r\ndata: b\r\ndata: c\r\n\r\ndata: [DONE]\r\n\r\n"]) == ["a", "b\nc"]


def test_sse_done_ends_the_stream_and_later_events_are_not_read():
    assert sse([b"data: a\n\ndata: [DONE]\n\ndata: after\n\n"]) == ["a"]


def test_sse_done_without_trailing_blank_line_still_ends_cleanly():
    assert sse([b"data: a\n\ndata: [DONE]"]) == ["a"]


def test_sse_stream_cut_before_done_raises_unavailable():
    with pytest.raises(ProviderUnavailableError, match=r"\[DONE\]"):
        sse([b"data: a\n\ndata: b\n\n"])
    assert sse([b"data: a\n\n"], require_done=False) == ["a"]


def test_sse_event_split_across_many_chunks():
    body = b"data: {\"a\": 1}\n\ndata: [DONE]\n\n"
    chunks = [body[i : i + 1] for i in range(len(body))]  # one byte per read
    _, lines = lines_of(chunks)
    assert list(iter_sse_json(lines, provider="p")) == [{"a": 1}]


def test_russian_text_split_inside_a_utf8_sequence():
    body = 'data: {"text": "Привет, мир"}\n\ndata: [DONE]\n\n'.encode("utf-8")
    cut = body.index("р".encode("utf-8")) + 1  # between the two bytes of "р"
    assert body[cut - 1 : cut + 1] == "р".encode("utf-8")
    _, lines = lines_of([body[:cut], body[cut:]])
    assert list(iter_sse_json(lines, provider="p")) == [{"text": "Привет, мир"}]


SPLIT_BODY = (
    ': hello\r\n\r\ndata: {"t": "Ёжик в тумане"}\r\n\r\n'
    'event: x\ndata: {"t": "строка 1\\nстрока 2"}\n\ndata: {"t": "€ and 😀"}\n\ndata: [DONE]\n\n'
).encode("utf-8")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(SPLIT_BODY) - 1), max_size=12, unique=True))
def test_any_chunking_of_a_stream_gives_the_same_events(cuts):
    cuts = sorted(cuts)
    chunks = [SPLIT_BODY[a:b] for a, b in zip([0] + cuts, cuts + [len(SPLIT_BODY)])]
    _, lines = lines_of(chunks)
    assert [e["t"] for e in iter_sse_json(lines, provider="p")] == [
        "Ёжик в тумане", "строка 1\nстрока 2", "€ and 😀",
    ]


def test_non_utf8_bytes_raise_response_format_error_and_close():
    response, lines = lines_of([b"data: \xff\xfe broken\n\n"])
    with pytest.raises(ResponseFormatError, match="UTF-8"):
        list(iter_sse_data(lines, provider="p"))
    assert response.closed == 1


def test_data_that_is_not_json_raises_response_format_error():
    _, lines = lines_of([b"data: {not json\n\ndata: [DONE]\n\n"])
    with pytest.raises(ResponseFormatError, match="not valid JSON"):
        list(iter_sse_json(lines, provider="p"))
    _, lines = lines_of([b"data: [1, 2]\n\ndata: [DONE]\n\n"])
    with pytest.raises(ResponseFormatError, match="not a JSON object"):
        list(iter_sse_json(lines, provider="p"))


@pytest.mark.parametrize(
    "event, error_type, status",
    [
        ({"error": {"message": "slow down", "code": 429}}, RateLimitError, 429),
        ({"error": {"message": "overloaded", "code": "503"}}, ProviderUnavailableError, 503),
        ({"error": {"message": "bad key", "code": 401}}, AuthenticationError, 401),
        ({"error": {"message": "server_error", "type": "server_error"}}, ProviderUnavailableError, None),
        ({"error": "model crashed"}, ProviderUnavailableError, None),
    ],
)
def test_error_object_inside_a_data_event(event, error_type, status):
    _, lines = lines_of([b"data: {\"x\": 1}\n\n", b"data: " + json.dumps(event).encode() + b"\n\n"])
    events = iter_sse_json(lines, provider="p")
    assert next(events) == {"x": 1}
    with pytest.raises(error_type) as info:
        next(events)
    assert info.value.status_code == status
    assert info.value.provider == "p"


def test_stream_error_ignores_events_without_error():
    assert stream_error({"choices": []}, "p") is None
    assert stream_error({"error": None}, "p") is None


def test_json_lines_skip_blank_lines_and_raise_on_error_lines():
    _, lines = lines_of([b'{"a": 1}\n\n{"b"', b': 2}\n{"error": "out of memory"}\n'])
    items = iter_json_lines(lines, provider="p")
    assert next(items) == {"a": 1}
    assert next(items) == {"b": 2}
    with pytest.raises(ProviderUnavailableError, match="out of memory"):
        next(items)


def test_last_line_without_newline_is_delivered():
    _, lines = lines_of([b"one\ntwo"])
    assert list(lines) == ["one", "two"]


def test_transport_error_mid_stream_is_mapped_and_response_closed():
    broken = ProtocolError("Connection broken: IncompleteRead(0 bytes read)", OSError())
    response, lines = lines_of([b"data: a\n\n", broken])
    events = iter_sse_data(lines, provider="p")
    assert next(events) == "a"
    with pytest.raises(ProviderUnavailableError, match="broke while reading"):
        next(events)
    assert response.closed == 1


def test_read_timeout_mid_stream_is_a_timeout():
    response, lines = lines_of([b"data: a\n\n", ReadTimeoutError(None, None, "Read timed out.")])
    with pytest.raises(ProviderTimeoutError):
        list(iter_sse_data(lines, provider="p"))
    assert response.closed == 1


def test_stream_deadline_is_enforced_between_reads():
    response, lines = lines_of([b"data: a\n\n", b"data: b\n\n"], deadline=time.monotonic() - 1)
    with pytest.raises(ProviderTimeoutError, match="did not finish"):
        list(iter_sse_data(lines, provider="p"))
    assert response.closed == 1


def test_closing_the_iterator_early_closes_the_response():
    response, lines = lines_of([b"data: a\n\n", b"data: b\n\n"])
    events = iter_sse_data(lines, provider="p")
    assert next(events) == "a"
    events.close()
    lines.close()
    assert response.closed == 1


# Error mapping -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, error_type, retryable",
    [
        (400, InvalidRequestError, False),
        (401, AuthenticationError, False),
        (402, QuotaExceededError, False),
        (403, AuthenticationError, False),
        (404, InvalidRequestError, False),
        (408, ProviderTimeoutError, True),
        (413, InvalidRequestError, False),
        (422, InvalidRequestError, False),
        (429, RateLimitError, True),
        (500, ProviderUnavailableError, True),
        (502, ProviderUnavailableError, True),
        (503, ProviderUnavailableError, True),
        (504, ProviderUnavailableError, True),
    ],
)
def test_error_from_status_table(status, error_type, retryable):
    error = error_from_status(status, "message text", provider="p", retry_after=2.5)
    assert type(error) is error_type
    assert error.status_code == status
    assert error.provider == "p"
    assert error.retryable is retryable
    assert "message text" in str(error) and f"HTTP {status}" in str(error)
    if status == 429:
        assert error.retry_after == 2.5


@pytest.mark.parametrize(
    "body, text, expected",
    [
        ({"status": 404, "message": "No such model"}, "", "No such model"),
        ({"code": 7, "message": "scope from db not fully includes consumed scope"}, "", "scope from db"),
        ({"error": {"message": "Rate limit", "type": "requests"}}, "", "Rate limit"),
        ({"error": {"type": "server_error"}}, "", "server_error"),
        ({"error": "model 'x' not found"}, "", "model 'x' not found"),
        ({"detail": "Not Found"}, "", "Not Found"),
        ([{"error": {"message": "in a list"}}], "", "in a list"),
        (None, "<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
        (None, "", "no error message in the response"),
    ],
)
def test_error_message_from_every_body_shape(body, text, expected):
    assert expected in error_message_from_body(body, text)


def test_parse_retry_after_forms():
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"Retry-After": "1.5"}) == 1.5
    assert parse_retry_after({"Retry-After": "-4"}) == 0.0
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None
    in_ten = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 10))
    assert 8.0 <= parse_retry_after({"Retry-After": in_ten}) <= 10.0
    requests_headers = requests.structures.CaseInsensitiveDict({"retry-after": "7"})
    assert parse_retry_after(requests_headers) == 7.0


def _wrapped(reason: BaseException) -> requests.exceptions.ConnectionError:
    return requests.exceptions.ConnectionError(MaxRetryError(None, "http://h/", reason))


@pytest.mark.parametrize(
    "exc, error_type, text",
    [
        (requests.exceptions.ConnectTimeout("connect timed out"), ProviderTimeoutError, "no answer within 5 s"),
        (requests.exceptions.ReadTimeout("read timed out"), ProviderTimeoutError, "no answer within 5 s"),
        (_wrapped(ReadTimeoutError(None, "http://h/", "Read timed out.")), ProviderTimeoutError, "no answer"),
        (requests.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED"), ProviderUnavailableError, "TLS verification failed"),
        (requests.exceptions.ChunkedEncodingError(ProtocolError("broken")), ProviderUnavailableError, "broke"),
        (ProtocolError("Connection broken: IncompleteRead"), ProviderUnavailableError, "broke while reading"),
        (requests.exceptions.ContentDecodingError("bad gzip"), ResponseFormatError, "decode"),
        (requests.exceptions.InvalidURL("no host"), InvalidRequestError, "check base_url"),
        (requests.exceptions.ConnectionError("refused"), ProviderUnavailableError, "could not connect"),
        (ConnectionResetError("reset by peer"), ProviderUnavailableError, "reset by peer"),
        (requests.exceptions.RetryError("too many 503"), ProviderUnavailableError, "too many 503"),
    ],
)
def test_error_from_exception_table(exc, error_type, text):
    error = error_from_exception(exc, provider="p", timeout=5, tls_hint="pass ca_bundle")
    assert type(error) is error_type
    assert text in str(error)
    assert error.provider == "p"


def test_tls_error_carries_the_hint_and_is_not_retryable():
    error = error_from_exception(
        requests.exceptions.SSLError("certificate verify failed"), provider="p", timeout=5, tls_hint="use ca_bundle=X"
    )
    assert "use ca_bundle=X" in str(error)
    assert error.retryable is False


def test_provider_errors_pass_through_unchanged():
    original = RateLimitError("slow", provider="p", retry_after=3)
    assert error_from_exception(original, provider="q", timeout=1, tls_hint="") is original


def test_invalid_header_error_never_echoes_the_value():
    with pytest.raises(requests.exceptions.InvalidHeader) as info:
        requests.Request("GET", "http://127.0.0.1:9/", headers={"Authorization": "Bearer SECRET-123\n"}).prepare()
    assert "SECRET-123" in str(info.value)  # what requests itself would have shown
    error = error_from_exception(info.value, provider="p", timeout=1, tls_hint="")
    assert isinstance(error, InvalidRequestError)
    assert "SECRET-123" not in str(error)


def test_a_header_with_a_newline_fails_before_any_network_io():
    provider = plain()
    with pytest.raises(InvalidRequestError) as info:
        provider.request("GET", provider.base_url + "/", timeout=1, headers={"Authorization": "Bearer TOPSECRET\n"})
    assert "TOPSECRET" not in str(info.value)


def test_every_request_has_a_connect_and_read_timeout(monkeypatch):
    provider = plain("http://api.test")
    seen = {}

    def fake_send(prepared, **kwargs):
        seen.update(kwargs)
        raise requests.exceptions.ConnectionError("stop here")

    monkeypatch.setattr(provider.session, "send", fake_send)
    with pytest.raises(ProviderUnavailableError):
        provider.request("GET", "http://api.test/x", timeout=45)
    sent = seen["timeout"]  # a DeadlineTimeout: the values shrink as the deadline nears
    # connect capped at 10 s, read = the call's timeout
    assert (sent.connect_timeout, pytest.approx(sent.read_timeout, abs=0.5)) == (10.0, 45)
    with pytest.raises(ProviderUnavailableError):
        provider.request("GET", "http://api.test/x", timeout=3)
    sent = seen["timeout"]
    assert (pytest.approx(sent.connect_timeout, abs=0.5), pytest.approx(sent.read_timeout, abs=0.5)) == (3, 3)


@responses.activate
def test_error_for_response_reads_body_and_retry_after():
    responses.get("http://api.test/limited", status=429, json={"error": {"message": "Too many"}},
                  headers={"Retry-After": "12"})
    provider = plain("http://api.test", max_retries=0)
    with pytest.raises(RateLimitError) as info:
        provider.request("GET", "http://api.test/limited", timeout=5)
    assert info.value.retry_after == 12.0
    assert "Too many" in str(info.value)


@responses.activate
def test_request_json_rejects_a_body_that_is_not_json():
    responses.get("http://api.test/html", status=200, body="<html>maintenance</html>")
    with pytest.raises(ResponseFormatError, match="maintenance"):
        plain("http://api.test").request_json("GET", "http://api.test/html", timeout=5)


@responses.activate
def test_request_sends_utf8_json_not_ascii_escapes():
    responses.post("http://api.test/echo", json={"ok": True})
    assert plain("http://api.test").request_json(
        "POST", "http://api.test/echo", timeout=5, json_body={"text": "Привет"}
    ) == {"ok": True}
    sent = responses.calls[0].request
    assert "Привет".encode("utf-8") in sent.body
    assert sent.headers["Content-Type"] == "application/json"


# Session factory ------------------------------------------------------------------------


def test_session_pool_is_sized_from_config_with_a_default_of_32():
    assert ProviderConfig(name="x").pool_size >= 32
    session = build_session(ProviderConfig(name="x"))
    adapter = session.get_adapter("https://example.test/")
    assert adapter._pool_maxsize == ProviderConfig(name="x").pool_size
    assert build_session(ProviderConfig(name="x", pool_size=7)).get_adapter("http://h/")._pool_maxsize == 7


def test_session_adapter_carries_the_retry_policy():
    retry = build_session(ProviderConfig(name="x", max_retries=3)).get_adapter("https://h/").max_retries
    assert isinstance(retry, urllib3.util.Retry)
    assert (retry.total, retry.connect, retry.status, retry.read) == (3, 3, 3, 0)
    assert set(retry.status_forcelist) == {429, 500, 502, 503, 504}
    assert "POST" in retry.allowed_methods
    assert retry.respect_retry_after_header
    assert retry.backoff_factor > 0 and retry.backoff_jitter > 0
    disabled = make_retry(0)
    assert (disabled.total, disabled.connect, disabled.status) == (0, 0, 0)


def test_tls_verification_settings():
    assert build_session(ProviderConfig(name="x")).verify is True


def test_ca_bundle_replaces_the_trust_store(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert build_session(ProviderConfig(name="x", ca_bundle=str(bundle))).verify == str(bundle)


def test_missing_ca_bundle_is_a_configuration_error(tmp_path):
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigurationError, match="nope.pem"):
        build_session(ProviderConfig(name="x", ca_bundle=str(missing)))


def test_verify_ssl_false_disables_verification_and_warns_once(caplog):
    caplog.set_level(logging.WARNING, logger="multi_llm_orchestrator")
    name = f"insecure-{time.monotonic_ns()}"
    assert build_session(ProviderConfig(name=name, verify_ssl=False)).verify is False
    build_session(ProviderConfig(name=name, verify_ssl=False))
    warnings = [r for r in caplog.records if "TLS verification is OFF" in r.getMessage()]
    assert len(warnings) == 1 and name in warnings[0].getMessage()


# Real loopback server: retries, timeouts --------------------------------------------


class ScriptServer(http.server.ThreadingHTTPServer):
    """Answers each request with the next scripted action; records every request."""

    daemon_threads = True
    block_on_close = False

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ScriptHandler)
        self.actions: List[Callable] = []
        self.hits: List[float] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def get_request(self):
        pair = super().get_request()
        with self.lock:
            self.connections += 1
        return pair

    def next_action(self) -> Callable:
        with self.lock:
            self.hits.append(time.monotonic())
            return self.actions.pop(0) if len(self.actions) > 1 else self.actions[0]


class ScriptHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        self.handle_one()

    do_POST = do_GET

    def handle_one(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.next_action()(self)

    def log_message(self, *args):
        pass


def reply(status: int, body: bytes = b"{}", headers=None, content_type="application/json"):
    def action(handler):
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return action


def drop(handler):
    """Read the request, then close the connection without answering."""
    handler.close_connection = True
    handler.connection.shutdown(socket.SHUT_RDWR)


def hang(handler):
    handler.server.stop.wait(10)
    handler.close_connection = True


def chunked(parts: List[bytes], headers=None, pause: float = 0.0):
    def action(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        for part in parts:
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            handler.wfile.flush()
            time.sleep(pause)
        handler.wfile.write(b"0\r\n\r\n")

    return action


@pytest.fixture
def server():
    srv = ScriptServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.stop.set()
    srv.shutdown()
    srv.server_close()


def test_status_retries_are_disabled_by_max_retries_0(server):
    server.actions = [reply(503, b'{"message": "busy"}'), reply(200)]
    provider = plain(server.url, max_retries=0)
    with pytest.raises(ProviderUnavailableError, match="busy"):
        provider.request_json("POST", server.url + "/x", timeout=5, json_body={})
    assert len(server.hits) == 1


def test_5xx_is_retried_up_to_max_retries_for_post(server):
    server.actions = [reply(503), reply(500), reply(200, b'{"ok": 1}')]
    provider = plain(server.url, max_retries=2)
    assert provider.request_json("POST", server.url + "/x", timeout=5, json_body={}) == {"ok": 1}
    assert len(server.hits) == 3


def test_retries_give_up_with_the_last_status(server):
    server.actions = [reply(502, b'{"message": "bad gateway"}')]
    with pytest.raises(ProviderUnavailableError, match="bad gateway") as info:
        plain(server.url, max_retries=1).request("GET", server.url + "/x", timeout=5)
    assert info.value.status_code == 502
    assert len(server.hits) == 2


def test_non_retryable_status_is_not_retried(server):
    server.actions = [reply(400, b'{"message": "bad"}'), reply(200)]
    with pytest.raises(InvalidRequestError):
        plain(server.url, max_retries=3).request("POST", server.url + "/x", timeout=5, json_body={})
    assert len(server.hits) == 1


def test_retry_after_is_honoured(server):
    server.actions = [reply(429, headers={"Retry-After": "1"}), reply(200, b'{"ok": 1}')]
    assert plain(server.url, max_retries=1).request_json("GET", server.url + "/x", timeout=5) == {"ok": 1}
    assert len(server.hits) == 2
    assert server.hits[1] - server.hits[0] >= 0.95


def test_retry_after_past_the_deadline_returns_the_429_at_once(server):
    server.actions = [reply(429, b'{"message": "Too many requests"}', headers={"Retry-After": "30"})]
    started = time.monotonic()
    with pytest.raises(RateLimitError) as info:
        plain(server.url, max_retries=3).request("GET", server.url + "/x", timeout=2)
    assert time.monotonic() - started < 1.0
    assert info.value.retry_after == 30.0
    assert len(server.hits) == 1


def test_retry_after_above_the_cap_is_not_waited_for(server):
    wait = RETRY_AFTER_CAP + 60
    server.actions = [reply(503, headers={"Retry-After": str(int(wait))})]
    started = time.monotonic()
    with pytest.raises(ProviderUnavailableError):
        plain(server.url, max_retries=3, timeout=600).request("GET", server.url + "/x", timeout=600)
    assert time.monotonic() - started < 1.0
    assert len(server.hits) == 1


def test_read_error_after_the_body_was_sent_is_not_retried(server):
    server.actions = [drop, reply(200)]
    with pytest.raises(ProviderUnavailableError):
        plain(server.url, max_retries=3).request("POST", server.url + "/x", timeout=5, json_body={"q": 1})
    assert len(server.hits) == 1


def test_server_that_never_answers_times_out_within_the_timeout(server):
    server.actions = [hang]
    started = time.monotonic()
    with pytest.raises(ProviderTimeoutError):
        plain(server.url, max_retries=3).request("POST", server.url + "/x", timeout=0.5, json_body={})
    assert 0.4 <= time.monotonic() - started < 2.0
    assert len(server.hits) == 1  # a read timeout is a read error: not retried


def test_connect_errors_are_retried_then_mapped(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(time.monotonic())
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(transport, "_open_socket", refuse)  # where every request's connection is opened
    with pytest.raises(ProviderUnavailableError, match="could not connect"):
        plain("http://127.0.0.1:9", max_retries=2).request("POST", "http://127.0.0.1:9/x", timeout=5, json_body={})
    assert len(attempts) == 3
    attempts.clear()
    with pytest.raises(ProviderUnavailableError):
        plain("http://127.0.0.1:9", max_retries=0).request("GET", "http://127.0.0.1:9/x", timeout=5)
    assert len(attempts) == 1


def test_stream_lines_are_read_incrementally(server):
    release = threading.Event()

    def slow_stream(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        first = b"data: one\n\n"
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(first), first))
        handler.wfile.flush()
        release.wait(5)
        rest = b"data: two\n\ndata: [DONE]\n\n"
        handler.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))

    server.actions = [slow_stream]
    provider = plain(server.url)
    events = iter_sse_data(provider.stream_lines("GET", server.url + "/s", timeout=5), provider="p")
    assert next(events) == "one"  # arrives while the server still holds the rest
    release.set()
    assert list(events) == ["two"]


def test_russian_text_split_across_network_chunks(server):
    body = 'data: {"t": "Съешь же ещё этих мягких булок"}\n\ndata: [DONE]\n\n'.encode("utf-8")
    parts = [body[i : i + 5] for i in range(0, len(body), 5)]  # cuts fall inside two-byte letters
    assert any(not _is_utf8(part) for part in parts)
    server.actions = [chunked(parts, pause=0.01)]
    lines = plain(server.url).stream_lines("GET", server.url + "/s", timeout=5)
    assert list(iter_sse_json(lines, provider="p")) == [{"t": "Съешь же ещё этих мягких булок"}]


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_gzip_encoded_stream_is_decoded(server):
    body = gzip.compress('data: {"t": "сжато"}\n\ndata: [DONE]\n\n'.encode("utf-8"))
    server.actions = [reply(200, body, headers={"Content-Encoding": "gzip"}, content_type="text/event-stream")]
    lines = plain(server.url).stream_lines("GET", server.url + "/s", timeout=5)
    assert list(iter_sse_json(lines, provider="p")) == [{"t": "сжато"}]


def test_stream_cut_mid_way_raises_a_typed_error(server):
    def cut(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        part = b"data: one\n\n"
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        handler.wfile.write(b"40\r\ndata: tw")  # promises 64 bytes, sends 8, hangs up
        handler.wfile.flush()
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)

    server.actions = [cut]
    events = iter_sse_data(plain(server.url).stream_lines("GET", server.url + "/s", timeout=5), provider="p")
    assert next(events) == "one"
    with pytest.raises(ProviderUnavailableError):
        next(events)


def test_connections_are_reused_across_calls(server):
    server.actions = [reply(200, b'{"ok": 1}')]
    provider = plain(server.url)
    for _ in range(5):
        provider.request_json("GET", server.url + "/x", timeout=5)
    assert server.connections == 1


def test_error_from_a_provider_is_a_provider_error():
    assert issubclass(ProviderTimeoutError, ProviderError) and issubclass(ProviderTimeoutError, TimeoutError)


def test_retry_after_that_is_not_a_finite_number_is_ignored():
    for value in ("inf", "1e400", "-inf", "nan", "Infinity"):
        assert parse_retry_after({"Retry-After": value}) is None, value
        assert parse_retry_after({"retry-after-ms": value}) is None, value
    assert parse_retry_after({"retry-after-ms": "inf", "Retry-After": "4"}) == 4.0


def test_retry_after_on_errors_is_clamped_to_an_hour():
    assert MAX_RETRY_AFTER > RETRY_AFTER_CAP
    assert error_from_status(429, "slow", provider="p", retry_after=2.3e9).retry_after == MAX_RETRY_AFTER
    assert error_from_status(429, "slow", provider="p", retry_after=30.0).retry_after == 30.0
    assert error_from_status(429, "slow", provider="p").retry_after is None


@pytest.mark.parametrize("value", ["inf", "1e400", "Fri, 01 Jan 2100 00:00:00 GMT"])
def test_an_absurd_retry_after_gives_a_finite_bounded_wait(server, value):
    server.actions = [reply(429, b'{"message": "slow down"}', headers={"Retry-After": value})]
    started = time.monotonic()
    with pytest.raises(RateLimitError) as info:
        plain(server.url, max_retries=2).request("GET", server.url + "/x", timeout=2)
    assert time.monotonic() - started < 1.5
    retry_after = info.value.retry_after
    assert retry_after is None or 0 <= retry_after <= MAX_RETRY_AFTER


def test_the_timeout_bounds_transport_retries_too(server):
    def slow_503(handler):
        if not handler.server.stop.wait(1.5):
            reply(503, b'{"message": "busy"}')(handler)

    server.actions = [slow_503]
    started = time.monotonic()
    with pytest.raises((ProviderTimeoutError, ProviderUnavailableError)):
        plain(server.url, max_retries=3).request("POST", server.url + "/x", timeout=2, json_body={})
    assert time.monotonic() - started < 2.5  # a retry gets only what is left of the 2 s
    assert len(server.hits) == 2


def test_deadline_timeout_clones_keep_the_deadline():
    timeout = DeadlineTimeout(connect=10.0, read=45.0, deadline=time.monotonic() + 3)
    clone = timeout.clone()
    assert isinstance(clone, DeadlineTimeout) and clone.deadline == timeout.deadline
    assert 2.5 < clone.connect_timeout <= 3 and 2.5 < clone.read_timeout <= 3
    spent = DeadlineTimeout(connect=10.0, read=45.0, deadline=time.monotonic() - 1)
    assert 0 < spent.connect_timeout <= 0.01 and 0 < spent.read_timeout <= 0.01
    roomy = DeadlineTimeout(connect=10.0, read=45.0, deadline=time.monotonic() + 600)
    assert roomy.connect_timeout == 10.0 and roomy.read_timeout == 45.0


@pytest.mark.parametrize("body, problem", [
    ({"seed": {1, 2}}, "set"),
    ({"temperature": float("nan")}, "not JSON compliant"),
    ({"x": float("inf")}, "not JSON compliant"),
])
def test_a_body_that_is_not_json_is_a_configuration_error_before_sending(monkeypatch, body, problem):
    provider = plain("http://api.test")
    monkeypatch.setattr(provider.session, "send", lambda *a, **k: pytest.fail("nothing may be sent"))
    with pytest.raises(ConfigurationError, match=problem) as info:
        provider.request("POST", "http://api.test/x", timeout=1, json_body=body)
    assert "JSON" in str(info.value)


def test_generation_params_extra_that_is_not_json_is_a_configuration_error():
    from multi_llm_orchestrator.providers.ollama import OllamaProvider
    from multi_llm_orchestrator.types import GenerationParams

    provider = OllamaProvider(ProviderConfig(name="ollama", base_url="http://127.0.0.1:9"))
    with pytest.raises(ConfigurationError, match="set"):
        provider.complete("Hi", GenerationParams(extra={"seed": {1, 2}}))


def test_stream_readers_let_the_provider_map_error_events():
    def error_of(event, provider):
        if event.get("status") == 402 or "error" in event:
            return QuotaExceededError(f"mapped {event}", provider=provider)
        return None

    sse = ["data: {\"a\": 1}", "", "data: {\"error\": {\"code\": 503}}", "", "data: [DONE]", ""]
    events = iter_sse_json(iter(sse), provider="p", error_of=error_of)
    assert next(events) == {"a": 1}
    with pytest.raises(QuotaExceededError, match="mapped"):
        next(events)
    lines = iter_json_lines(iter(['{"a": 1}', '{"status": 402}']), provider="p", error_of=error_of)
    assert next(lines) == {"a": 1}
    with pytest.raises(QuotaExceededError):
        next(lines)
    # The default still maps {"error": ...} objects.
    with pytest.raises(ProviderUnavailableError):
        list(iter_json_lines(iter(['{"error": {"code": 503}}']), provider="p"))


def test_request_takes_no_unused_auth_and_session_tls_settings_still_apply(monkeypatch):
    import inspect

    assert "auth" not in inspect.signature(HttpProvider.request).parameters
    provider = plain("https://api.test", verify_ssl=False)
    seen = {}
    original = requests.adapters.HTTPAdapter.send

    def spy(adapter, request, **kwargs):
        seen.update(kwargs)
        raise requests.exceptions.ConnectionError("stop here")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", spy)
    with pytest.raises(ProviderUnavailableError):
        provider.request("GET", "https://api.test/x", timeout=1)
    assert seen["verify"] is False and seen["cert"] is None and original is not spy

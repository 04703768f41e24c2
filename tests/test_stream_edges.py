"""Stream-reader edges users rely on (issue 18): the last event of a stream without its
blank line, ``[DONE]`` variants, the boundaries of the error-code mapping, and the read
timeout cap that may shorten a socket's timeout but never lengthen it. Fake responses
and a fake socket, no server, no sleep."""

import gc
import time

import pytest

from multi_llm_orchestrator.errors import (
    AuthenticationError,
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    ResponseFormatError,
)
from multi_llm_orchestrator.streaming import (
    _cap_read_timeout,
    drain,
    iter_json_lines,
    iter_lines,
    iter_sse_data,
    iter_sse_json,
    stream_error,
)

P = "edge"


class FakeSocket:
    def __init__(self, timeout, closed=False):
        self.timeout = timeout
        self.closed = closed
        self.set_to = []

    def gettimeout(self):
        if self.closed:
            raise OSError("closed")
        return self.timeout

    def settimeout(self, value):
        self.set_to.append(value)
        self.timeout = value


class FakeRaw:
    def __init__(self, chunks, sock=None, fail_with=None):
        self.chunks = list(chunks)
        self.fail_with = fail_with
        self.connection = type("Connection", (), {"sock": sock})() if sock is not None else None

    def read1(self, amount=-1, decode_content=True):
        assert decode_content  # gzip-encoded streams must reach the parser decoded
        if not self.chunks:
            if self.fail_with is not None:
                raise self.fail_with
            return b""
        return self.chunks.pop(0)


class FakeResponse:
    def __init__(self, chunks, sock=None, fail_with=None):
        self.raw = FakeRaw(chunks, sock, fail_with)
        self.closed = False

    def close(self):
        self.closed = True


def lines_of(chunks, deadline=None, sock=None, fail_with=None, map_exception=None):
    response = FakeResponse(chunks, sock, fail_with)
    mapper = map_exception or (lambda exc: ProviderUnavailableError(f"mapped {exc}", provider=P))
    return response, iter_lines(response, provider=P, deadline=deadline, map_exception=mapper)


# iter_lines --------------------------------------------------------------------------------


def test_lines_split_across_chunks_with_crlf_and_a_last_line_without_newline():
    response, lines = lines_of([b"one\r", b"\ntw", b"o\n\nthree\r"])
    assert list(lines) == ["one", "two", "", "three"]
    assert response.closed


def test_invalid_utf8_is_a_format_error_naming_the_byte_and_the_response_is_closed():
    response, lines = lines_of([b"ok\n", b"caf\xc3(\n"])
    assert next(lines) == "ok"
    with pytest.raises(ResponseFormatError, match=r"not valid UTF-8 at byte 3"):
        next(lines)
    assert response.closed


def test_a_read_error_goes_through_map_exception_and_closes():
    seen = []

    def mapper(exc):
        seen.append(exc)
        return ProviderUnavailableError("connection reset", provider=P)

    response, lines = lines_of([b"a\n"], fail_with=ConnectionResetError("reset"), map_exception=mapper)
    assert next(lines) == "a"
    with pytest.raises(ProviderUnavailableError, match="connection reset") as caught:
        next(lines)
    assert isinstance(caught.value.__cause__, ConnectionResetError) and len(seen) == 1
    assert response.closed


def test_closing_the_line_iterator_closes_the_response():
    response, lines = lines_of([b"a\nb\n"])
    assert next(lines) == "a"
    lines.close()
    assert response.closed


def test_a_stream_past_its_deadline_times_out_after_the_chunk_in_hand():
    response, lines = lines_of([b"a\nb\n", b"c\n"], deadline=time.monotonic() - 1)
    assert next(lines) == "a" and next(lines) == "b"  # lines already read are delivered
    with pytest.raises(ProviderTimeoutError, match="did not finish within the timeout"):
        next(lines)
    assert response.closed


def test_a_stream_within_its_deadline_reads_to_the_end():
    response, lines = lines_of([b"a\n", b"b\n"], deadline=time.monotonic() + 60)
    assert list(lines) == ["a", "b"]


# _cap_read_timeout -------------------------------------------------------------------------


def test_the_cap_shortens_a_longer_read_timeout_to_the_time_left():
    sock = FakeSocket(30.0)
    _, lines = lines_of([b"a\n"], deadline=time.monotonic() + 2, sock=sock)
    assert list(lines) == ["a"]
    assert sock.set_to and all(1.0 < value <= 2 for value in sock.set_to)


def test_the_cap_never_lengthens_a_shorter_read_timeout():
    sock = FakeSocket(0.5)
    _, lines = lines_of([b"a\n"], deadline=time.monotonic() + 60, sock=sock)
    assert list(lines) == ["a"]
    assert sock.set_to == [] and sock.timeout == 0.5


def test_the_cap_bounds_a_socket_without_timeout():
    sock = FakeSocket(None)
    _cap_read_timeout(FakeResponse([], sock), time.monotonic() + 5)
    assert len(sock.set_to) == 1 and 4 < sock.set_to[0] <= 5


def test_the_cap_past_the_deadline_is_a_tiny_timeout_not_zero_or_negative():
    sock = FakeSocket(10.0)
    _cap_read_timeout(FakeResponse([], sock), time.monotonic() - 5)
    assert sock.set_to == [0.001]  # 0 would make the socket non-blocking; negative raises


def test_the_cap_leaves_the_socket_alone_without_a_deadline_or_when_closed():
    sock = FakeSocket(10.0)
    _cap_read_timeout(FakeResponse([], sock), None)
    closed = FakeSocket(10.0, closed=True)
    _cap_read_timeout(FakeResponse([], closed), time.monotonic() + 1)  # no exception
    _cap_read_timeout(FakeResponse([]), time.monotonic() + 1)  # no socket: nothing to do
    assert sock.set_to == [] and closed.set_to == []


# iter_sse_data -----------------------------------------------------------------------------


def test_the_last_event_without_a_trailing_blank_line_is_delivered():
    assert list(iter_sse_data(iter(["data: one", "", "data: two"]), provider=P, require_done=False)) == ["one", "two"]


def test_the_last_event_without_blank_line_and_without_done_is_delivered_then_the_cut_reported():
    events = iter_sse_data(iter(["data: one", "", "data: two"]), provider=P)
    assert next(events) == "one" and next(events) == "two"
    with pytest.raises(ProviderUnavailableError, match=r"ended before \[DONE\]"):
        next(events)


def test_a_final_done_without_blank_line_ends_the_stream_cleanly():
    assert list(iter_sse_data(iter(["data: one", "", "data:  [DONE] "]), provider=P)) == ["one"]


def test_sse_fields_comments_and_multiline_data():
    lines = [": keep-alive", "event: delta", "id: 7", "retry: 100", "data:a", "data:  b", "", "", "data: [DONE]", ""]
    assert list(iter_sse_data(iter(lines), provider=P)) == ["a\n b"]


def test_after_done_the_rest_is_read_and_dropped():
    rest = iter(["data: [DONE]", "", "data: ignored", "", ": trailing"])
    assert list(iter_sse_data(rest, provider=P)) == []
    assert next(rest, None) is None  # read to the end, so the connection can go back to the pool


def test_drain_swallows_provider_errors_only():
    def failing(error):
        yield "line"
        raise error

    drain(failing(ProviderUnavailableError("cut", provider=P)))  # nothing raised
    with pytest.raises(ZeroDivisionError):
        drain(failing(ZeroDivisionError()))


# stream_error ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error, expected, status",
    [
        ({"code": 400, "message": "bad"}, InvalidRequestError, 400),
        ({"code": 599, "message": "down"}, ProviderUnavailableError, 599),
        ({"code": 429, "message": "slow"}, RateLimitError, 429),
        ({"code": "400", "message": "bad"}, InvalidRequestError, 400),
        ({"code": "401", "message": "who"}, AuthenticationError, 401),
        ({"code": "599", "message": "down"}, ProviderUnavailableError, 599),
        ({"code": 8, "httpCode": 429, "message": "grpc"}, RateLimitError, 429),
    ],
)
def test_http_like_codes_map_to_their_typed_error(error, expected, status):
    mapped = stream_error({"error": error}, P)
    assert type(mapped) is expected
    assert mapped.status_code == status and mapped.provider == P


@pytest.mark.parametrize(
    "code", [399, 600, 0, "399", "600", "4000", "40", "²00", "abc", 400.0, None, True, "", [400]]
)
def test_codes_outside_400_to_599_are_a_generic_mid_stream_error(code):
    mapped = stream_error({"error": {"code": code, "message": "boom"}}, P)
    assert type(mapped) is ProviderUnavailableError
    assert mapped.status_code is None
    assert str(mapped.message) == "the provider reported an error mid-stream: boom"


def test_a_string_error_is_a_mid_stream_error_with_its_text():
    mapped = stream_error({"error": "overloaded"}, P)
    assert type(mapped) is ProviderUnavailableError and "overloaded" in mapped.message


@pytest.mark.parametrize("event", [{"error": None}, {"error": ""}, {"error": {}}, {"choices": []}])
def test_an_empty_or_missing_error_is_data(event):
    assert stream_error(event, P) is None


# iter_sse_json / iter_json_lines --------------------------------------------------------


def test_json_events_parse_and_errors_inside_raise():
    lines = ['data: {"n": 1}', "", 'data: {"error": {"code": 401, "message": "key"}}', ""]
    events = iter_sse_json(iter(lines), provider=P)
    assert next(events) == {"n": 1}
    with pytest.raises(AuthenticationError, match="key"):
        next(events)


@pytest.mark.parametrize(
    "payload, message",
    [("[1, 2]", "not a JSON object"), ("{oops", "not valid JSON"), ("[" * 100_000, "not valid JSON")],
)
def test_bad_json_events_are_format_errors(payload, message):
    with pytest.raises(ResponseFormatError, match=message):
        list(iter_json_lines(iter([payload]), provider=P))


def test_json_lines_skip_blank_lines_and_use_the_given_error_mapping():
    seen = []

    def error_of(event, provider):
        seen.append((event, provider))
        return RateLimitError("custom", provider=provider) if event.get("stop") else None

    lines = iter(['{"a": 1}', "", "   ", '{"stop": true}', '{"b": 2}'])
    events = iter_json_lines(lines, provider=P, error_of=error_of)
    assert next(events) == {"a": 1}
    with pytest.raises(RateLimitError, match="custom"):
        next(events)
    assert seen == [({"a": 1}, P), ({"stop": True}, P)]


def test_sse_json_uses_the_given_error_mapping():
    def error_of(event, provider):
        return ProviderError("mine", provider=provider) if "bad" in event else None

    events = iter_sse_json(iter(['data: {"bad": 1}', ""]), provider=P, require_done=False, error_of=error_of)
    with pytest.raises(ProviderError, match="mine"):
        next(events)


# Size limits ---------------------------------------------------------------------------------


def reader(chunks, limit):
    response = FakeResponse(chunks)
    return response, iter_lines(response, provider=P, deadline=None, map_exception=lambda e: e, limit=limit)


def test_a_line_of_exactly_the_limit_passes_one_byte_more_is_refused():
    _, lines = reader([b"12345", b"67890\nnext\n"], limit=10)
    assert list(lines) == ["1234567890", "next"]
    _, lines = reader([b"12345", b"678901\nb\n"], limit=10)
    with pytest.raises(ResponseFormatError):
        list(lines)


def test_a_line_end_at_a_chunk_end_leaves_nothing_counted_for_the_next_line():
    _, lines = reader([b"x\n", b"12345", b"67890", b"\n"], limit=10)
    assert list(lines) == ["x", "1234567890"]


def test_a_reader_closed_before_its_first_line_closes_the_response():
    response, lines = reader([b"never read\n"], limit=100)
    lines.close()
    assert response.closed


class LimitedLines:
    """Lines as a LineReader hands them out, with its ``limit``."""

    def __init__(self, lines, limit):
        self._lines = iter(lines)
        self.limit = limit

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._lines)


def test_an_event_of_exactly_the_limit_passes_one_byte_more_is_refused():
    # Each data line counts its text plus the newline that joins it: 6 + 4 = 10.
    events = iter_sse_data(LimitedLines(["data: 12345", "data: 123", ""], limit=10), provider=P, require_done=False)
    assert list(events) == ["12345\n123"]
    big = iter_sse_data(LimitedLines(["data: 12345", "data: 1234", ""], limit=10), provider=P, require_done=False)
    with pytest.raises(ResponseFormatError, match="an event of the stream is larger than max_response_bytes=10"):
        list(big)
    # The count starts again with each event.
    lines = ["data: 12345", "data: 123", "", "data: 12345", "data: 123", ""]
    assert list(iter_sse_data(LimitedLines(lines, limit=10), provider=P, require_done=False)) == ["12345\n123"] * 2


# Line reader and JSON parsing edges (issue 18, after the issue 17 reader rewrite) -----------


def test_lines_taken_one_by_one_then_read_as_events_lose_nothing():
    # A provider may peek at the first line before handing the reader to the SSE parser:
    # the rest of that block must still reach the parser.
    _, lines = reader([b"first\ndata: one\n\ndata: two\n\n", b"data: [DONE]\n\n"], limit=100)
    assert next(lines) == "first"
    assert list(iter_sse_data(lines, provider=P)) == ["one", "two"]


def test_a_closed_reader_gives_no_more_lines_and_closes_the_response():
    response, lines = reader([b"a\nb\nc\n", b"d\n"], limit=100)
    assert next(lines) == "a"
    lines.close()
    assert response.closed
    assert list(lines) == []  # not "b" and "c" from the block in hand


def test_a_closed_reader_hands_out_no_more_batches():
    response, lines = reader([b"data: a\n\n", b"data: b\n\n"], limit=100)
    lines.close()
    assert response.closed
    assert list(iter_sse_data(lines, provider=P, require_done=False)) == []


def test_a_line_of_exactly_the_limit_arriving_in_pieces_at_the_start_passes():
    _, lines = reader([b"12345", b"67890", b"\n"], limit=10)
    assert list(lines) == ["1234567890"]


def test_a_too_long_unfinished_line_after_a_complete_one_is_refused_at_once():
    _, lines = reader([b"ok\n" + b"x" * 11], limit=10)  # then the stream ends
    with pytest.raises(ResponseFormatError, match="a line of the stream"):
        list(lines)


def test_lines_before_a_line_that_is_not_utf8_are_delivered_first():
    response, lines = reader([b"good\nfine\n\xff\xfe bad\nnever\n"], limit=100)
    assert next(lines) == "good" and next(lines) == "fine"
    with pytest.raises(ResponseFormatError, match="not valid UTF-8"):
        next(lines)
    assert response.closed


@pytest.mark.parametrize("payload", ['x{"a": 1}', '{"a": 1} x', '{"a": 1}{"b": 2}', '{"a": 1}]'])
def test_json_events_with_anything_before_or_after_the_object_are_refused(payload):
    with pytest.raises(ResponseFormatError, match="not valid JSON"):
        list(iter_json_lines(iter([payload]), provider=P))


@pytest.mark.parametrize("payload", [' {"a": 1}', '{"a": 1} \t', '\t{"a": 1}\r'])
def test_json_events_with_whitespace_around_the_object_are_accepted(payload):
    assert list(iter_json_lines(iter([payload]), provider=P)) == [{"a": 1}]


def test_a_reader_dropped_before_its_first_line_closes_the_response():
    response, lines = reader([b"never read\n"], limit=100)
    del lines
    gc.collect()
    assert response.closed


def test_an_unfinished_line_of_exactly_the_limit_after_a_complete_one_passes():
    _, lines = reader([b"ok\n" + b"x" * 10, b"\n"], limit=10)
    assert list(lines) == ["ok", "x" * 10]

"""The direct body reader (reading._Direct, issue 17): bodies without Content-Encoding
are read from the socket file, their chunk framing removed by the library, a whole
read at a time. What it replaces in urllib3 must still hold: every split of the wire
bytes gives the same body, a body cut short is a typed error (never a silent
truncation), framing that is not HTTP is refused, the connection goes back to the pool
only after a clean end. Framing is tested at every split point on a fake socket file;
the rest through real loopback servers (tests/fakes/raw_http.py)."""

import gzip
import itertools
import time

import pytest
from urllib3.exceptions import ProtocolError

from multi_llm_orchestrator import ProviderConfig, Router
from multi_llm_orchestrator.errors import ProviderTimeoutError, ProviderUnavailableError, ResponseFormatError
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider
from multi_llm_orchestrator.reading import READ_BLOCK, TIMEOUT_SLACK, BodyChunks, _Direct

from fakes.raw_http import RawServer, Reply, chunked

# The fake socket file and response ----------------------------------------------------


class FakeFile:
    """A socket file whose reads return the given pieces, then end of file."""

    def __init__(self, pieces):
        self.pieces = [piece for piece in pieces if piece]

    def read1(self, amount):
        if not self.pieces:
            return b""
        piece = self.pieces.pop(0)
        if len(piece) > amount:
            piece, rest = piece[:amount], piece[amount:]
            self.pieces.insert(0, rest)
        return piece


class FakeHttpClientResponse:
    def __init__(self):
        self.closed = False

    def close(self):
        self.closed = True


class FakeUrllib3Response:
    def __init__(self):
        self._fp = FakeHttpClientResponse()
        self.released = 0
        self.closed = 0

    def release_conn(self):
        self.released += 1

    def close(self):
        self.closed += 1


def read_all(pieces, length=None):
    """The body read by a _Direct over ``pieces``, and the fake response (to see how it ended)."""
    raw = FakeUrllib3Response()
    direct = _Direct(raw, FakeFile(pieces), length)
    parts = []
    reads = 0
    while not direct.done:
        parts.append(direct.read())
        reads += 1
        assert reads < 10_000
    return b"".join(parts), raw


def splits(wire, pieces):
    """Every way of cutting ``wire`` into ``pieces`` parts (two or three)."""
    if pieces == 2:
        for cut in range(len(wire) + 1):
            yield [wire[:cut], wire[cut:]]
    else:
        for first, second in itertools.combinations(range(len(wire) + 1), 2):
            yield [wire[:first], wire[first:second], wire[second:]]


BODY_CHUNKS = [
    "data: {\"a\": \"é\"}\n\n".encode(),  # a two-byte character ...
    "data: {\"b\": \"€".encode()[:-1],  # ... and a three-byte one cut by the chunk boundary
    "€".encode()[-1:] + b"\"}\n\ndata: [DONE]",  # and a line cut by one
    b"\n\n",
]
BODY = b"".join(BODY_CHUNKS)
WIRE = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in BODY_CHUNKS) + b"0\r\n\r\n"


# Framing at every split point ------------------------------------------------------------


def test_a_chunked_body_split_anywhere_in_two_reads_is_the_same_body_and_released():
    for pieces in splits(WIRE, 2):
        body, raw = read_all(pieces)
        assert body == BODY, pieces
        assert (raw.released, raw.closed, raw._fp.closed) == (1, 0, True)


def test_a_chunked_body_split_anywhere_in_three_reads_is_the_same_body():
    for pieces in splits(WIRE, 3):
        body, raw = read_all(pieces)
        assert body == BODY and raw.released == 1, pieces


def test_chunk_extensions_trailers_and_upper_case_hex_are_understood():
    wire = b"A;name=value\r\n0123456789\r\n1\r\n!\r\n0\r\nX-Trailer: yes\r\n\r\n"
    for pieces in splits(wire, 2):
        body, raw = read_all(pieces)
        assert body == b"0123456789!" and raw.released == 1


def test_a_chunked_body_cut_anywhere_before_its_last_chunk_is_a_protocol_error_and_closed():
    end = WIRE.index(b"0\r\n\r\n")
    for cut in range(end + 1):
        raw = FakeUrllib3Response()
        direct = _Direct(raw, FakeFile([WIRE[:cut]]), None)
        with pytest.raises(ProtocolError):
            while not direct.done:
                direct.read()
        assert raw.closed == 1 and raw.released == 0, cut


def test_a_body_ending_inside_its_trailer_section_is_complete_but_not_reused():
    # urllib3 accepts a last chunk without the final CRLF too; the connection is not
    # trusted for another request then.
    body, raw = read_all([WIRE[:-2]])
    assert body == BODY and (raw.released, raw.closed) == (0, 1)


def test_bytes_after_the_end_of_the_body_close_the_connection_instead_of_reusing_it():
    body, raw = read_all([WIRE + b"HTTP/1.1 200 OK\r\n"])
    assert body == BODY and (raw.released, raw.closed) == (0, 1)


@pytest.mark.parametrize("wire", [
    b"zz\r\nabc\r\n0\r\n\r\n",  # not hex
    b"-3\r\nabc\r\n0\r\n\r\n",  # negative
    b"\r\nabc\r\n0\r\n\r\n",  # empty size line
    b"3\r\nabcXY0\r\n\r\n",  # no CRLF after the data
])
def test_framing_that_is_not_http_is_a_protocol_error(wire):
    raw = FakeUrllib3Response()
    direct = _Direct(raw, FakeFile([wire]), None)
    with pytest.raises(ProtocolError):
        while not direct.done:
            direct.read()
    assert raw.closed == 1 and raw.released == 0


def test_an_endless_chunk_size_line_is_refused_at_its_limit():
    raw = FakeUrllib3Response()
    direct = _Direct(raw, FakeFile([b"1" * 40_000, b"2" * 40_000, b"3" * 40_000]), None)
    with pytest.raises(ProtocolError, match="too long"):
        for _ in range(3):
            direct.read()


def test_a_large_chunk_arrives_a_read_at_a_time_without_waiting_for_its_end():
    data = bytes(range(256)) * 1024  # 256 KB in one chunk
    wire = b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
    raw = FakeUrllib3Response()
    direct = _Direct(raw, FakeFile([wire]), None)
    first = direct.read()
    assert 0 < len(first) <= READ_BLOCK and data.startswith(first) and not direct.done
    rest = []
    while not direct.done:
        rest.append(direct.read())
    assert first + b"".join(rest) == data and raw.released == 1


def test_a_length_delimited_body_split_anywhere_is_the_same_body_and_released():
    body = "héllo wörld".encode() * 3
    for pieces in splits(body, 2):
        got, raw = read_all(pieces, len(body))
        assert got == body and raw.released == 1


def test_a_length_delimited_body_cut_short_is_a_protocol_error():
    raw = FakeUrllib3Response()
    direct = _Direct(raw, FakeFile([b"12345"]), 10)
    assert direct.read() == b"12345"
    with pytest.raises(ProtocolError, match="5 bytes of its Content-Length missing"):
        direct.read()
    assert raw.closed == 1 and raw.released == 0


def test_an_empty_length_delimited_body_ends_at_once():
    got, raw = read_all([], 0)
    assert got == b"" and raw.released == 1


# The socket timeout cap ----------------------------------------------------------------


class FakeSocket:
    def __init__(self, timeout):
        self.timeout = timeout
        self.set_to = []

    def gettimeout(self):
        return self.timeout

    def settimeout(self, value):
        self.set_to.append(value)
        self.timeout = value


class FakeRaw:
    def __init__(self, blocks, sock):
        self.blocks = list(blocks)
        self.connection = type("Connection", (), {"sock": sock})()

    def read1(self, amount=-1, decode_content=True):
        return self.blocks.pop(0) if self.blocks else b""


class FakeResponse:
    def __init__(self, blocks, sock):
        self.raw = FakeRaw(blocks, sock)

    def close(self):
        pass


def chunks_of(blocks, sock, deadline):
    return BodyChunks(FakeResponse(blocks, sock), provider="p", deadline=deadline, timeout=5,
                      map_exception=lambda exc: ProviderUnavailableError(str(exc), provider="p"))


def test_the_socket_timeout_is_cut_to_the_time_left_once_not_on_every_read():
    sock = FakeSocket(30.0)
    chunks = chunks_of([b"a", b"b", b"c"], sock, time.monotonic() + 5)
    assert [chunks.next_block() for _ in range(3)] == [b"a", b"b", b"c"]
    assert len(sock.set_to) == 1 and 4 < sock.set_to[0] <= 5


def test_a_socket_timeout_within_the_slack_of_the_time_left_is_left_alone():
    sock = FakeSocket(5.0)
    chunks = chunks_of([b"a"], sock, time.monotonic() + 5.0 - TIMEOUT_SLACK / 2)
    assert chunks.next_block() == b"a" and sock.set_to == []


def test_the_socket_timeout_is_cut_again_once_the_time_left_is_shorter_by_more_than_the_slack(monkeypatch):
    clock = type("Clock", (), {"now": 0.0, "monotonic": lambda self: self.now})()
    monkeypatch.setattr("multi_llm_orchestrator.reading.time", clock)
    sock = FakeSocket(None)  # no timeout at all: always cut
    chunks = chunks_of([b"a", b"b", b"c"], sock, 100.0)
    chunks.next_block()
    clock.now = 50.0
    chunks.next_block()
    clock.now = 50.0 + TIMEOUT_SLACK / 2
    chunks.next_block()
    assert sock.set_to == [100.0, 50.0]


# Through loopback servers -----------------------------------------------------------------


def sse(*texts):
    return [b'data: {"choices": [{"index": 0, "delta": {"content": "%s"}}]}\n\n' % text.encode() for text in texts]


def provider(server, **fields):
    return OpenAICompatibleProvider(ProviderConfig(name="direct", model="m", base_url=server.url + "/v1",
                                                   max_retries=0, **fields))


def test_a_stream_split_inside_lines_and_characters_reads_whole_and_its_connection_is_reused():
    events = b"".join(sse("h\u00e9", "\u20ac!")) + b"data: [DONE]\n\n"
    cut = events.index("\u20ac".encode()) + 1  # inside the three bytes of the euro sign
    wire = chunked(events[:cut], events[cut:])
    head, body = wire.split(b"\r\n\r\n", 1)
    with RawServer([Reply([head + b"\r\n\r\n" + body[:7], body[7:40], body[40:]], pause=0.01)]) as server:
        chat = provider(server)
        assert "".join(chat.stream("hi")) == "h\u00e9\u20ac!"
        assert "".join(chat.stream("hi")) == "h\u00e9\u20ac!"
        assert server.requests == 2 and server.connections == 1


def test_a_final_event_without_its_blank_line_is_delivered():
    events = b"".join(sse("a", "b"))[:-1] + b"\ndata: [DONE]"  # no blank line after [DONE]
    with RawServer([Reply([chunked(events)])]) as server:
        assert "".join(provider(server).stream("hi")) == "ab"


def test_a_gzip_encoded_stream_goes_through_urllib3_and_is_decoded():
    events = b"".join(sse("zipped", " text")) + b"data: [DONE]\n\n"
    packed = gzip.compress(events)
    wire = chunked(packed[:10], packed[10:], head=b"Content-Encoding: gzip\r\n")
    with RawServer([Reply([wire])]) as server:
        assert "".join(provider(server).stream("hi")) == "zipped text"


def test_a_gzip_encoded_stream_is_capped_after_decompression():
    events = b"data: " + b"x" * 50_000 + b"\n\n"  # one 50 KB line: 50 bytes gzipped
    wire = chunked(gzip.compress(events), head=b"Content-Encoding: gzip\r\n")
    with RawServer([Reply([wire])]) as server:
        with pytest.raises(ResponseFormatError, match="max_response_bytes=4096"):
            "".join(provider(server, max_response_bytes=4096).stream("hi"))


def test_a_connection_cut_mid_chunk_is_a_typed_error_not_a_short_answer():
    events = b"".join(sse("first", "second")) + b"data: [DONE]\n\n"
    wire = chunked(events)
    cut = wire.index(b"second")
    for ending in ({"close": True}, {"reset": True}):
        with RawServer([Reply([wire[:cut]], **ending)]) as server:
            stream = provider(server).stream("hi")
            with pytest.raises(ProviderUnavailableError, match="connection broke"):
                for _ in stream:
                    pass
            assert stream.text == "first"  # the events before the cut, never a part of "second"


def test_a_non_streamed_answer_cut_mid_body_is_a_typed_error():
    body = b'{"choices": [{"message": {"content": "whole"}}]}'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    for ending in ({"close": True}, {"reset": True}):
        with RawServer([Reply([head + body[:20]], **ending)]) as server:
            with pytest.raises(ProviderUnavailableError, match="connection broke"):
                provider(server).complete("hi")


def test_a_chunked_non_streamed_answer_is_read_whole_and_capped():
    answer = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "%s"}, "finish_reason": "stop"}]}'
    whole = answer % b"fine"
    big = answer % (b"y" * 8000)
    with RawServer([Reply([chunked(whole[:25], whole[25:])]), Reply([chunked(big[:4000], big[4000:])])]) as server:
        chat = provider(server, max_response_bytes=4096)
        assert chat.complete("hi").text == "fine"
        with pytest.raises(ResponseFormatError, match="max_response_bytes=4096"):
            chat.complete("hi")


def test_a_line_longer_than_the_limit_is_refused_in_a_direct_stream():
    wire = chunked(b"data: " + b"z" * 3000, b"z" * 3000 + b"\n\n")
    with RawServer([Reply([wire])]) as server:
        with pytest.raises(ResponseFormatError, match="a line of the stream is larger than max_response_bytes=4096"):
            "".join(provider(server, max_response_bytes=4096).stream("hi"))


def test_bytes_after_the_end_of_a_streamed_body_make_the_next_call_use_a_new_connection():
    events = b"".join(sse("ok")) + b"data: [DONE]\n\n"
    with RawServer([Reply([chunked(events) + b"junk"]), Reply([chunked(events)])]) as server:
        chat = provider(server)
        assert "".join(chat.stream("hi")) == "ok"
        assert "".join(chat.stream("hi")) == "ok"
        assert server.connections == 2


def test_a_stream_stalling_mid_chunk_ends_at_its_deadline():
    events = b"".join(sse("early")) + b"data: [DONE]\n\n"
    wire = chunked(events)
    cut = wire.index(b"data: [DONE]")
    with RawServer([Reply([wire[:cut], wire[cut:]], pause=3.0)]) as server:
        router = Router()
        router.add_provider(provider(server))
        started = time.monotonic()
        with pytest.raises(ProviderTimeoutError):
            for _ in router.route_stream("hi", timeout=0.3):
                pass
        assert time.monotonic() - started < 2.5  # the server holds the rest for 3 s
        router.close()


def test_plain_chunked_and_length_bodies_take_the_direct_path_and_gzip_does_not():
    events = b"".join(sse("x")) + b"data: [DONE]\n\n"
    length = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(events), events)
    zipped = chunked(gzip.compress(events), head=b"Content-Encoding: gzip\r\n")
    with RawServer([Reply([chunked(events)]), Reply([length]), Reply([zipped])]) as server:
        chat = provider(server)
        taken = []
        for _ in range(3):
            response = chat.request("POST", server.url + "/v1/chat/completions", timeout=5, json_body={}, stream=True)
            chunks = chat.body_chunks(response, 5)
            taken.append(chunks._direct is not None)
            assert b"".join(iter(chunks.next_block, b"")) == events
            response.close()
        assert taken == [True, True, False]

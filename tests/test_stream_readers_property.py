"""Property tests of the stream readers (issue 8): multi_llm_orchestrator/streaming.py.

``iter_lines`` reads a fake response whose ``raw.read1`` hands out the body in chunks of
any size; ``iter_sse_json`` / ``iter_sse_data`` / ``iter_json_lines`` parse the lines.

- Whatever the bytes (random, or assembled from SSE/JSON fragments that reach the deeper
  branches), and however they are chunked, the readers raise nothing but the library's
  typed errors, and the response is closed.
- A valid stream split at arbitrary points (inside multi-byte UTF-8 characters, between
  "\\r" and "\\n", ...) yields exactly the events it was built from.
"""

import json

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from multi_llm_orchestrator.errors import (
    OrchestratorError,
    ProviderError,
    ProviderUnavailableError,
    ResponseFormatError,
)
from multi_llm_orchestrator.streaming import iter_json_lines, iter_lines, iter_sse_data, iter_sse_json

PROVIDER = "prop"
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class FakeRaw:
    """``read1`` as urllib3 offers it: the next chunk, then b"" at the end of the body."""

    def __init__(self, chunks, fail_with=None):
        self.chunks = list(chunks)
        self.fail_with = fail_with

    def read1(self, amount=-1, decode_content=True):
        if not self.chunks:
            if self.fail_with is not None:
                raise self.fail_with
            return b""
        return self.chunks.pop(0)


class FakeResponse:
    def __init__(self, chunks, fail_with=None):
        self.raw = FakeRaw(chunks, fail_with)
        self.closed = False

    def close(self):
        self.closed = True


def split(data, cuts):
    """``data`` cut at the given offsets into non-empty chunks (b"" would mean EOF)."""
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:]) if b > a]


def transport_error(exc):
    return ProviderUnavailableError(f"the connection broke ({type(exc).__name__})", provider=PROVIDER)


def lines_of(chunks, fail_with=None):
    response = FakeResponse(chunks, fail_with)
    return response, iter_lines(response, provider=PROVIDER, deadline=None, map_exception=transport_error)


READERS = {
    "sse_json": lambda lines: iter_sse_json(lines, provider=PROVIDER),
    "sse_json_no_done": lambda lines: iter_sse_json(lines, provider=PROVIDER, require_done=False),
    "sse_data": lambda lines: iter_sse_data(lines, provider=PROVIDER),
    "json_lines": lambda lines: iter_json_lines(lines, provider=PROVIDER),
}


def outcome(reader, chunks, fail_with=None):
    """(items, typed error or None) of ``reader`` over ``chunks``; any other exception fails."""
    response, lines = lines_of(chunks, fail_with)
    items = []
    try:
        for item in READERS[reader](lines):
            items.append(item)
    except OrchestratorError as exc:
        return items, exc, response
    except Exception as exc:  # pragma: no cover - this is the failure being looked for
        raise AssertionError(f"{reader} raised a bare {type(exc).__name__}: {exc!r}") from exc
    finally:
        lines.close()  # as the providers do when their stream ends or fails
    return items, None, response


# Arbitrary input -----------------------------------------------------------------------

# Pieces that reach the readers' branches: fields, comments, [DONE], line ends, JSON with
# error objects and odd codes, broken UTF-8, deep nesting.
FRAGMENTS = [
    b"data: ", b"data:", b"event: x", b"id: 1", b": keep-alive", b"\n", b"\r\n", b"\r", b"\n\n", b" ",
    b"[DONE]", b"{", b"}", b"[", b"]", b",", b":", b'"', b'"error"', b'"code"', b'"httpCode"', b'"message"',
    b'"choices"', b"null", b"true", b"0", b"404", b'"429"', b'"\xc2\xb2"', b'"\xd9\xa4\xd9\xa0\xd9\xa0"',
    b"1e999", b"-1", b"\xff", b"\xc3", b"\xa9", "ж".encode(), "😀".encode(), b"\x00",
    b"[" * 50, b'{"error": {"code": ', b'{"error": "', b'{"status": 500}',
]
fragment_streams = st.lists(st.sampled_from(FRAGMENTS), max_size=60).map(b"".join)
cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=12)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8),
    st.sampled_from(["²", "٤٠٤", "500", "4" * 5000, " 404", "404 ", "-500", "", "0x1f4"]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)),
    max_leaves=8,
)
error_fields = st.fixed_dictionaries(
    {}, optional={"code": json_scalars, "httpCode": json_scalars, "message": json_values, "type": json_values})
error_objects = st.fixed_dictionaries(
    {"error": st.one_of(json_values, error_fields)},
    optional={"status": json_values, "choices": json_values},
)


@SETTINGS
@given(data=st.binary(max_size=600), cut_at=cuts, reader=st.sampled_from(sorted(READERS)))
def test_random_bytes_raise_only_typed_errors(data, cut_at, reader):
    _, _, response = outcome(reader, split(data, cut_at))
    assert response.closed


@SETTINGS
@given(data=fragment_streams, cut_at=cuts, reader=st.sampled_from(sorted(READERS)))
@example(data=b"data: " + b"[" * 100_000 + b"\n\n", cut_at=[], reader="sse_json")
@example(data=b"[" * 100_000 + b"\n", cut_at=[], reader="json_lines")
@example(data=b'data: {"error": {"code": "\xc2\xb2"}}\n\n', cut_at=[], reader="sse_json")
@example(data=b'{"error": {"httpCode": "' + b"4" * 5000 + b'"}}\n', cut_at=[], reader="json_lines")
def test_sse_and_json_fragments_raise_only_typed_errors(data, cut_at, reader):
    _, _, response = outcome(reader, split(data, cut_at))
    assert response.closed


@SETTINGS
@given(event=error_objects, reader=st.sampled_from(["sse_json", "json_lines"]))
def test_any_error_object_in_a_stream_raises_a_provider_error(event, reader):
    assume(bool(event["error"]))  # {"error": null} / {"error": ""} are not errors
    body = json.dumps(event).encode()
    data = b"data: " + body + b"\n\n" if reader == "sse_json" else body + b"\n"
    items, error, _ = outcome(reader, [data])
    assert items == []
    assert isinstance(error, ProviderError) and error.provider == PROVIDER


@SETTINGS
@given(data=st.binary(min_size=1, max_size=200), cut_at=cuts,
       failure=st.sampled_from([ConnectionResetError("reset"), OSError("boom"), ValueError("odd"), TimeoutError()]))
def test_a_transport_failure_mid_body_is_mapped_to_a_typed_error(data, cut_at, failure):
    response, lines = lines_of(split(data, cut_at), fail_with=failure)
    try:
        for _ in lines:
            pass
    except ResponseFormatError:
        pass  # the bytes before the failure were not UTF-8: reported first, also typed
    except ProviderUnavailableError as exc:
        assert exc.__cause__ is failure
    else:  # pragma: no cover
        raise AssertionError("the failure was swallowed")
    assert response.closed


# Valid streams ---------------------------------------------------------------------------

texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)  # any Unicode, multi-byte too
events = st.lists(
    st.fixed_dictionaries({
        "choices": st.lists(st.fixed_dictionaries({"index": st.just(0), "delta": st.fixed_dictionaries(
            {"content": texts})}), min_size=1, max_size=1),
        "model": texts,
    }),
    max_size=6,
)


def sse_body(items, newline, comments, indent, done):
    out = []
    for number, item in enumerate(items):
        if comments:
            out.append(": keep-alive" + newline + "event: chunk" + newline + f"id: {number}" + newline)
        text = json.dumps(item, ensure_ascii=False, indent=indent)
        out.extend(f"data: {line}{newline}" for line in text.split("\n"))  # multi-line data when indented
        out.append(newline)
    if done:
        out.append("data: [DONE]" + newline + newline)
    return "".join(out).encode("utf-8")


@SETTINGS
@given(items=events, newline=st.sampled_from(["\n", "\r\n"]), comments=st.booleans(),
       indent=st.sampled_from([None, 1]), cut_at=cuts)
def test_a_valid_sse_stream_yields_the_same_events_however_it_is_split(items, newline, comments, indent, cut_at):
    body = sse_body(items, newline, comments, indent, done=True)
    whole, error, _ = outcome("sse_json", [body] if body else [])
    assert error is None and whole == items
    pieces, error, response = outcome("sse_json", split(body, cut_at))
    assert error is None and pieces == items and response.closed


@SETTINGS
@given(items=events, cut_at=cuts)
def test_a_valid_sse_stream_cut_before_done_yields_its_events_then_a_typed_error(items, cut_at):
    body = sse_body(items, "\n", False, None, done=False)
    pieces, error, _ = outcome("sse_json", split(body, cut_at))
    assert pieces == items
    assert isinstance(error, ProviderUnavailableError) and "before [DONE]" in str(error)
    pieces, error, _ = outcome("sse_json_no_done", split(body, cut_at))
    assert (pieces, error) == (items, None)


@SETTINGS
@given(items=events, position=st.integers(min_value=0, max_value=6), cut_at=cuts)
def test_an_error_event_ends_the_stream_after_exactly_the_events_before_it(items, position, cut_at):
    position = min(position, len(items))
    error_event = {"error": {"message": "overloaded", "code": 503}}
    body = sse_body(items[:position] + [error_event] + items[position:], "\n", False, None, done=True)
    pieces, error, _ = outcome("sse_json", split(body, cut_at))
    assert pieces == items[:position]
    assert type(error).__name__ == "ProviderUnavailableError" and error.status_code == 503


@SETTINGS
@given(items=events, newline=st.sampled_from(["\n", "\r\n"]), blank_lines=st.booleans(), cut_at=cuts,
       final_newline=st.booleans())
def test_valid_json_lines_yield_the_same_objects_however_they_are_split(items, newline, blank_lines, cut_at,
                                                                        final_newline):
    lines = [json.dumps(item, ensure_ascii=False) for item in items]
    separator = newline + (newline if blank_lines else "")
    body = (separator.join(lines) + (newline if final_newline and lines else "")).encode("utf-8")
    pieces, error, response = outcome("json_lines", split(body, cut_at))
    assert error is None and pieces == items and response.closed


@SETTINGS
@given(text=st.text(min_size=1, max_size=40), cut_at=cuts)
def test_lines_split_inside_multibyte_characters_decode_whole(text, cut_at):
    text = text.replace("\r", "").replace("\n", "")
    body = (text + "\n" + text[::-1] + "\r\n").encode("utf-8")
    _, lines = lines_of(split(body, cut_at))
    assert list(lines) == [text, text[::-1]]

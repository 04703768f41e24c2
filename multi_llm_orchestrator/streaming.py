"""Readers for streamed responses: Server-Sent Events and JSON lines.

Both read the raw bytes as they arrive (no waiting for a buffer to fill), decode lines as
UTF-8 whatever the Content-Type says (SSE is UTF-8 by definition; requests would guess
ISO-8859-1), enforce the call's deadline between reads, and raise only typed errors:

- a connection that breaks or times out mid-stream -> ProviderUnavailableError /
  ProviderTimeoutError (via ``HttpProvider.map_exception``);
- bytes that are not UTF-8, data that is not JSON, a line or an event larger than
  ``max_response_bytes`` -> ResponseFormatError;
- an ``{"error": ...}`` object inside the stream -> the error it describes.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Iterator, List, Optional

from .errors import ProviderError, ProviderUnavailableError, ResponseFormatError
from .reading import DEFAULT_MAX_RESPONSE_BYTES, BodyChunks, close_response
from .reading import cap_read_timeout as _cap_read_timeout  # noqa: F401  (its old home; tests pin it)

__all__ = [
    "iter_lines", "LineReader", "iter_sse_data", "iter_sse_json", "iter_json_lines", "stream_error", "drain",
]

ErrorMapper = Callable[[BaseException], ProviderError]
#: ``error_of(event, provider)``: the typed error an event reports, or None for data.
EventErrors = Callable[[Dict[str, Any], str], Optional[ProviderError]]
_DECODER = json.JSONDecoder()  # json.loads with its defaults, without its per-call argument checks
_SCAN = _DECODER.scan_once


class LineReader(Iterator[str]):
    """The lines of a streamed response, decoded as UTF-8, without their line ending.

    Reads through ``reading.BodyChunks`` (deadline, cut transfers, decoded sizes), in
    time linear in the bytes read: the complete lines of a block are decoded and split
    at once, a partial line kept as a list of blocks and joined once when its end
    arrives. A line longer than ``limit`` bytes is a ResponseFormatError as soon as it
    passes the limit. ``limit`` also bounds one SSE event (``iter_sse_data`` reads it
    from here). ``line_batches()`` gives the lines a block at a time, for the stream
    readers (a generator step per block instead of one per line). The response is
    closed when the reader ends, fails or is closed.
    """

    def __init__(self, chunks: BodyChunks, limit: int) -> None:
        self.chunks = chunks
        self.limit = limit
        self._batches = self._read()
        self._lines = self._each()
        self._by_line = False  # lines were taken one by one: batches would skip some
        self._released = False

    def __next__(self) -> str:
        return next(self._lines)

    def line_batches(self) -> Iterator[List[str]]:
        """The lines still to come, in lists (one per block read)."""
        if self._by_line:
            return ([line] for line in self._lines)
        return self._batches

    def close(self) -> None:
        self._lines.close()
        self._batches.close()
        self._release()  # a reader closed before its first line never ran its finally

    def __del__(self) -> None:
        # A reader dropped before its first line never ran its generator's finally: the
        # socket would stay open until the connection object is collected.
        try:
            self._release()
        except Exception:
            pass

    def _release(self) -> None:
        if not self._released:
            self._released = True
            close_response(self.chunks.response)

    def _each(self) -> Iterator[str]:
        self._by_line = True
        for batch in self._batches:
            yield from batch

    def _read(self) -> Iterator[List[str]]:
        chunks, limit, provider = self.chunks, self.limit, self.chunks.provider
        pending: List[bytes] = []  # the start of a line whose end has not arrived
        pending_size = 0
        try:
            while True:
                block = chunks.next_block()
                if not block:
                    break
                cut = block.rfind(b"\n")
                if cut < 0:
                    pending.append(block)
                    pending_size += len(block)
                    if pending_size > limit:
                        raise chunks.too_large("a line of the stream", limit)
                    continue
                if pending:
                    pending.append(block[:cut])
                    whole = b"".join(pending)
                else:
                    whole = block[:cut]
                rest = block[cut + 1:]
                pending, pending_size = ([rest], len(rest)) if rest else ([], 0)
                if len(whole) > limit and max(map(len, whole.split(b"\n"))) > limit:
                    raise chunks.too_large("a line of the stream", limit)
                if pending_size > limit:
                    raise chunks.too_large("a line of the stream", limit)
                try:
                    batch = _decode_lines(whole, provider)
                except _BadLine as bad:
                    if bad.good:  # the lines before the broken one are delivered, as they came
                        yield bad.good
                    raise bad.error from None
                yield batch
            if pending:
                yield [_decode(b"".join(pending), provider)]
        finally:
            self._release()


def iter_lines(
    response: Any,
    *,
    provider: str,
    deadline: Optional[float],
    map_exception: ErrorMapper,
    timeout: Optional[float] = None,
    limit: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> LineReader:
    """Lines of a streamed response (see ``LineReader``).

    ``deadline`` is a ``time.monotonic()`` value after which the stream is abandoned with
    ProviderTimeoutError (``timeout``: the seconds it stands for, for the message);
    ``map_exception`` turns transport exceptions into typed errors; ``limit`` bounds
    one line (and one SSE event).
    """
    chunks = BodyChunks(
        response, provider=provider, deadline=deadline, timeout=timeout, map_exception=map_exception
    )
    return LineReader(chunks, limit)


def _decode(line: bytes, provider: str) -> str:
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ResponseFormatError(
            f"the stream is not valid UTF-8 at byte {exc.start}: {line[:60]!r}", provider=provider
        ) from None


class _BadLine(Exception):
    def __init__(self, good: List[str], error: ResponseFormatError) -> None:
        super().__init__(error)
        self.good = good
        self.error = error


def _decode_lines(whole: bytes, provider: str) -> List[str]:
    """The lines of ``whole`` (complete lines joined by "\\n"), decoded in one go."""
    try:
        text = whole.decode("utf-8")
    except UnicodeDecodeError:
        good: List[str] = []  # per line, for the error naming the line
        for line in whole.split(b"\n"):
            try:
                good.append(_decode(line, provider))
            except ResponseFormatError as error:
                raise _BadLine(good, error) from None
        raise  # pragma: no cover - a block that fails to decode has a line that fails
    lines = text.split("\n")
    if "\r" in text:
        return [line[:-1] if line.endswith("\r") else line for line in lines]
    return lines


def iter_sse_data(lines: Iterator[str], *, provider: str, require_done: bool = True) -> Iterator[str]:
    """The ``data`` payload of each Server-Sent Event, multi-line data joined by "\\n".

    Blank lines end an event, ``:`` lines are comments (keep-alives), other fields
    (``event``, ``id``, ``retry``) are ignored, ``[DONE]`` ends the stream (what follows
    it is read and dropped, so the connection goes back to the pool). With
    ``require_done`` a stream that ends without ``[DONE]`` was cut: ProviderUnavailableError.
    """
    return _sse(lines, provider, require_done)


def _batches(lines: Iterator[str]) -> Iterator[List[str]]:
    """``lines`` a block at a time from a LineReader, else one at a time."""
    if isinstance(lines, LineReader):
        return lines.line_batches()
    return ([line] for line in lines)


def _sse(lines: Iterator[str], provider: str, require_done: bool, error_of: Optional[EventErrors] = None) -> Iterator[Any]:
    """``iter_sse_data``; with ``error_of`` each payload parsed (``iter_sse_json``): one
    generator for events and their parsing, as a layer per event costs about as much as
    the parsing."""
    # One event may not hold more than a line may (LineReader.limit): a server sending
    # "data:" lines without the blank line that ends an event would grow it for ever.
    limit = getattr(lines, "limit", DEFAULT_MAX_RESPONSE_BYTES)
    data: List[str] = []
    size = 0
    for batch in _batches(lines):
        for line in batch:
            if not line:
                if data:
                    payload = data[0] if len(data) == 1 else "\n".join(data)
                    data, size = [], 0
                    if payload.strip() == "[DONE]":
                        drain(lines)
                        return
                    yield payload if error_of is None else _loads(payload, provider, error_of)
                continue
            if line[0] == ":":
                continue
            if line.startswith("data:"):
                value = line[6:] if line.startswith("data: ") else line[5:]
            else:
                field, _, value = line.partition(":")
                if field != "data":
                    continue
                if value.startswith(" "):
                    value = value[1:]
            data.append(value)
            size += len(value) + 1
            if size > limit:
                raise ResponseFormatError(
                    f"an event of the stream is larger than max_response_bytes={limit}: raise it in the "
                    "provider's ProviderConfig if answers this large are expected",
                    provider=provider,
                )
    if data:
        payload = "\n".join(data)
        if payload.strip() == "[DONE]":
            return
        yield payload if error_of is None else _loads(payload, provider, error_of)
    if require_done:
        raise ProviderUnavailableError("the stream ended before [DONE]: the connection was cut", provider=provider)


def drain(lines: Iterator[Any]) -> None:
    """Read what is left of a finished stream and drop it.

    urllib3 puts a connection back into the pool only once its response was read to the
    end (the final chunk of a chunked body included); a stream left at its last event
    would be closed instead, and the next call would open a new connection. The answer is
    complete by then: a failure while reading the rest only costs that reuse.

    >>> lines = iter(["data: [DONE]", "", ": trailing comment"])
    >>> drain(lines); next(lines, None) is None
    True
    """
    try:
        for _ in lines:
            pass
    except ProviderError:
        pass


def stream_error(event: Dict[str, Any], provider: str) -> Optional[ProviderError]:
    """The typed error described by an ``{"error": ...}`` object in a stream, else None.

    The default ``error_of`` of the stream readers.
    """
    error = event.get("error")
    if not error:
        return None
    from .http import error_from_status, error_message_from_body  # http imports this module

    message = error_message_from_body(event)
    status = error.get("code") if isinstance(error, dict) else None
    if isinstance(error, dict) and "httpCode" in error:
        status = error["httpCode"]  # grpc-gateway (YandexGPT): "code"-like fields hold gRPC codes
    if isinstance(status, int) and 400 <= status < 600:
        return error_from_status(status, message, provider=provider)
    # isdigit() alone lets "²" or a 5,000-digit string through to int(), which raises.
    if isinstance(status, str) and len(status) == 3 and status.isascii() and status.isdigit() \
            and 400 <= int(status) < 600:
        return error_from_status(int(status), message, provider=provider)
    return ProviderUnavailableError(f"the provider reported an error mid-stream: {message}", provider=provider)


def _loads(payload: str, provider: str, error_of: EventErrors) -> Dict[str, Any]:
    try:
        try:
            # The scanner json.loads ends in, called directly: without its two whitespace
            # regexes per call. Anything unusual (leading or trailing space, bad JSON) goes
            # through the decoder, which accepts or rejects it as json.loads does.
            event, end = _SCAN(payload, 0)
        except StopIteration:
            event, end = _DECODER.decode(payload), len(payload)
        if end != len(payload) and payload[end:].strip(" \t\n\r"):
            event = _DECODER.decode(payload)  # raises "Extra data"
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise ResponseFormatError(f"a stream event is not valid JSON: {payload[:80]!r}", provider=provider) from None
    if not isinstance(event, dict):
        raise ResponseFormatError(f"a stream event is not a JSON object: {payload[:80]!r}", provider=provider)
    error = error_of(event, provider)
    if error is not None:
        raise error
    return event


def iter_sse_json(
    lines: Iterator[str], *, provider: str, require_done: bool = True, error_of: EventErrors = stream_error
) -> Iterator[Dict[str, Any]]:
    """Each SSE event's data parsed as a JSON object; an event for which
    ``error_of(event, provider)`` returns an error raises it (default: ``stream_error``,
    for ``{"error": ...}`` objects; a provider passes its own mapping for its error shapes).
    """
    return _sse(lines, provider, require_done, error_of)


def iter_json_lines(
    lines: Iterator[str], *, provider: str, error_of: EventErrors = stream_error
) -> Iterator[Dict[str, Any]]:
    """Each non-blank line parsed as a JSON object (NDJSON); errors as in ``iter_sse_json``."""
    for batch in _batches(lines):
        for line in batch:
            if line and not line.isspace():
                yield _loads(line, provider, error_of)

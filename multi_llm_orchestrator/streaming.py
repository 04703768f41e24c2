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


class LineReader(Iterator[str]):
    """The lines of a streamed response, decoded as UTF-8, without their line ending.

    Reads through ``reading.BodyChunks`` (deadline, cut transfers, decoded sizes), in
    time linear in the bytes read: a partial line is kept as a list of blocks, joined
    once when its end arrives. A line longer than ``limit`` bytes is a
    ResponseFormatError as soon as it passes the limit. ``limit`` also bounds one SSE
    event (``iter_sse_data`` reads it from here). The response is closed when the
    reader ends, fails or is closed.
    """

    def __init__(self, chunks: BodyChunks, limit: int) -> None:
        self.chunks = chunks
        self.limit = limit
        self._lines = self._read()
        self._released = False

    def __next__(self) -> str:
        return next(self._lines)

    def close(self) -> None:
        self._lines.close()
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

    def _read(self) -> Iterator[str]:
        chunks, limit, provider = self.chunks, self.limit, self.chunks.provider
        pending: List[bytes] = []  # the start of a line whose end has not arrived
        pending_size = 0
        try:
            while True:
                block = chunks.next_block()
                if not block:
                    break
                if b"\n" not in block:
                    pending.append(block)
                    pending_size += len(block)
                    if pending_size > limit:
                        raise chunks.too_large("a line of the stream", limit)
                    continue
                lines = block.split(b"\n")
                if pending:
                    pending.append(lines[0])
                    lines[0] = b"".join(pending)
                    if len(lines[0]) > limit:
                        raise chunks.too_large("a line of the stream", limit)
                rest = lines.pop()
                pending, pending_size = ([rest], len(rest)) if rest else ([], 0)
                for line in lines:
                    yield _decode(line, provider)
            if pending:
                yield _decode(b"".join(pending), provider)
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


def iter_sse_data(lines: Iterator[str], *, provider: str, require_done: bool = True) -> Iterator[str]:
    """The ``data`` payload of each Server-Sent Event, multi-line data joined by "\\n".

    Blank lines end an event, ``:`` lines are comments (keep-alives), other fields
    (``event``, ``id``, ``retry``) are ignored, ``[DONE]`` ends the stream (what follows
    it is read and dropped, so the connection goes back to the pool). With
    ``require_done`` a stream that ends without ``[DONE]`` was cut: ProviderUnavailableError.
    """
    # One event may not hold more than a line may (LineReader.limit): a server sending
    # "data:" lines without the blank line that ends an event would grow it for ever.
    limit = getattr(lines, "limit", DEFAULT_MAX_RESPONSE_BYTES)
    data: List[str] = []
    size = 0
    for line in lines:
        if not line:
            if data:
                payload = "\n".join(data)
                data, size = [], 0
                if payload.strip() == "[DONE]":
                    drain(lines)
                    return
                yield payload
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
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
        yield payload
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
        event = json.loads(payload)
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
    for payload in iter_sse_data(lines, provider=provider, require_done=require_done):
        yield _loads(payload, provider, error_of)


def iter_json_lines(
    lines: Iterator[str], *, provider: str, error_of: EventErrors = stream_error
) -> Iterator[Dict[str, Any]]:
    """Each non-blank line parsed as a JSON object (NDJSON); errors as in ``iter_sse_json``."""
    for line in lines:
        if line.strip():
            yield _loads(line, provider, error_of)

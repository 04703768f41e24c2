"""Readers for streamed responses: Server-Sent Events and JSON lines.

Both read the raw bytes as they arrive (no waiting for a buffer to fill), decode lines as
UTF-8 whatever the Content-Type says (SSE is UTF-8 by definition; requests would guess
ISO-8859-1), enforce the call's deadline between reads, and raise only typed errors:

- a connection that breaks or times out mid-stream -> ProviderUnavailableError /
  ProviderTimeoutError (via ``HttpProvider.map_exception``);
- bytes that are not UTF-8, data that is not JSON -> ResponseFormatError;
- an ``{"error": ...}`` object inside the stream -> the error it describes.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

from .errors import ProviderError, ProviderTimeoutError, ProviderUnavailableError, ResponseFormatError

__all__ = ["iter_lines", "iter_sse_data", "iter_sse_json", "iter_json_lines", "stream_error", "drain"]

ErrorMapper = Callable[[BaseException], ProviderError]
#: ``error_of(event, provider)``: the typed error an event reports, or None for data.
EventErrors = Callable[[Dict[str, Any], str], Optional[ProviderError]]


def _raw_chunks(response: Any) -> Iterator[bytes]:
    raw = getattr(response, "raw", None)
    read1 = getattr(raw, "read1", None)
    if read1 is None:  # pragma: no cover - urllib3 < 2.2
        yield from response.iter_content(chunk_size=None)
        return
    while True:
        # requests opens the raw response with decode_content=False: without this a
        # gzip-encoded stream (some proxies compress SSE) would reach the parser compressed.
        chunk = read1(65536, decode_content=True)
        if not chunk:
            return
        yield chunk


def iter_lines(
    response: Any,
    *,
    provider: str,
    deadline: Optional[float],
    map_exception: ErrorMapper,
) -> Iterator[str]:
    """Lines of a streamed response, decoded as UTF-8, without their line ending.

    ``deadline`` is a ``time.monotonic()`` value after which the stream is abandoned with
    ProviderTimeoutError; ``map_exception`` turns transport exceptions into typed errors.
    The response is closed when the iterator ends, fails or is closed.
    """
    pending = b""
    try:
        chunks = _raw_chunks(response)
        while True:
            _cap_read_timeout(response, deadline)
            try:
                chunk = next(chunks, None)
            except Exception as exc:
                raise map_exception(exc) from exc
            if chunk is None:
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield _decode(line, provider)
            if deadline is not None and time.monotonic() > deadline:
                raise ProviderTimeoutError("the stream did not finish within the timeout", provider=provider)
        if pending:
            yield _decode(pending, provider)
    finally:
        response.close()


def _cap_read_timeout(response: Any, deadline: Optional[float]) -> None:
    """Shorten the socket's read timeout to the time left before ``deadline``: otherwise a
    stream that trickles and then stalls outlives it by up to one whole read timeout.
    urllib3 sets the timeout afresh when the connection is reused."""
    sock = getattr(getattr(getattr(response, "raw", None), "connection", None), "sock", None)
    if deadline is None or sock is None:
        return
    left = max(0.001, deadline - time.monotonic())
    try:
        current = sock.gettimeout()
        if current is None or left < current:
            sock.settimeout(left)
    except OSError:  # already closed: the read reports it
        pass


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
    data: List[str] = []
    for line in lines:
        if not line:
            if data:
                payload = "\n".join(data)
                data = []
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

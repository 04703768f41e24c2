"""Reading a response body under the call's deadline and a size limit.

``requests`` reads a non-streamed body inside ``Session.send``, where only each socket
read is bounded; so every request here is sent with ``stream=True`` and its body read
by ``BodyChunks``: block by block (``read1``, decoded), with the time left checked
before each read and the socket's timeout capped to it, and the bytes counted after
decoding, so a gzip bomb stops at the limit like a plain huge body. The
``Transfer`` of the request (see ``transfers.py``) cuts a read that outlives the
deadline or whose attempt was abandoned; the reader then raises its typed error.

- ``read_body``: the whole body, ResponseFormatError as soon as it passes the limit
  (at once when Content-Length already says so);
- ``read_prefix``: the start of an error body, never raising;
- ``streaming.iter_lines`` reads lines from the same ``BodyChunks``.
"""

from __future__ import annotations

import time
from typing import Any, Callable, List, Optional

from .errors import ProviderError, ProviderTimeoutError, ResponseFormatError

__all__ = [
    "BodyChunks",
    "read_body",
    "read_prefix",
    "close_response",
    "cap_read_timeout",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "ERROR_BODY_PREFIX",
    "READ_BLOCK",
]

#: The default of ``ProviderConfig.max_response_bytes``: far above any chat answer
#: (a 100k-token answer is under 1 MB), far below what hurts a process.
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
#: What is read of an error body: its message is at the start.
ERROR_BODY_PREFIX = 64 * 1024
#: Bytes asked of each read (urllib3 >= 2.6 returns at most this many decoded bytes).
READ_BLOCK = 65536
MIN_SOCKET_TIMEOUT = 0.001
#: How much longer than the time left a socket's read timeout may be before it is cut
#: down (``BodyChunks._cap_socket``).
TIMEOUT_SLACK = 0.01
#: The longest chunk-size line (with extensions) or trailer line accepted, as urllib3.
MAX_CHUNK_LINE = 65536
#: Attribute of a ``requests.Response`` holding its ``Transfer`` (set by HttpProvider.request).
TRANSFER_ATTR = "mlo_transfer"

ErrorMapper = Callable[[BaseException], ProviderError]


class BodyChunks:
    """The decoded bytes of one streamed ``requests.Response``, a block per ``next_block()``.

    ``deadline`` is a ``time.monotonic()`` value (None: no deadline), ``timeout`` the
    seconds it stands for (for messages); ``map_exception`` turns transport exceptions
    into typed errors. ``received`` counts the decoded bytes read so far.

    A body without Content-Encoding, chunked or with a Content-Length, is read straight
    from the connection's buffered socket file (``_Direct``): everything that arrived
    in one read, its chunk framing removed here. urllib3's ``read1`` returns one HTTP
    chunk per call through several Python layers, which for a stream of small events
    cost more than the rest of the reading. Any other body (gzip, read until close, a
    response without urllib3 underneath) is read through urllib3, which decodes it.
    """

    def __init__(
        self,
        response: Any,
        *,
        provider: str,
        deadline: Optional[float],
        timeout: Optional[float],
        map_exception: ErrorMapper,
    ) -> None:
        self.response = response
        self.provider = provider
        self.deadline = deadline
        self.timeout = timeout
        self.map_exception = map_exception
        self.transfer = getattr(response, TRANSFER_ATTR, None)
        self.received = 0
        self._reads = 0
        raw = getattr(response, "raw", None)
        self._direct = _Direct.of(raw, getattr(response, "headers", None))
        self._sock = getattr(getattr(raw, "connection", None), "sock", None)
        self._sock_timeout: Optional[float] = None  # the socket's timeout as last seen or set
        if self._sock is not None and deadline is not None:
            try:
                self._sock_timeout = self._sock.gettimeout()
            except OSError:  # already closed: the read reports it
                self._sock = None
        read1 = getattr(raw, "read1", None)
        if read1 is None:  # a response object without urllib3 underneath (e.g. a test double)
            blocks = response.iter_content(chunk_size=None)
            read1 = lambda amount, decode_content=True: next(blocks, b"")  # noqa: E731
        self._read1 = read1

    def next_block(self) -> bytes:
        """The next decoded bytes (``b""`` at the end); typed errors only."""
        direct = self._direct
        while True:
            transfer = self.transfer
            if transfer is not None and transfer.error is not None:
                raise self._cut_error()
            if direct is not None and direct.done:
                return b""
            deadline = self.deadline
            if deadline is not None:
                # The first read is always tried (with a tiny timeout when time is up): what
                # already arrived with the headers is the answer's, not a timeout.
                left = deadline - time.monotonic()
                if self._reads and left <= 0:
                    raise self.timeout_error()
                self._cap_socket(left)
            self._reads += 1
            try:
                block = direct.read() if direct is not None else self._read1(READ_BLOCK, decode_content=True)
            except Exception as exc:
                raise self._failure(exc) from exc
            if transfer is not None and transfer.error is not None:
                # A cut socket reads as the end of a body without a length: not the answer.
                raise self._cut_error()
            if block or direct is None or direct.done:
                self.received += len(block)
                return block
            # A read that held only chunk framing: read on (the deadline checked again).

    def _cap_socket(self, left: float) -> None:
        """Shorten the socket's read timeout to ``left`` seconds (see ``cap_read_timeout``),
        only when it is more than ``TIMEOUT_SLACK`` too long: a ``settimeout`` per read
        costs more than reading a small event, and the deadline thread cuts the read at
        the deadline anyway (the cap only spares it that work)."""
        sock, current = self._sock, self._sock_timeout
        if sock is None or (current is not None and current <= left + TIMEOUT_SLACK):
            return
        left = max(MIN_SOCKET_TIMEOUT, left)
        try:
            sock.settimeout(left)
        except OSError:  # already closed: the read reports it
            self._sock = None
            return
        self._sock_timeout = left

    def timeout_error(self) -> ProviderTimeoutError:
        """The timeout error, saying whether the answer had started to arrive."""
        # Rounded: a timeout computed from a deadline reads 0.599996 s otherwise.
        limit = f"{round(self.timeout, 3):g} s" if self.timeout is not None else "its timeout"
        if self.received:
            return ProviderTimeoutError(
                f"the answer did not finish within the timeout of {limit}: it was still arriving "
                f"({self.received} bytes received)",
                provider=self.provider,
            )
        return ProviderTimeoutError(f"no answer within {limit}", provider=self.provider)

    def too_large(self, what: str, limit: int) -> ResponseFormatError:
        return ResponseFormatError(
            f"{what} is larger than max_response_bytes={limit}: raise it in the provider's "
            "ProviderConfig if answers this large are expected",
            provider=self.provider,
        )

    def _cut_error(self) -> ProviderError:
        assert self.transfer is not None and self.transfer.error is not None
        if self.transfer.expired:
            return self.timeout_error()
        return self.transfer.error

    def _failure(self, exc: BaseException) -> ProviderError:
        if self.transfer is not None and self.transfer.error is not None:
            return self._cut_error()
        error = self.map_exception(exc)
        if isinstance(error, ProviderTimeoutError):
            return self.timeout_error()
        return error


class _Direct:
    """Reads the body of a urllib3 ``HTTPResponse`` without Content-Encoding from its
    socket file: a read returns all that arrived (up to ``READ_BLOCK``), a chunked body's
    framing removed. At the end of the body the connection goes back to its pool as
    urllib3 would put it; a body broken off (end of file before its end, framing that is
    not HTTP) raises urllib3's ``ProtocolError``, a stalled read the socket's timeout.
    """

    __slots__ = ("raw", "file", "chunked", "left", "buffer", "need_crlf", "in_trailer", "done")

    def __init__(self, raw: Any, file: Any, length: Optional[int]) -> None:
        self.raw = raw
        self.file = file  # the connection's buffered socket file, positioned at the body
        self.chunked = length is None
        self.left = length or 0  # bytes of the body (of the current chunk when chunked) to come
        self.buffer = b""  # chunked: received bytes whose framing is not complete yet
        self.need_crlf = False  # chunked: the CRLF after a chunk's data is next
        self.in_trailer = False  # chunked: the last chunk was read, its trailer section is next
        self.done = False

    @classmethod
    def of(cls, raw: Any, headers: Any) -> Optional["_Direct"]:
        """A direct reader of ``raw``, or None when urllib3 must read it: content-encoded
        (it decodes), delimited by the end of the connection, or partly read already."""
        if type(raw).__name__ != "HTTPResponse" or not isinstance(raw, _urllib3_response()):
            return None
        encoding = (headers or {}).get("Content-Encoding")
        if encoding and encoding.strip().lower() != "identity":
            return None
        try:
            fp = raw._fp  # the http.client.HTTPResponse
            file = fp.fp
            if (file is None or raw._fp_bytes_read or len(raw._decoded_buffer) or raw.chunk_left is not None
                    or getattr(raw, "_decoder", None) is not None):
                return None
            if raw.chunked:
                # http.client's chunk_left: None until it has read a chunk size.
                return cls(raw, file, None) if fp.chunk_left is None else None
            length = raw.length_remaining
            if length is None or length != fp.length:
                return None
            return cls(raw, file, length)
        except AttributeError:  # another urllib3 or http.client inside: let urllib3 read
            return None

    def read(self) -> bytes:
        """The body bytes of one read of the socket file (``b""`` when that read held only
        framing); ``done`` once the body is complete."""
        try:
            if self.chunked:
                return self._chunked(self.file.read1(READ_BLOCK))
            if not self.left:
                self._end(reuse=True)
                return b""
            data = self.file.read1(min(READ_BLOCK, self.left))
        except TimeoutError:
            raise
        except OSError as exc:  # as urllib3 says it
            raise _protocol_error(f"Connection broken: {exc!r}", exc) from exc
        if not data:
            self._end(reuse=False)
            raise _protocol_error(f"Response ended prematurely: {self.left} bytes of its Content-Length missing")
        self.left -= len(data)
        if not self.left:
            self._end(reuse=True)
        return data

    def _chunked(self, data: bytes) -> bytes:
        if not data:
            if self.in_trailer:  # some servers end without the final CRLF (urllib3 accepts it)
                self._end(reuse=False)
                return b""
            self._end(reuse=False)
            raise _protocol_error("Response ended prematurely")
        buffer = self.buffer + data if self.buffer else data
        size = len(buffer)
        pos = 0
        parts: List[bytes] = []
        left = self.left
        while True:
            if self.in_trailer:
                newline = buffer.find(b"\n", pos)
                if newline < 0:
                    break
                line, pos = buffer[pos:newline], newline + 1
                if line in (b"", b"\r"):
                    # Bytes past the body's end would be taken for the next answer's.
                    self._end(reuse=pos == size)
                    break
                continue
            if left:
                end = pos + left
                if end > size:
                    parts.append(buffer[pos:] if pos else buffer)
                    left, pos = end - size, size
                    break
                parts.append(buffer[pos:end])
                left, pos = 0, end
                self.need_crlf = True
            if self.need_crlf:
                if size - pos < 2:
                    break
                if buffer[pos:pos + 2] != b"\r\n":
                    self._end(reuse=False)
                    raise _protocol_error("a chunk of the body does not end with CRLF")
                pos += 2
                self.need_crlf = False
            newline = buffer.find(b"\n", pos)
            if newline < 0:
                break
            line, pos = buffer[pos:newline], newline + 1
            try:
                left = int(line.split(b";", 1)[0], 16)
            except ValueError:
                left = -1
            if left < 0:
                self._end(reuse=False)
                raise _protocol_error(f"Invalid chunk length: {line[:40]!r}")
            if not left:
                self.in_trailer = True
        self.left = left
        rest = size - pos
        if not self.done and rest > MAX_CHUNK_LINE:  # only a size or trailer line can be pending this long
            self._end(reuse=False)
            raise _protocol_error("a chunk-size or trailer line of the body is too long")
        self.buffer = buffer[pos:] if rest else b""
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def _end(self, reuse: bool) -> None:
        """The body is over: its connection back to the pool (``reuse``) or closed."""
        self.done = True
        raw = self.raw
        if reuse:
            raw._fp.close()  # http.client's end of the response; the socket stays open
            raw.release_conn()
        else:
            raw.close()


def _urllib3_response() -> type:
    # Imported here: importing this module (the CLI does, through types.py) must not load
    # urllib3; a response to read means it is loaded already.
    from urllib3.response import HTTPResponse

    return HTTPResponse


def _protocol_error(*args: Any) -> Exception:
    """urllib3's ProtocolError: what its own reader raises for a broken body (mapped to
    ProviderUnavailableError "the connection broke ..." by ``http.error_from_exception``)."""
    from urllib3.exceptions import ProtocolError

    return ProtocolError(*args)


def cap_read_timeout(response: Any, deadline: Optional[float]) -> None:
    """Shorten the socket's read timeout to the time left before ``deadline`` (never
    lengthen it, never 0: that would make it non-blocking): a stalled read then ends at
    the deadline without waiting for the deadline thread. urllib3 sets the timeout
    afresh when the connection is reused."""
    sock = getattr(getattr(getattr(response, "raw", None), "connection", None), "sock", None)
    if deadline is None or sock is None:
        return
    left = max(MIN_SOCKET_TIMEOUT, deadline - time.monotonic())
    try:
        current = sock.gettimeout()
        if current is None or left < current:
            sock.settimeout(left)
    except OSError:  # already closed: the read reports it
        pass


def read_body(chunks: BodyChunks, limit: int, what: str = "the response body") -> bytes:
    """The whole body of ``chunks``, at most ``limit`` bytes after decoding; the response
    is closed (its connection reused when the body was read to the end)."""
    response = chunks.response
    try:
        length = _content_length(response)
        if length is not None and length > limit:
            raise chunks.too_large(f"{what} ({length} bytes by its Content-Length)", limit)
        parts: List[bytes] = []
        size = 0
        while True:
            block = chunks.next_block()
            if not block:
                return b"".join(parts)
            size += len(block)
            if size > limit:
                raise chunks.too_large(what, limit)
            parts.append(block)
    finally:
        close_response(response)


def read_prefix(chunks: BodyChunks, size: int = ERROR_BODY_PREFIX) -> bytes:
    """Up to ``size`` bytes from the start of the body; never raises (an error body
    that cannot be read just has no message). The response is closed."""
    parts: List[bytes] = []
    got = 0
    try:
        while got < size:
            block = chunks.next_block()
            if not block:
                break
            parts.append(block)
            got += len(block)
    except ProviderError:
        pass
    finally:
        close_response(chunks.response)
    return b"".join(parts)[:size]


def close_response(response: Any) -> None:
    """Close ``response`` and end its transfer (idempotent)."""
    try:
        response.close()
    finally:
        transfer = getattr(response, TRANSFER_ATTR, None)
        if transfer is not None:
            transfer.finish()


def _content_length(response: Any) -> Optional[int]:
    headers = getattr(response, "headers", None) or {}
    if headers.get("Content-Encoding", "identity").lower() not in ("", "identity"):
        return None  # the limit is on decoded bytes
    value = headers.get("Content-Length")
    if value is None or not value.isdigit() or len(value) > 20:
        return None
    return int(value)

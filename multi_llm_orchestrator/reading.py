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
#: Attribute of a ``requests.Response`` holding its ``Transfer`` (set by HttpProvider.request).
TRANSFER_ATTR = "mlo_transfer"

ErrorMapper = Callable[[BaseException], ProviderError]


class BodyChunks:
    """The decoded bytes of one streamed ``requests.Response``, a block per ``next_block()``.

    ``deadline`` is a ``time.monotonic()`` value (None: no deadline), ``timeout`` the
    seconds it stands for (for messages); ``map_exception`` turns transport exceptions
    into typed errors. ``received`` counts the decoded bytes read so far.
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
        read1 = getattr(getattr(response, "raw", None), "read1", None)
        if read1 is None:  # a response object without urllib3 underneath (e.g. a test double)
            blocks = response.iter_content(chunk_size=None)
            read1 = lambda amount, decode_content=True: next(blocks, b"")  # noqa: E731
        self._read1 = read1

    def next_block(self) -> bytes:
        """The next decoded bytes (``b""`` at the end); typed errors only."""
        transfer = self.transfer
        if transfer is not None and transfer.error is not None:
            raise self._cut_error()
        if self.deadline is not None:
            # The first read is always tried (with a tiny timeout when time is up): what
            # already arrived with the headers is the answer's, not a timeout.
            if self._reads and time.monotonic() >= self.deadline:
                raise self.timeout_error()
            cap_read_timeout(self.response, self.deadline)
        self._reads += 1
        try:
            block = self._read1(READ_BLOCK, decode_content=True)
        except Exception as exc:
            raise self._failure(exc) from exc
        if transfer is not None and transfer.error is not None:
            # A cut socket reads as the end of a body without a length: not the answer.
            raise self._cut_error()
        self.received += len(block)
        return block

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

"""Requests in flight that another thread can stop: at their deadline, or when abandoned.

A socket timeout bounds one read, not a whole answer: a server that sends a byte just
before each read timeout (in the headers, a chunk header or the body) keeps a request
going for as long as it likes. And a thread blocked in a read cannot be told to stop:
closing its socket does not wake it, only ``socket.shutdown`` does.

So every HTTP request is a ``Transfer``: it knows the urllib3 connections it has taken
(``http.TrackingAdapter`` makes its pools hand them to the transfer active on the
taking thread; this module itself imports neither requests nor urllib3) and can be
cut, which shuts those sockets down so the blocked read returns at once and the
reader raises the transfer's typed error instead:

- at its deadline, by the ``mlo-deadline`` thread (``Reaper``), whatever the reads did;
- when the Router abandons the attempt it belongs to (hedge lost, Router deadline
  passed, Router closed): ``CancelScope.cancel`` cuts every transfer of that attempt.

A connection going back to its pool is detached first, under the transfer's lock, so a
cut never reaches a connection another request has taken since.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import socket
import threading
import time
from typing import Any, Dict, List, Optional, Set, Tuple

from . import forking
from .errors import ProviderError

__all__ = ["Transfer", "CancelScope", "TransferCut", "current_transfer", "stop_reaper_if_idle"]

logger = logging.getLogger("multi_llm_orchestrator.transfers")

#: How long the deadline thread waits for new work before it exits: sequential callers
#: would otherwise start a thread per request.
REAPER_LINGER_S = 0.25
THREAD_NAME = "mlo-deadline"

_local = threading.local()  # .transfer: the Transfer sending on this thread; .scope: the CancelScope


def current_transfer() -> Optional["Transfer"]:
    """The Transfer sending on this thread (between ``start()`` and ``sent()``), if any."""
    return getattr(_local, "transfer", None)


class TransferCut(Exception):
    """Raised inside urllib3 when a cut transfer asks for a connection. Not an OSError,
    so urllib3 does not retry it; ``Transfer.error`` says what happened."""


class CancelScope:
    """The transfers of one Router attempt, cut together when the attempt is abandoned.

    Active on a thread (``with scope.active():``), it adopts every ``Transfer`` started
    there; a transfer that finishes leaves it. Once cancelled, new transfers are cut as
    they start, so a provider making several requests (an OAuth token, then the call)
    stops at the next one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._transfers: Set["Transfer"] = set()
        self.error: Optional[ProviderError] = None

    def active(self) -> "_Active":
        """A context manager: the scope is this thread's while the block runs."""
        return _Active(self)

    def adopt(self, transfer: "Transfer") -> None:
        with self._lock:
            error = self.error
            if error is None:
                self._transfers.add(transfer)
                return
        transfer.cut(error)

    def leave(self, transfer: "Transfer") -> None:
        with self._lock:
            self._transfers.discard(transfer)

    def cancel(self, error: ProviderError) -> None:
        """Cut every live transfer of the attempt with ``error`` (first call wins)."""
        with self._lock:
            if self.error is not None:
                return
            self.error = error
            transfers, self._transfers = list(self._transfers), set()
        for transfer in transfers:
            transfer.cut(error)


class _Active:
    """``CancelScope.active()``: a class, not a generator, since every attempt enters one."""

    __slots__ = ("scope", "previous")

    def __init__(self, scope: CancelScope) -> None:
        self.scope = scope
        self.previous: Optional[CancelScope] = None

    def __enter__(self) -> CancelScope:
        self.previous = getattr(_local, "scope", None)
        _local.scope = self.scope
        return self.scope

    def __exit__(self, *exc_info: object) -> None:
        _local.scope = self.previous


class Transfer:
    """One HTTP request in flight, from connecting to its last byte.

    ``start()`` it before sending (it becomes this thread's active transfer until
    ``sent()``), ``finish()`` it once its response is read or closed. ``error`` is set
    when it was cut: what the reader should raise instead of the broken read.
    """

    def __init__(self, deadline: float, expired: ProviderError) -> None:
        self.deadline = deadline
        self._expired = expired  # the error at the deadline
        self._lock = threading.Lock()
        self._connections: Set[Any] = set()
        self.error: Optional[ProviderError] = None
        self.finished = False
        self._scope: Optional[CancelScope] = getattr(_local, "scope", None)

    def start(self) -> "Transfer":
        _REAPER.add(self)
        if self._scope is not None:
            self._scope.adopt(self)
        _local.transfer = self
        return self

    def sent(self) -> None:
        """The request is sent and its headers read: later connections are not ours."""
        if getattr(_local, "transfer", None) is self:
            _local.transfer = None

    def finish(self) -> None:
        """The response is read or closed: nothing to cut any more. Idempotent."""
        self.sent()
        with self._lock:
            if self.finished:
                return
            self.finished = True
            self._connections.clear()
        _REAPER.remove(self)
        if self._scope is not None:
            self._scope.leave(self)

    @property
    def expired(self) -> bool:
        return self.error is self._expired

    def expire(self) -> None:
        self.cut(self._expired)

    def cut(self, error: ProviderError) -> None:
        """Shut down the sockets in use so blocked reads end now; later reads raise ``error``."""
        with self._lock:
            if self.finished or self.error is not None:
                return
            self.error = error
            # Under the lock: a connection detached (back in its pool) meanwhile could be
            # another request's by the time its socket was shut down.
            for connection in self._connections:
                _shutdown(connection.sock)
                _shutdown(getattr(connection, "_mlo_socket", None))  # still connecting

    # Called from urllib3 (TrackingAdapter's pools and connections) -------------------

    def attach(self, connection: Any) -> None:
        with self._lock:
            if self.error is None and not self.finished:
                connection._mlo_transfer = self
                self._connections.add(connection)
                return
            error = self.error
        if error is not None:
            raise TransferCut(str(error))

    def connecting(self, connection: Any, sock: socket.socket) -> None:
        """``connection`` is about to connect ``sock`` (or to run a TLS handshake over it,
        then a duplicate the connection gives up in ``connected``): a cut from now on shuts
        it down, which ends a connect or handshake still waiting for the host.
        ``TransferCut`` if cut already."""
        with self._lock:
            if self.error is not None:
                raise TransferCut(str(self.error))
            connection._mlo_socket = sock

    def detach(self, connection: Any) -> None:
        with self._lock:
            self._connections.discard(connection)
        connection._mlo_transfer = None

    def connected(self, connection: Any) -> None:
        """Called once ``connection``'s connect has ended, connected or not: a cut reaches
        it through ``connection.sock`` from now on (until then, through the socket handed
        over by ``connecting``: no moment of the connect is out of a cut's reach). A
        duplicate socket kept through its TLS handshake is closed."""
        with self._lock:
            # Under the lock: a cut shutting down the duplicate is never racing its close.
            handle, connection._mlo_socket = getattr(connection, "_mlo_socket", None), None
        if handle is not None and handle is not connection.sock:
            handle.close()


def _shutdown(sock: Optional[socket.socket]) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed or never connected: nothing is blocked on it
        pass


# The deadline thread -------------------------------------------------------------------


class Reaper:
    """One daemon thread that cuts transfers still running at their deadline.

    Started on demand; exits after ``REAPER_LINGER_S`` without live transfers (found by
    waking at least every ``REAPER_LINGER_S``; at once on ``stop_if_idle``, which
    ``close()`` calls), so an idle process has no thread.
    """

    def __init__(self) -> None:
        self._reset()

    def _after_fork(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: List[Tuple[float, int, Transfer]] = []
        self._live: Dict[int, Transfer] = {}
        self._order = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self._wake_at = 0.0  # when the thread's current wait ends: no need to wake it for later deadlines

    def add(self, transfer: Transfer) -> None:
        with self._cond:
            self._live[id(transfer)] = transfer
            heapq.heappush(self._heap, (transfer.deadline, next(self._order), transfer))
            if len(self._heap) > 2 * len(self._live) + 64:  # finished entries wait for their deadline: compact
                self._heap = [entry for entry in self._heap if id(entry[2]) in self._live]
                heapq.heapify(self._heap)
            self._stopping = False
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
                self._thread.start()
            elif transfer.deadline < self._wake_at:
                # Only then: a request per call would otherwise cost a thread switch per call.
                self._cond.notify()

    def remove(self, transfer: Transfer) -> None:
        # Never wakes the thread: it waits at most REAPER_LINGER_S at a time, and finds
        # the heap empty then. Waking it here cost a thread switch per sequential call
        # (it woke while the next request was in flight and went back to a far deadline).
        with self._cond:
            if self._live.pop(id(transfer), None) is not None and not self._live:
                self._heap.clear()

    def stop_if_idle(self, timeout: float = 1.0) -> None:
        with self._cond:
            thread = self._thread
            if thread is None or self._live:
                return
            self._stopping = True
            self._cond.notify()
        thread.join(timeout)

    def _wait(self, seconds: float) -> None:
        self._wake_at = time.monotonic() + seconds
        self._cond.wait(seconds)
        self._wake_at = 0.0

    def _run(self) -> None:
        cond = self._cond
        with cond:
            idle_since: Optional[float] = None
            while True:
                now = time.monotonic()
                if not self._heap:
                    if self._stopping or (idle_since is not None and now - idle_since >= REAPER_LINGER_S):
                        self._thread = None
                        return
                    idle_since = idle_since if idle_since is not None else now
                    self._wait(REAPER_LINGER_S - (now - idle_since))
                    continue
                idle_since = None
                deadline, _, transfer = self._heap[0]
                if id(transfer) not in self._live or self._live[id(transfer)] is not transfer:
                    heapq.heappop(self._heap)
                    continue
                if deadline > now:
                    # In steps of at most the linger: remove() does not wake the thread, so
                    # this is how it notices it has nothing left to watch (4 wake-ups a
                    # second while requests run, against one per request).
                    self._wait(min(deadline - now, REAPER_LINGER_S))
                    continue
                heapq.heappop(self._heap)
                del self._live[id(transfer)]  # expired: nothing more to watch, finished or not
                cond.release()
                try:
                    transfer.expire()
                except Exception:  # pragma: no cover - never let the thread die
                    logger.exception("cutting an expired transfer failed")
                finally:
                    cond.acquire()


_REAPER = Reaper()
forking.register(_REAPER)  # a forked child has no deadline thread, and the lock may have been held


def stop_reaper_if_idle() -> None:
    """End the deadline thread now if no request is in flight (``close()`` calls it)."""
    _REAPER.stop_if_idle()

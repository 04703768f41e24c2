"""Per-provider rate limits: requests per minute, tokens per minute, requests in flight.

One small interface, ``Limiter``, with one atomic decision per method, so a fleet-wide
implementation (Redis) replaces the in-memory one without the Router noticing::

    limiter = MemoryLimiter(Limits(rpm=600, tpm=100_000, max_concurrency=8))
    grant = limiter.acquire(tokens=1200)          # a Reservation, or a Refusal
    if isinstance(grant, Refusal):
        print(grant.reason, grant.retry_after)    # e.g. "rpm 600 reached", 1.7
    else:
        try:
            usage = call_the_provider()
            limiter.reconcile(grant, usage.total_tokens)   # the estimate becomes the truth
        finally:
            limiter.release(grant)                # ends "in flight"; sent=False refunds

Exactness. A request occupies its ``rpm`` slot (and its tokens their ``tpm`` share) from
``acquire`` until ``window`` seconds after ``release``. The server saw the request start
somewhere between the two, so no ``window``-long interval of the server's own clock can
hold more than ``rpm`` starts, whatever the number of threads or the network delay. The
price: a request's slot is held for its latency longer than strictly needed.

What the server says wins: ``penalize`` (a 429, with its Retry-After) blocks the limiter
for that long, and ``update_from_headers`` reads OpenAI-style ``x-ratelimit-remaining-*``
and ``x-ratelimit-reset-*`` headers (PROTOCOLS.md section 11).

``report_response`` is how the transport feeds the limiter of the attempt running on the
current thread (``attempt_feedback`` sets it), so providers need not know about limits.
"""

from __future__ import annotations

import math
import re
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Deque, Dict, Mapping, Optional, Union

from . import forking
from .errors import ConfigurationError
from .validation import check_int, check_number

__all__ = [
    "Limits",
    "Limiter",
    "MemoryLimiter",
    "Reservation",
    "Refusal",
    "parse_duration",
    "report_response",
    "attempt_feedback",
    "DEFAULT_429_PAUSE",
]

#: Seconds a limiter stays shut after a 429 that did not say how long to wait.
DEFAULT_429_PAUSE = 1.0
#: The longest pause a server signal may impose (a "Retry-After: 86400" is a quota, not a rate).
MAX_SERVER_PAUSE = 3600.0


@dataclass(frozen=True)
class Limits:
    """Capacity one provider sells. Every field is optional (None: no limit).

    - ``rpm``: requests started per ``window`` seconds (default window 60: per minute).
    - ``tpm``: tokens (prompt + completion) per ``window``; estimated before a call,
      corrected with the real usage after it.
    - ``max_concurrency``: requests in flight at once (Yandex's 429 counts these; a
      GigaChat tariff limits concurrent streams).
    - ``window``: the length of the rpm/tpm window in seconds. 60 is what providers quote;
      a shorter one expresses per-second limits (``rpm=10, window=1``: 10 requests/s).
    - ``count_tokens``: estimate the prompt with the provider's own ``count_tokens``
      (one extra request) instead of the local estimate.

    >>> Limits(rpm=600, max_concurrency=10)
    Limits(rpm=600, tpm=None, max_concurrency=10, window=60.0, count_tokens=False)
    """

    rpm: Optional[int] = None
    tpm: Optional[int] = None
    max_concurrency: Optional[int] = None
    window: float = 60.0
    count_tokens: bool = False

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "max_concurrency"):
            check_int(f"limits.{name}", getattr(self, name), 1, allow_none=True)
        object.__setattr__(
            self, "window", check_number("limits.window", self.window, 0, low_open=True, kind="a number of seconds")
        )
        if not isinstance(self.count_tokens, bool):
            raise ConfigurationError(f"limits.count_tokens must be True or False; got {self.count_tokens!r}")

    @classmethod
    def from_value(cls, value: Any) -> Optional["Limits"]:
        """A ``Limits`` from itself, a dict of its fields, or None (no limits)."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(cls.__dataclass_fields__))
            if unknown:
                raise ConfigurationError(
                    f"Unknown limits setting {', '.join(map(repr, unknown))}; valid: {', '.join(cls.__dataclass_fields__)}"
                )
            return cls(**value)
        raise ConfigurationError(
            f"limits must be a dict such as {{'rpm': 600, 'tpm': 100000, 'max_concurrency': 10}}; got {type(value).__name__}"
        )

    @property
    def empty(self) -> bool:
        return self.rpm is None and self.tpm is None and self.max_concurrency is None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(eq=False)
class Reservation:
    """Capacity granted by ``Limiter.acquire``: one request and ``tokens`` estimated.

    Opaque to the Router; an implementation keeps what it needs in ``data``.
    """

    tokens: int
    acquired: float
    data: Dict[str, Any] = field(default_factory=dict)
    released: bool = False
    # Memory limiter bookkeeping: when the request left "in flight", and whether its
    # entry is still inside the window.
    stamp: Optional[float] = None
    counted: bool = False


@dataclass(frozen=True)
class Refusal:
    """No capacity now. ``reason`` says which limit; ``retry_after`` is the seconds until
    capacity returns, None when unknown (a request in flight must end first), ``math.inf``
    when never (one request larger than the whole ``tpm``)."""

    reason: str
    retry_after: Optional[float] = None

    def describe(self) -> str:
        """The reason with when capacity returns, for ``Attempt.error`` and messages."""
        if self.retry_after is None:
            return f"{self.reason}; capacity returns when a call in flight ends"
        if math.isinf(self.retry_after):
            return f"{self.reason}; waiting does not help"
        return f"{self.reason}; capacity returns in {self.retry_after:.2f} s"


Grant = Union[Reservation, Refusal]


class Limiter(ABC):
    """The limits of one provider. Implementations are thread-safe, and each method is
    one atomic decision (a lock in memory, a script in a shared store)."""

    limits: Limits

    @abstractmethod
    def acquire(self, tokens: int = 0) -> Grant:
        """Take one request start, one slot in flight and ``tokens`` estimated tokens,
        all or nothing: a ``Reservation``, or a ``Refusal`` saying why and for how long."""

    @abstractmethod
    def reconcile(self, reservation: Reservation, tokens: int) -> None:
        """Replace the reservation's estimate by the ``tokens`` really used (before or
        after ``release``), so the tpm window converges to the truth."""

    @abstractmethod
    def release(self, reservation: Reservation, *, sent: bool = True) -> None:
        """The request is over: free its slot in flight. ``sent=False`` (it never left)
        also refunds its request start and tokens. Idempotent."""

    @abstractmethod
    def penalize(self, retry_after: Optional[float]) -> None:
        """The server answered 429: admit nothing for ``retry_after`` seconds (a short
        default pause when the server did not say)."""

    @abstractmethod
    def update_from_headers(self, headers: Mapping[str, str]) -> None:
        """Read ``x-ratelimit-remaining-requests``/``-tokens`` and their ``-reset-``
        times; they bound admissions until those resets."""

    def snapshot(self) -> Dict[str, Any]:
        """Current usage for ``Router.stats()``."""
        return {}


class MemoryLimiter(Limiter):
    """The in-process ``Limiter``: exact under any number of threads (one lock).

    ``clock`` is injectable (monotonic seconds) so tests need no sleeps.
    """

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        forking.register(self)  # fresh locks in a forked child (forking.py)
        self._in_flight = 0
        self._in_flight_tokens = 0
        self._done: Deque[Reservation] = deque()  # released, in release order, inside the window
        self._done_tokens = 0
        self._blocked_until = 0.0
        self._server_requests: Optional[list] = None  # [remaining, reset_at]
        self._server_tokens: Optional[list] = None

    def _after_fork(self) -> None:
        # In a forked child: the parent's requests in flight end in the parent, never
        # here; they count as just finished (they did reach the server). Each process
        # then holds the limits on its own: share them across a fleet with a shared store.
        self._lock = threading.Lock()
        now = self._clock()
        if self._in_flight:
            share = self._in_flight_tokens // self._in_flight
            for _ in range(self._in_flight):
                self._done.append(Reservation(share, now, released=True, stamp=now, counted=True))
                self._done_tokens += share
        self._in_flight = self._in_flight_tokens = 0

    # The decision ------------------------------------------------------------------

    def acquire(self, tokens: int = 0) -> Grant:
        tokens = max(0, int(tokens))
        limits = self.limits
        with self._lock:
            now = self._clock()
            self._expire(now)
            if self._blocked_until > now:
                return Refusal("the server asked to slow down (429)", self._blocked_until - now)
            if limits.max_concurrency is not None and self._in_flight >= limits.max_concurrency:
                return Refusal(f"max_concurrency {limits.max_concurrency} reached ({self._in_flight} in flight)")
            if limits.rpm is not None and self._in_flight + len(self._done) >= limits.rpm:
                return Refusal(f"rpm {limits.rpm} reached", self._rpm_wait(now))
            if limits.tpm is not None:
                if tokens > limits.tpm:
                    return Refusal(f"this call's {tokens} estimated tokens exceed tpm {limits.tpm}", math.inf)
                used = self._in_flight_tokens + self._done_tokens
                if used + tokens > limits.tpm:
                    return Refusal(
                        f"tpm {limits.tpm} reached ({used} used, {tokens} needed)",
                        self._tpm_wait(now, used + tokens - limits.tpm),
                    )
            for signal, need, what in ((self._server_requests, 1, "requests"), (self._server_tokens, tokens, "tokens")):
                if signal is not None and signal[1] > now and signal[0] < max(need, 1):
                    return Refusal(f"the server reports {max(signal[0], 0)} {what} remaining", signal[1] - now)
            for signal, need in ((self._server_requests, 1), (self._server_tokens, tokens)):
                if signal is not None:
                    signal[0] -= need
            self._in_flight += 1
            self._in_flight_tokens += tokens
            return Reservation(tokens, now)

    def reconcile(self, reservation: Reservation, tokens: int) -> None:
        tokens = max(0, int(tokens))
        with self._lock:
            delta, reservation.tokens = tokens - reservation.tokens, tokens
            if not reservation.released:
                self._in_flight_tokens += delta
            elif reservation.counted:
                self._done_tokens += delta

    def release(self, reservation: Reservation, *, sent: bool = True) -> None:
        with self._lock:
            if reservation.released:
                return
            reservation.released = True
            self._in_flight -= 1
            self._in_flight_tokens -= reservation.tokens
            if sent:
                reservation.stamp = self._clock()
                reservation.counted = True
                self._done.append(reservation)
                self._done_tokens += reservation.tokens

    # What the server says ------------------------------------------------------------

    def penalize(self, retry_after: Optional[float]) -> None:
        pause = DEFAULT_429_PAUSE if retry_after is None else min(max(0.0, retry_after), MAX_SERVER_PAUSE)
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + pause)

    def update_from_headers(self, headers: Mapping[str, str]) -> None:
        signals = {what: _remaining_and_reset(headers, what) for what in ("requests", "tokens")}
        if not any(signals.values()):
            return
        with self._lock:
            now = self._clock()
            for what, signal in signals.items():
                if signal is not None:
                    remaining, reset = signal
                    setattr(self, f"_server_{what}", [remaining, now + reset])

    # Bookkeeping ---------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        horizon = now - self.limits.window
        done = self._done
        while done and done[0].stamp <= horizon:  # type: ignore[operator]
            entry = done.popleft()
            entry.counted = False
            self._done_tokens -= entry.tokens

    def _rpm_wait(self, now: float) -> Optional[float]:
        # The oldest finished entries leave first; in-flight ones only after they end.
        excess = self._in_flight + len(self._done) - self.limits.rpm + 1  # type: ignore[operator]
        if excess > len(self._done):
            return None
        return max(0.0, self._done[excess - 1].stamp + self.limits.window - now)  # type: ignore[operator]

    def _tpm_wait(self, now: float, excess: int) -> Optional[float]:
        freed = 0
        for entry in self._done:
            freed += entry.tokens
            if freed >= excess:
                return max(0.0, entry.stamp + self.limits.window - now)  # type: ignore[operator]
        return None

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            now = self._clock()
            self._expire(now)
            return {
                "in_flight": self._in_flight,
                "requests_in_window": self._in_flight + len(self._done),
                "tokens_in_window": self._in_flight_tokens + self._done_tokens,
                "blocked_for_s": round(max(0.0, self._blocked_until - now), 3),
                **{k: v for k, v in self.limits.to_dict().items() if k in ("rpm", "tpm", "max_concurrency")},
            }

    def __repr__(self) -> str:
        return f"MemoryLimiter({self.limits!r})"


# Rate-limit headers -------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: Any) -> Optional[float]:
    """Seconds from an OpenAI-style reset value: Go durations such as ``6m0s``, ``1s``,
    ``12ms``, ``1h2m3.5s``, or a plain number of seconds; None when unreadable.

    >>> parse_duration("6m0s"), parse_duration("12ms"), parse_duration("2.5")
    (360.0, 0.012, 2.5)
    """
    if not isinstance(text, str):
        return None
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(number + unit for number, unit in parts) != text:
            return None
        scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
        seconds = sum(float(number) * scale[unit] for number, unit in parts)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _remaining_and_reset(headers: Mapping[str, str], what: str) -> Optional["tuple[int, float]"]:
    remaining = headers.get(f"x-ratelimit-remaining-{what}")
    reset = parse_duration(headers.get(f"x-ratelimit-reset-{what}"))
    if remaining is None or reset is None:
        return None
    try:
        count = int(float(remaining))
    except (TypeError, ValueError, OverflowError):
        return None
    return max(0, count), min(reset, MAX_SERVER_PAUSE)


# Feedback from the transport ------------------------------------------------------------

_feedback = threading.local()


class attempt_feedback:
    """While the block runs on this thread, responses reported by the transport update
    ``limiter``. (A class, not a generator: every attempt enters one.)"""

    __slots__ = ("limiter", "previous")

    def __init__(self, limiter: Optional[Limiter]) -> None:
        self.limiter = limiter
        self.previous: Optional[Limiter] = None

    def __enter__(self) -> None:
        self.previous = getattr(_feedback, "limiter", None)
        _feedback.limiter = self.limiter

    def __exit__(self, *exc_info: object) -> None:
        _feedback.limiter = self.previous


def report_response(status: int, headers: Mapping[str, str]) -> None:
    """Called by the HTTP layer for every response: rate-limit headers reach the limiter
    of the attempt running on this thread (if it has one)."""
    limiter = getattr(_feedback, "limiter", None)
    if limiter is None:
        return
    try:
        limiter.update_from_headers(headers)
    except Exception:  # a limiter's bug must not fail the call that is answering
        import logging

        logging.getLogger("multi_llm_orchestrator.limits").exception("updating the limiter from headers failed")

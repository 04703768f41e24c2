"""Circuit breaker per provider: stop sending calls to a provider that keeps failing.

States::

    closed --(threshold consecutive failures)--> open --(cooldown over)--> half-open
    half-open --(the one probe succeeds)--> closed
    half-open --(the probe fails)--> open again, for a longer cooldown (up to a cap)

A ``RateLimitError`` with ``retry_after`` opens the breaker for exactly that long; an
``AuthenticationError`` or ``QuotaExceededError`` opens it for ``auth_cooldown`` (a wrong
key does not heal in seconds). ``InvalidRequestError`` does not count: the request was
bad, not the provider.

The policy is an immutable value shared by all breakers; each provider has one small
locked ``CircuitBreaker`` holding its state (so a shared store could replace it later).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional

from . import forking
from .errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    QuotaExceededError,
    RateLimitError,
)
from .validation import capped_growth, check_int, check_number

__all__ = ["BreakerPolicy", "CircuitBreaker", "CLOSED", "OPEN", "HALF_OPEN", "PROBE", "NORMAL"]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"
PROBE = "probe"
NORMAL = "normal"


@dataclass(frozen=True)
class BreakerPolicy:
    """How breakers trip and recover.

    - ``failure_threshold``: consecutive failures that open a closed breaker (default 5).
    - ``cooldown``: seconds the first trip stays open (default 5).
    - ``cooldown_multiplier``: each further trip without a success in between multiplies
      the cooldown (default 2) ...
    - ``max_cooldown``: ... up to this many seconds (default 60).
    - ``auth_cooldown``: seconds open after an authentication or quota error (default 300).
    - ``enabled``: False turns breakers off (every call is let through).

    >>> BreakerPolicy(failure_threshold=3, cooldown=1.0)
    BreakerPolicy(failure_threshold=3, cooldown=1.0, cooldown_multiplier=2.0, max_cooldown=60.0, auth_cooldown=300.0, enabled=True)
    """

    failure_threshold: int = 5
    cooldown: float = 5.0
    cooldown_multiplier: float = 2.0
    max_cooldown: float = 60.0
    auth_cooldown: float = 300.0
    enabled: bool = True

    def __post_init__(self) -> None:
        check_int("failure_threshold", self.failure_threshold, 1)
        for name in ("cooldown", "max_cooldown", "auth_cooldown"):
            check_number(name, getattr(self, name), 0, kind="a number of seconds")
        check_number("cooldown_multiplier", self.cooldown_multiplier, 1)
        if not isinstance(self.enabled, bool):
            raise ConfigurationError(f"enabled must be True or False; got {self.enabled!r}")

    @classmethod
    def from_value(cls, value: "BreakerPolicy | Dict | bool | None") -> "BreakerPolicy":
        """Accept a policy, a dict of its fields, True/None (defaults) or False (off)."""
        if isinstance(value, cls):
            return value
        if value is None or value is True:
            return cls()
        if value is False:
            return cls(enabled=False)
        if isinstance(value, dict):
            try:
                return cls(**value)
            except TypeError:
                valid = ", ".join(cls.__dataclass_fields__)
                raise ConfigurationError(f"Unknown breaker setting in {sorted(value)}; valid: {valid}") from None
        raise ConfigurationError(f"breaker must be a BreakerPolicy, a dict or a bool; got {type(value).__name__}")


class CircuitBreaker:
    """The breaker state of one provider. Thread-safe.

    Call ``reserve()`` before a call (None: skip this provider now), then exactly one of
    ``record_success(reservation)`` / ``record_failure(error, reservation)`` / ``release(reservation)``.
    """

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._trips = 0
        self._open_until = 0.0
        self._probe_in_flight = False
        forking.register(self)

    def _after_fork(self) -> None:
        # A probe running in a parent thread at the fork never reports in the child.
        self._lock = threading.Lock()
        self._probe_in_flight = False

    @property
    def state(self) -> str:
        """"closed", "open" or "half-open" (an open breaker whose cooldown is over)."""
        with self._lock:
            return self._current_state()

    def _current_state(self) -> str:
        if self._state == OPEN and self._clock() >= self._open_until:
            return HALF_OPEN
        return self._state

    def remaining(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        with self._lock:
            if self._current_state() != OPEN:
                return 0.0
            return max(0.0, self._open_until - self._clock())

    def is_available(self) -> bool:
        """Whether a call could be let through now (without reserving the probe)."""
        if self._state is CLOSED or not self.policy.enabled:  # one read: no lock needed
            return True
        with self._lock:
            state = self._current_state()
            return state == CLOSED or (state == HALF_OPEN and not self._probe_in_flight)

    def try_acquire(self, force: bool = False) -> bool:
        """Whether a call may go through now (see ``reserve``, which says what kind of
        reservation was taken)."""
        return self.reserve(force) is not None

    def reserve(self, force: bool = False) -> Optional[str]:
        """Reserve the right to call: ``"normal"`` when closed; ``"probe"`` for the single
        call let through a half-open breaker, or through an open one when ``force`` (every
        provider is open); None when the call must not go through.

        Pass the reservation back to ``release``/``record_success``/``record_failure``:
        only the probe's outcome frees the probe slot.
        """
        if self._state is CLOSED or not self.policy.enabled:  # one read: no lock needed
            return NORMAL
        with self._lock:
            state = self._current_state()
            if state == CLOSED:
                return NORMAL
            if state == HALF_OPEN and not self._probe_in_flight:
                self._state = HALF_OPEN
                self._probe_in_flight = True
                return PROBE
            if force:
                self._probe_in_flight = True
                return PROBE
            return None

    def release(self, reservation: Optional[str] = PROBE) -> None:
        """Give back a reservation whose call never ran (e.g. the deadline ran out first)."""
        with self._lock:
            self._end(reservation)

    def record_success(self, reservation: Optional[str] = PROBE) -> None:
        if reservation is NORMAL and self._state is CLOSED and not self._failures:
            # Nearly every call: nothing to reset. Without the lock this success is ordered
            # just before any failure recorded meanwhile, as if it had taken the lock first.
            return
        with self._lock:
            self._end(reservation)
            self._state = CLOSED
            self._failures = 0
            self._trips = 0

    def record_failure(self, error: BaseException, reservation: Optional[str] = PROBE) -> None:
        """Count a failure. A closed breaker opens at the threshold, a failed probe
        re-opens it for a longer cooldown; failures of calls that started before it
        opened do not re-open it again (many in flight at once would otherwise ratchet
        the cooldown to the cap), though a Retry-After or auth error may extend it."""
        policy = self.policy
        with self._lock:
            self._end(reservation)
            if not policy.enabled or isinstance(error, InvalidRequestError):
                return
            self._failures += 1
            if isinstance(error, (AuthenticationError, QuotaExceededError)):
                fixed: Optional[float] = policy.auth_cooldown
            elif isinstance(error, RateLimitError) and error.retry_after:
                fixed = error.retry_after
            else:
                fixed = None
            if self._state == CLOSED:
                trip = fixed is not None or self._failures >= policy.failure_threshold
            else:
                trip = reservation == PROBE
            if trip:
                backoff = capped_growth(policy.cooldown, policy.cooldown_multiplier, self._trips, policy.max_cooldown)
                self._state = OPEN
                self._trips += 1
                self._open_until = self._clock() + (backoff if fixed is None else fixed)
            elif fixed is not None:
                self._open_until = max(self._open_until, self._clock() + fixed)

    def _end(self, reservation: Optional[str]) -> None:
        if reservation == PROBE:
            self._probe_in_flight = False

    def snapshot(self) -> Dict[str, object]:
        """State for ``Router.stats()``: state, consecutive failures, seconds to recovery."""
        with self._lock:
            state = self._current_state()
            remaining = max(0.0, self._open_until - self._clock()) if state == OPEN else 0.0
            return {"state": state, "consecutive_failures": self._failures, "open_for_s": round(remaining, 3)}

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state!r})"


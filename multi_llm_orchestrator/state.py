"""Where a Router keeps the state that a fleet of processes may share.

The Router asks its ``State`` for each piece of state it needs, once, when it is built
or a provider is added; the pieces keep the same small interfaces whatever backs them:

==================  ==============================================  ======================
piece               interface                                       in memory (default)
==================  ==============================================  ======================
circuit breaker     ``reserve/release/record_success/record_failure``  ``CircuitBreaker``
round-robin         ``next() -> int``                                ``LocalSequence``
hedge budget        ``record_call() / try_spend()``                  ``HedgeBudget``
health results      ``get(name) / put(result)``                      none (the checker's cache)
rate limits         ``Limiter`` (``acquire/reconcile/release``)      ``MemoryLimiter``
budgets             ``BudgetLedger`` (``acquire/reconcile/release``)  ``MemoryBudgetLedger``
token cache         ``TokenCache.share(store)``                      none (per provider)
response cache      ``ResponseStore``                                ``MemoryResponseStore``
==================  ==============================================  ======================

``LocalState`` (the default) keeps everything in this process. ``RedisState`` (module
``redis_state``, the ``[redis]`` extra) shares it between processes and falls back to
the local pieces while Redis cannot be reached. The Router never knows which it has.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Union

from . import forking
from .breaker import BreakerPolicy, CircuitBreaker
from .errors import ConfigurationError
from .hedging import HedgeBudget

if TYPE_CHECKING:
    from .budgets import Budget, BudgetLedger
    from .cache import ResponseStore
    from .limits import Limiter, Limits
    from .health import HealthResult
    from .providers.base import BaseProvider

__all__ = ["State", "LocalState", "LocalSequence", "HealthStore", "make_state", "call_deadline", "time_to_deadline"]

_deadline = threading.local()


class call_deadline:
    """While the block runs on this thread, shared state knows the call's deadline
    (``time.monotonic()`` seconds, None: none) and keeps its round trips within it.

    A class, not a generator: every Router call enters one, and a ``@contextmanager``
    costs several times more."""

    __slots__ = ("deadline", "previous")

    def __init__(self, deadline: Optional[float]) -> None:
        self.deadline = deadline
        self.previous: Optional[float] = None

    def __enter__(self) -> None:
        self.previous = getattr(_deadline, "value", None)
        _deadline.value = self.deadline

    def __exit__(self, *exc_info: object) -> None:
        _deadline.value = self.previous


def time_to_deadline() -> Optional[float]:
    """Seconds left in the deadline of the call running on this thread (None: none)."""
    deadline = getattr(_deadline, "value", None)
    return None if deadline is None else deadline - time.monotonic()


class LocalSequence:
    """0, 1, 2, ... to any number of threads, each number handed out once."""

    def __init__(self) -> None:
        self._counter = itertools.count()
        self._lock = threading.Lock()
        forking.register(self)  # fresh lock in a forked child (forking.py)

    def next(self) -> int:
        with self._lock:
            return next(self._counter)


class HealthStore:
    """Health results shared between processes (None from ``State.health_store`` when
    there is nothing to share with)."""

    def get(self, name: str) -> "Optional[tuple[HealthResult, float]]":  # pragma: no cover - interface
        """The shared result for ``name`` and its age in seconds, or None."""
        raise NotImplementedError

    def put(self, result: "HealthResult", ttl: float) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def claim(self, name: str, seconds: float) -> bool:
        """True if this process should check ``name`` now (no other process is)."""
        return True


class State:
    """The factory of every piece of state a Router keeps; this base keeps it all in
    memory (``LocalState``). Subclasses override the pieces they share."""

    def breaker(self, provider: str, policy: BreakerPolicy) -> CircuitBreaker:
        """The circuit breaker of the provider called ``provider``."""
        return CircuitBreaker(policy)

    def sequence(self, name: str) -> Any:
        """A counter with ``next() -> int`` (the round-robin position)."""
        return LocalSequence()

    def hedge_budget(self, share: float, window: float, reserve: int) -> HedgeBudget:
        return HedgeBudget(share, window, reserve)

    def health_store(self) -> Optional[HealthStore]:
        return None

    def limiter(self, provider: str, limits: "Limits") -> "Limiter":
        """The rate limiter of the provider called ``provider`` (admission control)."""
        from .limits import MemoryLimiter

        return MemoryLimiter(limits)

    def ledger(self, scope: str, budget: "Budget") -> "BudgetLedger":
        """The spend of one budget; ``scope`` is a provider's name or ``"router"``."""
        from .budgets import MemoryBudgetLedger

        return MemoryBudgetLedger(budget)

    def attach(self, provider: "BaseProvider") -> None:
        """Called for every provider added to a Router (shares its token cache)."""

    def response_store(self, ttl: float, max_entries: int) -> "ResponseStore":
        from .cache import MemoryResponseStore

        return MemoryResponseStore(ttl, max_entries)

    def close(self) -> None:
        """Release connections (the Router's ``close()`` calls it)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LocalState(State):
    """Everything in this process: the default."""


def make_state(value: Union[State, Mapping[str, Any], None]) -> State:
    """A State from ``Router(state=...)``: a State, None (in memory) or a dict as in a
    configuration file: ``{"redis": "redis://host:6379/0", "prefix": "mlo:", ...}``
    (the other keys are ``RedisState``'s keyword arguments)."""
    if value is None:
        return LocalState()
    if isinstance(value, State):
        return value
    if isinstance(value, Mapping):
        settings: Dict[str, Any] = dict(value)
        url = settings.pop("redis", None)
        if not isinstance(url, str) or not url:
            raise ConfigurationError(
                'state must name its backend: {"redis": "redis://host:6379/0"} (omit "state" for in-memory state)'
            )
        from .redis_state import RedisState

        try:
            return RedisState(url, **settings)
        except TypeError:
            raise ConfigurationError(
                f"Unknown state setting in {sorted(settings)}; valid: prefix, timeout, retry_interval, "
                "probe_lease, token_secret"
            ) from None
    raise ConfigurationError(f"state must be a RedisState, a dict or None; got {type(value).__name__}")

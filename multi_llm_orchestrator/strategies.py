"""Routing strategies: small objects that put the providers in the order to try them.

Every strategy answers one question, ``order(states, health)``: the first provider is
the one selected, the rest are the fallback order. Most pick one provider and then go
round the list from it ("circular order"); "best-available" ranks them all.

=====================  ====================================================================
``round-robin``        each call starts at the next provider; exact equal shares
``random``             a uniformly random start
``first-available``    the first provider whose (cached) health check passed
``best-available``     healthy before degraded before unhealthy, then lowest latency (EWMA)
``weighted``           a random start weighted by ``ProviderConfig.weight``
``least-busy``         the provider with the fewest calls in flight
``cheapest``           lowest expected price for this call, ties by latency; fallback by price
=====================  ====================================================================

A custom strategy subclasses ``Strategy`` and is passed as ``Router(strategy=MyStrategy())``.
"""

from __future__ import annotations

import random
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Dict, List, Optional, Sequence, Type, Union

from .errors import ConfigurationError
from .state import LocalSequence

if TYPE_CHECKING:
    from .admission import ProviderAdmission
    from .breaker import CircuitBreaker
    from .health import HealthChecker
    from .metrics import ProviderMetrics
    from .providers.base import BaseProvider
    from .state import State

__all__ = [
    "ProviderState",
    "Strategy",
    "RoundRobinStrategy",
    "RandomStrategy",
    "FirstAvailableStrategy",
    "BestAvailableStrategy",
    "WeightedStrategy",
    "LeastBusyStrategy",
    "CheapestStrategy",
    "STRATEGIES",
    "make_strategy",
]


@dataclass(eq=False)
class ProviderState:
    """What the Router keeps for one provider: the provider, its breaker and metrics."""

    provider: "BaseProvider"
    breaker: "CircuitBreaker"
    metrics: "ProviderMetrics"
    admission: Optional["ProviderAdmission"] = None  # limits, budgets, prices (if configured)

    @property
    def name(self) -> str:
        return self.provider.name


def rotate(states: Sequence[ProviderState], start: int) -> List[ProviderState]:
    """The list in circular order beginning at ``start``."""
    return [*states[start:], *states[:start]]


class Strategy(ABC):
    """Orders providers for one call. Implementations must be thread-safe."""

    name: ClassVar[str] = ""

    @abstractmethod
    def order(self, states: Sequence[ProviderState], health: "HealthChecker") -> List[ProviderState]:
        """The providers in the order to try them (first = selected). ``states`` is non-empty."""

    def use_state(self, state: "State") -> None:
        """Take shared pieces (e.g. the round-robin position) from the Router's ``State``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RoundRobinStrategy(Strategy):
    """Call k starts at provider k mod n: exact equal shares, even under many threads
    (and across processes sharing a ``RedisState``)."""

    name = "round-robin"

    def __init__(self) -> None:
        self._position = LocalSequence()

    def use_state(self, state: "State") -> None:
        self._position = state.sequence(self.name)

    def order(self, states: Sequence[ProviderState], health: "HealthChecker") -> List[ProviderState]:
        return rotate(states, self._position.next() % len(states))


class RandomStrategy(Strategy):
    """A uniformly random provider first, then circular order."""

    name = "random"

    def __init__(self, seed: Optional[int] = None) -> None:
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def order(self, states: Sequence[ProviderState], health: "HealthChecker") -> List[ProviderState]:
        with self._lock:
            start = self._random.randrange(len(states))
        return rotate(states, start)


class FirstAvailableStrategy(Strategy):
    """The first provider, in the order they were added, whose health check passed.

    Health comes from the checker's cache (TTL set by ``Router(health_ttl=...)``), so a
    call does not probe every provider. A call with a timeout waits for missing checks
    at most a quarter of its time left; a provider not yet checked then counts as not
    healthy. When none is healthy, registration order.
    """

    name = "first-available"

    def order(self, states: Sequence[ProviderState], health: "HealthChecker") -> List[ProviderState]:
        healthy = health.status([state.provider for state in states])
        for index, state in enumerate(states):
            if healthy.get(state.name):
                return rotate(states, index)
        return list(states)


class BestAvailableStrategy(Strategy):
    """Healthy before degraded before unhealthy, then lowest EWMA latency.

    A provider is unhealthy when its last health check failed or at least half of its
    recent attempts failed, degraded when ``degraded_error_rate`` of them did. A provider
    with no latency yet sorts first among its tier, so new providers get tried.
    """

    name = "best-available"

    def __init__(self, degraded_error_rate: float = 0.05, unhealthy_error_rate: float = 0.5) -> None:
        self.degraded_error_rate = degraded_error_rate
        self.unhealthy_error_rate = unhealthy_error_rate

    def order(self, states: Sequence[ProviderState], health: "HealthChecker") -> List[ProviderState]:
        def rank(indexed: "tuple[int, ProviderState]") -> "tuple[int, float, int]":
            index, state = indexed
            checked = health.cached(state.name)
            error_rate = state.metrics.error_rate()
            if (checked is not None and not checked.healthy) or error_rate >= self.unhealthy_error_rate:
                tier = 2
            elif error_rate >= self.degraded_error_rate:
                tier = 1
            else:
                tier = 0
            return tier, state.metrics.ewma_latency_s or 0.0, index

        return [state for _, state in sorted(enumerate(states), key=rank)]


class WeightedStrategy(Strategy):
    """A random provider first, chosen in proportion to ``ProviderConfig.weight``.

    Weight 0 is never chosen first (but is still a fallback); all zero means uniform.
    """

    name = "weighted"

    def __init__(self, seed: Optional[int] = None) -> None:
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def order(self, states: Sequence[ProviderState], health: "HealthChecker") -> List[ProviderState]:
        weights = [state.provider.config.weight for state in states]
        with self._lock:
            if sum(weights) <= 0:
                start = self._random.randrange(len(states))
            else:
                start = self._random.choices(range(len(states)), weights=weights)[0]
        return rotate(states, start)


class LeastBusyStrategy(Strategy):
    """The provider with the fewest calls in flight; ties go round-robin."""

    name = "least-busy"

    def __init__(self) -> None:
        self._tiebreak = RoundRobinStrategy()

    def use_state(self, state: "State") -> None:
        self._tiebreak.use_state(state)

    def order(self, states: Sequence[ProviderState], health: "HealthChecker") -> List[ProviderState]:
        rotated = self._tiebreak.order(states, health)
        return sorted(rotated, key=lambda state: state.metrics.in_flight)


class CheapestStrategy(Strategy):
    """The lowest expected price for this call first, then the next cheapest, and so on.

    The expected price is the call's estimated tokens (prompt estimate plus ``max_tokens``,
    or the provider's average answer) times the provider's ``ProviderConfig.prices``. Equal
    prices go to the lower EWMA latency; providers without prices come last.
    """

    name = "cheapest"

    def order(self, states: Sequence[ProviderState], health: "HealthChecker") -> List[ProviderState]:
        expected_cost = getattr(health, "expected_cost", None) or (lambda state: None)

        def rank(indexed: "tuple[int, ProviderState]") -> "tuple[bool, float, float, int]":
            index, state = indexed
            cost = expected_cost(state)
            # Rounded so float noise does not break a tie that latency should decide.
            return cost is None, round(cost or 0.0, 9), state.metrics.ewma_latency_s or 0.0, index

        return [state for _, state in sorted(enumerate(states), key=rank)]


STRATEGIES: Dict[str, Type[Strategy]] = {
    cls.name: cls
    for cls in (
        RoundRobinStrategy,
        RandomStrategy,
        FirstAvailableStrategy,
        BestAvailableStrategy,
        WeightedStrategy,
        LeastBusyStrategy,
        CheapestStrategy,
    )
}


def make_strategy(strategy: Union[str, Strategy]) -> Strategy:
    """A Strategy from its name (or the object itself); ConfigurationError listing valid names."""
    if isinstance(strategy, Strategy):
        return strategy
    cls = STRATEGIES.get(strategy) if isinstance(strategy, str) else None
    if cls is None:
        raise ConfigurationError(
            f"Unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)} (or a Strategy instance)"
        )
    return cls()

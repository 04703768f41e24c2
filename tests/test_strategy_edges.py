"""Strategy rules users rely on beyond the end-to-end strategy tests (issue 18): the
tiers of best-available, weights of zero, rotation, names and reprs. Strategies are
driven directly with provider states and a stand-in health cache, so the order itself is
asserted, not a sample of it."""

from collections import Counter

import pytest

from multi_llm_orchestrator import ConfigurationError, Router
from multi_llm_orchestrator.breaker import BreakerPolicy, CircuitBreaker
from multi_llm_orchestrator.errors import ProviderUnavailableError
from multi_llm_orchestrator.health import HealthResult
from multi_llm_orchestrator.metrics import ProviderMetrics
from multi_llm_orchestrator.strategies import (
    STRATEGIES,
    BestAvailableStrategy,
    FirstAvailableStrategy,
    LeastBusyStrategy,
    ProviderState,
    RandomStrategy,
    RoundRobinStrategy,
    Strategy,
    WeightedStrategy,
    make_strategy,
    rotate,
)

from fakes.mocks import mock, router_with


class Health:
    """What a strategy reads of the health checker: ``cached`` and ``status``."""

    def __init__(self, **healthy):
        self.healthy = healthy

    def cached(self, name):
        if name not in self.healthy:
            return None
        return HealthResult(name, self.healthy[name], 0.001, None)

    def status(self, providers, wait=None):
        return {p.name: self.healthy.get(p.name, False) for p in providers}


def state(name, outcomes=(), latency=None, weight=1.0):
    """A provider state whose metrics saw ``outcomes`` (True = success) and an EWMA latency."""
    metrics = ProviderMetrics()
    for ok in outcomes:
        metrics.started()
        if ok:
            metrics.succeeded(latency if latency is not None else 0.01, None)
        else:
            metrics.failed(ProviderUnavailableError("down"))
    if latency is not None:
        metrics.ewma_latency_s = latency
    return ProviderState(mock(name, weight=weight), CircuitBreaker(BreakerPolicy()), metrics)


def names(states):
    return [s.name for s in states]


def test_best_available_puts_healthy_before_degraded_before_unhealthy():
    ok = state("ok", [True] * 20, latency=0.5)
    degraded = state("degraded", [True] * 19 + [False], latency=0.01)  # 5 % errors
    unhealthy = state("unhealthy", [True, False], latency=0.001)  # 50 % errors
    failed_check = state("failed-check", [True] * 20, latency=0.001)
    order = BestAvailableStrategy().order(
        [unhealthy, failed_check, degraded, ok], Health(**{"failed-check": False, "ok": True})
    )
    assert names(order) == ["ok", "degraded", "unhealthy", "failed-check"]


def test_best_available_thresholds_are_inclusive_and_configurable():
    just_under = state("just-under", [True] * 21 + [False], latency=0.02)  # 4.5 %
    at_degraded = state("at-degraded", [True] * 19 + [False], latency=0.01)
    strategy = BestAvailableStrategy()
    assert (strategy.degraded_error_rate, strategy.unhealthy_error_rate) == (0.05, 0.5)
    assert names(strategy.order([at_degraded, just_under], Health())) == ["just-under", "at-degraded"]
    lenient = BestAvailableStrategy(degraded_error_rate=0.1, unhealthy_error_rate=0.9)
    assert names(lenient.order([just_under, at_degraded], Health())) == ["at-degraded", "just-under"]


def test_best_available_ranks_by_latency_within_a_tier_and_tries_new_providers_first():
    slow, fast, new = state("slow", [True], 0.3), state("fast", [True], 0.1), state("new")
    assert names(BestAvailableStrategy().order([slow, fast, new], Health())) == ["new", "fast", "slow"]
    twin_a, twin_b = state("a", [True], 0.1), state("b", [True], 0.1)
    assert names(BestAvailableStrategy().order([twin_b, twin_a], Health())) == ["b", "a"]  # ties keep their order


def test_a_passed_health_check_does_not_outrank_an_error_rate():
    flaky = state("flaky", [False, False, True], latency=0.001)
    steady = state("steady", [True], latency=0.2)
    order = BestAvailableStrategy().order([flaky, steady], Health(flaky=True, steady=True))
    assert names(order) == ["steady", "flaky"]


def test_weighted_with_every_weight_zero_is_uniform():
    states = [state(f"p{i}", weight=0) for i in range(4)]
    strategy = WeightedStrategy(seed=7)
    counts = Counter(strategy.order(states, Health())[0].name for _ in range(2000))
    assert set(counts) == {"p0", "p1", "p2", "p3"}
    assert all(400 <= n <= 600 for n in counts.values()), counts


def test_weighted_never_starts_at_a_zero_weight_but_keeps_it_as_a_fallback():
    states = [state("zero", weight=0), state("one", weight=1)]
    for _ in range(50):
        assert names(WeightedStrategy().order(states, Health())) == ["one", "zero"]


def test_seeded_random_strategies_repeat_their_choices():
    states = [state(f"p{i}") for i in range(5)]
    for cls in (RandomStrategy, WeightedStrategy):
        one, two = cls(seed=3), cls(seed=3)
        first = [names(one.order(states, Health())) for _ in range(20)]
        assert first == [names(two.order(states, Health())) for _ in range(20)]
        assert len({tuple(order) for order in first}) > 1


def test_round_robin_rotates_and_keeps_the_circular_order():
    states = [state("a"), state("b"), state("c")]
    strategy = RoundRobinStrategy()
    orders = [names(strategy.order(states, Health())) for _ in range(4)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert names(rotate(states, 2)) == ["c", "a", "b"]


def test_first_available_starts_at_the_first_healthy_provider_else_keeps_the_order():
    states = [state("a"), state("b"), state("c")]
    strategy = FirstAvailableStrategy()
    assert names(strategy.order(states, Health(a=False, b=True, c=True))) == ["b", "c", "a"]
    assert names(strategy.order(states, Health())) == ["a", "b", "c"]


def test_least_busy_sorts_by_calls_in_flight():
    idle, busy, busier = state("idle"), state("busy"), state("busier")
    busy.metrics.started()
    busier.metrics.started()
    busier.metrics.started()
    assert names(LeastBusyStrategy().order([busier, busy, idle], Health())) == ["idle", "busy", "busier"]


def test_strategies_are_known_by_name_and_bad_names_list_the_valid_ones():
    for name in ("round-robin", "random", "first-available", "best-available", "weighted", "least-busy"):
        assert STRATEGIES[name].name == name and type(make_strategy(name)) is STRATEGIES[name]
    assert type(make_strategy("least-busy")) is LeastBusyStrategy
    custom = RoundRobinStrategy()
    assert make_strategy(custom) is custom
    with pytest.raises(ConfigurationError, match="Unknown strategy 'fastest'; valid: round-robin, random"):
        make_strategy("fastest")
    with pytest.raises(ConfigurationError, match="Unknown strategy 3"):
        make_strategy(3)


class Reverse(Strategy):
    """A custom strategy without a name."""

    def order(self, states, health):
        return list(reversed(states))


def test_repr_of_a_router_names_its_strategy_or_shows_a_custom_one():
    router = router_with(mock("a"), mock("b"), strategy=Reverse())
    assert repr(router) == "Router(strategy=Reverse(), providers=[a, b])"
    assert router.complete("hi").provider == "b"
    assert repr(Router(strategy="weighted")) == "Router(strategy='weighted', providers=[])"
    assert repr(BestAvailableStrategy()) == "BestAvailableStrategy()"


class Priced(Health):
    """A health view that also knows each provider's expected cost for the call."""

    def __init__(self, costs):
        super().__init__()
        self.costs = costs

    def expected_cost(self, state):
        return self.costs.get(state.name)


def test_cheapest_orders_by_cost_with_free_first_and_unpriced_last():
    from multi_llm_orchestrator.strategies import CheapestStrategy

    states = [state("unpriced"), state("dear", latency=0.01), state("free", latency=0.9), state("cheap")]
    order = CheapestStrategy().order(states, Priced({"dear": 0.5, "free": 0.0, "cheap": 0.2}))
    assert names(order) == ["free", "cheap", "dear", "unpriced"]


def test_cheapest_breaks_float_noise_ties_by_latency_and_tries_new_providers_first():
    from multi_llm_orchestrator.strategies import CheapestStrategy

    fast, slow, new = state("fast", [True], 0.01), state("slow", [True], 0.5), state("new")
    costs = {"fast": 0.1 + 3e-10, "slow": 0.1, "new": 0.1}  # equal to the ninth decimal
    assert names(CheapestStrategy().order([slow, fast, new], Priced(costs))) == ["new", "fast", "slow"]


def test_least_busy_takes_its_round_robin_tiebreak_from_the_shared_state():
    from multi_llm_orchestrator.state import LocalSequence, LocalState

    class SharedState(LocalState):
        """One position for every strategy using it (as Redis shares it between processes)."""

        def __init__(self):
            super().__init__()
            self.position = LocalSequence()

        def sequence(self, name):
            return self.position

    shared = SharedState()
    one, two = LeastBusyStrategy(), LeastBusyStrategy()
    one.use_state(shared)
    two.use_state(shared)
    states = [state("a"), state("b")]
    firsts = [strategy.order(states, Health())[0].name for strategy in (one, two, one, two)]
    assert firsts == ["a", "b", "a", "b"]

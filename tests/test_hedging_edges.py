"""Hedging rules users rely on beyond the end-to-end hedge tests (issue 18): policy
defaults and validation, the budget's rolling window on a fake clock, and ``race``
driven by hand-made futures (no provider, no sleep)."""

import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout

import pytest

from multi_llm_orchestrator import ConfigurationError, ProviderTimeoutError, ProviderUnavailableError
from multi_llm_orchestrator.errors import ProviderError
from multi_llm_orchestrator.hedging import HedgeBudget, HedgePolicy, RaceFailed, race
from multi_llm_orchestrator.metrics import ProviderMetrics


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def metrics_with(latencies):
    metrics = ProviderMetrics()
    for latency in latencies:
        metrics.started()
        metrics.succeeded(latency, None)
    return metrics


# HedgePolicy --------------------------------------------------------------------------


def test_policy_defaults_are_the_documented_ones():
    policy = HedgePolicy(after="p95")
    assert (policy.max_hedges, policy.budget, policy.min_delay, policy.default_delay) == (1, 0.1, 0.005, 0.25)
    assert (policy.min_samples, policy.window, policy.budget_reserve) == (20, 10.0, 3)


def test_an_adaptive_delay_waits_for_min_samples_then_floors_at_min_delay():
    policy = HedgePolicy(after="p50")
    assert policy.delay(metrics_with([0.1] * 19)) == 0.25  # default_delay until 20 samples
    assert policy.delay(metrics_with([0.1] * 20)) == pytest.approx(0.1)
    assert policy.delay(metrics_with([0.001] * 20)) == 0.005  # min_delay


def test_a_fixed_delay_is_returned_as_seconds_whatever_the_metrics():
    delay = HedgePolicy(after=2).delay(metrics_with([0.001] * 50))
    assert delay == 2.0 and isinstance(delay, float)


def test_a_fractional_percentile_is_accepted():
    assert HedgePolicy(after="p99.9").delay(metrics_with([0.1] * 20)) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "settings, name",
    [
        ({"min_samples": 0}, "min_samples"),
        ({"max_hedges": 0}, "max_hedges"),
        ({"budget": -0.1}, "hedge_budget"),
        ({"budget": 1.5}, "hedge_budget"),
        ({"min_delay": 0}, "min_delay"),
        ({"default_delay": 0}, "default_delay"),
        ({"window": 0}, "window"),
        ({"budget_reserve": -1}, "budget_reserve"),
    ],
)
def test_bad_policy_values_are_rejected_by_name(settings, name):
    with pytest.raises(ConfigurationError, match=name):
        HedgePolicy(after=0.1, **settings)


@pytest.mark.parametrize("after", ["p0", "p100", "p", "95", "p95 ", "p123", 0, -0.5, float("nan"), None, True])
def test_bad_hedge_after_is_rejected(after):
    with pytest.raises(ConfigurationError, match="hedge_after must be seconds > 0 or a percentile like 'p95'"):
        HedgePolicy(after=after)


def test_boundary_policy_values_are_accepted():
    policy = HedgePolicy(after="p1", max_hedges=1, budget=0, min_samples=1, budget_reserve=0)
    assert policy.delay(metrics_with([0.2])) == pytest.approx(0.2)
    assert HedgePolicy(after="p99", budget=1).budget == 1


# HedgeBudget ---------------------------------------------------------------------------


def test_the_budget_allows_its_share_of_calls_exactly():
    budget = HedgeBudget(0.5, window=10, reserve=0, clock=FakeClock())
    assert not budget.try_spend()  # no calls yet, no reserve
    for _ in range(4):
        budget.record_call()
    assert budget.try_spend() and budget.try_spend()  # 2 hedges = 0.5 x 4 calls
    assert not budget.try_spend()


def test_the_reserve_allows_hedges_without_traffic():
    budget = HedgeBudget(0.1, window=10, reserve=2, clock=FakeClock())
    assert budget.try_spend() and budget.try_spend()
    assert not budget.try_spend()


def test_the_default_budget_has_no_reserve_and_a_ten_second_window():
    clock = FakeClock()
    budget = HedgeBudget(1.0, clock=clock)
    assert not budget.try_spend()
    budget.record_call()
    clock.now += 9
    assert budget.try_spend()  # the call 9 s ago still counts
    budget.record_call()
    clock.now += 1  # the first call is now 10 s old: out of the window
    budget.record_call()
    assert budget.try_spend()  # 2 calls in the window, 1 hedge spent
    assert not budget.try_spend()


def test_calls_exactly_one_window_old_no_longer_count():
    clock = FakeClock()
    budget = HedgeBudget(1.0, window=10, clock=clock)
    budget.record_call()
    budget.record_call()
    clock.now += 10  # same bucket index, stale stamp
    assert not budget.try_spend()


def test_a_bucket_reused_after_the_window_starts_from_zero():
    clock = FakeClock()
    budget = HedgeBudget(0.5, window=4, clock=clock)
    for _ in range(10):
        budget.record_call()  # 10 calls in the bucket of second 1000
    clock.now += 4  # second 1004 maps onto the same bucket
    budget.record_call()
    budget.record_call()
    assert budget.try_spend()  # 0.5 x 2 fresh calls: one hedge, not five
    assert not budget.try_spend()
    clock.now += 1
    assert not budget.try_spend()  # the spent hedge still counts in the window


def test_hedges_spent_earlier_in_the_window_count_against_it():
    clock = FakeClock()
    budget = HedgeBudget(0.5, window=10, clock=clock)
    for _ in range(2):
        budget.record_call()
    assert budget.try_spend()
    clock.now += 5
    budget.record_call()
    assert not budget.try_spend()  # 3 calls x 0.5 = 1.5 allow one hedge, already spent
    budget.record_call()
    assert budget.try_spend()  # 4 calls x 0.5 = 2


def test_a_window_under_a_second_still_has_one_bucket():
    clock = FakeClock()
    budget = HedgeBudget(1.0, window=0.5, clock=clock)
    budget.record_call()
    budget.record_call()
    assert budget.try_spend()
    clock.now += 1  # the window holds this second only
    budget.record_call()
    assert budget.try_spend()
    assert not budget.try_spend()


def test_a_fresh_budget_counts_nothing_even_on_a_clock_starting_at_zero():
    clock = FakeClock()
    clock.now = 0.0  # time.monotonic() just after boot
    assert not HedgeBudget(1.0, window=10, clock=clock).try_spend()  # no calls yet: no hedge
    budget = HedgeBudget(0.5, window=10, clock=clock)
    budget.record_call()
    budget.record_call()
    assert budget.try_spend()  # one hedge for two calls, no phantom hedges either


def test_a_policy_window_under_a_second_is_accepted_and_the_cap_is_an_hour():
    assert HedgePolicy(after=0.1, window=0.5).window == 0.5
    assert HedgePolicy(after=0.1, window=3600).window == 3600
    with pytest.raises(ConfigurationError, match="window"):
        HedgePolicy(after=0.1, window=3600.5)


def test_a_percentile_delay_reads_that_percentile_of_many_samples():
    latencies = [i / 1000 for i in range(1, 201)]  # 1 .. 200 ms
    assert HedgePolicy(after="p99").delay(metrics_with(latencies)) == pytest.approx(0.198)
    assert HedgePolicy(after="p50").delay(metrics_with(latencies)) == pytest.approx(0.100)


# race ------------------------------------------------------------------------------------


class Launcher:
    """``launch`` for race(): futures made by hand; ``script[name]`` decides each outcome."""

    def __init__(self, script):
        self.script = script
        self.launched = []
        self.futures = {}

    def __call__(self, name, hedge):
        action = self.script.get(name, "hang")
        if action == "skip":
            return None
        self.launched.append((name, hedge))
        future = Future()
        if action == "ok":
            future.set_result(f"answer from {name}")
        elif action == "fail":
            future.set_exception(ProviderUnavailableError("down", provider=name))
        elif action == "cancel":  # what the executor does with a queued attempt cancelled by close()
            future.cancel()
            future.set_running_or_notify_cancel()
        elif callable(action):
            action(self, future)
        self.futures[name] = future
        return future


def test_race_falls_back_at_once_and_returns_the_first_success():
    launch, lost = Launcher({"a": "fail", "b": "skip", "c": "ok"}), []
    started = time.monotonic()
    winner = race(["a", "b", "c"], launch, deadline=None, hedge_delay=lambda s: 30, max_hedges=1, on_lost=lost.append)
    assert winner.result() == "answer from c"
    assert launch.launched == [("a", False), ("c", False)]
    assert lost == []
    assert time.monotonic() - started < 5


def test_race_raises_every_error_in_order_when_all_fail():
    launch = Launcher({"a": "fail", "b": "cancel", "c": "fail"})
    with pytest.raises(RaceFailed) as caught:
        race(["a", "b", "c"], launch, deadline=None, on_lost=lambda f: None)
    failure = caught.value
    assert not failure.deadline_hit
    assert [e.provider for e in failure.errors] == ["a", "b", "c"]
    assert "cancelled before it started" in str(failure.errors[1])
    assert str(failure) == "3 attempt(s) failed"


def test_race_with_nothing_launchable_fails_without_errors():
    with pytest.raises(RaceFailed) as caught:
        race(["a"], Launcher({"a": "skip"}), deadline=None, on_lost=lambda f: None)
    assert caught.value.errors == [] and not caught.value.deadline_hit


def test_race_at_the_deadline_reports_a_timeout_for_each_running_attempt_and_abandons_it():
    launch, lost = Launcher({}), []
    started = time.monotonic()
    with pytest.raises(RaceFailed) as caught:
        race(["a", "b"], launch, deadline=started + 0.05, on_lost=lost.append, name_of=str.upper)
    assert caught.value.deadline_hit
    assert launch.launched == [("a", False)]  # no hedging asked: b never started
    [error] = caught.value.errors
    assert isinstance(error, ProviderTimeoutError) and error.provider == "A"
    assert lost == [launch.futures["a"]]
    assert 0.05 <= time.monotonic() - started < 5


def test_a_hedge_starts_after_the_delay_and_the_winner_leaves_the_other_lost():
    def answer_when_hedged(launcher, future):
        launcher.script["a-future"] = future

    def hedge_answers(launcher, future):
        future.set_result("hedge answer")

    launch, lost = Launcher({"a": answer_when_hedged, "b": hedge_answers}), []
    delays = []

    def delay(candidate):
        delays.append(candidate)
        return 0.01

    winner = race(["a", "b"], launch, deadline=None, hedge_delay=delay, max_hedges=1, on_lost=lost.append)
    assert winner.result() == "hedge answer"
    assert launch.launched == [("a", False), ("b", True)]
    assert delays == ["a"]  # the delay is the selected provider's; no hedge after the last candidate
    assert lost == [launch.futures["a"]]


def test_max_hedges_and_the_budget_bound_the_hedges_started():
    launch = Launcher({})
    with pytest.raises(RaceFailed):
        race(["a", "b", "c"], launch, deadline=time.monotonic() + 0.15, hedge_delay=lambda s: 0.01,
             max_hedges=1, on_lost=lambda f: None)
    assert launch.launched == [("a", False), ("b", True)]

    launch = Launcher({})
    budget = HedgeBudget(0.0, reserve=1, clock=FakeClock())
    with pytest.raises(RaceFailed) as caught:
        race(["a", "b", "c"], launch, deadline=time.monotonic() + 0.15, hedge_delay=lambda s: 0.01,
             max_hedges=5, budget=budget, on_lost=lambda f: None)
    assert launch.launched == [("a", False), ("b", True)]  # the budget had one hedge
    assert len(caught.value.errors) == 2


def test_a_failure_while_a_hedge_runs_waits_for_the_hedge():
    # a hangs, b (the hedge) hangs, then a fails: b is still in flight, so c is not started.
    def fail_a_when_b_starts(launcher, future):
        launcher.futures["a"].set_exception(ProviderUnavailableError("down", provider="a"))

    launch = Launcher({"b": fail_a_when_b_starts})
    with pytest.raises(RaceFailed) as caught:
        race(["a", "b", "c"], launch, deadline=time.monotonic() + 0.15, hedge_delay=lambda s: 0.01,
             max_hedges=1, on_lost=lambda f: None)
    assert launch.launched == [("a", False), ("b", True)]
    assert [type(e) for e in caught.value.errors] == [ProviderUnavailableError, ProviderTimeoutError]


def test_an_attempt_that_failed_by_the_deadline_is_an_error_not_a_lost_attempt():
    launch, lost = Launcher({}), []

    def fail_a_then_hang(launcher, future):
        launcher.futures["a"].set_exception(ProviderUnavailableError("down", provider="a"))

    launch.script["b"] = fail_a_then_hang
    with pytest.raises(RaceFailed) as caught:
        race(["a", "b"], launch, deadline=time.monotonic() + 0.1, hedge_delay=lambda s: 0.01, max_hedges=1,
             on_lost=lost.append)
    assert [e.provider for e in caught.value.errors] == ["a", "b"]
    assert lost == [launch.futures["b"]]


class FinishingAsTheDeadlinePasses(Future):
    """A future that fails just as the race gives up: the race's wait saw it running
    (``wait`` on several futures, or its own ``exception(timeout)`` timing out when it
    is the only one), the bookkeeping afterwards sees it failed (the window a real
    attempt can finish in)."""

    def __init__(self, error):
        super().__init__()
        self.error = error
        self.waited = False

    def done(self):
        return True

    def exception(self, timeout=None):
        if timeout is not None and not self.waited:  # the race's own wait: still running
            self.waited = True
            time.sleep(timeout)  # as a real wait with this timeout would
            raise FuturesTimeout()
        return self.error


def test_an_attempt_failing_as_the_deadline_passes_is_an_error_not_a_lost_attempt():
    error = ProviderUnavailableError("down", provider="a")
    lost = []
    with pytest.raises(RaceFailed) as caught:
        race(["a"], lambda name, hedge: FinishingAsTheDeadlinePasses(error), deadline=time.monotonic() + 0.05,
             on_lost=lost.append)
    assert caught.value.errors == [error] and caught.value.deadline_hit
    assert lost == []


def test_a_wait_returning_early_does_not_upset_the_race(monkeypatch):
    from multi_llm_orchestrator import hedging

    real_wait, early = hedging.wait, []

    def wait(futures, timeout=None, return_when=None):
        if not early:  # a wake-up before its timeout, with nothing done
            early.append(timeout)
            return set(), set(futures)
        return real_wait(futures, timeout=timeout, return_when=return_when)

    monkeypatch.setattr(hedging, "wait", wait)
    launch = Launcher({})
    with pytest.raises(RaceFailed) as caught:  # a and its hedge b in flight: wait() on both
        race(["a", "b"], launch, deadline=time.monotonic() + 0.05, on_lost=lambda f: None,
             hedge_delay=lambda name: 0.0, max_hedges=1)
    assert caught.value.deadline_hit and early
    assert launch.launched == [("a", False), ("b", True)]


class WakingEarly(Future):
    """A future whose first timed wait returns before its timeout, nothing done."""

    def __init__(self):
        super().__init__()
        self.early = []

    def exception(self, timeout=None):
        if timeout is not None and not self.early:
            self.early.append(timeout)
            raise FuturesTimeout()
        return super().exception(timeout)


def test_an_early_wake_of_the_single_attempt_wait_does_not_upset_the_race():
    futures = []

    def launch(name, hedge):
        futures.append(WakingEarly())
        return futures[-1]

    with pytest.raises(RaceFailed) as caught:
        race(["a", "b"], launch, deadline=time.monotonic() + 0.05, on_lost=lambda f: None)
    assert caught.value.deadline_hit and futures[0].early
    assert len(futures) == 1  # still waiting for a: no fallback to b on an early wake


def test_an_exception_from_launch_abandons_the_running_attempts():
    lost = []

    def explode(launcher, future):
        raise KeyboardInterrupt

    launch = Launcher({"b": explode})
    with pytest.raises(KeyboardInterrupt):
        race(["a", "b"], launch, deadline=None, hedge_delay=lambda s: 0.01, max_hedges=1, on_lost=lost.append)
    assert lost == [launch.futures["a"]]


def test_a_race_failure_lists_errors_and_whether_time_ran_out():
    errors = [ProviderError("x", provider="p")]
    failure = RaceFailed(errors, deadline_hit=True)
    assert failure.errors is errors and failure.deadline_hit


def test_a_hedge_refused_by_the_budget_is_not_asked_for_again_in_the_same_call():
    class CountingBudget(HedgeBudget):
        asked = 0

        def try_spend(self):
            CountingBudget.asked += 1
            return super().try_spend()

    budget = CountingBudget(0.0, reserve=0, clock=FakeClock())
    launch = Launcher({})
    with pytest.raises(RaceFailed):
        race(["a", "b"], launch, deadline=time.monotonic() + 0.1, hedge_delay=lambda s: 0.001, max_hedges=1,
             budget=budget, on_lost=lambda f: None)
    assert launch.launched == [("a", False)]
    assert CountingBudget.asked == 1  # no busy loop asking again until the deadline


def test_try_spend_answers_true_or_false():
    budget = HedgeBudget(0.0, reserve=1, clock=FakeClock())
    assert budget.try_spend() is True
    assert budget.try_spend() is False


def test_race_without_max_hedges_never_hedges_even_with_a_delay():
    launch = Launcher({"a": lambda launcher, future: None, "b": "ok"})  # a hangs until the deadline
    started = time.monotonic()
    with pytest.raises(RaceFailed) as caught:
        race(["a", "b"], launch, deadline=started + 0.2, hedge_delay=lambda s: 0.01, on_lost=lambda f: None)
    assert caught.value.deadline_hit
    assert launch.launched == [("a", False)]  # max_hedges defaults to 0: b never raced


def test_a_hedge_with_nothing_to_launch_is_not_asked_of_the_budget_again():
    class CountingBudget:
        def __init__(self):
            self.asked = 0

        def try_spend(self):
            self.asked += 1
            return True

    budget = CountingBudget()
    launch = Launcher({"a": lambda launcher, future: None, "b": "skip"})  # b's circuit is open
    with pytest.raises(RaceFailed) as caught:
        race(["a", "b"], launch, deadline=time.monotonic() + 0.2, hedge_delay=lambda s: 0.01, max_hedges=3,
             budget=budget, on_lost=lambda f: None)
    assert caught.value.deadline_hit
    assert budget.asked == 1  # one hedge was due; none could start, so none is due again
    assert launch.launched == [("a", False)]


def test_a_race_started_from_a_running_attempt_hedges_at_once():
    launch, lost = Launcher({"b": "ok"}), []
    running = Future()
    running.set_running_or_notify_cancel()
    started = time.monotonic()
    winner = race(["b"], launch, deadline=None, hedge_delay=lambda s: 30, max_hedges=1, on_lost=lost.append,
                  running=("a", running))
    assert winner.result() == "answer from b"
    assert launch.launched == [("b", True)]  # a hedge, started without waiting for a delay
    assert lost == [running]
    assert time.monotonic() - started < 5


def test_a_race_started_from_a_running_attempt_without_hedges_left_waits_for_it():
    launch = Launcher({"b": "ok"})
    running = Future()
    running.set_running_or_notify_cancel()
    running.set_result("answer from a")
    winner = race(["b"], launch, deadline=None, hedge_delay=lambda s: 0.01, max_hedges=0, on_lost=lambda f: None,
                  running=("a", running))
    assert winner is running and launch.launched == []


def test_a_race_started_from_a_running_attempt_with_nothing_to_hedge_with_spends_no_budget():
    class CountingBudget:
        asked = 0

        def try_spend(self):
            self.asked += 1
            return True

    budget, launch = CountingBudget(), Launcher({})
    running = Future()
    running.set_running_or_notify_cancel()
    timer = threading.Timer(0.1, running.set_result, ["answer from a"])
    timer.start()
    winner = race([], launch, deadline=None, hedge_delay=lambda s: 0.01, max_hedges=1, budget=budget,
                  on_lost=lambda f: None, running=("a", running))
    assert winner is running
    assert budget.asked == 0 and launch.launched == []  # no candidate left: no hedge is ever due

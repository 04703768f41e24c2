"""Limits, budgets, max_cost and "cheapest" through the Router: skipped attempts with
their reasons, skip vs wait, fair waiting, 429s and headers feeding the limiter, and the
exactness of rpm and max_concurrency as the server's own log sees it."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional

import pytest

from multi_llm_orchestrator import (
    AllProvidersFailedError,
    Budget,
    ConfigurationError,
    GenerationParams,
    Limits,
    ProviderConfig,
    RateLimitError,
    Router,
    Usage,
)
from multi_llm_orchestrator.admission import Admission
from multi_llm_orchestrator.budgets import MemoryBudgetLedger
from multi_llm_orchestrator.errors import BudgetExceededError, CapacityExhaustedError
from multi_llm_orchestrator.providers.base import BaseProvider
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider
from multi_llm_orchestrator.strategies import CheapestStrategy
from multi_llm_orchestrator.types import Completion, StreamEnd

from fakes import FakeOpenAIServer, Fault
from fakes.mocks import in_background
from fakes.timing import FakeClock, max_in_window

WAIT = 10.0  # only to catch hangs


class Provider(BaseProvider):
    """A provider that records its calls, can hold them on a gate and can fail."""

    def __init__(self, config: ProviderConfig, *, gate: Optional[threading.Event] = None,
                 usage: Usage = Usage(10, 5, 15), fail: Optional[Exception] = None, model: Optional[str] = None) -> None:
        super().__init__(config)
        self.gate = gate
        self.usage = usage
        self.fail = fail
        self.answer_model = model
        self.calls: List[str] = []
        self.entered = threading.Semaphore(0)
        self._lock = threading.Lock()

    def complete(self, messages, params=None, *, timeout=None):
        with self._lock:
            self.calls.append(messages[-1].content)
        self.entered.release()
        if self.gate is not None:
            assert self.gate.wait(WAIT)
        if self.fail is not None:
            raise self.fail
        return Completion("ok", self.name, self.answer_model or self.model, self.usage)

    def stream(self, messages, params=None, *, timeout=None):
        def events():
            with self._lock:
                self.calls.append(messages[-1].content)
            yield "o"
            if self.gate is not None:
                assert self.gate.wait(WAIT)
            yield "k"
            yield StreamEnd(self.usage)

        return self._text_stream(events())

    def health_check(self, timeout=None):
        return True


def make(name, **config):
    extra = {key: config.pop(key) for key in ("gate", "usage", "fail", "model_answer") if key in config}
    if "model_answer" in extra:
        extra["model"] = extra.pop("model_answer")
    return Provider(ProviderConfig(name=name, **config), **extra)


def router_with(*providers, **options):
    options.setdefault("strategy", "first-available")
    options.setdefault("breaker", False)
    router = Router(**options)
    for provider in providers:
        router.add_provider(provider)
    return router


def wait_until(condition, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


# Skip ------------------------------------------------------------------------------------------


def test_a_provider_without_capacity_is_skipped_with_the_reason_and_the_next_answers():
    gate = threading.Event()
    a = make("a", limits={"max_concurrency": 1}, gate=gate)
    b = make("b")
    router = router_with(a, b)
    held = in_background(router.complete, "first")
    assert a.entered.acquire(timeout=WAIT)
    completion = router.complete("second")
    assert completion.provider == "b"
    skipped = completion.attempts[0]
    assert (skipped.provider, skipped.outcome) == ("a", "skipped")
    assert "max_concurrency 1 reached" in skipped.error
    assert "capacity returns when a call in flight ends" in skipped.error
    gate.set()
    assert held.result(WAIT).provider == "a"
    assert router.complete("third").provider == "a"  # the slot was given back
    router.close()


def test_skip_mode_fails_at_once_when_no_provider_has_capacity_and_says_when_it_returns():
    a = make("a", limits={"rpm": 1})
    b = make("b", limits={"rpm": 1})
    router = router_with(a, b)
    router.complete("one")
    router.complete("two")
    started = time.monotonic()
    with pytest.raises(CapacityExhaustedError) as caught:
        router.complete("three")
    assert time.monotonic() - started < 1.0
    error = caught.value
    assert isinstance(error, AllProvidersFailedError)
    assert "No provider has capacity; the first returns in" in str(error)
    assert "a: rpm 1 reached; capacity returns in" in str(error)
    assert 59.0 < error.retry_after <= 60.0
    assert len(a.calls) + len(b.calls) == 2
    assert router.stats()["failed"] == 1
    router.close()


# Wait ------------------------------------------------------------------------------------------


def test_wait_mode_waits_for_a_slot_to_free_then_runs():
    gate = threading.Event()
    a = make("a", limits={"max_concurrency": 1}, gate=gate)
    router = router_with(a, admission="wait", timeout=WAIT)
    held = in_background(router.complete, "first")
    assert a.entered.acquire(timeout=WAIT)
    waiting = in_background(router.complete, "second")
    wait_until(lambda: router.stats()["admission"]["waiting"] == 1)
    assert not waiting.done()
    gate.set()
    assert held.result(WAIT).text == "ok"
    completion = waiting.result(WAIT)
    assert completion.provider == "a"
    assert a.calls == ["first", "second"]
    router.close()


def test_waiting_is_first_come_first_served():
    gate = threading.Event()
    holder = make("a", limits={"max_concurrency": 1}, gate=gate)
    router = router_with(holder, admission="wait", timeout=WAIT)
    first = in_background(router.complete, "hold")
    assert holder.entered.acquire(timeout=WAIT)
    waiters = []
    for index in range(8):
        waiters.append(in_background(router.complete, f"w{index}"))
        wait_until(lambda: router.stats()["admission"]["waiting"] == index + 1)
    gate.set()
    first.result(WAIT)
    for future in waiters:
        future.result(WAIT)
    assert holder.calls == ["hold"] + [f"w{index}" for index in range(8)]
    router.close()


def test_wait_mode_fails_at_once_when_capacity_returns_only_after_the_deadline():
    a = make("a", limits={"rpm": 1})
    router = router_with(a, admission="wait")
    router.complete("one")
    started = time.monotonic()
    with pytest.raises(CapacityExhaustedError) as caught:
        router.complete("two", timeout=2.0)
    assert time.monotonic() - started < 1.0  # no pointless wait until the deadline
    message = str(caught.value)
    assert "the first returns in" in message and "after the call's deadline" in message
    assert caught.value.retry_after > 2.0
    router.close()


def test_wait_mode_gives_up_at_the_deadline_when_no_slot_frees():
    gate = threading.Event()
    a = make("a", limits={"max_concurrency": 1}, gate=gate)
    router = router_with(a, admission="wait")
    held = in_background(router.complete, "first")
    assert a.entered.acquire(timeout=WAIT)
    started = time.monotonic()
    with pytest.raises(CapacityExhaustedError, match="after the call's deadline"):
        router.complete("second", timeout=0.2)
    assert 0.15 < time.monotonic() - started < 2.0
    gate.set()
    held.result(WAIT)
    router.close()


def test_wait_mode_waits_for_a_short_rpm_window():
    a = make("a", limits={"rpm": 1, "window": 0.2})
    router = router_with(a, admission="wait", timeout=WAIT)
    router.complete("one")
    started = time.monotonic()
    assert router.complete("two").provider == "a"
    assert 0.1 < time.monotonic() - started < 2.0
    router.close()


def test_wait_mode_uses_another_provider_with_capacity_before_waiting():
    gate = threading.Event()
    a = make("a", limits={"max_concurrency": 1}, gate=gate)
    b = make("b")
    router = router_with(a, b, admission="wait", timeout=WAIT)
    held = in_background(router.complete, "first")
    assert a.entered.acquire(timeout=WAIT)
    assert router.complete("second").provider == "b"
    gate.set()
    held.result(WAIT)
    router.close()


# Streams hold their slot until they end -------------------------------------------------------------


def test_a_stream_holds_its_concurrency_slot_until_it_ends():
    a = make("a", limits={"max_concurrency": 1})
    b = make("b")
    router = router_with(a, b)
    stream = router.route_stream("s")
    assert next(stream) == "o"
    assert router.complete("during").provider == "b"
    assert "".join(stream) == "k"
    assert router.complete("after").provider == "a"
    router.close()


# Token reconciliation ----------------------------------------------------------------------------------


def test_tpm_is_reconciled_with_the_real_usage():
    a = make("a", limits={"tpm": 1000}, usage=Usage(12, 30, 42))
    router = router_with(a)
    router.complete("hello", GenerationParams(max_tokens=500))
    limits = router.stats()["providers"]["a"]["limits"]
    assert limits["tokens_in_window"] == 42  # not the ~510 estimated before the call
    assert limits["requests_in_window"] == 1
    router.close()


def test_tpm_estimate_uses_max_tokens_so_a_too_large_call_is_skipped():
    a = make("a", limits={"tpm": 100})
    b = make("b")
    router = router_with(a, b)
    completion = router.complete("hello", GenerationParams(max_tokens=200))
    assert completion.provider == "b"
    assert "exceed tpm 100; waiting does not help" in completion.attempts[0].error
    router.close()


# Server signals -------------------------------------------------------------------------------------------


def test_a_429_with_retry_after_pauses_the_providers_limiter():
    a = make("a", limits={"rpm": 1000}, fail=RateLimitError("slow down", retry_after=30.0))
    b = make("b")
    router = router_with(a, b)  # breakers off: only the limiter can skip "a"
    assert router.complete("one").provider == "b"
    completion = router.complete("two")
    assert completion.provider == "b" and len(a.calls) == 1
    assert "the server asked to slow down (429)" in completion.attempts[0].error
    assert router.stats()["providers"]["a"]["limits"]["blocked_for_s"] > 29
    router.close()


def completion_body(model):
    return {
        "id": "x", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


def on_chat(server, faults):
    """Apply ``faults`` to the next chat requests (health checks list models meanwhile)."""
    pending = list(faults)

    def hook(request):
        if request.path.endswith("/chat/completions") and pending:
            return pending.pop(0)
        return None

    server.fault_hook = hook


def test_ratelimit_headers_of_a_real_response_feed_the_limiter():
    with FakeOpenAIServer() as server:
        on_chat(server, [Fault(status=200, body=completion_body(server.model), headers={
            "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s",
        })])
        provider = OpenAICompatibleProvider(ProviderConfig(
            name="openai", model=server.model, base_url=server.url, limits={"rpm": 1000}))
        router = router_with(provider, make("backup"))
        assert router.complete("one").provider == "openai"
        completion = router.complete("two")
        assert completion.provider == "backup"
        assert "the server reports 0 requests remaining; capacity returns in 3" in completion.attempts[0].error
        assert sum(r.path.endswith("/chat/completions") for r in server.requests) == 1
        router.close()


def test_a_real_429_with_retry_after_feeds_the_limiter():
    with FakeOpenAIServer() as server:
        on_chat(server, [Fault(status=429, body={"error": {"message": "rate limited"}}, headers={"Retry-After": "20"})])
        provider = OpenAICompatibleProvider(ProviderConfig(
            name="openai", model=server.model, base_url=server.url, limits={"max_concurrency": 4}, max_retries=0))
        router = router_with(provider, make("backup"))
        assert router.complete("one").provider == "backup"
        completion = router.complete("two")
        assert completion.provider == "backup"
        assert sum(r.path.endswith("/chat/completions") for r in server.requests) == 1
        assert "429" in completion.attempts[0].error
        router.close()


# Exactness against the server's own log -----------------------------------------------------------------


class CountingServer(FakeOpenAIServer):
    """Logs when each request starts and how many are being served at once."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.starts: List[float] = []
        self.active = 0
        self.peak = 0
        self._count_lock = threading.Lock()

    def _dispatch(self, handler):
        if not handler.path.endswith("/chat/completions"):  # health checks list models
            return super()._dispatch(handler)
        with self._count_lock:
            self.starts.append(time.monotonic())
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            super()._dispatch(handler)
        finally:
            with self._count_lock:
                self.active -= 1



def test_rpm_and_max_concurrency_are_exact_under_64_threads_by_the_servers_log():
    window, rpm, concurrency = 0.5, 15, 3
    with CountingServer(latency=0.003) as server:
        provider = OpenAICompatibleProvider(ProviderConfig(
            name="limited", model=server.model, base_url=server.url, max_retries=0, pool_size=64,
            limits={"rpm": rpm, "max_concurrency": concurrency, "window": window}))
        router = router_with(provider, admission="wait", timeout=5.0)
        stop = time.monotonic() + 1.6
        outcomes = {"ok": 0, "capacity": 0}
        lock = threading.Lock()

        def worker(_):
            while time.monotonic() < stop:
                try:
                    router.complete("hi")
                    kind = "ok"
                except CapacityExhaustedError:
                    kind = "capacity"
                with lock:
                    outcomes[kind] += 1

        with ThreadPoolExecutor(64) as pool:
            list(pool.map(worker, range(64)))
        router.close()
    assert max_in_window(server.starts, window) <= rpm
    assert server.peak <= concurrency
    assert outcomes["ok"] == len(server.starts) >= 2 * rpm  # several full windows, none starved


# Budgets ---------------------------------------------------------------------------------------------------



def test_a_provider_over_its_budget_is_skipped_and_the_next_answers():
    a = make("a", prices={"prompt": 1000, "completion": 1000}, budget={"limit": 0.05, "period": "day"})
    b = make("b")
    router = router_with(a, b)
    completion = router.complete("hello", GenerationParams(max_tokens=10))
    assert completion.provider == "b"
    assert completion.attempts[0].outcome == "skipped"
    assert "budget 0.05 per day reached" in completion.attempts[0].error
    assert a.calls == []
    router.close()


def test_the_router_over_its_budget_raises_before_sending_anything():
    a = make("a", prices={"prompt": 1.0, "completion": 2.0}, usage=Usage(1000, 500, 1500))
    router = router_with(a, budget={"limit": 2.5, "period": "day"})
    router.complete("hi", GenerationParams(max_tokens=10))  # costs 1 + 1 = 2 at the real usage
    stats = router.stats()
    assert stats["admission"]["budgets"][0]["spent"] == pytest.approx(2.0)
    assert stats["admission"]["budgets"][0]["remaining"] == pytest.approx(0.5)
    assert stats["providers"]["a"]["spend"]["total"] == pytest.approx(2.0)
    with pytest.raises(BudgetExceededError, match="nothing was sent"):
        router.complete("hi", GenerationParams(max_tokens=1000))  # expected 2+ > 0.5 left
    router.complete("hi", GenerationParams(max_tokens=10))  # expected ~0.04: fits, spends 2 more
    with pytest.raises(BudgetExceededError, match="is spent") as caught:
        router.complete("hi")
    assert caught.value.spent == pytest.approx(4.0)
    assert len(a.calls) == 2
    router.close()


def test_budgets_per_period_with_a_fake_clock():
    a = make("a", prices={"prompt": 1.0, "completion": 1.0}, usage=Usage(500, 500, 1000))
    clock = FakeClock(86400.0 * 20000 + 3600)
    admission = Admission("skip", {"limit": 1.0, "period": "day"},
                          make_ledger=lambda scope, budget: MemoryBudgetLedger(budget, clock))
    router = router_with(a, admission=admission)
    router.complete("hi", GenerationParams(max_tokens=1))
    with pytest.raises(BudgetExceededError) as caught:
        router.complete("hi", GenerationParams(max_tokens=1))
    assert caught.value.retry_after == pytest.approx(86400 - 3600)
    clock.now += 86400 - 3600  # midnight UTC: a new day
    assert router.complete("hi", GenerationParams(max_tokens=1)).provider == "a"
    router.close()


def test_spend_uses_the_price_of_the_model_that_answered():
    a = make("a", model="small", model_answer="big", usage=Usage(1000, 0, 1000),
             prices={"small": {"prompt": 1.0}, "big": {"prompt": 5.0}})
    router = router_with(a)
    router.complete("hi")
    assert router.stats()["providers"]["a"]["cost"] == pytest.approx(5.0)
    router.close()


def test_a_failed_call_spends_nothing_and_gives_its_hold_back():
    a = make("a", prices={"prompt": 1.0, "completion": 1.0}, budget={"limit": 10.0},
             fail=RateLimitError("no", retry_after=None))
    router = router_with(a)
    with pytest.raises(AllProvidersFailedError):
        router.complete("hi")
    assert router.stats()["providers"]["a"]["spend"]["budgets"][0]["spent"] == 0.0
    assert router._states[0].admission.ledgers[0]._held == pytest.approx(0.0)
    router.close()


# max_cost and cheapest ------------------------------------------------------------------------------------------


def priced(name, prompt, completion, **config):
    return make(name, prices={"prompt": prompt, "completion": completion}, **config)


def test_max_cost_skips_providers_whose_expected_cost_is_higher():
    expensive = priced("expensive", 100.0, 100.0)
    cheap = priced("cheap", 0.1, 0.1)
    router = router_with(expensive, cheap)
    completion = router.complete("hi", GenerationParams(max_tokens=100), max_cost=0.5)
    assert completion.provider == "cheap"
    assert "is above max_cost 0.5" in completion.attempts[0].error
    with pytest.raises(CapacityExhaustedError, match="Every provider's expected cost is above max_cost 0.0001"):
        router.complete("hi", GenerationParams(max_tokens=100), max_cost=0.0001)
    with pytest.raises(ConfigurationError, match="max_cost"):
        router.complete("hi", max_cost=-1)
    router.close()


def test_cheapest_picks_the_lowest_expected_price_for_this_prompt():
    # Cheap prompt but dear answers vs the opposite: which one wins depends on the call.
    reader = priced("reader", 0.1, 10.0)
    writer = priced("writer", 10.0, 0.1)
    router = router_with(reader, writer, strategy="cheapest")
    long_prompt = "word " * 2000
    assert router.complete(long_prompt, GenerationParams(max_tokens=10)).provider == "reader"
    assert router.complete("hi", GenerationParams(max_tokens=2000)).provider == "writer"
    router.close()


def test_cheapest_falls_back_in_price_order_and_puts_unpriced_providers_last():
    unpriced = make("unpriced", fail=RateLimitError("no"))
    dear = priced("dear", 5.0, 5.0, fail=RateLimitError("no"))
    cheapest = priced("cheapest", 1.0, 1.0, fail=RateLimitError("no"))
    middle = priced("middle", 2.0, 2.0, fail=RateLimitError("no"))
    router = router_with(unpriced, dear, cheapest, middle, strategy="cheapest")
    with pytest.raises(AllProvidersFailedError) as caught:
        router.complete("hi")
    assert [error.provider for error in caught.value.errors] == ["cheapest", "middle", "dear", "unpriced"]
    router.close()


def test_cheapest_breaks_price_ties_by_latency():
    slow = priced("slow", 1.0, 1.0)
    fast = priced("fast", 1.0, 1.0)
    router = router_with(slow, fast, strategy="cheapest")
    states = router._states
    states[0].metrics.succeeded(2.0, None)
    states[0].metrics.started()
    states[1].metrics.succeeded(0.1, None)
    states[1].metrics.started()
    assert router.complete("hi").provider == "fast"
    router.close()


def test_cheapest_without_a_call_context_keeps_the_given_order():
    class Health:
        pass

    a, b = object(), object()
    from multi_llm_orchestrator.strategies import ProviderState
    from multi_llm_orchestrator.metrics import ProviderMetrics
    states = [ProviderState(make("a"), None, ProviderMetrics()), ProviderState(make("b"), None, ProviderMetrics())]
    assert CheapestStrategy().order(states, Health()) == states


# Configuration -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, fragment",
    [
        ({"limits": {"rpm": 0}}, "limits.rpm must be an integer >= 1"),
        ({"limits": {"tpm": "many"}}, "limits.tpm must be an integer"),
        ({"limits": {"max_concurrency": 2.5}}, "limits.max_concurrency must be an integer"),
        ({"limits": {"window": -1}}, "limits.window"),
        ({"limits": 600}, "limits must be a dict"),
        ({"budget": {"limit": -1}}, "budget limit must be a number >= 0"),
        ({"budget": {"limit": 1, "period": "year"}}, "budget period"),
        ({"budget": {"limit": 1, "period": -60}}, "budget period"),
        ({"prices": {"prompt": -0.1}}, "price prompt must be a number >= 0"),
        ({"prices": {"GigaChat": {"completion": float("nan")}}}, "price completion"),
        ({"prices": {"prompt": 1, "output": 2}}, "must map a model name"),
    ],
)
def test_each_bad_limit_budget_or_price_in_provider_config_is_a_configuration_error(config, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        ProviderConfig(name="p", **config)


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"admission": "queue"}, "admission must be one of skip, wait"),
        ({"budget": {"limit": "ten"}}, "budget limit"),
        ({"budget": [{"limit": 1}, {"period": "day"}]}, r"Router budget\[1\] needs 'limit'"),
    ],
)
def test_each_bad_router_admission_setting_is_a_configuration_error(options, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        Router(**options)


def test_limits_budgets_and_prices_from_a_config_file(tmp_path, monkeypatch):
    monkeypatch.setenv("GIGA_RPM", "600")
    path = tmp_path / "router.json"
    path.write_text(json.dumps({
        "strategy": "cheapest",
        "admission": "wait",
        "budget": {"limit": "1000", "period": "month", "utc_offset": 3},
        "providers": [
            {"type": "mock", "name": "giga", "limits": {"rpm": "${GIGA_RPM}", "max_concurrency": 2},
             "prices": {"GigaChat-Pro": {"prompt": 1.5, "completion": "1.5"}, "*": {"prompt": 0.2, "completion": 0.2}},
             "budget": [{"limit": 50, "period": "day"}, {"limit": 5, "period": 3600}]},
            {"type": "mock", "name": "local"},
        ],
    }))
    router = Router.from_config(str(path))
    stats = router.stats()
    assert stats["admission"]["mode"] == "wait"
    assert stats["admission"]["budgets"][0]["limit"] == 1000.0
    giga = stats["providers"]["giga"]
    assert giga["limits"]["rpm"] == 600 and giga["limits"]["max_concurrency"] == 2
    assert [budget["limit"] for budget in giga["spend"]["budgets"]] == [50.0, 5.0]
    assert router.strategy.name == "cheapest"
    router.close()
    from multi_llm_orchestrator.configuration import load_config

    with pytest.raises(ConfigurationError, match=r"providers\[0\] \('m'\): limits: rpm must be an integer"):
        load_config({"providers": [{"type": "mock", "name": "m", "limits": {"rpm": "lots"}}]})
    with pytest.raises(ConfigurationError, match="unknown key 'rps'"):
        load_config({"providers": [{"type": "mock", "name": "m", "limits": {"rps": 5}}]})


def test_provider_config_keeps_limits_and_budgets_as_plain_dicts():
    config = ProviderConfig(name="p", limits=Limits(rpm=5), budget=[Budget(3.0)])
    assert config.limits == {"rpm": 5, "window": 60.0, "count_tokens": False}
    assert config.budget == [{"limit": 3.0, "period": "day", "utc_offset": 0.0}]
    assert ProviderConfig.from_dict(config.to_dict()).limits == config.limits


class Counting(Provider):
    """A Provider whose own count of any prompt is ``tokens``; ``counted``: how often asked."""

    def __init__(self, config: ProviderConfig, *, tokens: int, **options) -> None:
        super().__init__(config, **options)
        self.tokens = tokens
        self.counted = 0

    def count_tokens(self, prompt, *, timeout=None):
        self.counted += 1
        return self.tokens


def test_limits_can_count_the_prompt_with_the_providers_own_count_tokens():
    counting = Counting(ProviderConfig(name="a", limits={"tpm": 1000, "count_tokens": True}), tokens=900)
    estimating = make("b", limits={"tpm": 1000})
    router = router_with(counting, estimating)
    completion = router.complete("short", GenerationParams(max_tokens=200))
    assert completion.provider == "b"  # 900 counted + 200 > 1000; the estimate (~6 + 200) fits
    assert "this call's 1100 estimated tokens exceed tpm 1000" in completion.attempts[0].error
    assert counting.counted == 1
    router.close()


def test_a_waiting_call_counts_its_prompt_once_however_many_passes_it_makes():
    gate = threading.Event()
    counting = Counting(ProviderConfig(name="a", limits={"max_concurrency": 1, "count_tokens": True}),
                        tokens=10, gate=gate)
    router = router_with(counting, admission="wait", timeout=WAIT)
    held = in_background(router.complete, "first")
    assert counting.entered.acquire(timeout=WAIT)
    waiting = in_background(router.complete, "second")
    wait_until(lambda: counting.counted == 2)  # the second call's first pass, refused
    gate.set()
    assert held.result(WAIT).text == waiting.result(WAIT).text == "ok"
    assert counting.calls == ["first", "second"]
    assert counting.counted == 2  # its next pass reused the count
    router.close()


def test_a_call_queued_behind_others_fails_at_its_deadline_saying_so():
    gate = threading.Event()
    a = make("a", limits={"max_concurrency": 1}, gate=gate)
    router = router_with(a, admission="wait")
    held = in_background(router.complete, "hold")
    assert a.entered.acquire(timeout=WAIT)
    first_waiter = in_background(router.complete, "patient", timeout=WAIT)
    wait_until(lambda: router.stats()["admission"]["waiting"] == 1)
    with pytest.raises(CapacityExhaustedError, match="waited behind earlier calls"):
        router.complete("hurried", timeout=0.2)
    gate.set()
    held.result(WAIT)
    assert first_waiter.result(WAIT).provider == "a"
    assert a.calls == ["hold", "patient"]
    router.close()


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork (POSIX)")
def test_a_forked_child_does_not_inherit_the_parents_slots_in_flight_or_queue():
    from test_fork_safety import child_result, in_child

    gate = threading.Event()
    a = make("a", limits={"max_concurrency": 1, "rpm": 5}, budget={"limit": 10.0},
             prices={"prompt": 1.0, "completion": 1.0}, gate=gate)
    router = router_with(a, admission="wait", timeout=WAIT)
    held = in_background(router.complete, "parent", GenerationParams(max_tokens=10))
    assert a.entered.acquire(timeout=WAIT)
    waiter = in_background(router.complete, "queued")
    wait_until(lambda: router.stats()["admission"]["waiting"] == 1)

    def child_work():
        a.gate = None  # the child's copy of the provider answers at once
        completion = router.complete("child")
        row = router.stats()["providers"]["a"]
        return {"provider": completion.provider, "waiting": router.stats()["admission"]["waiting"],
                "requests": row["limits"]["requests_in_window"],
                "in_flight": row["limits"]["in_flight"]}

    pid, pipe = in_child(child_work)
    result = child_result(pid, pipe)
    # The parent's request in flight counts as finished in the child (it reached the server).
    assert result == {"provider": "a", "waiting": 0, "requests": 2, "in_flight": 0}
    gate.set()
    held.result(WAIT)
    waiter.result(WAIT)
    router.close()

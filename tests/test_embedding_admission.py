"""Admission control of ``Router.embed``: each batch goes through the same limits,
budgets and prices as a chat attempt (its texts' estimated tokens, no answer tokens,
priced by the embedding model), in "skip" and in "wait" mode."""

from __future__ import annotations

import threading
import time
from typing import Any, List, Optional

import pytest

from multi_llm_orchestrator import MockProvider, ProviderConfig, ProviderUnavailableError, Router
from multi_llm_orchestrator.admission import EmbeddingDemand
from multi_llm_orchestrator.errors import AllProvidersFailedError, BudgetExceededError, CapacityExhaustedError
from multi_llm_orchestrator.tokens import text_tokens

from fakes import mocks
from fakes.mocks import in_background

WAIT = 10.0  # only to catch hangs
TEXTS = ["alpha beta", "gamma delta epsilon", "zeta"]


class Embedder(MockProvider):
    """A mock that records its batches, can hold each on a gate, and can fail."""

    def __init__(self, name: str, *, gate: Optional[threading.Event] = None, fail: bool = False, **config: Any) -> None:
        extra = {"delay": 0, **config.pop("extra", {})}
        super().__init__(ProviderConfig(name=name, model="mock-normal", embedding_model="embed-model", extra=extra, **config))
        self.gate = gate
        self.fail = fail
        self.batches: List[List[str]] = []
        self.entered = threading.Semaphore(0)

    def embed(self, texts, *, purpose=None, timeout=None):
        self.batches.append(list(texts))
        self.entered.release()
        if self.gate is not None:
            assert self.gate.wait(WAIT)
        if self.fail:
            raise ProviderUnavailableError("down", provider=self.name, status_code=503)
        return super().embed(texts, purpose=purpose, timeout=timeout)


def router_with(*providers: MockProvider, **options: Any) -> Router:
    """First-available and no breaker unless told otherwise: each test says who answers."""
    return mocks.router_with(*providers, **{"strategy": "first-available", "breaker": False, **options})


def test_a_batch_estimate_is_its_texts_tokens_and_no_answer():
    demand = EmbeddingDemand(TEXTS)
    state = router_with(Embedder("a"))._states[0]
    assert demand.prompt_tokens == sum(text_tokens(text) for text in TEXTS) == 3 + 5 + 1  # 4 characters a token
    assert demand.prompt_tokens_for(state, None) == 9  # never the provider's own count
    assert demand.completion_tokens(state) == 0
    assert demand.model(state) == "embed-model"
    assert demand.max_cost is None


def test_a_batch_over_a_providers_rpm_goes_to_the_next_provider_of_its_space():
    a = Embedder("a", limits={"rpm": 1})
    b = Embedder("b")
    router = router_with(a, b)
    result = router.embed(TEXTS, max_parallel=1)
    assert result.provider == "a" and a.batches == [TEXTS]
    second = router.embed(["again"])
    assert second.provider == "b" and b.batches == [["again"]] and len(a.batches) == 1
    skipped = second.attempts[0]
    assert (skipped.provider, skipped.outcome) == ("a", "skipped")
    assert "rpm 1 reached" in skipped.error
    assert router.stats()["providers"]["a"]["limits"]["requests_in_window"] == 1
    router.close()


def test_skip_mode_fails_at_once_without_capacity_and_sends_nothing():
    a = Embedder("a", limits={"rpm": 1})
    router = router_with(a)
    router.embed(["first"])
    started = time.monotonic()
    with pytest.raises(CapacityExhaustedError, match="rpm 1 reached") as caught:
        router.embed(["second"])
    assert time.monotonic() - started < 5.0
    assert caught.value.retry_after == pytest.approx(60.0, abs=1.0)
    assert a.batches == [["first"]]
    assert router.stats()["failed"] == 1
    router.close()


def test_tpm_holds_the_batch_estimate_and_is_reconciled_with_the_real_usage():
    a = Embedder("a", limits={"tpm": 100})
    router = router_with(a)
    result = router.embed(TEXTS)
    limits = router.stats()["providers"]["a"]["limits"]
    assert result.usage.total_tokens == 6  # the mock counts words
    assert limits["tokens_in_window"] == 6  # not the estimate of 9
    with pytest.raises(CapacityExhaustedError, match="tpm"):
        router.embed(["word " * 400])  # ~500 estimated tokens: more than the minute allows
    assert len(a.batches) == 1
    router.close()


def test_spend_uses_the_embedding_models_price_and_the_budget_sees_it():
    prices = {"mock-normal": {"prompt": 1000.0, "completion": 1000.0}, "embed-model": {"prompt": 10.0}}
    a = Embedder("a", prices=prices, budget={"limit": 1.0, "period": "day"})
    router = router_with(a)
    result = router.embed(TEXTS)  # expected 9 tokens at 10 per 1k: 0.09 fits the budget
    spend = router.stats()["providers"]["a"]["spend"]
    assert spend["total"] == pytest.approx(result.usage.prompt_tokens * 10.0 / 1000)
    assert spend["budgets"][0]["spent"] == pytest.approx(0.06)
    assert router._states[0].admission.ledgers[0]._held == pytest.approx(0.0)
    router.close()


def test_a_batch_expected_over_the_providers_budget_is_skipped_for_the_next():
    a = Embedder("a", prices={"embed-model": {"prompt": 1000.0}}, budget={"limit": 1.0, "period": "day"})
    b = Embedder("b")
    router = router_with(a, b)
    result = router.embed(TEXTS)  # 9 estimated tokens at 1000 per 1k: 9 > 1
    assert result.provider == "b" and a.batches == []
    assert result.attempts[0].outcome == "skipped" and "budget 1 per day" in result.attempts[0].error
    router.close()


def test_the_routers_budget_refuses_a_batch_expected_over_what_is_left():
    a = Embedder("a", prices={"prompt": 100.0})
    router = router_with(a, budget={"limit": 1.0, "period": "day"})
    router.embed(TEXTS)  # expected 9 tokens (0.9) fits; the real 6 tokens spend 0.6
    assert router.stats()["admission"]["budgets"][0]["spent"] == pytest.approx(0.6)
    with pytest.raises(BudgetExceededError, match="would go over the Router's budget"):
        router.embed(TEXTS)  # 0.9 expected, 0.4 left
    assert a.batches == [TEXTS]
    router.close()


def test_the_routers_spent_budget_refuses_embed_before_sending_anything():
    a = Embedder("a", prices={"prompt": 100.0})
    router = router_with(a, budget={"limit": 0.5, "period": "day"})
    words = ["a a a a a a a a"]  # estimated 4 tokens (0.4 fits), 8 words really (0.8 spent)
    router.embed(words)
    assert router.stats()["admission"]["budgets"][0]["spent"] == pytest.approx(0.8)
    with pytest.raises(BudgetExceededError, match="is spent"):
        router.embed(["more"])
    assert a.batches == [words]
    assert router.stats()["failed"] == 1
    router.close()


def test_a_failed_batch_spends_nothing_and_gives_its_capacity_back():
    a = Embedder("a", fail=True, prices={"prompt": 1.0}, budget={"limit": 10.0}, limits={"max_concurrency": 1})
    router = router_with(a)
    with pytest.raises(AllProvidersFailedError):
        router.embed(TEXTS)
    admission = router._states[0].admission
    assert admission.ledgers[0]._held == pytest.approx(0.0)
    assert router.stats()["providers"]["a"]["spend"]["budgets"][0]["spent"] == 0.0
    a.fail = False
    assert router.embed(["again"]).provider == "a"  # its concurrency slot was given back
    router.close()


def test_parallel_batches_never_exceed_max_concurrency():
    a = Embedder("a", limits={"max_concurrency": 1}, extra={"embedding_batch_size": 1})
    b = Embedder("b", extra={"embedding_batch_size": 1})
    router = router_with(a, b)
    gate = threading.Event()
    a.gate = gate
    running = in_background(router.embed, TEXTS, max_parallel=3)
    assert a.entered.acquire(timeout=WAIT)  # one batch holds a's only slot
    deadline = time.monotonic() + WAIT
    while len(b.batches) < 2:  # the other two go to b meanwhile
        assert time.monotonic() < deadline, "the other batches did not go to b"
        time.sleep(0.001)
    gate.set()
    result = running.result(WAIT)
    assert len(a.batches) == 1 and len(b.batches) == 2
    assert [attempt.outcome for attempt in result.attempts].count("skipped") == 2
    router.close()


def test_wait_mode_a_batch_waits_for_a_slot_to_free_then_runs():
    gate = threading.Event()
    a = Embedder("a", limits={"max_concurrency": 1}, gate=gate)
    router = router_with(a, admission="wait", timeout=WAIT)
    held = in_background(router.embed, ["first"])
    assert a.entered.acquire(timeout=WAIT)
    waiting = in_background(router.embed, ["second"])
    time.sleep(0.2)
    assert not waiting.done() and a.batches == [["first"]]
    gate.set()
    assert held.result(WAIT).provider == "a"
    assert waiting.result(WAIT).provider == "a"
    assert a.batches == [["first"], ["second"]]
    router.close()


def test_wait_mode_fails_at_once_when_capacity_returns_only_after_the_deadline():
    a = Embedder("a", limits={"rpm": 1})
    router = router_with(a, admission="wait")
    router.embed(["first"])
    started = time.monotonic()
    with pytest.raises(CapacityExhaustedError, match="rpm 1 reached"):
        router.embed(["second"], timeout=5.0)  # the minute frees in ~60 s: no use waiting
    assert time.monotonic() - started < 4.0
    assert a.batches == [["first"]]
    router.close()


def test_wait_mode_gives_up_at_the_deadline_when_no_slot_frees():
    gate = threading.Event()
    a = Embedder("a", limits={"max_concurrency": 1}, gate=gate)
    router = router_with(a, admission="wait")
    held = in_background(router.embed, ["first"])
    assert a.entered.acquire(timeout=WAIT)
    started = time.monotonic()
    with pytest.raises(CapacityExhaustedError) as caught:
        router.embed(["second"], timeout=0.3)
    assert 0.25 <= time.monotonic() - started < WAIT
    assert "after the call's deadline" in str(caught.value)
    gate.set()
    held.result(WAIT)
    assert a.batches == [["first"]]
    router.close()


def test_cheapest_ranks_a_batchs_providers_by_their_embedding_price():
    # a's chat model is the cheaper one, b's embedding model: the batch goes to b.
    a = Embedder("a", embedding_space="shared", prices={"mock-normal": {"prompt": 0.1}, "embed-model": {"prompt": 5.0}})
    b = Embedder("b", embedding_space="shared", prices={"mock-normal": {"prompt": 9.0}, "embed-model": {"prompt": 1.0}})
    router = router_with(a, b, strategy="cheapest")
    assert router.embed(TEXTS).provider == "b"
    assert a.batches == [] and b.batches == [TEXTS]
    assert router.complete("hi").provider == "a"  # a chat call still ranks by the chat price
    router.close()


def test_wait_mode_without_a_timeout_waits_and_does_not_spin_meanwhile():
    gate = threading.Event()
    a = Embedder("a", limits={"max_concurrency": 1}, gate=gate)
    router = router_with(a, admission="wait")  # no timeout: a batch may wait up to 60 s
    limiter = router._states[0].admission.limiter
    tries = []
    acquire = limiter.acquire
    limiter.acquire = lambda tokens: tries.append(tokens) or acquire(tokens)
    held = in_background(router.embed, ["first"])
    assert a.entered.acquire(timeout=WAIT)
    waiting = in_background(router.embed, ["second"])
    time.sleep(0.3)
    assert not waiting.done()
    assert len(tries) <= 3  # the first batch, the second's refused try, at most one more
    gate.set()
    assert held.result(WAIT).provider == waiting.result(WAIT).provider == "a"
    assert a.batches == [["first"], ["second"]]
    router.close()

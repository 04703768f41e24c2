"""Router.embed (spaces, batching, parallel batches, per-batch failover, deadline),
Router.count_tokens, and the context-window skip of complete/route_stream."""

from __future__ import annotations

import threading
import time
from typing import Any, List, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakes.mocks import mock, router_with
from multi_llm_orchestrator import (
    AllProvidersFailedError,
    ConfigurationError,
    DeadlineExceededError,
    GenerationParams,
    InvalidRequestError,
    MockProvider,
    NoProvidersError,
    ProviderConfig,
    ProviderUnavailableError,
)
from multi_llm_orchestrator.embeddings import split_batches
from multi_llm_orchestrator.providers.base import EmbeddingLimits
from multi_llm_orchestrator.providers.mock import mock_vector

TEXTS = [f"text number {n}" for n in range(10)]


class Recording(MockProvider):
    """A mock whose embed records each batch, can fail batches holding ``fail_on``,
    and can wait at a barrier (to prove batches run at the same time)."""

    def __init__(self, name: str, *, fail_on: str = "", barrier: Optional[threading.Barrier] = None,
                 hold: float = 0.0, **settings: Any) -> None:
        extra = {"delay": 0, **settings.pop("extra", {})}
        super().__init__(ProviderConfig(name=name, extra=extra, **settings))
        self.batches: List[List[str]] = []
        self.fail_on = fail_on
        self.barrier = barrier
        self.hold = hold
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0

    def embed(self, texts, *, purpose=None, timeout=None):
        with self.lock:
            self.batches.append(list(texts))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.barrier is not None:
                self.barrier.wait(timeout=5)  # BrokenBarrierError if the batches were not parallel
            if self.hold:
                self._closed.wait(self.hold)
            if self.fail_on and self.fail_on in texts:
                raise ProviderUnavailableError("batch refused", provider=self.name, status_code=503)
            return super().embed(texts, purpose=purpose, timeout=timeout)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_vectors_come_back_in_input_order_across_batches():
    router = router_with(Recording("a", extra={"embedding_batch_size": 3}), Recording("b"), strategy="round-robin")
    result = router.embed(TEXTS)
    assert result.vectors == [mock_vector(text, 16) for text in TEXTS]
    assert result.space == "mock:mock-embedding" and result.model == "mock-embedding"
    assert result.usage.prompt_tokens == 30
    assert [a.outcome for a in result.attempts] == ["ok"] * 4


def test_batches_follow_the_strictest_limits_of_the_space():
    a = Recording("a", extra={"embedding_batch_size": 4})
    b = Recording("b", extra={"embedding_batch_chars": 30})
    router = router_with(a, b, strategy="first-available")
    router.embed(TEXTS)  # each text is 13-14 chars: at most 2 per 30 chars
    assert [len(batch) for batch in a.batches] == [2, 2, 2, 2, 2]
    assert b.batches == []


def test_split_batches_by_count_and_size():
    limits = EmbeddingLimits(max_texts=3, max_chars=5)
    assert split_batches(["aa", "bb", "c", "dddddddd", "e"], limits) == [(0, ["aa", "bb", "c"]), (3, ["dddddddd"]), (4, ["e"])]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=60), st.integers(1, 8), st.integers(1, 40))
def test_split_batches_is_the_greedy_cut(texts, max_texts, max_chars):
    expected, current, chars, start = [], [], 0, 0
    for index, text in enumerate(texts):  # the plain greedy cut, text by text
        if current and (len(current) >= max_texts or chars + len(text) > max_chars):
            expected.append((start, current))
            current, chars, start = [], 0, index
        current.append(text)
        chars += len(text)
    expected.append((start, current))
    assert split_batches(texts, EmbeddingLimits(max_texts, max_chars)) == expected


def test_batches_run_in_parallel():
    barrier = threading.Barrier(4)
    provider = Recording("a", barrier=barrier, extra={"embedding_batch_size": 1})
    result = router_with(provider).embed(TEXTS[:4], max_parallel=4)
    assert len(result) == 4 and not barrier.broken


def test_max_parallel_bounds_the_batches_in_flight():
    provider = Recording("a", hold=0.02, extra={"embedding_batch_size": 1})
    router_with(provider).embed(TEXTS, max_parallel=3)
    assert provider.most_in_flight == 3 and len(provider.batches) == 10


def test_a_failed_batch_moves_to_the_next_provider_of_the_space_without_redoing_the_others():
    a = Recording("a", fail_on="text number 4", extra={"embedding_batch_size": 3})
    b = Recording("b", extra={"embedding_batch_size": 3})
    router = router_with(a, b, strategy="first-available", breaker=False)
    result = router.embed(TEXTS, max_parallel=1)
    assert result.vectors == [mock_vector(text, 16) for text in TEXTS]
    assert b.batches == [TEXTS[3:6]]  # only the failed batch
    assert a.batches == [TEXTS[0:3], TEXTS[3:6], TEXTS[6:9], TEXTS[9:]]
    assert [(x.provider, x.outcome) for x in result.attempts] == [
        ("a", "ok"), ("a", "error"), ("b", "ok"), ("a", "ok"), ("a", "ok")]
    assert result.provider == "a"
    stats = router.stats()
    assert stats["providers"]["a"]["successes"] == 3 and stats["providers"]["b"]["successes"] == 1
    assert stats["succeeded"] == 1 and stats["calls"] == 1


def test_no_fallback_across_spaces():
    a = Recording("a", fail_on="text number 0")
    other = Recording("other", embedding_space="another-space")
    router = router_with(a, other, breaker=False)
    with pytest.raises(AllProvidersFailedError) as info:
        router.embed(TEXTS, space="mock:mock-embedding")
    assert [e.provider for e in info.value.errors] == ["a"]
    assert other.batches == []
    assert router.embed(TEXTS, space="another-space").provider == "other"


def test_the_space_is_required_when_there_are_several():
    router = router_with(Recording("a"), Recording("b", embedding_space="elsewhere"))
    with pytest.raises(ConfigurationError, match="space="):
        router.embed(["x"])
    with pytest.raises(ConfigurationError, match="No embedding space 'nowhere'"):
        router.embed(["x"], space="nowhere")
    assert router.embedding_spaces() == {"mock:mock-embedding": ["a"], "elsewhere": ["b"]}


def test_no_provider_that_embeds():
    class ChatOnly(MockProvider):
        embedding_limits = None

    router = router_with(ChatOnly(ProviderConfig(name="c", extra={"delay": 0})))
    with pytest.raises(NoProvidersError, match="embed"):
        router.embed(["x"])
    assert router.embedding_spaces() == {}


def test_a_batch_failing_everywhere_fails_the_call_and_later_batches_are_not_sent():
    a = Recording("a", fail_on="text number 3", extra={"embedding_batch_size": 2})
    b = Recording("b", fail_on="text number 3", extra={"embedding_batch_size": 2})
    router = router_with(a, b, strategy="first-available", breaker=False)
    with pytest.raises(AllProvidersFailedError) as info:
        router.embed(TEXTS, max_parallel=1)
    assert [e.provider for e in info.value.errors] == ["a", "b"]
    assert len(a.batches) == 2 and TEXTS[4:6] not in a.batches
    assert router.stats()["failed"] == 1


def test_the_router_timeout_bounds_the_whole_call():
    slow = mock("slow", delay=5.0)
    router = router_with(slow, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        router.embed(TEXTS)
    assert time.monotonic() - started < 3.0
    router.close()


def test_the_router_timeout_bounds_parallel_batches():
    slow = Recording("slow", hold=5.0, extra={"embedding_batch_size": 2})
    router = router_with(slow, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError) as info:
        router.embed(TEXTS, max_parallel=2)
    assert time.monotonic() - started < 3.0
    assert {e.provider for e in info.value.errors} == {"slow"}
    router.close()


def test_the_router_timeout_holds_even_when_a_provider_ignores_its_timeout():
    class Deaf(MockProvider):
        def embed(self, texts, *, purpose=None, timeout=None):
            threading.Event().wait(1.5)  # ignores the timeout it was given
            return super().embed(texts, purpose=purpose)

    router = router_with(Deaf(ProviderConfig(name="deaf", extra={"delay": 0})), timeout=0.2)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError) as info:
        router.embed(["one batch only"])
    assert time.monotonic() - started < 1.2
    assert [e.provider for e in info.value.errors] == ["deaf"]
    router.close()


def test_vectors_of_different_sizes_in_one_space_are_refused():
    a = Recording("a", fail_on="text number 0", extra={"embedding_batch_size": 5})
    b = Recording("b", extra={"dimensions": 4, "embedding_batch_size": 5}, embedding_space="mock:mock-embedding")
    router = router_with(a, b, strategy="first-available", breaker=False)
    with pytest.raises(ConfigurationError, match="different sizes"):
        router.embed(TEXTS, max_parallel=1)


def test_an_open_breaker_is_skipped_inside_the_space():
    a = Recording("a", fail_on="text number 0")
    b = Recording("b")
    router = router_with(a, b, strategy="first-available", breaker={"failure_threshold": 1, "cooldown": 60})
    router.embed(["text number 0"])
    result = router.embed(["text number 0"])
    assert [(x.provider, x.outcome) for x in result.attempts] == [("b", "ok")]  # planned out, as for chat
    assert len(a.batches) == 1


def test_a_provider_returning_the_wrong_number_of_vectors_is_a_failed_attempt():
    class Short(MockProvider):
        def embed(self, texts, *, purpose=None, timeout=None):
            return super().embed(texts[:-1] or texts, purpose=purpose, timeout=timeout)

    short = Short(ProviderConfig(name="short", extra={"delay": 0}))
    router = router_with(short, Recording("good"), strategy="first-available", breaker=False)
    result = router.embed(["one", "two"])
    assert result.provider == "good" and result.attempts[0].error_type == "ResponseFormatError"


def test_purpose_reaches_the_provider_and_bad_input_is_refused():
    seen = []

    class Spy(MockProvider):
        def embed(self, texts, *, purpose=None, timeout=None):
            seen.append(purpose)
            return super().embed(texts, purpose=purpose, timeout=timeout)

    router = router_with(Spy(ProviderConfig(name="s", extra={"delay": 0})))
    router.embed(["q"], purpose="query")
    assert seen == ["query"]
    for bad in ([], [""], "x" and [1]):
        with pytest.raises(ConfigurationError):
            router.embed(bad)
    with pytest.raises(ConfigurationError, match="max_parallel"):
        router.embed(["x"], max_parallel=0)
    assert router.stats()["calls"] == 1  # refused input never counts as a call


def test_listeners_see_each_batch_attempt_and_one_call():
    events = []
    router = router_with(Recording("a", extra={"embedding_batch_size": 5}))
    router.add_listener(events.append)
    router.embed(TEXTS)
    assert [(e.kind, e.outcome) for e in events] == [("attempt", "ok"), ("attempt", "ok"), ("call", "ok")]


# Token counting ---------------------------------------------------------------------------


def test_router_count_tokens_names_the_provider():
    router = router_with(mock("a"), mock("b"))
    assert router.count_tokens("one two three", provider="b") == 3
    with pytest.raises(ConfigurationError, match="provider="):
        router.count_tokens("x")
    with pytest.raises(ConfigurationError, match="No provider named 'zzz'"):
        router.count_tokens("x", provider="zzz")
    assert router_with(mock("only")).count_tokens("one two") == 2


# Context-window skip ------------------------------------------------------------------------


LONG_PROMPT = "word " * 400  # ~504 estimated tokens


def test_a_declared_context_window_skips_the_provider_with_the_reason():
    small = mock("small", context_window=100)
    big = mock("big", context_window=100_000)
    router = router_with(small, big, strategy="first-available")
    completion = router.complete(LONG_PROMPT)
    assert completion.provider == "big"
    skipped = completion.attempts[0]
    assert (skipped.provider, skipped.outcome) == ("small", "skipped")
    assert "context window of 100 tokens" in skipped.error
    assert small.calls == 0
    assert router.complete("short").provider == "small"  # a prompt that fits still goes there


def test_max_tokens_counts_against_the_window():
    router = router_with(mock("small", context_window=100), mock("big"), strategy="first-available")
    assert router.complete("short", GenerationParams(max_tokens=50)).provider == "small"
    assert router.complete("short", GenerationParams(max_tokens=200)).provider == "big"


def test_a_context_length_refusal_is_learned():
    class Refusing(MockProvider):
        def complete(self, messages, params=None, *, timeout=None):
            self.calls += 1
            raise InvalidRequestError("This model's maximum context length is 128 tokens", provider=self.name,
                                      status_code=400)

    refusing = Refusing(ProviderConfig(name="refusing", extra={"delay": 0}))
    router = router_with(refusing, mock("big"), strategy="first-available", breaker=False)
    first = router.complete(LONG_PROMPT)
    assert [(a.provider, a.outcome) for a in first.attempts] == [("refusing", "error"), ("big", "ok")]
    second = router.complete(LONG_PROMPT)
    assert [(a.provider, a.outcome) for a in second.attempts] == [("refusing", "skipped"), ("big", "ok")]
    assert "refused a request" in second.attempts[0].error
    assert refusing.calls == 1
    router.remove_provider("refusing")
    router.add_provider(refusing)  # a provider added again starts with nothing learned
    router.remove_provider("big")
    with pytest.raises(AllProvidersFailedError):
        router.complete(LONG_PROMPT)
    assert refusing.calls == 2


def test_every_provider_too_small_fails_with_the_reasons():
    router = router_with(mock("a", context_window=10), mock("b", context_window=20))
    with pytest.raises(AllProvidersFailedError) as info:
        router.complete(LONG_PROMPT)
    assert [type(e) for e in info.value.errors] == [InvalidRequestError, InvalidRequestError]
    assert "context window of 20 tokens" in str(info.value)
    assert router.stats()["failed"] == 1


def test_route_stream_skips_too_small_providers_too():
    router = router_with(mock("small", context_window=10), mock("big"), strategy="first-available")
    stream = router.route_stream(LONG_PROMPT)
    assert "".join(stream).startswith("Mock response")
    assert stream.provider == "big"
    assert [(a.provider, a.outcome) for a in stream.attempts][0] == ("small", "skipped")


def test_no_window_known_means_no_estimate_is_made(monkeypatch):
    import multi_llm_orchestrator.tokens as tokens

    def boom(*args, **kwargs):
        raise AssertionError("estimated without need")

    monkeypatch.setattr(tokens, "estimate_tokens", boom)
    assert router_with(mock("a"), mock("b")).route("hello") == "Mock response to: hello"


def test_at_the_deadline_only_the_batches_still_running_are_named():
    class Hanging(MockProvider):
        def embed(self, texts, *, purpose=None, timeout=None):
            if "hang" in texts:
                self._closed.wait(5.0)
            return super().embed(texts, purpose=purpose, timeout=timeout)

    hanging = Hanging(ProviderConfig(name="h", extra={"delay": 0, "embedding_batch_size": 1}))
    router = router_with(hanging, timeout=0.3)
    with pytest.raises(DeadlineExceededError) as info:
        router.embed(["quick", "hang"], max_parallel=2)
    assert [str(error) for error in info.value.errors] == [
        "[h] batch 2 of 2 (1 texts) was still running when the Router timeout ran out"
    ]
    router.close()


def test_the_joined_usage_counts_no_answer_tokens():
    router = router_with(Recording("a", extra={"embedding_batch_size": 4}))
    result = router.embed(TEXTS)
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (30, 0, 30)


def test_a_provider_returning_something_other_than_embeddings_is_a_failed_attempt():
    class Wrong(MockProvider):
        def embed(self, texts, *, purpose=None, timeout=None):
            return {"vectors": [[0.0]] * len(texts)}

    wrong = Wrong(ProviderConfig(name="wrong", extra={"delay": 0}))
    router = router_with(wrong, Recording("good"), strategy="first-available", breaker=False)
    result = router.embed(["one"])
    assert result.provider == "good"
    assert result.attempts[0].error_type == "ResponseFormatError"
    assert "returned a dict, not Embeddings" in result.attempts[0].error

"""Router behaviour pinned down by the mutation run of issue 18 (calls.py and router.py
survivors): streams cut by close(), embeddings and batch bookkeeping, health reports
checked afresh by default, count_tokens' message with no providers."""

import threading

import pytest

from multi_llm_orchestrator import ConfigurationError, GenerationParams, OrchestratorError, Router
from multi_llm_orchestrator.errors import ProviderError
from multi_llm_orchestrator.providers import MockProvider, ProviderConfig
from multi_llm_orchestrator.types import StreamEnd, Usage

from fakes.mocks import mock, router_with

WAIT = 10.0  # only to catch hangs


class Gated(MockProvider):
    """Streams "one ", then waits for ``gate`` (saying so on ``waiting``), then "two"."""

    def __init__(self, name):
        super().__init__(ProviderConfig(name=name, extra={"delay": 0}))
        self.gate, self.waiting = threading.Event(), threading.Event()

    def stream(self, messages, params=None, *, timeout=None):
        def events():
            yield "one "
            self.waiting.set()
            assert self.gate.wait(WAIT)
            yield "two"
            yield StreamEnd(Usage(1, 2, 3))

        return self._text_stream(events())


class CountingHealth(MockProvider):
    def __init__(self, name):
        super().__init__(ProviderConfig(name=name, extra={"delay": 0}))
        self.checks = 0

    def health_check(self, timeout=None):
        self.checks += 1
        return True


def test_a_stream_closed_with_the_router_before_its_first_read_yields_nothing():
    router = router_with(mock("a"), breaker=False)
    stream = router.route_stream("hello there")
    router.close(grace=0)
    received = []
    with pytest.raises(ProviderError, match="closed"):
        for chunk in stream:
            received.append(chunk)
    assert received == []  # not even the first chunk that had already arrived


def test_a_stream_cut_by_close_after_its_first_chunk_fails_instead_of_ending_as_complete():
    router = router_with(mock("a"), breaker=False)
    stream = router.route_stream("hello there general kenobi")
    first = next(stream)
    router.close(grace=0)
    with pytest.raises(ProviderError, match="closed"):
        for _ in stream:
            pass
    assert stream.text.startswith(first) and stream.usage is None  # no StreamEnd: not a whole answer


def test_a_stream_read_on_another_thread_while_the_router_closes_gets_no_more_text():
    provider = Gated("a")
    router = router_with(provider, breaker=False)
    stream = router.route_stream("hi")
    assert next(stream) == "one "
    outcome = []

    def read_on():
        try:
            outcome.append(next(stream))
        except BaseException as exc:  # noqa: B902 - what the reader sees is the point
            outcome.append(exc)

    reader = threading.Thread(target=read_on)
    reader.start()
    assert provider.waiting.wait(WAIT)  # the reader is inside the provider's stream now
    closer = threading.Thread(target=router.close, kwargs={"grace": 0})
    closer.start()
    closer.join(WAIT)
    provider.gate.set()  # the provider sends more text after close() stopped the attempt
    reader.join(WAIT)
    [seen] = outcome
    assert isinstance(seen, ProviderError) and "closed" in str(seen)


def test_an_embeddings_call_is_reported_as_not_streaming():
    router = router_with(mock("a"), breaker=False)
    events = []
    router.add_listener(events.append)
    router.embed(["some text"])
    [call] = [event for event in events if event.kind == "call"]
    assert call.outcome == "ok" and call.streaming is False
    router.close()


def test_count_tokens_without_providers_says_none_are_registered():
    router = router_with(breaker=False)
    with pytest.raises(ConfigurationError, match="registered: none$"):
        router.count_tokens("hi")
    router.close()


def test_batch_takes_any_iterable_of_prompts_and_checks_max_workers():
    router = router_with(mock("a"), breaker=False)
    results = router.batch((f"prompt {n}" for n in range(3)), GenerationParams(max_tokens=5), max_workers=1)
    assert [result.provider for result in results] == ["a", "a", "a"]
    with pytest.raises(ConfigurationError, match="max_workers"):
        router.batch(["hi"], max_workers=0)
    router.close()


def test_health_report_checks_every_provider_again_unless_cached_is_asked():
    provider = CountingHealth("a")
    router = router_with(provider, breaker=False, health_ttl=300)
    router.health_report()
    router.health_report()
    assert provider.checks == 2
    router.health_report(cached=True)
    assert provider.checks == 2
    router.close()


def test_a_closed_router_refuses_health_checks_without_checking_anything():
    provider = MockProvider(ProviderConfig(name="a", extra={"delay": 0}))
    checks = []
    provider.health_check = lambda: checks.append(1) or True  # what the Router would call
    router = Router()
    router.add_provider(provider)
    router.close()
    for check in (router.health_report, router.health_check):
        with pytest.raises(OrchestratorError, match="closed: create a new one"):
            check()
    assert checks == []

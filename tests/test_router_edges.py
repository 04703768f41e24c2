"""Router behaviour users rely on that no test pinned down before the mutation run of
issue 18: streams ending at the Router's deadline or failing with a non-library error,
close() when a provider's close fails, the all-open fallbacks, settings validation."""

import logging
import time

import pytest

from multi_llm_orchestrator import (
    AllProvidersFailedError,
    ConfigurationError,
    OrchestratorError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    Router,
)
from multi_llm_orchestrator.errors import ProviderError
from multi_llm_orchestrator.providers import MockProvider, ProviderConfig
from multi_llm_orchestrator.streaming import iter_lines

from fakes.mocks import mock, router_with


class ExplodingStream(MockProvider):
    """Streams its first word, then fails with an error that is not the library's."""

    def _words(self, text, usage):
        yield "first "
        raise ValueError("parser bug")


class FailingClose(MockProvider):
    def close(self):
        super().close()
        raise RuntimeError("socket already gone")


def test_a_stream_still_running_at_the_router_deadline_ends_with_a_timeout():
    router = router_with(mock("slow", chunk_delay=0.05), timeout=0.12)
    stream = router.route_stream("one two three four five six seven eight nine ten")
    received = []
    started = time.monotonic()
    with pytest.raises(ProviderTimeoutError, match=r"did not finish within the Router timeout of 0\.12 s") as caught:
        for chunk in stream:
            received.append(chunk)
    assert caught.value.provider == "slow"
    assert received and len(received) < 10
    assert time.monotonic() - started < 5
    assert router.stats()["failed"] == 1
    router.close()


def test_a_non_library_error_mid_stream_becomes_a_provider_error_naming_the_provider():
    router = router_with(ExplodingStream(ProviderConfig(name="buggy", extra={"delay": 0})), breaker=False)
    stream = router.route_stream("hi")
    assert next(stream) == "first "
    with pytest.raises(ProviderError, match="unexpected ValueError: parser bug") as caught:
        next(stream)
    assert caught.value.provider == "buggy" and isinstance(caught.value.__cause__, ValueError)
    assert router.stats()["providers"]["buggy"]["failures_by_type"] == {"ProviderError": 1}


def test_close_goes_on_when_a_provider_fails_to_close(caplog):
    bad = FailingClose(ProviderConfig(name="bad", extra={"delay": 0}))
    good = mock("good")
    router = router_with(bad, good)
    with caplog.at_level(logging.ERROR, logger="multi_llm_orchestrator"):
        router.close()
    assert "Closing provider 'bad' failed" in caplog.text
    assert good._closed.is_set()
    with pytest.raises(OrchestratorError, match="This Router is closed: create a new one"):
        router.route("hi")


def test_every_circuit_open_tries_the_one_closest_to_recovery_or_fails_in_fail_mode():
    router = router_with(mock("late"), mock("soon"), breaker={"failure_threshold": 1, "cooldown": 60})
    late, soon = router._states
    late.breaker.record_failure(RateLimitError("slow down", retry_after=90), late.breaker.reserve())
    soon.breaker.record_failure(ProviderUnavailableError("down"), soon.breaker.reserve())
    completion = router.complete("hi")
    assert completion.provider == "soon"
    assert [(a.provider, a.outcome) for a in completion.attempts] == [("soon", "ok")]

    strict = router_with(mock("a"), mock("b"), breaker={"failure_threshold": 1, "cooldown": 60}, when_all_open="fail")
    for state in strict._states:
        state.breaker.record_failure(ProviderUnavailableError("down"), state.breaker.reserve())
    with pytest.raises(AllProvidersFailedError, match=r"Every provider's circuit is open; the first recovers in (59\.[5-9]|60\.0) s"):
        strict.complete("hi")
    assert sum(p.calls for p in strict.providers) == 0
    router.close()
    strict.close()


def test_bad_router_settings_name_the_setting():
    with pytest.raises(ConfigurationError, match="when_all_open must be one of closest, fail; got 'never'"):
        Router(when_all_open="never")
    with pytest.raises(ConfigurationError, match="max_workers"):
        Router(max_workers=0)
    for name in ("timeout", "health_ttl", "health_timeout", "health_interval"):
        with pytest.raises(ConfigurationError, match=name):
            Router(**{name: -1})


def test_a_response_without_read1_is_read_through_iter_content():
    class OldResponse:
        raw = None

        def __init__(self):
            self.closed = False

        def iter_content(self, chunk_size):
            assert chunk_size is None
            yield b"data: one\n"
            yield b"\ndata: two"

        def close(self):
            self.closed = True

    response = OldResponse()
    lines = iter_lines(response, provider="p", deadline=None, map_exception=lambda e: ProviderError(str(e)))
    assert list(lines) == ["data: one", "", "data: two"] and response.closed


def test_a_provider_removed_and_added_again_is_checked_afresh():
    router = router_with(mock("a", "mock-unhealthy"))
    assert router.health_check() == {"a": False}
    router.remove_provider("a")
    router.add_provider(mock("a"))
    assert router.health_report(cached=True)["a"].healthy  # not the old provider's cached result
    router.close()


def test_a_provider_error_mid_stream_is_raised_as_itself():
    router = router_with(mock("a", fail_after_chunks=1), breaker=False)
    stream = router.route_stream("one two three")
    with pytest.raises(ProviderUnavailableError, match="broke after 1 chunk") as caught:
        list(stream)
    assert caught.value.__cause__ is None and caught.value.provider == "a"
    router.close()

"""Failover on a dead host: with another provider planned, a refused connection is not
retried by the transport (urllib3) before the Router fails over; the last candidate and
a lone provider keep their transport retries; the breaker still counts the failures."""

from __future__ import annotations

import socket
from typing import Any, Iterator, List, Sequence

import pytest

from fakes import FakeOpenAIServer
from multi_llm_orchestrator import MockProvider, ProviderConfig, Router
from multi_llm_orchestrator import http as transport
from multi_llm_orchestrator.errors import AllProvidersFailedError
from multi_llm_orchestrator.failover import fallback_ready, has_fallback
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider
from multi_llm_orchestrator.strategies import Strategy


class InOrder(Strategy):
    """The providers in the order they were added (the dead one first), health ignored."""

    name = "in-order"

    def order(self, states: Sequence, health: object) -> List:
        return list(states)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply="live answer") as server:
        yield server


@pytest.fixture
def dead_connects(monkeypatch) -> Iterator[Any]:
    """A closed loopback port, and the list of connection attempts made to it."""
    port = closed_port()
    attempts: List[int] = []
    original = transport._open_socket  # where every provider request's connection is opened

    def counting(connection, transfer):
        if connection.port == port:
            attempts.append(port)
        return original(connection, transfer)

    monkeypatch.setattr(transport, "_open_socket", counting)
    counting.port = port  # type: ignore[attr-defined]
    counting.attempts = attempts  # type: ignore[attr-defined]
    yield counting


def provider(name: str, base_url: str, **fields: Any) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(ProviderConfig(name=name, model="fake-model", base_url=base_url, **fields))


def dead_url(dead_connects: Any) -> str:
    return f"http://127.0.0.1:{dead_connects.port}/v1"


@pytest.mark.parametrize("timeout", [None, 10.0], ids=["plain path", "deadline path"])
def test_refused_connection_is_not_retried_when_another_provider_waits(live, dead_connects, timeout):
    router = Router(strategy=InOrder())
    router.add_provider(provider("dead", dead_url(dead_connects)))  # default max_retries (2)
    router.add_provider(provider("live", live.url))
    with router:
        answer = router.complete("hi", timeout=timeout)
    assert answer.provider == "live" and answer.text == "live answer"
    assert len(dead_connects.attempts) == 1  # no transport retry: failed over at once
    assert [(a.provider, a.outcome, a.error_type) for a in answer.attempts] == [
        ("dead", "error", "ProviderUnavailableError"),
        ("live", "ok", None),
    ]


def test_hedged_path_fails_over_without_transport_retries(live, dead_connects):
    router = Router(strategy=InOrder(), hedge_after=5.0)
    router.add_provider(provider("dead", dead_url(dead_connects), max_retries=3))
    router.add_provider(provider("live", live.url))
    with router:
        assert router.complete("hi").provider == "live"
    assert len(dead_connects.attempts) == 1


def test_a_hedge_in_a_race_fails_over_without_transport_retries(live, dead_connects):
    # The slow first attempt is raced: the first hedge (dead) has another provider after
    # it, so it fails over at once; the second hedge (live) answers.
    slow = MockProvider(ProviderConfig(name="slow", extra={"delay": 3}))
    router = Router(strategy=InOrder(), hedge_after=0.05, max_hedges=2, hedge_budget=1.0)
    for member in (slow, provider("dead", dead_url(dead_connects), max_retries=1), provider("live", live.url)):
        router.add_provider(member)
    with router:
        answer = router.complete("hi", timeout=10)
    assert answer.provider == "live"
    assert len(dead_connects.attempts) == 1


def test_lone_provider_keeps_its_transport_retries(dead_connects):
    # max_retries=1: one retry with no backoff (the second would sleep 0.5 s).
    router = Router()
    router.add_provider(provider("dead", dead_url(dead_connects), max_retries=1))
    with router, pytest.raises(AllProvidersFailedError):
        router.complete("hi", timeout=10)
    assert len(dead_connects.attempts) == 2


def test_last_candidate_keeps_its_transport_retries(live, dead_connects):
    router = Router(strategy=InOrder())
    router.add_provider(provider("live-first", live.url))
    router.add_provider(provider("dead", dead_url(dead_connects), max_retries=1))
    with router:
        router.remove_provider("live-first")  # only the dead one is left, alone
        with pytest.raises(AllProvidersFailedError):
            router.complete("hi")
    assert len(dead_connects.attempts) == 2
    dead_connects.attempts.clear()
    both_dead = Router(strategy=InOrder())
    both_dead.add_provider(provider("dead-1", dead_url(dead_connects), max_retries=1))
    both_dead.add_provider(provider("dead-2", dead_url(dead_connects), max_retries=1))
    with both_dead, pytest.raises(AllProvidersFailedError):
        both_dead.complete("hi")
    assert len(dead_connects.attempts) == 1 + 2  # the first fails over, the last retries


def test_breaker_still_opens_on_the_dead_provider(live, dead_connects):
    router = Router(strategy=InOrder())  # default breaker: opens after 5 failures
    router.add_provider(provider("dead", dead_url(dead_connects)))
    router.add_provider(provider("live", live.url))
    with router:
        for _ in range(8):
            assert router.complete("hi").provider == "live"
        assert router.stats()["providers"]["dead"]["breaker"]["state"] == "open"
    assert len(dead_connects.attempts) == 5  # one per call until the circuit opened


def test_fallback_flag_is_per_thread_and_restored():
    assert has_fallback() is False
    with fallback_ready(True):
        assert has_fallback() is True
        with fallback_ready(False):
            assert has_fallback() is False
        assert has_fallback() is True
    assert has_fallback() is False

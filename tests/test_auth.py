"""TokenCache on its own: single flight, refresh in time and after a 401, deadlines, scrub."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from multi_llm_orchestrator.auth import REMEMBERED_TOKENS, Token, TokenCache, time_left
from multi_llm_orchestrator.errors import (
    AuthenticationError,
    InvalidRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)


class Fetcher:
    """A fetch handing out t1, t2, ... with a lifetime, counting calls."""

    def __init__(self, lifetime=None, delay=0.0, clock=None, advance=0.0):
        self.lifetime = lifetime
        self.delay = delay
        self.clock = clock  # a FakeClock the fetch moves forward by ``advance``
        self.advance = advance
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, deadline):
        with self.lock:
            self.calls += 1
            number = self.calls
        time.sleep(self.delay)
        if self.clock is not None:
            self.clock.now += self.advance
        return f"t{number}", self.lifetime


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def rejected_401(owner="p"):
    return AuthenticationError("rejected", provider=owner, status_code=401)


def in_threads(count, work):
    start = threading.Barrier(count, timeout=5)

    def run(index):
        start.wait()
        return work(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def soon(seconds=5.0):
    return time.monotonic() + seconds


# Single flight ----------------------------------------------------------------------------


def test_32_threads_needing_a_token_share_one_fetch():
    fetch = Fetcher(lifetime=600, delay=0.1)  # every thread arrives while t1 is on its way
    tokens = TokenCache(fetch, owner="p")
    got = in_threads(32, lambda i: tokens.get(soon()))
    assert fetch.calls == 1
    assert {(t.value, t.generation) for t in got} == {("t1", 1)}


def test_a_failed_fetch_leaves_no_token_and_the_next_call_fetches_again():
    attempts = []

    def fetch(deadline):
        attempts.append(deadline)
        if len(attempts) == 1:
            raise ProviderUnavailableError("OAuth down", provider="p")
        return "t2", None

    tokens = TokenCache(fetch, owner="p")
    with pytest.raises(ProviderUnavailableError):
        tokens.get(soon())
    assert tokens.token is None
    assert tokens.get(soon()).value == "t2" and len(attempts) == 2


# Refresh in time --------------------------------------------------------------------------


def test_a_token_is_refreshed_when_its_lifetime_has_run_out():
    clock = FakeClock()
    fetch = Fetcher(lifetime=100)
    tokens = TokenCache(fetch, owner="p", clock=clock)
    assert tokens.get(soon()).value == "t1"
    clock.now += 99.9
    assert tokens.get(soon()).value == "t1"
    clock.now += 0.1
    assert tokens.get(soon()).value == "t2"
    assert fetch.calls == 2


def test_the_lifetime_counts_from_when_the_fetch_started():
    clock = FakeClock(1000.0)
    tokens = TokenCache(Fetcher(lifetime=100, clock=clock, advance=30), owner="p", clock=clock)
    assert tokens.get(soon()).refresh_at == 1100.0


def test_a_starting_token_is_replaced_after_its_lifetime():
    clock = FakeClock()
    fetch = Fetcher(lifetime=100)
    tokens = TokenCache(fetch, owner="p", token="given", lifetime=50, clock=clock)
    assert tokens.get(soon()).value == "given" and fetch.calls == 0
    clock.now += 50
    assert tokens.get(soon()).value == "t1"


def test_a_token_without_a_lifetime_is_kept_until_a_401():
    clock = FakeClock()
    fetch = Fetcher()
    tokens = TokenCache(fetch, owner="p", token="given", clock=clock)
    clock.now += 1e9
    given = tokens.get(soon())
    assert given.value == "given" and given.refresh_at is None and fetch.calls == 0
    assert tokens.refresh(given, soon()).value == "t1"


# Refresh after a 401 ----------------------------------------------------------------------


def test_a_401_storm_from_many_threads_refreshes_once():
    fetch = Fetcher(delay=0.05)
    tokens = TokenCache(fetch, owner="p")
    all_hold_t1 = threading.Barrier(16, timeout=5)
    sent = []

    def send(token, timeout):
        sent.append(token)
        if token == "t1":
            all_hold_t1.wait()  # every thread got t1 before any 401 comes back
            raise rejected_401()
        return token

    assert in_threads(16, lambda i: tokens.call(send, soon())) == ["t2"] * 16
    assert fetch.calls == 2  # the first token and one refresh
    assert sorted(sent) == ["t1"] * 16 + ["t2"] * 16


def test_a_401_on_an_old_generation_does_not_refetch():
    fetch = Fetcher()
    tokens = TokenCache(fetch, owner="p")
    first = tokens.get(soon())
    second = tokens.refresh(first, soon())
    assert (second.value, second.generation) == ("t2", 2)
    again = tokens.refresh(first, soon())  # a late 401 on t1, already replaced
    assert again is second and fetch.calls == 2
    assert tokens.refresh(second, soon()).value == "t3"  # a 401 on the current one does refetch


def test_call_retries_once_after_a_401_then_gives_up():
    fetch = Fetcher()
    tokens = TokenCache(fetch, owner="p")
    sent = []

    def send(token, timeout):
        sent.append(token)
        raise rejected_401()

    with pytest.raises(AuthenticationError) as info:
        tokens.call(send, soon())
    assert info.value.status_code == 401
    assert sent == ["t1", "t2"] and fetch.calls == 2


@pytest.mark.parametrize(
    "error",
    [AuthenticationError("denied", provider="p", status_code=403), InvalidRequestError("bad", provider="p")],
)
def test_call_does_not_refresh_on_other_errors(error):
    fetch = Fetcher()
    tokens = TokenCache(fetch, owner="p")

    def send(token, timeout):
        raise error

    with pytest.raises(type(error)):
        tokens.call(send, soon())
    assert fetch.calls == 1


def test_without_fetch_a_401_is_final_and_the_token_is_kept():
    tokens = TokenCache(None, owner="p", token="given")
    assert not tokens.refreshable
    calls = []

    def send(token, timeout):
        calls.append(token)
        raise rejected_401()

    with pytest.raises(AuthenticationError):
        tokens.call(send, soon())
    assert calls == ["given"]
    assert tokens.get(soon()).value == "given"


# The lock and deadlines -------------------------------------------------------------------


def test_the_lock_is_not_held_during_api_calls():
    tokens = TokenCache(Fetcher(), owner="p")
    together = threading.Barrier(8, timeout=2)

    def send(token, timeout):
        together.wait()  # breaks (BrokenBarrierError) if the calls were serialised
        return token

    assert in_threads(8, lambda i: tokens.call(send, soon())) == ["t1"] * 8


def test_a_refresh_does_not_wait_for_calls_in_flight():
    tokens = TokenCache(Fetcher(), owner="p")
    inside, release = threading.Event(), threading.Event()

    def slow_send(token, timeout):
        inside.set()
        release.wait(5)
        return token

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(tokens.call, slow_send, soon())
        assert inside.wait(5)
        started = time.monotonic()
        assert tokens.refresh(tokens.get(soon()), soon(2)).value == "t2"
        assert time.monotonic() - started < 1
        release.set()
        assert pending.result(5) == "t1"


def test_waiting_for_another_threads_fetch_respects_the_deadline():
    release = threading.Event()
    fetching = threading.Event()

    def slow_fetch(deadline):
        fetching.set()
        release.wait(5)
        return "t1", None

    tokens = TokenCache(slow_fetch, owner="p")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(tokens.get, soon())
        assert fetching.wait(5)
        started = time.monotonic()
        with pytest.raises(ProviderTimeoutError, match="waiting for the access token") as info:
            tokens.get(time.monotonic() + 0.2)
        assert 0.15 < time.monotonic() - started < 1.5
        assert info.value.provider == "p"
        release.set()
        assert first.result(5).value == "t1"


def test_the_fetch_counts_against_the_calls_deadline():
    tokens = TokenCache(Fetcher(delay=0.3), owner="p")
    sent = []
    with pytest.raises(ProviderTimeoutError, match="token"):
        tokens.call(lambda token, timeout: sent.append(timeout), time.monotonic() + 0.2)
    assert sent == []


def test_send_gets_only_the_time_that_is_left():
    tokens = TokenCache(Fetcher(delay=0.2), owner="p")
    timeouts = []
    tokens.call(lambda token, timeout: timeouts.append(timeout), time.monotonic() + 2)
    assert 1.0 < timeouts[0] <= 1.81


def test_time_left():
    assert 0 < time_left(time.monotonic() + 1, "p") <= 1
    with pytest.raises(ProviderTimeoutError) as info:
        time_left(time.monotonic() - 0.001, "p")
    assert info.value.provider == "p"


# Sharing a failed fetch -------------------------------------------------------------------


def failing_fetch(error, started, release, calls):
    def fetch(deadline):
        calls.append(1)
        started.set()
        release.wait(5)
        raise error

    return fetch


@pytest.mark.parametrize("share, expected_fetches", [(True, 1), (False, 8)])
def test_threads_that_waited_share_a_failure_only_when_asked(share, expected_fetches):
    started, release, calls = threading.Event(), threading.Event(), []
    error = AuthenticationError("bad key", provider="p", status_code=401)
    tokens = TokenCache(failing_fetch(error, started, release, calls), owner="p", share_failures=share)

    def get(_):
        try:
            tokens.get(soon())
        except AuthenticationError as exc:
            return exc
        return None

    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(get, 0)
        assert started.wait(5)
        waiting = [pool.submit(get, i) for i in range(1, 8)]
        time.sleep(0.1)  # the other seven are now queued on the lock
        release.set()
        errors = [first.result(5)] + [f.result(5) for f in waiting]
    assert len(calls) == expected_fetches
    assert all(isinstance(e, AuthenticationError) and "bad key" in str(e) for e in errors)
    if share:
        assert len({id(e) for e in errors}) == 8  # copies: no two threads raise one object


def test_a_timeout_is_never_shared():
    started, release, calls = threading.Event(), threading.Event(), []
    error = ProviderTimeoutError("the other caller ran out of time", provider="p")
    tokens = TokenCache(failing_fetch(error, started, release, calls), owner="p", share_failures=True)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(tokens.get, soon())
        assert started.wait(5)
        second = pool.submit(tokens.get, soon())
        time.sleep(0.1)
        release.set()
        for future in (first, second):
            with pytest.raises(ProviderTimeoutError):
                future.result(5)
    assert len(calls) == 2  # the waiting thread tried with its own budget


# Secrets ----------------------------------------------------------------------------------


def test_scrub_removes_the_starting_token_and_the_fetched_ones():
    fetch = Fetcher()
    tokens = TokenCache(fetch, owner="p", token="given-SECRET")
    token = tokens.get(soon())
    for _ in range(2):
        token = tokens.refresh(token, soon())
    assert token.value == "t2"
    text = tokens.scrub("echo given-SECRET t1 t2 and other-text")
    assert text == "echo <redacted> <redacted> <redacted> and other-text"


def test_scrub_remembers_only_the_latest_tokens():
    fetch = Fetcher()
    tokens = TokenCache(fetch, owner="p")
    token = tokens.get(soon())
    for _ in range(REMEMBERED_TOKENS + 2):
        token = tokens.refresh(token, soon())
    latest = [f"t{n}" for n in range(fetch.calls - REMEMBERED_TOKENS, fetch.calls + 1)]
    assert all(tokens.scrub(value) == "<redacted>" for value in latest)
    assert tokens.scrub("t1") == "t1"  # long replaced, no longer kept in memory


def test_reprs_never_show_a_token():
    tokens = TokenCache(lambda deadline: ("SECRET-fetched", None), owner="p", token="SECRET-given")
    given = tokens.token
    fetched = tokens.refresh(given, soon())
    for text in (repr(tokens), str(tokens), repr(given), repr(fetched), str(fetched)):
        assert "SECRET" not in text
    assert isinstance(fetched, Token) and fetched.generation == 1

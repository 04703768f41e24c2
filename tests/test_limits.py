"""The Limiter interface and its in-memory implementation: exactness, reconciliation,
server signals. Fake clocks, no sleeps (the loopback test runs on real time)."""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from multi_llm_orchestrator.errors import ConfigurationError
from multi_llm_orchestrator.limits import (
    Limits,
    MemoryLimiter,
    Refusal,
    Reservation,
    attempt_feedback,
    parse_duration,
    report_response,
)

from fakes import FakeOpenAIServer, Fault
from fakes.timing import FakeClock, max_in_window



# Configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, fragment",
    [
        ({"rpm": 0}, "limits.rpm must be an integer >= 1"),
        ({"rpm": 1.5}, "limits.rpm must be an integer"),
        ({"tpm": -5}, "limits.tpm"),
        ({"max_concurrency": True}, "limits.max_concurrency"),
        ({"window": 0}, "limits.window"),
        ({"window": float("nan")}, "limits.window"),
        ({"count_tokens": "yes"}, "limits.count_tokens"),
        ({"rps": 5}, "Unknown limits setting 'rps'"),
        ("600", "limits must be a dict"),
    ],
)
def test_each_bad_limit_is_a_configuration_error(value, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        Limits.from_value(value)


def test_limits_from_value_accepts_dict_instance_and_none():
    assert Limits.from_value(None) is None
    limits = Limits.from_value({"rpm": 600, "max_concurrency": 4})
    assert (limits.rpm, limits.tpm, limits.max_concurrency, limits.window) == (600, None, 4, 60.0)
    assert Limits.from_value(limits) is limits


# rpm ---------------------------------------------------------------------------------


def test_rpm_refuses_the_request_over_the_limit_and_says_when_capacity_returns():
    clock = FakeClock()
    limiter = MemoryLimiter(Limits(rpm=3), clock)
    grants = []
    for _ in range(3):
        grant = limiter.acquire()
        assert isinstance(grant, Reservation)
        grants.append(grant)
        clock.advance(1)
        limiter.release(grant)
    refused = limiter.acquire()
    assert isinstance(refused, Refusal)
    assert "rpm 3" in refused.reason
    # The first request was released at t=1001: its slot frees at 1061; now is 1003.
    assert refused.retry_after == pytest.approx(58.0)
    assert "capacity returns in 58.00 s" in refused.describe()
    clock.advance(58)
    assert isinstance(limiter.acquire(), Reservation)


def test_an_rpm_slot_is_held_while_in_flight_and_a_window_after_release():
    clock = FakeClock()
    limiter = MemoryLimiter(Limits(rpm=1), clock)
    grant = limiter.acquire()
    clock.advance(500)  # a very long call: the server saw its start at some unknown moment
    refused = limiter.acquire()
    assert isinstance(refused, Refusal) and refused.retry_after is None
    limiter.release(grant)
    clock.advance(59.9)
    assert isinstance(limiter.acquire(), Refusal)
    clock.advance(0.1)
    assert isinstance(limiter.acquire(), Reservation)


def test_a_request_never_sent_is_refunded():
    clock = FakeClock()
    limiter = MemoryLimiter(Limits(rpm=1, tpm=100), clock)
    grant = limiter.acquire(80)
    limiter.release(grant, sent=False)
    limiter.release(grant, sent=False)  # idempotent: no negative counts
    assert limiter.snapshot()["requests_in_window"] == 0
    again = limiter.acquire(100)
    assert isinstance(again, Reservation)


def test_rpm_is_exact_under_64_threads_with_a_fake_clock():
    clock = FakeClock()
    limiter = MemoryLimiter(Limits(rpm=50), clock)
    granted = []
    lock = threading.Lock()

    def worker(_):
        for _ in range(40):
            grant = limiter.acquire()
            if isinstance(grant, Reservation):
                with lock:
                    granted.append(clock())
                limiter.release(grant)
            clock.advance(0.01)

    with ThreadPoolExecutor(64) as pool:
        list(pool.map(worker, range(64)))
    assert max_in_window(granted, 60.0) <= 50
    assert len(granted) >= 50


# max_concurrency ------------------------------------------------------------------------


def test_max_concurrency_is_exact_under_64_threads():
    limiter = MemoryLimiter(Limits(max_concurrency=5))
    inside = 0
    peak = 0
    lock = threading.Lock()
    barrier = threading.Barrier(64)

    def worker(_):
        nonlocal inside, peak
        barrier.wait()
        admitted = 0
        for _ in range(200):
            grant = limiter.acquire()
            if isinstance(grant, Refusal):
                assert grant.retry_after is None and "max_concurrency 5" in grant.reason
                continue
            with lock:
                inside += 1
                peak = max(peak, inside)
            with lock:
                inside -= 1
            limiter.release(grant)
            admitted += 1
        return admitted

    with ThreadPoolExecutor(64) as pool:
        admitted = sum(pool.map(worker, range(64)))
    assert 1 <= peak <= 5
    assert admitted > 0
    assert limiter.snapshot()["in_flight"] == 0


def test_rpm_and_concurrency_are_exact_against_a_loopback_servers_own_log():
    """64 threads, real sockets: the server's log of request starts never shows more
    than rpm starts in any window, nor more than max_concurrency requests at once."""
    window, rpm, concurrency = 0.5, 12, 4
    limiter = MemoryLimiter(Limits(rpm=rpm, max_concurrency=concurrency, window=window))
    starts, lock = [], threading.Lock()
    active = [0, 0]  # now, peak (as the server counts)

    def hook(request):
        with lock:
            starts.append(time.monotonic())
            active[0] += 1
            active[1] = max(active[1], active[0])
        return Fault(delay=0.002)

    def on_done():
        with lock:
            active[0] -= 1

    deadline = time.monotonic() + 1.6
    with FakeOpenAIServer() as server:
        server.fault_hook = hook
        url = server.url + "/chat/completions"

        def worker(_):
            session = requests.Session()
            while time.monotonic() < deadline:
                grant = limiter.acquire(1)
                if isinstance(grant, Refusal):
                    time.sleep(0.002)
                    continue
                try:
                    session.post(url, json={"model": server.model, "messages": [{"role": "user", "content": "hi"}]},
                                 timeout=5).raise_for_status()
                finally:
                    on_done()
                    limiter.release(grant)
            session.close()

        with ThreadPoolExecutor(64) as pool:
            list(pool.map(worker, range(64)))
    assert max_in_window(starts, window) <= rpm
    assert active[1] <= concurrency
    assert len(starts) >= 2 * rpm  # the limit was reached in several windows, not starved


# tpm and reconciliation ---------------------------------------------------------------------


def test_tpm_counts_estimates_and_converges_to_real_usage():
    clock = FakeClock()
    limiter = MemoryLimiter(Limits(tpm=1000), clock)
    first = limiter.acquire(600)  # estimate: prompt + max_tokens
    assert isinstance(first, Reservation)
    refused = limiter.acquire(500)
    assert isinstance(refused, Refusal) and "tpm 1000" in refused.reason
    limiter.reconcile(first, 150)  # the real usage was much smaller
    limiter.release(first)
    assert limiter.snapshot()["tokens_in_window"] == 150
    second = limiter.acquire(850)
    assert isinstance(second, Reservation)
    assert isinstance(limiter.acquire(1), Refusal)
    # Reconciling after release adjusts the window too.
    limiter.release(second)
    limiter.reconcile(second, 100)
    assert limiter.snapshot()["tokens_in_window"] == 250
    clock.advance(60)
    assert limiter.snapshot()["tokens_in_window"] == 0
    limiter.reconcile(first, 999)  # expired entries no longer count
    assert limiter.snapshot()["tokens_in_window"] == 0


def test_tpm_retry_after_is_when_enough_tokens_leave_the_window():
    clock = FakeClock()
    limiter = MemoryLimiter(Limits(tpm=100), clock)
    for tokens in (30, 30, 30):
        grant = limiter.acquire(tokens)
        limiter.release(grant)
        clock.advance(10)
    refused = limiter.acquire(50)  # 90 used, 40 over: the two oldest (t=1000, 1010) must leave
    assert refused.retry_after == pytest.approx(1010 + 60 - 1030)


def test_one_request_larger_than_tpm_is_refused_for_ever():
    limiter = MemoryLimiter(Limits(tpm=100))
    refused = limiter.acquire(101)
    assert isinstance(refused, Refusal) and math.isinf(refused.retry_after)
    assert "waiting does not help" in refused.describe()


# Server signals ---------------------------------------------------------------------------


def test_a_429_blocks_for_retry_after_or_a_default_pause():
    clock = FakeClock()
    limiter = MemoryLimiter(Limits(rpm=1000), clock)
    limiter.penalize(2.5)
    refused = limiter.acquire()
    assert isinstance(refused, Refusal) and refused.retry_after == pytest.approx(2.5)
    assert "429" in refused.reason
    clock.advance(2.5)
    assert isinstance(limiter.acquire(), Reservation)
    limiter.penalize(None)
    assert limiter.acquire().retry_after == pytest.approx(1.0)


def test_ratelimit_headers_bound_admissions_until_their_reset():
    clock = FakeClock()
    limiter = MemoryLimiter(Limits(rpm=1000, tpm=10**6), clock)
    limiter.update_from_headers({
        "x-ratelimit-remaining-requests": "2", "x-ratelimit-reset-requests": "6m0s",
        "x-ratelimit-remaining-tokens": "500", "x-ratelimit-reset-tokens": "1s",
    })
    assert isinstance(limiter.acquire(100), Reservation)
    refused = limiter.acquire(450)  # 400 tokens left per the server
    assert "400 tokens remaining" in refused.reason and refused.retry_after == pytest.approx(1.0)
    assert isinstance(limiter.acquire(400), Reservation)
    refused = limiter.acquire(0)
    assert "0 requests remaining" in refused.reason and refused.retry_after == pytest.approx(360.0)
    clock.advance(360)
    assert isinstance(limiter.acquire(10), Reservation)


def test_unreadable_headers_are_ignored():
    limiter = MemoryLimiter(Limits(rpm=5))
    limiter.update_from_headers({"x-ratelimit-remaining-requests": "lots", "x-ratelimit-reset-requests": "1s"})
    limiter.update_from_headers({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "soon"})
    assert isinstance(limiter.acquire(), Reservation)


@pytest.mark.parametrize(
    "text, seconds",
    [("6m0s", 360.0), ("1s", 1.0), ("12ms", 0.012), ("1h2m3.5s", 3723.5), ("2.5", 2.5), ("0s", 0.0),
     ("", None), ("5x", None), ("-1", None), ("inf", None), ("1s junk", None), (None, None)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_report_response_reaches_only_the_limiter_of_this_threads_attempt():
    clock = FakeClock()
    limiter = MemoryLimiter(Limits(rpm=100), clock)
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "3s"}
    report_response(200, headers)  # no attempt running: nothing to update
    assert isinstance(limiter.acquire(), Reservation)
    with attempt_feedback(limiter):
        report_response(200, headers)
    assert limiter.acquire().retry_after == pytest.approx(3.0)

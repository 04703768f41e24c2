"""Hostile servers (issue 11, part A): every byte under the deadline, bounded reads,
abandoned attempts that free their workers, a close() that never hangs.

The server runs in its own process (``fakes/hostile_server.py``), so the threads and
file descriptors counted here are the client's alone.
"""

import gc
import os
import socket
import sys
import threading
import time
import types
import warnings

import pytest
from urllib3.connection import HTTPConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from fakes.hostile_server import TRICKLE_S, HostileServer

from multi_llm_orchestrator import (
    AllProvidersFailedError,
    ConfigurationError,
    Embeddings,
    OrchestratorError,
    ProviderConfig,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    ResponseFormatError,
    Router,
)
from multi_llm_orchestrator import http as transport
from multi_llm_orchestrator.hedging import HedgePolicy
from multi_llm_orchestrator.transfers import Transfer, TransferCut
from multi_llm_orchestrator.providers.gigachat import GigaChatProvider
from multi_llm_orchestrator.strategies import Strategy
from multi_llm_orchestrator.providers.ollama import OllamaProvider
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider

TIMEOUT = 0.6
MARGIN = 0.35  # "its timeout plus a small margin", generous for a loaded machine
SMALL_LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def server():
    with HostileServer() as server:
        yield server


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def library_threads():
    return [t for t in threading.enumerate() if t.name.startswith("mlo-") and t.is_alive()]


def settle(condition, seconds=3.0):
    deadline = time.monotonic() + seconds
    while True:
        gc.collect()
        if condition() or time.monotonic() > deadline:
            return condition()
        time.sleep(0.02)


@pytest.fixture
def leaks():
    """Asserts that the test left no library thread and no file descriptor behind."""
    gc.collect()
    before = open_fds()
    yield
    assert settle(lambda: not library_threads()), library_threads()
    assert settle(lambda: open_fds() <= before), f"{open_fds()} fds open, {before} before"


def openai(server, behaviour, **fields):
    fields.setdefault("timeout", TIMEOUT)
    fields.setdefault("max_retries", 0)
    return OpenAICompatibleProvider(ProviderConfig(
        name=fields.pop("name", behaviour), model="hostile-model", base_url=server.url(behaviour) + "/v1", **fields))


@pytest.fixture(scope="module")
def unanswered():
    """A loopback port whose connects hang, as a firewalled host's do: its listener
    never accepts and its queue is full, so the kernel drops further SYNs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname(), timeout=1.0)
    probe = socket.socket()
    probe.settimeout(0.2)
    try:
        with pytest.raises(TimeoutError):  # the fixture does what it says
            probe.connect(listener.getsockname())
    finally:
        probe.close()
    yield listener.getsockname()[1]
    filler.close()
    listener.close()


@pytest.fixture(scope="module")
def silent_tls():
    """A loopback port that takes TCP connections (its listener's queue does) but never
    answers a TLS handshake."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield listener.getsockname()[1]
    listener.close()


def unanswered_provider(port, name="unanswered"):
    return OpenAICompatibleProvider(ProviderConfig(
        name=name, model="m", base_url=f"http://127.0.0.1:{port}/v1", timeout=5, max_retries=0))


def timed(call):
    started = time.monotonic()
    try:
        return call(), time.monotonic() - started
    except Exception as exc:
        return exc, time.monotonic() - started


# 1. Deadlines cover every byte -----------------------------------------------------------


def test_a_body_trickling_one_byte_at_a_time_ends_at_the_provider_timeout(server, leaks):
    with openai(server, "trickle") as provider:
        error, wall = timed(lambda: provider.complete("hi"))
    assert isinstance(error, ProviderTimeoutError), error
    assert "still arriving" in str(error) and "0.6 s" in str(error)
    assert TIMEOUT - 0.05 < wall < TIMEOUT + MARGIN, wall


def test_headers_trickling_one_byte_at_a_time_end_at_the_provider_timeout(server, leaks):
    # Each byte comes well within the read timeout: only a deadline over the whole
    # request ends it.
    with openai(server, "trickle-headers") as provider:
        error, wall = timed(lambda: provider.complete("hi"))
        assert isinstance(error, ProviderTimeoutError), error
        assert TIMEOUT - 0.05 < wall < TIMEOUT + MARGIN, wall
        error, wall = timed(lambda: "".join(provider.stream("hi")))
        assert isinstance(error, ProviderTimeoutError), error
        assert wall < TIMEOUT + MARGIN, wall


def test_the_provider_timeout_bounds_a_call_through_a_router_without_timeout(server, leaks):
    with Router() as router:
        router.add_provider(openai(server, "trickle"))
        error, wall = timed(lambda: router.route("hi"))
    assert isinstance(error, AllProvidersFailedError) and isinstance(error.errors[0], ProviderTimeoutError), error
    assert wall < TIMEOUT + MARGIN, wall


def test_health_checks_and_the_gigachat_oauth_answer_are_bounded_too(server, leaks):
    with openai(server, "trickle") as provider:
        healthy, wall = timed(lambda: provider.health_check())
        assert healthy is False and wall < TIMEOUT + MARGIN, wall
        models, wall = timed(lambda: provider.list_models())
        assert isinstance(models, ProviderTimeoutError) and wall < TIMEOUT + MARGIN, (models, wall)
    giga = GigaChatProvider(ProviderConfig(
        name="giga", api_key="aG9zdGlsZTpzZWNyZXQ=", base_url=server.url("ok") + "/api/v1",
        auth_url=server.url("trickle") + "/oauth", timeout=TIMEOUT, max_retries=0))
    with giga:
        error, wall = timed(lambda: giga.complete("hi"))
        assert isinstance(error, ProviderTimeoutError), error
        assert wall < TIMEOUT + MARGIN, wall
        healthy, wall = timed(lambda: giga.health_check())
        assert healthy is False and wall < TIMEOUT + MARGIN, wall
    with Router(health_timeout=TIMEOUT) as router:
        router.add_provider(openai(server, "trickle-headers"))
        report, wall = timed(lambda: router.health_check())
        assert report == {"trickle-headers": False} and wall < TIMEOUT + MARGIN, (report, wall)


def test_a_body_cut_by_a_reset_is_a_typed_error_and_the_pool_recovers(server, leaks):
    with openai(server, "reset-mid-body") as provider:
        error, wall = timed(lambda: provider.complete("hi"))
        assert isinstance(error, ProviderUnavailableError), error
    with openai(server, "ok") as provider:
        assert provider.complete("hi").text == "Answer to: hi"
        assert provider.complete("again").text == "Answer to: again"


# 4. Reads are bounded --------------------------------------------------------------------


@pytest.mark.parametrize("behaviour", ["huge", "huge-length", "gzip-bomb"])
def test_a_body_over_max_response_bytes_fails_as_soon_as_it_passes_the_limit(server, leaks, behaviour):
    with openai(server, behaviour, timeout=20, max_response_bytes=SMALL_LIMIT) as provider:
        error, wall = timed(lambda: provider.complete("hi"))
    assert isinstance(error, ResponseFormatError), error
    assert f"max_response_bytes={SMALL_LIMIT}" in str(error)
    assert wall < 2.0, wall  # 200 MB (or 64 MB inflated) were on offer


def test_the_default_limit_stops_a_200_mb_answer(server, leaks):
    with openai(server, "huge", timeout=20) as provider:
        error, wall = timed(lambda: provider.complete("hi"))
    assert isinstance(error, ResponseFormatError) and "max_response_bytes=16777216" in str(error), error
    assert wall < 5.0, wall


@pytest.mark.parametrize("behaviour", ["huge-line", "endless-event"])
def test_a_stream_line_or_event_over_the_limit_fails_at_once(server, leaks, behaviour):
    with openai(server, behaviour, timeout=20, max_response_bytes=SMALL_LIMIT) as provider:
        error, wall = timed(lambda: "".join(provider.stream("hi")))
    assert isinstance(error, ResponseFormatError), error
    assert f"max_response_bytes={SMALL_LIMIT}" in str(error)
    assert wall < 2.0, wall


def test_an_ndjson_line_over_the_limit_fails_at_once(server, leaks):
    provider = OllamaProvider(ProviderConfig(
        name="ollama", model="m", base_url=server.url("huge-line"), timeout=20, max_retries=0,
        max_response_bytes=SMALL_LIMIT))
    with provider:
        error, wall = timed(lambda: "".join(provider.stream("hi")))
    assert isinstance(error, ResponseFormatError) and "a line of the stream" in str(error), error
    assert wall < 2.0, wall


def test_only_the_start_of_an_endless_error_body_is_read(server, leaks):
    with openai(server, "error-huge", timeout=20) as provider:
        error, wall = timed(lambda: provider.complete("hi"))
    assert isinstance(error, ProviderUnavailableError) and error.status_code == 500, error
    assert wall < 1.0, wall


def test_max_response_bytes_is_validated():
    with pytest.raises(ConfigurationError, match="max_response_bytes"):
        ProviderConfig(name="p", max_response_bytes=0)
    with pytest.raises(ConfigurationError, match="max_response_bytes"):
        ProviderConfig(name="p", max_response_bytes="1MB")


# 5. The line reader is linear ------------------------------------------------------------


class ScriptedRaw:
    def __init__(self, blocks):
        self.blocks = iter(blocks)

    def read1(self, amount, decode_content=None):
        return next(self.blocks, b"")


class ScriptedResponse:
    def __init__(self, blocks):
        self.raw = ScriptedRaw(blocks)

    def close(self):
        pass


def test_a_long_line_in_small_blocks_is_read_in_linear_time():
    # 8 MB in 1 KB blocks: re-joining the partial line on every block copies ~32 GB.
    from multi_llm_orchestrator.streaming import iter_lines

    blocks = [b"x" * 1024] * 8192 + [b"\nnext\n"]
    started = time.monotonic()
    lines = list(iter_lines(
        ScriptedResponse(blocks), provider="p", deadline=None, map_exception=lambda exc: ProviderError(str(exc))))
    wall = time.monotonic() - started
    assert [len(line) for line in lines] == [8 * 1024 * 1024, 4]
    assert wall < 1.0, wall


# 2. Abandoned attempts free their workers ---------------------------------------------------


class InOrder(Strategy):
    """The providers in the order they were added, every call."""

    name = "in-order"

    def order(self, states, health):
        return list(states)


def eager_hedging(after=0.05):
    return HedgePolicy(after, budget=1.0, budget_reserve=1000)


@pytest.mark.parametrize("stuck", ["reading a slow answer", "connecting to a host that never answers",
                                   "in a TLS handshake the server never answers"])
def test_lost_hedges_free_their_workers_and_close_does_not_wait_for_them(unanswered, silent_tls, server, leaks, stuck):
    # Every call starts on the stuck provider and is won by a hedge to the healthy one.
    # With 4 workers, losers that kept their workers until their own 5 s timeout starved
    # the 5th call onwards; close() then waited for them. A connect or a handshake is
    # cut as a read is.
    router = Router(InOrder(), hedge_after=eager_hedging(), max_workers=4)
    if stuck.startswith("reading"):
        router.add_provider(openai(server, "slow", name="slow", timeout=5))
    elif stuck.startswith("connecting"):
        router.add_provider(unanswered_provider(unanswered, name="slow"))
    else:
        router.add_provider(OpenAICompatibleProvider(ProviderConfig(
            name="slow", model="m", base_url=f"https://127.0.0.1:{silent_tls}/v1", timeout=5, max_retries=0)))
    router.add_provider(openai(server, "ok", name="healthy", timeout=5))
    try:
        for index in range(8):
            completion, wall = timed(lambda: router.complete(f"call {index}"))
            assert not isinstance(completion, Exception), (index, completion)
            assert completion.provider == "healthy" and wall < 1.0, (index, wall)
            assert [a.outcome for a in completion.attempts] == ["lost", "ok"]
    finally:
        _, closing = timed(router.close)
    assert closing < 0.5, closing
    slow = router.stats()["providers"]["slow"]
    assert slow["in_flight"] == 0 and slow["abandoned"] == 8 and slow["failures"] == 0, slow
    assert slow["breaker"]["state"] == "closed"


def test_an_attempt_past_the_router_deadline_is_stopped_at_once(server, leaks):
    router = Router(timeout=0.3, max_workers=2)
    router.add_provider(openai(server, "slow", name="slow", timeout=5))
    try:
        for _ in range(4):  # 2 workers: attempts left running would starve the 3rd call
            error, wall = timed(lambda: router.route("hi"))
            assert isinstance(error, AllProvidersFailedError) and wall < 0.3 + MARGIN, (error, wall)
    finally:
        _, closing = timed(router.close)
    assert closing < 0.5, closing
    slow = router.stats()["providers"]["slow"]
    assert slow["in_flight"] == 0 and slow["failures_by_type"] == {"ProviderTimeoutError": 4}, slow


# 3. A stream cut by the Router deadline says so --------------------------------------------


def test_a_stream_cut_by_the_router_deadline_while_text_arrives_says_so(server, leaks):
    with Router(timeout=0.6) as router:
        router.add_provider(openai(server, "stream-trickle", timeout=20))
        started = time.monotonic()
        stream = router.route_stream("hi")
        with pytest.raises(ProviderTimeoutError) as caught:
            for _ in stream:
                pass
        wall = time.monotonic() - started
    message = str(caught.value)
    assert "did not finish within the Router timeout of 0.6 s: it was cut while text was arriving" in message, message
    assert "no answer" not in message
    assert stream.text.startswith("word0 word1")
    assert wall < 0.6 + MARGIN, wall


# 6. close() never hangs ------------------------------------------------------------------


@pytest.mark.parametrize("timeout, hedged", [(None, True), (30.0, True), (None, False)],
                         ids=["hedged-no-timeout", "hedged-timeout", "on-the-callers-threads"])
def test_close_wakes_every_caller_within_grace(server, leaks, timeout, hedged):
    # 64 callers, 4 workers: most attempts are still queued when close() cancels them.
    # Without hedging or timeout the attempts run on the callers' own threads.
    router = Router(InOrder(), timeout=timeout, hedge_after=eager_hedging(0.02) if hedged else None, max_workers=4)
    router.add_provider(openai(server, "slow", name="slow-a", timeout=20))
    router.add_provider(openai(server, "slow", name="slow-b", timeout=20))
    outcomes = []
    lock = threading.Lock()

    def caller(index):
        try:
            if index % 2:
                result = "".join(router.route_stream(f"call {index}"))
            else:
                result = router.route(f"call {index}")
        except Exception as exc:  # collected: typed or not
            result = exc
        with lock:
            outcomes.append((result, time.monotonic()))

    threads = [threading.Thread(target=caller, args=(n,), daemon=True, name=f"test-caller-{n}") for n in range(64)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # every caller inside route/route_stream, hedges started
    grace = 0.3
    closed_at = time.monotonic()
    router.close(grace=grace)
    closing = time.monotonic() - closed_at
    for thread in threads:
        thread.join(grace + 2.0)
    assert not [t for t in threads if t.is_alive()], "callers still blocked after close()"
    assert len(outcomes) == 64
    untyped = [result for result, _ in outcomes if not isinstance(result, OrchestratorError)]
    assert untyped == []
    latest = max(at for _, at in outcomes) - closed_at
    assert latest < grace + MARGIN + 0.2, latest
    assert closing < grace + 1.0, closing
    for name, provider in router.stats()["providers"].items():
        assert provider["in_flight"] == 0, (name, provider)


@pytest.mark.parametrize("hedged", [False, True])
def test_a_stream_never_read_does_not_stay_in_flight_after_close(server, leaks, hedged):
    router = Router(hedge_after=eager_hedging() if hedged else None)
    router.add_provider(openai(server, "ok", timeout=5))
    stream = router.route_stream("hi")
    assert router.stats()["providers"]["ok"]["in_flight"] == 1
    router.close(grace=0.1)
    assert router.stats()["providers"]["ok"]["in_flight"] == 0
    assert router.stats()["succeeded"] + router.stats()["failed"] == 1
    with pytest.raises(OrchestratorError):
        "".join(stream)  # cut by close(): a typed error, not a hang or a half answer


def test_close_wakes_an_embed_whose_batch_workers_were_still_queued(leaks):
    # 1 worker, 4 batch workers submitted: 3 are cancelled by close() while queued (a
    # cancel alone never wakes concurrent.futures.wait; embed() also waits on close()).
    from multi_llm_orchestrator.providers.mock import MockProvider

    router = Router(max_workers=1)
    router.add_provider(MockProvider(ProviderConfig(name="m", extra={"delay": 30})))
    outcome = []
    caller = threading.Thread(
        target=lambda: outcome.append(timed(lambda: router.embed([f"text {n}" for n in range(64)], max_parallel=4))),
        daemon=True)
    caller.start()
    time.sleep(0.3)
    closed_at = time.monotonic()
    router.close(grace=0.2)
    caller.join(3)
    assert not caller.is_alive(), "embed() still blocked after close()"
    result, _ = outcome[0]
    # Returned (the running worker finished every batch as the closed mock woke) or typed.
    assert isinstance(result, (Embeddings, OrchestratorError)), result
    assert time.monotonic() - closed_at < 0.2 + MARGIN + 0.2


# 7. A host that never answers the connect ------------------------------------------------


def test_close_wakes_callers_stuck_connecting_on_their_own_threads(unanswered, leaks):
    # No hedging, no timeout: each attempt connects on its caller's thread.
    router = Router()
    router.add_provider(unanswered_provider(unanswered))
    outcomes = []

    def caller(index):
        outcomes.append(timed(lambda: router.route(f"call {index}")))

    threads = [threading.Thread(target=caller, args=(n,), daemon=True) for n in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # every caller connecting
    closed_at = time.monotonic()
    router.close(grace=0.2)
    for thread in threads:
        thread.join(3.0)
    woken = time.monotonic() - closed_at
    assert not [t for t in threads if t.is_alive()] and len(outcomes) == 4
    assert all(isinstance(error, OrchestratorError) for error, _ in outcomes), outcomes
    assert woken < 0.2 + MARGIN + 0.2, woken
    assert router.stats()["providers"]["unanswered"]["in_flight"] == 0


def connecting_transfer(port, timeout=5.0, kind=HTTPConnection):
    """A transfer, and a connection of it about to connect to ``port``."""
    transfer = Transfer(time.monotonic() + 30, ProviderTimeoutError("expired"))
    connection = kind("127.0.0.1", port, timeout=timeout)
    transfer.attach(connection)
    return transfer, connection


def closing_every_socket(call):
    """``timed(call)``, checking that it left no socket unclosed (ResourceWarning at GC)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        outcome = timed(call)
        error = outcome[0] if isinstance(outcome[0], BaseException) else None
        while error is not None:  # its traceback holds the failed frames, and their sockets
            error.__traceback__ = None
            error = error.__cause__ or error.__context__
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
    return outcome


def test_a_cut_while_connecting_ends_the_connect_at_once(unanswered):
    transfer, connection = connecting_transfer(unanswered)
    threading.Timer(0.2, transfer.cut, args=(ProviderError("stopped"),)).start()
    outcome, wall = closing_every_socket(lambda: transport._open_socket(connection, transfer))
    assert isinstance(outcome, TransferCut) and "stopped" in str(outcome) and wall < 1.0, (outcome, wall)


def test_a_cut_landing_just_before_the_connect_starts_still_ends_it(unanswered, monkeypatch):
    # The cut lands as the connect is called, before its SYN is sent: shutting down a
    # socket not yet connecting does nothing, so only a check made once the connect
    # is under way can see the cut (a check before a blocking connect would miss it,
    # and the connect would wait for its whole timeout).
    transfer, connection = connecting_transfer(unanswered)

    class CutAsTheConnectStarts(socket.socket):
        def connect_ex(self, address):
            transfer.cut(ProviderError("stopped"))
            return super().connect_ex(address)

        def connect(self, address):
            transfer.cut(ProviderError("stopped"))
            return super().connect(address)

    monkeypatch.setattr(transport, "socket", types.SimpleNamespace(**{**vars(socket), "socket": CutAsTheConnectStarts}))
    outcome, wall = closing_every_socket(lambda: transport._open_socket(connection, transfer))
    assert isinstance(outcome, TransferCut) and wall < 1.0, (outcome, wall)


def test_an_unanswered_connect_still_ends_at_its_timeout_and_a_refused_one_at_once(unanswered):
    transfer, connection = connecting_transfer(unanswered, timeout=0.3)
    outcome, wall = timed(lambda: transport._open_socket(connection, transfer))
    assert isinstance(outcome, TimeoutError) and 0.25 <= wall < 0.3 + MARGIN, (outcome, wall)
    transfer, connection = connecting_transfer(free_port())  # nothing listens there
    outcome, wall = closing_every_socket(lambda: transport._open_socket(connection, transfer))
    assert isinstance(outcome, ConnectionRefusedError) and wall < 1.0, (outcome, wall)


def test_a_tracked_connection_maps_connect_failures_to_urllib3s_errors(unanswered, monkeypatch):
    # The types urllib3's own connect raises: its retries, the failover and the error
    # mapping tell a connection error from the others by them.
    transfer, connection = connecting_transfer(unanswered, 0.2, transport._TrackedHTTPConnection)
    with pytest.raises(ConnectTimeoutError):
        connection.connect()
    transfer, connection = connecting_transfer(free_port(), 5.0, transport._TrackedHTTPConnection)
    with pytest.raises(NewConnectionError, match="Connection refused"):
        connection.connect()

    def unresolvable(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(transport, "socket", types.SimpleNamespace(**{**vars(socket), "getaddrinfo": unresolvable}))
    transfer, connection = connecting_transfer(unanswered, 5.0, transport._TrackedHTTPConnection)
    with pytest.raises(NameResolutionError):
        connection.connect()


def test_a_connection_outside_any_transfer_connects_as_urllib3_does(server):
    connection = transport._TrackedHTTPConnection("127.0.0.1", server.port, timeout=2.0)
    try:
        connection.connect()
        assert connection.sock is not None and connection.sock.getpeername()[1] == server.port
        assert getattr(connection, "_mlo_socket", None) is None
    finally:
        connection.close()


def test_a_tracked_connect_hands_the_socket_over_and_back(server):
    # While connecting, the transfer can reach the socket; once connect() has ended it
    # reaches connection.sock, and keeps no other handle.
    transfer, connection = connecting_transfer(server.port, 2.0, transport._TrackedHTTPConnection)
    try:
        connection.connect()
        assert connection.sock.getpeername()[1] == server.port and connection.sock.gettimeout() == 2.0
        assert connection._mlo_socket is None
    finally:
        connection.close()


def test_a_cut_before_the_tls_handshake_closes_both_sockets(server, monkeypatch):
    # Cut just after the TCP connect: handing the TLS handshake's duplicate over fails,
    # and neither the socket nor its duplicate is left open.
    transfer, connection = connecting_transfer(server.port, 2.0, transport._TrackedHTTPSConnection)
    connect = transport._open_socket

    def connected_then_cut(conn, tr):
        sock = connect(conn, tr)
        tr.cut(ProviderError("stopped"))
        return sock

    monkeypatch.setattr(transport, "_open_socket", connected_then_cut)
    outcome, _ = closing_every_socket(connection.connect)
    assert isinstance(outcome, TransferCut) and connection.sock is None, outcome


def free_port():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def test_a_connected_socket_is_blocking_with_the_connect_timeout_and_the_pools_options(server):
    transfer, connection = connecting_transfer(server.port, timeout=2.5)
    connection.source_address = ("127.0.0.1", free_port())
    sock = transport._open_socket(connection, transfer)
    try:
        assert sock.gettimeout() == 2.5 and sock.getpeername()[1] == server.port
        assert (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1) in connection.socket_options  # urllib3's default
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1  # no 40 ms Nagle stalls
        assert sock.getsockname() == connection.source_address
        assert connection._mlo_socket is sock  # until connect() ends: a cut reaches it meanwhile
    finally:
        sock.close()


def test_each_address_is_tried_in_turn_and_the_last_failure_raised(server, monkeypatch):
    # A host with two addresses, the first refusing: the connect goes on to the second,
    # as urllib3's does; when every address fails, the last failure is raised.
    refusing = ("127.0.0.1", free_port())
    listening = ("127.0.0.1", server.port)
    addresses = [refusing, listening]

    def resolve(host, port, family=0, kind=0, *args):
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address) for address in addresses]

    monkeypatch.setattr(transport, "socket", types.SimpleNamespace(**{**vars(socket), "getaddrinfo": resolve}))
    transfer, connection = connecting_transfer(server.port)
    sock = transport._open_socket(connection, transfer)
    try:
        assert sock.getpeername() == listening
    finally:
        sock.close()
    addresses[:] = [listening[:1] + (free_port(),), refusing]
    transfer, connection = connecting_transfer(server.port)
    outcome, _ = timed(lambda: transport._open_socket(connection, transfer))
    assert isinstance(outcome, ConnectionRefusedError), outcome
    addresses.clear()  # a name with no address at all
    transfer, connection = connecting_transfer(server.port)
    with pytest.raises(OSError, match="no address found for 127.0.0.1"):
        transport._open_socket(connection, transfer)


CONNECT_EVENTS = []  # filled by the audit hook below while a test lists itself in it


def _record_connects(event, args):
    if event == "http.client.connect" and CONNECT_EVENTS:
        CONNECT_EVENTS.append(args[1:3])


def test_a_tracked_connection_reports_its_connect_to_audit_hooks_as_urllib3_does(server):
    sys.addaudithook(_record_connects)  # an audit hook cannot be removed: it records only while listed
    CONNECT_EVENTS.append("recording")
    provider = openai(server, "ok", name="audited")
    try:
        provider.complete("hi")
    finally:
        provider.close()
        seen = CONNECT_EVENTS[1:]
        CONNECT_EVENTS.clear()
    assert seen == [("127.0.0.1", server.port)]

"""RedisState against a real redis-server: every shared piece, its keys, and Redis failing.

Two Routers, each with its own RedisState (its own connections), stand for two processes;
the fleet tests in test_fleet.py use real processes.
"""

import base64
import math
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from multi_llm_orchestrator import Router
from multi_llm_orchestrator.breaker import NORMAL
from multi_llm_orchestrator.errors import ConfigurationError, ProviderUnavailableError
from multi_llm_orchestrator.providers import ProviderConfig
from multi_llm_orchestrator.providers.gigachat import GigaChatProvider
from multi_llm_orchestrator.providers.yandexgpt import YandexGPTProvider
from multi_llm_orchestrator.redis_state import RedisState, TokenStore
from multi_llm_orchestrator.configuration import load_config

from fakes.fault_server import FaultServer
from fakes.mocks import mock, router_with
from fakes.redis_server import RedisServer

AUTH_KEY = base64.b64encode(b"fleet-client:fleet-secret").decode()
UNAVAILABLE = ProviderUnavailableError("down", provider="a")


def pair(url, *providers_of, **settings):
    """Two Routers on one Redis, each with its own connections (two 'processes')."""
    routers = []
    for _ in range(2):
        # A generous timeout: on a loaded machine a slow round trip must not look like an outage.
        router = Router(state=RedisState(url, prefix="t:", timeout=2.0), **settings)
        for make in providers_of:
            router.add_provider(make())
        routers.append(router)
    return routers


def everything(url):
    client = redis.Redis.from_url(url)
    found = {key: client.dump(key) for key in client.scan_iter("*")}
    client.close()
    return found


def test_breaker_failures_are_counted_across_routers_and_the_probe_is_one_lease(redis_url):
    one, two = pair(redis_url, lambda: mock("a"), breaker={"failure_threshold": 4, "cooldown": 0.2})
    a1, a2 = one._states[0].breaker, two._states[0].breaker
    for breaker in (a1, a2, a1):
        breaker.record_failure(UNAVAILABLE, breaker.reserve())
    assert a2.snapshot()["consecutive_failures"] == 3 and a2.state == "closed"
    a2.record_failure(UNAVAILABLE, a2.reserve())  # the fourth, fleet-wide: open for both
    assert a1.reserve() is None and a1.snapshot()["state"] == "open" and not a1.is_available()
    time.sleep(0.25)
    probes = [breaker.reserve() for breaker in (a1, a2, a1, a2)]
    assert sum(p is not None for p in probes) == 1  # exactly one probe, fleet-wide
    probe = next(p for p in probes if p is not None)
    owner = (a1, a2)[probes.index(probe) % 2]
    other = a2 if owner is a1 else a1
    assert not other.is_available() and 0 < other.remaining() <= 0.05  # planned around while probing
    time.sleep(0.06)
    assert other.is_available() and other.reserve() is None  # asks again: still probing
    owner.record_success(probe)
    assert a1.reserve() == NORMAL and a2.reserve() == NORMAL
    assert a2.snapshot() == {"state": "closed", "consecutive_failures": 0, "open_for_s": 0.0, "shared": True}


def test_a_failed_probe_reopens_for_longer_and_a_released_probe_frees_the_lease(redis_url):
    one, two = pair(redis_url, lambda: mock("a"), breaker={"failure_threshold": 1, "cooldown": 0.1})
    a1, a2 = one._states[0].breaker, two._states[0].breaker
    a1.record_failure(UNAVAILABLE, a1.reserve())
    time.sleep(0.12)
    probe = a2.reserve()
    assert probe.startswith("shared-probe:") and a1.reserve() is None
    a2.release(probe)  # never ran: someone else may probe
    probe = a1.reserve()
    assert probe is not None
    a1.record_failure(UNAVAILABLE, probe)
    assert 0.15 < a2.snapshot()["open_for_s"] <= 0.2  # second trip: cooldown x 2


def test_round_robin_shares_are_exact_across_routers(redis_url):
    one, two = pair(redis_url, lambda: mock("a"), lambda: mock("b"), lambda: mock("c"))
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: (one, two)[i % 2].complete("q").provider, range(300)))
    assert {name: answers.count(name) for name in "abc"} == {"a": 100, "b": 100, "c": 100}


def test_health_results_are_shared_so_a_second_router_does_not_probe(redis_url):
    checks = []

    def counting():
        provider = mock("a")
        original = provider.health_check
        provider.health_check = lambda timeout=None: checks.append(1) or original(timeout)
        return provider

    one, two = pair(redis_url, counting, health_ttl=5)
    assert one.health_check() == {"a": True}
    assert two.health_report(cached=True)["a"].healthy
    assert two.strategy.name == "round-robin" and len(checks) == 1


def test_the_hedge_budget_is_spent_fleet_wide(redis_url):
    one, two = (RedisState(redis_url, timeout=2.0, prefix="t:") for _ in range(2))
    budgets = [state.hedge_budget(0.0, 10.0, 3) for state in (one, two)]
    spent = [budget.try_spend() for budget in budgets * 3]
    assert spent.count(True) == 3  # the reserve of 3 per window, for the fleet


def gigachat(server):
    return GigaChatProvider(ProviderConfig(
        name="giga", api_key=AUTH_KEY, base_url=server.gigachat_url, auth_url=server.auth_url))


def test_one_oauth_request_for_all_routers_and_the_token_is_not_stored_in_plaintext(redis_url, caplog):
    with FaultServer("gigachat", auth_key=AUTH_KEY, token_ttl=600) as server:
        routers = [router_with(gigachat(server), state=RedisState(redis_url, timeout=2.0, prefix="t:")) for _ in range(4)]
        with caplog.at_level(logging.DEBUG), ThreadPoolExecutor(16) as pool:
            texts = list(pool.map(lambda i: routers[i % 4].route(f"hi {i}", timeout=10), range(32)))
        logged = "\n".join(record.getMessage() + repr(record.__dict__) for record in caplog.records)
        assert server.tokens_issued[0] not in logged and AUTH_KEY not in logged
        assert len(texts) == 32 and server.counts["oauth"] == 1
        token = server.tokens_issued[0]
        stored = everything(redis_url)
        (token_key,) = [key for key in stored if b"token" in key]
        assert token_key.startswith(b"t:token:")
        for key, value in stored.items():
            for secret in (token, AUTH_KEY, "fleet-secret"):
                assert secret.encode() not in key and secret.encode() not in value
        ttl = redis.Redis.from_url(redis_url).pttl(token_key) / 1000
        assert 500 < ttl <= 600  # the token's life (less GigaChat's refresh margin)
        for router in routers:
            router.close()


def test_a_401_makes_one_refresh_for_the_fleet(redis_url):
    with FaultServer("gigachat", auth_key=AUTH_KEY) as server:
        routers = [router_with(gigachat(server), state=RedisState(redis_url, timeout=2.0, prefix="t:")) for _ in range(3)]
        for router in routers:
            router.route("warm up", timeout=5)
        with server._lock:
            server.tokens_issued.clear()  # every token is rejected from now on
        with ThreadPoolExecutor(12) as pool:
            list(pool.map(lambda i: routers[i % 3].route("again", timeout=10), range(24)))
        assert server.counts["oauth"] == 2


def test_yandex_token_provider_is_called_once_for_the_fleet(redis_url):
    calls = []

    def token_provider():
        calls.append(1)
        time.sleep(0.05)
        return "t1.yandex-iam-token"

    states = [RedisState(redis_url, timeout=2.0, prefix="t:", token_secret="s3cret") for _ in range(3)]
    providers = [
        YandexGPTProvider(ProviderConfig(name="ya", folder_id="b1gfolder", base_url="http://127.0.0.1:9"),
                          token_provider=token_provider)
        for _ in states
    ]
    for state, provider in zip(states, providers):
        state.attach(provider)
    with ThreadPoolExecutor(9) as pool:
        tokens = list(pool.map(lambda i: providers[i % 3]._tokens.get(time.monotonic() + 5).value, range(9)))
    assert set(tokens) == {"t1.yandex-iam-token"} and len(calls) == 1
    assert not any(b"yandex-iam-token" in value for value in everything(redis_url).values())


def test_a_token_sealed_with_another_secret_is_not_used():
    state = RedisState("redis://127.0.0.1:9/0")
    mine, theirs = TokenStore(state, "id", "one"), TokenStore(state, "id", "two")
    sealed = mine.encrypt("token-value")
    assert mine.decrypt(sealed) == "token-value" and theirs.decrypt(sealed) is None
    assert mine.decrypt(sealed[:-4] + "AAAA") is None and mine.decrypt("not base64!") is None


def test_the_response_cache_is_shared_and_bounded_in_redis(redis_url):
    one, two = pair(redis_url, lambda: mock("a"), cache={"max_entries": 3})
    assert not one.complete("q1").cached
    assert two.complete("q1").cached
    for prompt in ("q2", "q3", "q4", "q5"):
        one.complete(prompt)
    client = redis.Redis.from_url(redis_url)
    entries = [key for key in client.scan_iter("t:cache:*") if not key.endswith(b"index")]
    assert len(entries) == 3 and client.zcard("t:cache:index") == 3
    assert not two.complete("q1").cached  # the oldest went first


def test_every_key_starts_with_the_prefix(redis_url):
    with FaultServer("gigachat", auth_key=AUTH_KEY) as server:
        router = router_with(gigachat(server), mock("m"), state=RedisState(redis_url, timeout=2.0, prefix="app1:"),
                             cache=True, hedge_after=0.5, health_ttl=5)
        router.route("hi", timeout=5)
        router.route("hi", timeout=5)
        router.health_check()
        router._states[1].breaker.record_failure(UNAVAILABLE, router._states[1].breaker.reserve())
        keys = list(everything(redis_url))
        assert len(keys) >= 5 and all(key.startswith(b"app1:") for key in keys)
        router.close()


class SilentServer:
    """Accepts connections and never answers: a Redis that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.mark.parametrize("kind", ["down", "hanging"])
def test_calls_succeed_on_local_state_while_redis_fails_with_one_warning(kind, caplog):
    silent = SilentServer() if kind == "hanging" else None
    port = silent.port if silent else RedisServer().port  # nothing listens on a fresh free port
    state = RedisState(f"redis://127.0.0.1:{port}/0", timeout=0.05, retry_interval=10)
    router = router_with(mock("a"), mock("b"), state=state, cache=True)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="multi_llm_orchestrator.redis"):
        answers = [router.complete(f"q{i % 5}").provider for i in range(40)]
    assert answers[:4] == ["a", "b", "a", "b"]  # round-robin goes on in this process
    assert router.complete("q1").cached  # and so does the cache, in memory
    assert time.monotonic() - started < 1.0  # at most one timeout: then no Redis round trips
    warnings = [r for r in caplog.records if r.name == "multi_llm_orchestrator.redis"]
    assert len(warnings) == 1 and str(port) in warnings[0].getMessage()
    router.close()
    if silent:
        silent.close()


def test_shared_state_resumes_when_redis_returns(caplog):
    server = RedisServer().start()
    state = RedisState(server.url, timeout=0.1, retry_interval=0.1)
    router = router_with(mock("a"), mock("b"), state=state)
    assert [router.route_stream("x").provider for _ in range(2)] == ["a", "b"]
    server.kill()
    with caplog.at_level(logging.INFO, logger="multi_llm_orchestrator.redis"):
        assert all(router.route("x") for _ in range(20))
        server.start()
        time.sleep(0.15)
        router.route("x")
        assert not state.link.down
    client = redis.Redis.from_url(server.url)
    assert int(client.get("mlo:seq:round-robin")) == 1  # the counter lives in Redis again
    messages = [r.getMessage() for r in caplog.records if r.name == "multi_llm_orchestrator.redis"]
    assert len(messages) == 2 and "unavailable" in messages[0] and "again" in messages[1]
    router.close()
    server.stop()


def test_state_from_a_configuration_file_and_its_redacted_form(redis_url):
    source = {"state": {"redis": redis_url.replace("redis://", "redis://:pw@"), "prefix": "cfg:"},
              "providers": [{"type": "mock", "name": "m"}]}
    config = load_config(source)
    assert config.to_dict()["state"]["redis"].startswith("redis://:<redacted>@127.0.0.1")
    with pytest.raises(ConfigurationError, match="Unknown state setting"):
        load_config({**source, "state": {"redis": redis_url, "colour": "red"}}).build()
    with pytest.raises(ConfigurationError, match="name its backend"):
        load_config({**source, "state": {"memcached": "x"}}).build()
    router = load_config({**source, "state": {"redis": redis_url, "prefix": "cfg:"}}).build()
    assert repr(router._state) == f"RedisState({redis_url!r}, prefix='cfg:')"
    router.route("q")
    assert all(key.startswith(b"cfg:") for key in everything(redis_url))
    with pytest.raises(ConfigurationError, match="needs a URL"):
        RedisState("http://x")
    assert "pw" not in repr(RedisState("redis://:pw@127.0.0.1:1/0"))


def test_rate_limits_are_one_fleet_wide_window(redis_url):
    from multi_llm_orchestrator.limits import Limits, Refusal

    limits = Limits(rpm=3, max_concurrency=2, tpm=100, window=0.3)
    one, two = (RedisState(redis_url, timeout=2.0, prefix="t:").limiter("p", limits) for _ in range(2))
    first, second = one.acquire(10), two.acquire(10)
    refused = one.acquire(10)
    assert isinstance(refused, Refusal) and "max_concurrency 2" in refused.reason and "fleet-wide" in refused.reason
    one.release(first)
    third = two.acquire(10)
    refused = one.acquire(10)
    assert isinstance(refused, Refusal) and "max_concurrency" in refused.reason
    two.release(second)
    refused = one.acquire(10)  # 3 starts in the window (one released, two in flight... one ended)
    assert isinstance(refused, Refusal) and refused.reason.startswith("rpm 3") and 0 < refused.retry_after <= 0.3
    two.reconcile(third, 90)
    assert two.snapshot()["tokens_in_window"] == 110 and two.snapshot()["shared"] is True
    tokens_only = RedisState(redis_url, timeout=2.0, prefix="t:").limiter("q", Limits(tpm=100))
    assert tokens_only.acquire(101).retry_after == math.inf
    one.penalize(5.0)
    assert "429" in two.acquire(1).reason
    unsent = RedisState(redis_url, timeout=2.0, prefix="u:").limiter("p", limits)
    grant = unsent.acquire(5)
    unsent.release(grant, sent=False)  # never left: refunded
    assert unsent.snapshot()["requests_in_window"] == 0


def test_a_budget_is_one_fleet_wide_ledger(redis_url):
    from multi_llm_orchestrator.budgets import Budget
    from multi_llm_orchestrator.limits import Refusal

    one, two = (RedisState(redis_url, timeout=2.0, prefix="t:").ledger("router", Budget(limit=1.0, period="month")) for _ in range(2))
    hold_one, hold_two = one.acquire(0.4), two.acquire(0.4)
    refused = one.acquire(0.4)
    assert isinstance(refused, Refusal) and "0.8000 held" in refused.reason and refused.retry_after > 0
    one.reconcile(hold_one, 0.3)
    two.release(hold_two)
    assert two.spent() == pytest.approx(0.3)
    assert isinstance(two.acquire(0.8), Refusal) and not isinstance(two.acquire(0.7), Refusal)
    rolling = RedisState(redis_url, timeout=2.0, prefix="t:").ledger("p", Budget(limit=1.0, period=0.2))
    rolling.reconcile(rolling.acquire(0.9), 0.9)
    refused = rolling.acquire(0.5)
    assert isinstance(refused, Refusal) and 0 < refused.retry_after <= 0.2
    time.sleep(0.25)
    assert rolling.spent() == 0.0 and not isinstance(rolling.acquire(0.5), Refusal)


def test_limits_budgets_and_tokens_work_locally_while_redis_is_down():
    from multi_llm_orchestrator.budgets import Budget
    from multi_llm_orchestrator.limits import Limits, Refusal

    state = RedisState(f"redis://127.0.0.1:{RedisServer().port}/0", timeout=0.05, retry_interval=10)
    limiter = state.limiter("p", Limits(max_concurrency=1))
    grant = limiter.acquire()
    assert not isinstance(grant, Refusal) and isinstance(limiter.acquire(), Refusal)  # held in memory
    limiter.release(grant)
    assert not isinstance(limiter.acquire(), Refusal)
    ledger = state.ledger("router", Budget(limit=1.0))
    ledger.reconcile(ledger.acquire(0.6), 0.6)
    assert isinstance(ledger.acquire(0.6), Refusal) and ledger.spent() == pytest.approx(0.6)
    fetched = []
    store = TokenStore(state, "id", "secret", owner="p")
    assert store.fetch(lambda deadline: fetched.append(1) or ("tok", 60.0), time.monotonic() + 1, None) == ("tok", 60.0)
    assert fetched == [1]


def test_a_fleet_waits_for_the_token_being_fetched_only_until_its_deadline(redis_url):
    from multi_llm_orchestrator.errors import ProviderTimeoutError

    state = RedisState(redis_url, timeout=2.0, prefix="t:")
    store = TokenStore(state, "id", "secret", owner="giga")
    redis.Redis.from_url(redis_url).set(store._lock_key, "someone else", px=5000)  # a fetch under way elsewhere
    started = time.monotonic()
    with pytest.raises(ProviderTimeoutError, match="fleet's access token"):
        store.fetch(lambda deadline: ("never", 60.0), time.monotonic() + 0.1, None)
    assert time.monotonic() - started < 0.5


def test_redis_round_trips_never_outlive_the_calls_deadline(caplog):
    silent = SilentServer()  # a Redis that hangs: every round trip would take the whole timeout
    state = RedisState(f"redis://127.0.0.1:{silent.port}/0", timeout=0.5, retry_interval=10)
    router = router_with(mock("a"), mock("b"), state=state)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="multi_llm_orchestrator.redis"):
        answers = [router.complete("q", timeout=0.2).provider for _ in range(5)]
    assert time.monotonic() - started < 0.5 and answers == ["a", "b", "a", "b", "a"]
    assert not state.link.down and not caplog.records  # skipped for the deadline, not an outage
    router.close()
    silent.close()


def test_a_cold_fleet_checks_each_provider_once_for_strategies_that_need_health(redis_url):
    checks = []

    def slow_checked():
        provider = mock("a", health_delay=0.2)
        original = provider.health_check
        provider.health_check = lambda timeout=None: checks.append(1) or original(timeout)
        return provider

    routers = [router_with(slow_checked(), state=RedisState(redis_url, timeout=2.0, prefix="t:"), strategy="first-available",
                           health_ttl=30) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda router: router.complete("q", timeout=5).provider, routers))
    assert answers == ["a"] * 4 and len(checks) == 1
    assert all(router.health_report(cached=True)["a"].healthy for router in routers) and len(checks) == 1
    for router in routers:
        router.close()


def test_an_answer_landing_between_a_miss_and_the_claim_is_used_not_produced_again(redis_url):
    # The race a loaded fleet hits: this process reads no answer, another process puts
    # its answer and gives its claim back, then this process claims the (now free) key.
    made = []
    one, two = pair(redis_url, lambda: made.append(mock("a")) or made[-1], cache=True)
    store = one._responses.store
    miss = store.get

    def get_then_let_the_other_process_finish(key):
        entry = miss(key)
        if entry is None and not made[1].calls:
            assert not two.complete("same question").cached
        return entry

    store.get = get_then_let_the_other_process_finish
    answer = one.complete("same question", timeout=5)
    assert answer.cached and answer.text == "Mock response to: same question"
    assert (made[0].calls, made[1].calls) == (0, 1)
    assert one.stats()["cache_hits"] == 1 and one.stats()["cache_misses"] == 0


def test_a_token_stored_between_a_read_and_the_lock_is_used_not_fetched_again(redis_url):
    # Process b reads "no token"; before it takes the lock, process a fetches, stores and
    # unlocks. b then wins the lock: it must use a's token, not make a second OAuth request.
    state_a = RedisState(redis_url, timeout=2.0, prefix="race:")
    state_b = RedisState(redis_url, timeout=2.0, prefix="race:")
    a, b = TokenStore(state_a, "id", "secret"), TokenStore(state_b, "id", "secret")
    run, first = state_b.link.run, [True]

    def run_then_let_a_store(operation):
        result = run(operation)
        if first[0]:
            first[0] = False
            a.fetch(lambda deadline: ("fresh-token", 60.0), time.monotonic() + 5, None)
        return result

    state_b.link.run = run_then_let_a_store
    fetched = []
    value, _ = b.fetch(lambda deadline: fetched.append(1) or ("second-token", 60.0), time.monotonic() + 5, None)
    assert (value, fetched) == ("fresh-token", [])

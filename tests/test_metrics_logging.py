"""Router.stats(), listeners and logging: percentiles, boundedness, counters, log records,
and that no secret reaches a log record at any level."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import responses

from multi_llm_orchestrator import AllProvidersFailedError, ProviderConfig, RouterEvent, Usage
from multi_llm_orchestrator.metrics import LATENCY_WINDOW, ProviderMetrics, percentile
from multi_llm_orchestrator.providers import provider_class

from fakes.mocks import mock, router_with

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-metrics-secret-9f8e7d6c5b4a"






# Percentiles and boundedness ------------------------------------------------------------


def test_percentiles_of_known_latencies_are_nearest_rank():
    metrics = ProviderMetrics()
    values = [n / 1000 for n in range(1, 101)]  # 1 ms .. 100 ms
    random.Random(7).shuffle(values)
    for value in values:
        metrics.started()
        metrics.succeeded(value, None)
    snapshot = metrics.snapshot()
    assert snapshot["latency_p50_s"] == 0.05
    assert snapshot["latency_p95_s"] == 0.095
    assert snapshot["latency_p99_s"] == 0.099
    assert percentile([0.2], 0.99) == 0.2 and percentile([], 0.5) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0 and percentile([1.0, 2.0, 3.0, 4.0], 0.75) == 3.0


def test_no_latency_yet_reports_none():
    snapshot = ProviderMetrics().snapshot()
    assert snapshot["latency_p50_s"] is None and snapshot["success_rate"] is None and snapshot["cost"] is None


def test_a_hundred_thousand_samples_keep_the_window_fixed():
    metrics = ProviderMetrics()
    for _ in range(100_000):
        metrics.started()
        metrics.succeeded(5.0, Usage.of(1, 1))
    assert len(metrics._latencies) == LATENCY_WINDOW
    # The window rolls: after one window of fast calls, the old slow ones are gone.
    for _ in range(LATENCY_WINDOW):
        metrics.started()
        metrics.succeeded(0.001, None)
    snapshot = metrics.snapshot()
    assert len(metrics._latencies) == LATENCY_WINDOW
    assert snapshot["latency_p50_s"] == snapshot["latency_p99_s"] == 0.001
    # Counters are exact totals, not windowed.
    assert snapshot["calls"] == snapshot["successes"] == 100_000 + LATENCY_WINDOW
    assert snapshot["prompt_tokens"] == 100_000 and snapshot["in_flight"] == 0


def test_router_stats_keep_their_size_after_many_calls():
    with router_with(mock("a")) as router:
        for _ in range(LATENCY_WINDOW + 500):
            router.route("x")
        stats = router.stats()
        state = router._states[0]
    assert len(state.metrics._latencies) == LATENCY_WINDOW
    assert stats["providers"]["a"]["calls"] == LATENCY_WINDOW + 500


# stats() contents ------------------------------------------------------------------------


def test_stats_count_calls_failures_tokens_and_cost():
    priced = mock("a", price_per_1k_prompt_tokens=2.0, price_per_1k_completion_tokens=4.0)
    with router_with(priced, mock("b", "mock-unavailable"), mock("c", "mock-ratelimit"), breaker=False) as router:
        for _ in range(6):
            router.route("one two three")  # mock usage: 3 prompt words, 6 answer words
        stats = router.stats()
    assert (stats["calls"], stats["succeeded"], stats["failed"]) == (6, 6, 0)
    a, b, c = (stats["providers"][name] for name in "abc")
    # Round-robin starts at a, b, c in turn, going round: (a), (b c a), (c a) twice.
    assert a["calls"] == a["successes"] == 6 and a["failures"] == 0 and a["success_rate"] == 1.0
    assert b["calls"] == 2 and b["failures_by_type"] == {"ProviderUnavailableError": 2} and b["success_rate"] == 0.0
    assert c["calls"] == 4 and c["failures_by_type"] == {"RateLimitError": 4} and c["failures"] == 4
    assert (a["prompt_tokens"], a["completion_tokens"], a["total_tokens"]) == (18, 36, 54)
    assert a["cost"] == pytest.approx(18 / 1000 * 2.0 + 36 / 1000 * 4.0)
    assert b["cost"] is None and b["prompt_tokens"] == 0
    assert a["model"] == "mock-normal" and a["in_flight"] == 0
    assert a["latency_p50_s"] is not None and b["latency_p50_s"] is None


def test_stats_mixed_outcomes_give_the_success_rate():
    flaky = mock("flaky", extra={"failure_rate": 0.5, "seed": 3})
    with router_with(flaky, breaker=False) as router:
        outcomes = []
        for _ in range(40):
            try:
                router.route("x")
                outcomes.append(True)
            except AllProvidersFailedError:
                outcomes.append(False)
        stats = router.stats()
    row = stats["providers"]["flaky"]
    assert row["successes"] == sum(outcomes) and row["failures"] == outcomes.count(False)
    assert 0 < row["success_rate"] < 1 and row["success_rate"] == round(sum(outcomes) / 40, 4)
    assert stats["failed"] == outcomes.count(False)


def test_stats_latency_reflects_real_delays():
    with router_with(mock("slow", extra={"delay": 0.03})) as router:
        for _ in range(3):
            router.route("x")
        row = router.stats()["providers"]["slow"]
    assert 0.03 <= row["latency_p50_s"] <= row["latency_p95_s"] <= row["latency_p99_s"] < 5


def test_stats_show_calls_in_flight():
    slow = mock("slow", extra={"delay": 0.5})
    with router_with(slow) as router:
        worker = threading.Thread(target=router.route, args=("x",))
        worker.start()
        deadline = time.monotonic() + 5
        while router.stats()["providers"]["slow"]["in_flight"] == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert router.stats()["providers"]["slow"]["in_flight"] == 1
        worker.join()
        assert router.stats()["providers"]["slow"]["in_flight"] == 0


def test_stats_show_the_breaker_state():
    with router_with(mock("down", "mock-unavailable"), mock("up"), breaker={"failure_threshold": 2, "cooldown": 30}) as router:
        for _ in range(4):
            router.route("x")
        stats = router.stats()["providers"]
    assert stats["down"]["breaker"]["state"] == "open" and stats["down"]["breaker"]["open_for_s"] > 20
    assert stats["up"]["breaker"] == {"state": "closed", "consecutive_failures": 0, "open_for_s": 0.0}


def test_stats_count_tokens_of_streams():
    with router_with(mock("a")) as router:
        stream = router.route_stream("count my words")
        text = "".join(stream)
        row = router.stats()["providers"]["a"]
    assert text == "Mock response to: count my words"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (3, 6) and row["successes"] == 1


def test_stats_count_hedges_won_and_lost():
    slow = mock("slow", extra={"delay": 0.4})
    fast = mock("fast")
    with router_with(slow, fast, strategy="first-available", hedge_after=0.05, hedge_budget=1.0) as router:
        completion = router.complete("x")
        deadline = time.monotonic() + 5
        while router.stats()["providers"]["slow"]["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = router.stats()["providers"]
    assert completion.provider == "fast"
    assert stats["fast"]["hedges_started"] == 1 and stats["fast"]["hedges_won"] == 1
    assert stats["slow"]["hedges_lost"] == 0 and stats["fast"]["hedges_lost"] == 0
    assert [a.outcome for a in completion.attempts] == ["lost", "ok"]


# Listeners ---------------------------------------------------------------------------------


def test_listener_gets_one_event_per_attempt_and_per_call():
    events = []
    with router_with(mock("a", "mock-unavailable"), mock("b")) as router:
        router.add_listener(events.append)
        router.route("x")
    assert all(isinstance(e, RouterEvent) for e in events)
    assert [(e.kind, e.provider, e.outcome, e.error_type) for e in events] == [
        ("attempt", "a", "error", "ProviderUnavailableError"),
        ("attempt", "b", "ok", None),
        ("call", "b", "ok", None),
    ]
    call = events[-1]
    assert call.attempts == 2 and call.usage == Usage.of(1, 4) and call.latency_s >= events[1].latency_s > 0
    assert call.model == "mock-normal" and call.streaming is False


def test_listener_sees_a_failed_call_and_streams():
    events = []
    with router_with(mock("a", "mock-auth-error"), mock("b", "mock-unavailable")) as router:
        router.add_listener(events.append)
        with pytest.raises(AllProvidersFailedError):
            router.route("x")
    call = events[-1]
    assert (call.kind, call.outcome, call.provider, call.attempts) == ("call", "error", None, 2)
    assert call.error_type == "AllProvidersFailedError" and "AuthenticationError" in call.error

    events.clear()
    with router_with(mock("s")) as router:
        router.add_listener(events.append)
        list(router.route_stream("x y"))
    assert [(e.kind, e.outcome, e.streaming) for e in events] == [("attempt", "ok", True), ("call", "ok", True)]
    assert events[-1].usage == Usage.of(2, 5)


def test_a_failing_listener_is_logged_and_ignored_and_can_be_removed(caplog):
    seen = []
    record = seen.append

    def broken(event):
        raise RuntimeError("listener bug")

    with router_with(mock("a")) as router:
        router.add_listener(broken)
        router.add_listener(record)
        with caplog.at_level(logging.ERROR, logger="multi_llm_orchestrator"):
            assert router.route("x") == "Mock response to: x"
        assert len(seen) == 2
        assert sum("listener raised" in r.getMessage() and bool(r.exc_info) for r in caplog.records) == 2
        router.remove_listener(record)
        router.remove_listener(broken)
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="multi_llm_orchestrator"):
            router.route("x")
    assert len(seen) == 2 and caplog.records == []


# Logging -----------------------------------------------------------------------------------


def test_the_library_configures_only_a_null_handler():
    package = logging.getLogger("multi_llm_orchestrator")
    assert [type(h) for h in package.handlers] == [logging.NullHandler]
    assert package.propagate and package.level == logging.NOTSET


def test_nothing_is_printed_when_the_application_configures_no_logging():
    code = (
        "from multi_llm_orchestrator import Router, MockProvider, ProviderConfig\n"
        "r = Router()\n"
        "r.add_provider(MockProvider(ProviderConfig(name='a', model='mock-unavailable', extra={'delay': 0})))\n"
        "r.add_provider(MockProvider(ProviderConfig(name='b', extra={'delay': 0})))\n"
        "print(r.route('x'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout == "Mock response to: x\n" and result.stderr == ""


def router_records(caplog):
    return [r for r in caplog.records if r.name == "multi_llm_orchestrator.router"]


def test_one_info_per_finished_call_with_extra_fields(caplog):
    with router_with(mock("a")) as router, caplog.at_level(logging.INFO, logger="multi_llm_orchestrator"):
        router.route("two words")
        router.route("three more words")
    infos = [r for r in router_records(caplog) if r.levelno == logging.INFO]
    assert len(infos) == 2
    record = infos[1]
    assert (record.provider, record.model, record.attempts, record.outcome) == ("a", "mock-normal", 1, "ok")
    assert (record.prompt_tokens, record.completion_tokens) == (3, 6)
    assert isinstance(record.latency_s, float) and record.latency_s >= 0
    assert "call answered by a (mock-normal)" in record.getMessage()


def test_one_warning_per_failed_attempt_and_an_info_for_the_failed_call(caplog):
    providers = mock("a", "mock-unavailable"), mock("b", "mock-ratelimit"), mock("c")
    with router_with(*providers) as router, caplog.at_level(logging.INFO, logger="multi_llm_orchestrator"):
        router.route("x")
    warnings = [r for r in router_records(caplog) if r.levelno == logging.WARNING]
    assert [(r.provider, r.error_type) for r in warnings] == [("a", "ProviderUnavailableError"), ("b", "RateLimitError")]
    assert all(r.latency_s >= 0 for r in warnings)
    info = [r for r in router_records(caplog) if r.levelno == logging.INFO]
    assert len(info) == 1 and info[0].attempts == 3 and info[0].provider == "c"

    caplog.clear()
    with router_with(mock("a", "mock-unavailable")) as router, caplog.at_level(logging.INFO, logger="multi_llm_orchestrator"):
        with pytest.raises(AllProvidersFailedError):
            router.route("x")
    levels = [r.levelno for r in router_records(caplog)]
    assert levels == [logging.WARNING, logging.INFO]
    failed = router_records(caplog)[-1]
    assert failed.outcome == "error" and failed.error_type == "AllProvidersFailedError" and failed.attempts == 1


def test_debug_shows_each_calls_plan(caplog):
    with router_with(mock("a"), mock("b")) as router, caplog.at_level(logging.DEBUG, logger="multi_llm_orchestrator"):
        router.route("x")
        list(router.route_stream("y"))
    debug = [r for r in router_records(caplog) if r.levelno == logging.DEBUG]
    assert [r.plan for r in debug] == [["a", "b"], ["b", "a"]]
    assert [r.streaming for r in debug] == [False, True]


def test_info_is_not_formatted_when_disabled(caplog):
    with router_with(mock("a")) as router, caplog.at_level(logging.WARNING, logger="multi_llm_orchestrator"):
        router.route("x")
    assert router_records(caplog) == []


# Secrets never logged ----------------------------------------------------------------------

GIGA_KEY = "Z2lnYS1jbGllbnQ6Z2lnYS1zZWNyZXQtc2VjcmV0"
GIGA_TOKEN = "eyJhbGciOiJub25lIn0.giga-access-token-SECRET"
YANDEX_KEY = "AQVNmetrics-yandex-api-key-secret"
OPENAI_KEY = "sk-openai-metrics-secret-key-000111"
ALL_SECRETS = (SECRET, GIGA_KEY, GIGA_TOKEN, YANDEX_KEY, OPENAI_KEY)
GIGA_API = "https://gigachat.devices.sberbank.ru/api/v1"
GIGA_OAUTH = "https://ngw.devices.sberbank.ru:9443/api/v2/oauth"
YANDEX_URL = "https://llm.api.cloud.yandex.net/foundationModels/v1/completion"
OPENAI_BASE = "https://api.openai.test/v1"


def record_text(record: logging.LogRecord) -> str:
    """Everything a handler could print from a record: message, args, extras, traceback."""
    parts = [record.getMessage(), repr(record.args), repr(vars(record))]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


def http_providers():
    giga = provider_class("gigachat")(ProviderConfig(name="giga", api_key=GIGA_KEY, scope="GIGACHAT_API_PERS", max_retries=0))
    yandex = provider_class("yandexgpt")(ProviderConfig(
        name="yandex", api_key=YANDEX_KEY, folder_id="b1gfolder", extra={"auth": "api-key"}, max_retries=0))
    openai = provider_class("openai")(ProviderConfig(
        name="openai", model="gpt-test", api_key=OPENAI_KEY, base_url=OPENAI_BASE, max_retries=0))
    return giga, yandex, openai


def test_no_secret_in_any_record_at_debug(caplog):
    giga, yandex, openai = http_providers()
    keyed_mock = mock("keyed", "mock-auth-error", api_key=SECRET, extra={"access_token": SECRET})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        # Every provider first fails on its credentials, then answers.
        rsps.add("POST", GIGA_OAUTH, status=401, json={"code": 6, "message": "credentials doesn't match db data"})
        rsps.add("POST", GIGA_OAUTH, json={"access_token": GIGA_TOKEN, "expires_at": 4102444800000})
        rsps.add("POST", GIGA_API + "/chat/completions", json={
            "choices": [{"message": {"role": "assistant", "content": "Giga answer"}, "index": 0, "finish_reason": "stop"}],
            "created": 1, "model": "GigaChat:1.0", "object": "chat.completion",
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
        rsps.add("POST", YANDEX_URL, status=401, json={"error": {"grpcCode": 16, "httpCode": 401, "message": "Unknown api key", "httpStatus": "Unauthorized", "details": []}})
        rsps.add("POST", YANDEX_URL, json={"result": {
            "alternatives": [{"message": {"role": "assistant", "text": "Yandex answer"}, "status": "ALTERNATIVE_STATUS_FINAL"}],
            "usage": {"inputTextTokens": "3", "completionTokens": "2", "totalTokens": "5"}, "modelVersion": "1"}})
        rsps.add("POST", OPENAI_BASE + "/chat/completions", status=401, json={"error": {
            "message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}})
        rsps.add("POST", OPENAI_BASE + "/chat/completions", json={
            "id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "OpenAI answer"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
        with caplog.at_level(logging.DEBUG):
            for provider in (giga, yandex, openai):
                with router_with(keyed_mock.__class__(keyed_mock.config), provider, breaker=False) as router:
                    router.add_listener(lambda event: logging.getLogger("multi_llm_orchestrator.test").debug("%r", event))
                    answers = []
                    for _ in range(2):
                        try:
                            answers.append(router.complete("Hello"))
                        except AllProvidersFailedError as exc:
                            answers.append(exc)
                    assert isinstance(answers[0], AllProvidersFailedError)
                    assert all(secret not in str(answers[0]) for secret in ALL_SECRETS)
                    assert answers[1].provider == provider.name, answers[1]
                    assert SECRET not in repr(router.stats())
    records = caplog.records
    assert any(r.levelno == logging.DEBUG and r.name.startswith("multi_llm_orchestrator.http") for r in records)
    assert any(r.levelno == logging.WARNING for r in records) and any(r.levelno == logging.INFO for r in records)
    for record in records:
        text = record_text(record)
        for secret in ALL_SECRETS:
            assert secret not in text, (record.name, record.levelname, record.getMessage())

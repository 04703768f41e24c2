"""The Prometheus collector and exporter: a real scrape of /metrics over loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from multi_llm_orchestrator import Router
from multi_llm_orchestrator.prometheus import RouterCollector, start_exporter

from fakes.mocks import mock

ROOT = Path(__file__).resolve().parents[1]




@pytest.fixture
def router():
    router = Router(breaker={"failure_threshold": 1, "cooldown": 60})
    router.add_provider(mock("down", "mock-unavailable"))
    router.add_provider(mock("up", price_per_1k_prompt_tokens=1.0, price_per_1k_completion_tokens=2.0))
    yield router
    router.close()


LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def scrape(url):
    with LOOPBACK.open(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


def test_scrape_over_loopback_reads_stats_at_scrape_time(router):
    router.route("one two")  # down fails (and opens), up answers
    with start_exporter(router, port=0) as exporter:
        assert exporter.url == f"http://127.0.0.1:{exporter.port}/metrics" and exporter.port > 0
        first = scrape(exporter.url)
        assert value(first, "mlo_router_calls_total", outcome="ok") == 1
        assert value(first, "mlo_router_calls_total", outcome="error") == 0
        assert value(first, "mlo_router_calls_in_progress") == 0
        assert value(first, "mlo_provider_attempts_total", provider="down") == 1
        assert value(first, "mlo_provider_failures_total", provider="down", error_type="ProviderUnavailableError") == 1
        assert value(first, "mlo_provider_successes_total", provider="up") == 1
        assert value(first, "mlo_provider_success_rate", provider="up") == 1.0
        assert value(first, "mlo_provider_tokens_total", provider="up", kind="prompt") == 2
        assert value(first, "mlo_provider_tokens_total", provider="up", kind="completion") == 5
        assert value(first, "mlo_provider_cost_total", provider="up") == pytest.approx(0.012)
        assert ("mlo_provider_cost_total", (("provider", "down"),)) not in first
        assert value(first, "mlo_provider_breaker_state", provider="down", state="open") == 1
        assert value(first, "mlo_provider_breaker_state", provider="down", state="closed") == 0
        assert value(first, "mlo_provider_breaker_open_seconds", provider="down") > 50
        assert value(first, "mlo_provider_info", provider="up", model="mock-normal") == 1
        assert value(first, "mlo_provider_in_flight", provider="up") == 0
        assert value(first, "mlo_provider_hedges_total", provider="up", outcome="won") == 0
        for quantile in ("0.5", "0.95", "0.99"):
            assert value(first, "mlo_provider_latency_seconds", provider="up", quantile=quantile) >= 0
        assert ("mlo_provider_latency_seconds", (("provider", "down"), ("quantile", "0.5"))) not in first

        for _ in range(3):
            router.route("x")
        second = scrape(exporter.url)
        assert value(second, "mlo_router_calls_total", outcome="ok") == 4
        assert value(second, "mlo_provider_successes_total", provider="up") == 4


def test_the_collector_runs_only_when_scraped(router):
    calls = []
    original = router.stats

    def counting_stats():
        calls.append(threading.current_thread().name)
        return original()

    router.stats = counting_stats
    threads_before = {t.ident for t in threading.enumerate()}
    with start_exporter(router, port=0) as exporter:
        added = [t for t in threading.enumerate() if t.ident not in threads_before]
        assert [t.name for t in added] == ["mlo-prometheus-exporter"]
        time.sleep(0.2)
        assert calls == []  # nothing polls in the background
        scrape(exporter.url)
        scrape(exporter.url)
        assert len(calls) == 2
    assert all(t.ident in threads_before or not t.is_alive() for t in added)


def test_collector_on_the_default_registry_and_a_namespace(router):
    router.route("x")
    collector = RouterCollector(router, namespace="llm")
    REGISTRY.register(collector)
    try:
        text = generate_latest(REGISTRY).decode()
    finally:
        REGISTRY.unregister(collector)
    assert 'llm_router_calls_total{outcome="ok"} 1.0' in text
    assert 'llm_provider_attempts_total{provider="up"} 1.0' in text
    assert "mlo_" not in text


def test_exporter_with_a_given_registry_and_failures(router):
    registry = CollectorRegistry()
    failing = Router()
    failing.add_provider(mock("bad", "mock-auth-error"))
    with pytest.raises(Exception):
        failing.route("x")
    with start_exporter(failing, port=0, registry=registry) as exporter:
        samples = scrape(exporter.url)
    failing.close()
    assert value(samples, "mlo_router_calls_total", outcome="error") == 1
    assert value(samples, "mlo_provider_failures_total", provider="bad", error_type="AuthenticationError") == 1
    assert value(samples, "mlo_provider_success_rate", provider="bad") == 0.0
    assert b"mlo_router_calls_total" in generate_latest(registry)


def test_a_closed_exporter_frees_its_port(router):
    exporter = start_exporter(router, port=0)
    port = exporter.port
    exporter.close()
    with pytest.raises(OSError):
        LOOPBACK.open(f"http://127.0.0.1:{port}/metrics", timeout=2)
    again = start_exporter(router, port=port)  # the same port can be bound again at once
    try:
        assert scrape(again.url)
    finally:
        again.close()


def test_importing_the_package_does_not_import_prometheus_client():
    code = "import sys, multi_llm_orchestrator; print('prometheus_client' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.strip() == "False", result.stderr


def test_balance_gauge_asks_at_most_every_interval_and_skips_providers_without_one():
    from multi_llm_orchestrator import NotSupportedError

    class Prepaid(type(mock("x"))):
        supports_balance = True
        asked = 0
        answer: object = {"GigaChat": 900000, "embeddings": 9999967}

        def balance(self, *, timeout=None):
            Prepaid.asked += 1
            if isinstance(self.answer, Exception):
                raise self.answer
            return self.answer

    router = Router()
    prepaid = router.add_provider(Prepaid(mock("giga").config))
    payg = router.add_provider(Prepaid(mock("payg").config))
    payg.answer = NotSupportedError("pay-as-you-go", provider="payg", operation="balance")
    router.add_provider(mock("plain"))
    registry = CollectorRegistry()
    collector = RouterCollector(router, balance_interval=60)
    registry.register(collector)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(generate_latest(registry).decode())
               for s in family.samples}
    assert samples[("mlo_provider_balance_tokens", (("provider", "giga"), ("usage", "GigaChat")))] == 900000
    assert samples[("mlo_provider_balance_tokens", (("provider", "giga"), ("usage", "embeddings")))] == 9999967
    assert not any(key[0] == "mlo_provider_balance_tokens" and ("provider", "payg") in key[1] for key in samples)
    generate_latest(registry)
    assert Prepaid.asked == 2  # one ask each at the first scrape; none at the second (within the interval)
    prepaid.answer = RuntimeError("network down")
    collector.balance_interval = 0
    assert collector.balances() == {"giga": {"GigaChat": 900000, "embeddings": 9999967}}  # the last values kept
    assert Prepaid.asked == 3  # payg is never asked again
    router.close()


def test_spend_remaining_budget_and_limits_are_exported():
    router = Router(budget={"limit": 10.0, "period": "day"})
    router.add_provider(mock("priced", prices={"prompt": 1.0, "completion": 2.0},
                             budget=[{"limit": 100.0, "period": "month"}, {"limit": 50.0, "period": 3600}],
                             limits={"rpm": 60, "tpm": 100000}))
    router.complete("Hello")
    registry = CollectorRegistry()
    registry.register(RouterCollector(router))
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    spent = router.stats()["providers"]["priced"]["spend"]["total"]
    assert spent > 0
    assert samples[("mlo_provider_cost_total", (("provider", "priced"),))] == pytest.approx(spent)
    assert samples[("mlo_provider_budget_spent", (("period", "month"), ("provider", "priced")))] == pytest.approx(spent)
    assert samples[("mlo_provider_budget_remaining", (("period", "3600s"), ("provider", "priced")))] == pytest.approx(50 - spent)
    assert samples[("mlo_router_budget_remaining", (("period", "day"),))] == pytest.approx(10 - spent)
    assert samples[("mlo_provider_limit_requests_in_window", (("provider", "priced"),))] == 1
    assert samples[("mlo_provider_limit_tokens_in_window", (("provider", "priced"),))] > 0
    assert samples[("mlo_router_calls_waiting_for_capacity", ())] == 0
    router.close()

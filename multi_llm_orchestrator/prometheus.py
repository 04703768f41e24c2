"""Prometheus metrics of a Router (optional extra: ``pip install 'multi-llm-orchestrator[prometheus]'``).

``RouterCollector`` reads ``router.stats()`` when Prometheus scrapes, so there is no
polling thread and nothing to keep in sync. Register it on any registry, or let
``start_exporter`` serve it on its own port::

    from multi_llm_orchestrator.prometheus import start_exporter
    exporter = start_exporter(router, port=9464)       # http://127.0.0.1:9464/metrics
    ...
    exporter.close()

    # or, next to your application's other metrics:
    from prometheus_client import REGISTRY
    REGISTRY.register(RouterCollector(router))

Metrics (prefix ``mlo_``, set with ``namespace``); every ``mlo_provider_*`` metric has a
``provider`` label:

- ``mlo_router_calls_total{outcome="ok"|"error"}``: finished Router calls;
  ``mlo_router_calls_in_progress``: calls started and not finished.
- ``mlo_provider_info{model}`` (always 1); ``mlo_provider_attempts_total``,
  ``mlo_provider_successes_total``, ``mlo_provider_failures_total{error_type}``;
  ``mlo_provider_in_flight``; ``mlo_provider_success_rate``.
- ``mlo_provider_latency_seconds{quantile="0.5"|"0.95"|"0.99"}``: recent successful
  attempts (a bounded rolling window).
- ``mlo_provider_tokens_total{kind="prompt"|"completion"}`` as the provider reported them;
  ``mlo_provider_cost_total`` when prices are configured.
- ``mlo_provider_breaker_state{state="closed"|"open"|"half-open"}`` (1 for the current
  state); ``mlo_provider_breaker_open_seconds``.
- ``mlo_provider_hedges_total{outcome="started"|"won"|"lost"}``.
- Budgets (``ProviderConfig.budget``, ``Router(budget=...)``): ``mlo_provider_budget_spent``
  and ``mlo_provider_budget_remaining{period}``, ``mlo_router_budget_spent`` and
  ``mlo_router_budget_remaining{period}`` (period "day", "month" or "<seconds>s").
- Limits (``ProviderConfig.limits``): ``mlo_provider_limit_requests_in_window``,
  ``mlo_provider_limit_tokens_in_window``; ``mlo_router_calls_waiting_for_capacity``.
- ``mlo_provider_balance_tokens{usage}``: tokens left on the account per model family,
  for providers with a balance API (GigaChat's prepaid packages). Asked at scrape time
  at most every ``balance_interval`` seconds (default 300), within ``balance_timeout``
  (5); a failed ask keeps the last values, and a provider that answers "no balance"
  (a pay-as-you-go account) is not asked again.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from socketserver import ThreadingMixIn
from typing import Any, Dict, Iterator, Optional, Set, Tuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

try:
    from prometheus_client import CollectorRegistry, make_wsgi_app
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "multi_llm_orchestrator.prometheus needs prometheus-client: "
        "pip install 'multi-llm-orchestrator[prometheus]'"
    ) from exc

__all__ = ["RouterCollector", "Exporter", "start_exporter"]

logger = logging.getLogger("multi_llm_orchestrator.prometheus")

BREAKER_STATES = ("closed", "open", "half-open")
QUANTILES = (("0.5", "latency_p50_s"), ("0.95", "latency_p95_s"), ("0.99", "latency_p99_s"))


class RouterCollector:
    """A Prometheus collector over ``router.stats()``, read at scrape time.

    >>> registry = CollectorRegistry()
    >>> registry.register(RouterCollector(router))                      # doctest: +SKIP
    """

    def __init__(self, router: Any, namespace: str = "mlo", *, balance_interval: float = 300.0,
                 balance_timeout: float = 5.0) -> None:
        self.router = router
        self.namespace = namespace
        self.balance_interval = balance_interval
        self.balance_timeout = balance_timeout
        self._balance_lock = threading.Lock()
        self._balances: Dict[str, Tuple[float, Dict[str, float]]] = {}  # name -> (asked at, values)
        self._no_balance: Set[str] = set()

    def balances(self) -> Dict[str, Dict[str, float]]:
        """{provider: {usage: tokens left}} for providers with a balance API, asked at
        most every ``balance_interval`` seconds (see the module docstring)."""
        from .errors import NotSupportedError

        result: Dict[str, Dict[str, float]] = {}
        with self._balance_lock:  # two scrapes at once ask once
            for provider in self.router.providers:
                name = provider.name
                if not getattr(provider, "supports_balance", False) or name in self._no_balance:
                    continue
                asked_at, values = self._balances.get(name, (None, {}))
                if asked_at is None or time.monotonic() - asked_at >= self.balance_interval:
                    try:
                        values = dict(provider.balance(timeout=self.balance_timeout))
                    except NotSupportedError:
                        self._no_balance.add(name)
                        continue
                    except Exception as exc:  # a scrape must not fail: keep the last values
                        logger.debug("balance of %r unavailable: %s", name, exc, extra={"provider": name})
                    self._balances[name] = (time.monotonic(), values)
                if values:
                    result[name] = values
        return result

    def collect(self) -> Iterator[Metric]:
        stats = self.router.stats()
        ns = self.namespace
        calls = CounterMetricFamily(f"{ns}_router_calls", "Router calls finished, by outcome.", labels=["outcome"])
        calls.add_metric(["ok"], stats["succeeded"])
        calls.add_metric(["error"], stats["failed"])
        yield calls
        cache = CounterMetricFamily(f"{ns}_router_cache", "Response cache lookups, by result.", labels=["result"])
        cache.add_metric(["hit"], stats.get("cache_hits", 0))
        cache.add_metric(["miss"], stats.get("cache_misses", 0))
        yield cache
        yield GaugeMetricFamily(
            f"{ns}_router_calls_in_progress", "Router calls started and not finished.",
            value=max(0, stats["calls"] - stats["succeeded"] - stats["failed"]),
        )
        admission = stats.get("admission") or {}
        yield GaugeMetricFamily(f"{ns}_router_calls_waiting_for_capacity", "Calls queued by admission='wait'.",
                                value=admission.get("waiting", 0))
        yield from _budget_families(f"{ns}_router_budget", "the Router's", [], [([], admission.get("budgets") or [])])

        def family(kind: type, name: str, documentation: str, *labels: str) -> Metric:
            return kind(f"{ns}_provider_{name}", documentation, labels=["provider", *labels])

        info = family(GaugeMetricFamily, "info", "One per provider, with its model.", "model")
        attempts = family(CounterMetricFamily, "attempts", "Attempts sent to the provider.")
        successes = family(CounterMetricFamily, "successes", "Successful attempts.")
        failures = family(CounterMetricFamily, "failures", "Failed attempts by exception class.", "error_type")
        in_flight = family(GaugeMetricFamily, "in_flight", "Attempts running now.")
        success_rate = family(GaugeMetricFamily, "success_rate", "Successes among finished attempts.")
        latency = family(GaugeMetricFamily, "latency_seconds", "Latency of recent successful attempts.", "quantile")
        tokens = family(CounterMetricFamily, "tokens", "Tokens reported by the provider.", "kind")
        cost = family(CounterMetricFamily, "cost", "Cost from the configured prices per 1k tokens.")
        breaker = family(GaugeMetricFamily, "breaker_state", "1 for the circuit breaker's current state.", "state")
        open_for = family(GaugeMetricFamily, "breaker_open_seconds", "Seconds until an open breaker lets a probe through.")
        hedges = family(CounterMetricFamily, "hedges", "Hedged attempts by outcome.", "outcome")
        balance = family(GaugeMetricFamily, "balance_tokens", "Tokens left on the account, per model family.", "usage")
        requests_in_window = family(GaugeMetricFamily, "limit_requests_in_window",
                                    "Requests counted against the provider's rpm now (in flight or in the window).")
        tokens_in_window = family(GaugeMetricFamily, "limit_tokens_in_window",
                                  "Tokens counted against the provider's tpm now (estimates until reconciled).")
        provider_budgets = []
        for name, values in self.balances().items():
            for usage, value in sorted(values.items()):
                balance.add_metric([name, usage], value)

        for name, row in stats["providers"].items():
            info.add_metric([name, str(row.get("model") or "")], 1)
            attempts.add_metric([name], row["calls"])
            successes.add_metric([name], row["successes"])
            for error_type, count in sorted(row["failures_by_type"].items()):
                failures.add_metric([name, error_type], count)
            in_flight.add_metric([name], row["in_flight"])
            if row["success_rate"] is not None:
                success_rate.add_metric([name], row["success_rate"])
            for quantile, key in QUANTILES:
                if row[key] is not None:
                    latency.add_metric([name, quantile], row[key])
            tokens.add_metric([name, "prompt"], row["prompt_tokens"])
            tokens.add_metric([name, "completion"], row["completion_tokens"])
            if row["cost"] is not None:
                cost.add_metric([name], row["cost"])
            for state in BREAKER_STATES:
                breaker.add_metric([name, state], 1 if row["breaker"]["state"] == state else 0)
            open_for.add_metric([name], row["breaker"]["open_for_s"])
            for outcome in ("started", "won", "lost"):
                hedges.add_metric([name, outcome], row[f"hedges_{outcome}"])
            if "limits" in row:
                requests_in_window.add_metric([name], row["limits"]["requests_in_window"])
                tokens_in_window.add_metric([name], row["limits"]["tokens_in_window"])
            provider_budgets.append(([name], (row.get("spend") or {}).get("budgets") or []))
        yield from (info, attempts, successes, failures, in_flight, success_rate, latency, tokens, cost,
                    breaker, open_for, hedges, balance, requests_in_window, tokens_in_window)
        yield from _budget_families(f"{ns}_provider_budget", "the provider's", ["provider"], provider_budgets)


def _budget_families(prefix: str, whose: str, labels: list, rows: list) -> Iterator[Metric]:
    """``<prefix>_spent`` and ``<prefix>_remaining`` gauges, one sample per budget."""
    spent = GaugeMetricFamily(f"{prefix}_spent", f"Spent in the current period of {whose} budget.",
                              labels=[*labels, "period"])
    remaining = GaugeMetricFamily(f"{prefix}_remaining", f"Left in the current period of {whose} budget.",
                                  labels=[*labels, "period"])
    for values, budgets in rows:
        for budget in budgets:
            period = budget["period"] if isinstance(budget["period"], str) else f"{budget['period']:g}s"
            spent.add_metric([*values, period], budget["spent"])
            remaining.add_metric([*values, period], budget["remaining"])
    yield spent
    yield remaining


class Exporter:
    """A running ``/metrics`` endpoint; ``close()`` stops it (so does leaving ``with``)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread, registry: CollectorRegistry) -> None:
        self._server = server
        self._thread = thread
        self.registry = registry
        self.host, self.port = server.server_address[:2]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "Exporter":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Exporter(url={self.url!r})"


def start_exporter(
    router: Any,
    port: int = 9464,
    addr: str = "127.0.0.1",
    *,
    registry: Optional[CollectorRegistry] = None,
    namespace: str = "mlo",
) -> Exporter:
    """Serve the Router's metrics at ``http://addr:port/metrics`` from a daemon thread.

    Listens on loopback by default; pass ``addr="0.0.0.0"`` for Prometheus on another
    host. ``port=0`` picks a free port (see ``Exporter.port``). A new registry holds only
    this Router's metrics unless ``registry`` is given.
    """
    registry = CollectorRegistry() if registry is None else registry
    registry.register(RouterCollector(router, namespace))

    class Server(_ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET

    server = make_server(addr, port, make_wsgi_app(registry), Server, handler_class=_QuietHandler)
    # A short poll interval only makes close() quick; requests are served at once anyway.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="mlo-prometheus-exporter", daemon=True
    )
    thread.start()
    return Exporter(server, thread, registry)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not worth a stderr line each
        pass

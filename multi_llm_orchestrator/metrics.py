"""Per-provider counters and rolling latency statistics, bounded in memory.

One ``ProviderMetrics`` per provider, updated by the Router after every attempt and read
by strategies (in-flight count, EWMA latency, recent error rate) and by ``Router.stats()``.
Memory is fixed: latencies and outcomes live in ring buffers, whatever the call count.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left, insort
from collections import Counter, deque
from typing import Any, Dict, Optional

from . import forking
from .types import Usage

__all__ = ["ProviderMetrics", "percentile"]

LATENCY_WINDOW = 1024
OUTCOME_WINDOW = 100
EWMA_ALPHA = 0.2


def percentile(sorted_values: "list[float]", share: float) -> Optional[float]:
    """The ``share`` (0..1) percentile of already sorted values, nearest-rank; None if empty."""
    if not sorted_values:
        return None
    rank = math.ceil(share * len(sorted_values))  # 1-based nearest rank
    return sorted_values[max(0, min(len(sorted_values), rank) - 1)]


class ProviderMetrics:
    """Counters of one provider. Thread-safe; every method holds the lock briefly."""

    def __init__(
        self,
        price_per_1k_prompt: Optional[float] = None,
        price_per_1k_completion: Optional[float] = None,
        latency_window: int = LATENCY_WINDOW,
        price_per_1k_cached_prompt: Optional[float] = None,
    ) -> None:
        self._lock = threading.Lock()
        self._price_prompt = price_per_1k_prompt
        self._price_completion = price_per_1k_completion
        self._price_cached = price_per_1k_cached_prompt
        self.in_flight = 0
        self.abandoned_attempts = 0
        self.calls = 0
        self.successes = 0
        self.failures: Counter = Counter()
        self._latencies: deque = deque(maxlen=latency_window)
        self._outcomes: deque = deque(maxlen=OUTCOME_WINDOW)
        self.ewma_latency_s: Optional[float] = None
        # The latency window sorted: kept (one insertion, one removal per sample) once
        # latency_percentile has been asked, i.e. by hedging, which asks on every call.
        self._ranked: Optional["list[float]"] = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_prompt_tokens = 0
        self.reasoning_tokens = 0
        self.hedges_started = 0
        self.hedges_won = 0
        self.hedges_lost = 0
        forking.register(self)

    def _after_fork(self) -> None:
        # Attempts in flight in the parent's threads never finish in the child.
        self._lock = threading.Lock()
        self.in_flight = 0

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.calls += 1

    def succeeded(self, latency_s: float, usage: Optional[Usage]) -> None:
        with self._lock:
            self.in_flight -= 1
            self.successes += 1
            latencies, ranked = self._latencies, self._ranked
            if ranked is not None:
                if len(latencies) == latencies.maxlen:  # the oldest sample leaves the window
                    del ranked[bisect_left(ranked, latencies[0])]
                insort(ranked, latency_s)
            latencies.append(latency_s)
            self._outcomes.append(True)
            previous = self.ewma_latency_s
            self.ewma_latency_s = latency_s if previous is None else previous + EWMA_ALPHA * (latency_s - previous)
            if isinstance(usage, Usage) and usage.plausible:  # a custom provider's Usage(-5, ...) too
                self.prompt_tokens += usage.prompt_tokens
                self.completion_tokens += usage.completion_tokens
                self.cached_prompt_tokens += usage.cached_prompt_tokens
                self.reasoning_tokens += usage.reasoning_tokens

    def abandoned(self) -> None:
        """An attempt the Router stopped (lost race, close()): neither success nor failure."""
        with self._lock:
            self.in_flight -= 1
            self.abandoned_attempts += 1

    def failed(self, error: BaseException) -> None:
        with self._lock:
            self.in_flight -= 1
            self.failures[type(error).__name__] += 1
            self._outcomes.append(False)

    def hedge(self, event: str) -> None:
        """Count a hedge: "started", "won" or "lost"."""
        with self._lock:
            setattr(self, f"hedges_{event}", getattr(self, f"hedges_{event}") + 1)

    def error_rate(self) -> float:
        """Share of failures among the last ``OUTCOME_WINDOW`` finished attempts (0 if none)."""
        with self._lock:
            if not self._outcomes:
                return 0.0
            return self._outcomes.count(False) / len(self._outcomes)

    def latency_percentile(self, share: float, min_samples: int = 1) -> Optional[float]:
        """Latency percentile of recent successful attempts; None with fewer than ``min_samples``.

        Hedging asks for it on every call: the first call sorts the window, and from then
        on each sample is inserted in order (and the one leaving the window removed), so
        every answer is exact and costs a lookup, not a sort of up to 1,024 values.
        """
        with self._lock:
            if len(self._latencies) < min_samples:
                return None
            ranked = self._ranked
            if ranked is None:
                ranked = self._ranked = sorted(self._latencies)
            return percentile(ranked, share)

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            latencies = list(self._ranked) if self._ranked is not None else sorted(self._latencies)
            failures = dict(self.failures)
            data: Dict[str, Any] = {
                "calls": self.calls,
                "successes": self.successes,
                "failures": sum(failures.values()),
                "failures_by_type": failures,
                "in_flight": self.in_flight,
                "abandoned": self.abandoned_attempts,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "cached_prompt_tokens": self.cached_prompt_tokens,
                "reasoning_tokens": self.reasoning_tokens,
                "hedges_started": self.hedges_started,
                "hedges_won": self.hedges_won,
                "hedges_lost": self.hedges_lost,
            }
        finished = data["successes"] + data["failures"]
        data["success_rate"] = round(data["successes"] / finished, 4) if finished else None
        for name, share in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            value = percentile(latencies, share)
            data[f"latency_{name}_s"] = round(value, 6) if value is not None else None
        data["cost"] = self._cost(data["prompt_tokens"], data["completion_tokens"], data["cached_prompt_tokens"])
        return data

    def _cost(self, prompt_tokens: int, completion_tokens: int, cached_prompt_tokens: int = 0) -> Optional[float]:
        """Prompt tokens at the prompt price, except the cached ones at the cached price
        (when set); completion tokens (reasoning included: every provider bills them as
        completion) at the completion price."""
        if self._price_prompt is None and self._price_completion is None and self._price_cached is None:
            return None
        prompt_price = self._price_prompt or 0.0
        cached_price = prompt_price if self._price_cached is None else self._price_cached
        return round(
            (prompt_tokens - cached_prompt_tokens) / 1000 * prompt_price
            + cached_prompt_tokens / 1000 * cached_price
            + completion_tokens / 1000 * (self._price_completion or 0.0),
            6,
        )

"""Clocks for tests without sleeps, and the sliding-window count used by the rate-limit tests."""

from __future__ import annotations

import threading
from typing import Iterable

__all__ = ["FakeClock", "max_in_window"]


class FakeClock:
    """A thread-safe clock the test moves by hand (``advance``, or set ``now``)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def max_in_window(starts: Iterable[float], window: float) -> int:
    """The most of ``starts`` any half-open interval [t, t + window) holds."""
    ordered = sorted(starts)
    best = left = 0
    for right, start in enumerate(ordered):
        while ordered[left] <= start - window:
            left += 1
        best = max(best, right - left + 1)
    return best

"""Helpers shared by the benchmark scripts (not a benchmark itself).

Importing this module puts the repository root first on ``sys.path``, so every script
runs from a plain checkout with ``python benchmarks/NAME.py`` (no install needed).
"""

from __future__ import annotations

import math
import os
import statistics
import sys
from typing import Iterable, List, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def quantile(sorted_values: Sequence[float], share: float) -> float:
    """Nearest-rank quantile of already sorted values (p99.9 of 1,000 = the 999th)."""
    if not sorted_values:
        raise ValueError("no values")
    # round() first: 0.999 * 1000 is 999.0000000000001 in floating point.
    rank = min(len(sorted_values), max(1, math.ceil(round(share * len(sorted_values), 6))))
    return sorted_values[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def heading(text: str) -> None:
    print(text)
    print("-" * len(text))


def rounds_line(label: str, values: List[float], unit: str = "", scale: float = 1.0, digits: int = 1) -> str:
    """"label: median X (rounds: a b c)" for figures measured over several rounds."""
    shown = " ".join(f"{v * scale:.{digits}f}" for v in values)
    return f"{label}: median {median(values) * scale:.{digits}f}{unit} (rounds: {shown})"


class LoadWatch:
    """The machine's 1-minute load average at the start and at the end of a run: other
    work on the machine spreads the rounds, and this line says how much there was."""

    def __init__(self) -> None:
        self.start = self._load()

    @staticmethod
    def _load() -> float:
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    def summary(self) -> str:
        return (
            f"machine: {os.cpu_count()} CPUs, load average {self.start:.1f} at the start, "
            f"{self._load():.1f} at the end"
        )

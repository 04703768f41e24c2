"""Checks of numeric settings, one place for every message.

Each raises ``ConfigurationError("<name> must be ...; got <value>")`` and rejects bools,
NaN and infinities (a NaN compares false with every bound, so it would slip past a
plain ``value < low`` check and, say, keep a breaker open forever).

>>> check_number("timeout", 2, 0, low_open=True, kind="a number of seconds")
2.0
>>> check_number("top_p", 0, 0, 1, low_open=True)
Traceback (most recent call last):
...
multi_llm_orchestrator.errors.ConfigurationError: top_p must be in (0, 1]; got 0
"""

from __future__ import annotations

import math
from typing import Any, Optional

from .errors import ConfigurationError

__all__ = [
    "check_number", "check_int", "check_nesting", "is_real", "capped_growth",
    "MAX_SECONDS", "MAX_NUMBER", "MAX_NESTING",
]

#: The upper limit of every setting whose caller gives none: seconds (a timeout, hedge
#: delay, cooldown, interval) beyond a week are a typo, and past ``threading.TIMEOUT_MAX``
#: (~292 years) a wait raises OverflowError at call time instead of now.
MAX_SECONDS = 7 * 24 * 3600.0
#: ... and any other number or integer (weights, prices, counts): far above any real
#: value, far below where sums turn into infinity.
MAX_NUMBER = 1e15
#: How deeply a configuration value (``extra``, a config file) may nest: walking deeper
#: data recursively would hit Python's recursion limit.
MAX_NESTING = 64
_LIMITS = {"a number of seconds": MAX_SECONDS}
_LIMIT_NOTES = {"a number of seconds": " seconds (one week)"}


def is_real(value: Any) -> bool:
    """True for a finite int or float that is not a bool."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def check_number(
    name: str,
    value: Any,
    low: Optional[float] = None,
    high: Optional[float] = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
    kind: str = "a number",
) -> Optional[float]:
    """``value`` as a float if it is a finite number within the bounds (``low_open``:
    ``low`` itself excluded); None passes when ``allow_none``."""
    if value is None and allow_none:
        return None
    _check(name, value, is_real(value), low, high, low_open, high_open, allow_none, kind)
    return float(value)


def check_int(
    name: str,
    value: Any,
    low: Optional[int] = None,
    high: Optional[int] = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> Optional[int]:
    """``value`` if it is an int (not a bool) within the bounds; None passes when ``allow_none``."""
    if value is None and allow_none:
        return None
    number = not isinstance(value, bool) and isinstance(value, int)
    _check(name, value, number, low, high, low_open, high_open, allow_none, "an integer")
    return value


def _check(
    name: str, value: Any, number: bool, low: Optional[float], high: Optional[float],
    low_open: bool, high_open: bool, allow_none: bool, kind: str,
) -> None:
    in_range = number and not (
        (low is not None and (value <= low if low_open else value < low))
        or (high is not None and (value >= high if high_open else value > high))
    )
    if in_range:
        if high is None and value > _LIMITS.get(kind, MAX_NUMBER):
            limit = _LIMITS.get(kind, MAX_NUMBER)
            raise ConfigurationError(
                f"{name} must be at most {limit:g}{_LIMIT_NOTES.get(kind, '')}; got {value!r}: a larger value "
                "cannot be used (timers and counters would overflow)"
            )
        return
    or_none = " (or None)" if allow_none else ""
    if low is not None and high is not None:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        rule = f"{kind} in {interval}" if not number else f"in {interval}"
    elif low is not None:
        rule = f"{kind} {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        rule = f"{kind} {'<' if high_open else '<='} {high:g}"
    else:
        rule = kind
    raise ConfigurationError(f"{name} must be {rule}{or_none}; got {value!r}")


def capped_growth(start: float, multiplier: float, times: int, cap: float) -> float:
    """``min(start * multiplier ** times, cap)`` that never overflows, however large
    ``times`` grows with uptime: a plain float power raises OverflowError after about
    1,000 doublings (a breaker tripped 1,029 times did exactly that).

    >>> capped_growth(5.0, 2.0, 3, 60.0), capped_growth(5.0, 2.0, 10**6, 60.0)
    (40.0, 60.0)
    """
    if times <= 0 or start <= 0 or multiplier <= 1:
        return min(start, cap)
    if start >= cap:
        return cap
    # Compared in logarithms: start * multiplier ** times itself may not fit in a float.
    exponent = min(times, 1 << 30) * math.log(multiplier)
    if exponent >= math.log(cap) - math.log(start):
        return cap
    # Exact power when it fits a float (e**700 ~ 1e304); else through exp.
    grown = start * multiplier ** times if exponent < 700 else math.exp(math.log(start) + exponent)
    return min(cap, grown)


def check_nesting(name: str, value: Any, limit: int = MAX_NESTING) -> None:
    """ConfigurationError when the dicts and lists in ``value`` nest deeper than ``limit``
    (checked without recursion, so any depth is reported, not a RecursionError).

    >>> check_nesting("extra", {"a": [{"b": 1}]})
    >>> deep = {}
    >>> for _ in range(100): deep = {"x": deep}
    >>> check_nesting("extra", deep)
    Traceback (most recent call last):
    ...
    multi_llm_orchestrator.errors.ConfigurationError: extra nests dicts and lists more than 64 levels deep; flatten it
    """
    level = [value]
    for _ in range(limit):
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item if isinstance(item, (list, tuple)) else ())
            if isinstance(child, (dict, list, tuple))
        ]
        if not level:
            return
    raise ConfigurationError(f"{name} nests dicts and lists more than {limit} levels deep; flatten it")

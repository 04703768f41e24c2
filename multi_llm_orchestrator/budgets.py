"""Prices and spending budgets.

Prices are per 1,000 tokens, in the user's currency, per provider and model; none is
built in. A budget caps what a provider (or the whole Router) may spend over a period:
a calendar ``"day"`` or ``"month"`` (UTC, or ``utc_offset`` hours east of it), or a
rolling window of so many seconds.

A ``BudgetLedger`` keeps the spend of one budget behind the same three verbs as a
``Limiter``, each one atomic, so a shared store (Redis) can replace the in-memory one::

    ledger = MemoryBudgetLedger(Budget(limit=100.0, period="day"))
    hold = ledger.acquire(0.42)            # a Reservation of the expected cost, or a Refusal
    ...                                    # the call runs
    ledger.reconcile(hold, 0.37)           # the real cost is spent, the hold freed
    ledger.release(hold)                   # (no-op after reconcile; alone: nothing spent)

Holding the expected cost while a call runs is what keeps many threads from all seeing
"budget left" and overspending it together. The expected cost is an upper bound only
when the call sets ``max_tokens``.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Mapping, Optional, Tuple, Union

from . import forking
from .errors import ConfigurationError
from .limits import Refusal, Reservation
from .validation import check_number

if TYPE_CHECKING:
    from datetime import datetime

__all__ = ["Budget", "Price", "PriceTable", "BudgetLedger", "MemoryBudgetLedger", "PERIODS"]

PERIODS = ("day", "month")


@dataclass(frozen=True)
class Price:
    """Prices per 1,000 tokens. ``cached`` is for prompt tokens served from the
    provider's cache (None: the prompt price).

    >>> Price(prompt=0.2, completion=0.6).expected(1000, 500)
    0.5
    """

    prompt: float = 0.0
    completion: float = 0.0
    cached: Optional[float] = None

    def __post_init__(self) -> None:
        for name in ("prompt", "completion"):
            object.__setattr__(self, name, check_number(f"price {name}", getattr(self, name), 0))
        object.__setattr__(self, "cached", check_number("price cached", self.cached, 0, allow_none=True))

    def expected(self, prompt_tokens: float, completion_tokens: float) -> float:
        """The cost of a call of that many tokens."""
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1000.0

    def cost(self, usage: Any) -> float:
        """The cost of a finished call from its ``Usage`` (cached prompt tokens at ``cached``)."""
        prompt = max(0, int(getattr(usage, "prompt_tokens", 0) or 0))
        completion = max(0, int(getattr(usage, "completion_tokens", 0) or 0))
        cached = min(prompt, max(0, int(getattr(usage, "cached_prompt_tokens", 0) or 0)))
        cached_price = self.prompt if self.cached is None else self.cached
        return ((prompt - cached) * self.prompt + cached * cached_price + completion * self.completion) / 1000.0


_PRICE_KEYS = ("prompt", "completion", "cached")


class PriceTable:
    """The prices of one provider: one ``Price`` for any model, or one per model (with
    ``"*"`` for the others).

    Built from ``ProviderConfig.prices``: ``{"prompt": 0.2, "completion": 0.6}`` or
    ``{"GigaChat-Pro": {"prompt": 1.5, "completion": 1.5}, "*": {...}}``.
    """

    def __init__(self, by_model: Mapping[str, Price], default_model: Optional[str] = None) -> None:
        self._by_model = dict(by_model)
        self._default_model = default_model

    @classmethod
    def from_value(cls, value: Any, default_model: Optional[str] = None, where: str = "prices") -> Optional["PriceTable"]:
        if value is None:
            return None
        if isinstance(value, PriceTable):
            return value
        if isinstance(value, Price):
            return cls({"*": value}, default_model)
        if not isinstance(value, Mapping) or not value:
            raise ConfigurationError(
                f"{where} must be a dict such as {{'prompt': 0.2, 'completion': 0.6, 'cached': 0.1}} "
                f"(per 1k tokens) or {{'<model>': {{...}}}}; got {value!r}"
            )
        if set(value) <= set(_PRICE_KEYS):
            return cls({"*": _price(value, where)}, default_model)
        table = {}
        for model, entry in value.items():
            if not isinstance(model, str) or not isinstance(entry, (Mapping, Price)):
                raise ConfigurationError(
                    f"{where}: {model!r} must map a model name to {{'prompt': ..., 'completion': ...}}; "
                    f"valid price keys: {', '.join(_PRICE_KEYS)}"
                )
            table[model] = entry if isinstance(entry, Price) else _price(entry, f"{where}[{model!r}]")
        return cls(table, default_model)

    def price(self, model: Optional[str] = None) -> Optional[Price]:
        """The price of ``model`` (the provider's configured model when None)."""
        for key in (model, self._default_model, "*"):
            if key is not None and key in self._by_model:
                return self._by_model[key]
        return None

    def __repr__(self) -> str:
        return f"PriceTable({self._by_model!r})"


def _price(entry: Mapping[str, Any], where: str) -> Price:
    unknown = sorted(set(entry) - set(_PRICE_KEYS))
    if unknown:
        raise ConfigurationError(f"{where}: unknown price key {', '.join(map(repr, unknown))}; valid: {', '.join(_PRICE_KEYS)}")
    try:
        return Price(**entry)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class Budget:
    """At most ``limit`` spent per ``period``: ``"day"``, ``"month"`` (calendar, at
    ``utc_offset`` hours from UTC, e.g. 3 for Moscow) or a number of seconds (rolling).

    >>> Budget(limit=50, period="day", utc_offset=3)
    Budget(limit=50.0, period='day', utc_offset=3.0)
    """

    limit: float
    period: Union[str, float] = "day"
    utc_offset: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "limit", check_number("budget limit", self.limit, 0))
        if isinstance(self.period, str):
            if self.period not in PERIODS:
                raise ConfigurationError(
                    f"budget period must be 'day', 'month' or a number of seconds (rolling); got {self.period!r}"
                )
        else:
            object.__setattr__(
                self, "period",
                check_number("budget period", self.period, 0, low_open=True, kind="'day', 'month' or a number of seconds"),
            )
        object.__setattr__(self, "utc_offset", check_number("budget utc_offset", self.utc_offset, -14, 14))

    @classmethod
    def from_value(cls, value: Any, where: str = "budget") -> List["Budget"]:
        """Budgets from a ``Budget``, a dict of its fields, a list of those, or None."""
        if value is None:
            return []
        items = value if isinstance(value, (list, tuple)) else [value]
        budgets = []
        for index, item in enumerate(items):
            place = f"{where}[{index}]" if isinstance(value, (list, tuple)) else where
            if isinstance(item, cls):
                budgets.append(item)
                continue
            if not isinstance(item, Mapping):
                raise ConfigurationError(
                    f"{place} must be a dict such as {{'limit': 100, 'period': 'day'}}; got {type(item).__name__}"
                )
            unknown = sorted(set(item) - set(cls.__dataclass_fields__))
            if unknown or "limit" not in item:
                raise ConfigurationError(
                    f"{place} needs 'limit' and takes only {', '.join(cls.__dataclass_fields__)}; got {sorted(item)}"
                )
            try:
                budgets.append(cls(**item))
            except ConfigurationError as exc:
                if not isinstance(value, (list, tuple)):
                    raise  # the message already says "budget ..."
                raise ConfigurationError(f"{place}: {exc}") from None
        return budgets

    @property
    def rolling(self) -> bool:
        return not isinstance(self.period, str)

    def describe(self) -> str:
        per = f"per {self.period}" if not self.rolling else f"per {self.period:g} s"
        return f"budget {self.limit:g} {per}"

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class BudgetLedger(ABC):
    """The spend of one budget. Thread-safe; each method one atomic decision."""

    budget: Budget

    @abstractmethod
    def acquire(self, cost: float) -> Union[Reservation, Refusal]:
        """Hold ``cost`` (the expected cost of a call about to start) if spent plus held
        plus ``cost`` stays within the limit; else a ``Refusal`` with the time until the
        budget frees (the period's end, or the oldest rolling spend leaving)."""

    @abstractmethod
    def reconcile(self, hold: Reservation, cost: float) -> None:
        """The call finished and cost ``cost``: spend it and free the hold (once)."""

    @abstractmethod
    def release(self, hold: Reservation) -> None:
        """Free the hold without spending (the call never ran or cost nothing). Idempotent."""

    @abstractmethod
    def spent(self) -> float:
        """Spent in the current period (holds not included)."""

    def snapshot(self) -> Dict[str, Any]:
        spent = self.spent()
        return {
            "limit": self.budget.limit,
            "period": self.budget.period,
            "spent": round(spent, 6),
            "remaining": round(max(0.0, self.budget.limit - spent), 6),
        }


class MemoryBudgetLedger(BudgetLedger):
    """The in-process ``BudgetLedger``. ``clock`` is wall time (``time.time``), injectable."""

    def __init__(self, budget: Budget, clock: Callable[[], float] = time.time) -> None:
        self.budget = budget
        self._clock = clock
        self._lock = threading.Lock()
        forking.register(self)  # fresh locks in a forked child (forking.py)
        self._held = 0.0
        self._spent = 0.0
        self._period_key: Any = None
        self._entries: Deque[Tuple[float, float]] = deque()  # rolling: (when, cost)

    def _after_fork(self) -> None:
        # In a forked child: the parent's calls in flight settle in the parent.
        self._lock = threading.Lock()
        self._held = 0.0

    def acquire(self, cost: float) -> Union[Reservation, Refusal]:
        cost = max(0.0, float(cost)) if math.isfinite(cost) else math.inf
        with self._lock:
            now = self._clock()
            self._roll(now)
            if self._spent + self._held + cost > self.budget.limit + 1e-12:
                return Refusal(
                    f"{self.budget.describe()} reached ({self._spent:.4f} spent, {self._held:.4f} held, "
                    f"this call may cost {cost:.4f})",
                    self._wait(now, self._spent + self._held + cost - self.budget.limit),
                )
            self._held += cost
            return Reservation(0, now, {"cost": cost})

    def reconcile(self, hold: Reservation, cost: float) -> None:
        cost = max(0.0, float(cost)) if math.isfinite(cost) else 0.0
        with self._lock:
            if hold.released:
                return
            hold.released = True
            self._held -= hold.data["cost"]
            now = self._clock()
            self._roll(now)
            self._spent += cost
            if self.budget.rolling:
                self._entries.append((now, cost))

    def release(self, hold: Reservation) -> None:
        with self._lock:
            if not hold.released:
                hold.released = True
                self._held -= hold.data["cost"]

    def spent(self) -> float:
        with self._lock:
            self._roll(self._clock())
            return self._spent

    def _roll(self, now: float) -> None:
        budget = self.budget
        if budget.rolling:
            horizon = now - budget.period  # type: ignore[operator]
            while self._entries and self._entries[0][0] <= horizon:
                self._spent -= self._entries.popleft()[1]
            if not self._entries:
                self._spent = 0.0  # no float residue once the window is empty
            return
        key = _period_key(now, budget)
        if key != self._period_key:
            self._period_key, self._spent = key, 0.0

    def _wait(self, now: float, excess: float) -> Optional[float]:
        budget = self.budget
        if budget.rolling:
            freed = 0.0
            for when, cost in self._entries:
                freed += cost
                if freed >= excess - 1e-12:
                    return max(0.0, when + budget.period - now)  # type: ignore[operator]
            return None  # held costs must settle first
        return _period_end(now, budget) - now

    def __repr__(self) -> str:
        return f"MemoryBudgetLedger({self.budget!r})"


def _local(now: float, budget: Budget) -> "datetime":
    # datetime is imported here: only calendar budgets ("day", "month") need it.
    from datetime import datetime, timedelta, timezone

    return datetime.fromtimestamp(now, timezone(timedelta(hours=budget.utc_offset)))


def _period_key(now: float, budget: Budget) -> Tuple[int, ...]:
    local = _local(now, budget)
    return (local.year, local.month, local.day) if budget.period == "day" else (local.year, local.month)


def _period_end(now: float, budget: Budget) -> float:
    from datetime import timedelta

    local = _local(now, budget)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if budget.period == "day":
        end = start + timedelta(days=1)
    else:
        start = start.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return end.timestamp()

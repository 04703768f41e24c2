"""Prices and budget ledgers: periods with a fake wall clock, holds under threads,
bad values."""

from __future__ import annotations

import calendar
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from multi_llm_orchestrator.budgets import Budget, MemoryBudgetLedger, Price, PriceTable
from multi_llm_orchestrator.errors import ConfigurationError
from multi_llm_orchestrator.limits import Refusal, Reservation
from multi_llm_orchestrator.types import Usage

from fakes.timing import FakeClock



def utc(year, month, day, hour=0, minute=0, second=0) -> float:
    return float(calendar.timegm((year, month, day, hour, minute, second)))


# Prices ---------------------------------------------------------------------------------


def test_price_of_a_usage_with_cached_prompt_tokens():
    price = Price(prompt=2.0, completion=6.0, cached=0.5)
    usage = Usage(prompt_tokens=1000, completion_tokens=500, total_tokens=1500)
    assert price.cost(usage) == pytest.approx(2.0 + 3.0)
    cached = type("U", (), {"prompt_tokens": 1000, "completion_tokens": 0, "cached_prompt_tokens": 400})()
    assert price.cost(cached) == pytest.approx(600 * 2.0 / 1000 + 400 * 0.5 / 1000)
    assert Price(prompt=2.0).cost(cached) == pytest.approx(2.0)  # cached defaults to the prompt price


def test_price_table_flat_and_per_model():
    flat = PriceTable.from_value({"prompt": 1, "completion": 2}, default_model="m")
    assert flat.price("anything") == Price(1.0, 2.0)
    table = PriceTable.from_value(
        {"GigaChat-Pro": {"prompt": 1.5, "completion": 1.5}, "*": {"prompt": 0.2, "completion": 0.2}},
        default_model="GigaChat",
    )
    assert table.price("GigaChat-Pro").prompt == 1.5
    assert table.price("GigaChat").prompt == 0.2
    assert table.price(None).prompt == 0.2
    only_pro = PriceTable.from_value({"GigaChat-Pro": {"prompt": 1.5}}, default_model="GigaChat")
    assert only_pro.price(None) is None
    assert PriceTable.from_value(None) is None


@pytest.mark.parametrize(
    "value, fragment",
    [
        ({"prompt": -1}, "price prompt must be a number >= 0"),
        ({"prompt": float("inf")}, "price prompt"),
        ({"prompt": "cheap"}, "price prompt"),
        ({"completion": True}, "price completion"),
        ({"cached": -0.1}, "price cached"),
        ({"m": {"input": 1}}, "unknown price key 'input'"),
        ({"m": 3}, "must map a model name"),
        ({}, "prices must be a dict"),
        ([1, 2], "prices must be a dict"),
    ],
)
def test_each_bad_price_is_a_configuration_error(value, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        PriceTable.from_value(value)


# Budgets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, fragment",
    [
        ({"limit": -1}, "budget limit must be a number >= 0"),
        ({"limit": float("nan")}, "budget limit"),
        ({"period": "day"}, "needs 'limit'"),
        ({"limit": 1, "period": "week"}, "budget period must be 'day', 'month' or a number of seconds"),
        ({"limit": 1, "period": 0}, "budget period"),
        ({"limit": 1, "utc_offset": 20}, "budget utc_offset"),
        ({"limit": 1, "currency": "RUB"}, "takes only"),
        ("100", "budget must be a dict"),
        ([{"limit": 1}, {"limit": -2}], r"budget\[1\]: budget limit"),
    ],
)
def test_each_bad_budget_is_a_configuration_error(value, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        Budget.from_value(value)


def test_a_daily_budget_holds_expected_cost_spends_real_cost_and_resets_at_midnight():
    clock = FakeClock(utc(2026, 11, 29, 23, 0))
    ledger = MemoryBudgetLedger(Budget(limit=10.0, period="day"), clock)
    hold = ledger.acquire(6.0)
    assert isinstance(hold, Reservation)
    refused = ledger.acquire(5.0)  # 6 held + 5 > 10, though nothing is spent yet
    assert isinstance(refused, Refusal) and "budget 10 per day" in refused.reason
    assert refused.retry_after == pytest.approx(3600.0)  # until midnight UTC
    ledger.reconcile(hold, 4.0)
    ledger.release(hold)  # after reconcile: nothing more
    assert ledger.spent() == pytest.approx(4.0)
    assert ledger.snapshot()["remaining"] == pytest.approx(6.0)
    assert isinstance(ledger.acquire(6.0), Reservation)
    clock.now = utc(2026, 11, 30, 0, 0, 1)
    assert ledger.spent() == 0.0


def test_a_daily_budget_follows_the_utc_offset():
    clock = FakeClock(utc(2026, 11, 29, 20, 30))  # 23:30 in Moscow (UTC+3)
    ledger = MemoryBudgetLedger(Budget(limit=1.0, period="day", utc_offset=3), clock)
    ledger.reconcile(ledger.acquire(1.0), 1.0)
    assert ledger.acquire(0.5).retry_after == pytest.approx(1800.0)
    clock.now = utc(2026, 11, 29, 21, 0)  # Moscow midnight
    assert isinstance(ledger.acquire(0.5), Reservation)


def test_a_monthly_budget_resets_on_the_first_including_december():
    clock = FakeClock(utc(2026, 12, 31, 12))
    ledger = MemoryBudgetLedger(Budget(limit=100.0, period="month"), clock)
    ledger.reconcile(ledger.acquire(100.0), 100.0)
    assert ledger.acquire(0.01).retry_after == pytest.approx(12 * 3600.0)
    clock.now = utc(2027, 1, 1)
    assert ledger.spent() == 0.0


def test_a_rolling_budget_frees_spend_as_it_leaves_the_window():
    clock = FakeClock(1_000_000.0)
    ledger = MemoryBudgetLedger(Budget(limit=3.0, period=3600), clock)
    for _ in range(3):
        ledger.reconcile(ledger.acquire(1.0), 1.0)
        clock.now += 600
    refused = ledger.acquire(1.5)  # 3 spent at t0, t0+600, t0+1200; needs 1.5 freed: two must leave
    assert refused.retry_after == pytest.approx(600 + 3600 - 1800)
    clock.now = 1_000_000.0 + 3600
    assert ledger.spent() == pytest.approx(2.0)


def test_a_released_hold_spends_nothing():
    ledger = MemoryBudgetLedger(Budget(limit=1.0), FakeClock(utc(2026, 1, 1)))
    hold = ledger.acquire(1.0)
    ledger.release(hold)
    ledger.release(hold)
    assert ledger.spent() == 0.0 and isinstance(ledger.acquire(1.0), Reservation)


def test_a_budget_is_never_overspent_by_64_threads():
    ledger = MemoryBudgetLedger(Budget(limit=10.0), FakeClock(utc(2026, 1, 1)))
    spent = []
    lock = threading.Lock()

    def worker(_):
        for _ in range(20):
            hold = ledger.acquire(0.3)
            if isinstance(hold, Reservation):
                ledger.reconcile(hold, 0.3)
                with lock:
                    spent.append(0.3)

    with ThreadPoolExecutor(64) as pool:
        list(pool.map(worker, range(64)))
    assert sum(spent) <= 10.0 + 1e-9
    assert len(spent) == 33

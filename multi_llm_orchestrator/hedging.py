"""Hedged requests: when the first provider is slow, race the next one.

``HedgePolicy`` says when to hedge (a fixed delay or an adaptive percentile of the
provider's recent latency), how many hedges one call may start, and what share of
extra requests hedging may add (``HedgeBudget``, a rolling window, like a retry budget).

``race`` runs one call's attempts on an executor: it starts the first candidate, starts
the next one at once when an attempt fails, starts a hedge when the delay passes with
no answer, returns the first success, and raises when every candidate failed or the
deadline passed. It knows nothing about providers: the Router hands it ``launch``.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, wait
from concurrent.futures import TimeoutError as WaitTimeout
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

from . import forking
from .errors import ConfigurationError, ProviderError, ProviderTimeoutError
from .metrics import ProviderMetrics
from .validation import check_int, check_number, is_real

__all__ = ["HedgePolicy", "HedgeBudget", "race", "RaceFailed", "wait_one"]

S = TypeVar("S")
MAX_HEDGE_WINDOW = 3600.0


@dataclass(frozen=True)
class HedgePolicy:
    """When and how much to hedge.

    - ``after``: seconds to wait for the first answer before starting a hedge, or a
      percentile such as ``"p95"``: the selected provider's rolling p95 latency of
      successful calls (at least ``min_delay``; ``default_delay`` until it has
      ``min_samples`` samples).
    - ``max_hedges``: hedges one call may start (default 1).
    - ``budget``: hedges may add at most this share of extra requests over the last
      ``window`` seconds (default 0.1, i.e. 10 %), plus ``budget_reserve`` hedges per
      window (default 3) so that hedging also works at low traffic.

    >>> HedgePolicy(after="p95").delay(ProviderMetrics())
    0.25
    """

    after: Union[float, str]
    max_hedges: int = 1
    budget: float = 0.1
    min_delay: float = 0.005
    default_delay: float = 0.25
    min_samples: int = 20
    window: float = 10.0
    budget_reserve: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.after, str):
            match = re.fullmatch(r"p(\d{1,2}(?:\.\d+)?)", self.after)
            if not match or not 0 < float(match.group(1)) < 100:
                raise ConfigurationError(
                    f"hedge_after must be seconds > 0 or a percentile like 'p95'; got {self.after!r}"
                )
        elif not is_real(self.after) or self.after <= 0:
            raise ConfigurationError(f"hedge_after must be seconds > 0 or a percentile like 'p95'; got {self.after!r}")
        else:
            check_number("hedge_after", self.after, 0, low_open=True, kind="a number of seconds")
        # The percentile as a share, read once here rather than parsed on every call.
        object.__setattr__(self, "_share", float(self.after[1:]) / 100 if isinstance(self.after, str) else None)
        check_int("max_hedges", self.max_hedges, 1)
        check_number("hedge_budget", self.budget, 0, 1, kind="a share")
        for name in ("min_delay", "default_delay"):
            check_number(name, getattr(self, name), 0, low_open=True, kind="a number of seconds")
        # One counter bucket per second of the window: an hour is plenty, a week is 600k buckets.
        check_number("window", self.window, 0, MAX_HEDGE_WINDOW, low_open=True, kind="a number of seconds")
        check_int("min_samples", self.min_samples, 1)
        check_int("budget_reserve", self.budget_reserve, 0)

    def delay(self, metrics: ProviderMetrics) -> float:
        """Seconds to wait for this provider before hedging."""
        share = self._share
        if share is None:
            return float(self.after)
        observed = metrics.latency_percentile(share, self.min_samples)
        if observed is None:
            return self.default_delay
        return max(self.min_delay, observed)


class HedgeBudget:
    """Allows a hedge only while hedges stay within ``share`` of calls (plus ``reserve``)
    over the last ``window`` seconds.

    Counts live in one-second buckets, so memory is fixed whatever the traffic.
    """

    def __init__(
        self, share: float, window: float = 10.0, reserve: int = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.share = share
        self.reserve = reserve
        self._buckets = max(1, int(window))
        self._clock = clock
        self._lock = threading.Lock()
        forking.register(self)  # fresh locks in a forked child (forking.py)
        self._calls = [0] * self._buckets
        self._hedges = [0] * self._buckets
        self._stamps = [-1] * self._buckets

    def _bucket(self) -> int:
        second = int(self._clock())
        index = second % self._buckets
        if self._stamps[index] != second:
            self._stamps[index] = second
            self._calls[index] = 0
            self._hedges[index] = 0
        return index

    def _totals(self) -> Tuple[int, int]:
        oldest = int(self._clock()) - self._buckets
        calls = hedges = 0
        for index in range(self._buckets):
            if self._stamps[index] > oldest:
                calls += self._calls[index]
                hedges += self._hedges[index]
        return calls, hedges

    def record_call(self) -> None:
        with self._lock:
            self._calls[self._bucket()] += 1

    def try_spend(self) -> bool:
        """Take one hedge from the budget if it allows one."""
        with self._lock:
            calls, hedges = self._totals()
            if hedges + 1 > self.share * calls + self.reserve:
                return False
            self._hedges[self._bucket()] += 1
            return True


class RaceFailed(Exception):
    """Raised by ``race``: every candidate failed (``deadline_hit`` False) or time ran out."""

    def __init__(self, errors: List[ProviderError], deadline_hit: bool) -> None:
        super().__init__(f"{len(errors)} attempt(s) failed")
        self.errors = errors
        self.deadline_hit = deadline_hit


def wait_one(future: Future, timeout: Optional[float]) -> "Dict[Future, Optional[BaseException]]":
    """``{future: its outcome}`` once it is done (see ``_outcome``), ``{}`` when
    ``timeout`` passes first: what ``wait([future], timeout, FIRST_COMPLETED)`` reports
    as done, waiting on the Future's own condition only (and reading it once). A cancel
    by ``shutdown(cancel_futures=True)`` notifies that condition, so it wakes this wait.
    ``exception()``, not ``result()``: a failed attempt's ProviderTimeoutError is a
    TimeoutError too, and must not read as the wait timing out."""
    try:
        return {future: future.exception(timeout)}
    except CancelledError as cancelled:
        return {future: cancelled}
    except WaitTimeout:  # not done when the wait ended, as wait() would report it
        return {}


def _outcome(future: Future) -> Optional[BaseException]:
    """A done Future's exception (None: it succeeded); ``CancelledError`` if cancelled."""
    try:
        return future.exception()
    except CancelledError as cancelled:
        return cancelled


def race(
    candidates: Sequence[S],
    launch: Callable[[S, bool], Optional[Future]],
    *,
    deadline: Optional[float],
    hedge_delay: Optional[Callable[[S], float]] = None,
    max_hedges: int = 0,
    budget: Optional[HedgeBudget] = None,
    on_lost: Callable[[Future], None],
    name_of: Callable[[S], str] = str,
    stop: Optional[Future] = None,
    running: Optional[Tuple[S, Future]] = None,
) -> Future:
    """Run attempts until one succeeds; return its (done) Future.

    ``launch(candidate, hedge)`` submits an attempt and returns its Future, or None when
    the candidate must be skipped (open circuit). Failed attempts' futures raise
    ProviderError. ``on_lost`` is called for attempts still running when the race ends.
    ``stop`` is a Future completed when the executor shuts down: ``shutdown(cancel_futures=True)``
    cancels queued attempts without waking ``wait()``, so the race waits on it too.
    ``running``: an attempt already in flight (its candidate, its Future) whose hedge
    delay has passed: the race starts from it, hedging at once, instead of launching
    the first of ``candidates``.
    """
    queue = list(candidates)
    pending: Dict[Future, S] = {}  # attempts in flight: their candidates
    errors: List[ProviderError] = []
    hedges = 0
    hedge_at: Optional[float] = None

    def start(hedge: bool) -> bool:
        nonlocal hedge_at
        hedge_at = None  # even when nothing starts: an expired hedge time would spin the loop
        while queue:
            candidate = queue.pop(0)
            future = launch(candidate, hedge)
            if future is not None:
                pending[future] = candidate
                if hedge_delay is not None and max_hedges > hedges and queue:
                    hedge_at = time.monotonic() + hedge_delay(candidate)
                return True
        return False

    def abandon(timed_out: bool) -> None:
        for future, candidate in pending.items():
            if future.done() and not future.cancelled() and future.exception() is not None:
                errors.append(future.exception())  # type: ignore[arg-type]  # failed, not lost
                continue
            if timed_out and not future.done():
                errors.append(ProviderTimeoutError("still running when the deadline passed", provider=name_of(candidate)))
            on_lost(future)
        pending.clear()

    try:
        if running is None:
            start(False)
        else:
            pending[running[1]] = running[0]
            if hedge_delay is not None and max_hedges > 0 and queue:
                hedge_at = time.monotonic()  # its delay has passed: the hedge is due now
        while pending:
            soonest = hedge_at if deadline is None else deadline if hedge_at is None else min(deadline, hedge_at)
            timeout = None if soonest is None else max(0.0, soonest - time.monotonic())
            if len(pending) == 1:
                # One attempt in flight (nearly every call): wait on that Future's own
                # condition. wait() would build a waiter and lock every Future for it,
                # work the worker thread waits behind. A cancel by shutdown notifies the
                # condition, and a running attempt is cut by close(), so ``stop`` is not
                # needed to wake this wait.
                done = wait_one(next(iter(pending)), timeout)
            else:
                watched = list(pending)
                if stop is not None and not stop.done():
                    watched.append(stop)
                finished, _ = wait(watched, timeout=timeout, return_when=FIRST_COMPLETED)
                if stop is not None and stop.done():
                    finished = {future for future in pending if future.done()}  # cancelled ones count as done
                done = {future: _outcome(future) for future in finished if future in pending}
            for future, error in done.items():
                candidate = pending.pop(future)
                if isinstance(error, CancelledError):  # the pool was shut down before it ran
                    error = ProviderError("cancelled before it started", provider=name_of(candidate))
                if error is None:
                    if pending:
                        abandon(timed_out=False)
                    return future
                errors.append(error)  # type: ignore[arg-type]
                if not pending:  # nothing else in flight: fall back at once, no hedge wait
                    start(False)
            if done:
                continue
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                abandon(timed_out=True)
                raise RaceFailed(errors, deadline_hit=True)
            if hedge_at is not None and now >= hedge_at:
                if hedges < max_hedges and (budget is None or budget.try_spend()):
                    hedges += 1
                    start(True)
                else:
                    hedge_at = None
    except RaceFailed:
        raise
    except BaseException:  # e.g. KeyboardInterrupt in wait(): attempts still running are lost
        abandon(timed_out=False)
        raise
    raise RaceFailed(errors, deadline_hit=False)

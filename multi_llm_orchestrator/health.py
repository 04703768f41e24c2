"""Parallel provider health checks with a per-check timeout and a TTL cache.

All checks run at once on a thread pool, so checking N providers takes about as long as
the slowest single check. A check that hangs counts as unhealthy when its timeout passes
and never delays the result beyond it (its thread finishes in the background).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from concurrent.futures import wait as wait_all  # where a parameter is called "wait"
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from . import forking
from .providers.base import BaseProvider, take_health_failure

if TYPE_CHECKING:
    from .state import HealthStore

__all__ = ["HealthChecker", "HealthResult", "BoundedHealth"]

logger = logging.getLogger("multi_llm_orchestrator.health")

SHARED_POLL_S = 0.01  # how often a process waiting for another's check looks for its result


@dataclass(frozen=True)
class HealthResult:
    """One provider's health: ``healthy``, how long the check took, why it failed."""

    provider: str
    healthy: bool
    latency_s: float
    error: Optional[str] = None
    checked_at: float = 0.0


class HealthChecker:
    """Checks providers in parallel and caches the results for ``ttl`` seconds.

    ``interval`` > 0 starts a daemon thread that re-checks every provider that often;
    ``close()`` stops it and the pool.

    >>> checker = HealthChecker(timeout=2.0, ttl=10.0)              # doctest: +SKIP
    >>> checker.check([provider_a, provider_b])
    {'a': HealthResult(provider='a', healthy=True, ...), 'b': ...}
    """

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        ttl: float = 10.0,
        max_workers: int = 16,
        clock: Callable[[], float] = time.monotonic,
        store: Optional["HealthStore"] = None,
    ) -> None:
        self.timeout = timeout
        self.ttl = ttl
        self._clock = clock
        self._max_workers = max_workers
        self._store = store  # results shared with other processes (RedisState), if any
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="mlo-health")
        self._cache: Dict[str, HealthResult] = {}
        self._lock = threading.Lock()
        self._refreshing: Dict[str, Future] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._background: Optional[Tuple[float, Callable[[], Sequence[BaseProvider]]]] = None
        forking.register(self)

    def check(self, providers: Iterable[BaseProvider], timeout: Optional[float] = None) -> Dict[str, HealthResult]:
        """Check every provider now, in parallel; update the cache; return the results."""
        providers = list(providers)
        limit = self.timeout if timeout is None else timeout
        started = self._clock()
        futures: Dict[Future, BaseProvider] = {
            self._executor.submit(self._check_one, provider, limit): provider for provider in providers
        }
        done, _ = wait(futures, timeout=limit)
        results: Dict[str, HealthResult] = {}
        for future, provider in futures.items():
            if future in done:
                results[provider.name] = future.result()
            else:
                results[provider.name] = HealthResult(
                    provider.name, False, self._clock() - started, f"no answer within {limit:g} s", self._clock()
                )
        with self._lock:
            self._cache.update(results)
        self._share(results.values())
        return {provider.name: results[provider.name] for provider in providers}

    def _check_one(self, provider: BaseProvider, timeout: float) -> HealthResult:
        started = self._clock()
        error: Optional[str] = None
        take_health_failure()  # a reason left by an earlier check on this thread is not this one's
        try:
            healthy = bool(provider.health_check(timeout=timeout))
        except Exception as exc:  # a provider's check must not break the others
            healthy, error = False, f"{type(exc).__name__}: {exc}"
        reason = take_health_failure()
        if not healthy and error is None:
            error = reason or "health check failed"
        return HealthResult(provider.name, healthy, self._clock() - started, error, self._clock())

    def _check_for_fleet(self, provider: BaseProvider, timeout: float) -> HealthResult:
        """A check to fill the cache: with a shared store, only one process of the fleet
        checks a provider at a time; the others wait (up to ``timeout``) for its result."""
        store = self._store
        if store is None or store.claim(provider.name, timeout):
            return self._check_one(provider, timeout)
        started = self._clock()
        while self._clock() - started < timeout and not self._stop.is_set():
            found = store.get(provider.name)
            if found is not None:
                return replace(found[0], checked_at=self._clock() - found[1])
            self._stop.wait(SHARED_POLL_S)
        return self._check_one(provider, timeout)  # the other process's check never landed

    def cached(self, name: str) -> Optional[HealthResult]:
        """The cached result if it is younger than ``ttl``, else None."""
        with self._lock:
            result = self._cache.get(name)
        if result is None or self._clock() - result.checked_at > self.ttl:
            return self._shared(name)
        return result

    def _shared(self, name: str) -> Optional[HealthResult]:
        """Another process's fresh result, adopted into this cache (None without a store)."""
        found = self._store.get(name) if self._store is not None else None
        if found is None:
            return None
        result, age = found
        result = replace(result, checked_at=self._clock() - age)
        with self._lock:
            self._cache[name] = result
        return result

    def _share(self, results: Iterable[HealthResult]) -> None:
        if self._store is not None:
            for result in results:
                self._store.put(result, self.ttl)

    def status(self, providers: Sequence[BaseProvider], wait: Optional[float] = None) -> Dict[str, bool]:
        """Health of each provider from the cache, checking (in parallel, once for all
        concurrent callers) only those whose cached result is missing or stale.

        ``wait`` bounds how long this caller waits for those checks (default: the check
        timeout); a provider whose check has not answered by then counts as not healthy
        for this caller, and its check goes on in the background to fill the cache.
        """
        results = {p.name: self.cached(p.name) for p in providers}
        stale = [p for p in providers if results[p.name] is None]
        if stale:
            limit = self.timeout if wait is None else max(0.0, min(self.timeout, wait))
            futures = self._refresh(stale)
            done, _ = wait_all(futures, timeout=limit)
            if limit >= self.timeout:  # the whole check timeout passed: a hanging check is unhealthy
                with self._lock:
                    for provider, future in zip(stale, futures):
                        if future not in done:
                            self._cache[provider.name] = HealthResult(
                                provider.name, False, limit, f"no answer within {limit:g} s", self._clock()
                            )
            results = {p.name: self.cached(p.name) for p in providers}
        return {name: bool(result and result.healthy) for name, result in results.items()}

    def _refresh(self, providers: Sequence[BaseProvider]) -> List[Future]:
        """A check per provider on the pool, shared with every caller asking meanwhile."""
        futures, started = [], []
        with self._lock:
            for provider in providers:
                future = self._refreshing.get(provider.name)
                if future is None:
                    future = self._executor.submit(self._check_for_fleet, provider, self.timeout)
                    self._refreshing[provider.name] = future
                    started.append((provider.name, future))
                futures.append(future)
        for name, future in started:  # outside the lock: a done future calls back at once
            future.add_done_callback(lambda done, name=name: self._refreshed(name, done))
        return futures

    def _refreshed(self, name: str, future: Future) -> None:
        with self._lock:
            if self._refreshing.get(name) is future:
                del self._refreshing[name]
            if future.cancelled():
                return
            self._cache[name] = future.result()  # _check_one never raises
        self._share([future.result()])

    def forget(self, name: str) -> None:
        with self._lock:
            self._cache.pop(name, None)

    def start_background(self, interval: float, providers: Callable[[], Sequence[BaseProvider]]) -> None:
        """Re-check ``providers()`` every ``interval`` seconds on a daemon thread."""
        if self._thread is not None:
            return
        self._background = (interval, providers)  # to restart it in a forked child

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.check(providers())
                except RuntimeError:  # the pool was shut down under us: we are closing
                    return
                except Exception:  # pragma: no cover - keep the refresher alive
                    logger.exception("background health check failed")

        self._thread = threading.Thread(target=loop, name="mlo-health-refresh", daemon=True)
        self._thread.start()

    def close(self, wait_for_checks: bool = True) -> None:
        """Stop the refresher and the pool; by default wait for checks still running
        (each is bounded by its timeout) so no thread outlives the checker."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 1)
        self._executor.shutdown(wait=wait_for_checks, cancel_futures=True)


    def _after_fork(self) -> Optional[Callable[[], None]]:
        """In a forked child (see forking.py): a pool and locks of its own, no checks in
        flight, and the refresher started again once every provider has new connections."""
        forking.fresh_locks(self)
        self._refreshing = {}
        if self._stop.is_set():  # closed before the fork: stays closed
            return None
        self._executor = ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="mlo-health")
        self._thread = None
        if self._background is None:
            return None
        interval, providers = self._background
        return lambda: self.start_background(interval, providers)


class BoundedHealth:
    """A ``HealthChecker`` as one call sees it: ``status`` waits at most ``share`` of the
    call's time left (no bound without a deadline), so a slow health check cannot use up
    the call's deadline; ``expected_cost`` is the call's (see ``Call.expected_cost``),
    or that of ``demand``, a part of it (an embedding batch). Everything else is the
    checker's."""

    def __init__(self, checker: HealthChecker, call: Any, share: float, demand: Any = None) -> None:
        self._checker = checker
        self._call = call
        self._share = share
        self._demand = demand

    def status(self, providers: Sequence[BaseProvider], wait: Optional[float] = None) -> Dict[str, bool]:
        remaining = self._call.remaining()
        if remaining is not None:
            left = max(0.0, remaining * self._share)
            wait = left if wait is None else min(wait, left)
        return self._checker.status(providers, wait)

    def expected_cost(self, state: Any) -> Optional[float]:
        """This call's expected cost on a provider (its ProviderState), None without
        prices: what the "cheapest" strategy ranks by."""
        return self._call.expected_cost(state, self._demand)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._checker, name)

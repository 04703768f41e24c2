"""The Router: pick a provider, call it, fall back, optionally hedge; thread-safe, blocking.

One call reads straight down::

    route / complete / route_stream
      -> _plan: strategy orders the providers whose circuit is not open
      -> _run: for each provider in order -> _Attempt.run -> provider.complete / stream
               (on the caller's thread; on the executor via hedging.race when hedging
               or a total timeout is set)
      -> Completion / TextStream, with every attempt listed; metrics, breaker, logs and
         listeners updated once per attempt and once per call.

Strategies, health checks, circuit breakers, hedging and metrics live in their own
modules; the Router only composes them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .breaker import BreakerPolicy, CircuitBreaker
from .errors import (
    AllProvidersFailedError,
    ConfigurationError,
    DeadlineExceededError,
    InvalidRequestError,
    NoProvidersError,
    OrchestratorError,
    ProviderError,
    ProviderTimeoutError,
)
from .health import HealthChecker, HealthResult
from .hedging import HedgeBudget, HedgePolicy, RaceFailed, race
from .metrics import ProviderMetrics
from .providers.base import BaseProvider
from .strategies import ProviderState, Strategy, make_strategy
from .types import Attempt, Completion, GenerationParams, Prompt, RouterEvent, StreamEnd, TextStream

__all__ = ["Router"]

logger = logging.getLogger("multi_llm_orchestrator.router")

Listener = Callable[[RouterEvent], None]
ALL_OPEN_CHOICES = ("closest", "fail")
DEADLINE_SLACK_S = 0.02


class Router:
    """Routes prompts to providers by strategy, with fallback, breakers and hedging.

    Parameters (all optional):

    - ``strategy``: "round-robin" (default), "random", "first-available",
      "best-available", "weighted", "least-busy", or a ``Strategy`` instance.
    - ``timeout``: seconds for a whole call, fallbacks, retries and Retry-After waits
      included. Each attempt gets the time left. ``None``: each provider's own timeout.
    - ``hedge_after``: seconds, or a percentile such as "p95", after which a slow call
      is raced against the next provider; ``max_hedges`` (1) and ``hedge_budget`` (0.1,
      the largest share of extra requests hedging may add) bound it; a ``HedgePolicy``
      may be passed as ``hedge_after`` for every knob.
    - ``breaker``: a ``BreakerPolicy``, a dict of its fields, or False to disable.
    - ``when_all_open``: "closest" (default: still try the provider closest to recovery)
      or "fail" (raise at once) when every circuit is open.
    - ``health_ttl``, ``health_timeout``, ``health_interval``: cache lifetime, per-check
      timeout, and period of an optional background re-check thread.
    - ``max_workers``: threads for hedged and deadline-bound calls.

    Without hedging and without ``timeout`` a call runs on the caller's thread.

    >>> with Router(strategy="round-robin") as router:                 # doctest: +SKIP
    ...     router.add_provider(MockProvider(ProviderConfig(name="a")))
    ...     router.route("What is Python?")
    'Mock response to: What is Python?'
    """

    def __init__(
        self,
        strategy: Union[str, Strategy] = "round-robin",
        *,
        timeout: Optional[float] = None,
        hedge_after: Union[float, str, HedgePolicy, None] = None,
        max_hedges: int = 1,
        hedge_budget: float = 0.1,
        breaker: Union[BreakerPolicy, Dict[str, Any], bool, None] = None,
        when_all_open: str = "closest",
        health_ttl: float = 10.0,
        health_timeout: float = 5.0,
        health_interval: Optional[float] = None,
        max_workers: int = 64,
    ) -> None:
        self._strategy = make_strategy(strategy)
        self.timeout = _optional_seconds("timeout", timeout)
        if isinstance(hedge_after, HedgePolicy) or hedge_after is None:
            self._hedge = hedge_after
        else:
            self._hedge = HedgePolicy(hedge_after, max_hedges, hedge_budget)
        self._hedge_budget = (
            HedgeBudget(self._hedge.budget, self._hedge.window, self._hedge.budget_reserve) if self._hedge else None
        )
        self._breaker_policy = BreakerPolicy.from_value(breaker)
        if when_all_open not in ALL_OPEN_CHOICES:
            raise ConfigurationError(f"when_all_open must be one of {', '.join(ALL_OPEN_CHOICES)}; got {when_all_open!r}")
        self.when_all_open = when_all_open
        for name, value in (("health_ttl", health_ttl), ("health_timeout", health_timeout)):
            _optional_seconds(name, value)
        _optional_seconds("health_interval", health_interval)
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ConfigurationError(f"max_workers must be an integer >= 1; got {max_workers!r}")
        self._health = HealthChecker(timeout=health_timeout, ttl=health_ttl)
        self._max_workers = max_workers
        self._executor: Optional[ThreadPoolExecutor] = None
        self._lock = threading.Lock()
        self._states: Tuple[ProviderState, ...] = ()
        self._listeners: Tuple[Listener, ...] = ()
        self._calls = {"calls": 0, "succeeded": 0, "failed": 0}
        self._closed = False
        if health_interval:
            self._health.start_background(health_interval, lambda: [s.provider for s in self._states])

    @classmethod
    def from_config(cls, source: Union[str, "os.PathLike[str]", Dict[str, Any]]) -> "Router":
        """A Router built from a dict or a JSON file (see README, "Configuration file")."""
        from .configuration import router_from_config

        return router_from_config(source, router_class=cls)

    # Providers ---------------------------------------------------------------------

    def add_provider(self, provider: BaseProvider) -> BaseProvider:
        """Add a provider; its name must be unique. Returns it."""
        if not isinstance(provider, BaseProvider):
            raise ConfigurationError(
                f"add_provider takes a BaseProvider (e.g. MockProvider(ProviderConfig(...))); got {type(provider).__name__}"
            )
        config = provider.config
        state = ProviderState(
            provider,
            CircuitBreaker(self._breaker_policy),
            ProviderMetrics(config.price_per_1k_prompt_tokens, config.price_per_1k_completion_tokens),
        )
        with self._lock:
            self._check_open()
            if any(s.name == provider.name for s in self._states):
                raise ConfigurationError(
                    f"A provider named {provider.name!r} is already registered; give each a unique ProviderConfig.name"
                )
            self._states = self._states + (state,)
        return provider

    def remove_provider(self, name: str) -> BaseProvider:
        """Remove the provider called ``name`` and return it (not closed)."""
        with self._lock:
            for state in self._states:
                if state.name == name:
                    self._states = tuple(s for s in self._states if s is not state)
                    self._health.forget(name)
                    return state.provider
            known = ", ".join(s.name for s in self._states) or "none"
        raise ConfigurationError(f"No provider named {name!r}; registered: {known}")

    @property
    def providers(self) -> List[BaseProvider]:
        """The registered providers, in the order they were added."""
        return [state.provider for state in self._states]

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    # Calls -------------------------------------------------------------------------

    def route(self, prompt: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None) -> str:
        """The answer's text. Same as ``complete(...).text``."""
        return self.complete(prompt, params, timeout=timeout).text

    def complete(
        self, prompt: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None
    ) -> Completion:
        """The answer with who produced it, usage, latency and every attempt made.

        Raises ``AllProvidersFailedError`` (``DeadlineExceededError`` when the timeout
        ran out) listing what each provider failed with.
        """
        messages, params = BaseProvider._prepare(prompt, params)

        def invoke(provider: BaseProvider, remaining: Optional[float]) -> Completion:
            return provider.complete(messages, params, timeout=remaining)

        call = _Call(self, timeout, streaming=False)
        completion, attempt = self._run(call, invoke)
        attempt.finish(None, completion.usage)
        call.finish(attempt, None, completion.usage)
        return Completion(
            completion.text, completion.provider, completion.model, completion.usage,
            completion.finish_reason, call.elapsed(), call.attempt_list(),
        )

    def route_stream(
        self, prompt: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None
    ) -> TextStream:
        """The answer as text chunks while they arrive.

        Falls back to the next provider only before the first chunk: once text has been
        yielded, a failure raises (naming the provider) rather than mixing two answers.
        """
        messages, params = BaseProvider._prepare(prompt, params)

        def invoke(provider: BaseProvider, remaining: Optional[float]) -> "_OpenedStream":
            return _OpenedStream.open(provider.stream(messages, params, timeout=remaining))

        call = _Call(self, timeout, streaming=True)
        opened, attempt = self._run(call, invoke)
        result = TextStream(
            self._relay(opened, call, attempt),
            provider=attempt.state.name,
            model=opened.stream.model,
            on_close=opened.stream.close,
        )
        result.attempts = call.attempt_list()  # type: ignore[attr-defined]
        return result

    def _relay(self, opened: "_OpenedStream", call: "_Call", attempt: "_Attempt") -> Iterator[Union[str, StreamEnd]]:
        stream, error = opened.stream, None
        try:
            if opened.first:
                yield opened.first
            for chunk in stream:
                if call.deadline is not None and time.monotonic() > call.deadline:
                    raise ProviderTimeoutError(
                        f"the stream did not finish within the Router timeout of {call.budget:g} s",
                        provider=attempt.state.name,
                    )
                yield chunk
            yield StreamEnd(stream.usage, stream.finish_reason, stream.model)
        except Exception as exc:
            error = _as_provider_error(exc, attempt.state.name)
            if error is exc:
                raise
            raise error from exc
        finally:
            stream.close()
            attempt.finish(error, stream.usage)
            call.finish(attempt, error, stream.usage)

    def _run(self, call: "_Call", invoke: Callable[[BaseProvider, Optional[float]], Any]) -> Tuple[Any, "_Attempt"]:
        """Try providers in the planned order until one succeeds; the shared core of
        ``complete`` and ``route_stream``."""
        self._calls_add("calls")
        try:
            order, forced = self._plan()
        except OrchestratorError:
            self._calls_add("failed")
            raise
        if logger.isEnabledFor(logging.DEBUG):
            plan = [state.name for state in order]
            logger.debug("%s: trying %s", "stream" if call.streaming else "call", ", ".join(plan),
                         extra={"plan": plan, "streaming": call.streaming})
        if self._hedge is None and call.deadline is None:
            errors: List[ProviderError] = []
            for state in order:
                attempt = _Attempt.reserve(call, state, hedge=False, force=state is forced)
                if attempt is None:
                    continue
                try:
                    return attempt.run(invoke), attempt.won()
                except ProviderError as error:
                    errors.append(error)
            raise call.failed(errors, deadline_hit=False)

        attempts: Dict[Future, _Attempt] = {}

        def launch(state: ProviderState, hedge: bool) -> Optional[Future]:
            attempt = _Attempt.reserve(call, state, hedge=hedge, force=state is forced)
            if attempt is None:
                return None
            future = self._pool().submit(attempt.run, invoke)
            attempts[future] = attempt
            return future

        def lost(future: Future, state: ProviderState, hedge: bool) -> None:
            attempts[future].abandon(future)

        if self._hedge_budget is not None:
            self._hedge_budget.record_call()
        policy = self._hedge
        try:
            result, state, hedge = race(
                order,
                launch,
                deadline=call.deadline,
                hedge_delay=(lambda s: policy.delay(s.metrics)) if policy else None,
                max_hedges=policy.max_hedges if policy else 0,
                budget=self._hedge_budget,
                on_lost=lost,
                name_of=lambda s: s.name,
            )
        except RaceFailed as failure:
            raise call.failed(failure.errors, deadline_hit=failure.deadline_hit)
        winner = next(a for a in attempts.values() if a.state is state and a.hedge == hedge)
        return result, winner.won()

    def _plan(self) -> Tuple[List[ProviderState], Optional[ProviderState]]:
        """Providers to try, in order, and the one forced through an open circuit (if any)."""
        self._check_open()
        states = self._states
        if not states:
            raise NoProvidersError("The Router has no providers: add one with router.add_provider(...)")
        available = [state for state in states if state.breaker.is_available()]
        if available:
            return self._strategy.order(available, self._health), None
        closest = min(states, key=lambda state: state.breaker.remaining())
        if self.when_all_open == "fail":
            raise AllProvidersFailedError(
                [], f"Every provider's circuit is open; the first recovers in {closest.breaker.remaining():.1f} s"
            )
        return [closest], closest

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            with self._lock:
                self._check_open()
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(self._max_workers, thread_name_prefix="mlo-router")
        return self._executor

    # Batch, health, stats ----------------------------------------------------------

    def batch(
        self,
        prompts: Sequence[Prompt],
        params: Optional[GenerationParams] = None,
        *,
        max_workers: int = 8,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> List[Union[Completion, Exception]]:
        """Complete many prompts on a thread pool; results in input order, each a
        Completion or the exception that prompt ended with. ``progress(done, total)``
        is called after each prompt finishes."""
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ConfigurationError(f"max_workers must be an integer >= 1; got {max_workers!r}")
        prompts = list(prompts)
        results: List[Union[Completion, Exception]] = [None] * len(prompts)  # type: ignore[list-item]
        done = 0
        done_lock = threading.Lock()

        def one(index: int) -> None:
            nonlocal done
            try:
                results[index] = self.complete(prompts[index], params)
            except Exception as exc:
                results[index] = exc
            with done_lock:
                done += 1
                finished = done
            if progress is not None:
                progress(finished, len(prompts))

        with ThreadPoolExecutor(max_workers, thread_name_prefix="mlo-batch") as pool:
            list(pool.map(one, range(len(prompts))))
        return results

    def health_check(self, timeout: Optional[float] = None) -> Dict[str, bool]:
        """Check every provider now, in parallel: {name: healthy}."""
        return {name: result.healthy for name, result in self.health_report(timeout).items()}

    def health_report(self, timeout: Optional[float] = None) -> Dict[str, HealthResult]:
        """Like ``health_check`` with each check's latency and error."""
        self._check_open()
        return self._health.check(self.providers, timeout)

    def stats(self) -> Dict[str, Any]:
        """Counters for the Router and for each provider (see README, "Metrics")."""
        with self._lock:
            totals = dict(self._calls)
        providers = {}
        for state in self._states:
            snapshot = state.metrics.snapshot()
            snapshot["model"] = state.provider.model
            snapshot["breaker"] = state.breaker.snapshot()
            providers[state.name] = snapshot
        return {**totals, "providers": providers}

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` after every attempt and every finished call.

        Listeners run on the thread that made the attempt; an exception in one is logged
        and ignored.
        """
        if not callable(listener):
            raise ConfigurationError(f"A listener must be callable; got {type(listener).__name__}")
        with self._lock:
            self._listeners = self._listeners + (listener,)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = tuple(l for l in self._listeners if l is not listener)

    def _emit(self, event: RouterEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("A Router listener raised; the call goes on")

    def _calls_add(self, key: str) -> None:
        with self._lock:
            self._calls[key] += 1

    # Lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop background work, wait for in-flight attempts, close every provider."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            executor, self._executor = self._executor, None
        for state in self._states:
            try:
                state.provider.close()
            except Exception:
                logger.exception("Closing provider %r failed", state.name)
        self._health.close()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _check_open(self) -> None:
        if self._closed:
            raise OrchestratorError("This Router is closed: create a new one")

    def __enter__(self) -> "Router":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        names = ", ".join(state.name for state in self._states)
        return f"Router(strategy={self._strategy.name or self._strategy!r}, providers=[{names}])"


class _Call:
    """Bookkeeping of one Router call: deadline and the attempts made so far."""

    def __init__(self, router: Router, timeout: Optional[float], streaming: bool) -> None:
        self.router = router
        self.streaming = streaming
        self.budget = router.timeout if timeout is None else _optional_seconds("timeout", timeout)
        self.started = time.monotonic()
        self.deadline = self.started + self.budget if self.budget is not None else None
        self._attempts: List[Tuple[int, Attempt]] = []
        self._started = 0
        self._lock = threading.Lock()
        self.over = False

    def remaining(self) -> Optional[float]:
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def record(self, attempt: Attempt, order: int) -> None:
        """Note an attempt's outcome; ``order`` is when it started, so the list reads in
        start order even when a hedge finishes before the attempt it raced."""
        with self._lock:
            if not self.over:
                self._attempts.append((order, attempt))

    def next_order(self) -> int:
        with self._lock:
            self._started += 1
            return self._started

    def attempt_list(self) -> List[Attempt]:
        with self._lock:
            return [attempt for _, attempt in sorted(self._attempts, key=lambda item: item[0])]

    def failed(self, errors: List[ProviderError], deadline_hit: bool) -> AllProvidersFailedError:
        with self._lock:
            self.over = True
        # An attempt given the last of the budget times out on its own a hair before the
        # Router's deadline: that is the deadline running out too.
        remaining = self.remaining()
        if remaining is not None and remaining < DEADLINE_SLACK_S:
            deadline_hit = True
        if deadline_hit:
            failure: AllProvidersFailedError = DeadlineExceededError(errors, self.budget or 0.0)
        else:
            failure = AllProvidersFailedError(errors)
        failure.__cause__ = errors[-1] if errors else None
        failure.__suppress_context__ = True
        self._report(None, "error", failure, None, len(errors))
        return failure

    def finish(self, attempt: "_Attempt", error: Optional[ProviderError], usage: Any) -> None:
        with self._lock:
            self.over = True
            count = len(self._attempts)
        self._report(attempt, "error" if error else "ok", error, usage, count)

    def _report(self, attempt: Optional["_Attempt"], outcome: str, error: Optional[BaseException], usage: Any, count: int) -> None:
        router = self.router
        router._calls_add("succeeded" if outcome == "ok" else "failed")
        provider = attempt.state.provider if attempt else None
        latency = self.elapsed()
        if outcome == "ok" and logger.isEnabledFor(logging.INFO):
            logger.info(
                "call answered by %s (%s) in %.3f s after %d attempt(s)",
                provider.name, provider.model, latency, count,
                extra={
                    "provider": provider.name, "model": provider.model, "latency_s": latency, "attempts": count,
                    "prompt_tokens": getattr(usage, "prompt_tokens", None),
                    "completion_tokens": getattr(usage, "completion_tokens", None), "outcome": "ok",
                },
            )
        elif outcome != "ok" and logger.isEnabledFor(logging.INFO):
            logger.info(
                "call failed in %.3f s after %d attempt(s): %s", latency, count, type(error).__name__,
                extra={
                    "provider": provider.name if provider else None, "model": provider.model if provider else None,
                    "latency_s": latency, "attempts": count, "error_type": type(error).__name__, "outcome": "error",
                },
            )
        if router._listeners:
            router._emit(RouterEvent(
                "call", provider.name if provider else None, provider.model if provider else None, outcome, latency,
                type(error).__name__ if error else None, str(error) if error else None, usage,
                attempts=count, streaming=self.streaming,
            ))


class _Attempt:
    """One provider tried during one call: breaker reservation, metrics, logs, events."""

    def __init__(self, call: _Call, state: ProviderState, hedge: bool) -> None:
        self.call = call
        self.state = state
        self.hedge = hedge
        self.order = call.next_order()
        self.started = 0.0
        self.answered = 0.0
        self.lost = False
        self.finished = False

    @classmethod
    def reserve(cls, call: _Call, state: ProviderState, *, hedge: bool, force: bool) -> Optional["_Attempt"]:
        """An attempt if the provider's breaker lets one through now, else None."""
        if not state.breaker.try_acquire(force=force):
            call.record(Attempt(state.name, "skipped", hedge=hedge), call.next_order())
            return None
        if hedge:
            state.metrics.hedge("started")
        return cls(call, state, hedge)

    def run(self, invoke: Callable[[BaseProvider, Optional[float]], Any]) -> Any:
        remaining = self.call.remaining()
        provider = self.state.provider
        if remaining is not None and remaining <= 0:
            self.state.breaker.release()
            error = ProviderTimeoutError("no time left in the Router timeout", provider=provider.name)
            self.call.record(Attempt(provider.name, "error", 0.0, error.message, type(error).__name__, self.hedge), self.order)
            raise error
        self.state.metrics.started()
        self.started = time.monotonic()
        try:
            result = invoke(provider, remaining)
        except Exception as exc:
            error = _as_provider_error(exc, provider.name)
            self.finish(error, None)
            if error is exc:
                raise
            raise error from exc
        except BaseException:  # KeyboardInterrupt and the like: account, then let it fly
            self.finish(ProviderError("interrupted", provider=provider.name), None)
            raise
        self.answered = time.monotonic() - self.started
        return result

    def won(self) -> "_Attempt":
        self.call.record(Attempt(self.state.name, "ok", self.answered, hedge=self.hedge), self.order)
        if self.hedge:
            self.state.metrics.hedge("won")
        return self

    def finish(self, error: Optional[ProviderError], usage: Any) -> None:
        """Record the outcome once: metrics, breaker, attempt list, log, event."""
        if self.finished:
            return
        self.finished = True
        state, latency = self.state, time.monotonic() - self.started
        if error is None:
            state.metrics.succeeded(latency, usage)
            state.breaker.record_success()
        else:
            state.metrics.failed(error)
            state.breaker.record_failure(error)
            self.call.record(Attempt(state.name, "error", latency, error.message, type(error).__name__, self.hedge), self.order)
            logger.warning(
                "attempt on %s failed after %.3f s: %s: %s", state.name, latency, type(error).__name__, error.message,
                extra={"provider": state.name, "error_type": type(error).__name__, "latency_s": latency},
            )
        router = self.call.router
        if router._listeners:
            outcome = "lost" if self.lost else ("error" if error else "ok")
            router._emit(RouterEvent(
                "attempt", state.name, state.provider.model, outcome, latency,
                type(error).__name__ if error else None, error.message if error else None, usage,
                hedge=self.hedge, streaming=self.call.streaming,
            ))

    def abandon(self, future: Future) -> None:
        """The race ended without this attempt: discard its result when it arrives."""
        self.lost = True
        self.call.record(Attempt(self.state.name, "lost", time.monotonic() - self.started, hedge=self.hedge), self.order)
        if self.hedge:
            self.state.metrics.hedge("lost")

        def discard(done: Future) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            result = done.result()
            if isinstance(result, _OpenedStream):
                result.stream.close()
            self.finish(None, getattr(result, "usage", None))

        future.add_done_callback(discard)


class _OpenedStream:
    """A provider stream whose first chunk has arrived (so the provider did answer)."""

    def __init__(self, stream: TextStream, first: str) -> None:
        self.stream = stream
        self.first = first

    @classmethod
    def open(cls, stream: TextStream) -> "_OpenedStream":
        try:
            first = next(stream, "")
        except BaseException:
            stream.close()
            raise
        return cls(stream, first)


def _as_provider_error(exc: BaseException, provider: str) -> ProviderError:
    """Every failure of an attempt as a ProviderError, so fallback sees one type."""
    if isinstance(exc, ProviderError):
        if exc.provider is None:
            exc.provider = provider
        return exc
    if isinstance(exc, ConfigurationError):  # e.g. a parameter this provider cannot take
        return InvalidRequestError(str(exc), provider=provider)
    if isinstance(exc, TimeoutError):
        return ProviderTimeoutError(str(exc) or "timed out", provider=provider)
    return ProviderError(f"unexpected {type(exc).__name__}: {exc}", provider=provider)


def _optional_seconds(name: str, value: Optional[float]) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(f"{name} must be a number of seconds > 0 (or None); got {value!r}")
    return float(value)

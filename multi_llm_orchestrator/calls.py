"""The bookkeeping of one Router call and of each attempt in it.

``Call`` holds the deadline and the attempts made so far, and reports the finished call
(totals, one log record, listeners). ``AttemptRun`` is one provider tried: it reserves the
breaker, runs the provider with the time left, and records the outcome once in the
provider's metrics and breaker, the call's attempt list, the log and the listeners.
``Telemetry`` holds what outlives calls: the Router's call totals, its listeners, an
optional tracer, and the attempts running now (``LiveAttempts``, for ``close()``).

``try_in_turn`` tries the planned providers one after another. A plain call runs each
attempt on the caller's thread; a call with a deadline or hedging runs it on the
Router's executor (``AttemptRun.hop``) and waits on its Future until the deadline, so a
provider ignoring its timeout cannot hold the caller. With hedging, an attempt still
running at its hedge delay raises ``HedgeDue``, and the Router hands it to
``hedging.race``: only then are several attempts in flight.

An attempt the Router gives up on (hedge lost, Router deadline passed, Router closed)
is stopped, not left to run: its ``CancelScope`` cuts the requests it has in flight
(see ``transfers.py``), which frees its worker thread at once. One stopped by a lost
race or by ``close()`` ends as ``AttemptStopped``: counted as "abandoned", neither a
success nor a failure, and its breaker reservation is given back.

A tracer (see ``multi_llm_orchestrator.otel``) is any object with ``start_call(call)``
returning a call trace or None; a call trace has ``attempt(attempt_run)`` returning an
attempt trace (``run(invoke, provider, remaining)`` and ``end(error, usage, result)``) and
``end(attempt_run, error, usage, result)``. Without a tracer the only cost is an ``is None`` test
per call and per attempt.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import CancelledError, Executor, Future
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

from .admission import Admission, Demand, Grant, NoCapacityYet, RouterBudgetRefusal, capacity_error
from .errors import (
    AllProvidersFailedError,
    OrchestratorError,
    ConfigurationError,
    DeadlineExceededError,
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    ResponseFormatError,
)
from .failover import _attempt as _fallback
from .hedging import wait_one
from .limits import Refusal
from .limits import _feedback
from .providers.base import BaseProvider
from .strategies import ProviderState
from .transfers import CancelScope
from .transfers import _local as _transfer
from .types import Attempt, Completion, RouterEvent, TextStream

__all__ = [
    "Call", "AttemptRun", "OpenedStream", "Telemetry", "Listener", "as_provider_error", "checked_completion",
    "try_in_turn", "LiveAttempts", "AttemptStopped", "DeadlinePassed", "HedgeDue", "CachedCall",
]

# Records keep the Router's logger name: it is what users filter on.
logger = logging.getLogger("multi_llm_orchestrator.router")

Listener = Callable[[RouterEvent], None]
DEADLINE_SLACK_S = 0.02
OPEN_CIRCUIT = "circuit open (or its recovery probe is taken)"


class AttemptStopped(ProviderError):
    """An attempt the Router stopped before it ended: it lost a race or the Router was
    closed. Not the provider's fault: no breaker failure, counted as "abandoned"."""


class LiveAttempts:
    """The attempts running now (streams until they end), so that ``close()`` can wait
    for them and then stop them. Thread-safe."""

    def __init__(self) -> None:
        # add/discard (every attempt) take the lock itself: entering a Condition is two
        # Python calls, entering a Lock none. The Condition shares it, for close().
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._attempts: Dict[int, "AttemptRun"] = {}
        self.closed: Optional[ProviderError] = None

    def add(self, attempt: "AttemptRun") -> None:
        with self._lock:
            if self.closed is None:
                self._attempts[id(attempt)] = attempt
                return
        raise AttemptStopped(self.closed.message, provider=attempt.state.name)

    def discard(self, attempt: "AttemptRun") -> None:
        with self._lock:
            # Only close() waits, and it sets ``closed`` under this lock before it does.
            if self._attempts.pop(id(attempt), None) is not None and not self._attempts and self.closed is not None:
                self._cond.notify_all()

    def close(self, grace: float, error: ProviderError) -> None:
        """Refuse new attempts, wait up to ``grace`` seconds for the running ones, then
        stop those still running with ``error``."""
        deadline = time.monotonic() + grace
        with self._cond:
            self.closed = error
            while self._attempts:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            attempts = list(self._attempts.values())
        for attempt in attempts:
            try:
                attempt.cut(error)
            except Exception:  # e.g. a stream being read on another thread right now
                logger.debug("stopping an attempt at close() failed", exc_info=True)


class Telemetry:
    """The Router's call totals and listeners. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Cache hits are calls answered without a provider (counted in calls and succeeded).
        self._totals = {"calls": 0, "succeeded": 0, "failed": 0, "cache_hits": 0, "cache_misses": 0}
        self.listeners: Tuple[Listener, ...] = ()
        self.tracer: Optional[Any] = None
        self.live = LiveAttempts()

    def count(self, key: str) -> None:
        with self._lock:
            self._totals[key] += 1

    def totals(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._totals)

    def add_listener(self, listener: Listener) -> None:
        if not callable(listener):
            raise ConfigurationError(f"A listener must be callable; got {type(listener).__name__}")
        with self._lock:
            self.listeners = self.listeners + (listener,)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            self.listeners = tuple(known for known in self.listeners if known is not listener)

    def emit(self, event: RouterEvent) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("A Router listener raised; the call goes on")

    def cache_hit(self, streaming: bool, messages: Any, params: Any, answer: Any, latency: float) -> None:
        """Report a call answered from the response cache (``answer``: the Completion or
        the replayed TextStream): listeners get its "call" event with no attempts and no
        usage (nothing was spent now), a tracer a call span marked ``mlo.cache.hit``."""
        if self.listeners:
            self.emit(RouterEvent("call", answer.provider, answer.model, "ok", latency, attempts=0, streaming=streaming))
        tracer = self.tracer
        if tracer is not None:
            call_trace = tracer.start_call(CachedCall(streaming, messages, params))
            if call_trace is not None:
                call_trace.end(None, None, None, answer)


class CachedCall:
    """A call answered from the response cache, as a tracer sees it: no attempts."""

    cache_hit = True
    operation = "chat"

    def __init__(self, streaming: bool, messages: Any, params: Any) -> None:
        self.streaming = streaming
        self.messages = messages
        self.params = params

    @staticmethod
    def attempt_list() -> List[Attempt]:
        return []


class Call:
    """Bookkeeping of one Router call: deadline and the attempts made so far."""

    # Defaults read from the class until a call changes them: every call pays for each
    # attribute it sets, and most calls never wait, trace, or get refused.
    waiting = False  # admission="wait": a pass with no capacity waits, not fails
    on_admitted: Optional[Callable[[], None]] = None
    trace: Optional[Any] = None
    over = False
    _reported = False
    _started = 0
    _demand: Optional[Demand] = None
    #: The Router's ``ContextWindows``: learns from an attempt refused as too long.
    windows: Optional[Any] = None

    def __init__(
        self,
        budget: Optional[float],
        streaming: bool,
        telemetry: "Telemetry",
        messages: Optional[List[Any]] = None,
        params: Any = None,
        operation: str = "chat",
        *,
        admission: Optional[Admission] = None,
        max_cost: Optional[float] = None,
        pinned: Optional[FrozenSet[str]] = None,
    ) -> None:
        self.telemetry = telemetry
        self.pinned = pinned  # provider=/providers= of the call: planning leaves out the others
        self.admission = admission
        self.max_cost = max_cost  # planning skips providers expected to cost more
        # Providers refused by admission control on this pass: (name, Refusal).
        self.refusals: List[Tuple[str, Refusal]] = []
        telemetry.count("calls")
        self.streaming = streaming
        self.budget = budget
        self.started = time.monotonic()
        self.deadline = self.started + budget if budget is not None else None
        self._attempts: Dict[int, Attempt] = {}  # by start order: a later outcome replaces an earlier one
        self._lock = threading.Lock()
        self.messages = messages  # the validated prompt: for planning checks, and a tracer that records content
        self.params = params
        self.operation = operation  # "chat" or "embeddings": what a tracer names the call
        tracer = telemetry.tracer
        if tracer is not None:
            self.trace = tracer.start_call(self)

    @property
    def demand(self) -> Optional[Demand]:
        """What the call asks of a provider's limits and budgets (None without a prompt);
        built on first use: a call without limits, budgets or prices never needs it."""
        if self._demand is None and self.messages is not None and self.params is not None:
            self._demand = Demand(self.messages, self.params, self.max_cost)
        return self._demand

    def remaining(self) -> Optional[float]:
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def expected_cost(self, state: ProviderState, demand: Optional[Demand] = None) -> Optional[float]:
        """This call's expected cost on ``state``'s provider (None: no prices), for
        strategies; ``demand``: one part of the call instead (an embedding batch)."""
        if self.admission is None:
            return None
        return self.admission.expected_cost(state, self.demand if demand is None else demand)

    def refuse(self, state: ProviderState, refusal: Refusal, hedge: bool) -> None:
        """Admission control skipped this provider: note why and for how long."""
        with self._lock:
            self.refusals.append((state.name, refusal))
        self.record(Attempt(state.name, "skipped", 0.0, refusal.describe(), type(refusal).__name__, hedge), self.next_order())

    def out_of_capacity(self, waited: bool = False) -> AllProvidersFailedError:
        """End the call: no provider had capacity (or budget) to start it."""
        with self._lock:
            refusals = list(self.refusals)
        failure = capacity_error(refusals, waited, self.remaining())
        if self._end():
            self._report(None, "error", failure, None, 0)
        return failure  # type: ignore[return-value]

    def record(self, attempt: Attempt, order: int) -> None:
        """Note an attempt's outcome; ``order`` is when it started, so the list reads in
        start order even when a hedge finishes before the attempt it raced. A stream
        recorded "ok" at its first chunk and failing later is one attempt, "error"."""
        with self._lock:
            if not self.over:
                self._attempts[order] = attempt

    def skip_open(self, states: Sequence[ProviderState], hedge: bool = False) -> None:
        """Note providers left out because their circuit is open (or its recovery probe is
        taken): every skipped attempt says why, as planning checks and admission do."""
        for state in states:
            self.record(Attempt(state.name, "skipped", 0.0, OPEN_CIRCUIT, "CircuitOpen", hedge), self.next_order())

    def next_order(self) -> int:
        with self._lock:
            self._started += 1
            return self._started

    def attempt_list(self) -> List[Attempt]:
        if not self.over:
            with self._lock:
                return self._listed()
        return self._listed()  # set under the lock, ``over`` stops every record: no lock needed

    def _listed(self) -> List[Attempt]:
        if len(self._attempts) == 1:  # nearly every call: nothing to sort
            return list(self._attempts.values())
        return [self._attempts[order] for order in sorted(self._attempts)]

    def _end(self) -> bool:
        """Mark the call over; True only the first time (so it is reported once)."""
        with self._lock:
            self.over = True
            first, self._reported = not self._reported, True
            return first

    def failed(self, errors: List[ProviderError], deadline_hit: bool) -> Exception:
        if not errors and self.refusals and not deadline_hit:
            if self.waiting and not any(isinstance(r, RouterBudgetRefusal) for _, r in self.refusals):
                return NoCapacityYet()  # Admission.run waits for capacity and tries again
            return self.out_of_capacity()
        first = self._end()
        # An attempt given the last of the budget times out on its own a hair before the
        # Router's deadline: that is the deadline running out too.
        remaining = self.remaining()
        if remaining is not None and remaining < DEADLINE_SLACK_S and errors and isinstance(errors[-1], ProviderTimeoutError):
            deadline_hit = True
        if deadline_hit:
            failure: AllProvidersFailedError = DeadlineExceededError(errors, self.budget or 0.0)
        elif not errors:  # every reservation was refused: other threads hold the probes
            failure = AllProvidersFailedError(
                [], "No provider could be tried: every circuit breaker is open or already probing; retry shortly"
            )
        else:
            failure = AllProvidersFailedError(errors)
        failure.__cause__ = errors[-1] if errors else None
        failure.__suppress_context__ = True
        if first:
            self._report(None, "error", failure, None, len(errors))
        return failure

    def abort(self, error: BaseException) -> None:
        """Report a call ended by something other than its attempts (e.g. no providers)."""
        if not self._end():
            return
        with self._lock:
            count = len(self._attempts)
        self._report(None, "error", error, None, count)

    def finish(self, attempt: "AttemptRun", error: Optional[ProviderError], usage: Any, result: Any = None) -> None:
        """Report the call answered by ``attempt``; ``result`` is the Completion or the
        provider's TextStream (read by a tracer)."""
        with self._lock:  # as _end(), and the count under the same lock
            self.over = True
            if self._reported:
                return
            self._reported = True
            count = len(self._attempts)
        self._report(attempt, "error" if error else "ok", error, usage, count, result)

    def _report(
        self, attempt: Optional["AttemptRun"], outcome: str, error: Optional[BaseException], usage: Any, count: int,
        result: Any = None,
    ) -> None:
        telemetry = self.telemetry
        telemetry.count("succeeded" if outcome == "ok" else "failed")
        if self.trace is None and not telemetry.listeners and not logger.isEnabledFor(logging.INFO):
            return  # nothing else hears of it: nearly every call
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
        if telemetry.listeners:
            telemetry.emit(RouterEvent(
                "call", provider.name if provider else None, provider.model if provider else None, outcome, latency,
                type(error).__name__ if error else None, str(error) if error else None, usage,
                attempts=count, streaming=self.streaming,
            ))
        if self.trace is not None:
            self.trace.end(attempt, error, usage, result)


class AttemptRun:
    """One provider tried during one call: breaker reservation, metrics, logs, events."""

    # Defaults read from the class until the attempt changes them (see Call).
    started = 0.0
    answered = 0.0
    lost = False
    finished = False
    released = False
    trace: Optional[Any] = None
    grant: Optional[Grant] = None  # admission control's capacity and budget, if any
    result: Any = None
    #: Called by ``cut`` once the provider has answered (a stream being relayed).
    on_cut: Optional[Callable[[ProviderError], None]] = None
    # Another provider is planned after this one: the transport then fails over
    # instead of retrying a connection error (see failover.py).
    fallback = False

    def __init__(self, call: Call, state: ProviderState, hedge: bool, reservation: Optional[str] = None) -> None:
        self.call = call
        self.state = state
        self.hedge = hedge
        self.reservation = reservation  # the breaker's "probe" or "normal"
        self.order = call.next_order()
        self.scope = CancelScope()  # the requests in flight, cut when the attempt is stopped

    @classmethod
    def reserve(
        cls, call: Call, state: ProviderState, *, hedge: bool, force: bool, demand: Optional[Demand] = None
    ) -> Optional["AttemptRun"]:
        """An attempt if the provider's breaker (and admission control, for the call's
        demand or ``demand``) lets one through now, else None."""
        reservation = state.breaker.reserve(force=force)
        if reservation is None:
            call.skip_open([state], hedge)
            return None
        admission = call.admission
        grant = admission.admit(call, state, demand) if admission is not None else None
        if isinstance(grant, Refusal):
            state.breaker.release(reservation)
            call.refuse(state, grant, hedge)
            return None
        if call.on_admitted is not None:
            call.on_admitted()  # a waiting call leaves the queue: the next in line may go
        if hedge:
            state.metrics.hedge("started")
        attempt = cls(call, state, hedge, reservation)
        if grant is not None:
            attempt.grant = grant
        return attempt

    def run(self, invoke: Callable[[BaseProvider, Optional[float]], Any]) -> Any:
        remaining = self.call.remaining()
        provider = self.state.provider
        if remaining is not None and remaining <= 0:
            self.release()
            error = ProviderTimeoutError("no time left in the Router timeout", provider=provider.name)
            self.call.record(Attempt(provider.name, "error", 0.0, error.message, type(error).__name__, self.hedge), self.order)
            raise error
        try:
            self.call.telemetry.live.add(self)
        except AttemptStopped as error:  # the Router is closing
            self.release()
            self.call.record(Attempt(provider.name, "error", 0.0, error.message, type(error).__name__, self.hedge), self.order)
            raise
        self.state.metrics.started()
        self.started = time.monotonic()
        call_trace = self.call.trace
        grant = self.grant
        limiter = grant.state.admission.limiter if grant is not None and grant.reservation is not None else None
        # While the provider runs on this thread: its responses feed the attempt's limiter
        # (limits.attempt_feedback), the transport knows whether to fail over
        # (failover.fallback_ready), and its requests join the attempt's CancelScope
        # (transfers). The three thread-locals are set here directly, not through their
        # three context managers: every attempt pays for this.
        previous = (getattr(_feedback, "limiter", None), getattr(_fallback, "ready", False), getattr(_transfer, "scope", None))
        _feedback.limiter, _fallback.ready, _transfer.scope = limiter, self.fallback, self.scope
        try:
            if call_trace is None:
                result = invoke(provider, remaining)
            else:  # the attempt's span is current while the provider runs, on this thread
                self.trace = call_trace.attempt(self)
                result = self.trace.run(invoke, provider, remaining)
        except BaseException as exc:
            # Restored before finish(): listeners it calls run outside the attempt.
            _feedback.limiter, _fallback.ready, _transfer.scope = previous
            if not isinstance(exc, Exception):  # KeyboardInterrupt and the like: account, then let it fly
                self.finish(ProviderError("interrupted", provider=provider.name), None)
                raise
            error = as_provider_error(exc, provider.name)
            windows = self.call.windows
            if windows is not None:  # a refusal as too long for the context: remembered
                windows.learn_from(self.call, provider.name, error)
            self.finish(error, None)
            if error is exc:
                raise
            raise error from exc
        _feedback.limiter, _fallback.ready, _transfer.scope = previous
        self.answered = time.monotonic() - self.started
        self.result = result
        return result

    def submit(self, pool: Executor, invoke: Callable[[BaseProvider, Optional[float]], Any]) -> Future:
        """``run(invoke)`` queued on ``pool``; OrchestratorError when ``close()`` shut it."""
        try:
            # No Router lock: submit() and close()'s shutdown(cancel_futures=True) are
            # atomic with each other, so an attempt is either refused (RuntimeError) or
            # queued in time to be cancelled, which its waiter sees.
            return pool.submit(self.run, invoke)
        except RuntimeError:
            self.release()
            raise OrchestratorError("This Router is closed: create a new one") from None

    def hop(self, pool: Executor, invoke: Callable[[BaseProvider, Optional[float]], Any], hedge_at: Optional[float] = None) -> Any:
        """``run(invoke)`` on ``pool``, waited for until the call's deadline (a provider
        that ignores its timeout cannot hold the caller past it) or ``hedge_at``. Raises
        the attempt's ProviderError; ``DeadlinePassed`` with the attempt stopped;
        ``HedgeDue`` with the attempt still running when ``hedge_at`` came first."""
        future = self.submit(pool, invoke)
        deadline = self.call.deadline
        until = hedge_at if deadline is None else deadline if hedge_at is None or deadline <= hedge_at else hedge_at
        try:
            done = wait_one(future, None if until is None else max(0.0, until - time.monotonic()))
        except BaseException:  # e.g. KeyboardInterrupt while waiting: the attempt is lost
            self.abandon(future)
            raise
        if not done:  # still running
            if until is hedge_at:
                raise HedgeDue(self, future)
            self.abandon(future)
            raise DeadlinePassed(ProviderTimeoutError("still running when the deadline passed", provider=self.state.name))
        error = done[future]
        if isinstance(error, CancelledError):  # close() cancelled it before it ran
            self.release()
            raise ProviderError("cancelled before it started", provider=self.state.name)
        if error is not None:
            raise error
        return self.result  # run() kept it: no second trip through the Future's lock

    def release(self) -> None:
        """Give the breaker reservation back (once): the attempt will never run."""
        if not self.released:
            self.released = True
            self.state.breaker.release(self.reservation)
            if self.grant is not None:
                self.call.admission.settle(self.grant, None, sent=False)  # type: ignore[union-attr]

    def release_if_cancelled(self, future: Future) -> None:
        if future.cancelled():
            self.release()

    def won(self) -> "AttemptRun":
        self.call.record(Attempt(self.state.name, "ok", self.answered, hedge=self.hedge), self.order)
        if self.hedge:
            self.state.metrics.hedge("won")
        return self

    def finish(self, error: Optional[ProviderError], usage: Any, result: Any = None) -> None:
        """Record the outcome once: metrics, breaker, attempt list, log, event, trace.
        ``result`` is the Completion or the provider's TextStream, when there is one."""
        if self.finished:
            return
        self.finished = True
        state, latency = self.state, time.monotonic() - self.started
        self.call.telemetry.live.discard(self)
        admission = self.call.admission
        if admission is not None:
            if isinstance(error, RateLimitError):
                admission.penalize(state, error.retry_after)
            if self.grant is not None:
                answered = result if result is not None else self.result
                model = getattr(getattr(answered, "stream", answered), "model", None)
                admission.settle(self.grant, usage, model=model)
        if error is None:
            state.metrics.succeeded(latency, usage)
            state.breaker.record_success(self.reservation)
        elif isinstance(error, AttemptStopped):  # the Router's doing, not the provider's
            state.metrics.abandoned()
            state.breaker.release(self.reservation)
            if not self.lost:
                self.call.record(Attempt(state.name, "error", latency, error.message, type(error).__name__, self.hedge), self.order)
        else:
            state.metrics.failed(error)
            state.breaker.record_failure(error, self.reservation)
            if not self.lost:  # a lost attempt stays "lost" in the call's list
                self.call.record(Attempt(state.name, "error", latency, error.message, type(error).__name__, self.hedge), self.order)
            logger.warning(
                "attempt on %s failed after %.3f s: %s: %s", state.name, latency, type(error).__name__, error.message,
                extra={"provider": state.name, "error_type": type(error).__name__, "latency_s": latency},
            )
        telemetry = self.call.telemetry
        if telemetry.listeners:
            outcome = "lost" if self.lost else ("error" if error else "ok")
            telemetry.emit(RouterEvent(
                "attempt", state.name, state.provider.model, outcome, latency,
                type(error).__name__ if error else None, error.message if error else None, usage,
                hedge=self.hedge, streaming=self.call.streaming,
            ))
        if self.trace is not None:
            self.trace.end(error, usage, result)

    def end_call(self, error: Optional[ProviderError], usage: Any, result: Any = None) -> None:
        """End this attempt and the call it answered (``finish``, then ``Call.finish``)."""
        self.finish(error, usage, result)
        self.call.finish(self, error, usage, result)

    def cut(self, error: ProviderError) -> None:
        """Stop the attempt now: cut its requests in flight (their reads fail with
        ``error`` at once); an answered stream is ended through ``on_cut``."""
        self.scope.cancel(error)
        if self.on_cut is not None:
            self.on_cut(error)

    def abandon(self, future: Future) -> None:
        """The race ended without this attempt: stop it, and discard its result if it
        arrives anyway."""
        self.lost = True
        if self.hedge:
            self.state.metrics.hedge("lost")
        if future.cancel():  # still queued: it will never call the provider
            self.release()
            self.call.record(Attempt(self.state.name, "lost", 0.0, hedge=self.hedge), self.order)
            return
        latency = time.monotonic() - self.started if self.started else 0.0
        self.call.record(Attempt(self.state.name, "lost", latency, hedge=self.hedge), self.order)
        remaining = self.call.remaining()
        if remaining is not None and remaining <= DEADLINE_SLACK_S:
            # What it would have ended with a moment later anyway: a breaker failure.
            stop: ProviderError = ProviderTimeoutError(
                f"still running when the Router timeout of {self.call.budget:g} s ran out", provider=self.state.name
            )
        else:
            stop = AttemptStopped("stopped by the Router: the call ended without it", provider=self.state.name)
        self.scope.cancel(stop)

        def discard(done: Future) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            result = done.result()
            if isinstance(result, OpenedStream):
                result.stream.close()
                result = result.stream
            self.finish(None, getattr(result, "usage", None), result)

        future.add_done_callback(discard)


class OpenedStream:
    """A provider stream whose first chunk has arrived (so the provider did answer)."""

    def __init__(self, stream: TextStream, first: str) -> None:
        self.stream = stream
        self.first = first

    @classmethod
    def open(cls, stream: TextStream) -> "OpenedStream":
        # The first text or reasoning piece: a thinking model has answered once it thinks.
        try:
            first = next(stream.events(), "")
        except BaseException:
            stream.close()
            raise
        return cls(stream, first)


class DeadlinePassed(Exception):
    """Raised by ``AttemptRun.hop``: the call's deadline passed while the attempt ran.
    Internal: ``try_in_turn`` turns it into the call's ``DeadlineExceededError``."""

    def __init__(self, error: ProviderTimeoutError) -> None:
        self.error = error


class HedgeDue(Exception):
    """Raised by ``try_in_turn``: the hedge delay passed with ``attempt`` still running
    (as ``future``); ``index``: its place in the order; ``errors``: of those before it.
    Internal: the Router races it (``Router._race``)."""

    index: int
    errors: List[ProviderError]

    def __init__(self, attempt: AttemptRun, future: Future) -> None:
        self.attempt = attempt
        self.future = future


def try_in_turn(
    call: Call,
    order: Sequence[ProviderState],
    forced: Optional[ProviderState],
    invoke: Callable[[BaseProvider, Optional[float]], Any],
    pool: Optional[Executor] = None,
    hedge_delay: Optional[Callable[[ProviderState], float]] = None,
    demand: Optional[Demand] = None,
) -> Tuple[Any, AttemptRun]:
    """Try ``order`` one provider after another until one succeeds: its result and
    attempt (recorded as won; the caller finishes it with the usage). Each attempt runs on
    this thread, or with ``pool`` (a call with a deadline or hedging) on the pool, waited
    for until the deadline. With ``hedge_delay``, an attempt with providers left after it
    still running that many seconds after it started raises ``HedgeDue`` (the caller
    races it). When every one fails, raises the call's ``AllProvidersFailedError``
    (``DeadlineExceededError`` when the deadline passed). ``demand``: what each attempt
    asks of admission control, when not the call's (an embedding batch)."""
    errors: List[ProviderError] = []
    last = len(order) - 1
    for index, state in enumerate(order):
        attempt = AttemptRun.reserve(call, state, hedge=False, force=state is forced, demand=demand)
        if attempt is None:
            continue
        attempt.fallback = index < last
        try:
            if pool is None:
                return attempt.run(invoke), attempt.won()
            hedge_at = time.monotonic() + hedge_delay(state) if hedge_delay is not None and index < last else None
            return attempt.hop(pool, invoke, hedge_at), attempt.won()
        except ProviderError as error:
            errors.append(error)
        except DeadlinePassed as passed:
            errors.append(passed.error)
            raise call.failed(errors, deadline_hit=True) from None
        except HedgeDue as due:
            due.index, due.errors = index, errors
            raise
    raise call.failed(errors, deadline_hit=False)


def as_provider_error(exc: BaseException, provider: str) -> ProviderError:
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


def checked_completion(result: Any, provider: str) -> Completion:
    """``result`` if it is a Completion whose text is a str, else ResponseFormatError: a
    provider (a custom one too) passing on a server's ``content: 123`` must not make
    ``route()`` return something other than text."""
    if not isinstance(result, Completion):
        raise ResponseFormatError(f"the provider returned a {type(result).__name__}, not a Completion", provider=provider)
    if not isinstance(result.text, str):
        raise ResponseFormatError(f"the answer's text is a {type(result.text).__name__}, not a str", provider=provider)
    return result

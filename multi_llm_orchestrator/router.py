"""The Router: pick a provider, call it, fall back, optionally hedge; thread-safe, blocking.

One call reads straight down::

    route / complete / route_stream
      -> _plan: planning checks leave out providers that cannot take the call (a missing
               capability...: recorded as skipped attempts), then the strategy orders
               the providers whose circuit is not open
      -> _run: for each provider in order -> AttemptRun.run -> provider.complete / stream
               (on the caller's thread; on the executor via hedging.race when hedging
               or a total timeout is set)
      -> Completion / TextStream, with every attempt listed; metrics, breaker, logs and
         listeners updated once per attempt and once per call.

Strategies, health checks, circuit breakers, hedging and metrics live in their own
modules; the Router only composes them.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Dict, FrozenSet, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

from . import forking
from .breaker import BreakerPolicy
from .cache import ResponseCache, Responses
from .errors import (
    AllProvidersFailedError,
    ConfigurationError,
    NoProvidersError,
    OrchestratorError,
    ProviderError,
    ProviderTimeoutError,
)
from .health import BoundedHealth, HealthChecker, HealthResult
from .hedging import HedgePolicy, RaceFailed, race
from .metrics import ProviderMetrics
from .providers.base import BaseProvider
from .admission import Admission, CostCap, Demand
from .answers import answer_check
from .calls import (
    DEADLINE_SLACK_S, AttemptRun, AttemptStopped, Call, Listener, LiveAttempts, OpenedStream, Telemetry,
    HedgeDue, as_provider_error, checked_completion, try_in_turn,
)
from .call_options import CallOptions, PinnedProviders
from .display import HealthReport, Stats
from .embeddings import EmbeddingJob, embedding_spaces
from .planning import CapabilityCheck, PlanCheck, apply_checks
from .state import LocalState, State, call_deadline, make_state
from .strategies import ProviderState, Strategy, make_strategy
from .validation import check_int, check_number
from .tokens import ContextWindows
from .transfers import stop_reaper_if_idle
from .types import Completion, Embeddings, GenerationParams, Message, Prompt, StreamEnd, TextStream, TokenCount

__all__ = ["Router"]

logger = logging.getLogger("multi_llm_orchestrator.router")

ALL_OPEN_CHOICES = ("closest", "fail")
# A strategy waiting for health checks may take this share of a call's time left; the
# provider call keeps the rest.
HEALTH_WAIT_SHARE = 0.25


class Router:
    """Routes prompts to providers by strategy, with fallback, breakers and hedging.

    Parameters (all optional):

    - ``strategy``: "round-robin" (default), "random", "first-available",
      "best-available", "weighted", "least-busy", "cheapest", or a ``Strategy`` instance.
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
    - ``state``: where breakers, round-robin position, hedge budget, health results and
      token caches live: in this process (default) or shared by a fleet through
      ``RedisState("redis://...")`` (or ``{"redis": "redis://..."}``).
    - ``cache``: True or a ``ResponseCache`` to answer identical requests from a response
      cache, with single-flight (see ``cache.py``); off by default, ``cache=True`` per call.
    - ``admission``: when no provider has capacity (``ProviderConfig.limits``) or budget,
      "skip" (default: fail at once, saying when capacity returns) or "wait" (queue, first
      come first served, within the call's timeout). An ``admission.Admission`` instance
      brings its own mode, budget and state stores (e.g. shared by a fleet).
    - ``budget``: the Router's spending budget, e.g. ``{"limit": 100, "period": "day"}``
      (or a list of them); once spent, calls raise ``BudgetExceededError`` unsent.

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
        state: Union[State, Dict[str, Any], None] = None,
        cache: Union[ResponseCache, Dict[str, Any], bool, None] = None,
        admission: Union[str, Admission] = "skip",
        budget: Any = None,
    ) -> None:
        self._state = make_state(state)
        # Shared state (RedisState, or any other State subclass) may make round trips that
        # the call's deadline must bound (state.time_to_deadline); LocalState makes none.
        self._bound_round_trips = type(self._state) not in (State, LocalState)
        self._telemetry = Telemetry()
        self._responses = Responses(ResponseCache.from_value(cache), self._state.response_store, self._telemetry.count,
                                    self._telemetry.cache_hit)
        self._strategy = make_strategy(strategy)
        self._strategy.use_state(self._state)
        # A State that shares limits and budgets offers limiter(provider, limits) and
        # ledger(scope, budget); without them admission state stays in this process.
        self._admission = admission if isinstance(admission, Admission) else Admission(
            admission, budget, make_limiter=getattr(self._state, "limiter", None),
            make_ledger=getattr(self._state, "ledger", None),
        )
        self.timeout = _optional_seconds("timeout", timeout)
        if isinstance(hedge_after, HedgePolicy) or hedge_after is None:
            self._hedge = hedge_after
        else:
            self._hedge = HedgePolicy(hedge_after, max_hedges, hedge_budget)
        self._hedge_budget = (
            self._state.hedge_budget(self._hedge.budget, self._hedge.window, self._hedge.budget_reserve)
            if self._hedge else None
        )
        self._breaker_policy = BreakerPolicy.from_value(breaker)
        if when_all_open not in ALL_OPEN_CHOICES:
            raise ConfigurationError(f"when_all_open must be one of {', '.join(ALL_OPEN_CHOICES)}; got {when_all_open!r}")
        self.when_all_open = when_all_open
        for name, value in (("health_ttl", health_ttl), ("health_timeout", health_timeout)):
            _optional_seconds(name, value)
        _optional_seconds("health_interval", health_interval)
        check_int("max_workers", max_workers, 1)
        self._health = HealthChecker(timeout=health_timeout, ttl=health_ttl, store=self._state.health_store())
        self._max_workers = max_workers
        self._executor: Optional[ThreadPoolExecutor] = None
        self._closing: Future = Future()  # done once close() has begun
        self._lock = threading.Lock()
        self._states: Tuple[ProviderState, ...] = ()
        self._names: Set[str] = set()  # of _states, so adding thousands of providers stays linear
        self._windows = ContextWindows()
        #: Planning checks (planning.py): providers left out of a call before the strategy.
        self._plan_checks: Tuple[PlanCheck, ...] = (PinnedProviders(), CapabilityCheck(), self._windows, CostCap(self._admission))
        self._closed = False
        forking.register(self)
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
        self.add_providers([provider])
        return provider

    def add_providers(self, providers: Iterable[BaseProvider]) -> List[BaseProvider]:
        """Add several providers at once (all or none); names must be unique. Returns them.

        In time linear in their number, so a configuration of thousands builds quickly.
        """
        providers = list(providers)
        states = []
        names: Set[str] = set()
        for provider in providers:
            if not isinstance(provider, BaseProvider):
                raise ConfigurationError(
                    f"add_provider takes a BaseProvider (e.g. MockProvider(ProviderConfig(...))); got {type(provider).__name__}"
                )
            if provider.name in names:
                raise ConfigurationError(
                    f"A provider named {provider.name!r} is given twice; give each a unique ProviderConfig.name"
                )
            names.add(provider.name)
            config = provider.config
            states.append(ProviderState(
                provider,
                self._state.breaker(config.name, self._breaker_policy),
                ProviderMetrics(config.price_per_1k_prompt_tokens, config.price_per_1k_completion_tokens,
                                price_per_1k_cached_prompt=config.price_per_1k_cached_prompt_tokens),
                self._admission.for_provider(provider),
            ))
        with self._lock:
            self._check_open()
            taken = names & self._names
            if taken:
                raise ConfigurationError(
                    f"A provider named {min(taken)!r} is already registered; give each a unique ProviderConfig.name"
                )
            self._states = self._states + tuple(states)
            self._names |= names
            self._windows.track(state.provider for state in self._states)
        for provider in providers:
            self._state.attach(provider)
        return providers

    def remove_provider(self, name: str) -> BaseProvider:
        """Remove the provider called ``name`` and return it (not closed)."""
        with self._lock:
            for state in self._states:
                if state.name == name:
                    self._states = tuple(s for s in self._states if s is not state)
                    self._names.discard(name)
                    self._health.forget(name)
                    self._windows.forget(name)
                    self._windows.track(s.provider for s in self._states)
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

    def route(
        self, prompt: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None,
        max_cost: Optional[float] = None, cache: Optional[bool] = None, **options: Any,
    ) -> str:
        """The answer's text. Same as ``complete(...).text``."""
        return self._answer(prompt, params, timeout, max_cost, cache, options).text

    def complete(
        self, prompt: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None,
        max_cost: Optional[float] = None,
        cache: Optional[bool] = None,
        **options: Any,
    ) -> Completion:
        """The answer with who produced it, usage, latency and every attempt made.

        Raises ``AllProvidersFailedError`` (``DeadlineExceededError`` when the timeout
        ran out) listing what each provider failed with. ``max_cost`` skips providers
        whose expected cost for this call is higher (see README, "Limits and budgets");
        ``cache``: True/False to use or bypass the response cache for this call (None: the
        Router's ``cache`` setting). ``options``: ``GenerationParams`` fields
        (``temperature=0.2, max_tokens=100``...), ``provider="name"`` or
        ``providers=[...]`` to pin the call, ``model=`` (see ``call_options.py``).
        """
        return self._answer(prompt, params, timeout, max_cost, cache, options)

    def _answer(
        self, prompt: Prompt, params: Optional[GenerationParams], timeout: Optional[float],
        max_cost: Optional[float], cache: Optional[bool], keywords: Dict[str, Any],
    ) -> Completion:
        """``complete``, its keywords passed as they came (``route`` repacks none)."""
        messages, options, cache = self._options(prompt, params, keywords, cache)
        if cache is False or (cache is None and not self._responses.settings.enabled):  # nothing to look up
            return self._complete(messages, options, timeout, max_cost)
        return self._responses.complete(
            messages, options.params, cache, self._budget(timeout), self._states,
            lambda: self._complete(messages, options, timeout, max_cost),
        )

    def _complete(
        self, messages: List[Message], options: CallOptions, timeout: Optional[float], max_cost: Optional[float]
    ) -> Completion:
        params = options.params
        check = answer_check(params)

        def invoke(provider: BaseProvider, remaining: Optional[float]) -> Completion:
            completion = checked_completion(provider.complete(messages, params, timeout=remaining), provider.name)
            if check is not None:  # a malformed tool call or structured answer: fall back
                check(completion.text, completion.tool_calls, provider.name)
            return completion

        call = self._call(timeout, False, messages, params, max_cost=max_cost, pinned=options.pinned)
        pinned_model = options.wrap(invoke) if options.model is not None else invoke
        completion, attempt = self._run(call, pinned_model)
        attempt.end_call(None, completion.usage, completion)
        return Completion(
            completion.text, completion.provider, completion.model, completion.usage,
            completion.finish_reason, call.elapsed(), call.attempt_list(), completion.tool_calls, completion.reasoning,
        )

    def route_stream(
        self, prompt: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None,
        max_cost: Optional[float] = None,
        cache: Optional[bool] = None,
        **options: Any,
    ) -> TextStream:
        """The answer as text chunks while they arrive.

        Falls back to the next provider only before the first chunk: once text has been
        yielded, a failure raises (naming the provider) rather than mixing two answers.
        A cached answer is replayed as a stream (``cache`` and ``options`` as in ``complete``).
        """
        messages, options, cache = self._options(prompt, params, options, cache)
        if cache is False or (cache is None and not self._responses.settings.enabled):
            return self._stream(messages, options, timeout, max_cost)
        return self._responses.stream(
            messages, options.params, cache, self._budget(timeout), self._states,
            lambda: self._stream(messages, options, timeout, max_cost),
        )

    def _stream(
        self, messages: List[Message], options: CallOptions, timeout: Optional[float], max_cost: Optional[float]
    ) -> TextStream:
        params = options.params

        def invoke(provider: BaseProvider, remaining: Optional[float]) -> OpenedStream:
            return OpenedStream.open(provider.stream(messages, params, timeout=remaining))

        call = self._call(timeout, True, messages, params, max_cost=max_cost, pinned=options.pinned)
        opened, attempt = self._run(call, options.wrap(invoke))
        stream, once = opened.stream, threading.Lock()

        def settle(error: Optional[ProviderError]) -> None:
            # Once, however the stream ends: exhausted, failed, closed, or dropped before
            # its first read (when the relay generator never started and its finally never runs).
            if not once.acquire(blocking=False):
                return
            try:
                stream.close()
            finally:
                attempt.end_call(error, stream.usage, stream)

        attempt.on_cut = settle  # close(): a stream nobody reads any more still ends
        result = TextStream(
            self._relay(opened, call, attempt, settle),
            provider=attempt.state.name,
            model=stream.model,
            on_close=lambda: settle(None),
        )
        result.attempts = call.attempt_list()
        return result

    def _relay(
        self, opened: OpenedStream, call: Call, attempt: AttemptRun, settle: Callable[[Optional[ProviderError]], None]
    ) -> Iterator[Union[str, StreamEnd]]:
        stream, error, scope = opened.stream, None, attempt.scope
        try:
            if opened.first:
                if scope.error is not None:  # close() ended it before its first read
                    raise AttemptStopped(scope.error.message, provider=attempt.state.name)
                yield opened.first
            for chunk in stream.events():
                if scope.error is not None:  # a closed stream ends early: not the whole answer
                    raise AttemptStopped(scope.error.message, provider=attempt.state.name)
                if call.deadline is not None and time.monotonic() > call.deadline:
                    raise ProviderTimeoutError(
                        f"the stream did not finish within the Router timeout of {call.budget:g} s",
                        provider=attempt.state.name,
                    )
                yield chunk
            if scope.error is not None:
                raise AttemptStopped(scope.error.message, provider=attempt.state.name)
            check = answer_check(call.params)
            if check is not None:  # too late to fall back: the caller has the text already
                check(stream.text, stream.tool_calls, attempt.state.name)
            yield StreamEnd(stream.usage, stream.finish_reason, stream.model, stream.tool_calls)
        except Exception as exc:
            error = as_provider_error(exc, attempt.state.name)
            if isinstance(error, ProviderTimeoutError) and call.deadline is not None \
                    and time.monotonic() >= call.deadline - DEADLINE_SLACK_S:
                # The provider's reader only knows its own share of the budget.
                error = ProviderTimeoutError(
                    f"the stream did not finish within the Router timeout of {call.budget:g} s: it was cut "
                    f"while text was arriving ({len(stream.text)} characters received)",
                    provider=attempt.state.name,
                )
            if error is exc:
                raise
            raise error from exc
        finally:
            settle(error)

    def _options(
        self, prompt: Prompt, params: Optional[GenerationParams], keywords: Dict[str, Any], cache: Optional[bool]
    ) -> Tuple[List[Message], CallOptions, Optional[bool]]:
        """The shared start of ``complete`` and ``route_stream``: the validated prompt, the
        call's options (keywords applied), and whether it may use the response cache."""
        messages, params = BaseProvider._prepare(prompt, params)
        if not keywords:  # the plain call: nothing to parse
            return messages, CallOptions(params), cache
        options = CallOptions.parse(params, keywords, [state.name for state in self._states])
        if not options.plain:
            # Cached answers are shared by every provider: one from elsewhere would break the pin.
            if cache:
                raise ConfigurationError("cache=True cannot serve a call pinned with provider=/providers=/model=")
            cache = False
        return messages, options, cache

    def _budget(self, timeout: Optional[float]) -> Optional[float]:
        return self.timeout if timeout is None else _optional_seconds("timeout", timeout)

    def _call(
        self, timeout: Optional[float], streaming: bool, messages: Any, params: Optional[GenerationParams],
        operation: str = "chat",
        *,
        max_cost: Optional[float] = None,
        pinned: Optional[FrozenSet[str]] = None,
    ) -> Call:
        budget = self.timeout if timeout is None else _optional_seconds("timeout", timeout)
        call = Call(budget, streaming, self._telemetry, messages, params, operation, admission=self._admission,
                    max_cost=None if max_cost is None else _max_cost(max_cost), pinned=pinned)
        if messages is not None:  # a chat call: a refusal as too long teaches the context windows
            call.windows = self._windows
        return call

    def _run(self, call: Call, invoke: Callable[[BaseProvider, Optional[float]], Any]) -> Tuple[Any, AttemptRun]:
        """Try providers in the planned order until one succeeds; the shared core of
        ``complete`` and ``route_stream``. Whatever escapes is reported as the call's end."""
        try:
            if self._admission.idle:  # nothing to queue for
                if call.deadline is None or not self._bound_round_trips:
                    return self._try_in_order(call, invoke)
                with call_deadline(call.deadline):  # shared state's round trips stay within it
                    return self._try_in_order(call, invoke)
            with call_deadline(call.deadline):
                return self._admission.run(call, lambda: self._try_in_order(call, invoke))
        except BaseException as exc:  # a planning error, a strategy's bug, KeyboardInterrupt
            call.abort(exc)  # no-op when call.failed already reported it
            raise

    def _try_in_order(self, call: Call, invoke: Callable[[BaseProvider, Optional[float]], Any]) -> Tuple[Any, AttemptRun]:
        order, forced = self._plan(call)
        if logger.isEnabledFor(logging.DEBUG):
            plan = [state.name for state in order]
            logger.debug("%s: trying %s", "stream" if call.streaming else "call", ", ".join(plan),
                         extra={"plan": plan, "streaming": call.streaming})
        if self._hedge is None:  # with a deadline, each attempt runs on the executor
            return try_in_turn(call, order, forced, invoke, None if call.deadline is None else self._executor or self._pool())
        policy, budget, pool = self._hedge, self._hedge_budget, self._executor or self._pool()
        if budget is not None:
            budget.record_call()
        try:  # nearly every call: the first attempt answers before the hedge delay
            return try_in_turn(call, order, forced, invoke, pool, lambda state: policy.delay(state.metrics))
        except HedgeDue as due:
            return self._race(call, order[due.index:], invoke, due, policy, pool)

    def _race(
        self, call: Call, order: Sequence[ProviderState], invoke: Callable[[BaseProvider, Optional[float]], Any],
        due: HedgeDue, policy: HedgePolicy, pool: ThreadPoolExecutor,
    ) -> Tuple[Any, AttemptRun]:
        """Race ``due``'s attempt (``order[0]``), still running past its hedge delay,
        with hedges (and the providers after it as fallbacks): ``hedging.race``. No
        provider is forced through an open circuit here: a forced plan has one provider,
        which never races."""
        attempts: Dict[Future, AttemptRun] = {due.future: due.attempt}

        def launch(state: ProviderState, hedge: bool) -> Optional[Future]:
            attempt = AttemptRun.reserve(call, state, hedge=hedge, force=False)
            if attempt is None:
                return None
            attempt.fallback = state is not order[-1]
            future = attempt.submit(pool, invoke)
            attempts[future] = attempt
            return future

        winner: Optional[Future] = None
        try:
            winner = race(
                order[1:],
                launch,
                deadline=call.deadline,
                hedge_delay=lambda s: policy.delay(s.metrics),
                max_hedges=policy.max_hedges,
                budget=self._hedge_budget,
                on_lost=lambda future: attempts[future].abandon(future),
                name_of=lambda s: s.name,
                stop=self._closing,
                running=(due.attempt.state, due.future),
            )
        except RaceFailed as failure:
            raise call.failed(due.errors + failure.errors, deadline_hit=failure.deadline_hit)
        finally:
            # An attempt close() cancelled before it ran gives its breaker reservation
            # back (once: a lost one already did). The winner ran; nothing to look at.
            for future, attempt in attempts.items():
                if future is not winner:
                    attempt.release_if_cancelled(future)
        attempt = attempts[winner]
        return attempt.result, attempt.won()  # run() kept its result: no Future lock to read it

    def _plan(
        self, call: Call, among: Optional[Sequence[ProviderState]] = None, demand: Optional[Demand] = None,
    ) -> Tuple[List[ProviderState], Optional[ProviderState]]:
        """Providers to try (``among`` them, default all), in order, and the one forced
        through an open circuit (if any). Those the call excludes are listed as skipped.
        ``demand``: what a part of the call asks (an embedding batch), for the strategy."""
        self._check_open()
        if not self._states:
            raise NoProvidersError("The Router has no providers: add one with router.add_provider(...)")
        # Each check says at once when it has nothing to say about a plain call (an
        # unpinned plain-text call without max_cost, no context window known).
        states = apply_checks(self._states if among is None else among, call, self._plan_checks)
        available = [state for state in states if state.breaker.is_available()]
        if available:
            return self._strategy.order(available, BoundedHealth(self._health, call, HEALTH_WAIT_SHARE, demand)), None
        closest = min(states, key=lambda state: state.breaker.remaining())
        if self.when_all_open == "fail":
            raise AllProvidersFailedError(
                [], f"Every provider's circuit is open; the first recovers in {closest.breaker.remaining():.1f} s"
            )
        return [closest], closest

    def _pool(self) -> ThreadPoolExecutor:
        """The executor, created on first use."""
        with self._lock:
            self._check_open()
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self._max_workers, thread_name_prefix="mlo-router")
            return self._executor

    # Embeddings and token counts --------------------------------------------------------

    def embed(
        self,
        texts: Sequence[str],
        *,
        space: Optional[str] = None,
        purpose: Optional[str] = None,
        timeout: Optional[float] = None,
        max_parallel: int = 8,
    ) -> Embeddings:
        """Vectors of ``texts``, in their order, from the providers of one embedding space.

        ``space`` names the space (see ``embedding_spaces()``); required when the Router
        has more than one. Large inputs are split into batches by the providers' limits
        and up to ``max_parallel`` batches run at once; a failed batch is retried on the
        next provider of the same space only, never elsewhere, and the batches that
        succeeded are kept. ``purpose``: "document" or "query" (see ``BaseProvider.embed``).
        ``timeout`` bounds the whole call like ``complete``'s.

        >>> router.embed(["first text", "second text"]).vectors        # doctest: +SKIP
        """
        job = EmbeddingJob.prepare(texts, self._states, space=space, purpose=purpose, max_parallel=max_parallel)
        call = self._call(timeout, False, None, None, "embeddings")
        return job.run(call, plan=lambda among, demand: self._plan(call, among, demand), pool=self._pool, closing=self._closing)

    def embedding_spaces(self) -> Dict[str, List[str]]:
        """Each embedding space and the names of its providers, in the order added."""
        return embedding_spaces(self._states)

    def count_tokens(self, prompt: Prompt, *, provider: Optional[str] = None, timeout: Optional[float] = None) -> TokenCount:
        """The prompt's size in tokens as ``provider`` (a name; may be omitted when the
        Router has one provider) counts it: see ``BaseProvider.count_tokens``."""
        states = self._states
        if provider is None and len(states) != 1:
            names = ", ".join(state.name for state in states) or "none"
            raise ConfigurationError(f"count_tokens needs provider=<name>: token counts differ by model; registered: {names}")
        for state in states:
            if provider is None or state.name == provider:
                return state.provider.count_tokens(prompt, timeout=timeout)
        raise ConfigurationError(f"No provider named {provider!r}; registered: {', '.join(s.name for s in states)}")

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
        check_int("max_workers", max_workers, 1)
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

        # Each prompt runs in a copy of the caller's context, so what lives in contextvars
        # (the caller's tracing span, above all) is the parent of every call in the batch.
        context = contextvars.copy_context()
        with ThreadPoolExecutor(max_workers, thread_name_prefix="mlo-batch") as pool:
            list(pool.map(lambda index: context.copy().run(one, index), range(len(prompts))))
        return results

    def health_check(self, timeout: Optional[float] = None) -> Dict[str, bool]:
        """Check every provider now, in parallel: {name: healthy}."""
        return {name: result.healthy for name, result in self.health_report(timeout).items()}

    def health_report(self, timeout: Optional[float] = None, *, cached: bool = False) -> HealthReport:
        """Like ``health_check`` with each check's latency and error ({name: HealthResult};
        ``.breakers`` gives each breaker's state; a table in a notebook).

        ``cached=True`` reuses results younger than ``health_ttl`` and checks only the
        others (what a frequently polled status endpoint wants).
        """
        self._check_open()
        timeout = _optional_seconds("timeout", timeout)
        providers = self.providers
        reused = {p.name: self._health.cached(p.name) for p in providers} if cached else {}
        stale = [p for p in providers if reused.get(p.name) is None]
        fresh = self._health.check(stale, timeout) if stale else {}
        return HealthReport({p.name: reused.get(p.name) or fresh[p.name] for p in providers},
                            {state.name: state.breaker.snapshot()["state"] for state in self._states})

    def stats(self) -> Stats:
        """Counters for the Router and for each provider (see README, "Metrics"); a dict
        (shown as tables in a notebook)."""
        totals = self._telemetry.totals()
        providers = {}
        for state in self._states:
            snapshot = state.metrics.snapshot()
            snapshot["model"] = state.provider.model
            snapshot["breaker"] = state.breaker.snapshot()
            if state.admission is not None:
                snapshot.update(state.admission.snapshot())
            providers[state.name] = snapshot
        return Stats({**totals, **self._admission.snapshot(), "providers": providers})

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` after every attempt and every finished call.

        Listeners run on the thread that made the attempt; an exception in one is logged
        and ignored.
        """
        self._telemetry.add_listener(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._telemetry.remove_listener(listener)

    # Lifecycle ---------------------------------------------------------------------

    def close(self, grace: float = 1.0) -> None:
        """Stop background work and release every provider; idempotent.

        Attempts not started yet are cancelled; attempts still running (streams being
        read included) get up to ``grace`` seconds to finish, then are stopped: their
        requests are cut and their callers get a typed error at once. No caller of
        ``route``/``complete``/``route_stream`` waits longer than ``grace`` after
        ``close()`` (plus the moment a cut read takes to return); then every library
        thread is joined.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            executor, self._executor = self._executor, None
        self._health.close(wait_for_checks=False)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        # Wakes the races (and embedding jobs) whose queued attempts were just cancelled.
        self._closing.set_exception(OrchestratorError("This Router was closed during the call"))
        self._telemetry.live.close(grace, AttemptStopped("the Router was closed while this attempt ran"))
        for state in self._states:
            try:
                state.provider.close()
            except Exception:
                logger.exception("Closing provider %r failed", state.name)
        self._health.close()  # joins checks still running: closed providers end them
        if executor is not None:
            executor.shutdown(wait=True)
        self._state.close()
        stop_reaper_if_idle()

    def _after_fork(self) -> None:
        """In a forked child (see forking.py): no executor, attempts or locks of the
        parent's; providers and the health checker reset themselves."""
        forking.fresh_locks(self)
        self._executor = None
        for part in (self._strategy, self._telemetry):
            forking.fresh_locks(part)
        self._telemetry.live = LiveAttempts()  # the parent's attempts are not this process's

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


def _max_cost(value: Optional[float]) -> Optional[float]:
    return check_number("max_cost", value, 0, allow_none=True, kind="a cost >= 0 in the prices' currency")


def _optional_seconds(name: str, value: Optional[float]) -> Optional[float]:
    return check_number(name, value, 0, low_open=True, allow_none=True, kind="a number of seconds")

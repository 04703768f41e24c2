"""Admission control of Router calls: limits, budgets and ``max_cost`` at attempt launch.

Each provider may have a ``Limiter`` (``ProviderConfig.limits``), budget ledgers
(``ProviderConfig.budget``) and prices (``ProviderConfig.prices``); the Router may have
budgets of its own (``Router(budget=...)``). When an attempt is about to start (next to
its circuit-breaker reservation, in ``calls.AttemptRun.reserve``) ``Admission.admit``
takes, all or nothing: one request and the estimated tokens from the limiter, and the
expected cost from every ledger concerned. ``settle`` reconciles them with the real
usage when the attempt ends.

A provider without capacity or over its budget is skipped (``Attempt`` with outcome
"skipped" and the reason). When no provider could even start:

- ``admission="skip"`` (default): ``CapacityExhaustedError`` at once, saying when
  capacity returns;
- ``admission="wait"``: the call queues (first come, first served) until capacity
  returns, within its deadline (60 s for a call without one); it fails at once when
  capacity would return only after that.

The Router's own budget spent raises ``BudgetExceededError`` before anything is sent.
Each batch of ``Router.embed`` is admitted the same way (``EmbeddingDemand``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple, Union

from . import forking
from .budgets import BudgetLedger, MemoryBudgetLedger, Price, PriceTable, Budget
from .errors import BudgetExceededError, CapacityExhaustedError, ConfigurationError
from .limits import Limiter, Limits, MemoryLimiter, Refusal, Reservation
from .planning import PlanCheck
from .tokens import estimate_tokens, text_tokens

if TYPE_CHECKING:
    from .calls import Call
    from .providers.base import BaseProvider
    from .strategies import ProviderState
    from .types import GenerationParams, Message

__all__ = [
    "Admission",
    "CostCap",
    "ProviderAdmission",
    "Demand",
    "EmbeddingDemand",
    "Grant",
    "NoCapacityYet",
    "ADMISSION_MODES",
    "MAX_WAIT_WITHOUT_DEADLINE",
    "DEFAULT_COMPLETION_TOKENS",
]

logger = logging.getLogger("multi_llm_orchestrator.admission")

ADMISSION_MODES = ("skip", "wait")
#: How long ``admission="wait"`` waits for a call that has no deadline.
MAX_WAIT_WITHOUT_DEADLINE = 60.0
#: Completion tokens expected when the call sets no ``max_tokens`` and the provider has
#: not answered yet (afterwards: its average so far).
DEFAULT_COMPLETION_TOKENS = 256
#: The longest a provider's own token count may take before a call (Limits.count_tokens).
COUNT_TOKENS_TIMEOUT = 5.0
#: A waiter re-checks at least this often (a shared store frees capacity without telling us).
MAX_WAIT_SLICE = 1.0


class Demand:
    """What one call asks for: its messages and parameters, and a per-call ``max_cost``.
    The prompt estimate is computed once, on first use."""

    def __init__(self, messages: Sequence["Message"], params: "GenerationParams", max_cost: Optional[float] = None) -> None:
        self.messages = messages
        self.params = params
        self.max_cost = max_cost
        self._prompt_tokens: Optional[int] = None
        self._counted: Dict[str, int] = {}  # provider name -> its own count of the prompt

    @property
    def prompt_tokens(self) -> int:
        """The prompt's estimated size (``tokens.estimate_tokens``)."""
        if self._prompt_tokens is None:
            self._prompt_tokens = int(estimate_tokens(self.messages))
        return self._prompt_tokens

    def prompt_tokens_for(self, state: "ProviderState", timeout: Optional[float]) -> int:
        """The prompt's size for this provider: its own ``count_tokens`` when its limits
        ask for it (``Limits.count_tokens``; one request, at most ``timeout`` s), else the
        estimate. A failed count falls back to the estimate."""
        provider_admission = getattr(state, "admission", None)
        limiter = provider_admission.limiter if provider_admission is not None else None
        if limiter is None or not limiter.limits.count_tokens:
            return self.prompt_tokens
        counted = self._counted.get(state.name)
        if counted is None:
            try:
                counted = int(state.provider.count_tokens(self.messages, timeout=timeout))
            except Exception as exc:  # counting is an optimisation: never fail the call for it
                logger.debug("count_tokens of %r failed (%s); using the estimate", state.name, exc)
                counted = self.prompt_tokens
            self._counted[state.name] = counted
        return counted

    def completion_tokens(self, state: "ProviderState") -> int:
        """The answer's expected size on this provider: ``max_tokens``, else the
        provider's average answer so far, else ``DEFAULT_COMPLETION_TOKENS``."""
        completion = self.params.max_tokens
        if completion is None:
            metrics = state.metrics
            completion = (metrics.completion_tokens // metrics.successes) if metrics.successes else DEFAULT_COMPLETION_TOKENS
        return completion

    def model(self, state: "ProviderState") -> Optional[str]:
        """The model whose price applies on this provider (None: its configured model)."""
        return None


class EmbeddingDemand(Demand):
    """What one batch of ``Router.embed`` asks for: its texts' estimated tokens and no
    answer tokens, priced by the provider's embedding model (``prices`` may name it;
    otherwise the provider's own price applies). Never counted by the provider: the
    estimate is reconciled with the real usage once the batch is answered."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = texts
        self.max_cost = None
        self._prompt_tokens: Optional[int] = None

    @property
    def prompt_tokens(self) -> int:
        if self._prompt_tokens is None:
            self._prompt_tokens = sum(text_tokens(text) for text in self.texts)
        return self._prompt_tokens

    def prompt_tokens_for(self, state: "ProviderState", timeout: Optional[float]) -> int:
        return self.prompt_tokens

    def completion_tokens(self, state: "ProviderState") -> int:
        return 0

    def model(self, state: "ProviderState") -> Optional[str]:
        return state.provider.embedding_model


class ProviderAdmission:
    """The limiter, budget ledgers and prices of one provider (each optional)."""

    def __init__(
        self,
        limiter: Optional[Limiter] = None,
        ledgers: Sequence[BudgetLedger] = (),
        prices: Optional[PriceTable] = None,
    ) -> None:
        self.limiter = limiter
        self.ledgers = list(ledgers)
        self.prices = prices
        self._lock = threading.Lock()
        forking.register(self)  # fresh locks in a forked child (forking.py)
        self.spent_total = 0.0

    @classmethod
    def for_provider(
        cls, provider: "BaseProvider", make_limiter: Callable[[str, Limits], Limiter],
        make_ledger: Callable[[str, Budget], BudgetLedger],
    ) -> Optional["ProviderAdmission"]:
        """The provider's limits, budgets and prices from its config; None when it has none."""
        config = provider.config
        where = f"ProviderConfig of {provider.name!r}"
        limits = Limits.from_value(getattr(config, "limits", None))
        limiter = make_limiter(provider.name, limits) if limits is not None and not limits.empty else None
        ledgers = [make_ledger(provider.name, budget) for budget in Budget.from_value(getattr(config, "budget", None), f"{where}: budget")]
        prices = PriceTable.from_value(getattr(config, "prices", None), provider.model, f"{where}: prices")
        if prices is None and (config.price_per_1k_prompt_tokens is not None or config.price_per_1k_completion_tokens is not None):
            prices = PriceTable.from_value(
                Price(config.price_per_1k_prompt_tokens or 0.0, config.price_per_1k_completion_tokens or 0.0,
                      getattr(config, "price_per_1k_cached_prompt_tokens", None)),
                provider.model,
            )
        if limiter is None and not ledgers and prices is None:
            return None
        return cls(limiter, ledgers, prices)

    def price(self, model: Optional[str] = None) -> Optional[Price]:
        return self.prices.price(model) if self.prices is not None else None

    def add_spend(self, cost: float) -> None:
        with self._lock:
            self.spent_total += cost

    def snapshot(self) -> dict:
        """``limits`` (usage in the window) and ``spend`` (total and per budget) for stats()."""
        with self._lock:
            spent = self.spent_total
        data: dict = {"spend": {"total": round(spent, 6), "budgets": [ledger.snapshot() for ledger in self.ledgers]}}
        if self.prices is not None:
            data["cost"] = round(spent, 6)  # per model, with cached tokens: finer than the token totals
        if self.limiter is not None:
            data["limits"] = self.limiter.snapshot()
        return data


@dataclass(eq=False)
class Grant:
    """What ``Admission.admit`` took for one attempt; given back by ``settle``."""

    state: "ProviderState"
    reservation: Optional[Reservation]
    holds: List[Tuple[BudgetLedger, Reservation]] = field(default_factory=list)
    expected_cost: Optional[float] = None
    settled: bool = False


class NoCapacityYet(Exception):
    """Internal: a waiting call found no capacity on this pass (never escapes the Router)."""


class Admission:
    """The Router's admission control: its own budgets, the waiting queue, and the
    admit/settle steps each attempt goes through. Thread-safe.

    ``make_limiter(provider_name, limits)`` and ``make_ledger(scope, budget)`` build the
    state objects (in memory by default; a shared store passes its own), ``scope`` being
    the provider's name or ``"router"``. Pass the instance as ``Router(admission=...)``::

        Router(admission=Admission("wait", {"limit": 100, "period": "day"},
                                   make_limiter=store.limiter, make_ledger=store.ledger))
    """

    def __init__(
        self,
        mode: str = "skip",
        budget: Any = None,
        *,
        make_limiter: Optional[Callable[[str, Limits], Limiter]] = None,
        make_ledger: Optional[Callable[[str, Budget], BudgetLedger]] = None,
    ) -> None:
        if mode not in ADMISSION_MODES:
            raise ConfigurationError(f"admission must be one of {', '.join(ADMISSION_MODES)}; got {mode!r}")
        self.mode = mode
        self.make_limiter = make_limiter or (lambda name, limits: MemoryLimiter(limits))
        self.make_ledger = make_ledger or (lambda scope, budget: MemoryBudgetLedger(budget))
        self.ledgers = [self.make_ledger("router", item) for item in Budget.from_value(budget, "Router budget")]
        #: ``run`` only calls ``once``: no queue, no Router budget (the plain path skips it).
        self.idle = mode == "skip" and not self.ledgers
        self._cond = threading.Condition()
        forking.register(self)  # fresh locks in a forked child (forking.py)
        self._queue: Deque[object] = deque()
        self._generation = 0

    def _after_fork(self) -> None:
        # In a forked child: none of the parent's waiting threads exist here.
        self._cond = threading.Condition()
        self._queue = deque()

    def for_provider(self, provider: "BaseProvider") -> Optional[ProviderAdmission]:
        return ProviderAdmission.for_provider(provider, self.make_limiter, self.make_ledger)

    # Costs -----------------------------------------------------------------------------

    @staticmethod
    def tokens(state: "ProviderState", demand: Demand) -> Tuple[int, int]:
        """Estimated (prompt, completion) tokens of ``demand`` on this provider."""
        return demand.prompt_tokens, demand.completion_tokens(state)

    def expected_cost(self, state: "ProviderState", demand: Optional[Demand]) -> Optional[float]:
        """The expected cost of ``demand`` on this provider; None when it has no prices."""
        provider_admission = getattr(state, "admission", None)
        if provider_admission is None or demand is None:
            return None
        price = provider_admission.price(demand.model(state))
        if price is None:
            return None
        return price.expected(*self.tokens(state, demand))

    # Admit and settle -----------------------------------------------------------------------

    def check_budget(self) -> None:
        """BudgetExceededError when the Router's own budget is already spent."""
        for ledger in self.ledgers:
            budget = ledger.budget
            spent = ledger.spent()
            if spent >= budget.limit:
                refusal = ledger.acquire(math.inf)
                raise BudgetExceededError(
                    f"The Router's {budget.describe()} is spent ({spent:.4f}); nothing was sent. "
                    f"{_when(refusal)}Raise the budget or wait for the next period.",
                    budget=budget, spent=spent,
                    retry_after=refusal.retry_after if isinstance(refusal, Refusal) else None,
                )

    def admit(self, call: "Call", state: "ProviderState", demand: Optional[Demand] = None) -> Union[Grant, Refusal, None]:
        """Take capacity and budget for one attempt: a Grant, a Refusal, or None when
        nothing applies to this provider and call. ``demand``: what the attempt asks
        for, when not the call's (an embedding batch)."""
        provider_admission = getattr(state, "admission", None)
        if provider_admission is None and not self.ledgers:  # nothing applies: the demand is never built
            return None
        if demand is None:
            demand = getattr(call, "demand", None)
            if demand is None:
                return None
        limiter = provider_admission.limiter if provider_admission else None
        cost = self.expected_cost(state, demand)
        grant = Grant(state, None, expected_cost=cost)
        if limiter is not None:
            completion = self.tokens(state, demand)[1]
            remaining = call.remaining()
            prompt = demand.prompt_tokens_for(state, min(COUNT_TOKENS_TIMEOUT, remaining) if remaining is not None else COUNT_TOKENS_TIMEOUT)
            taken = limiter.acquire(prompt + completion)
            if isinstance(taken, Refusal):
                return taken
            grant.reservation = taken
        ledgers = [(ledger, False) for ledger in (provider_admission.ledgers if provider_admission else ())]
        ledgers += [(ledger, True) for ledger in self.ledgers]
        for ledger, router_wide in ledgers:
            hold = ledger.acquire(cost or 0.0)
            if isinstance(hold, Refusal):
                self.settle(grant, None, sent=False)
                if router_wide:
                    return RouterBudgetRefusal(hold.reason, hold.retry_after)
                return hold
            grant.holds.append((ledger, hold))
        return grant

    def settle(self, grant: Grant, usage: Any, *, sent: bool = True, model: Optional[str] = None) -> None:
        """Reconcile a grant with what the attempt really used, once. ``sent=False``: the
        request never left, everything is given back."""
        if grant.settled:
            return
        grant.settled = True
        provider_admission = getattr(grant.state, "admission", None)
        try:
            if grant.reservation is not None and provider_admission is not None and provider_admission.limiter is not None:
                limiter = provider_admission.limiter
                total = getattr(usage, "total_tokens", 0) or 0
                if sent and total and getattr(usage, "plausible", True):
                    limiter.reconcile(grant.reservation, total)
                limiter.release(grant.reservation, sent=sent)
            price = provider_admission.price(model) if provider_admission is not None else None
            known = usage is not None and getattr(usage, "plausible", True)  # absurd counts: unknown usage
            cost = price.cost(usage) if (sent and known and price is not None) else 0.0
            for ledger, hold in grant.holds:
                if sent:
                    ledger.reconcile(hold, cost)
                else:
                    ledger.release(hold)
            if cost and provider_admission is not None:
                provider_admission.add_spend(cost)
        finally:
            self.notify()

    def penalize(self, state: "ProviderState", retry_after: Optional[float]) -> None:
        """The provider answered 429: its limiter pauses (no-op without limits)."""
        provider_admission = getattr(state, "admission", None)
        if provider_admission is not None and provider_admission.limiter is not None:
            provider_admission.limiter.penalize(retry_after)

    # Waiting -------------------------------------------------------------------------------

    def notify(self) -> None:
        """Capacity may have returned: wake the head of the queue."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def run(self, call: "Call", once: Callable[[], Any]) -> Any:
        """Run ``once`` (one pass over the planned providers); with ``admission="wait"``
        queue and repeat it while no provider has capacity, within the deadline."""
        self.check_budget()
        if self.mode == "skip":
            return once()
        ticket = object()
        limit = self.wait_limit(call)
        call.waiting = True
        call.on_admitted = lambda: self._leave(ticket)
        with self._cond:
            self._queue.append(ticket)
        try:
            while True:
                self._wait_turn(call, ticket, limit)
                generation = self.generation()
                try:
                    return once()
                except NoCapacityYet:
                    pass
                self.pause(call, limit, generation)
        finally:
            call.waiting = False
            self._leave(ticket)

    @staticmethod
    def wait_limit(call: "Call") -> Optional[float]:
        """When a waiting call without a deadline gives up (None: it has a deadline)."""
        return None if call.deadline is not None else time.monotonic() + MAX_WAIT_WITHOUT_DEADLINE

    def generation(self) -> int:
        """Counts settled grants: ``pause`` does not sleep when one came after this."""
        with self._cond:
            return self._generation

    def pause(self, call: "Call", limit: Optional[float], generation: int) -> None:
        """After a pass that found no capacity (``call.refusals`` say why): wait until
        some may be back, woken early when a grant is settled after ``generation``; raise
        the call's out-of-capacity error when it cannot be back in the time left."""
        wait = _soonest(call.refusals)
        left = _left(call, limit)
        if wait is not None and (math.isinf(wait) or wait > left):
            raise call.out_of_capacity()
        with self._cond:
            if self._generation == generation:
                self._cond.wait(max(0.0, min(left, MAX_WAIT_SLICE, wait if wait is not None else left)))
        if _left(call, limit) <= 0:
            raise call.out_of_capacity(waited=True)
        call.refusals.clear()

    def _wait_turn(self, call: "Call", ticket: object, limit: Optional[float]) -> None:
        with self._cond:
            while self._queue and self._queue[0] is not ticket:
                left = _left(call, limit)
                if left <= 0:
                    raise call.out_of_capacity(waited=True)
                self._cond.wait(min(left, MAX_WAIT_SLICE))

    def _leave(self, ticket: object) -> None:
        with self._cond:
            try:
                self._queue.remove(ticket)
            except ValueError:
                return
            self._cond.notify_all()

    def snapshot(self) -> dict:
        """The Router-wide part of ``stats()``: its budgets and the calls waiting for capacity."""
        with self._cond:
            waiting = len(self._queue)
        return {"admission": {"mode": self.mode, "waiting": waiting, "budgets": [ledger.snapshot() for ledger in self.ledgers]}}


class CostCap(PlanCheck):
    """The planning check of ``max_cost``: providers whose expected cost for the call is
    above it are left out (recorded as skipped); providers without prices are kept."""

    error_type = "AboveMaxCost"

    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    def prepare(self, request: Any) -> Optional[Callable[["ProviderState"], Optional[str]]]:
        cap = getattr(request, "max_cost", None)
        demand: Optional[Demand] = getattr(request, "demand", None) if cap is not None else None  # the plain path builds none
        if demand is None:
            return None

        def reason(state: "ProviderState") -> Optional[str]:
            cost = self.admission.expected_cost(state, demand)
            if cost is not None and cost > cap:
                return f"expected cost {cost:.4f} is above max_cost {cap:g}"
            return None

        return reason

    def exhausted(self, request: Any, skips: Sequence[Any]) -> Optional[Exception]:
        cheapest = min(self.admission.expected_cost(skip.state, request.demand) or 0.0 for skip in skips)
        return CapacityExhaustedError(
            f"Every provider's expected cost is above max_cost {request.demand.max_cost:g} (the cheapest: "
            f"{cheapest:.4f}); raise max_cost or lower max_tokens",
            retry_after=math.inf,
        )


class RouterBudgetRefusal(Refusal):
    """A refusal by the Router's own budget (the call then raises BudgetExceededError)."""


def _soonest(refusals: Sequence[Tuple[str, Refusal]]) -> Optional[float]:
    """The earliest known time capacity returns: None if some provider may free up at
    any moment (a call in flight ending), inf if none ever will."""
    waits = [refusal.retry_after for _, refusal in refusals]
    if not waits or any(wait is None for wait in waits):
        return None
    return min(waits)  # type: ignore[type-var]


def _left(call: "Call", limit: Optional[float]) -> float:
    remaining = call.remaining()
    if remaining is not None:
        return remaining
    return (limit or 0.0) - time.monotonic()


def _when(refusal: Any) -> str:
    if isinstance(refusal, Refusal) and refusal.retry_after is not None and math.isfinite(refusal.retry_after):
        return f"It frees in {refusal.retry_after:.0f} s. "
    return ""


def capacity_error(refusals: Sequence[Tuple[str, Refusal]], waited: bool, deadline: Optional[float]) -> Exception:
    """The error of a call no provider could start: BudgetExceededError when the Router's
    own budget refused, else CapacityExhaustedError saying when capacity returns."""
    router_budget = [refusal for _, refusal in refusals if isinstance(refusal, RouterBudgetRefusal)]
    if router_budget:
        refusal = router_budget[0]
        return BudgetExceededError(
            f"The call would go over the Router's {refusal.reason}; nothing was sent. {_when(refusal)}",
            retry_after=refusal.retry_after,
        )
    if not refusals:  # the deadline passed while earlier calls were still queued ahead
        return CapacityExhaustedError(
            "No provider had capacity before the call's deadline: it waited behind earlier calls "
            "queued for capacity (admission='wait'); give it a longer timeout or raise the limits"
        )
    known = [r.retry_after for _, r in refusals if r.retry_after is not None and math.isfinite(r.retry_after)]
    soonest = min(known) if known else None
    lines = [f"  - {name}: {refusal.describe()}" for name, refusal in refusals]
    if soonest is not None:
        headline = f"No provider has capacity; the first returns in {soonest:.2f} s"
    else:
        headline = "No provider has capacity"
    if deadline is not None and (waited or (soonest is not None and soonest > deadline)):
        headline += f", after the call's deadline ({max(0.0, deadline):.2f} s left)"
    return CapacityExhaustedError(headline + ":\n" + "\n".join(lines), retry_after=soonest)

"""Planning checks: leave providers out of a call before the strategy orders them.

A ``PlanCheck`` looks at one call (``CallRequest``: messages, params, streaming) and
says, for each provider, why it cannot take that call, or nothing. The Router runs every
check before the strategy, records each left-out provider in ``Completion.attempts`` as
``Attempt(outcome="skipped", error=<reason>)``, and plans the call over the rest. When
no provider is left, the check that left them all out names the problem
(``PlanCheck.exhausted``); when several checks did, the error lists every reason.

Capabilities (``CapabilityCheck``, below) are one such check; admission control,
context windows or provider pinning (``call_options.PinnedProviders``) are others of
the same shape::

    class PinnedProviders(PlanCheck):
        def prepare(self, request):
            if request.pinned is None:
                return None                      # nothing to say: costs nothing
            return lambda state: None if state.name in request.pinned else "pinned elsewhere"

A check must be cheap when it has nothing to say about a call: ``prepare`` returns None
and no provider is looked at (the plain-text path pays one method call per check).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, FrozenSet, List, Optional, Sequence

from .capabilities import needed_by
from .errors import AllProvidersFailedError, CapabilityError, OrchestratorError
from .types import Attempt, GenerationParams, Message

if TYPE_CHECKING:
    from .calls import Call
    from .strategies import ProviderState

__all__ = ["CallRequest", "PlanCheck", "Skip", "apply_checks", "beyond_text", "CapabilityCheck"]

#: Given a provider's state: why it cannot take the call, or None.
SkipReason = Callable[["ProviderState"], Optional[str]]


@dataclass(frozen=True)
class CallRequest:
    """What planning checks see of one call (the Router passes its ``calls.Call``, which
    has these same attributes)."""

    messages: List[Message]
    params: GenerationParams
    streaming: bool
    #: The providers the call is pinned to (``provider=``/``providers=``), or None.
    pinned: Optional[FrozenSet[str]] = None


@dataclass(frozen=True)
class Skip:
    """One provider left out of a call, by which check, and why."""

    state: "ProviderState"
    reason: str
    check: "PlanCheck"


class PlanCheck:
    """A reason to leave providers out of a call. Implementations must be thread-safe."""

    #: The ``error_type`` recorded on the skipped attempts.
    error_type = "Skipped"

    def prepare(self, request: CallRequest) -> Optional[SkipReason]:
        """A function giving each provider's skip reason for this call; None when this
        check has nothing to say about the call (no provider is looked at)."""
        raise NotImplementedError

    def exhausted(self, request: CallRequest, skips: Sequence[Skip]) -> Optional[OrchestratorError]:
        """The error to raise when this check alone left every provider out (None: the
        generic "no provider can take this call" error)."""
        return None


def apply_checks(states: Sequence["ProviderState"], call: "Call", checks: Sequence[PlanCheck]) -> Sequence["ProviderState"]:
    """``states`` without the providers some check leaves out for ``call``; each of
    those is recorded in ``call`` as a skipped attempt. Raises when none is left."""
    request = call
    if call.params is None or not checks:
        return states
    reasons = None  # built only when a check has something to say: the plain path allocates nothing
    for check in checks:
        reason_of = check.prepare(request)
        if reason_of is not None:
            if reasons is None:
                reasons = []
            reasons.append((check, reason_of))
    if reasons is None:
        return states
    kept: List["ProviderState"] = []
    skips: List[Skip] = []
    for state in states:
        for check, reason_of in reasons:
            reason = reason_of(state)
            if reason is not None:
                skips.append(Skip(state, reason, check))
                break
        else:
            kept.append(state)
    for skip in skips:
        call.record(Attempt(skip.state.name, "skipped", error=skip.reason, error_type=skip.check.error_type),
                    call.next_order())
    if kept or not skips:
        return kept
    raise _exhausted(request, skips)


def beyond_text(request: CallRequest) -> bool:
    """Whether the call asks for more than a plain text answer: tools, a structured
    answer, reasoning, or messages carrying tool calls or results."""
    params = request.params
    return bool(params.tools or params.response_format is not None or params.reasoning_effort is not None
                or getattr(request.messages, "has_tool_messages", False))


def _exhausted(request: CallRequest, skips: Sequence[Skip]) -> OrchestratorError:
    checks = {id(skip.check): skip.check for skip in skips}
    if len(checks) == 1:
        error = next(iter(checks.values())).exhausted(request, skips)
        if error is not None:
            return error
    reasons = "; ".join(f"{skip.state.name}: {skip.reason}" for skip in skips)
    return AllProvidersFailedError([], f"No provider can take this call ({reasons})")


class CapabilityCheck(PlanCheck):
    """Leaves out the providers lacking a capability the call needs."""

    error_type = "CapabilityError"

    def prepare(self, request: CallRequest) -> Optional[SkipReason]:
        if not beyond_text(request):
            return None  # plain text: every provider can take it
        params = request.params
        tool_messages = getattr(request.messages, "has_tool_messages", False)
        needs = needed_by(params, request.streaming, tool_messages)
        if not needs:
            return None

        def reason(state) -> Optional[str]:
            missing = needs - state.provider.capabilities
            if not missing:
                return None
            return f"does not support {', '.join(sorted(missing))}"

        return reason

    def exhausted(self, request: CallRequest, skips: Sequence[Skip]) -> CapabilityError:
        needs = needed_by(request.params, request.streaming, getattr(request.messages, "has_tool_messages", False))
        offered = [need for need in sorted(needs) if any(need in skip.state.provider.capabilities for skip in skips)]
        missing = [need for need in sorted(needs) if need not in offered] or sorted(needs)
        return CapabilityError(missing, [skip.state.name for skip in skips])

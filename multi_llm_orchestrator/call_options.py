"""Per-call keyword arguments of ``Router.route`` / ``complete`` / ``route_stream``.

The habit of the OpenAI SDK and LiteLLM::

    router.route("Hi", temperature=0.2, max_tokens=100)     # GenerationParams fields
    router.route("Hi", provider="giga")                      # pin the call to one provider
    router.route("Hi", providers=["giga", "yandex"])         # ... or to a subset
    router.route("Hi", provider="giga", model="GigaChat-Pro")  # another model, this call only

Parameter keywords are validated exactly as ``GenerationParams`` validates them (they
replace the fields of ``params`` when both are given). A pinned call still has the
Router's deadline, breakers, metrics, retries and fallback, only over the pinned
providers: ``PinnedProviders`` is a planning check (``planning.py``), so every provider
pinned out is listed in ``Completion.attempts`` as skipped ("pinned to giga").
``model=`` needs the call pinned to one provider (a model name means something to one
provider only); it is applied while that provider runs the attempt, through
``providers.base.model_override``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, FrozenSet, Iterable, Mapping, Optional, Tuple, TypeVar

from .errors import AllProvidersFailedError, ConfigurationError, OrchestratorError
from .planning import CallRequest, PlanCheck, SkipReason
from .providers.base import BaseProvider, model_override
from .records import FrozenRecord, field_names
from .types import GenerationParams

__all__ = ["CallOptions", "PinnedProviders", "PARAM_KEYWORDS", "PIN_KEYWORDS"]

#: Keywords that set a ``GenerationParams`` field.
PARAM_KEYWORDS: Tuple[str, ...] = field_names(GenerationParams)
#: Keywords that choose where the call goes.
PIN_KEYWORDS: Tuple[str, ...] = ("provider", "providers", "model")

T = TypeVar("T")


class CallOptions(FrozenRecord):  # a dataclass when asked (records.py); one per call
    """The call's parameters with its keywords applied, and where it is pinned."""

    params: GenerationParams
    pinned: Optional[FrozenSet[str]] = None
    model: Optional[str] = None

    def __init__(self, params: GenerationParams, pinned: Optional[FrozenSet[str]] = None,
                 model: Optional[str] = None) -> None:
        state = self.__dict__
        state["params"] = params
        state["pinned"] = pinned
        state["model"] = model

    @property
    def plain(self) -> bool:
        """True when the call goes anywhere with each provider's own model."""
        return self.pinned is None and self.model is None

    @classmethod
    def parse(cls, params: GenerationParams, keywords: Mapping[str, Any], registered: Iterable[str]) -> "CallOptions":
        """``params`` with the parameter ``keywords`` applied, and the pin they ask for;
        ``registered``: the Router's provider names. Raises ``ConfigurationError``."""
        if not keywords:
            return cls(params)
        unknown = sorted(set(keywords) - set(PARAM_KEYWORDS) - set(PIN_KEYWORDS))
        if unknown:
            valid = ", ".join(PARAM_KEYWORDS + PIN_KEYWORDS + ("timeout", "max_cost", "cache"))
            raise ConfigurationError(
                f"Unknown keyword argument{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                f"valid ones: {valid}"
            )
        fields = {name: value for name, value in keywords.items() if name in PARAM_KEYWORDS}
        if fields:
            # replace() runs GenerationParams.__post_init__: the same validation, the same errors.
            params = dataclasses.replace(params, **fields)
        names = list(registered)
        pinned = _pinned(keywords.get("provider"), keywords.get("providers"), names)
        model = keywords.get("model")
        if model is not None:
            if not isinstance(model, str) or not model.strip():
                raise ConfigurationError(f"model must be a non-empty str (a model id of the pinned provider); got {model!r}")
            if pinned is None and len(names) == 1:
                pinned = frozenset(names)
            if pinned is None or len(pinned) != 1:
                raise ConfigurationError(
                    "model= names a model of one provider: pin the call to it too, e.g. "
                    f"provider={names[0] if names else 'name'!r}, model={model!r}"
                )
        return cls(params, pinned, model)

    def wrap(self, invoke: Callable[[BaseProvider, Optional[float]], T]) -> Callable[[BaseProvider, Optional[float]], T]:
        """``invoke`` running the pinned provider with this call's ``model`` (if any)."""
        if self.model is None:
            return invoke
        model = self.model

        def with_model(provider: BaseProvider, remaining: Optional[float]) -> T:
            with model_override(provider, model):
                return invoke(provider, remaining)

        return with_model


class PinnedProviders(PlanCheck):
    """Leaves out the providers a call is not pinned to (``provider=`` / ``providers=``)."""

    error_type = "Pinned"

    def prepare(self, request: CallRequest) -> Optional[SkipReason]:
        pinned = getattr(request, "pinned", None)
        if pinned is None:
            return None  # the plain path: nothing looked at
        reason = f"pinned to {', '.join(sorted(pinned))}"
        return lambda state: None if state.name in pinned else reason

    def exhausted(self, request: CallRequest, skips: Any) -> Optional[OrchestratorError]:
        # Only when a pinned provider was removed between the call's start and its plan.
        pinned = ", ".join(sorted(getattr(request, "pinned", None) or ()))
        return AllProvidersFailedError([], f"No provider named {pinned} is registered any more")


def _pinned(provider: Any, providers: Any, registered: list) -> Optional[FrozenSet[str]]:
    if provider is None and providers is None:
        return None
    if provider is not None and providers is not None:
        raise ConfigurationError("Give provider= (one name) or providers= (a list of names), not both")
    if provider is not None:
        if not isinstance(provider, str):
            raise ConfigurationError(f"provider must be a provider's name (a str); got {type(provider).__name__}"
                                     " (use providers=[...] for several)")
        wanted = [provider]
    else:
        if isinstance(providers, (str, bytes)) or not isinstance(providers, Iterable):
            raise ConfigurationError(f"providers must be a list of provider names; got {providers!r}")
        wanted = list(providers)
        if not wanted or not all(isinstance(name, str) for name in wanted):
            raise ConfigurationError(f"providers must be a non-empty list of provider names (str); got {providers!r}")
    missing = [name for name in wanted if name not in registered]
    if missing:
        known = ", ".join(registered) or "none"
        raise ConfigurationError(f"No provider named {', '.join(map(repr, missing))}; registered: {known}")
    return frozenset(wanted)

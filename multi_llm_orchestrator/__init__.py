"""multi-llm-orchestrator: one blocking, thread-safe Router over several LLM providers.

>>> from multi_llm_orchestrator import Router
>>> from multi_llm_orchestrator.providers import ProviderConfig, MockProvider
>>> router = Router(strategy="round-robin")
>>> router.add_provider(MockProvider(ProviderConfig(name="provider-1", model="mock-normal")))
>>> router.route("What is Python?")
'Mock response to: What is Python?'

The names below are imported from their modules on first use (PEP 562), so
``import multi_llm_orchestrator`` and ``import multi_llm_orchestrator.providers.openai``
load only what they need: a program that uses one provider class directly never loads
the Router, the cache or the budgets, and ``from multi_llm_orchestrator import Router``
loads the Router's modules only.
"""

import logging as _logging
from typing import TYPE_CHECKING, Dict, List

__version__ = "0.1.0"

# public name -> the submodule defining it (relative to this package).
_EXPORTS: Dict[str, str] = {
    "Router": "router",
    "run_tools": "tool_loop",
    "ProviderConfig": "config",
    "Limits": "limits",
    "Budget": "budgets",
    "Price": "budgets",
    "BaseProvider": "providers.base",
    "MockProvider": "providers.mock",
    "Message": "types",
    "Tool": "types",
    "ToolCall": "types",
    "ReasoningDelta": "types",
    "GenerationParams": "types",
    "Usage": "types",
    "Attempt": "types",
    "Completion": "types",
    "Embeddings": "types",
    "TokenCount": "types",
    "TextStream": "types",
    "RouterEvent": "types",
    "ResponseCache": "cache",
    "Stats": "display",
    "HealthReport": "display",
    "State": "state",
    "LocalState": "state",
    "RedisState": "redis_state",  # needs the optional redis-py
    "OrchestratorError": "errors",
    "ConfigurationError": "errors",
    "NoProvidersError": "errors",
    "CapabilityError": "errors",
    "NotSupportedError": "errors",
    "ProviderError": "errors",
    "AuthenticationError": "errors",
    "RateLimitError": "errors",
    "QuotaExceededError": "errors",
    "ProviderTimeoutError": "errors",
    "ProviderUnavailableError": "errors",
    "InvalidRequestError": "errors",
    "ResponseFormatError": "errors",
    "AllProvidersFailedError": "errors",
    "DeadlineExceededError": "errors",
    "ToolLoopError": "errors",
}

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ does this
    from .budgets import Budget, Price
    from .cache import ResponseCache
    from .config import ProviderConfig
    from .display import HealthReport, Stats
    from .errors import (
        AllProvidersFailedError,
        AuthenticationError,
        CapabilityError,
        ConfigurationError,
        DeadlineExceededError,
        InvalidRequestError,
        NoProvidersError,
        NotSupportedError,
        OrchestratorError,
        ProviderError,
        ProviderTimeoutError,
        ProviderUnavailableError,
        QuotaExceededError,
        RateLimitError,
        ResponseFormatError,
        ToolLoopError,
    )
    from .limits import Limits
    from .providers.base import BaseProvider
    from .providers.mock import MockProvider
    from .redis_state import RedisState
    from .router import Router
    from .state import LocalState, State
    from .tool_loop import run_tools
    from .types import (
        Attempt,
        Completion,
        Embeddings,
        GenerationParams,
        Message,
        ReasoningDelta,
        RouterEvent,
        TextStream,
        TokenCount,
        Tool,
        ToolCall,
        Usage,
    )


def __getattr__(name: str) -> object:
    """Import the module defining ``name`` on first use (then it is a plain attribute)."""
    try:
        module = _EXPORTS[name]
    except KeyError:
        return _submodule(name)
    # __import__ rather than importlib.import_module: only the former shows in -X importtime.
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def _submodule(name: str) -> object:
    """``multi_llm_orchestrator.types`` and the like after a bare ``import
    multi_llm_orchestrator``: they were attributes when this package imported them all,
    and stay so, imported on first use."""
    if name.isidentifier() and not name.startswith("_"):
        try:
            return __import__(f"{__name__}.{name}", fromlist=["_"])
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise  # the submodule exists but needs something missing (an optional extra)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_EXPORTS))


# A library configures no handler; NullHandler keeps Python's last-resort handler from
# printing our warnings when the application has not set up logging.
_logging.getLogger("multi_llm_orchestrator").addHandler(_logging.NullHandler())

__all__ = ["__version__", *_EXPORTS]

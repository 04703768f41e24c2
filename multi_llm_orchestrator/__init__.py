"""multi-llm-orchestrator: one blocking, thread-safe Router over several LLM providers.

>>> from multi_llm_orchestrator import Router
>>> from multi_llm_orchestrator.providers import ProviderConfig, MockProvider
>>> router = Router(strategy="round-robin")
>>> router.add_provider(MockProvider(ProviderConfig(name="provider-1", model="mock-normal")))
>>> router.route("What is Python?")
'Mock response to: What is Python?'
"""

import logging as _logging

from .budgets import Budget, Price
from .config import ProviderConfig
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
from .providers import BaseProvider, MockProvider
from .cache import ResponseCache
from .display import HealthReport, Stats
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

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # RedisState needs the optional redis-py: imported only when asked for.
    if name == "RedisState":
        from .redis_state import RedisState

        return RedisState
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# A library configures no handler; NullHandler keeps Python's last-resort handler from
# printing our warnings when the application has not set up logging.
_logging.getLogger("multi_llm_orchestrator").addHandler(_logging.NullHandler())

__all__ = [
    "__version__",
    "Router",
    "run_tools",
    "ProviderConfig",
    "Limits",
    "Budget",
    "Price",
    "BaseProvider",
    "MockProvider",
    "Message",
    "Tool",
    "ToolCall",
    "ReasoningDelta",
    "GenerationParams",
    "Usage",
    "Attempt",
    "Completion",
    "Embeddings",
    "TokenCount",
    "TextStream",
    "RouterEvent",
    "ResponseCache",
    "Stats",
    "HealthReport",
    "State",
    "LocalState",
    "RedisState",
    "OrchestratorError",
    "ConfigurationError",
    "NoProvidersError",
    "CapabilityError",
    "NotSupportedError",
    "ProviderError",
    "AuthenticationError",
    "RateLimitError",
    "QuotaExceededError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "InvalidRequestError",
    "ResponseFormatError",
    "AllProvidersFailedError",
    "DeadlineExceededError",
    "ToolLoopError",
]

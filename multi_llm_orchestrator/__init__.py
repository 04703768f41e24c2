"""multi-llm-orchestrator: one blocking, thread-safe Router over several LLM providers.

>>> from multi_llm_orchestrator import Router
>>> from multi_llm_orchestrator.providers import ProviderConfig, MockProvider
>>> router = Router(strategy="round-robin")
>>> router.add_provider(MockProvider(ProviderConfig(name="provider-1", model="mock-normal")))
>>> router.route("What is Python?")
'Mock response to: What is Python?'
"""

from .config import ProviderConfig
from .errors import (
    AllProvidersFailedError,
    AuthenticationError,
    ConfigurationError,
    DeadlineExceededError,
    InvalidRequestError,
    NoProvidersError,
    OrchestratorError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitError,
    ResponseFormatError,
)
from .providers import BaseProvider, MockProvider
from .types import Attempt, Completion, GenerationParams, Message, TextStream, Usage

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "ProviderConfig",
    "BaseProvider",
    "MockProvider",
    "Message",
    "GenerationParams",
    "Usage",
    "Attempt",
    "Completion",
    "TextStream",
    "OrchestratorError",
    "ConfigurationError",
    "NoProvidersError",
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
]

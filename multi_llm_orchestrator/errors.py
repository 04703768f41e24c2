"""Every exception the library raises, in one tree.

    OrchestratorError
    ├── ConfigurationError (also ValueError)   bad strategy, duplicate name, bad params,
    │   │                                      bad config file, bad input (empty prompt, ...)
    │   └── NoProvidersError                   routing on a Router that has no providers
    │       └── CapabilityError                 no provider supports what the call needs
    │                                          (tools, structured_output, reasoning, ...)
    ├── NotSupportedError (also NotImplementedError)  the provider has no such API (e.g. balance)
    ├── ProviderError                          .provider, .status_code, .retryable
    │   ├── AuthenticationError                401/403, bad key, wrong scope or folder
    │   ├── RateLimitError                     429; .retry_after seconds when known
    │   ├── QuotaExceededError                 402, insufficient_quota: billing, not timing
    │   ├── ProviderTimeoutError (also TimeoutError)
    │   ├── ProviderUnavailableError           connection refused/reset, 5xx, TLS failure
    │   ├── InvalidRequestError                400/404/413/422, model not found
    │   └── ResponseFormatError                a body or stream that cannot be parsed
    ├── AllProvidersFailedError                .errors: every failed attempt, in order
    │   ├── DeadlineExceededError (also TimeoutError)   the Router's total budget ran out
    │   ├── CapacityExhaustedError             no provider had capacity (limits); .retry_after
    │   └── BudgetExceededError                the Router's spending budget is used up
    └── ToolLoopError                          run_tools: the model still asks for tools
                                               after max_rounds

Catch ``OrchestratorError`` to catch everything; ``ProviderError`` for one provider's
failure (the Router falls back on every ``ProviderError``); ``AllProvidersFailedError``
when the whole call failed. Messages say what failed and what to do, and never contain
an API key, authorization key or token.

Example::

    try:
        text = router.route("Hello")
    except AllProvidersFailedError as exc:
        for error in exc.errors:
            print(error.provider, type(error).__name__, error)
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

__all__ = [
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
    "CapacityExhaustedError",
    "BudgetExceededError",
    "ToolLoopError",
]


class OrchestratorError(Exception):
    """Base class of every exception raised by multi_llm_orchestrator."""


class ConfigurationError(OrchestratorError, ValueError):
    """A value given by the caller is wrong; the message names it and what is allowed."""


class NoProvidersError(ConfigurationError):
    """The Router was asked to route but has no providers."""


class CapabilityError(NoProvidersError):
    """No provider of the Router supports a capability the call needs.

    ``capabilities`` names the missing ones (e.g. ``["tools"]``), ``providers`` the
    providers that were left out.
    """

    def __init__(self, capabilities: Sequence[str], providers: Sequence[str]) -> None:
        self.capabilities = list(capabilities)
        self.providers = list(providers)
        super().__init__(
            f"No provider supports {', '.join(self.capabilities)}, which this call needs "
            f"(providers: {', '.join(self.providers) or 'none'}): add a provider that does, or set "
            f"ProviderConfig.capabilities where the model supports it"
        )

    def __reduce__(self):
        return (type(self), (self.capabilities, self.providers))


class NotSupportedError(OrchestratorError, NotImplementedError):
    """The provider has no API for this operation (``balance()`` on Ollama, ``embed()``
    on a provider type without embeddings), or it does not apply to the account.

    ``provider`` is the provider's name, ``operation`` what was asked ("balance", ...).
    """

    def __init__(self, message: str, *, provider: Optional[str] = None, operation: Optional[str] = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.operation = operation

    def __reduce__(self):  # keep keyword arguments through pickling (process pools)
        return (_rebuild, (type(self), self.args[0], self.__dict__))


class ProviderError(OrchestratorError):
    """One provider failed one call.

    ``provider`` is the provider's configured name, ``status_code`` the HTTP status when
    there was one, ``retryable`` whether the same call may succeed if repeated later.
    """

    default_retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: Optional[str] = None,
        status_code: Optional[int] = None,
        retryable: Optional[bool] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code
        self.retryable = self.default_retryable if retryable is None else retryable

    def __str__(self) -> str:
        prefix = f"[{self.provider}] " if self.provider else ""
        status = f" (HTTP {self.status_code})" if self.status_code else ""
        return f"{prefix}{self.message}{status}"

    def __reduce__(self):  # keep keyword arguments through pickling (process pools)
        return (_rebuild, (type(self), self.message, self.__dict__))


def _rebuild(cls, message, state):
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class AuthenticationError(ProviderError):
    """The provider refused the credentials (401/403, wrong scope, wrong folder)."""


class RateLimitError(ProviderError):
    """The provider said "too many requests" (429). ``retry_after`` is in seconds, if known."""

    default_retryable = True

    def __init__(self, message: str, *, retry_after: Optional[float] = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class QuotaExceededError(ProviderError):
    """The account is out of credit or quota (HTTP 402, OpenAI ``insufficient_quota``).

    Waiting does not help: top up the balance or raise the limit.
    """


class ProviderTimeoutError(ProviderError, TimeoutError):
    """The provider did not answer (or stopped streaming) within the timeout."""

    default_retryable = True


class ProviderUnavailableError(ProviderError):
    """The provider could not be reached or failed on its side (connect error, 5xx, TLS)."""

    default_retryable = True


class InvalidRequestError(ProviderError):
    """The provider rejected the request itself (400/404/413/422, unknown model)."""


class ResponseFormatError(ProviderError):
    """The provider answered with something that cannot be parsed."""

    default_retryable = True


class AllProvidersFailedError(OrchestratorError):
    """Every provider tried for one call failed.

    ``errors`` holds each attempt's ``ProviderError`` in the order they were tried; the
    message names each provider and what it failed with. The exception is chained
    (``__cause__``) to the last error.
    """

    headline = "All providers failed"

    def __init__(self, errors: Sequence[ProviderError], message: Optional[str] = None) -> None:
        self.errors = list(errors)
        super().__init__(self._describe(self.headline) if message is None else message)

    def _describe(self, headline: str) -> str:
        if not self.errors:
            return f"{headline}: no provider was tried"
        lines = [f"{headline} ({len(self.errors)} attempt(s)):"]
        for error in self.errors:
            lines.append(f"  - {error.provider}: {type(error).__name__}: {error.message}")
        return "\n".join(lines)

    def __reduce__(self):
        return (type(self), (self.errors, str(self)))


class DeadlineExceededError(AllProvidersFailedError, TimeoutError):
    """The Router's total ``timeout`` ran out before any provider succeeded."""

    def __init__(self, errors: Sequence[ProviderError], timeout: float, message: Optional[str] = None) -> None:
        self.timeout = timeout
        self.headline = f"Deadline of {timeout:g} s exceeded"
        super().__init__(errors, message)

    def __reduce__(self):
        return (type(self), (self.errors, self.timeout, str(self)))


class CapacityExhaustedError(AllProvidersFailedError):
    """No provider could start the call: each was at its rpm/tpm/concurrency limit, paused
    by a 429, over its budget or above ``max_cost``. The message lists each with when its
    capacity returns; ``retry_after`` is the soonest (None when unknown)."""

    def __init__(self, message: str, retry_after: Optional[float] = None) -> None:
        self.retry_after = retry_after
        super().__init__([], message)

    def __reduce__(self):
        return (type(self), (str(self), self.retry_after))


class BudgetExceededError(AllProvidersFailedError):
    """The Router's own spending budget is used up (or this call would go over it);
    raised before anything is sent. ``retry_after``: seconds until the budget frees, if known."""

    def __init__(self, message: str, *, budget: object = None, spent: Optional[float] = None,
                 retry_after: Optional[float] = None) -> None:
        self.budget = budget
        self.spent = spent
        self.retry_after = retry_after
        super().__init__([], message)

    def __reduce__(self):
        return (_rebuild_budget, (str(self), self.budget, self.spent, self.retry_after))


def _rebuild_budget(message, budget, spent, retry_after):
    return BudgetExceededError(message, budget=budget, spent=spent, retry_after=retry_after)


class ToolLoopError(OrchestratorError):
    """``run_tools`` stopped: the model still asked for tools after ``max_rounds``.

    ``completion`` is the last answer (its ``tool_calls`` unanswered), ``messages`` the
    conversation so far, so the caller can inspect it or continue by hand.
    """

    def __init__(self, message: str, *, completion: Any = None, messages: Any = None) -> None:
        super().__init__(message)
        self.completion = completion
        self.messages = messages

    def __reduce__(self):
        return (_rebuild, (type(self), self.args[0], self.__dict__))

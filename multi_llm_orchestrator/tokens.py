"""Token estimates and context windows.

- ``estimate_tokens``: the documented estimate used where a provider has no counting API
  (Ollama, OpenAI-compatible servers) and for planning, where a network round trip per
  call would cost more than it saves.
- ``ContextWindows``: each provider's context window, declared in
  ``ProviderConfig.context_window`` or learned from a "context length" refusal; the
  Router asks it, before a call, which providers a prompt cannot fit, and skips them
  with the reason in ``Completion.attempts``.

The estimate. BPE tokenizers of current models spend about 4 characters of English (or
code) per token and 2.5-3 of Cyrillic; a message costs a few tokens of chat template.
So: ``ceil(ascii_chars / 4 + other_chars / 2.5) + 4`` per message. It over-counts
Russian slightly on purpose: skipping a provider whose window is almost full is cheaper
than a call that fails. It is only an estimate, and says so: ``TokenCount.estimated``.
"""

from __future__ import annotations

import math
import re
import threading
from typing import Any, Dict, Iterable, Optional, Sequence

from . import forking
from .errors import AllProvidersFailedError, InvalidRequestError, OrchestratorError
from .planning import CallRequest, PlanCheck, Skip, SkipReason
from .types import GenerationParams, Message, TokenCount

__all__ = ["estimate_tokens", "text_tokens", "is_context_length_error", "ContextWindows", "ASCII_CHARS_PER_TOKEN",
           "OTHER_CHARS_PER_TOKEN", "TOKENS_PER_MESSAGE"]

ASCII_CHARS_PER_TOKEN = 4.0
OTHER_CHARS_PER_TOKEN = 2.5
TOKENS_PER_MESSAGE = 4
# Statuses and words of a "the prompt is longer than the model's context" refusal:
# OpenAI/vLLM 400 "maximum context length ... context_length_exceeded", Ollama 400
# "the input length exceeds the context length", GigaChat 413/422.
CONTEXT_STATUSES = (400, 413, 422)
_CONTEXT_WORDS = re.compile(
    r"context[ _-]?(length|window|size)|maximum context|too many (input )?tokens|prompt is too long|input is too long",
    re.IGNORECASE,
)


def estimate_tokens(messages: Iterable[Message], provider: Optional[str] = None) -> TokenCount:
    """The estimated prompt size of ``messages`` (see the module docstring), marked estimated.

    >>> estimate_tokens([Message("user", "What is Python?")])
    TokenCount(8, estimated=True)
    """
    total = sum(text_tokens(message.content) + TOKENS_PER_MESSAGE for message in messages)
    return TokenCount(total, estimated=True, provider=provider)


def text_tokens(text: str) -> int:
    """The estimated size of one text (no per-message overhead): what an embedding
    batch is estimated by.

    >>> text_tokens("What is Python?")
    4
    """
    ascii_chars = sum(1 for char in text if char < "\x80") if not text.isascii() else len(text)
    other = len(text) - ascii_chars
    return math.ceil(ascii_chars / ASCII_CHARS_PER_TOKEN + other / OTHER_CHARS_PER_TOKEN)


def is_context_length_error(error: BaseException) -> bool:
    """Whether ``error`` is a provider refusing a prompt as too long for its context:
    an ``InvalidRequestError`` with HTTP 413, or 400/422 naming the context length."""
    if not isinstance(error, InvalidRequestError):
        return False
    if error.status_code == 413:
        return True
    return error.status_code in CONTEXT_STATUSES and bool(_CONTEXT_WORDS.search(error.message))


class ContextWindows(PlanCheck):
    """The context window of each provider: declared, or learned from refusals. Thread-safe.

    A planning check (``planning.PlanCheck``): the Router leaves out the providers a
    request cannot fit, listed in ``Completion.attempts`` as skipped with the reason.

    A refusal teaches "requests of this estimated size do not fit": later requests at
    least that large skip the provider. A declared window is compared with the
    estimated prompt plus the ``max_tokens`` asked for (the answer needs room too).
    Declared windows are read when the Router's providers change (``track``), like their
    limits and prices: a Router where none is declared and none learned does no
    planning work for windows at all.
    """

    error_type = "ContextWindowExceeded"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        forking.register(self)  # fresh locks in a forked child (forking.py)
        self._learned: Dict[str, int] = {}
        self._declared: Dict[str, int] = {}  # replaced whole by track(): read without the lock
        #: No window declared or learned: this check has nothing to say about any call.
        self.idle = True

    def track(self, providers: Iterable[Any]) -> None:
        """Note the declared windows of the Router's providers (all of them, after each change)."""
        self._declared = {
            provider.name: provider.config.context_window
            for provider in providers if provider.config.context_window is not None
        }
        self.idle = not (self._declared or self._learned)

    def limit(self, provider: Any) -> Optional[int]:
        """The smallest request size known not to fit ``provider`` (None: unknown)."""
        declared = self._declared.get(provider.name)
        learned = self._learned.get(provider.name)
        if declared is None:
            return learned
        # A declared window W fits W tokens: the first size that does not fit is W + 1.
        return declared + 1 if learned is None else min(declared + 1, learned)

    def learn(self, provider_name: str, size: int) -> None:
        with self._lock:
            known = self._learned.get(provider_name)
            if known is None or size < known:
                self._learned[provider_name] = size
            self.idle = False

    def forget(self, provider_name: str) -> None:
        with self._lock:
            self._learned.pop(provider_name, None)
            self.idle = not (self._declared or self._learned)

    # PlanCheck ----------------------------------------------------------------------------

    def prepare(self, request: CallRequest) -> Optional[SkipReason]:
        """Each provider's skip reason for this request; the estimate is made only when a
        provider with a known window is looked at (never for a Router without any)."""
        if self.idle or request.params is None or not request.messages:
            return None
        size = _RequestSize(request.messages, request.params)

        def reason(state: Any) -> Optional[str]:
            limit = self.limit(state.provider)
            if limit is None or size.tokens() < limit:
                return None
            declared = self._declared.get(state.name)
            if declared is not None and limit == declared + 1:
                window = f"its context window of {declared} tokens (ProviderConfig.context_window)"
            else:
                window = f"its context window: it refused a request of ~{limit} tokens as too long"
            answer = f" with max_tokens={request.params.max_tokens}" if request.params.max_tokens else ""
            return f"a prompt of ~{size.tokens()} estimated tokens{answer} does not fit {window}"

        return reason

    def exhausted(self, request: CallRequest, skips: Sequence[Skip]) -> Optional[OrchestratorError]:
        """Every provider too small: one InvalidRequestError per provider, saying why."""
        return AllProvidersFailedError(
            [InvalidRequestError(f"skipped: {skip.reason}", provider=skip.state.name) for skip in skips]
        )

    def learn_from(self, call: Any, provider_name: str, error: BaseException) -> None:
        """After a failed attempt of ``call``: when the provider refused the request as
        longer than its context, remember that size for the provider."""
        if is_context_length_error(error) and call.messages:
            self.learn(provider_name, _RequestSize(call.messages, call.params).tokens())


class _RequestSize:
    """The estimated size of a request (prompt plus ``max_tokens``), computed once, on demand."""

    def __init__(self, messages: Iterable[Message], params: Optional[GenerationParams]) -> None:
        self.messages = messages
        self.max_tokens = (params.max_tokens if params is not None else None) or 0
        self._tokens: Optional[int] = None

    def tokens(self) -> int:
        if self._tokens is None:
            self._tokens = int(estimate_tokens(self.messages)) + self.max_tokens
        return self._tokens

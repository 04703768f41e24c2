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
from typing import Any, Callable, Dict, Iterable, Optional

from .errors import InvalidRequestError, ProviderError
from .types import GenerationParams, Message, TokenCount

__all__ = ["estimate_tokens", "is_context_length_error", "ContextWindows", "ASCII_CHARS_PER_TOKEN",
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
    total = 0
    for message in messages:
        text = message.content
        ascii_chars = sum(1 for char in text if char < "\x80") if not text.isascii() else len(text)
        other = len(text) - ascii_chars
        total += math.ceil(ascii_chars / ASCII_CHARS_PER_TOKEN + other / OTHER_CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE
    return TokenCount(total, estimated=True, provider=provider)


def is_context_length_error(error: BaseException) -> bool:
    """Whether ``error`` is a provider refusing a prompt as too long for its context:
    an ``InvalidRequestError`` with HTTP 413, or 400/422 naming the context length."""
    if not isinstance(error, InvalidRequestError):
        return False
    if error.status_code == 413:
        return True
    return error.status_code in CONTEXT_STATUSES and bool(_CONTEXT_WORDS.search(error.message))


class ContextWindows:
    """The context window of each provider: declared, or learned from refusals. Thread-safe.

    A refusal teaches "requests of this estimated size do not fit": later requests at
    least that large skip the provider. A declared window is compared with the
    estimated prompt plus the ``max_tokens`` asked for (the answer needs room too).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._learned: Dict[str, int] = {}

    def limit(self, provider: Any) -> Optional[int]:
        """The smallest request size known not to fit ``provider`` (None: unknown)."""
        declared = provider.config.context_window
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

    def forget(self, provider_name: str) -> None:
        with self._lock:
            self._learned.pop(provider_name, None)

    def guard(
        self,
        call: Any,
        invoke: Callable[[Any, Optional[float]], Any],
        messages: Iterable[Message],
        params: GenerationParams,
    ) -> Callable[[Any, Optional[float]], Any]:
        """Set ``call.exclude`` to skip the providers this request cannot fit, and return
        ``invoke`` wrapped to learn from a "context length" refusal. The estimate is made
        only when some provider has a known window, or after a refusal."""
        size: Dict[str, int] = {}

        def request_size() -> int:
            if not size:
                size["tokens"] = int(estimate_tokens(messages)) + (params.max_tokens or 0)
            return size["tokens"]

        def exclude(state: Any) -> Optional[str]:
            limit = self.limit(state.provider)
            if limit is None or request_size() < limit:
                return None
            declared = state.provider.config.context_window
            if declared is not None and limit == declared + 1:
                window = f"its context window of {declared} tokens (ProviderConfig.context_window)"
            else:
                window = f"its context window: it refused a request of ~{limit} tokens as too long"
            answer = f" with max_tokens={params.max_tokens}" if params.max_tokens else ""
            return f"context window: a prompt of ~{request_size()} estimated tokens{answer} does not fit {window}"

        def learning(provider: Any, remaining: Optional[float]) -> Any:
            try:
                return invoke(provider, remaining)
            except ProviderError as error:
                if is_context_length_error(error):
                    self.learn(provider.name, request_size())
                raise

        call.exclude = exclude
        return learning

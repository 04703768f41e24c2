"""A provider that needs no network and no keys, for demos, tests and benchmarks.

It is a real provider: the Router treats it exactly like GigaChat (same path, same
errors, same metrics), so what works with mocks works with real backends.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct
import threading
import time
from typing import Iterator, List, Optional, Sequence, Union

from ..errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)
from ..types import Completion, Embeddings, GenerationParams, Prompt, StreamEnd, TextStream, TokenCount, Usage
from ..validation import check_int, check_number
from .base import BaseProvider, EmbeddingLimits, ProviderConfig

__all__ = ["MockProvider", "MOCK_MODES"]

MOCK_MODES = (
    "mock-normal",
    "mock-timeout",
    "mock-unhealthy",
    "mock-ratelimit",
    "mock-auth-error",
    "mock-invalid-request",
    "mock-unavailable",
)


class MockProvider(BaseProvider):
    """A fake LLM whose behaviour is chosen by ``config.model``:

    ============================  ===================================================
    ``mock-normal`` (default)     answers "Mock response to: <last user message>"
    ``mock-timeout``              waits for the whole timeout, then ProviderTimeoutError
    ``mock-unhealthy``            health check False; generation still works
    ``mock-ratelimit``            RateLimitError (``retry_after`` from extra, default 1)
    ``mock-auth-error``           AuthenticationError
    ``mock-invalid-request``      InvalidRequestError
    ``mock-unavailable``          ProviderUnavailableError
    ============================  ===================================================

    ``extra`` settings: ``delay`` (seconds before answering, default 0.1; 0 for
    benchmarks), ``failure_rate`` and ``seed`` (fail that share of calls with
    ProviderUnavailableError, reproducibly), ``chunk_delay`` (seconds between streamed
    words), ``fail_after_chunks`` (a stream breaks after that many chunks),
    ``health_delay`` (seconds a health check takes), ``retry_after``.

    Embeddings: ``embed`` returns deterministic unit vectors (the same text always gives
    the same vector, from a SHA-256 of the text) of ``extra["dimensions"]`` numbers
    (default 16), with the delay and failure modes above; model "mock-embedding", so
    every mock shares one embedding space unless ``embedding_space`` says otherwise.
    ``count_tokens`` counts words (the mock's "tokens", as in its usage).

    >>> MockProvider(ProviderConfig(name="m", extra={"delay": 0})).generate("Hi")
    'Mock response to: Hi'
    """

    default_model = "mock-normal"
    type_name = "mock"
    default_embedding_model = "mock-embedding"
    embedding_limits = EmbeddingLimits(max_texts=64, max_chars=1_000_000)

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        if self.model not in MOCK_MODES:
            raise ConfigurationError(
                f"Unknown mock model {self.model!r} for provider {self.name!r}; "
                f"valid: {', '.join(MOCK_MODES)}"
            )
        extra = config.extra
        self.delay = _seconds(extra, "delay", 0.1)
        self.chunk_delay = _seconds(extra, "chunk_delay", 0.0)
        self.health_delay = _seconds(extra, "health_delay", 0.0)
        self.retry_after = _seconds(extra, "retry_after", 1.0)
        self.failure_rate = check_number(f"extra['failure_rate'] of {self.name!r}", extra.get("failure_rate", 0.0), 0, 1)
        self.fail_after_chunks = check_int(
            f"extra['fail_after_chunks'] of {self.name!r}", extra.get("fail_after_chunks"), 0, allow_none=True
        )
        self.dimensions = check_int(f"extra['dimensions'] of {self.name!r}", extra.get("dimensions", 16), 1)
        self._random = random.Random(extra.get("seed"))
        self._random_lock = threading.Lock()
        # Set by close(): wakes every sleeping call so shutdown never waits on a mock.
        self._closed = threading.Event()
        self.calls = 0
        self._calls_lock = threading.Lock()

    # Public interface ---------------------------------------------------------------

    def complete(
        self, messages: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None
    ) -> Completion:
        started = time.perf_counter()
        messages, params = self._prepare(messages, params)
        prompt = messages[-1].content
        text = self._answer(prompt, self._timeout(timeout))
        if params.max_tokens is not None:
            text = " ".join(text.split(" ")[: params.max_tokens])
        return self._completion(
            text, started, usage=self._usage(messages, text), finish_reason="stop"
        )

    def stream(
        self, messages: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None
    ) -> TextStream:
        messages, params = self._prepare(messages, params)
        text = self._answer(messages[-1].content, self._timeout(timeout))
        return self._text_stream(self._words(text, self._usage(messages, text)))

    def embed(
        self, texts: Sequence[str], *, purpose: Optional[str] = None, timeout: Optional[float] = None
    ) -> Embeddings:
        started = time.perf_counter()
        texts = self._embedding_input(texts, purpose)
        self._answer(texts[0], self._timeout(timeout))  # the delay and failure modes
        vectors = [mock_vector(text, self.dimensions) for text in texts]
        return self._embeddings(vectors, started, usage=Usage.of(sum(len(t.split()) for t in texts), 0))

    def count_tokens(self, prompt: Prompt, *, timeout: Optional[float] = None) -> TokenCount:
        messages = self._prepare(prompt, None)[0]
        return TokenCount(sum(len(m.content.split()) for m in messages), estimated=False, provider=self.name)

    def health_check(self, timeout: Optional[float] = None) -> bool:
        limit = self._timeout(timeout)
        if self.model == "mock-timeout":
            self._closed.wait(limit)
            return False
        if self.health_delay:
            if self.health_delay > limit:
                self._closed.wait(limit)
                return False
            self._closed.wait(self.health_delay)
        return self.model not in ("mock-unhealthy", "mock-unavailable", "mock-auth-error")

    def list_models(self, timeout: Optional[float] = None) -> list:
        return list(MOCK_MODES)

    def close(self) -> None:
        self._closed.set()

    # Behaviour ------------------------------------------------------------------------

    def _answer(self, prompt: str, timeout: float) -> str:
        with self._calls_lock:
            self.calls += 1
        mode = self.model
        if mode == "mock-timeout":
            self._closed.wait(timeout)
            raise ProviderTimeoutError(f"Mock timed out after {timeout:g} s", provider=self.name)
        if self.delay:
            if self.delay > timeout:
                self._closed.wait(timeout)
                raise ProviderTimeoutError(
                    f"Mock delay {self.delay:g} s exceeds the timeout of {timeout:g} s", provider=self.name
                )
            self._closed.wait(self.delay)
        if mode == "mock-ratelimit":
            raise RateLimitError(
                "Mock rate limit: too many requests", provider=self.name, status_code=429,
                retry_after=self.retry_after,
            )
        if mode == "mock-auth-error":
            raise AuthenticationError(
                "Mock authentication failed: check api_key", provider=self.name, status_code=401
            )
        if mode == "mock-invalid-request":
            raise InvalidRequestError("Mock rejected the request", provider=self.name, status_code=400)
        if mode == "mock-unavailable" or self._should_fail():
            raise ProviderUnavailableError("Mock service unavailable", provider=self.name, status_code=503)
        return f"Mock response to: {prompt}"

    def _should_fail(self) -> bool:
        if not self.failure_rate:
            return False
        with self._random_lock:
            return self._random.random() < self.failure_rate

    def _words(self, text: str, usage: Usage) -> Iterator[Union[str, StreamEnd]]:
        words = text.split(" ")
        for index, word in enumerate(words):
            if self.fail_after_chunks is not None and index >= self.fail_after_chunks:
                raise ProviderUnavailableError(
                    f"Mock stream broke after {index} chunk(s)", provider=self.name
                )
            if index and self.chunk_delay:
                self._closed.wait(self.chunk_delay)
            yield word if index == len(words) - 1 else word + " "
        yield StreamEnd(usage=usage, finish_reason="stop")

    @staticmethod
    def _usage(messages: list, text: str) -> Usage:
        prompt_tokens = sum(len(m.content.split()) for m in messages)
        return Usage.of(prompt_tokens, len(text.split()))


def mock_vector(text: str, dimensions: int) -> List[float]:
    """A deterministic unit vector for ``text``: SHA-256 blocks read as numbers in [-1, 1).

    >>> mock_vector("hello", 4) == mock_vector("hello", 4)
    True
    """
    values: List[float] = []
    block = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{block}:{text}".encode("utf-8")).digest()
        values.extend(number / 2**31 for number in struct.unpack("<8i", digest))
        block += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(value * value for value in values)) or 1.0
    return [value / norm for value in values]


def _seconds(extra: dict, key: str, default: float) -> float:
    return check_number(f"extra[{key!r}]", extra.get(key, default), 0, kind="a number of seconds")

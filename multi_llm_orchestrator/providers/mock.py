"""A provider that needs no network and no keys, for demos, tests and benchmarks.

It is a real provider: the Router treats it exactly like GigaChat (same path, same
errors, same metrics), so what works with mocks works with real backends.
"""

from __future__ import annotations

import json
import math
import random
import re
import struct
import threading
import time
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

from ..errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)
from ..capabilities import ALL_CAPABILITIES
from ..types import (
    Completion, Embeddings, GenerationParams, Message, Prompt, ReasoningDelta, StreamEnd, TextStream, TokenCount,
    ToolCall, Usage,
)
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
    "mock-tools",
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
    ``mock-tools``                tools, structured output and reasoning (below)
    ============================  ===================================================

    ``mock-tools`` shows the whole tool loop without keys. Given ``tools``, it answers
    with tool calls: one for each tool whose name (or a word of it) appears in the last
    user message, else the first tool (the one ``tool_choice`` names, if any), with
    arguments from ``extra["tool_arguments"][<tool name>]`` or sample values from the
    schema ("mock", 1, 1.0, true, the first enum value). Once the history ends with tool
    results it answers with text quoting them. With ``response_format`` it answers JSON
    (the schema's properties with sample values, or ``{"answer": ...}``); with
    ``reasoning_effort`` it also returns a short reasoning text (streamed apart).
    The other modes support plain text only (``capabilities`` is empty); the mock-tools
    mode declares every capability.

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
        self.tool_arguments = extra.get("tool_arguments") or {}
        if not isinstance(self.tool_arguments, dict) or not all(
                isinstance(value, dict) for value in self.tool_arguments.values()):
            raise ConfigurationError(
                f"extra['tool_arguments'] of {self.name!r} must map tool names to argument dicts"
            )
        if self.model == "mock-tools" and config.capabilities is None:
            self.capabilities = ALL_CAPABILITIES

    # Public interface ---------------------------------------------------------------

    def complete(
        self, messages: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None
    ) -> Completion:
        started = time.perf_counter()
        messages, params = self._prepare(messages, params)
        prompt = messages[-1].content
        text = self._answer(prompt, self._timeout(timeout))
        if self.model == "mock-tools":
            text, calls, reasoning = self._beyond_text(messages, params, text)
            return self._completion(text, started, usage=self._usage(messages, text),
                                    finish_reason="tool_calls" if calls else "stop", tool_calls=calls,
                                    reasoning=reasoning)
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
        if self.model == "mock-tools":
            text, calls, reasoning = self._beyond_text(messages, params, text)
            return self._text_stream(self._words(text, self._usage(messages, text), calls, reasoning))
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

    def _beyond_text(
        self, messages: List[Message], params: GenerationParams, text: str
    ) -> Tuple[str, List[ToolCall], Optional[str]]:
        """The mock-tools answer: (text, tool calls, reasoning)."""
        reasoning = None
        if params.reasoning_effort not in (None, "none"):
            reasoning = f"Mock reasoning ({params.reasoning_effort}) about: {_last_user(messages)}"
        results = []
        for message in reversed(messages):
            if message.role != "tool":
                break
            results.append(f"{message.name or message.tool_call_id}: {message.content}")
        if results:
            return "Mock answer from tool results: " + "; ".join(reversed(results)), [], reasoning
        if params.tools and params.tool_choice != "none":
            return "", self._tool_calls(params, _last_user(messages)), reasoning
        if params.response_format == "json":
            return json.dumps({"answer": text}), [], reasoning
        if params.response_format is not None:
            return json.dumps(_sample(params.response_format, text)), [], reasoning
        return text, [], reasoning

    def _tool_calls(self, params: GenerationParams, prompt: str) -> List[ToolCall]:
        tools = params.tools or []
        if params.tool_choice not in (None, "auto", "required"):
            chosen = [tool for tool in tools if tool.name == params.tool_choice]
        else:
            words = set(re.findall(r"\w+", prompt.lower()))
            chosen = [tool for tool in tools
                      if tool.name.lower() in words or words & set(tool.name.lower().split("_"))] or tools[:1]
        with self._calls_lock:
            start = self.calls
        return [
            ToolCall(f"call_mock_{start}_{index}", tool.name,
                     dict(self.tool_arguments.get(tool.name) or _sample(tool.parameters, prompt, required_only=True)))
            for index, tool in enumerate(chosen)
        ]

    def _words(
        self, text: str, usage: Usage, calls: Optional[List[ToolCall]] = None, reasoning: Optional[str] = None,
    ) -> Iterator[Union[str, ReasoningDelta, StreamEnd]]:
        if reasoning:
            for word in reasoning.split(" "):
                yield ReasoningDelta(word + " ")
        if calls:  # a tool-call answer has no text to stream
            yield StreamEnd(usage=usage, finish_reason="tool_calls", tool_calls=calls)
            return
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


def _last_user(messages: List[Message]) -> str:
    return next((m.content for m in reversed(messages) if m.role == "user"), "")


def _sample(schema: Any, text: str, required_only: bool = False) -> Any:
    """A value that fits ``schema`` (type, enum, object properties), for mock answers."""
    if not isinstance(schema, dict):
        return text
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        keys = schema.get("required") if required_only and schema.get("required") is not None else list(properties)
        return {key: _sample(properties.get(key), text) for key in keys}
    return {"string": "mock", "integer": 1, "number": 1.0, "boolean": True, "array": [], "null": None}.get(
        kind if isinstance(kind, str) else "", "mock")


def mock_vector(text: str, dimensions: int) -> List[float]:
    """A deterministic unit vector for ``text``: SHA-256 blocks read as numbers in [-1, 1).

    >>> mock_vector("hello", 4) == mock_vector("hello", 4)
    True
    """
    import hashlib  # here: loading OpenSSL is import time that only embeddings need

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

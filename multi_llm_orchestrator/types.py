"""Value types passed in and out of the Router: messages, parameters, usage, results.

All are dataclasses serialisable with dataclasses-json (``to_dict()``, ``to_json()``,
``from_dict()``).
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

from dataclasses_json import dataclass_json

from .errors import ConfigurationError, ResponseFormatError
from .validation import check_int, check_number

__all__ = [
    "Message",
    "GenerationParams",
    "Usage",
    "Attempt",
    "Completion",
    "Embeddings",
    "TokenCount",
    "StreamEnd",
    "RouterEvent",
    "TextStream",
    "Prompt",
    "to_messages",
]

logger = logging.getLogger("multi_llm_orchestrator.types")

ROLES = ("system", "user", "assistant")


@dataclass_json
@dataclass(frozen=True)
class Message:
    """One chat message. ``role`` is "system", "user" or "assistant".

    >>> Message("user", "What is Python?")
    Message(role='user', content='What is Python?')
    """

    role: str
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigurationError(
                f"Message role must be one of {', '.join(ROLES)}; got {self.role!r}"
            )
        if not isinstance(self.content, str):
            raise ConfigurationError(
                f"Message content must be a str; got {type(self.content).__name__}"
            )


Prompt = Union[str, Message, Dict[str, str], Sequence[Union[Message, Dict[str, str]]]]


class Messages(List[Message]):
    """A list of Messages already validated by ``to_messages`` (so the Router's check is
    not repeated by the provider)."""


def to_messages(prompt: Prompt) -> List[Message]:
    """Turn a plain string, a Message, a {"role", "content"} dict or a list of those into
    a validated, non-empty list of Messages.

    >>> to_messages("Hi")
    [Message(role='user', content='Hi')]
    """
    if isinstance(prompt, Messages):
        return prompt
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ConfigurationError("The prompt is empty: pass a non-empty string or messages")
        return Messages([Message("user", prompt)])
    if isinstance(prompt, (Message, dict)):
        prompt = [prompt]
    if isinstance(prompt, (bytes, bytearray)) or not isinstance(prompt, Sequence):
        raise ConfigurationError(
            "A prompt must be a str, a Message, a {'role', 'content'} dict or a list of them; "
            f"got {type(prompt).__name__}"
        )
    messages: List[Message] = []
    for index, item in enumerate(prompt):
        if isinstance(item, Message):
            messages.append(item)
        elif isinstance(item, dict):
            try:
                messages.append(Message(item["role"], item["content"]))
            except KeyError as missing:
                raise ConfigurationError(
                    f"Message #{index} lacks the key {missing}: each dict needs 'role' and 'content'"
                ) from None
        else:
            raise ConfigurationError(
                f"Message #{index} must be a Message or a dict; got {type(item).__name__}"
            )
    if not messages:
        raise ConfigurationError("The message list is empty: pass at least one user message")
    if not any(m.content.strip() for m in messages):
        raise ConfigurationError("Every message is empty: pass some text to answer")
    return Messages(messages)


@dataclass_json
@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters, validated on construction. ``None`` means the provider's default.

    ``extra`` carries provider-specific fields (e.g. ``{"repetition_penalty": 1.1}`` for
    GigaChat) and is passed through as is.

    >>> GenerationParams(temperature=0.7, max_tokens=256)
    GenerationParams(temperature=0.7, max_tokens=256, top_p=None, stop=None, extra={})
    """

    temperature: Optional[float] = None
    max_tokens: Optional[int] = None
    top_p: Optional[float] = None
    stop: Optional[List[str]] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_number("temperature", self.temperature, 0, 2, allow_none=True)
        check_int("max_tokens", self.max_tokens, 0, low_open=True, allow_none=True)
        check_number("top_p", self.top_p, 0, 1, low_open=True, allow_none=True)
        if self.stop is not None:
            stop = [self.stop] if isinstance(self.stop, str) else self.stop
            if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
                raise ConfigurationError(f"stop must be a str or a list of str; got {self.stop!r}")
            object.__setattr__(self, "stop", list(stop))
        if not isinstance(self.extra, dict):
            raise ConfigurationError(f"extra must be a dict; got {type(self.extra).__name__}")


@dataclass_json
@dataclass(frozen=True)
class Usage:
    """Token counts as reported by the provider (0 where it reported nothing)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, prompt_tokens: Any, completion_tokens: Any, total_tokens: Any = None) -> "Usage":
        """Build from loosely typed values (strings, None), computing a missing total;
        zeros when a value is not a token count (see ``parse``)."""
        return cls.parse(prompt_tokens, completion_tokens, total_tokens) or cls()

    @classmethod
    def parse(
        cls, prompt_tokens: Any, completion_tokens: Any, total_tokens: Any = None, *, provider: Optional[str] = None
    ) -> "Optional[Usage]":
        """Usage from a provider's wire values, or None (usage unknown) when any of them
        is not a whole number in [0, MAX_TOKEN_COUNT]: ``1e400``, ``-5000``, ``"abc"``,
        ``true``. None (absent) counts as 0, digit strings are read (YandexGPT sends
        int64 as strings). What was rejected is logged at DEBUG.

        >>> Usage.parse("19", 4), Usage.parse(-5000, 4)
        (Usage(prompt_tokens=19, completion_tokens=4, total_tokens=23), None)
        """
        prompt, completion = _token_count(prompt_tokens), _token_count(completion_tokens)
        total = _token_count(total_tokens) if total_tokens is not None else None
        if prompt is None or completion is None or (total_tokens is not None and total is None):
            logger.debug(
                "provider %r reported usage that is not token counts (prompt %.40r, completion %.40r, "
                "total %.40r): usage treated as unknown", provider, prompt_tokens, completion_tokens, total_tokens,
                extra={"provider": provider},
            )
            return None
        return cls(prompt, completion, prompt + completion if total is None else total)

    @property
    def plausible(self) -> bool:
        """Whether every count is a whole number in [0, MAX_TOKEN_COUNT] (what metrics add up)."""
        return all(
            _token_count(value) is not None and not isinstance(value, str)
            for value in (self.prompt_tokens, self.completion_tokens, self.total_tokens)
        )


#: No answer reports more tokens than this: a larger count comes from a broken or hostile
#: server, and summed over days it would make costs and Prometheus floats overflow.
MAX_TOKEN_COUNT = 10**12


def _token_count(value: Any) -> Optional[int]:
    """``value`` as a token count (None: absent -> 0), or None when it is not one."""
    if value is None:
        return 0
    if isinstance(value, str):
        text = value.strip()
        # isascii: "²".isdigit() is True; the length bound keeps int() away from 5,000 digits.
        value = int(text) if text.isascii() and text.isdigit() and len(text) <= 13 else None
    elif isinstance(value, float):
        value = int(value) if math.isfinite(value) and value.is_integer() else None
    elif isinstance(value, bool) or not isinstance(value, int):
        value = None
    return value if value is not None and 0 <= value <= MAX_TOKEN_COUNT else None


@dataclass_json
@dataclass(frozen=True)
class Attempt:
    """One provider tried during one Router call.

    ``outcome`` is "ok", "error", "lost" (a hedge race it did not win) or "skipped"
    (circuit open, or left out when the call was planned: ``error`` then says why, e.g.
    the prompt does not fit the provider's context window); ``hedge`` is True for an
    attempt started by hedging.
    """

    provider: str
    outcome: str
    latency_s: float = 0.0
    error: Optional[str] = None
    error_type: Optional[str] = None
    hedge: bool = False


@dataclass_json
@dataclass(frozen=True)
class Completion:
    """The result of one call: the text and where and how it was produced."""

    text: str
    provider: str
    model: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: Optional[str] = None
    latency_s: float = 0.0
    attempts: List[Attempt] = field(default_factory=list)
    #: True when the answer came from the response cache (no provider was called).
    cached: bool = False

    def __str__(self) -> str:
        return self.text


@dataclass_json
@dataclass(frozen=True)
class Embeddings:
    """Vectors for a list of texts, in the order of the texts, and where they came from.

    ``provider`` made the vectors (when the batches of a large input were spread over
    several providers of one embedding space: the one that made most of them; ``attempts``
    lists every provider tried for every batch). ``space`` is the embedding space;
    vectors of different spaces must never be compared. Iterating, ``len()`` and indexing
    go to ``vectors``.

    >>> result = router.embed(["first text", "second text"])          # doctest: +SKIP
    >>> len(result), len(result[0]), result.provider
    (2, 1024, 'giga')
    """

    vectors: List[List[float]]
    provider: str
    model: str
    usage: Usage = field(default_factory=Usage)
    space: Optional[str] = None
    latency_s: float = 0.0
    attempts: List[Attempt] = field(default_factory=list)

    @property
    def dimensions(self) -> int:
        """The length of each vector (0 when there are none)."""
        return len(self.vectors[0]) if self.vectors else 0

    def __len__(self) -> int:
        return len(self.vectors)

    def __iter__(self) -> Iterator[List[float]]:  # type: ignore[override]
        return iter(self.vectors)

    def __getitem__(self, index: int) -> List[float]:
        return self.vectors[index]

    def __repr__(self) -> str:
        return (f"Embeddings({len(self.vectors)} x {self.dimensions}, provider={self.provider!r}, "
                f"model={self.model!r}, space={self.space!r})")


class TokenCount(int):
    """A number of tokens that says how it was obtained.

    It is an ``int``; ``estimated`` is True when it is the library's estimate (the
    provider has no counting API, see ``tokens.estimate_tokens``) rather than the
    provider's own count; ``provider`` names who counted.

    >>> TokenCount(42, estimated=True)
    TokenCount(42, estimated=True)
    >>> TokenCount(42, estimated=True) + 1
    43
    """

    estimated: bool
    provider: Optional[str]

    def __new__(cls, value: int, *, estimated: bool = False, provider: Optional[str] = None) -> "TokenCount":
        count = super().__new__(cls, value)
        count.estimated = estimated
        count.provider = provider
        return count

    def __reduce__(self):  # keep the marks through pickling and copying
        return (_rebuild_token_count, (int(self), self.estimated, self.provider))

    def __repr__(self) -> str:
        return f"TokenCount({int(self)}, estimated={self.estimated})"


def _rebuild_token_count(value: int, estimated: bool, provider: Optional[str]) -> TokenCount:
    return TokenCount(value, estimated=estimated, provider=provider)


@dataclass(frozen=True)
class RouterEvent:
    """What ``Router.add_listener`` callbacks receive.

    ``kind`` is "attempt" (one provider tried; ``outcome`` "ok", "error" or "lost") or
    "call" (one Router call finished; ``outcome`` "ok" or "error", ``attempts`` counts the
    providers tried). ``error`` is the exception's message, never a secret.
    """

    kind: str
    provider: Optional[str]
    model: Optional[str]
    outcome: str
    latency_s: float
    error_type: Optional[str] = None
    error: Optional[str] = None
    usage: Optional[Usage] = None
    hedge: bool = False
    attempts: int = 1
    streaming: bool = False


@dataclass(frozen=True)
class StreamEnd:
    """Yielded last by a provider's stream generator: what the provider reported at the end."""

    usage: Optional[Usage] = None
    finish_reason: Optional[str] = None
    model: Optional[str] = None


class TextStream(Iterator[str]):
    """An iterator of text chunks that remembers what the stream reported.

    Iterate it to receive text as it arrives. Once exhausted, ``text`` holds the whole
    text, ``usage`` and ``finish_reason`` what the provider reported, and ``provider`` who
    answered. ``close()`` (or leaving a ``with`` block) releases the connection early.

    >>> for chunk in router.route_stream("Tell me a story"):    # doctest: +SKIP
    ...     print(chunk, end="", flush=True)
    """

    def __init__(
        self,
        events: Iterator[Union[str, StreamEnd]],
        *,
        provider: str,
        model: str,
        on_close: Optional[Callable[[], None]] = None,
    ) -> None:
        self._events = events
        self._on_close = on_close
        self._lock = threading.Lock()
        self._parts: List[str] = []
        self.provider = provider
        self.model = model
        self.usage: Optional[Usage] = None
        self.finish_reason: Optional[str] = None
        #: Set by ``Router.route_stream``: the providers tried before this one answered.
        self.attempts: List[Attempt] = []
        #: True when the stream replays a cached answer.
        self.cached = False
        self.done = False

    def __iter__(self) -> "TextStream":
        return self

    def __next__(self) -> str:
        while True:
            try:
                event = next(self._events)
            except StopIteration:
                self._finish()
                raise
            except BaseException:
                self._finish()
                raise
            if isinstance(event, StreamEnd):
                if event.usage is not None:
                    self.usage = event.usage
                if event.finish_reason is not None:
                    self.finish_reason = event.finish_reason
                if event.model:
                    self.model = event.model
                continue
            if not isinstance(event, str):  # a provider passing on a server's 123 or [...]
                self._finish()
                raise ResponseFormatError(
                    f"the stream yielded a {type(event).__name__}, not text", provider=self.provider
                )
            if event:
                self._parts.append(event)
                return event

    @property
    def text(self) -> str:
        """The text received so far (all of it once the stream is exhausted)."""
        return "".join(self._parts)

    def _finish(self) -> None:
        with self._lock:
            if self.done:
                return
            self.done = True
        close = getattr(self._events, "close", None)
        if close is not None:
            close()
        if self._on_close is not None:
            self._on_close()

    def close(self) -> None:
        """Stop the stream early and release its connection."""
        self._finish()

    def __enter__(self) -> "TextStream":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:  # a stream dropped half-read still releases its connection
        try:
            if not self.done:
                self._finish()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"TextStream(provider={self.provider!r}, model={self.model!r}, done={self.done})"


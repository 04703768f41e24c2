"""The interface every provider implements."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Dict, FrozenSet, Iterator, List, Optional, Sequence, Tuple, Union

from .. import forking
from ..config import ProviderConfig
from ..errors import ConfigurationError, NotSupportedError, ResponseFormatError
from ..records import FrozenRecord
from ..types import (
    Completion, Embeddings, GenerationParams, Message, Prompt, ReasoningDelta, StreamEnd, TextStream, TokenCount,
    to_messages,
)
from ..validation import check_int

if TYPE_CHECKING:
    from ..auth import TokenCache

__all__ = ["BaseProvider", "ProviderConfig", "EmbeddingLimits", "PURPOSES", "model_override",
           "report_health_failure", "take_health_failure"]

#: What the texts given to ``embed`` are: documents to index, or search queries
#: (YandexGPT has a model for each; the others embed both alike).
PURPOSES = ("document", "query")
_STR_ONLY = {str}
#: (provider, model) while one call runs that provider with another model (``model_override``).
_MODEL_OVERRIDE: "contextvars.ContextVar[Optional[Tuple[BaseProvider, str]]]" = contextvars.ContextVar(
    "mlo_model_override", default=None
)


#: Why the last health check on this thread said "unhealthy" (``report_health_failure``).
_HEALTH_FAILURE = threading.local()


def report_health_failure(reason: str) -> None:
    """Called by a ``health_check`` about to return False: why, e.g. "AuthenticationError:
    ...". The health checker reads it on the same thread and shows it in its report, so
    ``health`` says why a provider is unhealthy without ``health_check`` raising."""
    _HEALTH_FAILURE.reason = reason


def take_health_failure() -> Optional[str]:
    """The reason reported on this thread since the last call (None if none), cleared."""
    reason = getattr(_HEALTH_FAILURE, "reason", None)
    _HEALTH_FAILURE.reason = None
    return reason


@contextlib.contextmanager
def model_override(provider: "BaseProvider", model: str) -> Iterator[None]:
    """``provider.model`` is ``model`` in this thread's context until the block ends
    (``Router.complete(..., provider=..., model=...)``: one call, no shared state changed)."""
    token = _MODEL_OVERRIDE.set((provider, model))
    try:
        yield
    finally:
        _MODEL_OVERRIDE.reset(token)


class EmbeddingLimits(FrozenRecord):
    """How many texts, and how many characters in all, one ``embed`` request may carry.

    The Router splits a large input into batches within these limits (the strictest of
    the providers of one embedding space). ``ProviderConfig.extra`` keys
    ``embedding_batch_size`` and ``embedding_batch_chars`` override a type's defaults.
    """

    max_texts: int
    max_chars: int

    def __init__(self, max_texts: int, max_chars: int) -> None:
        state = self.__dict__
        state["max_texts"] = max_texts
        state["max_chars"] = max_chars


class BaseProvider(ABC):
    """One LLM backend behind a common, blocking, thread-safe interface.

    Subclasses implement ``complete``, ``stream`` and ``health_check``; all raise only
    ``ProviderError`` subclasses (``ConfigurationError`` for bad input). ``timeout`` in
    seconds overrides ``config.timeout`` for one call; the Router passes the time left of
    its own budget there.

    >>> provider = MockProvider(ProviderConfig(name="mock"))          # doctest: +SKIP
    >>> provider.generate("Hello")
    'Mock response to: Hello'
    """

    #: Model used when ``config.model`` is empty.
    default_model: ClassVar[str] = ""
    #: Name under which configuration files refer to this provider type.
    type_name: ClassVar[str] = ""
    #: What this provider type supports beyond plain text (see ``capabilities.py``);
    #: ``ProviderConfig.capabilities`` replaces it for one provider.
    declared_capabilities: ClassVar[FrozenSet[str]] = frozenset()
    #: Batch limits of the provider's embeddings API; None: it has none (``embed``
    #: raises NotSupportedError and the Router never asks it for vectors).
    embedding_limits: ClassVar[Optional[EmbeddingLimits]] = None
    #: Model ``embed`` uses when ``config.embedding_model`` is empty ("" = ``model``).
    default_embedding_model: ClassVar[str] = ""
    #: True where ``balance()`` is implemented.
    supports_balance: ClassVar[bool] = False

    def __init__(self, config: ProviderConfig) -> None:
        if not isinstance(config, ProviderConfig):
            raise ConfigurationError(
                f"{type(self).__name__} takes a ProviderConfig; got {type(config).__name__}"
            )
        self.config = config
        forking.register(self)  # locks (and an HttpProvider's Session) renewed in a forked child
        #: What this provider supports beyond plain text: the config's override, else the
        #: type's declaration. The Router plans tool, structured-output and reasoning calls by it.
        self.capabilities: FrozenSet[str] = (
            frozenset(config.capabilities) if config.capabilities is not None else self.declared_capabilities
        )

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def model(self) -> str:
        override = _MODEL_OVERRIDE.get()
        if override is not None and override[0] is self:
            return override[1]
        return self.config.model or self.default_model

    @abstractmethod
    def complete(
        self, messages: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None
    ) -> Completion:
        """Generate a whole answer."""

    @abstractmethod
    def stream(
        self, messages: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None
    ) -> TextStream:
        """Generate an answer as text chunks, as they arrive."""

    @abstractmethod
    def health_check(self, timeout: Optional[float] = None) -> bool:
        """True when the provider answers and accepts our credentials; never raises."""

    def embed(
        self, texts: Sequence[str], *, purpose: Optional[str] = None, timeout: Optional[float] = None
    ) -> Embeddings:
        """Vectors of ``texts`` (a list of non-empty strings), in the same order.

        ``purpose`` is "document" (texts to index) or "query" (search queries); only
        providers with a model per purpose (YandexGPT) use it. Raises NotSupportedError
        where the provider has no embeddings API. One request (or, for YandexGPT, one
        request per text): the Router does the batching of large inputs.
        """
        raise NotSupportedError(
            f"{type(self).__name__} {self.name!r} has no embeddings API; use a GigaChat, YandexGPT, "
            "Ollama, OpenAI-compatible or Mock provider", provider=self.name, operation="embed",
        )

    def count_tokens(self, prompt: Prompt, *, timeout: Optional[float] = None) -> TokenCount:
        """The prompt's size in tokens: the provider's own count where its API has one
        (GigaChat, YandexGPT), else the library's estimate (``TokenCount.estimated`` is
        True; see ``multi_llm_orchestrator.tokens``)."""
        from ..tokens import estimate_tokens

        return estimate_tokens(to_messages(prompt), provider=self.name)

    def balance(self, *, timeout: Optional[float] = None) -> Dict[str, float]:
        """Tokens left on the account, per model family (GigaChat's prepaid packages).
        Raises NotSupportedError where the provider has no such API."""
        raise NotSupportedError(
            f"{type(self).__name__} {self.name!r} has no balance API (only GigaChat has one)",
            provider=self.name, operation="balance",
        )

    @property
    def supports_embeddings(self) -> bool:
        return self.embedding_limits is not None

    @property
    def embedding_model(self) -> str:
        """The model ``embed`` uses."""
        return self.config.embedding_model or self.default_embedding_model or self.model

    @property
    def embedding_space(self) -> Optional[str]:
        """The vector space of this provider's embeddings (None without embeddings):
        ``config.embedding_space``, else ``"<type>:<embedding model>"`` (plus
        ``:<dimensions>`` when ``extra["dimensions"]`` truncates the vectors)."""
        if not self.supports_embeddings:
            return None
        if self.config.embedding_space:
            return self.config.embedding_space
        kind = self.type_name or type(self).__name__
        dimensions = self.config.extra.get("dimensions")
        suffix = f":{dimensions}" if dimensions is not None else ""
        return f"{kind}:{self.embedding_model}{suffix}"

    def batch_limits(self) -> EmbeddingLimits:
        """The type's ``embedding_limits`` with the ``extra`` overrides applied."""
        limits = self.embedding_limits
        if limits is None:
            raise NotSupportedError(f"{self.name!r} has no embeddings API", provider=self.name, operation="embed")
        extra = self.config.extra
        texts = check_int(f"extra['embedding_batch_size'] of {self.name!r}",
                          extra.get("embedding_batch_size", limits.max_texts), 1)
        chars = check_int(f"extra['embedding_batch_chars'] of {self.name!r}",
                          extra.get("embedding_batch_chars", limits.max_chars), 1)
        return EmbeddingLimits(texts, chars)

    def generate(self, prompt: Prompt, params: Optional[GenerationParams] = None) -> str:
        """Shortcut: the text of ``complete(prompt, params)``."""
        return self.complete(prompt, params).text

    def list_models(self, timeout: Optional[float] = None) -> List[str]:
        """Models the provider offers, where it can list them (else just the configured one)."""
        return [self.model]

    def token_sharing(self) -> "Optional[Tuple[TokenCache, str, Optional[str]]]":
        """What a shared ``State`` needs to share this provider's bearer token with other
        processes: the ``TokenCache``, a string naming the credential (the state stores
        only its hash) and the secret to encrypt stored tokens with (None: the state's
        ``token_secret``). None (the default) when the provider has no refreshable token."""
        return None

    def close(self) -> None:
        """Release connections. The provider must not be used afterwards."""

    def __enter__(self) -> "BaseProvider":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, model={self.model!r})"

    # Helpers for subclasses -------------------------------------------------------

    def _timeout(self, timeout: Optional[float]) -> float:
        """The timeout of one call: the caller's, capped by the configured one."""
        if timeout is None:
            return float(self.config.timeout)
        return max(0.001, min(float(timeout), float(self.config.timeout)))

    @staticmethod
    def _prepare(messages: Prompt, params: Optional[GenerationParams]) -> "tuple[List[Message], GenerationParams]":
        if params is None:
            params = GenerationParams()
        elif not isinstance(params, GenerationParams):
            raise ConfigurationError(
                f"params must be a GenerationParams; got {type(params).__name__}"
            )
        return to_messages(messages), params

    @staticmethod
    def _embedding_input(texts: Any, purpose: Optional[str] = None) -> List[str]:
        """``texts`` checked for ``embed``: a str is one text; each must be a non-empty str."""
        if purpose is not None and purpose not in PURPOSES:
            raise ConfigurationError(f"purpose must be one of {', '.join(PURPOSES)} or None; got {purpose!r}")
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Sequence):
            raise ConfigurationError(f"texts must be a list of str; got {type(texts).__name__}")
        if not texts:
            raise ConfigurationError("texts is empty: pass at least one text to embed")
        if set(map(type, texts)) == _STR_ONLY and all(texts):  # the common case, at C speed
            return list(texts)
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise ConfigurationError(f"texts[{index}] must be a str; got {type(text).__name__}")
            if not text:
                raise ConfigurationError(
                    f"texts[{index}] is an empty string: providers refuse it or return no vector; drop it first"
                )
        return list(texts)

    def _embeddings(self, vectors: List[List[float]], started: float, **fields: Any) -> Embeddings:
        """An Embeddings by this provider; ``model`` falls back to the embedding model."""
        fields["model"] = fields.get("model") or self.embedding_model
        return Embeddings(
            vectors=vectors, provider=self.name, space=self.embedding_space,
            latency_s=time.perf_counter() - started, **fields,
        )

    def _text_stream(self, events: Iterator[Union[str, ReasoningDelta, StreamEnd]], **kwargs: Any) -> TextStream:
        """A TextStream of ``events``; ``kwargs`` (``on_close``) go to TextStream."""
        return TextStream(events, provider=self.name, model=self.model, **kwargs)

    def _completion(self, text: str, started: float, **fields: Any) -> Completion:
        """A Completion by this provider; ``model`` falls back to the configured one."""
        fields["model"] = fields.get("model") or self.model
        if not isinstance(text, str):  # a server's content: 123 passed on unchecked
            raise ResponseFormatError(f"the answer's text is a {type(text).__name__}, not a str", provider=self.name)
        return Completion(
            text=text, provider=self.name, latency_s=time.perf_counter() - started, **fields
        )

"""The interface every provider implements."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, List, Optional, Tuple, Union

from ..config import ProviderConfig

if TYPE_CHECKING:
    from ..auth import TokenCache
from ..errors import ConfigurationError
from ..types import Completion, GenerationParams, Message, Prompt, StreamEnd, TextStream, to_messages

__all__ = ["BaseProvider", "ProviderConfig"]


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

    def __init__(self, config: ProviderConfig) -> None:
        if not isinstance(config, ProviderConfig):
            raise ConfigurationError(
                f"{type(self).__name__} takes a ProviderConfig; got {type(config).__name__}"
            )
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def model(self) -> str:
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

    def _text_stream(self, events: Iterator[Union[str, StreamEnd]], **kwargs: Any) -> TextStream:
        """A TextStream of ``events``; ``kwargs`` (``on_close``) go to TextStream."""
        return TextStream(events, provider=self.name, model=self.model, **kwargs)

    def _completion(self, text: str, started: float, **fields: Any) -> Completion:
        """A Completion by this provider; ``model`` falls back to the configured one."""
        fields["model"] = fields.get("model") or self.model
        return Completion(
            text=text, provider=self.name, latency_s=time.perf_counter() - started, **fields
        )

"""LangChain chat model over a Router or one provider (optional extra: ``pip install 'multi-llm-orchestrator[langchain]'``).

``ChatRouter`` is a ``BaseChatModel``: ``invoke``, ``stream``, ``batch`` and the async
variants (which run the blocking path in a thread, LangChain's default) go through the
Router, with its fallback, breakers, hedging and deadline::

    from multi_llm_orchestrator.langchain import ChatRouter

    chat = ChatRouter(router=router, temperature=0.2, max_tokens=300)
    reply = chat.invoke("What is Python?")
    reply.response_metadata["provider"]       # who answered, e.g. "giga"
    reply.usage_metadata                      # {"input_tokens": ..., "output_tokens": ..., ...}

    ChatRouter(provider=GigaChatProvider(...))    # one provider, no Router
    ChatRouter()                                  # Router.from_config($MULTI_LLM_ORCHESTRATOR_CONFIG)

``response_metadata`` holds ``model_name`` (the model that answered), ``provider`` (its
name in the Router), ``finish_reason``, ``latency_s`` and ``attempts`` (every provider
tried, as dicts of ``Attempt``).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

try:
    from langchain_core.callbacks import CallbackManagerForLLMRun
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import (
        AIMessage,
        AIMessageChunk,
        BaseMessage,
        ChatMessage,
        HumanMessage,
        SystemMessage,
    )
    from langchain_core.messages.ai import UsageMetadata
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from pydantic import ConfigDict, Field, model_validator
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "multi_llm_orchestrator.langchain needs langchain-core: pip install 'multi-llm-orchestrator[langchain]'"
    ) from exc

from .cli import CONFIG_ENV
from .errors import AllProvidersFailedError, ConfigurationError, DeadlineExceededError, ProviderError
from .providers.base import BaseProvider
from .router import Router
from .types import Completion, GenerationParams, Message, TextStream, Usage
from .validation import check_int, check_number

__all__ = ["ChatRouter", "to_router_messages"]

#: Keyword arguments one call may take (``invoke(..., temperature=0)``, ``bind(...)``).
CALL_KEYWORDS = ("temperature", "max_tokens", "top_p", "timeout")
LS_PROVIDER = "multi_llm_orchestrator"


class ChatRouter(BaseChatModel):
    """A LangChain chat model that answers through a ``Router`` (or a single provider).

    Give exactly one of ``router``, ``provider`` or ``config`` (a configuration dict or
    JSON file path for ``Router.from_config``); with none, ``$MULTI_LLM_ORCHESTRATOR_CONFIG``
    names the file. ``temperature``, ``max_tokens``, ``top_p`` and ``stop`` are validated
    as ``GenerationParams``; ``timeout`` (seconds) bounds each call, fallbacks included;
    ``max_retries`` repeats a call that failed only with retryable errors (rate limits,
    unavailable servers, timeouts) as a new Router call, at once.

    >>> chat = ChatRouter(router=router)                                # doctest: +SKIP
    >>> chat.invoke("Hi").content
    'Mock response to: Hi'
    """

    # Unknown constructor arguments are an error rather than silently dropped (a typo,
    # or an ``api_key``: keys belong in each provider's ProviderConfig).
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    router: Optional[Any] = Field(default=None, exclude=True)
    provider: Optional[Any] = Field(default=None, exclude=True)
    config: Optional[Any] = Field(default=None, exclude=True)
    temperature: Optional[float] = None
    max_tokens: Optional[int] = None
    top_p: Optional[float] = None
    stop: Optional[List[str]] = None
    timeout: Optional[float] = None
    max_retries: Optional[int] = None
    streaming: bool = False
    """Stream internally even on ``invoke`` (LangChain's standard flag)."""

    @model_validator(mode="after")
    def _check(self) -> "ChatRouter":
        given = [name for name in ("router", "provider", "config") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ConfigurationError(f"Give ChatRouter one of router, provider or config; got {', '.join(given)}")
        if self.router is not None and not isinstance(self.router, Router):
            raise ConfigurationError(f"router must be a multi_llm_orchestrator Router; got {type(self.router).__name__}")
        if self.provider is not None and not isinstance(self.provider, BaseProvider):
            raise ConfigurationError(
                f"provider must be a BaseProvider (e.g. GigaChatProvider(...)); got {type(self.provider).__name__}"
            )
        if not given:
            source = os.environ.get(CONFIG_ENV)
            if not source:
                raise ConfigurationError(
                    f"ChatRouter needs router=Router(...), provider=..., config='router.json', "
                    f"or ${CONFIG_ENV} naming a configuration file"
                )
            self.config = source
        if self.config is not None:
            self.router = Router.from_config(self.config)
        self._params(self.temperature, self.max_tokens, self.top_p, self.stop)
        check_number("timeout", self.timeout, 0, low_open=True, allow_none=True, kind="a number of seconds")
        check_int("max_retries", self.max_retries, 0, allow_none=True)
        return self

    # What LangChain asks of a chat model ------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "multi-llm-orchestrator"

    @property
    def model_name(self) -> str:
        """The provider's model, or "router" when a Router picks one per call."""
        return self.provider.model if self.provider is not None else "router"

    @property
    def _identifying_params(self) -> Dict[str, Any]:
        return {
            "providers": [p.name for p in self._providers()],
            "temperature": self.temperature, "max_tokens": self.max_tokens, "top_p": self.top_p,
        }

    def _get_ls_params(self, stop: Optional[List[str]] = None, **kwargs: Any) -> Dict[str, Any]:
        params: Dict[str, Any] = {
            "ls_provider": LS_PROVIDER,
            "ls_model_name": kwargs.get("model") if isinstance(kwargs.get("model"), str) else self.model_name,
            "ls_model_type": "chat",
        }
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        stop = stop or self.stop
        if stop:
            params["ls_stop"] = stop
        return params

    def _generate(
        self,
        messages: List[BaseMessage],
        stop: Optional[List[str]] = None,
        run_manager: Optional[CallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> ChatResult:
        prompt, params, timeout = self._request(messages, stop, kwargs)
        backend = self.provider if self.provider is not None else self.router
        completion: Completion = self._retrying(lambda: backend.complete(prompt, params, timeout=timeout))
        message = AIMessage(
            content=completion.text,
            usage_metadata=_usage_metadata(completion.usage),
            response_metadata=_response_metadata(completion.model, completion.provider, completion.finish_reason,
                                                 completion.latency_s, completion.attempts),
        )
        return ChatResult(generations=[ChatGeneration(message=message, generation_info={"finish_reason": completion.finish_reason})])

    def _stream(
        self,
        messages: List[BaseMessage],
        stop: Optional[List[str]] = None,
        run_manager: Optional[CallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        prompt, params, timeout = self._request(messages, stop, kwargs)
        if self.provider is not None:
            stream: TextStream = self._retrying(lambda: self.provider.stream(prompt, params, timeout=timeout))
        else:
            stream = self._retrying(lambda: self.router.route_stream(prompt, params, timeout=timeout))
        with stream:  # a consumer that stops early releases the connection
            for text in stream:
                # LangChain reports each yielded chunk to the callbacks (on_llm_new_token) itself.
                yield ChatGenerationChunk(message=AIMessageChunk(content=text))
        # The last chunk carries what is known only at the end: usage, finish reason, model.
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=_usage_metadata(stream.usage),
                response_metadata=_response_metadata(stream.model, stream.provider, stream.finish_reason, None,
                                                     stream.attempts),
                chunk_position="last",
            ),
            generation_info={"finish_reason": stream.finish_reason},
        )

    # Requests -------------------------------------------------------------------------

    def _request(
        self, messages: Sequence[BaseMessage], stop: Optional[List[str]], kwargs: Dict[str, Any]
    ) -> Tuple[List[Message], GenerationParams, Optional[float]]:
        unknown = sorted(set(kwargs) - set(CALL_KEYWORDS))
        if unknown:
            raise ConfigurationError(
                f"ChatRouter does not take {', '.join(unknown)} per call; valid: stop, {', '.join(CALL_KEYWORDS)}"
            )
        params = self._params(
            kwargs.get("temperature", self.temperature),
            kwargs.get("max_tokens", self.max_tokens),
            kwargs.get("top_p", self.top_p),
            stop if stop is not None else self.stop,
        )
        timeout = kwargs.get("timeout", self.timeout)
        check_number("timeout", timeout, 0, low_open=True, allow_none=True, kind="a number of seconds")
        return to_router_messages(messages), params, timeout

    @staticmethod
    def _params(temperature: Any, max_tokens: Any, top_p: Any, stop: Any) -> GenerationParams:
        # An empty stop list means "no stop sequence"; some servers reject "stop": [].
        return GenerationParams(temperature=temperature, max_tokens=max_tokens, top_p=top_p, stop=stop or None)

    def _retrying(self, call: Any) -> Any:
        retries = self.max_retries or 0
        while True:
            try:
                return call()
            except (ProviderError, AllProvidersFailedError) as error:
                if retries <= 0 or not _retryable(error):
                    raise
                retries -= 1

    def _providers(self) -> List[BaseProvider]:
        return [self.provider] if self.provider is not None else list(self.router.providers)


def to_router_messages(messages: Sequence[BaseMessage]) -> List[Message]:
    """LangChain messages as the Router's ``Message`` list; text content only."""
    converted: List[Message] = []
    for index, message in enumerate(messages):
        converted.append(Message(_role(message, index), _text(message, index)))
    return converted


def _role(message: BaseMessage, index: int) -> str:
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, ChatMessage) and message.role in ("system", "user", "assistant"):
        return message.role
    raise ConfigurationError(
        f"Message #{index} is a {type(message).__name__}; ChatRouter takes system, human and AI messages"
    )


def _text(message: BaseMessage, index: int) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts: List[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise ConfigurationError(
                f"Message #{index} has a {kind!r} content block; the Router's providers take text only"
            )
    return "".join(parts)


def _retryable(error: Exception) -> bool:
    if isinstance(error, DeadlineExceededError):
        return False  # the caller's time is spent: retrying would overrun it
    if isinstance(error, AllProvidersFailedError):
        return bool(error.errors) and all(e.retryable for e in error.errors)
    return bool(getattr(error, "retryable", False))


def _usage_metadata(usage: Optional[Usage]) -> Optional[UsageMetadata]:
    if usage is None:
        return None
    return UsageMetadata(
        input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens, total_tokens=usage.total_tokens
    )


def _response_metadata(
    model: str, provider: str, finish_reason: Optional[str], latency_s: Optional[float], attempts: Sequence[Any]
) -> Dict[str, Any]:
    metadata: Dict[str, Any] = {"model_name": model, "provider": provider, "finish_reason": finish_reason}
    if latency_s is not None:
        metadata["latency_s"] = latency_s
    metadata["attempts"] = [attempt.to_dict() for attempt in attempts]
    return metadata

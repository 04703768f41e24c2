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

Per call, ``model=`` asks for another model and ``provider=``/``providers=`` pin the call
(the Router's call options, ``call_options.py``)::

    chat.invoke("Hi", provider="giga", model="GigaChat-Pro")
    ChatRouter(router=router, provider="giga").invoke("Hi", model="GigaChat-Pro")  # every call pinned

``model=`` needs the call pinned to one provider, as for ``Router.complete``: by
``provider=`` per call, by ``ChatRouter(router=..., provider="name")``, or by the Router
having one provider; otherwise it is a ``ConfigurationError`` (a model name means
something to one provider only, so it is never sent to whichever provider the Router picks).

``response_metadata`` holds ``model_name`` (the model that answered), ``provider`` (its
name in the Router), ``finish_reason``, ``latency_s`` and ``attempts`` (every provider
tried, as dicts of ``Attempt``).

``RouterEmbeddings`` is LangChain's ``Embeddings`` over ``router.embed`` (one embedding
space, batches, failover within the space) or over one provider's ``embed``::

    vectors = RouterEmbeddings(router=router).embed_documents(["first text", "second"])
"""

from __future__ import annotations

import json
import os
from operator import itemgetter
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

try:
    from langchain_core.callbacks import CallbackManagerForLLMRun
    from langchain_core.embeddings import Embeddings as LangChainEmbeddings
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import (
        AIMessage,
        AIMessageChunk,
        BaseMessage,
        ChatMessage,
        HumanMessage,
        SystemMessage,
        ToolMessage,
    )
    from langchain_core.messages.ai import UsageMetadata
    from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
    from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
    from langchain_core.utils.pydantic import is_basemodel_subclass
    from pydantic import BaseModel, ConfigDict, Field, model_validator
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "multi_llm_orchestrator.langchain needs langchain-core: pip install 'multi-llm-orchestrator[langchain]'"
    ) from exc

from .cli import CONFIG_ENV
from .call_options import CallOptions
from .errors import AllProvidersFailedError, ConfigurationError, DeadlineExceededError, ProviderError
from .providers.base import BaseProvider, model_override
from .router import Router
from .types import Completion, GenerationParams, Message, ReasoningDelta, TextStream, Tool, ToolCall, Usage
from .validation import check_int, check_number

__all__ = ["ChatRouter", "RouterEmbeddings", "to_router_messages"]

#: Keyword arguments one call may take (``invoke(..., temperature=0)``, ``bind(...)``);
#: ``tools``/``tool_choice`` come from ``bind_tools``, ``response_format`` from
#: ``with_structured_output``.
CALL_KEYWORDS = ("temperature", "max_tokens", "top_p", "timeout", "reasoning_effort", "tools", "tool_choice",
                 "response_format")
#: Per-call keywords that choose where the call goes and with which model (the Router's
#: ``provider=``/``providers=``/``model=`` call options).
PIN_KEYWORDS = ("provider", "providers", "model")
#: What LangChain itself may pass along with a call (tracing metadata): not for the provider.
LANGCHAIN_KEYWORDS = ("ls_structured_output_format",)
STRUCTURED_METHODS = ("json_schema", "function_calling", "json_mode")
LS_PROVIDER = "multi_llm_orchestrator"


class ChatRouter(BaseChatModel):
    """A LangChain chat model that answers through a ``Router`` (or a single provider).

    Give exactly one of ``router``, ``provider`` or ``config`` (a configuration dict or
    JSON file path for ``Router.from_config``); with none, ``$MULTI_LLM_ORCHESTRATOR_CONFIG``
    names the file. With a Router (given, or built from a config), ``provider`` may instead
    be the name of one of its providers: every call is pinned to it (fallback, breakers and
    deadline still apply) unless the call says ``provider=``/``providers=`` itself; per-call
    ``model=`` then needs no per-call pin. ``temperature``, ``max_tokens``, ``top_p`` and ``stop`` are validated
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
    reasoning_effort: Optional[str] = None
    """For thinking models: "none", "minimal", "low", "medium", "high", ...; the model's
    reasoning text, where the provider returns it, is in ``additional_kwargs["reasoning_content"]``."""
    streaming: bool = False
    """Stream internally even on ``invoke`` (LangChain's standard flag)."""

    @model_validator(mode="after")
    def _check(self) -> "ChatRouter":
        _resolve_backend(self, "ChatRouter", pin=True)
        self._params(self.temperature, self.max_tokens, self.top_p, self.stop, reasoning_effort=self.reasoning_effort)
        check_number("timeout", self.timeout, 0, low_open=True, allow_none=True, kind="a number of seconds")
        check_int("max_retries", self.max_retries, 0, allow_none=True)
        return self

    # What LangChain asks of a chat model ------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "multi-llm-orchestrator"

    @property
    def model_name(self) -> str:
        """The provider's model (the pinned one's with ``provider="name"``), or "router"
        when a Router picks one per call."""
        if isinstance(self.provider, BaseProvider):
            return self.provider.model
        if isinstance(self.provider, str):
            for provider in self.router.providers:
                if provider.name == self.provider:
                    return provider.model
        return "router"

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
        prompt, params, timeout, pin = self._request(messages, stop, kwargs)
        if self._single() is not None:
            completion: Completion = self._retrying(lambda: self._on_single(
                pin, lambda: self.provider.complete(prompt, params, timeout=timeout)))
        else:
            completion = self._retrying(lambda: self.router.complete(prompt, params, timeout=timeout, **pin))
        message = AIMessage(
            content=completion.text,
            additional_kwargs={"reasoning_content": completion.reasoning} if completion.reasoning else {},
            tool_calls=[
                {"name": call.name, "args": call.arguments, "id": call.id, "type": "tool_call"}
                for call in completion.tool_calls
            ],
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
        prompt, params, timeout, pin = self._request(messages, stop, kwargs)
        if self._single() is not None:
            stream: TextStream = self._retrying(lambda: self._on_single(
                pin, lambda: self.provider.stream(prompt, params, timeout=timeout)))
        else:
            stream = self._retrying(lambda: self.router.route_stream(prompt, params, timeout=timeout, **pin))
        with stream:  # a consumer that stops early releases the connection
            for piece in stream.events():
                # LangChain reports each yielded chunk to the callbacks (on_llm_new_token) itself.
                if isinstance(piece, ReasoningDelta):  # thinking, kept out of the answer text
                    yield ChatGenerationChunk(message=AIMessageChunk(content="", additional_kwargs={"reasoning_content": str(piece)}))
                else:
                    yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        # The last chunk carries what is known only at the end: usage, finish reason, model,
        # and the tool calls the stream assembled.
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_call_chunks=[
                    {"name": call.name, "args": json.dumps(call.arguments, ensure_ascii=False), "id": call.id,
                     "index": index, "type": "tool_call_chunk"}
                    for index, call in enumerate(stream.tool_calls)
                ],
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
    ) -> Tuple[List[Message], GenerationParams, Optional[float], Dict[str, Any]]:
        """The call's messages, params, timeout, and the Router call options that pin it."""
        unknown = sorted(set(kwargs) - set(CALL_KEYWORDS) - set(PIN_KEYWORDS) - set(LANGCHAIN_KEYWORDS))
        if unknown:
            raise ConfigurationError(
                f"ChatRouter does not take {', '.join(unknown)} per call; "
                f"valid: stop, {', '.join(CALL_KEYWORDS + PIN_KEYWORDS)}"
            )
        params = self._params(
            kwargs.get("temperature", self.temperature),
            kwargs.get("max_tokens", self.max_tokens),
            kwargs.get("top_p", self.top_p),
            stop if stop is not None else self.stop,
            reasoning_effort=kwargs.get("reasoning_effort", self.reasoning_effort),
            tools=kwargs.get("tools"),
            tool_choice=kwargs.get("tool_choice"),
            response_format=kwargs.get("response_format"),
        )
        timeout = kwargs.get("timeout", self.timeout)
        check_number("timeout", timeout, 0, low_open=True, allow_none=True, kind="a number of seconds")
        pin = {name: kwargs[name] for name in PIN_KEYWORDS if kwargs.get(name) is not None}
        if isinstance(self.provider, str) and "provider" not in pin and "providers" not in pin:
            pin["provider"] = self.provider  # the constructor's pin, unless the call pins itself
        # Checked now (the Router's own rules and messages), not on a worker thread later.
        names = [provider.name for provider in self._providers()]
        CallOptions.parse(GenerationParams(), pin, names)
        return to_router_messages(messages), params, timeout, pin

    def _single(self) -> Optional[BaseProvider]:
        """The provider when there is no Router (``ChatRouter(provider=SomeProvider(...))``)."""
        return self.provider if isinstance(self.provider, BaseProvider) else None

    def _on_single(self, pin: Dict[str, Any], call: Any) -> Any:
        """``call`` to the single provider with the call's ``model=`` in effect (the pin
        itself was checked in ``_request``: it can only name this provider)."""
        model = pin.get("model")
        if model is None:
            return call()
        with model_override(self.provider, model):
            return call()

    @staticmethod
    def _params(temperature: Any, max_tokens: Any, top_p: Any, stop: Any, **beyond_text: Any) -> GenerationParams:
        # An empty stop list means "no stop sequence"; some servers reject "stop": [].
        return GenerationParams(temperature=temperature, max_tokens=max_tokens, top_p=top_p, stop=stop or None,
                                **beyond_text)

    # Tools and structured output ------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: Union[str, bool, Dict[str, Any], None] = None,
        **kwargs: Any,
    ) -> Runnable:
        """The model with ``tools`` (LangChain tools, Pydantic models, functions or
        OpenAI-shaped dicts) offered on every call. ``tool_choice``: "auto", "none",
        "any"/"required"/True (some tool must be called), or a tool's name. Calls go only
        to providers that support tools; the others show as skipped attempts."""
        converted = [Tool.of(convert_to_openai_tool(tool)).to_openai() for tool in tools]
        choice = _tool_choice(tool_choice, converted)
        if choice is not None:
            kwargs["tool_choice"] = choice
        # Each tool is checked here (Tool.of); the set as a whole (unique names, a tool_choice
        # naming one of them) when a call is made, as LangChain's own suite expects.
        return self.bind(tools=converted, **kwargs)

    def with_structured_output(
        self,
        schema: Union[Dict[str, Any], type],
        *,
        method: str = "json_schema",
        include_raw: bool = False,
        strict: Optional[bool] = None,
        **kwargs: Any,
    ) -> Runnable:
        """The model answering with an instance of ``schema`` (a Pydantic model, a
        TypedDict or a JSON Schema dict; dicts are returned for the last two).

        ``method``: "json_schema" (default: the provider's JSON Schema mode; an answer
        that does not parse or lacks required keys is a ResponseFormatError and the Router
        falls back), "json_mode" (any JSON object; say the keys in the prompt), or
        "function_calling" (a forced tool call). ``include_raw=True`` returns
        ``{"raw", "parsed", "parsing_error"}``.
        """
        if kwargs:
            raise ConfigurationError(f"with_structured_output does not take {', '.join(sorted(kwargs))}")
        if method not in STRUCTURED_METHODS:
            raise ConfigurationError(f"method must be one of {', '.join(STRUCTURED_METHODS)}; got {method!r}")
        if method == "function_calling":
            return super().with_structured_output(schema, include_raw=include_raw)
        json_schema = convert_to_json_schema(schema)
        model = self.bind(
            response_format=json_schema if method == "json_schema" else "json",
            ls_structured_output_format={"kwargs": {"method": method, "strict": strict}, "schema": json_schema},
        )
        pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        parser = PydanticOutputParser(pydantic_object=schema) if pydantic else JsonOutputParser()
        if not include_raw:
            return model | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=model) | parsed.with_fallbacks([unparsed], exception_key="parsing_error")

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
        single = self._single()
        return [single] if single is not None else list(self.router.providers)


class RouterEmbeddings(BaseModel, LangChainEmbeddings):
    """LangChain ``Embeddings`` over ``router.embed`` (or one provider's ``embed``).

    Give one of ``router``, ``provider`` or ``config`` as for ``ChatRouter`` (with none,
    ``$MULTI_LLM_ORCHESTRATOR_CONFIG``). ``space`` names the embedding space when the
    Router has several; ``timeout`` bounds each call. Documents are embedded with
    ``purpose="document"``, queries with ``purpose="query"`` (providers with a model per
    purpose, such as YandexGPT, use the right one). With ``provider=`` the texts go in
    one request: the Router is what splits large inputs into batches.

    >>> RouterEmbeddings(router=router).embed_query("What is Python?")[:3]   # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    router: Optional[Any] = Field(default=None, exclude=True)
    provider: Optional[Any] = Field(default=None, exclude=True)
    config: Optional[Any] = Field(default=None, exclude=True)
    space: Optional[str] = None
    timeout: Optional[float] = None

    @model_validator(mode="after")
    def _check(self) -> "RouterEmbeddings":
        _resolve_backend(self, "RouterEmbeddings", pin=False)
        check_number("timeout", self.timeout, 0, low_open=True, allow_none=True, kind="a number of seconds")
        if self.provider is not None and self.space is not None:
            raise ConfigurationError("space= picks among a Router's embedding spaces; a single provider has one")
        return self

    def embed_documents(self, texts: List[str]) -> List[List[float]]:
        """One vector per text, in order (an empty list gives an empty list)."""
        return self._embed(list(texts), "document")

    def embed_query(self, text: str) -> List[float]:
        return self._embed([text], "query")[0]

    def _embed(self, texts: List[str], purpose: str) -> List[List[float]]:
        if not texts:
            return []
        if self.provider is not None:
            result = self.provider.embed(texts, purpose=purpose, timeout=self.timeout)
        else:
            result = self.router.embed(texts, space=self.space, purpose=purpose, timeout=self.timeout)
        return [[float(value) for value in vector] for vector in result.vectors]


def _resolve_backend(model: Any, kind: str, pin: bool) -> None:
    """Check that ``model`` has exactly one of router, provider or config, and build the
    Router of a config (or of ``$MULTI_LLM_ORCHESTRATOR_CONFIG`` when none is given).
    With ``pin``, ``provider`` may also be the name of one of the Router's providers."""
    pinned = model.provider if pin and isinstance(model.provider, str) else None
    if pinned is not None:
        model.provider = None  # resolved as a Router below, then put back
        try:
            _resolve_backend(model, kind, pin=False)
        finally:
            model.provider = pinned
        names = [provider.name for provider in model.router.providers]
        if pinned not in names:
            raise ConfigurationError(
                f"provider={pinned!r} names no provider of the Router; registered: {', '.join(names) or 'none'}"
            )
        return
    given = [name for name in ("router", "provider", "config") if getattr(model, name) is not None]
    if len(given) > 1:
        raise ConfigurationError(f"Give {kind} one of router, provider or config; got {', '.join(given)}")
    if model.router is not None and not isinstance(model.router, Router):
        raise ConfigurationError(f"router must be a multi_llm_orchestrator Router; got {type(model.router).__name__}")
    if model.provider is not None and not isinstance(model.provider, BaseProvider):
        also = " or, with router= or config=, the name of one of its providers" if pin else ""
        raise ConfigurationError(
            f"provider must be a BaseProvider (e.g. GigaChatProvider(...)){also}; got {type(model.provider).__name__}"
        )
    if not given:
        source = os.environ.get(CONFIG_ENV)
        if not source:
            raise ConfigurationError(
                f"{kind} needs router=Router(...), provider=..., config='router.json', "
                f"or ${CONFIG_ENV} naming a configuration file"
            )
        model.config = source
    if model.config is not None:
        model.router = Router.from_config(model.config)


def to_router_messages(messages: Sequence[BaseMessage]) -> List[Message]:
    """LangChain messages as the Router's ``Message`` list: text, tool calls of AI
    messages, and tool results."""
    converted: List[Message] = []
    for index, message in enumerate(messages):
        if isinstance(message, ToolMessage):
            converted.append(Message("tool", _text(message, index), tool_call_id=message.tool_call_id or None,
                                     name=message.name or None))
        elif isinstance(message, AIMessage) and message.tool_calls:
            calls = [ToolCall(call.get("id") or "", call["name"], dict(call.get("args") or {}))
                     for call in message.tool_calls]
            converted.append(Message("assistant", _text(message, index), tool_calls=calls))
        else:
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
        f"Message #{index} is a {type(message).__name__}; ChatRouter takes system, human, AI and tool messages"
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
        elif isinstance(message, AIMessage) and isinstance(block, dict) and block.get("type") in AI_ONLY_BLOCKS:
            continue  # a tool call (also in .tool_calls) or the model's own reasoning: not resent as text
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise ConfigurationError(
                f"Message #{index} has a {kind!r} content block; the Router's providers take text only"
            )
    return "".join(parts)


#: Content blocks of an AI message that are not its text.
AI_ONLY_BLOCKS = ("tool_use", "tool_call", "thinking", "reasoning", "redacted_thinking")


def _tool_choice(choice: Any, tools: List[Dict[str, Any]]) -> Optional[str]:
    """LangChain's tool_choice values as the Router's: "any"/True -> "required", a
    ``{"type": "function", "function": {"name"}}`` dict -> the name."""
    if choice is None or choice is False:
        return None
    if choice is True or choice == "any":
        return "required"
    if isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return function["name"]
        raise ConfigurationError(f"tool_choice dict must be {{'type': 'function', 'function': {{'name': ...}}}}; got {choice!r}")
    return choice


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

"""Ollama's native API (``/api/chat``): a local server, or Ollama's cloud with a key.

Wire details: ../shared PROTOCOLS.md section 3. Streaming is NDJSON (one JSON object per
line, text deltas appended) ending at the object with ``"done": true``.

Embeddings: ``POST /api/embed`` with a list ``input`` (vectors come back L2-normalised, in
order; ``prompt_eval_count`` counts the tokens). ``embedding_model`` defaults to the
configured ``model``; ``extra["dimensions"]`` and ``extra["truncate"]`` are sent when
set. Ollama truncates an over-long input by default: ``extra={"truncate": False}`` makes
it a 400 instead. Ollama has no tokenizer endpoint: ``count_tokens`` is an estimate.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union
from urllib.parse import urlsplit

import requests

from ..errors import (
    ConfigurationError,
    InvalidRequestError,
    ProviderError,
    ProviderUnavailableError,
    ResponseFormatError,
)
from ..http import HttpProvider, provider_config
from ..streaming import drain, iter_json_lines, stream_error
from ..capabilities import ALL_CAPABILITIES
from ..types import (
    Completion, Embeddings, GenerationParams, Message, Prompt, ReasoningDelta, StreamEnd, TextStream, ToolCall, Usage,
)
from ..validation import check_int
from .base import EmbeddingLimits, ProviderConfig
from .chat_format import finish_reason_of, tool_calls_of
from .embedding_format import check_count, check_dimensions, parse_vector

__all__ = ["OllamaProvider", "ollama_host_url"]

logger = logging.getLogger("multi_llm_orchestrator.providers.ollama")

DEFAULT_PORT = 11434
# Keys of GenerationParams.extra that are top-level /api/chat fields; Ollama silently
# ignores them inside "options", so they must not end up there.
TOP_LEVEL_FIELDS = ("format", "keep_alive", "think", "tools", "truncate", "shift", "logprobs", "top_logprobs")
# reasoning_effort -> think (PROTOCOLS.md §8: true/false or a level; "none" turns it off).
THINK_LEVELS = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high",
                "xhigh": "max", "max": "max"}
_MODEL_NOT_FOUND = re.compile(r"\bmodel\b.*\bnot found\b", re.IGNORECASE | re.DOTALL)


def ollama_host_url(value: str) -> str:
    """The base URL for an ``OLLAMA_HOST`` value, read the way the ``ollama`` CLI reads it.

    A scheme is optional (default ``http``), so is the port (11434 without a scheme, else
    the scheme's); ``0.0.0.0``/``::`` are bind-all addresses a server listens on, so a
    client connects to loopback instead.

    >>> ollama_host_url("gpu-box:11500")
    'http://gpu-box:11500'
    >>> ollama_host_url("0.0.0.0")
    'http://127.0.0.1:11434'
    """
    text = value.strip().strip("\"'").strip()
    scheme, separator, rest = text.partition("://")
    if not separator:
        scheme, rest, port = "http", text, DEFAULT_PORT
        if text == "ollama.com":  # the CLI's shortcut for the cloud
            scheme, port = "https", 443
    elif scheme in ("http", "https"):
        port = 80 if scheme == "http" else 443
    else:
        raise ConfigurationError(f"OLLAMA_HOST must be host[:port] or http(s)://host[:port]; got {value!r}")
    hostport, _, path = rest.partition("/")
    if hostport.count(":") > 1 and not hostport.startswith("["):
        hostport = f"[{hostport}]"  # a bare IPv6 address such as ::1
    try:
        parts = urlsplit(f"//{hostport}")
        port = parts.port or port
    except ValueError:
        raise ConfigurationError(
            f"OLLAMA_HOST has an invalid port: {value!r}; use host:port, e.g. localhost:11434"
        ) from None
    host = parts.hostname or ""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    path = "/" + path.strip("/") if path.strip("/") else ""
    return f"{scheme}://{host}:{port}{path}"


class OllamaProvider(HttpProvider):
    """Ollama through its native ``/api/chat``.

    Configuration: ``model`` (default ``llama3.2``; must be pulled on the server),
    ``base_url`` (default ``http://localhost:11434``; a trailing ``/api`` is accepted),
    ``api_key`` only for Ollama's cloud (sent as ``Authorization: Bearer``). ``extra``:
    ``options`` (default model options such as ``{"num_ctx": 8192}``), ``keep_alive``.

    Parameters map to ``options``: temperature, top_p, ``max_tokens`` -> ``num_predict``,
    stop; ``GenerationParams.extra`` is merged into ``options`` too, except the top-level
    fields ``format``, ``keep_alive``, ``think``, ``tools``, ``truncate``, ``shift``,
    ``logprobs`` and ``top_logprobs`` (Ollama ignores them inside ``options``).

    Tools, structured output, thinking (PROTOCOLS.md §6.5, §7, §8): ``tools`` are sent in
    the OpenAI shape; Ollama has no ``tool_choice``: "none" leaves the tools out, the
    others are not enforceable (logged at DEBUG). Calls (``message.tool_calls``, arguments
    an object) are ``Completion.tool_calls`` with ``finish_reason`` "tool_calls" (Ollama
    itself says "stop"); in streams they are gathered across chunks. A tool result is
    sent as ``{"role": "tool", "tool_name", "content"}``. ``response_format`` is
    ``format`` ("json" or the schema); ``reasoning_effort`` is ``think`` ("none" is false,
    "minimal" "low", "xhigh" "max"), and ``message.thinking`` is ``Completion.reasoning``.

    >>> llm = OllamaProvider(ProviderConfig(name="local", model="llama3.2"))
    >>> llm.generate("Why is the sky blue?")                      # doctest: +SKIP
    'The sky looks blue because ...'
    >>> OllamaProvider.from_env().list_models()                   # doctest: +SKIP
    ['llama3.2:latest']
    """

    type_name = "ollama"
    default_model = "llama3.2"
    declared_capabilities = ALL_CAPABILITIES
    # Ollama documents no batch limit; batches this size keep one request short enough
    # for a deadline and let the Router spread a large input over hosts.
    embedding_limits = EmbeddingLimits(max_texts=256, max_chars=1_000_000)
    default_base_url = "http://localhost:11434"

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        if self.base_url.endswith("/api"):
            self.base_url = self.base_url[: -len("/api")]
        options = config.extra.get("options", {})
        if not isinstance(options, dict):
            raise ConfigurationError(
                f"extra['options'] of {self.name!r} must be a dict of Ollama model options; got {options!r}"
            )
        # Read once: every call copies these instead of looking them up again.
        self._options = dict(options)
        self._top_level = {"keep_alive": config.extra["keep_alive"]} if "keep_alive" in config.extra else {}
        self._fixed_headers = self.bearer_headers()
        self._embed_fields: Dict[str, Any] = {}
        dimensions = check_int(f"extra['dimensions'] of {self.name!r}", config.extra.get("dimensions"), 1, allow_none=True)
        if dimensions is not None:
            self._embed_fields["dimensions"] = dimensions
        if "truncate" in config.extra:
            if not isinstance(config.extra["truncate"], bool):
                raise ConfigurationError(f"extra['truncate'] of {self.name!r} must be True or False")
            self._embed_fields["truncate"] = config.extra["truncate"]
        self._embed_fields.update(self._top_level)

    @classmethod
    def from_env(
        cls, name: str = "ollama", *, environ: Optional[Mapping[str, str]] = None, **fields: Any
    ) -> "OllamaProvider":
        """A provider configured from ``OLLAMA_HOST`` (``host:port`` or a URL),
        ``OLLAMA_MODEL`` and ``OLLAMA_API_KEY`` (cloud); keyword ``fields`` of
        ProviderConfig win over the environment.

        >>> OllamaProvider.from_env(environ={"OLLAMA_HOST": "gpu-box:11500"}).base_url
        'http://gpu-box:11500'
        """
        env = os.environ if environ is None else environ
        settings: Dict[str, Any] = {"name": name}
        if env.get("OLLAMA_HOST", "").strip():
            settings["base_url"] = ollama_host_url(env["OLLAMA_HOST"])
        if env.get("OLLAMA_MODEL", "").strip():
            settings["model"] = env["OLLAMA_MODEL"].strip()
        if env.get("OLLAMA_API_KEY", "").strip():
            settings["api_key"] = env["OLLAMA_API_KEY"].strip()
        settings.update(fields)
        return cls(provider_config("OllamaProvider.from_env", settings))

    # Public interface -------------------------------------------------------------------

    def complete(
        self, messages: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None
    ) -> Completion:
        started = time.perf_counter()
        messages, params = self._prepare(messages, params)
        data = self.request_json(
            "POST", self.base_url + "/api/chat", timeout=self._timeout(timeout),
            json_body=self._chat_body(messages, params, stream=False), headers=self._headers(),
        )
        if not isinstance(data, dict):
            raise ResponseFormatError(f"/api/chat answered {type(data).__name__}, not an object", provider=self.name)
        error = stream_error(data, self.name)
        if error is not None:  # under HTTP 200, outside request(): scrubbed here
            raise self.scrub_error(error)
        message = data.get("message")
        if not isinstance(message, dict):
            raise ResponseFormatError("/api/chat answered without a 'message' object", provider=self.name)
        calls = tool_calls_of(message, self.name) if message.get("tool_calls") else []
        return self._completion(
            self._content(message),
            started,
            usage=_usage(data, self.name) or Usage(),
            finish_reason=finish_reason_of(data.get("done_reason"), bool(calls)),
            model=data.get("model"),
            tool_calls=calls,
            reasoning=reasoning_of_ollama(message),
        )

    def stream(
        self, messages: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None
    ) -> TextStream:
        messages, params = self._prepare(messages, params)
        # Sent now, not on first iteration: a refused call fails here and the Router can
        # fall back before any text reached the caller.
        lines = self.stream_lines(
            "POST", self.base_url + "/api/chat", timeout=self._timeout(timeout),
            json_body=self._chat_body(messages, params, stream=True),
            headers=self._headers("application/x-ndjson"),
        )
        return self._text_stream(self._deltas(lines))

    def embed(
        self, texts: Sequence[str], *, purpose: Optional[str] = None, timeout: Optional[float] = None
    ) -> Embeddings:
        """Vectors from ``POST /api/embed`` (L2-normalised, in input order)."""
        started = time.perf_counter()
        texts = self._embedding_input(texts, purpose)
        data = self.request_json(
            "POST", self.base_url + "/api/embed", timeout=self._timeout(timeout),
            json_body={"model": self.embedding_model, "input": texts, **self._embed_fields}, headers=self._headers(),
        )
        if not isinstance(data, dict):
            raise ResponseFormatError(f"/api/embed answered {type(data).__name__}, not an object", provider=self.name)
        error = stream_error(data, self.name)
        if error is not None:
            raise self.scrub_error(error)
        embeddings = data.get("embeddings")
        if not isinstance(embeddings, list):
            raise ResponseFormatError("/api/embed answered without an 'embeddings' list", provider=self.name)
        check_count(len(embeddings), len(texts), self.name, "/api/embed")
        vectors = [parse_vector(v, self.name, f"/api/embed: embeddings[{i}]") for i, v in enumerate(embeddings)]
        check_dimensions(vectors, self.name, "/api/embed")
        return self._embeddings(vectors, started, usage=Usage.of(data.get("prompt_eval_count"), 0), model=data.get("model"))

    def health_check(self, timeout: Optional[float] = None) -> bool:
        """True when ``GET /api/version`` answers 2xx; never raises."""
        return self.probe(lambda: self._get("/api/version", timeout))

    def list_models(self, timeout: Optional[float] = None) -> List[str]:
        """Models pulled on the server (``GET /api/tags``), e.g. ``['llama3.2:latest']``."""
        data = self._get("/api/tags", timeout)
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, list):
            raise ResponseFormatError("/api/tags answered without a 'models' list", provider=self.name)
        return [str(m.get("name") or m.get("model")) for m in models if isinstance(m, dict)]

    def error_for_response(self, response: requests.Response) -> ProviderError:
        error = super().error_for_response(response)
        if response.status_code == 404 and _MODEL_NOT_FOUND.search(error.message):
            return InvalidRequestError(
                f"model {self.model!r} is not on the Ollama server {self.base_url}: run "
                f"`ollama pull {self.model}` there, or set model to one of list_models() ({error.message})",
                provider=self.name,
                status_code=404,
            )
        return error

    # Wire format ------------------------------------------------------------------------

    def _get(self, path: str, timeout: Optional[float]) -> Any:
        return self.get_json(path, timeout, self._headers())

    def _headers(self, accept: str = "application/json") -> Dict[str, str]:
        return {"Accept": accept, **self._fixed_headers}

    def _chat_body(self, messages: List[Message], params: GenerationParams, *, stream: bool) -> Dict[str, Any]:
        body: Dict[str, Any] = {
            "model": self.model,
            "messages": _wire_messages(messages),
            "stream": stream,  # Ollama streams unless told otherwise
        }
        body.update(self._top_level)
        if params.tools and params.tool_choice != "none":
            body["tools"] = [tool.to_openai() for tool in params.tools]
            if params.tool_choice not in (None, "auto"):
                logger.debug("provider %r: Ollama has no tool_choice; %r is not enforced", self.name, params.tool_choice)
        if params.response_format is not None:
            body["format"] = params.response_format
        if params.reasoning_effort is not None:
            body["think"] = THINK_LEVELS[params.reasoning_effort]
        options = dict(self._options)
        for key, value in (
            ("temperature", params.temperature),
            ("top_p", params.top_p),
            ("num_predict", params.max_tokens),
            ("stop", params.stop),
        ):
            if value is not None:
                options[key] = value
        for key, value in params.extra.items():
            if key in TOP_LEVEL_FIELDS:
                body[key] = value
            else:
                options[key] = value
        if options:
            body["options"] = options
        return body

    def _content(self, message: Dict[str, Any]) -> str:
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise ResponseFormatError(
                f"/api/chat answered message.content of type {type(content).__name__}, not text", provider=self.name
            )
        return content or ""

    def _deltas(self, lines: Iterator[str]) -> Iterator[Union[str, ReasoningDelta, StreamEnd]]:
        calls: List[ToolCall] = []  # each chunk holds whole calls: gathered, not concatenated
        try:
            for event in iter_json_lines(lines, provider=self.name):
                message = event.get("message")
                content = self._content(message) if isinstance(message, dict) else None
                if isinstance(message, dict) and len(message) > 2:  # more than role and content
                    thinking = reasoning_of_ollama(message)
                    if thinking:
                        yield ReasoningDelta(thinking)
                    if message.get("tool_calls"):
                        calls.extend(tool_calls_of(message, self.name))
                if content:
                    yield content
                if event.get("done"):
                    yield StreamEnd(
                        usage=_usage(event, self.name), finish_reason=finish_reason_of(event.get("done_reason"), bool(calls)),
                        model=event.get("model"), tool_calls=calls or None,
                    )
                    drain(lines)
                    return
            raise ProviderUnavailableError(
                'the stream ended before "done": true: the connection was cut', provider=self.name
            )
        finally:
            close = getattr(lines, "close", None)
            if close is not None:
                close()


def _wire_messages(messages: List[Message]) -> List[Dict[str, Any]]:
    """Messages for /api/chat: calls with object arguments, results with ``tool_name``."""
    if not getattr(messages, "has_tool_messages", True):
        return [{"role": m.role, "content": m.content} for m in messages]
    wire: List[Dict[str, Any]] = []
    names: Dict[str, str] = {}
    for m in messages:
        item: Dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            names.update((call.id, call.name) for call in m.tool_calls)
            item["tool_calls"] = [{"id": call.id, "function": {"index": index, "name": call.name,
                                                               "arguments": call.arguments}}
                                  for index, call in enumerate(m.tool_calls)]
        elif m.role == "tool":
            name = m.name or names.get(m.tool_call_id or "")
            if name:
                item["tool_name"] = name
            if m.tool_call_id:
                item["tool_call_id"] = m.tool_call_id
        wire.append(item)
    return wire


def reasoning_of_ollama(message: Mapping[str, Any]) -> Optional[str]:
    """``message.thinking`` where the model thought aloud."""
    thinking = message.get("thinking")
    return thinking if isinstance(thinking, str) and thinking else None


def _usage(data: Dict[str, Any], provider: str) -> Optional[Usage]:
    # Ollama omits zero counters, and older servers omit prompt_eval_count for a cached
    # prompt: absent means 0. None: counts that cannot be trusted.
    return Usage.parse(data.get("prompt_eval_count"), data.get("eval_count"), provider=provider)

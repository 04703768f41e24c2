"""Any server speaking OpenAI's Chat Completions API: OpenAI, vLLM, llama.cpp,
LM Studio, OpenRouter, Ollama's ``/v1``, Yandex's ``/v1``.

Wire details: ../shared PROTOCOLS.md section 4. Two decisions worth knowing:

- **429 is not retried by the transport.** At OpenAI a 429 means either "slow down"
  (``rate_limit_exceeded``) or "out of money" (``insufficient_quota``), and only the
  JSON body tells which. urllib3 decides on a status retry before anyone can read the
  body (and reading it inside the Retry would leave requests an empty body), so this
  provider leaves 429 out of ``retry_statuses``: every 429 is requested once and
  surfaces at once, as ``QuotaExceededError`` (never worth retrying) or as
  ``RateLimitError(retry_after=...)`` from ``Retry-After``/``retry-after-ms``, which the
  Router answers by falling back to another provider. 5xx and connect errors are still
  retried by the transport.
- **Usage in streams.** Streams ask for ``stream_options: {"include_usage": true}``.
  A server that rejects it (an HTTP 400/422 naming ``stream_options``) gets the request
  once more without it, and this provider instance stops sending it; set
  ``extra={"stream_usage": False}`` to never send it. Without it ``TextStream.usage``
  stays None unless the server reports usage anyway.
- **Embeddings** (``POST {base_url}/embeddings``): ``embedding_model`` defaults to
  ``model``; ``encoding_format`` is always "float" (some servers speak nothing else);
  ``extra["dimensions"]`` is sent as ``dimensions`` (``text-embedding-3*``). Batches hold
  at most 2048 texts and 500,000 characters (OpenAI: 2048 inputs, 300,000 tokens). The
  vectors are placed by their ``index``. ``count_tokens`` is an estimate (no endpoint).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from typing import Any, Callable, Dict, FrozenSet, Iterator, List, Mapping, Optional, Sequence, TypeVar, Union

import requests

from ..errors import (
    ConfigurationError,
    InvalidRequestError,
    ProviderError,
    ProviderUnavailableError,
    QuotaExceededError,
    ResponseFormatError,
)
from ..http import (
    RETRY_STATUSES,
    HttpProvider,
    error_from_status,
    error_message_from_body,
    parse_retry_after,
    provider_config,
)
from ..streaming import iter_sse_json
from ..types import Completion, Embeddings, GenerationParams, Message, Prompt, StreamEnd, TextStream
from ..validation import check_int
from .base import EmbeddingLimits, ProviderConfig
from ..capabilities import ALL_CAPABILITIES
from .chat_format import chunk_deltas, openai_messages, openai_response_format, openai_tool_fields, parse_answer

__all__ = ["OpenAICompatibleProvider"]

logger = logging.getLogger("multi_llm_orchestrator.providers.openai")

#: Where ``from_env`` points when no base URL is given (the OpenAI SDK's default too).
OPENAI_API_URL = "https://api.openai.com/v1"

# error.type / error.code values that mean billing, not timing (OpenAI, OpenRouter).
QUOTA_CODES = frozenset({
    "insufficient_quota",
    "billing_hard_limit_reached",
    "credit_balance_exhausted",
    "project_spend_limit_exceeded",
})
# Model names that are certainly reasoning models: o1, o3-mini, o4-mini-high, gpt-5,
# gpt-5.1-codex... (after any "vendor/" prefix), but not the non-reasoning gpt-5-chat.
REASONING_MODEL = r"(o[1-9](-.*)?|gpt-5(?!.*-chat).*)"
_reasoning_model: "Optional[re.Pattern[str]]" = None  # compiled on first use: not at import
# What a reasoning model rejects, and what we do about it.
REASONING_FIXES = frozenset({"max_tokens", "temperature", "top_p", "stop"})
UNSUPPORTED_CODES = ("unsupported_parameter", "unsupported_value")
# Never dropped to get a request through: the caller asked for them on purpose.
NEVER_DROPPED = frozenset({"model", "messages", "stream", "tools", "tool_choice", "response_format", "reasoning_effort"})
T = TypeVar("T")


def is_reasoning_model(model: str) -> bool:
    """Whether ``model`` is certainly an OpenAI reasoning model, by its name.

    >>> [is_reasoning_model(m) for m in ("o3-mini", "openai/gpt-5.1", "gpt-5-chat-latest", "gpt-4o")]
    [True, True, False, False]
    """
    global _reasoning_model
    if _reasoning_model is None:
        _reasoning_model = re.compile(REASONING_MODEL, re.IGNORECASE)
    return bool(_reasoning_model.fullmatch(model.rsplit("/", 1)[-1]))


class OpenAICompatibleProvider(HttpProvider):
    """A server with ``POST {base_url}/chat/completions``.

    Configuration: ``model`` (required: the id the server serves, see ``list_models()``),
    ``base_url`` (default ``http://localhost:8000/v1``, vLLM's; OpenAI itself is
    ``https://api.openai.com/v1``, which ``from_env`` uses when no base URL is set), ``api_key`` (optional; sent as
    ``Authorization: Bearer``). ``extra``: ``headers`` (added to every request, e.g.
    ``{"OpenAI-Organization": "org-..."}`` or OpenRouter's ``HTTP-Referer``),
    ``stream_usage`` (False: never send ``stream_options``).
    ``GenerationParams.extra`` is merged into the request body (``seed``, ``top_k``, ...).

    >>> llm = OpenAICompatibleProvider(ProviderConfig(
    ...     name="vllm", model="Qwen/Qwen2.5-7B-Instruct", base_url="http://gpu:8000/v1"))
    >>> llm.generate("Why is the sky blue?")                      # doctest: +SKIP
    'The sky looks blue because ...'
    """

    type_name = "openai"
    declared_capabilities = ALL_CAPABILITIES
    default_model = ""
    default_base_url = "http://localhost:8000/v1"
    retry_statuses = RETRY_STATUSES - {429}
    embedding_limits = EmbeddingLimits(max_texts=2048, max_chars=500_000)

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        if not self.model:
            raise ConfigurationError(
                f"OpenAICompatibleProvider {self.name!r} needs model=...: the model id the server "
                f"serves (GET {self.base_url}/models lists them; from_env() reads OPENAI_MODEL)"
            )
        headers = config.extra.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise ConfigurationError(
                f"extra['headers'] of {self.name!r} must be a dict of header name -> str value"
            )
        self._fixed_headers = self.bearer_headers(headers)  # read once, not per call
        stream_usage = config.extra.get("stream_usage", True)
        if not isinstance(stream_usage, bool):
            raise ConfigurationError(
                f"extra['stream_usage'] of {self.name!r} must be True or False; got {stream_usage!r}"
            )
        # Switched off for good once the server rejects stream_options (see the module doc).
        self._stream_usage = stream_usage
        # Parameters the model rejects, by model (see the module doc: reasoning models).
        self._fixes: Dict[str, FrozenSet[str]] = {self.model: REASONING_FIXES} if is_reasoning_model(self.model) else {}
        self._fixes_lock = threading.Lock()
        dimensions = check_int(f"extra['dimensions'] of {self.name!r}", config.extra.get("dimensions"), 1, allow_none=True)
        self._embed_fields: Dict[str, Any] = {"encoding_format": "float"}
        if dimensions is not None:
            self._embed_fields["dimensions"] = dimensions

    @classmethod
    def from_env(
        cls, name: str = "openai", *, environ: Optional[Mapping[str, str]] = None, **fields: Any
    ) -> "OpenAICompatibleProvider":
        """A provider configured from ``OPENAI_BASE_URL``, ``OPENAI_API_KEY`` and
        ``OPENAI_MODEL``; keyword ``fields`` of ProviderConfig win over the environment.
        Without ``OPENAI_BASE_URL`` (or ``base_url=``) it is OpenAI's own API,
        ``https://api.openai.com/v1``, as with the OpenAI SDK; the URL used is logged (INFO).

        >>> OpenAICompatibleProvider.from_env(environ={"OPENAI_MODEL": "gpt-4o-mini"}).base_url
        'https://api.openai.com/v1'
        """
        env = os.environ if environ is None else environ
        settings: Dict[str, Any] = {"name": name}
        for variable, field_name in (
            ("OPENAI_BASE_URL", "base_url"), ("OPENAI_API_KEY", "api_key"), ("OPENAI_MODEL", "model"),
        ):
            if env.get(variable, "").strip():
                settings[field_name] = env[variable].strip()
        settings.update(fields)
        source = "OPENAI_BASE_URL" if env.get("OPENAI_BASE_URL", "").strip() else "default: OPENAI_BASE_URL not set"
        if "base_url" in fields:
            source = "base_url="
        if not settings.get("base_url"):
            settings["base_url"] = OPENAI_API_URL
        provider = cls(provider_config("OpenAICompatibleProvider.from_env", settings))
        logger.info("provider %r: OpenAI-compatible API at %s (%s)", provider.name, provider.base_url, source,
                    extra={"provider": provider.name, "base_url": provider.base_url})
        return provider

    # Public interface -------------------------------------------------------------------

    def complete(
        self, messages: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None
    ) -> Completion:
        started = time.perf_counter()
        messages, params = self._prepare(messages, params)
        deadline = time.monotonic() + self._timeout(timeout)
        data = self._fixing(lambda: self.request_json(
            "POST", self.base_url + "/chat/completions", timeout=max(0.001, deadline - time.monotonic()),
            json_body=self._chat_body(messages, params), headers=self._headers(),
        ))
        if _error_fields(data) is not None:  # OpenRouter reports late failures under HTTP 200
            raise self._error(None, data)
        answer = parse_answer(data, self.name)
        return self._completion(answer.text, started, usage=answer.usage, finish_reason=answer.finish_reason,
                                model=answer.model, tool_calls=answer.tool_calls, reasoning=answer.reasoning)

    def stream(
        self, messages: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None
    ) -> TextStream:
        messages, params = self._prepare(messages, params)
        limit = self._timeout(timeout)
        deadline = time.monotonic() + limit
        with_usage = self._stream_usage
        # Sent now, not on first iteration: a refused call fails here and the Router can
        # fall back before any text reached the caller.
        try:
            lines = self._fixing(lambda: self._open_stream(
                messages, params, with_usage, max(0.001, deadline - time.monotonic())))
        except InvalidRequestError as exc:
            if not (with_usage and "stream_options" in exc.message.lower()):
                raise
            logger.info(
                "provider %r rejected stream_options: streaming without usage from now on", self.name,
                extra={"provider": self.name},
            )
            self._stream_usage = False
            lines = self._fixing(lambda: self._open_stream(
                messages, params, False, max(0.001, deadline - time.monotonic())))
        return self._text_stream(self._deltas(lines), on_close=getattr(lines, "close", None))

    def embed(
        self, texts: Sequence[str], *, purpose: Optional[str] = None, timeout: Optional[float] = None
    ) -> Embeddings:
        """Vectors from ``POST {base_url}/embeddings``, in input order."""
        started = time.perf_counter()
        texts = self._embedding_input(texts, purpose)
        data = self.request_json(
            "POST", self.base_url + "/embeddings", timeout=self._timeout(timeout),
            json_body={"model": self.embedding_model, "input": texts, **self._embed_fields}, headers=self._headers(),
        )
        if _error_fields(data) is not None:  # an error reported under HTTP 200
            raise self._error(None, data)
        from .embedding_format import parse_data_list  # loaded by the first embed, not the import

        vectors, usage, model = parse_data_list(data, len(texts), self.name, "/embeddings")
        return self._embeddings(vectors, started, usage=usage, model=model)

    def health_check(self, timeout: Optional[float] = None) -> bool:
        """True when ``GET {base_url}/models`` answers 2xx, which also proves the key works."""
        return self.probe(lambda: self._get("/models", timeout))

    def list_models(self, timeout: Optional[float] = None) -> List[str]:
        """Model ids the server offers (``GET {base_url}/models``)."""
        data = self._get("/models", timeout)
        models = data.get("data") if isinstance(data, dict) else None
        if not isinstance(models, list):
            raise ResponseFormatError("/models answered without a 'data' list", provider=self.name)
        return [str(m["id"]) for m in models if isinstance(m, dict) and m.get("id")]

    def error_for_response(self, response: requests.Response) -> ProviderError:
        body, text = self.read_error_body(response)
        return self._error(response.status_code, body, text, response.headers)

    # Wire format ------------------------------------------------------------------------

    def _get(self, path: str, timeout: Optional[float]) -> Any:
        return self.get_json(path, timeout, self._headers())

    def _headers(self, accept: str = "application/json") -> Dict[str, str]:
        return {"Accept": accept, **self._fixed_headers}

    def _chat_body(self, messages: List[Message], params: GenerationParams) -> Dict[str, Any]:
        body: Dict[str, Any] = {
            "model": self.model,
            "messages": openai_messages(messages),
        }
        for key, value in (
            ("temperature", params.temperature),
            ("top_p", params.top_p),
            ("max_tokens", params.max_tokens),  # what local servers read; OpenAI still accepts it
            ("stop", params.stop),
        ):
            if value is not None:
                body[key] = value
        if params.tools or params.tool_choice is not None:
            openai_tool_fields(params, body)
        if params.response_format is not None:
            body["response_format"] = openai_response_format(params.response_format)
        if params.reasoning_effort is not None:
            body["reasoning_effort"] = params.reasoning_effort
        body.update(params.extra)
        fixes = self._fixes.get(self.model) if self._fixes else None
        if fixes:
            for key in fixes.intersection(body):
                if key == "max_tokens":
                    body["max_completion_tokens"] = body.pop("max_tokens")
                else:
                    logger.debug("provider %r: model %r rejects %s: not sent", self.name, self.model, key,
                                 extra={"provider": self.name})
                    del body[key]
        return body

    def _fixing(self, send: Callable[[], T]) -> T:
        """``send()``; when the model rejects a parameter we sent (400 unsupported_parameter
        or unsupported_value naming it), remember that for the model and send once more,
        once per parameter."""
        tried = set()
        while True:
            try:
                return send()
            except InvalidRequestError as exc:
                param = getattr(exc, "error_param", None)
                if (getattr(exc, "error_code", None) not in UNSUPPORTED_CODES or not isinstance(param, str)
                        or param in NEVER_DROPPED or param in tried):
                    raise
                tried.add(param)
                with self._fixes_lock:
                    self._fixes = {**self._fixes, self.model: self._fixes.get(self.model, frozenset()) | {param}}
                logger.info(
                    "provider %r: model %r rejects %r; %s from now on", self.name, self.model, param,
                    "sending max_completion_tokens instead" if param == "max_tokens" else "leaving it out",
                    extra={"provider": self.name},
                )

    def _open_stream(
        self, messages: List[Message], params: GenerationParams, with_usage: bool, timeout: float
    ) -> Iterator[str]:
        body = self._chat_body(messages, params)
        body["stream"] = True
        if with_usage:
            body.setdefault("stream_options", {"include_usage": True})
        return self.stream_lines(
            "POST", self.base_url + "/chat/completions", timeout=timeout,
            json_body=body, headers=self._headers("text/event-stream"),
        )

    def _deltas(self, lines: Iterator[str]) -> Iterator[Union[str, StreamEnd]]:
        # The lines are closed by the TextStream's on_close (see stream()).
        return chunk_deltas(iter_sse_json(lines, provider=self.name, error_of=self._event_error), self.name)

    def _event_error(self, event: Dict[str, Any], provider: str) -> Optional[ProviderError]:
        # OpenAI's {"error": {...}} and vLLM's flat {"object": "error"}, read like error
        # bodies: a mid-stream insufficient_quota is QuotaExceededError, not a retryable 5xx.
        return self._error(None, event, during="stream") if _error_fields(event) is not None else None

    # Errors -------------------------------------------------------------------------------

    def _error(
        self,
        status: Optional[int],
        body: Any,
        text: str = "",
        headers: Optional[Mapping[str, str]] = None,
        *,
        during: str = "response",
    ) -> ProviderError:
        """The typed error for an error body; ``status`` None for one found under HTTP 200
        (``during`` "response" or "stream" says where)."""
        fields = _error_fields(body) or {}
        message = str(fields.get("message") or "") or error_message_from_body(body, text)
        message = self.scrub(message)  # also used for errors under HTTP 200, outside request()
        kinds = {str(fields.get("type") or "").lower(), str(fields.get("code") or "").lower()}
        if status is None:
            code = fields.get("code")
            # isascii(): "²".isdigit() is True but int("²") raises; len: int() refuses 5,000 digits.
            if isinstance(code, int) or (isinstance(code, str) and code.isascii() and code.isdigit() and len(code) < 9):
                status = int(code) if 400 <= int(code) < 600 else None
        if status == 402 or kinds & QUOTA_CODES:
            return QuotaExceededError(
                f"the account is out of credit or quota ({message}): check the plan, billing and "
                f"balance of this key's account; retrying will not help",
                provider=self.name, status_code=status,
            )
        if status is None:
            return ProviderUnavailableError(f"the server reported an error mid-{during}: {message}", provider=self.name)
        if status == 401:
            message += "; check api_key (OPENAI_API_KEY for from_env())"
        error = error_from_status(
            status, message, provider=self.name, retry_after=parse_retry_after(headers) if headers else None
        )
        # OpenAI's error.code and error.param: what a reasoning model rejected (see _fixing).
        error.error_code = fields.get("code") if isinstance(fields.get("code"), str) else None
        error.error_param = fields.get("param") if isinstance(fields.get("param"), str) else None
        return error


def _error_fields(body: Any) -> Optional[Dict[str, Any]]:
    """The ``{message, type, code}`` of an OpenAI ``{"error": {...}}`` or a vLLM flat
    ``{"object": "error", ...}`` body; None when the body is not an error."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict):
        return error
    if isinstance(error, str) and error:
        return {"message": error}
    if body.get("object") == "error":
        return body
    return None

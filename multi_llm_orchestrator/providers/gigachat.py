"""GigaChat (Sber): OAuth2 token cache, chat completions, SSE streaming, models.

Wire protocol (PROTOCOLS.md §1):

- OAuth: ``POST {auth_url}`` with ``Authorization: Basic <authorization key>``, a fresh
  ``RqUID`` (uuid4) and the form body ``scope=...``; the answer is
  ``{"access_token", "expires_at"}`` with ``expires_at`` in epoch milliseconds (seconds
  are tolerated). A token lives 30 minutes; it is cached and refreshed 60 s early.
- API: ``Authorization: Bearer <token>`` on ``{base_url}/chat/completions``,
  ``/models``, ``/embeddings``, ``/tokens/count`` and ``/balance``; errors are ``{"status", "message"}``, OAuth errors
  ``{"code", "message"}``.
- TLS: the hosts use the Russian Trusted Root CA, which is not in certifi: pass
  ``ca_bundle`` with it (``verify_ssl=False`` only for development).

Decisions where GigaChat differs from the common interface:

- Several system messages are joined (blank line between them) into one system message
  placed first, because GigaChat accepts only one, and only first (else 422).
- ``temperature=0`` is sent as 0.001 (GigaChat needs > 0; 0-0.001 is its deterministic mode).
- ``params.stop`` is ignored with a DEBUG log: GigaChat has no stop sequences, and raising
  would make a Router that mixes GigaChat with other providers fail on every call.
- ``embed`` uses ``config.embedding_model`` (default "Embeddings"; "EmbeddingsGigaR" is
  the other) and sends at most 90 texts / 1,000,000 characters per request (GigaChat
  documents no limit; langchain-gigachat split there). Usage is the sum of the items'
  ``usage.prompt_tokens`` (there is no top-level usage). "EmbeddingsGigaR" works better
  when search queries carry an instruction: with ``purpose="query"`` each text gets
  ``extra["query_prefix"]`` in front (default for EmbeddingsGigaR: langchain-gigachat's
  "Дано предложение, необходимо найти его парафраз \nпредложение: "; "" turns it off;
  documents never get it).
- ``count_tokens`` counts each message's text with ``POST /tokens/count`` for the chat
  model and adds them up: GigaChat's own count, without the chat template's few tokens.
- ``balance`` is ``GET /balance``; a 403 there means a pay-as-you-go account (balances
  exist only for prepaid packages) and raises NotSupportedError, not an auth error.
- ``params.extra`` is merged into the request body (``repetition_penalty``,
  ``update_interval``, ``profanity_check``, ``functions``, ...); it may not set
  ``messages`` or ``stream``. Its keys ``session_id``, ``request_id`` and ``client_id``
  are headers instead (below).
- Headers ``X-Session-ID`` (GigaChat caches the prompt prefix of one session: cheaper,
  faster follow-ups), ``X-Request-ID`` and ``X-Client-ID``: set per provider with
  ``extra={"session_id": ..., "client_id": ...}`` and per call with
  ``GenerationParams(extra={"session_id": ..., "request_id": ...})`` (the call wins).

Tools, structured output, reasoning (PROTOCOLS.md §6.2, §7, §8):

- ``tools`` become ``functions``; ``tool_choice`` "auto"/"none" is ``function_call``
  "auto"/"none", a tool's name ``{"name": ...}``; "required" forces the tool when there
  is exactly one (GigaChat cannot force "any of several": then "auto", logged at DEBUG).
  With tools and no ``tool_choice`` "auto" is sent, so the model may call them.
- The answer's single ``function_call`` (arguments an object) is ``Completion.tool_calls``;
  its ``functions_state_id`` is the call's id, sent back on the assistant message when it
  looks like one (a UUID), so GigaChat keeps the function context.
- History: GigaChat takes one call per assistant message, so an assistant message with
  several calls (from a parallel-calling provider) is replayed as call/result pairs. A
  tool result becomes ``{"role": "function", "name", "content"}`` whose content must be a
  JSON object: a result that is not one is sent as ``{"result": <it>}``.
- ``response_format``: a schema is sent as ``{"type": "json_schema", "schema": ...}``;
  GigaChat has no JSON-object mode, so "json" is the schema ``{"type": "object"}``.
- ``reasoning_effort``: "low"/"medium"/"high" as they are, "minimal" as "low", "xhigh" and
  "max" as "high", "none" not sent. The thinking text (``reasoning_content``) is
  ``Completion.reasoning``; ``usage.precached_prompt_tokens`` its cached prompt tokens.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import os
import re
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import requests

from ..auth import TokenCache, time_left
from ..config import ProviderConfig
from ..errors import (
    AuthenticationError,
    ConfigurationError,
    NotSupportedError,
    ProviderError,
    ResponseFormatError,
)
from ..http import HttpProvider, error_from_status, error_message_from_body, parse_retry_after, provider_config
from ..reading import close_response
from ..streaming import iter_sse_json, stream_error
from ..validation import is_real
from ..types import Completion, Embeddings, GenerationParams, Message, Prompt, TextStream, TokenCount, ToolCall
from .base import EmbeddingLimits
from ..capabilities import ALL_CAPABILITIES
from .chat_format import chunk_deltas, parse_answer

__all__ = ["GigaChatProvider", "SCOPES", "DEFAULT_AUTH_URL"]

logger = logging.getLogger("multi_llm_orchestrator.providers.gigachat")

SCOPES = ("GIGACHAT_API_PERS", "GIGACHAT_API_B2B", "GIGACHAT_API_CORP")
DEFAULT_BASE_URL = "https://gigachat.devices.sberbank.ru/api/v1"
DEFAULT_AUTH_URL = "https://ngw.devices.sberbank.ru:9443/api/v2/oauth"
#: Seconds before expiry at which a cached token is replaced.
TOKEN_REFRESH_MARGIN = 60.0
#: Assumed lifetime when the OAuth answer has no usable ``expires_at``.
DEFAULT_TOKEN_LIFETIME = 30 * 60.0
DETERMINISTIC_TEMPERATURE = 0.001
RESERVED_EXTRA_PARAMS = ("messages", "stream")
#: The instruction langchain-gigachat puts before search queries for EmbeddingsGigaR.
GIGA_R_QUERY_PREFIX = "Дано предложение, необходимо найти его парафраз \nпредложение: "
#: ``extra`` keys (of ProviderConfig and of GenerationParams) that are headers, not body fields.
HEADER_EXTRAS = {"session_id": "X-Session-ID", "request_id": "X-Request-ID", "client_id": "X-Client-ID"}
REASONING_EFFORTS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class GigaChatProvider(HttpProvider):
    """Sber GigaChat (API v1) behind the common provider interface.

    ``config.api_key`` is the *authorization key* (base64 of ``client_id:client_secret``
    from the Sber cabinet); ``config.scope`` one of ``GIGACHAT_API_PERS`` (default),
    ``GIGACHAT_API_B2B``, ``GIGACHAT_API_CORP``; ``config.model`` defaults to "GigaChat".
    A ready access token may be passed as ``config.extra["access_token"]``: it is used
    until the API answers 401, then replaced through OAuth if an authorization key is
    configured. ``base_url`` and ``auth_url`` default to the public API.

    >>> giga = GigaChatProvider(ProviderConfig(                       # doctest: +SKIP
    ...     name="giga", api_key=os.environ["GIGACHAT_CREDENTIALS"], scope="GIGACHAT_API_PERS",
    ...     ca_bundle="/etc/ssl/russian_trusted_root_ca.pem"))
    >>> giga.generate("Привет!")                                      # doctest: +SKIP
    'Здравствуйте! Чем могу помочь?'
    """

    type_name = "gigachat"
    default_model = "GigaChat"
    declared_capabilities = ALL_CAPABILITIES
    default_embedding_model = "Embeddings"
    embedding_limits = EmbeddingLimits(max_texts=90, max_chars=1_000_000)
    supports_balance = True
    default_base_url = DEFAULT_BASE_URL
    tls_hint = (
        "pass ca_bundle='/path/to/russian_trusted_root_ca.pem' (or set GIGACHAT_CA_BUNDLE_FILE) "
        "with the Russian Trusted Root CA from https://www.gosuslugi.ru/crt; "
        "verify_ssl=False is for development only"
    )

    def __init__(self, config: ProviderConfig) -> None:
        # Checked before HttpProvider builds a Session, so a bad config leaks nothing.
        if not isinstance(config, ProviderConfig):
            raise ConfigurationError(f"GigaChatProvider takes a ProviderConfig; got {type(config).__name__}")
        scope = config.scope or SCOPES[0]
        if scope not in SCOPES:
            raise ConfigurationError(
                f"Unknown GigaChat scope {scope!r} for provider {config.name!r}; valid: {', '.join(SCOPES)}"
            )
        auth_key = _clean_secret(config.api_key, "api_key", config.name)
        if auth_key and auth_key.lower().startswith("basic "):
            auth_key = auth_key[6:].strip()  # pasted with its header prefix
        access_token = _clean_secret(config.extra.get("access_token"), "extra['access_token']", config.name)
        if not auth_key and not access_token:
            raise ConfigurationError(
                f"GigaChat provider {config.name!r} needs api_key: the authorization key from the Sber "
                "cabinet (environment: GIGACHAT_CREDENTIALS), or extra['access_token'] with a ready "
                "token (GIGACHAT_ACCESS_TOKEN)"
            )
        fixed_headers = _id_headers(config.extra, f"ProviderConfig.extra of GigaChat provider {config.name!r}")
        super().__init__(config)
        self._id_headers = fixed_headers
        self.scope = scope
        self.auth_url = config.auth_url or DEFAULT_AUTH_URL
        # requests normalises URLs; compare error responses against the same form.
        self._auth_request_url = requests.Request("POST", self.auth_url).prepare().url
        self._auth_key = auth_key
        if auth_key and not _is_base64(auth_key):
            logger.warning(
                "api_key of GigaChat provider %r is not base64: GigaChat expects the authorization key "
                "(base64 of client_id:client_secret), not the client secret",
                self.name,
            )
        # A given token is used until a 401 (then replaced through OAuth when there is a
        # key). Threads that waited for a failed OAuth request share its error rather than
        # repeat it: 32 callers with a wrong key make one OAuth request, not 32.
        self._tokens = TokenCache(
            self._fetch_token if auth_key else None, owner=self.name, token=access_token, share_failures=True
        )
        default_prefix = GIGA_R_QUERY_PREFIX if self.embedding_model == "EmbeddingsGigaR" else ""
        self._query_prefix = config.extra.get("query_prefix", default_prefix)
        if not isinstance(self._query_prefix, str):
            raise ConfigurationError(f"extra['query_prefix'] of GigaChat provider {config.name!r} must be a str")

    def token_sharing(self) -> Optional[Tuple[TokenCache, str, Optional[str]]]:
        """OAuth tokens are shared per authorization key, scope and OAuth endpoint, and
        encrypted with the authorization key (whoever holds it can get a token anyway)."""
        if not self._auth_key:
            return None
        return self._tokens, f"gigachat|{self.auth_url}|{self.scope}|{self._auth_key}", self._auth_key

    @classmethod
    def from_env(cls, name: str = "gigachat", **overrides: Any) -> "GigaChatProvider":
        """A provider configured like the official SDK, from ``GIGACHAT_*`` variables.

        Reads GIGACHAT_CREDENTIALS, GIGACHAT_SCOPE, GIGACHAT_MODEL, GIGACHAT_BASE_URL,
        GIGACHAT_AUTH_URL, GIGACHAT_VERIFY_SSL_CERTS, GIGACHAT_CA_BUNDLE_FILE,
        GIGACHAT_TIMEOUT and GIGACHAT_ACCESS_TOKEN; keyword arguments (ProviderConfig
        fields) override them.

        >>> giga = GigaChatProvider.from_env(timeout=60)               # doctest: +SKIP
        """
        env = {key: value for key, value in os.environ.items() if key.startswith("GIGACHAT_") and value.strip()}
        fields: Dict[str, Any] = {
            "name": name,
            "api_key": env.get("GIGACHAT_CREDENTIALS"),
            "scope": env.get("GIGACHAT_SCOPE"),
            "model": env.get("GIGACHAT_MODEL"),
            "base_url": env.get("GIGACHAT_BASE_URL"),
            "auth_url": env.get("GIGACHAT_AUTH_URL"),
            "ca_bundle": env.get("GIGACHAT_CA_BUNDLE_FILE"),
        }
        if "GIGACHAT_VERIFY_SSL_CERTS" in env:
            fields["verify_ssl"] = _env_bool(env, "GIGACHAT_VERIFY_SSL_CERTS")
        if "GIGACHAT_TIMEOUT" in env:
            fields["timeout"] = _env_seconds(env, "GIGACHAT_TIMEOUT")
        extra: Dict[str, Any] = {}
        if "GIGACHAT_ACCESS_TOKEN" in env:
            extra["access_token"] = env["GIGACHAT_ACCESS_TOKEN"]
        extra.update(overrides.pop("extra", None) or {})
        fields.update(overrides)
        fields["extra"] = extra
        if not fields.get("api_key") and not extra.get("access_token"):
            raise ConfigurationError(
                "GigaChat credentials are missing: set GIGACHAT_CREDENTIALS to the authorization key "
                "from the Sber cabinet (or GIGACHAT_ACCESS_TOKEN to a ready access token)"
            )
        return cls(provider_config("GigaChatProvider.from_env", fields))

    def __repr__(self) -> str:
        return f"GigaChatProvider(name={self.name!r}, model={self.model!r}, scope={self.scope!r})"

    # Public interface ---------------------------------------------------------------

    def complete(
        self, messages: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None
    ) -> Completion:
        started = time.perf_counter()
        messages, params = self._prepare(messages, params)
        limit = self._timeout(timeout)
        deadline = time.monotonic() + limit
        response = self._send(
            "POST", "/chat/completions", deadline, json_body=self._payload(messages, params, stream=False),
            headers=self._call_headers(params),
        )
        answer = parse_answer(self.read_json(response, limit), self.name, what="GigaChat chat/completions")
        return self._completion(answer.text, started, usage=answer.usage, finish_reason=answer.finish_reason,
                                model=answer.model, tool_calls=answer.tool_calls, reasoning=answer.reasoning)

    def stream(
        self, messages: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None
    ) -> TextStream:
        """Stream the answer; the request (and any 401 refresh) happens before this returns."""
        messages, params = self._prepare(messages, params)
        limit = self._timeout(timeout)
        deadline = time.monotonic() + limit
        response = self._send(
            "POST",
            "/chat/completions",
            deadline,
            json_body=self._payload(messages, params, stream=True),
            headers={"Accept": "text/event-stream", "Cache-Control": "no-store", **self._call_headers(params)},
            stream=True,
        )
        content_type = response.headers.get("Content-Type", "text/event-stream")
        if not content_type.startswith("text/event-stream"):
            _, text = self.read_error_body(response)
            close_response(response)
            raise ResponseFormatError(
                f"GigaChat answered a stream request with {content_type!r}, not text/event-stream: {text[:120]!r}",
                provider=self.name,
            )
        events = iter_sse_json(self.lines(response, limit), provider=self.name, error_of=self._event_error)
        # on_close also covers a stream dropped before its first read (the generator's
        # own cleanup only runs once it has started).
        return self._text_stream(chunk_deltas(events, self.name), on_close=lambda: close_response(response))

    def health_check(self, timeout: Optional[float] = None) -> bool:
        """True when ``GET /models`` answers with our token; never raises."""
        return self.probe(lambda: self.list_models(timeout))

    def list_models(self, timeout: Optional[float] = None) -> List[str]:
        """Model ids from ``GET /models`` (e.g. "GigaChat", "GigaChat-2-Max")."""
        limit = self._timeout(timeout)
        data = self.read_json(self._send("GET", "/models", time.monotonic() + limit), limit)
        models = data.get("data") if isinstance(data, dict) else None
        if not isinstance(models, list):
            raise ResponseFormatError(f"GET /models has no data list: {str(data)[:120]!r}", provider=self.name)
        return [m["id"] for m in models if isinstance(m, dict) and isinstance(m.get("id"), str)]

    def embed(
        self, texts: Sequence[str], *, purpose: Optional[str] = None, timeout: Optional[float] = None
    ) -> Embeddings:
        """Vectors from ``POST /embeddings`` (1024 numbers each for "Embeddings")."""
        started = time.perf_counter()
        texts = self._embedding_input(texts, purpose)
        if purpose == "query" and self._query_prefix:
            texts = [self._query_prefix + text for text in texts]
        limit = self._timeout(timeout)
        response = self._send(
            "POST", "/embeddings", time.monotonic() + limit, json_body={"model": self.embedding_model, "input": texts}
        )
        from .embedding_format import parse_data_list  # loaded by the first embed, not the import

        vectors, usage, model = parse_data_list(self.read_json(response, limit), len(texts), self.name, "GigaChat embeddings")
        return self._embeddings(vectors, started, usage=usage, model=model)

    def count_tokens(self, prompt: Prompt, *, timeout: Optional[float] = None) -> TokenCount:
        """GigaChat's count of the prompt's text for the chat model (``POST /tokens/count``)."""
        messages = self._prepare(prompt, None)[0]
        limit = self._timeout(timeout)
        response = self._send(
            "POST", "/tokens/count", time.monotonic() + limit,
            json_body={"model": self.model, "input": [m.content for m in messages]},
        )
        body = self.read_json(response, limit)
        if not isinstance(body, list) or len(body) != len(messages):
            raise ResponseFormatError(
                f"GigaChat tokens/count answered {str(body)[:120]!r}: expected a list of {len(messages)} item(s)",
                provider=self.name,
            )
        total = 0
        for index, item in enumerate(body):
            tokens = item.get("tokens") if isinstance(item, dict) else None
            if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
                raise ResponseFormatError(
                    f"GigaChat tokens/count item {index} has no token count: {str(item)[:80]!r}", provider=self.name
                )
            total += tokens
        return TokenCount(total, estimated=False, provider=self.name)

    def balance(self, *, timeout: Optional[float] = None) -> Dict[str, float]:
        """Tokens left per model family from ``GET /balance``, e.g.
        ``{"GigaChat": 900000, "GigaChat-Pro": 991490, "embeddings": 9999967}``."""
        limit = self._timeout(timeout)
        try:
            response = self._send("GET", "/balance", time.monotonic() + limit)
        except AuthenticationError as exc:
            if exc.status_code != 403:
                raise
            raise NotSupportedError(
                f"GigaChat {self.name!r} has no balance: GET /balance answered 403, which GigaChat does for "
                "pay-as-you-go accounts (balances exist only for prepaid token packages)",
                provider=self.name, operation="balance",
            ) from None
        body = self.read_json(response, limit)
        items = body.get("balance") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise ResponseFormatError(f"GigaChat /balance has no balance list: {str(body)[:120]!r}", provider=self.name)
        result: Dict[str, float] = {}
        for item in items:
            usage = item.get("usage") if isinstance(item, dict) else None
            value = item.get("value") if isinstance(item, dict) else None
            if not isinstance(usage, str) or not is_real(value):  # 1e400 / NaN must not reach Prometheus
                raise ResponseFormatError(f"GigaChat /balance item {str(item)[:80]!r} lacks usage or value",
                                          provider=self.name)
            result[usage] = value
        return result

    # Requests -------------------------------------------------------------------------

    def _payload(self, messages: List[Message], params: GenerationParams, *, stream: bool) -> Dict[str, Any]:
        payload: Dict[str, Any] = {"model": self.model, "messages": _wire_messages(messages)}
        if params.temperature is not None:
            payload["temperature"] = params.temperature if params.temperature > 0 else DETERMINISTIC_TEMPERATURE
        if params.top_p is not None:
            payload["top_p"] = params.top_p
        if params.max_tokens is not None:
            payload["max_tokens"] = params.max_tokens
        if params.stop:
            logger.debug("GigaChat %r: GigaChat has no stop sequences; ignoring stop=%r", self.name, params.stop)
        if params.tools or params.tool_choice is not None:
            self._functions(params, payload)
        response_format = params.response_format
        if response_format is not None:
            schema = {"type": "object"} if response_format == "json" else response_format
            payload["response_format"] = {"type": "json_schema", "schema": schema}
        effort = REASONING_EFFORTS.get(params.reasoning_effort or "")
        if effort is not None:
            payload["reasoning_effort"] = effort
        if params.extra:
            reserved = sorted(set(params.extra) & set(RESERVED_EXTRA_PARAMS))
            if reserved:
                raise ConfigurationError(
                    f"params.extra may not set {', '.join(reserved)}: pass messages as the prompt and use stream()"
                )
            payload.update((key, value) for key, value in params.extra.items() if key not in HEADER_EXTRAS)
        if stream:
            payload["stream"] = True
        return payload

    def _functions(self, params: GenerationParams, payload: Dict[str, Any]) -> None:
        tools = params.tools or []
        if tools:
            payload["functions"] = [
                {"name": tool.name, "description": tool.description, "parameters": tool.parameters} for tool in tools
            ]
        choice = params.tool_choice or "auto"
        if choice == "required":
            if len(tools) == 1:
                choice = tools[0].name
            else:
                logger.debug("GigaChat %r cannot force one of several functions: tool_choice 'required' sent as 'auto'",
                             self.name)
                choice = "auto"
        payload["function_call"] = choice if choice in ("auto", "none") else {"name": choice}

    def _call_headers(self, params: GenerationParams) -> Dict[str, str]:
        """X-Session-ID, X-Request-ID, X-Client-ID: the provider's, overridden by the call's."""
        if not params.extra or not any(key in params.extra for key in HEADER_EXTRAS):
            return self._id_headers
        return {**self._id_headers, **_id_headers(params.extra, "GenerationParams.extra")}

    def _send(
        self,
        method: str,
        path: str,
        deadline: float,
        *,
        json_body: Any = None,
        headers: Optional[Dict[str, str]] = None,
        stream: bool = False,
    ) -> requests.Response:
        """An API request with the cached token; on 401 one refresh and one retry."""

        def send(token: str, timeout: float) -> requests.Response:
            send_headers = {"Accept": "application/json", **(headers or {}), "Authorization": f"Bearer {token}"}
            return self.request(
                method, self.base_url + path, timeout=timeout, json_body=json_body, headers=send_headers, stream=stream
            )

        return self._tokens.call(send, deadline)

    def _fetch_token(self, deadline: float) -> Tuple[str, float]:
        """A new token from OAuth and how long to use it (TokenCache's ``fetch``)."""
        import uuid  # here, not at the top: it loads ``platform``, import time for one header

        timeout = time_left(deadline, self.name)
        response = self.request(
            "POST",
            self.auth_url,
            timeout=timeout,
            data={"scope": self.scope},
            headers={
                "Authorization": f"Basic {self._auth_key}",
                "RqUID": str(uuid.uuid4()),
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
        )
        # No preview of the body in errors: it would hold (part of) the token.
        body = self.read_json(response, timeout, preview=False)
        value = body.get("access_token", body.get("tok")) if isinstance(body, dict) else None
        if not isinstance(value, str) or not value.strip() or not value.isprintable() or " " in value.strip():
            raise ResponseFormatError(
                "the GigaChat OAuth answer has no usable access_token", provider=self.name
            )
        lifetime = _lifetime(body.get("expires_at", body.get("exp")))
        logger.debug("GigaChat %r: new access token, valid for %.0f s", self.name, lifetime)
        # Refresh 60 s early, or halfway for a token that lives under two minutes.
        return value.strip(), lifetime - min(TOKEN_REFRESH_MARGIN, lifetime / 2)

    # Errors ---------------------------------------------------------------------------

    def error_for_response(self, response: requests.Response) -> ProviderError:
        body, text = self.read_error_body(response)
        status = response.status_code
        # A server that echoes our secrets is scrubbed by HttpProvider.request.
        message = error_message_from_body(body, text)
        retry_after = parse_retry_after(response.headers)
        if response.url == self._auth_request_url and 400 <= status < 500 and status != 429:
            return self._oauth_error(status, body, message)
        if status == 401:
            message = f"the access token was rejected: {message}"
            if not self._auth_key:
                message += (
                    "; no authorization key is configured to get a new one: pass api_key "
                    "(GIGACHAT_CREDENTIALS) or a fresh access token"
                )
        elif status == 403:
            message = f"access denied: {message}; check that the scope {self.scope} allows this model and endpoint"
        elif status == 402:
            message = f"payment required: {message}; the account's token balance is exhausted"
        elif status == 404 and "model" in message.lower():
            message = f"{message}: model {self.model!r}; list_models() shows the available ones"
        return error_from_status(status, f"GigaChat: {message}", provider=self.name, retry_after=retry_after)

    def _oauth_error(self, status: int, body: Any, message: str) -> AuthenticationError:
        code = body.get("code") if isinstance(body, dict) else None
        code_text = f" (code {code})" if code is not None else ""
        if code == 7 or "scope" in message.lower():
            text = (
                f"GigaChat OAuth refused scope {self.scope}: {message}{code_text}. The scope does not match "
                f"the authorization key: set scope to the one the key was issued for ({', '.join(SCOPES)})"
            )
        else:
            text = (
                f"GigaChat OAuth refused the authorization key: {message}{code_text}. Check api_key "
                "(GIGACHAT_CREDENTIALS): it is the base64 authorization key from the Sber cabinet"
            )
        return AuthenticationError(text, provider=self.name, status_code=status)

    # Streaming ------------------------------------------------------------------------

    def _event_error(self, event: Dict[str, Any], provider: str) -> Optional[ProviderError]:
        status = event.get("status")
        if "choices" not in event and isinstance(status, int) and status >= 400:
            # An API error body sent as an event: reported like the same status.
            return error_from_status(status, f"GigaChat: {error_message_from_body(event)}", provider=provider)
        return stream_error(event, provider)


def _wire_messages(messages: List[Message]) -> List[Dict[str, Any]]:
    """GigaChat accepts one system message, first: join all of them there. Tool calls
    and results become GigaChat's one-call assistant messages and "function" messages."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    wire: List[Dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    rest = [m for m in messages if m.role != "system"]
    if not getattr(messages, "has_tool_messages", True):
        wire.extend({"role": m.role, "content": m.content} for m in rest)
        return wire
    index = 0
    while index < len(rest):
        message = rest[index]
        index += 1
        if message.role == "tool":
            if not message.name:
                raise ConfigurationError(
                    "GigaChat needs the function name of a tool result: build it with Message.tool_result(call, "
                    "result), or set name= on the tool message"
                )
            wire.append(_function_result(message.name, message.content))
        elif message.tool_calls:
            results = []
            while index < len(rest) and rest[index].role == "tool":
                results.append(rest[index])
                index += 1
            # Ids may repeat (YandexGPT /v1 uses the function name as the id): a list per id.
            by_id: Dict[str, List[Message]] = {}
            in_order = []  # results without an id answer the calls in order
            for result in results:
                if result.tool_call_id:
                    by_id.setdefault(result.tool_call_id, []).append(result)
                else:
                    in_order.append(result)
            for position, call in enumerate(message.tool_calls):
                wire.append(_function_call(call, message.content if position == 0 else ""))
                same_id = by_id.get(call.id)
                result = same_id.pop(0) if same_id else (in_order.pop(0) if in_order else None)
                if result is not None:
                    wire.append(_function_result(result.name or call.name, result.content))
            # Results of no call here are sent by their own name.
            rest[index:index] = [result for group in by_id.values() for result in group] + in_order
        else:
            wire.append({"role": message.role, "content": message.content})
    return wire


def _function_call(call: ToolCall, content: str) -> Dict[str, Any]:
    message: Dict[str, Any] = {"role": "assistant", "content": content,
                               "function_call": {"name": call.name, "arguments": call.arguments}}
    if _UUID.fullmatch(call.id):  # GigaChat's own functions_state_id, not another provider's id
        message["functions_state_id"] = call.id
    return message


def _function_result(name: str, content: str) -> Dict[str, Any]:
    """A "function" message: GigaChat wants a JSON object in the content."""
    try:
        value = json.loads(content)
    except ValueError:
        text = json.dumps({"result": content}, ensure_ascii=False)
    else:
        text = content if isinstance(value, dict) else json.dumps({"result": value}, ensure_ascii=False)
    return {"role": "function", "name": name, "content": text}


def _id_headers(extra: Mapping[str, Any], where: str) -> Dict[str, str]:
    """The X-Session-ID/X-Request-ID/X-Client-ID headers set in ``extra``, checked."""
    headers = {}
    for key, header in HEADER_EXTRAS.items():
        value = extra.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip() or not value.isprintable() or not value.isascii():
            raise ConfigurationError(f"{where}[{key!r}] must be a printable ASCII str (the {header} header); got {value!r}")
        headers[header] = value.strip()
    return headers


def _lifetime(expires_at: Any) -> float:
    """Seconds until ``expires_at`` (epoch ms, or seconds when below 1e12)."""
    try:
        epoch = float(expires_at)
    except (TypeError, ValueError, OverflowError):
        return DEFAULT_TOKEN_LIFETIME
    if not math.isfinite(epoch):  # 1e400 or NaN: a token kept for ever, or never usable
        return DEFAULT_TOKEN_LIFETIME
    if epoch >= 1e12:
        epoch /= 1000.0
    lifetime = epoch - time.time()
    if lifetime <= 0:
        logger.warning(
            "GigaChat token expiry is in the past by %.0f s: is the clock wrong? Assuming %.0f s",
            -lifetime, DEFAULT_TOKEN_LIFETIME,
        )
        return DEFAULT_TOKEN_LIFETIME
    return lifetime


def _clean_secret(value: Any, field: str, name: str) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{field} of GigaChat provider {name!r} must be a str; got {type(value).__name__}")
    value = value.strip()
    if value and not value.replace(" ", "").isprintable():
        # Never echo it: this is a secret.
        raise ConfigurationError(
            f"{field} of GigaChat provider {name!r} contains control characters: paste it exactly as issued"
        )
    return value or None


def _is_base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
        return True
    except (binascii.Error, ValueError):
        return False


def _env_bool(env: Mapping[str, str], key: str) -> bool:
    value = env[key].strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"{key} must be true or false; got {env[key]!r}")


def _env_seconds(env: Mapping[str, str], key: str) -> float:
    try:
        seconds = float(env[key])
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigurationError(f"{key} must be a number of seconds > 0; got {env[key]!r}")
    return seconds

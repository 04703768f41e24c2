"""YandexGPT (Yandex AI Studio, formerly Foundation Models) over its native REST API.

Configuration (``ProviderConfig`` fields and ``extra`` keys):

- ``folder_id`` (required): the Yandex Cloud folder that holds the model; it goes into
  the model URI ``gpt://<folder_id>/<model>``.
- ``model``: ``"yandexgpt/latest"`` (default), ``"yandexgpt-lite/latest"``, any other
  model name, or a full URI (``gpt://...``, ``ds://...``) which is sent unchanged.
- ``api_key`` (required unless ``token_provider`` is given): the credential, whose kind
  is chosen explicitly by ``extra["auth"]``:

  - ``"iam"`` (default): an IAM token, sent as ``Authorization: Bearer <token>`` with
    ``x-folder-id: <folder_id>``. IAM tokens live at most 12 hours.
  - ``"api-key"``: a service-account API key, sent as ``Authorization: Api-Key <key>``
    without ``x-folder-id`` (Yandex uses the service account's folder).

- ``token_provider`` (keyword of the constructor, or ``extra["token_provider"]``): a
  callable returning a fresh token, for long-running processes. It is called when the
  cached token is older than ``extra["token_max_age"]`` seconds (default 3600, at most
  43200) and once after a 401, after which the call is retried once. ``api_key``, when
  also given, is used until it reaches that age. Concurrent callers share one refresh.
- ``base_url``: default ``https://llm.api.cloud.yandex.net``.

Decisions where Yandex differs from the common parameters:

- ``temperature`` must be in [0, 1] (Yandex's range): anything above is a
  ``ConfigurationError``, never silently clamped.
- ``top_p`` and ``stop`` do not exist in the Yandex API: they are ignored (logged at
  DEBUG), so one ``GenerationParams`` can be shared by a Router over several providers.
- ``GenerationParams.extra`` passes Yandex's own fields through: ``reasoningOptions`` into
  ``completionOptions``; ``tools``, ``toolChoice``, ``parallelToolCalls``, ``jsonObject``
  and ``jsonSchema`` at the top level. Other keys are ignored (logged at DEBUG).
- Tools (PROTOCOLS.md §6.3): ``tools`` are sent as ``[{"function": {...}}]``,
  ``tool_choice`` as ``toolChoice`` (``{"mode": "AUTO"|"NONE"|"REQUIRED"}`` or
  ``{"functionName": ...}``). An ``ALTERNATIVE_STATUS_TOOL_CALLS`` answer's
  ``toolCallList`` becomes ``Completion.tool_calls`` with generated ids (Yandex has none);
  a float argument whose schema says integer (protobuf numbers are doubles) is made an
  int. History: an assistant message with calls is sent as its ``toolCallList``, the
  tool results that follow it as one ``user`` message with a ``toolResultList`` (matched
  by name, so a result needs the tool's name: ``Message.tool_result`` sets it).
- ``response_format``: "json" is ``jsonObject: true``, a schema ``jsonSchema: {"schema"}``.
- ``reasoning_effort``: "none" is ``reasoningOptions.mode = DISABLED``, any other
  ``ENABLED_HIDDEN`` (Yandex never returns the thinking text; its token count comes in
  ``usage.completionTokensDetails.reasoningTokens``).
- Streaming: Yandex sends the whole text so far in every frame; the stream yields only
  the new part. A frame whose text does not extend the previous one replaces it: the
  new text is yielded whole (and a warning logged), as the wire protocol prescribes.
  The stream ends at the first frame whose status is final (anything but ``PARTIAL``;
  a missing or ``UNSPECIFIED`` status is read as "more may follow") or at the end of the
  body; usage and finish reason come from the last frame.
- Embeddings: ``POST /foundationModels/v1/textEmbedding`` takes one text per request, so
  ``embed`` sends each text as its own request on a bounded thread pool of this provider
  (``extra["embedding_concurrency"]``, default 4: the quota is 10 requests/s) and returns
  the vectors in input order; the first failure fails the batch and cancels the texts
  not sent yet. ``embedding_model`` defaults to ``text-search-doc/latest`` (URI
  ``emb://<folder_id>/<model>``); with ``purpose="query"`` the ``text-search-query``
  sibling of a ``text-search-doc`` model is used (the pair shares one vector space).
  ``extra["dimensions"]`` is sent as ``dim`` for models with several sizes.
- ``count_tokens`` asks ``tokenizeCompletion`` with the whole completion request, so the
  count includes the chat template (what the model will really see).
- ``health_check`` calls the free ``tokenize`` endpoint. Where that endpoint is not
  available (404/405/501, e.g. behind a gateway that only forwards completions), it
  falls back to a completion of at most one token.

Example::

    provider = YandexGPTProvider(ProviderConfig(
        name="yandex", api_key=iam_token, folder_id="b1g...", model="yandexgpt-lite/latest"))
    print(provider.generate("Привет!"))

    # Service-account API key, or a refreshing IAM token:
    YandexGPTProvider(ProviderConfig(name="y", api_key=key, folder_id="b1g...",
                                     extra={"auth": "api-key"}))
    YandexGPTProvider(ProviderConfig(name="y", folder_id="b1g..."),
                      token_provider=lambda: fetch_iam_token())
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from ..auth import TokenCache
from ..config import ProviderConfig
from ..errors import (
    AuthenticationError,
    ConfigurationError,
    ProviderError,
    ResponseFormatError,
)
from ..http import HttpProvider, error_from_status, error_message_from_body, parse_retry_after, provider_config
from ..streaming import drain, iter_json_lines
from ..capabilities import ALL_CAPABILITIES
from ..types import (
    Completion, Embeddings, GenerationParams, Message, Prompt, StreamEnd, TextStream, TokenCount, ToolCall, Usage,
)
from .chat_format import new_call_id, parse_arguments
from ..validation import check_int
from .base import EmbeddingLimits
from .embedding_format import check_dimensions, parse_vector

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

__all__ = ["YandexGPTProvider"]

logger = logging.getLogger("multi_llm_orchestrator.providers.yandexgpt")

COMPLETION_PATH = "/foundationModels/v1/completion"
TOKENIZE_PATH = "/foundationModels/v1/tokenize"
TOKENIZE_COMPLETION_PATH = "/foundationModels/v1/tokenizeCompletion"
EMBEDDING_PATH = "/foundationModels/v1/textEmbedding"
DOCUMENT_MODEL, QUERY_MODEL = "text-search-doc", "text-search-query"
DEFAULT_EMBEDDING_CONCURRENCY = 4
AUTH_MODES = ("iam", "api-key")
DEFAULT_TOKEN_MAX_AGE = 3600.0
IAM_TOKEN_LIFETIME = 12 * 3600.0
STATUS_PREFIX = "ALTERNATIVE_STATUS_"
FINISH_REASONS = {
    "FINAL": "stop",
    "TRUNCATED_FINAL": "length",
    "CONTENT_FILTER": "content_filter",
    "TOOL_CALLS": "tool_calls",
}
# Statuses after which more frames may follow.
NOT_FINAL = ("", "PARTIAL", "UNSPECIFIED")
OPTION_EXTRAS = ("reasoningOptions",)
TOP_LEVEL_EXTRAS = ("tools", "toolChoice", "parallelToolCalls", "jsonObject", "jsonSchema")
# Tokens are printable ASCII without spaces; anything else would also end up quoted in
# the "invalid header" error of requests, which must never show a secret.
TOKEN_PATTERN = re.compile(r"[\x21-\x7e]+")
FOLDER_PATTERN = re.compile(r"[A-Za-z0-9._-]+")

TokenProvider = Callable[[], str]


def _token_problem(value: Any) -> Optional[str]:
    """What is wrong with a token value, in words that never include the value."""
    if not isinstance(value, str):
        return f"a {type(value).__name__}, not a str"
    value = value.strip()
    if not value:
        return "an empty string"
    if not TOKEN_PATTERN.fullmatch(value):
        return "a value with spaces or control characters (paste the token without 'Bearer ')"
    return None


class YandexGPTProvider(HttpProvider):
    """YandexGPT through ``POST /foundationModels/v1/completion`` (see the module docstring
    for every setting and decision).

    >>> provider = YandexGPTProvider(ProviderConfig(                    # doctest: +SKIP
    ...     name="yandex", api_key="t1.…", folder_id="b1g…", model="yandexgpt/latest"))
    >>> provider.generate("Привет!")                                     # doctest: +SKIP
    'Привет! Чем могу помочь?'
    """

    type_name = "yandexgpt"
    default_model = "yandexgpt/latest"
    declared_capabilities = ALL_CAPABILITIES
    default_embedding_model = f"{DOCUMENT_MODEL}/latest"
    # One text per request on the wire; a Router batch is fanned out by ``embed``.
    embedding_limits = EmbeddingLimits(max_texts=32, max_chars=32 * 8_000)
    default_base_url = "https://llm.api.cloud.yandex.net"

    def __init__(self, config: ProviderConfig, *, token_provider: Optional[TokenProvider] = None) -> None:
        super().__init__(config)
        try:
            self._configure(config, token_provider)
        except BaseException:
            self.session.close()
            raise

    def _configure(self, config: ProviderConfig, token_provider: Optional[TokenProvider]) -> None:
        name = self.name
        folder_id = config.folder_id.strip() if isinstance(config.folder_id, str) else ""
        if not folder_id:
            raise ConfigurationError(
                f"YandexGPT provider {name!r} needs folder_id: set ProviderConfig(folder_id='b1g...') "
                "or YC_FOLDER_ID to the ID of the folder that holds the model"
            )
        if not FOLDER_PATTERN.fullmatch(folder_id):
            raise ConfigurationError(
                f"folder_id of YandexGPT provider {name!r} must be a folder ID such as 'b1g...'; got {folder_id!r}"
            )
        self.folder_id = folder_id

        auth = config.extra.get("auth", "iam")
        if auth not in AUTH_MODES:
            raise ConfigurationError(
                f"extra['auth'] of YandexGPT provider {name!r} must be 'iam' (IAM token, the default) "
                f"or 'api-key' (service-account API key); got {auth!r}"
            )
        self.auth_mode = auth

        if token_provider is None:
            token_provider = config.extra.get("token_provider")
        if token_provider is not None and not callable(token_provider):
            raise ConfigurationError(
                f"token_provider of YandexGPT provider {name!r} must be a callable returning a token; "
                f"got {type(token_provider).__name__}"
            )

        token = config.api_key
        if token is not None:
            problem = _token_problem(token)
            if problem:
                raise ConfigurationError(f"api_key of YandexGPT provider {name!r} is {problem}")
            token = token.strip()
        elif token_provider is None:
            raise ConfigurationError(
                f"YandexGPT provider {name!r} needs api_key: an IAM token (e.g. from `yc iam create-token`; "
                "extra['auth']='iam', the default) or a service-account API key with extra={'auth': 'api-key'}; "
                "or pass token_provider=<callable returning a fresh IAM token>"
            )

        max_age = config.extra.get("token_max_age", DEFAULT_TOKEN_MAX_AGE)
        if (
            isinstance(max_age, bool)
            or not isinstance(max_age, (int, float))
            or math.isnan(max_age)
            or not 0 < max_age <= IAM_TOKEN_LIFETIME
        ):
            raise ConfigurationError(
                f"extra['token_max_age'] of YandexGPT provider {name!r} must be seconds in (0, 43200] "
                f"(IAM tokens live at most 12 h); got {max_age!r}"
            )
        self._token_provider = token_provider
        self._token_max_age = float(max_age)
        # Without a token_provider the configured token is used until Yandex rejects it.
        self._tokens = TokenCache(
            self._fetch_token if token_provider is not None else None,
            owner=name,
            token=token,
            lifetime=self._token_max_age if token_provider is not None else None,
        )

        model = self.model
        self.model_uri = model if "://" in model else f"gpt://{folder_id}/{model}"
        self.completion_url = self.base_url + COMPLETION_PATH
        self.tokenize_url = self.base_url + TOKENIZE_PATH
        self.embedding_url = self.base_url + EMBEDDING_PATH
        self._embedding_concurrency = check_int(
            f"extra['embedding_concurrency'] of YandexGPT provider {name!r}",
            config.extra.get("embedding_concurrency", DEFAULT_EMBEDDING_CONCURRENCY), 1,
        )
        dimensions = config.extra.get("dimensions")
        self._dimensions = check_int(f"extra['dimensions'] of YandexGPT provider {name!r}", dimensions, 1, allow_none=True)
        self._embedding_pool: Optional[ThreadPoolExecutor] = None
        self._pool_lock = threading.Lock()

    def token_sharing(self) -> Optional[Tuple[TokenCache, str, Optional[str]]]:
        """IAM tokens from ``token_provider`` are shared per folder, endpoint and provider
        name; there is no credential here to encrypt them with, so the state's
        ``token_secret`` is used."""
        if self._token_provider is None:
            return None
        return self._tokens, f"yandexgpt|{self.base_url}|{self.folder_id}|{self.name}", None

    @classmethod
    def from_env(
        cls,
        name: str = "yandexgpt",
        *,
        environ: Optional[Mapping[str, str]] = None,
        token_provider: Optional[TokenProvider] = None,
        **fields: Any,
    ) -> "YandexGPTProvider":
        """A provider configured from environment variables:

        - ``YC_FOLDER_ID`` (required unless ``folder_id=`` is given);
        - ``YC_API_KEY`` (service-account API key) or ``YC_IAM_TOKEN`` (IAM token), one
          required unless ``token_provider`` is given. When both are set the API key is
          used (the official SDK's order), unless ``extra={"auth": "iam"}`` asks for the token;
        - ``YANDEXGPT_MODEL`` (optional, default ``yandexgpt/latest``);
        - ``YANDEXGPT_BASE_URL`` (optional, e.g. a proxy; default the Yandex host).

        Keywords (``ProviderConfig`` fields) override the environment; a key given as
        ``api_key=`` is of the kind ``extra["auth"]`` says (default IAM token).

        >>> provider = YandexGPTProvider.from_env(timeout=60)                # doctest: +SKIP
        """
        env = os.environ if environ is None else environ

        def read(variable: str) -> str:
            return (env.get(variable) or "").strip()

        settings: Dict[str, Any] = {"name": name, "model": read("YANDEXGPT_MODEL") or cls.default_model}
        for variable, field_name in (("YC_FOLDER_ID", "folder_id"), ("YANDEXGPT_BASE_URL", "base_url")):
            if read(variable):
                settings[field_name] = read(variable)
        extra = dict(fields.pop("extra", None) or {})
        wanted = extra.get("auth")
        variables = {"api-key": "YC_API_KEY", "iam": "YC_IAM_TOKEN"}
        order = [wanted] if wanted in variables else ["api-key", "iam"]
        if "api_key" not in fields:  # a key given as keyword is of the kind extra["auth"] says
            for mode in order:
                if read(variables[mode]):
                    settings["api_key"] = read(variables[mode])
                    extra.setdefault("auth", mode)
                    break
        settings.update(fields)
        settings["extra"] = extra

        missing = []
        if not settings.get("folder_id"):
            missing.append("YC_FOLDER_ID (the ID of the folder that holds the model)")
        if not settings.get("api_key") and token_provider is None and extra.get("token_provider") is None:
            names = " or ".join(variables[mode] for mode in order)
            missing.append(f"{names} (an IAM token from `yc iam create-token`, or a service-account API key)")
        if missing:
            raise ConfigurationError(
                "YandexGPT is not configured: set the environment variable " + "; and ".join(missing)
                + " (or pass the matching keyword: folder_id=, api_key=, token_provider=)"
            )
        config = provider_config("YandexGPTProvider.from_env", settings)
        return cls(config, token_provider=token_provider)

    # Public interface ---------------------------------------------------------------

    def complete(
        self, messages: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None
    ) -> Completion:
        started = time.perf_counter()
        messages, params = self._prepare(messages, params)
        payload = self._payload(messages, params, stream=False)
        body = self._tokens.call(
            lambda token, left: self.request_json(
                "POST", self.completion_url, timeout=left, json_body=payload, headers=self._headers(token)
            ),
            time.monotonic() + self._timeout(timeout),
        )
        text, status, usage, raw_calls = self._parse_result(body)
        calls = self._tool_calls(raw_calls, params) if raw_calls else []
        return self._completion(
            text, started, usage=usage or Usage(), finish_reason=_finish_reason(status), tool_calls=calls
        )

    def stream(
        self, messages: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None
    ) -> TextStream:
        messages, params = self._prepare(messages, params)
        payload = self._payload(messages, params, stream=True)
        # The request is sent here, so failures before the first frame (auth, 429, 5xx)
        # are raised by stream() itself and the Router can still fall back.
        lines = self._tokens.call(
            lambda token, left: self.stream_lines(
                "POST", self.completion_url, timeout=left, json_body=payload, headers=self._headers(token)
            ),
            time.monotonic() + self._timeout(timeout),
        )
        return self._text_stream(self._deltas(lines, params))

    def health_check(self, timeout: Optional[float] = None) -> bool:
        """True when Yandex accepts our credentials and knows the model; never raises.

        Uses ``tokenize`` (no generation tokens are spent); falls back to a completion
        of at most one token when ``tokenize`` answers 404/405/501.
        """
        try:
            limit = self._timeout(timeout)
            deadline = time.monotonic() + limit
            try:
                body = self._tokens.call(
                    lambda token, left: self.request_json(
                        "POST", self.tokenize_url, timeout=left,
                        json_body={"modelUri": self.model_uri, "text": "ping"}, headers=self._headers(token),
                    ),
                    deadline,
                )
                return isinstance(body, dict) and isinstance(body.get("tokens"), list)
            except ProviderError as exc:
                if exc.status_code not in (404, 405, 501):
                    raise
                logger.debug("provider %r: tokenize unavailable (HTTP %s), probing with a 1-token completion",
                             self.name, exc.status_code)
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.complete("ping", GenerationParams(max_tokens=1), timeout=left)
            return True
        except Exception as exc:
            logger.debug("provider %r: health check failed: %s: %s", self.name, type(exc).__name__,
                         self.scrub(str(exc)))
            return False

    def embed(
        self, texts: Sequence[str], *, purpose: Optional[str] = None, timeout: Optional[float] = None
    ) -> Embeddings:
        """Vectors from ``textEmbedding``, one request per text on this provider's bounded
        pool, in input order (see the module docstring)."""
        started = time.perf_counter()
        texts = self._embedding_input(texts, purpose)
        deadline = time.monotonic() + self._timeout(timeout)
        uri = self._embedding_uri(purpose)
        if len(texts) == 1:
            results = [self._embed_one(texts[0], uri, deadline)]
        else:
            from concurrent.futures import FIRST_EXCEPTION, wait  # only batches of texts need it

            pool = self._pool()
            futures = [pool.submit(self._embed_one, text, uri, deadline) for text in texts]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((future for future in futures if future in done and future.exception()), None)
            if failed is not None:
                for future in futures:
                    future.cancel()  # texts not sent yet are never sent
                raise failed.exception()  # type: ignore[misc]
            results = [future.result() for future in futures]
        vectors = [vector for vector, _ in results]
        check_dimensions(vectors, self.name, "YandexGPT textEmbedding")
        tokens = sum(count for _, count in results)
        model = uri.split("://", 1)[-1].split("/", 1)[-1]
        return self._embeddings(vectors, started, usage=Usage.of(tokens, 0), model=model)

    def count_tokens(self, prompt: Prompt, *, timeout: Optional[float] = None) -> TokenCount:
        """Yandex's count of the whole completion request (``tokenizeCompletion``), chat
        template included."""
        messages, params = self._prepare(prompt, None)
        payload = self._payload(messages, params, stream=False)
        body = self._tokens.call(
            lambda token, left: self.request_json(
                "POST", self.base_url + TOKENIZE_COMPLETION_PATH, timeout=left, json_body=payload,
                headers=self._headers(token),
            ),
            time.monotonic() + self._timeout(timeout),
        )
        tokens = body.get("tokens") if isinstance(body, dict) else None
        if not isinstance(tokens, list):
            raise ResponseFormatError(
                f"tokenizeCompletion answered without a 'tokens' list: {str(body)[:120]!r}", provider=self.name
            )
        return TokenCount(len(tokens), estimated=False, provider=self.name)

    def close(self) -> None:
        with self._pool_lock:
            pool, self._embedding_pool = self._embedding_pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        super().close()

    def _after_fork(self) -> None:
        super()._after_fork()  # a Session and locks of its own
        self._embedding_pool = None  # its threads stayed in the parent; a new pool on first use

    # Requests --------------------------------------------------------------------------

    def _pool(self) -> ThreadPoolExecutor:
        from concurrent.futures import ThreadPoolExecutor  # here: only embeddings use a pool

        with self._pool_lock:
            if self._embedding_pool is None:
                self._embedding_pool = ThreadPoolExecutor(
                    self._embedding_concurrency, thread_name_prefix=f"mlo-yandex-embed-{self.name}"
                )
            return self._embedding_pool

    def _embedding_uri(self, purpose: Optional[str]) -> str:
        model = self.embedding_model
        if purpose == "query" and model.startswith(DOCUMENT_MODEL):
            model = QUERY_MODEL + model[len(DOCUMENT_MODEL):]
        return model if "://" in model else f"emb://{self.folder_id}/{model}"

    def _embed_one(self, text: str, uri: str, deadline: float) -> Tuple[List[float], int]:
        payload: Dict[str, Any] = {"modelUri": uri, "text": text}
        if self._dimensions is not None:
            payload["dim"] = str(self._dimensions)  # int64 travels as a JSON string
        body = self._tokens.call(
            lambda token, left: self.request_json(
                "POST", self.embedding_url, timeout=left, json_body=payload, headers=self._headers(token)
            ),
            deadline,
        )
        if not isinstance(body, dict):
            raise ResponseFormatError(f"textEmbedding answered {str(body)[:120]!r}, not an object", provider=self.name)
        vector = parse_vector(body.get("embedding"), self.name, "YandexGPT textEmbedding: embedding")
        return vector, Usage.of(body.get("numTokens"), 0).prompt_tokens

    def _headers(self, token: str) -> Dict[str, str]:
        if self.auth_mode == "api-key":
            return {"Authorization": f"Api-Key {token}"}
        return {"Authorization": f"Bearer {token}", "x-folder-id": self.folder_id}

    def _fetch_token(self, deadline: float) -> Tuple[str, float]:
        """A token from ``token_provider``, used for ``token_max_age`` (TokenCache's ``fetch``)."""
        assert self._token_provider is not None
        try:
            value = self._token_provider()
        except Exception as exc:
            raise AuthenticationError(
                f"token_provider raised {type(exc).__name__}: it must return a fresh IAM token",
                provider=self.name,
                retryable=True,
            ) from None  # its message could quote a credential: only the type is shown
        problem = _token_problem(value)
        if problem:
            raise AuthenticationError(
                f"token_provider returned {problem}: it must return the token string alone", provider=self.name
            )
        logger.debug("provider %r: fetched a new token from token_provider", self.name)
        return value.strip(), self._token_max_age

    def _payload(self, messages: List[Message], params: GenerationParams, *, stream: bool) -> Dict[str, Any]:
        options: Dict[str, Any] = {"stream": stream}
        if params.temperature is not None:
            if not 0 <= params.temperature <= 1:
                raise ConfigurationError(
                    f"YandexGPT accepts temperature in [0, 1]; got {params.temperature!r}: "
                    "pass a value between 0 and 1"
                )
            options["temperature"] = params.temperature
        if params.max_tokens is not None:
            options["maxTokens"] = str(params.max_tokens)  # int64 travels as a JSON string
        if params.top_p is not None or params.stop:
            logger.debug("provider %r: YandexGPT has no top_p or stop; ignoring them", self.name)
        payload: Dict[str, Any] = {
            "modelUri": self.model_uri,
            "completionOptions": options,
            "messages": _wire_messages(messages),
        }
        if params.tools:
            payload["tools"] = [{"function": {"name": tool.name, "description": tool.description,
                                              "parameters": tool.parameters}} for tool in params.tools]
        choice = params.tool_choice
        if choice is not None:
            payload["toolChoice"] = {"mode": choice.upper()} if choice in ("auto", "none", "required") else {
                "functionName": choice}
        if params.response_format == "json":
            payload["jsonObject"] = True
        elif params.response_format is not None:
            payload["jsonSchema"] = {"schema": params.response_format}
        if params.reasoning_effort is not None:
            options["reasoningOptions"] = {"mode": "DISABLED" if params.reasoning_effort == "none" else "ENABLED_HIDDEN"}
        for key, value in params.extra.items():
            if key in OPTION_EXTRAS:
                options[key] = value
            elif key in TOP_LEVEL_EXTRAS:
                payload[key] = value
            else:
                logger.debug("provider %r: ignoring GenerationParams.extra[%r], not a YandexGPT field",
                             self.name, key)
        return payload

    # Responses -------------------------------------------------------------------------

    def _parse_result(self, body: Any) -> Tuple[str, str, Optional[Usage], Optional[List[Any]]]:
        """(text, status without its prefix, usage, raw tool calls) of a response or stream frame."""
        result = body.get("result", body) if isinstance(body, dict) else None
        try:
            alternative = result["alternatives"][0]
            message = alternative.get("message") or {}
            text = message.get("text") or ""
            status = str(alternative.get("status") or "")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ResponseFormatError(
                f"the response has no result.alternatives[0]: {str(body)[:120]!r}", provider=self.name
            ) from None
        if not isinstance(text, str):
            raise ResponseFormatError(
                f"result.alternatives[0].message.text is a {type(text).__name__}, not a string", provider=self.name
            )
        usage = result.get("usage")
        if isinstance(usage, dict):
            # Yandex sends the counts as strings (protobuf int64).
            details = usage.get("completionTokensDetails")  # may be {} or absent
            parsed = Usage.parse(
                usage.get("inputTextTokens"), usage.get("completionTokens"), usage.get("totalTokens"), provider=self.name,
                reasoning_tokens=details.get("reasoningTokens") if isinstance(details, dict) else None,
            )
        else:
            parsed = None
        call_list = message.get("toolCallList")
        raw_calls = call_list.get("toolCalls") if isinstance(call_list, dict) else None
        return text, status.removeprefix(STATUS_PREFIX), parsed, raw_calls if isinstance(raw_calls, list) else None

    def _tool_calls(self, raw_calls: List[Any], params: GenerationParams) -> List[ToolCall]:
        """ToolCalls of a ``toolCallList.toolCalls``, ids generated, integer arguments fixed."""
        schemas = {tool.name: tool.parameters for tool in params.tools or ()}
        calls = []
        for item in raw_calls:
            function = item.get("functionCall") if isinstance(item, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
                raise ResponseFormatError(f"a toolCalls item has no functionCall.name: {str(item)[:120]!r}",
                                          provider=self.name)
            name = function["name"]
            arguments = _integers(parse_arguments(function.get("arguments"), name, self.name), schemas.get(name))
            calls.append(ToolCall(new_call_id(), name, arguments))
        return calls

    def _deltas(self, lines: Iterator[str], params: GenerationParams) -> Iterator[Union[str, StreamEnd]]:
        """Cumulative frames -> new text only, then one StreamEnd (with the tool calls of
        the last frame that had any: cumulative too, so replaced, never appended)."""
        frames = iter_json_lines(lines, provider=self.name)
        previous = ""
        usage: Optional[Usage] = None
        status = ""
        seen = False
        raw_calls: Optional[List[Any]] = None
        try:
            for frame in frames:
                text, status, frame_usage, frame_calls = self._parse_result(frame)
                seen = True
                usage = frame_usage or usage
                raw_calls = frame_calls or raw_calls
                if text.startswith(previous):
                    delta = text[len(previous):]
                else:
                    logger.warning(
                        "provider %r: a stream frame rewrote the earlier text; yielding the new text whole",
                        self.name,
                    )
                    delta = text
                previous = text
                if delta:
                    yield delta
                if status not in NOT_FINAL:
                    drain(lines)
                    break
        finally:
            frames.close()
            close = getattr(lines, "close", None)
            if close is not None:
                close()
        if not seen:
            raise ResponseFormatError("the stream ended without any result frame", provider=self.name)
        calls = self._tool_calls(raw_calls, params) if raw_calls else None
        yield StreamEnd(usage=usage, finish_reason=_finish_reason(status), model=self.model, tool_calls=calls)

    def error_for_response(self, response: Any) -> ProviderError:
        """Yandex's ``{"error": {grpcCode, httpCode, message, ...}}`` or plain text -> typed error."""
        body, text = self.read_error_body(response)
        status = response.status_code
        detail = error_message_from_body(body, text)  # scrubbed by HttpProvider.request
        if status == 400:
            message = f"YandexGPT rejected the request: {detail}"
            if "folder" in detail.lower():
                message += "; check folder_id (with an API key it must be the service account's folder)"
        elif status == 401:
            if self.auth_mode == "api-key":
                message = (f"YandexGPT rejected the API key: {detail}; check api_key is a service-account "
                           "API key, or set extra['auth']='iam' for an IAM token")
            elif self._tokens.refreshable:
                message = (f"YandexGPT rejected the IAM token even after a refresh from token_provider: {detail}; "
                           "check that token_provider returns a valid IAM token")
            else:
                message = (f"YandexGPT rejected the IAM token: {detail}; IAM tokens live at most 12 h: pass a "
                           "fresh one, or token_provider=<callable> to refresh it automatically")
        elif status == 403:
            message = (f"YandexGPT denied access: {detail}; check folder_id ({self.folder_id!r}) and that the "
                       "account has the ai.languageModels.user role on that folder")
        elif status == 404:
            message = f"YandexGPT did not find {self.model_uri!r}: {detail}; check the model name and folder_id"
        elif status == 429:
            message = f"YandexGPT rate limit or quota exceeded: {detail}"
        elif status >= 500:
            message = f"YandexGPT server error: {detail}"
        else:
            message = f"YandexGPT answered HTTP {status}: {detail}"
        return error_from_status(
            status, message, provider=self.name, retry_after=parse_retry_after(response.headers)
        )


def _wire_messages(messages: List[Message]) -> List[Dict[str, Any]]:
    """Messages in Yandex's shape: ``text``; calls as ``toolCallList``; the tool results
    following a call message as one user message with a ``toolResultList``."""
    if not getattr(messages, "has_tool_messages", True):
        return [{"role": m.role, "text": m.content} for m in messages]
    wire: List[Dict[str, Any]] = []
    names: Dict[str, str] = {}  # tool_call_id -> function name, for results that lack it
    for message in messages:
        if message.tool_calls:
            names.update((call.id, call.name) for call in message.tool_calls)
            calls = [{"functionCall": {"name": call.name, "arguments": call.arguments}} for call in message.tool_calls]
            wire.append({"role": "assistant", "toolCallList": {"toolCalls": calls}})
        elif message.role == "tool":
            name = message.name or names.get(message.tool_call_id or "")
            if not name:
                raise ConfigurationError(
                    "YandexGPT matches tool results by function name: this tool message has none and answers no "
                    "call in the history; build it with Message.tool_result(call, result)"
                )
            result = {"functionResult": {"name": name, "content": message.content}}
            previous = wire[-1] if wire else None
            if previous is not None and "toolResultList" in previous:
                previous["toolResultList"]["toolResults"].append(result)
            else:
                wire.append({"role": "user", "toolResultList": {"toolResults": [result]}})
        else:
            wire.append({"role": message.role, "text": message.content})
    return wire


def _integers(arguments: Dict[str, Any], schema: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Protobuf sends every number as a double: ``5.0`` where the schema says integer is 5."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return arguments
    fixed = dict(arguments)
    for key, value in arguments.items():
        spec = properties.get(key)
        if isinstance(spec, dict) and spec.get("type") == "integer" and isinstance(value, float) and value.is_integer():
            fixed[key] = int(value)
    return fixed


def _finish_reason(status: str) -> Optional[str]:
    if status in NOT_FINAL:
        return None
    return FINISH_REASONS.get(status, status.lower())

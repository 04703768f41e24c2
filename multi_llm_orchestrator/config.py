"""Provider configuration: one dataclass shared by every provider type (a ``records.py``
value class: a dataclass the first time something asks, no ``@dataclass`` at import)."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Union
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


from .jsonable import LazyJsonMixin, json_field
from .errors import ConfigurationError
from .reading import DEFAULT_MAX_RESPONSE_BYTES
from .records import FACTORY, Record, field, field_names
from .validation import check_int, check_nesting, check_number

__all__ = ["ProviderConfig", "redact", "is_secret_key", "scrub_secrets"]

SECRET_FIELDS = ("api_key",)
# Matched against whole words of a key split on "_" and "-" (so "max_tokens" and
# "tokenizer" are not secrets, "X-Api-Key" and "refresh_token" are).
SECRET_WORDS = frozenset({"token", "password", "passwd", "secret", "credentials", "authorization", "apikey"})
SECRET_WORD_PAIRS = frozenset({"api_key", "auth_key", "access_key", "private_key"})
URL_FIELDS = ("base_url", "auth_url")


#: Transport retries of one request; more only multiplies the wait on a dead server.
MAX_RETRIES = 100
#: Connections kept per host (one per thread that calls at once).
MAX_POOL_SIZE = 10_000


def _is_http_url(url: Any) -> bool:
    """An http(s) URL with a host, a valid port and no whitespace or control characters
    (requests would only fail at the first call: "http://[::1" raised a bare ValueError)."""
    if not isinstance(url, str) or any(ord(char) <= 32 or ord(char) == 127 for char in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError on a port that is not a number in 0-65535
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def is_secret_key(key: Any) -> bool:
    """Whether a setting or header named ``key`` holds a secret.

    >>> [is_secret_key(k) for k in ("X-Api-Key", "access_token", "max_tokens", "tokenizer")]
    [True, True, False, False]
    """
    words = str(key).lower().replace("-", "_").split("_")
    return bool(SECRET_WORDS.intersection(words)) or any(
        f"{first}_{second}" in SECRET_WORD_PAIRS for first, second in zip(words, words[1:])
    )


def _clean_url(url: Optional[str], drop: bool) -> Optional[str]:
    """``url`` without its userinfo password and secret query values: masked for
    ``repr`` (``drop`` False) or left out (``drop`` True, for ``to_dict``: a URL
    whose credentials come from elsewhere still round-trips)."""
    if not isinstance(url, str):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        host = netloc.rpartition("@")[2]
        netloc = f"{parts.username}@{host}" if drop else f"{parts.username}:<redacted>@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if drop:
            query = urlencode([(k, v) for k, v in pairs if not is_secret_key(k)])
        else:
            query = "&".join(f"{k}=<redacted>" for k, _ in pairs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


REDACTED = "<redacted>"
#: The shortest start of a secret that ``scrub_secrets`` removes when a quote cut it off.
MIN_SECRET_FRAGMENT = 8


def scrub_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by <redacted>, and also any start of one
    (``MIN_SECRET_FRAGMENT`` characters or more): a body quoted as ``body[:80]`` may
    end in the middle of an echoed key, where a plain replace would find nothing.

    >>> scrub_secrets("echo: Bearer sk-live-1234567890 ...", ["sk-live-1234567890"])
    'echo: Bearer <redacted> ...'
    >>> scrub_secrets("'Authorization: Bearer sk-live-12'", ["sk-live-1234567890"])
    "'Authorization: Bearer <redacted>'"
    """
    for secret in secrets:  # longest first: a key inside a longer header value
        if secret in text:
            text = text.replace(secret, REDACTED)
        head = secret[:MIN_SECRET_FRAGMENT]
        start = text.find(head)
        while start != -1:
            end = start + len(head)
            while end < len(text) and end - start < len(secret) and text[end] == secret[end - start]:
                end += 1
            text = text[:start] + REDACTED + text[end:]
            start = text.find(head, start + len(REDACTED))
    return text


def redact(value: Optional[str]) -> str:
    """How a secret is shown anywhere it might be printed: never the value itself."""
    return "<not set>" if not value else "<redacted>"


def _never(_: Any) -> bool:
    return True


def _as_is(value: Any) -> Any:  # checked in __post_init__; dataclasses-json cannot decode the Union
    return value


class ProviderConfig(LazyJsonMixin, Record):
    """Settings of one provider. Only ``name`` is required; each provider type documents
    which other fields it uses and its defaults.

    - ``api_key``: the secret (GigaChat authorization key, Yandex IAM token or API key,
      OpenAI key). Never shown by ``repr``/``str`` and left out of ``to_dict()``/``to_json()``.
    - ``timeout``: seconds for one request (connect and read), default 30.
    - ``verify_ssl``: TLS verification (default True); ``ca_bundle``: a PEM file that
      replaces the trust store (GigaChat needs the Russian Trusted Root CA).
    - ``max_retries``: transport retries of connect errors and 429/5xx (0 disables).
    - ``weight``: share for the "weighted" strategy.
    - ``max_response_bytes``: the most one answer may hold after decompression (a body,
      one stream line or event), default 16 MiB; more is a ResponseFormatError. Error
      bodies are read only up to their first 64 KiB.
    - ``price_per_1k_prompt_tokens`` / ``price_per_1k_completion_tokens``: optional, for
      cost in ``Router.stats()``; none is built in. ``price_per_1k_cached_prompt_tokens``:
      the price of prompt tokens served from the provider's cache (default: the prompt price).
    - ``capabilities``: replaces what the provider type declares it supports (a list of
      "tools", "structured_output", "reasoning", "streaming_tools"), for a model that
      supports less (or more) than its provider type; the Router routes by it.
    - ``context_window``: the model's context window in tokens, when known: a prompt
      (plus ``max_tokens``) estimated not to fit skips this provider instead of
      spending a failed call (see README, "Token counting").
    - ``embedding_model``: the model ``embed()`` uses (each provider type has a default,
      see its docstring); ``embedding_space``: the name of the vector space its vectors
      live in, default ``"<type>:<embedding model>"``. The Router falls back only
      between providers of one space.
    - ``prices``: per 1k tokens, ``{"prompt": .., "completion": .., "cached": ..}`` or one
      such dict per model (``"*"`` for the others); used by budgets, ``max_cost`` and the
      "cheapest" strategy (default: the ``price_per_1k_*`` fields above).
    - ``limits``: ``{"rpm": .., "tpm": .., "max_concurrency": ..}`` (see ``Limits``).
    - ``budget``: ``{"limit": .., "period": "day" | "month" | seconds}`` or a list of them.
    - ``extra``: provider-specific settings (e.g. ``{"delay": 0}`` for MockProvider).

    >>> ProviderConfig(name="giga", model="GigaChat", api_key="secret")
    ProviderConfig(name='giga', model='GigaChat', api_key=<redacted>, ...)
    """

    name: str
    model: Optional[str] = None
    api_key: Optional[str] = field(default=None, repr=False, metadata=json_field(exclude=_never))
    base_url: Optional[str] = None
    auth_url: Optional[str] = None
    scope: Optional[str] = None
    folder_id: Optional[str] = None
    timeout: float = 30.0
    verify_ssl: bool = True
    ca_bundle: Optional[str] = None
    max_retries: int = 2
    weight: float = 1.0
    pool_size: int = 32
    price_per_1k_prompt_tokens: Optional[float] = None
    price_per_1k_completion_tokens: Optional[float] = None
    context_window: Optional[int] = None
    embedding_model: Optional[str] = None
    embedding_space: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    price_per_1k_cached_prompt_tokens: Optional[float] = None
    capabilities: Optional[List[str]] = None
    prices: Optional[Dict[str, Any]] = None
    limits: Optional[Dict[str, Any]] = None
    budget: Union[Dict[str, Any], List[Dict[str, Any]], None] = field(default=None, metadata=json_field(decoder=_as_is))
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    def __init__(
        self,
        name: str,
        model: Optional[str] = None,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        auth_url: Optional[str] = None,
        scope: Optional[str] = None,
        folder_id: Optional[str] = None,
        timeout: float = 30.0,
        verify_ssl: bool = True,
        ca_bundle: Optional[str] = None,
        max_retries: int = 2,
        weight: float = 1.0,
        pool_size: int = 32,
        price_per_1k_prompt_tokens: Optional[float] = None,
        price_per_1k_completion_tokens: Optional[float] = None,
        context_window: Optional[int] = None,
        embedding_model: Optional[str] = None,
        embedding_space: Optional[str] = None,
        extra: Dict[str, Any] = FACTORY,
        price_per_1k_cached_prompt_tokens: Optional[float] = None,
        capabilities: Optional[List[str]] = None,
        prices: Optional[Dict[str, Any]] = None,
        limits: Optional[Dict[str, Any]] = None,
        budget: Union[Dict[str, Any], List[Dict[str, Any]], None] = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        state = self.__dict__
        state["name"] = name
        state["model"] = model
        state["api_key"] = api_key
        state["base_url"] = base_url
        state["auth_url"] = auth_url
        state["scope"] = scope
        state["folder_id"] = folder_id
        state["timeout"] = timeout
        state["verify_ssl"] = verify_ssl
        state["ca_bundle"] = ca_bundle
        state["max_retries"] = max_retries
        state["weight"] = weight
        state["pool_size"] = pool_size
        state["price_per_1k_prompt_tokens"] = price_per_1k_prompt_tokens
        state["price_per_1k_completion_tokens"] = price_per_1k_completion_tokens
        state["context_window"] = context_window
        state["embedding_model"] = embedding_model
        state["embedding_space"] = embedding_space
        state["extra"] = {} if extra is FACTORY else extra
        state["price_per_1k_cached_prompt_tokens"] = price_per_1k_cached_prompt_tokens
        state["capabilities"] = capabilities
        state["prices"] = prices
        state["limits"] = limits
        state["budget"] = budget
        state["max_response_bytes"] = max_response_bytes
        self.__post_init__()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigurationError(f"ProviderConfig.name must be a non-empty str; got {self.name!r}")
        if self.model is not None and not isinstance(self.model, str):
            raise ConfigurationError(f"ProviderConfig.model must be a str; got {type(self.model).__name__}")
        if self.api_key is not None and not isinstance(self.api_key, str):
            raise ConfigurationError(
                f"ProviderConfig.api_key of {self.name!r} must be a str; got {type(self.api_key).__name__}"
            )
        for url_field in ("base_url", "auth_url"):
            url = getattr(self, url_field)
            if url is None:
                continue
            if not _is_http_url(url):
                shown = "a URL with credentials (not shown)" if isinstance(url, str) and "@" in url else repr(url)
                raise ConfigurationError(
                    f"ProviderConfig.{url_field} of {self.name!r} must be an http(s) URL such as "
                    f"'https://host/api/v1'; got {shown}"
                )
        def field_name(name: str) -> str:
            return f"ProviderConfig.{name} of {self.name!r}"

        check_number(field_name("timeout"), self.timeout, 0, low_open=True, kind="a number of seconds")
        check_int(field_name("max_retries"), self.max_retries, 0, MAX_RETRIES)
        check_number(field_name("weight"), self.weight, 0)
        # urllib3 fills a pool's queue up front: a pool of 10**9 would hang the first call.
        check_int(field_name("pool_size"), self.pool_size, 1, MAX_POOL_SIZE)
        check_int(field_name("max_response_bytes"), self.max_response_bytes, 1024)
        for price in ("price_per_1k_prompt_tokens", "price_per_1k_completion_tokens",
                      "price_per_1k_cached_prompt_tokens"):
            check_number(field_name(price), getattr(self, price), 0, allow_none=True)
        check_int(field_name("context_window"), self.context_window, 1, allow_none=True)
        for text_field in ("embedding_model", "embedding_space"):
            value = getattr(self, text_field)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigurationError(f"{field_name(text_field)} must be a non-empty str or None; got {value!r}")
        self._check_admission()
        if not isinstance(self.verify_ssl, bool):
            raise ConfigurationError(
                f"ProviderConfig.verify_ssl of {self.name!r} must be True or False; got {self.verify_ssl!r}"
            )
        if not isinstance(self.extra, dict):
            raise ConfigurationError(
                f"ProviderConfig.extra of {self.name!r} must be a dict; got {type(self.extra).__name__}"
            )
        check_nesting(field_name("extra"), self.extra)
        if self.capabilities is not None:
            from .capabilities import check_capabilities

            self.capabilities = sorted(check_capabilities(self.capabilities, field_name("capabilities")))

    def _check_admission(self) -> None:
        """Limits, budgets and prices: each bad value a ConfigurationError naming the
        provider; instances (``Limits``, ``Budget``, ``Price``) are kept as dicts."""
        from .budgets import Budget, Price, PriceTable
        from .limits import Limits

        try:
            limits = Limits.from_value(self.limits)
            self.limits = None if limits is None else {k: v for k, v in limits.to_dict().items() if v is not None}
            budgets = Budget.from_value(self.budget)
            if self.budget is not None:
                listed = [budget.to_dict() for budget in budgets]
                self.budget = listed if isinstance(self.budget, (list, tuple)) else listed[0]
            if isinstance(self.prices, Price):
                from dataclasses import asdict  # loaded by budgets already

                self.prices = {k: v for k, v in asdict(self.prices).items() if v is not None}
            PriceTable.from_value(self.prices)
        except ConfigurationError as exc:
            raise ConfigurationError(f"ProviderConfig of {self.name!r}: {exc}") from None

    def __repr__(self) -> str:
        shown = []
        for name in field_names(self):  # type: ignore[arg-type]
            value = getattr(self, name)
            if name in SECRET_FIELDS:
                shown.append(f"{name}={redact(value)}")
            elif name == "extra":
                shown.append(f"extra={_redact_extra(value)!r}")
            elif name in URL_FIELDS:
                shown.append(f"{name}={_clean_url(value, drop=False)!r}")
            else:
                shown.append(f"{name}={value!r}")
        return f"ProviderConfig({', '.join(shown)})"

    __str__ = __repr__

    def to_dict(self, encode_json: bool = False) -> Dict[str, Any]:  # type: ignore[override]
        """The settings as a dict, secrets left out: ``api_key``, secret-named ``extra``
        keys, and in ``base_url``/``auth_url`` a userinfo password and secret-named query
        parameters (the rest of the URL is kept, so the dict still builds the provider)."""
        data = super().to_dict(encode_json=encode_json)
        data["extra"] = _redact_extra(data.get("extra") or {}, drop=True)
        for name in URL_FIELDS:
            data[name] = _clean_url(data.get(name), drop=True)
        return data

    def to_json(self, **kwargs: Any) -> str:  # type: ignore[override]
        """The settings as JSON, secrets left out as in ``to_dict()``."""
        import json

        return json.dumps(self.to_dict(encode_json=True), **kwargs)


def _redact_extra(extra: Dict[str, Any], drop: bool = False) -> Dict[str, Any]:
    cleaned: Dict[str, Any] = {}
    for key, value in extra.items():
        secret = is_secret_key(key) or callable(value)
        if not secret:
            cleaned[key] = _redact_extra(value, drop) if isinstance(value, dict) else value
        elif not drop:
            cleaned[key] = "<redacted>"
    return cleaned


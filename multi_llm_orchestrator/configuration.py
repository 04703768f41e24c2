"""Router configuration from a dict or a JSON file.

A file names the Router's settings (the keyword arguments of ``Router``) and a list of
providers, each with a ``type`` (a name from the provider registry) and the fields of
``ProviderConfig``::

    {
      "strategy": "first-available",
      "timeout": 20,
      "breaker": {"failure_threshold": 3, "cooldown": 10},
      "state": {"redis": "${REDIS_URL}", "prefix": "myapp:mlo:"},
      "cache": {"ttl": 600},
      "providers": [
        {"type": "gigachat", "name": "giga", "api_key": "${GIGACHAT_AUTH_KEY}",
         "scope": "GIGACHAT_API_PERS", "ca_bundle": "/etc/ssl/russian_trusted_root_ca.pem"},
        {"type": "ollama", "name": "local", "model": "llama3.2",
         "base_url": "${OLLAMA_URL:-http://127.0.0.1:11434}"}
      ]
    }

``${VAR}`` in any string is replaced by the environment variable (``${VAR:-default}``
when it may be unset, ``$$`` for a literal ``$``). A string standing for a number or a
boolean ("30", "false") is converted to the field's type. Unknown keys, unknown types,
missing variables and bad values raise ``ConfigurationError`` saying where and what is
valid.

>>> router = Router.from_config("router.json")                      # doctest: +SKIP
>>> load_config({"providers": [{"type": "mock", "name": "m"}]}).build()
Router(strategy='round-robin', providers=[m])
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from urllib.parse import urlsplit, urlunsplit
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, Union, get_args, get_origin, get_type_hints


from .jsonable import LazyJsonMixin, json_field
from .breaker import BreakerPolicy
from .budgets import Budget, Price
from .limits import Limits
from .config import SECRET_FIELDS, ProviderConfig, _never
from .errors import ConfigurationError
from .providers import provider_class, provider_types
from .providers.base import BaseProvider
from .validation import MAX_NESTING, check_nesting

__all__ = ["RouterConfig", "ProviderSpec", "load_config", "router_from_config", "expand_env"]

ConfigSource = Union[str, "os.PathLike[str]", Mapping[str, Any]]

_VARIABLE = re.compile(r"\$(\$|\{([^}]*)\})")
_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
#: A configuration of thousands of providers is well under 1 MB; a larger file is a mistake.
MAX_CONFIG_BYTES = 32 * 2**20
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _as_is(value: Any) -> Any:  # values are already checked by _coerce; dataclasses-json
    return value  # would only warn about Unions it cannot decode


@dataclass(frozen=True)
class ProviderSpec:
    """One provider of a configuration: its registry ``type`` and its ``ProviderConfig``."""

    type: str
    config: ProviderConfig

    def build(self) -> BaseProvider:
        """The provider object (imports the provider's module on first use)."""
        try:
            cls = provider_class(self.type)
        except ImportError as exc:
            raise ConfigurationError(
                f"Provider type {self.type!r} could not be loaded ({exc}); is its module installed?"
            ) from None
        return cls(self.config)

    def to_dict(self) -> Dict[str, Any]:
        """The entry as in a configuration file, secrets left out."""
        return {"type": self.type, **self.config.to_dict()}


@dataclass(repr=True)
class RouterConfig(LazyJsonMixin):
    """Everything needed to build a Router. ``None`` means the Router's own default
    (see ``Router`` for each setting); ``providers`` lists ``ProviderSpec`` entries.

    ``to_dict()``/``to_json()`` give the file format back, without any secret.

    >>> config = RouterConfig.from_dict({"strategy": "random",
    ...                                  "providers": [{"type": "mock", "name": "m"}]})
    >>> config.providers[0].type, config.strategy
    ('mock', 'random')
    """

    strategy: Optional[str] = None
    timeout: Optional[float] = None
    hedge_after: Union[float, str, None] = field(default=None, metadata=json_field(decoder=_as_is))
    max_hedges: Optional[int] = None
    hedge_budget: Optional[float] = None
    breaker: Union[Dict[str, Any], bool, None] = field(default=None, metadata=json_field(decoder=_as_is))
    when_all_open: Optional[str] = None
    health_ttl: Optional[float] = None
    health_timeout: Optional[float] = None
    health_interval: Optional[float] = None
    max_workers: Optional[int] = None
    admission: Optional[str] = None
    budget: Union[Dict[str, Any], List[Dict[str, Any]], None] = field(default=None, metadata=json_field(decoder=_as_is))
    state: Optional[Dict[str, Any]] = field(default=None, metadata=json_field(decoder=_as_is))
    cache: Union[Dict[str, Any], bool, None] = field(default=None, metadata=json_field(decoder=_as_is))
    providers: List[ProviderSpec] = field(default_factory=list, metadata=json_field(exclude=_never))

    @classmethod
    def from_dict(cls, kvs: Any, *, infer_missing: bool = False) -> "RouterConfig":  # type: ignore[override]
        """Parse a configuration dict: expand ``${VAR}``, check keys, types and providers."""
        if not isinstance(kvs, Mapping):
            raise ConfigurationError(
                f"A configuration must be a JSON object (a dict) with a 'providers' list; got {type(kvs).__name__}"
            )
        check_nesting("The configuration", kvs)  # expand_env and the checks below recurse
        data = expand_env(dict(kvs))
        settings = _coerce_fields(cls, {k: v for k, v in data.items() if k != "providers"}, "")
        if isinstance(settings.get("breaker"), dict):
            settings["breaker"] = _coerce_fields(BreakerPolicy, settings["breaker"], "breaker: ")
        if settings.get("budget") is not None:
            settings["budget"] = _coerce_budget(settings["budget"], "budget")
            Budget.from_value(settings["budget"], "budget")
        config = super().from_dict(settings, infer_missing=True)
        config.providers = _parse_providers(data.get("providers"))
        return config

    @classmethod
    def from_file(cls, path: Union[str, "os.PathLike[str]"]) -> "RouterConfig":
        """Read and parse a JSON configuration file."""
        return cls.from_dict(_read_json(path))

    def router_kwargs(self) -> Dict[str, Any]:
        """The Router keyword arguments that are set (the others keep Router's defaults)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "providers" and getattr(self, f.name) is not None
        }

    def build(self, router_class: Optional[type] = None) -> Any:
        """A Router with every provider added. On any error nothing is left open."""
        if router_class is None:
            from .router import Router as router_class
        router = router_class(**self.router_kwargs())
        providers: List[BaseProvider] = []
        try:
            for index, spec in enumerate(self.providers):
                try:
                    providers.append(spec.build())
                except ConfigurationError as exc:
                    raise ConfigurationError(f"providers[{index}] ({spec.config.name!r}): {exc}") from None
            router.add_providers(providers)  # at once: linear in the number of providers
        except BaseException:
            for provider in providers:
                provider.close()
            router.close()
            raise
        return router

    def to_dict(self, encode_json: bool = False) -> Dict[str, Any]:  # type: ignore[override]
        """The configuration in file format; api keys and secret ``extra`` keys left out."""
        data = super().to_dict(encode_json=encode_json)
        if isinstance(data.get("state"), dict) and isinstance(data["state"].get("redis"), str):
            data["state"] = {**data["state"], "redis": _without_password(data["state"]["redis"])}
            data["state"].pop("token_secret", None)
        data["providers"] = [spec.to_dict() for spec in self.providers]
        return data


def _without_password(url: str) -> str:
    """A Redis URL with its password (if any) replaced by <redacted>."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":<redacted>@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def load_config(source: ConfigSource) -> RouterConfig:
    """A ``RouterConfig`` from a dict or from the path of a JSON file."""
    if isinstance(source, Mapping):
        return RouterConfig.from_dict(source)
    if isinstance(source, (str, os.PathLike)):
        return RouterConfig.from_file(source)
    raise ConfigurationError(
        f"A configuration is a dict or the path of a JSON file; got {type(source).__name__}"
    )


def router_from_config(source: ConfigSource, router_class: Optional[type] = None) -> Any:
    """Build a Router from a dict or a JSON file (what ``Router.from_config`` calls)."""
    return load_config(source).build(router_class)


def expand_env(value: Any, where: str = "", environ: Optional[Mapping[str, str]] = None) -> Any:
    """``value`` with ``${VAR}`` replaced in every string, also inside dicts and lists.

    ``${VAR:-default}`` uses ``default`` when VAR is unset or empty; ``$$`` is a literal
    ``$``. A missing variable raises ConfigurationError naming it and where it was used.

    >>> expand_env({"url": "http://${HOST:-localhost}:8080"}, environ={})
    {'url': 'http://localhost:8080'}
    """
    env = os.environ if environ is None else environ
    if isinstance(value, str):
        return _expand_string(value, where or "value", env)
    if isinstance(value, Mapping):
        return {key: expand_env(item, _join(where, key), env) for key, item in value.items()}
    if isinstance(value, list):
        return [expand_env(item, f"{where}[{index}]", env) for index, item in enumerate(value)]
    return value


def _expand_string(text: str, where: str, env: Mapping[str, str]) -> str:
    def replace(match: "re.Match[str]") -> str:
        if match.group(1) == "$":
            return "$"
        name_match = _NAME.fullmatch(match.group(2))
        if name_match is None:
            raise ConfigurationError(
                f"{where}: {match.group(0)!r} is not a valid reference; write ${{NAME}} or ${{NAME:-default}}"
            )
        name, default = name_match.groups()
        value = env.get(name)
        if value:
            return value
        if default is not None:
            return default
        raise ConfigurationError(
            f"{where}: environment variable {name} is not set; export it, or write ${{{name}:-default}}"
        )

    return _VARIABLE.sub(replace, text)


def _read_json(path: Union[str, "os.PathLike[str]"]) -> Any:
    shown = os.fspath(path)
    if not shown:
        raise ConfigurationError("The configuration file path is empty: pass the path of a JSON file")
    try:
        with open(path, "rb") as handle:
            # Read one byte past the limit, not the whole file, to tell it is too large.
            raw = handle.read(MAX_CONFIG_BYTES + 1)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"Configuration file {shown} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"Configuration file {shown} cannot be read: {exc}") from None
    except ValueError as exc:  # "embedded null byte" in the path
        raise ConfigurationError(f"Configuration file path {shown!r} is not a valid path ({exc})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigurationError(
            f"Configuration file {shown} is larger than {MAX_CONFIG_BYTES // 2**20} MB: is it the right file?"
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"{shown}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise ConfigurationError(
            f"{shown}: the JSON nests objects and lists too deeply (limit {MAX_NESTING} levels)"
        ) from None


def _parse_providers(entries: Any) -> List[ProviderSpec]:
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(
            "The configuration needs a non-empty 'providers' list, e.g. "
            '"providers": [{"type": "mock", "name": "mock-1"}]'
        )
    specs: List[ProviderSpec] = []
    names: Dict[str, int] = {}
    for index, entry in enumerate(entries):
        where = f"providers[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigurationError(f"{where} must be an object with a 'type'; got {type(entry).__name__}")
        entry = dict(entry)
        type_name = entry.pop("type", None)
        if type_name not in provider_types():
            reason = "has no 'type'" if type_name is None else f"has an unknown type {type_name!r}"
            raise ConfigurationError(f"{where} {reason}; valid types: {', '.join(provider_types())}")
        entry.setdefault("name", type_name)
        where = f"{where} ({entry['name']!r})" if isinstance(entry["name"], str) else where
        settings = _coerce_fields(ProviderConfig, entry, f"{where}: ")
        _coerce_admission(settings, where)
        if settings["name"] in names:
            raise ConfigurationError(
                f"{where}: the name is already used by providers[{names[settings['name']]}]; "
                "give each provider a unique 'name'"
            )
        names[settings["name"]] = index
        try:
            # The values are checked and converted by _coerce_fields already; dataclasses-json's
            # from_dict would inspect the type hints again for every provider.
            config = ProviderConfig(**settings)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
        specs.append(ProviderSpec(type_name, config))
    return specs


def _coerce_admission(settings: Dict[str, Any], where: str) -> None:
    """Numbers written as strings (from ``${VAR}``) inside limits, budget and prices."""
    if isinstance(settings.get("limits"), Mapping):
        settings["limits"] = _coerce_fields(Limits, settings["limits"], f"{where}: limits: ")
    if settings.get("budget") is not None:
        settings["budget"] = _coerce_budget(settings["budget"], f"{where}: budget")
    prices = settings.get("prices")
    if isinstance(prices, Mapping):
        if set(prices) <= set(Price.__dataclass_fields__):
            settings["prices"] = _coerce_fields(Price, prices, f"{where}: prices: ")
        else:
            settings["prices"] = {
                model: _coerce_fields(Price, entry, f"{where}: prices[{model!r}]: ") if isinstance(entry, Mapping) else entry
                for model, entry in prices.items()
            }


def _coerce_budget(value: Any, where: str) -> Any:
    if isinstance(value, Mapping):
        return _coerce_fields(Budget, value, f"{where}: ")
    if isinstance(value, list):
        return [_coerce_budget(item, f"{where}[{index}]") for index, item in enumerate(value)]
    return value


def _coerce_fields(cls: Type[Any], data: Mapping[str, Any], where: str) -> Dict[str, Any]:
    """Check ``data``'s keys against ``cls``'s dataclass fields and convert each value to
    its field's type, strictly (dataclasses-json would turn "false" into True)."""
    hints, valid = _field_types(cls)
    result: Dict[str, Any] = {}
    for key, value in data.items():
        if key not in valid:
            raise ConfigurationError(f"{where}unknown key {key!r}; valid keys: {', '.join(valid)}")
        result[key] = _coerce(hints[key], value, f"{where}{key}", secret=key in SECRET_FIELDS)
    return result


@functools.lru_cache(maxsize=None)
def _field_types(cls: Type[Any]) -> Tuple[Dict[str, Any], List[str]]:
    """``cls``'s type hints and init field names, worked out once per class:
    ``get_type_hints`` evaluates every annotation again on each call (2 ms per provider)."""
    return get_type_hints(cls), [f.name for f in fields(cls) if f.init]


def _coerce(hint: Any, value: Any, where: str, secret: bool = False) -> Any:
    allowed = _types_of(hint)
    kind = type(value)
    if value is None and type(None) in allowed:
        return None
    if kind in allowed and kind is not str:
        return value
    if kind is int and float in allowed:
        return float(value)
    if kind is str:
        text = value.strip().lower()
        if bool in allowed and text in _TRUE + _FALSE:
            return text in _TRUE
        for number in (int, float):
            if number in allowed:
                try:
                    parsed = number(value.strip())
                except ValueError:
                    continue
                if math.isfinite(parsed):  # "nan" and "inf" are not settings anyone means
                    return parsed
        if str in allowed:
            return value
    expected = " or ".join(_TYPE_NAMES[t] for t in allowed if t in _TYPE_NAMES) or "set"
    shown = "<redacted>" if secret else repr(value)
    raise ConfigurationError(f"{where} must be {expected}; got {shown}")


_TYPE_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "a string", dict: "an object", list: "a list"}


def _types_of(hint: Any) -> tuple:
    """(int, NoneType) for Optional[int]; bare classes for Dict[...]/List[...]."""
    if get_origin(hint) is Union:
        return tuple(t for arg in get_args(hint) for t in _types_of(arg))
    origin = get_origin(hint)
    if origin is not None:
        return (origin,)
    if hint is Any:
        return (bool, int, float, str, dict, list, type(None))
    return (hint,)


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)

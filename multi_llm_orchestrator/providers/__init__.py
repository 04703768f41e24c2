"""Provider classes and the registry that maps a type name ("gigachat") to a class.

Provider classes (MockProvider too) are imported on first use, so importing this
package does not import ``requests``, and importing one provider module does not import
the others. Adding a provider is one new module plus one line in ``_BUILTIN``
(or one call to ``register_provider`` from user code).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Dict, List, Type, Union

from ..config import ProviderConfig
from ..errors import ConfigurationError
from .base import BaseProvider

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ does this
    from .gigachat import GigaChatProvider
    from .mock import MockProvider
    from .ollama import OllamaProvider
    from .openai import OpenAICompatibleProvider
    from .yandexgpt import YandexGPTProvider

__all__ = [
    "BaseProvider",
    "ProviderConfig",
    "MockProvider",
    "GigaChatProvider",
    "YandexGPTProvider",
    "OllamaProvider",
    "OpenAICompatibleProvider",
    "register_provider",
    "provider_class",
    "provider_types",
]

# type name -> "module:ClassName", imported lazily.
_BUILTIN: Dict[str, str] = {
    "mock": "multi_llm_orchestrator.providers.mock:MockProvider",
    "gigachat": "multi_llm_orchestrator.providers.gigachat:GigaChatProvider",
    "yandexgpt": "multi_llm_orchestrator.providers.yandexgpt:YandexGPTProvider",
    "ollama": "multi_llm_orchestrator.providers.ollama:OllamaProvider",
    "openai": "multi_llm_orchestrator.providers.openai:OpenAICompatibleProvider",
}
_REGISTRY: Dict[str, Union[str, Type[BaseProvider]]] = dict(_BUILTIN)
_LAZY_CLASSES = {target.rsplit(":", 1)[1]: target for target in _BUILTIN.values()}


def register_provider(type_name: str, provider: Union[str, Type[BaseProvider]]) -> None:
    """Make ``type_name`` usable in configuration files.

    ``provider`` is a BaseProvider subclass or a "module:ClassName" string imported on use.
    """
    if not isinstance(type_name, str) or not type_name:
        raise ConfigurationError(f"A provider type name must be a non-empty str; got {type_name!r}")
    _REGISTRY[type_name] = provider


def provider_types() -> List[str]:
    """The registered type names."""
    return sorted(_REGISTRY)


def provider_class(type_name: str) -> Type[BaseProvider]:
    """The class registered under ``type_name``; ConfigurationError listing valid names if none."""
    try:
        target = _REGISTRY[type_name]
    except (KeyError, TypeError):
        raise ConfigurationError(
            f"Unknown provider type {type_name!r}; valid: {', '.join(provider_types())}"
        ) from None
    if isinstance(target, str):
        module_name, class_name = target.split(":")
        target = getattr(importlib.import_module(module_name), class_name)
    return target


def __getattr__(name: str):
    if name in _LAZY_CLASSES:
        module_name, class_name = _LAZY_CLASSES[name].split(":")
        return getattr(importlib.import_module(module_name), class_name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

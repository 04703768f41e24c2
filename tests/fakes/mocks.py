"""Shorthands for tests that build Routers over MockProviders."""

from concurrent.futures import Future, ThreadPoolExecutor

from multi_llm_orchestrator import Router
from multi_llm_orchestrator.providers import MockProvider, ProviderConfig

_CONFIG_FIELDS = frozenset(ProviderConfig.__dataclass_fields__)


def mock(name, model="mock-normal", **settings):
    """A MockProvider that answers at once unless told otherwise.

    Keyword arguments that are ProviderConfig fields configure it (``weight=3``,
    ``extra={...}``); the others go into its ``extra`` (``delay=0.2``, ``failure_rate=1``).
    """
    config = {key: value for key, value in settings.items() if key in _CONFIG_FIELDS}
    extra = {"delay": 0, **config.pop("extra", {})}
    extra.update({key: value for key, value in settings.items() if key not in _CONFIG_FIELDS})
    return MockProvider(ProviderConfig(name=name, model=model, extra=extra, **config))


def router_with(*providers, **settings):
    """A Router with ``settings`` holding ``providers`` in order."""
    router = Router(**settings)
    for provider in providers:
        router.add_provider(provider)
    return router


def in_background(function, *args, **kwargs) -> Future:
    """``function(*args, **kwargs)`` running on a thread of its own: its Future."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(function, *args, **kwargs)
    pool.shutdown(wait=False)
    return future

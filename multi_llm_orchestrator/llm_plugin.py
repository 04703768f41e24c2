"""A plugin for simonw/llm (optional extra: ``pip install 'multi-llm-orchestrator[llm]'``).

Installed with the extra, the package registers itself through the ``llm`` entry point,
and the providers of a configuration file become llm models::

    export MULTI_LLM_ORCHESTRATOR_CONFIG=router.json     # the CLI's variable; unset: three mocks
    llm models                                          # router, and one model per provider
    llm -m router "What is Python?"                     # routed: strategy, fallback, hedging
    llm -m giga "What is Python?"                       # one provider, with the Router's
                                                        #   deadline, breaker and retries
    llm -m router -s "Answer briefly" "Tell me a story" # a system prompt; streams by default
    llm -c "And a shorter one"                          # conversations continue
    llm -m router -o temperature 0.2 -o max_tokens 100 "Hi"

Each provider's model is also reachable as ``mlo/<name>`` (a provider named "router"
only so). Options: ``temperature``, ``max_tokens``, ``top_p``, ``timeout`` (seconds for the
whole call). ``llm logs`` shows who answered in each response's JSON (``provider``,
``model``, ``finish_reason``, ``attempts``) and the token usage.

``llm.get_async_model(...)`` gives the same models for llm's async API (the blocking
Router runs in worker threads).

The configuration is read when llm lists its models (no network, no keys needed); the
Routers are built on the first prompt and closed when the process exits. A configuration
that does not load leaves a ``router`` model whose every prompt fails with the reason.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import logging
import os
import threading
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional, Tuple

try:
    import llm
    from pydantic import Field
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("multi_llm_orchestrator.llm_plugin needs llm: pip install 'multi-llm-orchestrator[llm]'") from exc

from .cli import CONFIG_ENV, DEFAULT_CONFIG
from .configuration import RouterConfig, load_config
from .errors import OrchestratorError
from .types import GenerationParams, Message

__all__ = ["register_models", "RouterModel", "AsyncRouterModel", "ROUTER_MODEL_ID", "close_routers"]

logger = logging.getLogger("multi_llm_orchestrator.llm_plugin")

ROUTER_MODEL_ID = "router"
PREFIX = "mlo/"

_lock = threading.Lock()
_configs: Dict[Tuple[str, float], RouterConfig] = {}  # by (source, file mtime): llm lists models often
_routers: Dict[Tuple[Any, Optional[str]], Any] = {}  # by (config key, provider name or None)


@llm.hookimpl
def register_models(register: Any) -> None:
    """Register ``router`` and one model per provider of the configuration."""
    try:
        key, config = _config()
    except OrchestratorError as error:
        logger.warning("multi-llm-orchestrator: the configuration did not load: %s", error)
        broken = str(error)
        register(RouterModel(ROUTER_MODEL_ID, None, None, broken), AsyncRouterModel(ROUTER_MODEL_ID, None, None, broken),
                 aliases=(PREFIX + ROUTER_MODEL_ID,))
        return
    register(RouterModel(ROUTER_MODEL_ID, key, None), AsyncRouterModel(ROUTER_MODEL_ID, key, None),
             aliases=(PREFIX + ROUTER_MODEL_ID,))
    for spec in config.providers:
        name = spec.config.name
        model_id, aliases = (PREFIX + name, ()) if name == ROUTER_MODEL_ID else (name, (PREFIX + name,))
        register(RouterModel(model_id, key, name), AsyncRouterModel(model_id, key, name), aliases=aliases)


class _RouterModelBase:
    """What the sync and async models share: options, the request, the record."""

    can_stream = True
    model_id: str

    class Options(llm.Options):
        temperature: Optional[float] = Field(default=None, description="Sampling temperature, 0 to 2")
        max_tokens: Optional[int] = Field(default=None, description="Most tokens to generate")
        top_p: Optional[float] = Field(default=None, description="Nucleus sampling, in (0, 1]")
        timeout: Optional[float] = Field(default=None, description="Seconds for the whole call, fallbacks included")

    def __init__(self, model_id: str, config_key: Any, provider: Optional[str], broken: Optional[str] = None) -> None:
        self.model_id = model_id
        self.config_key = config_key
        self.provider = provider
        self.broken = broken

    def _request(self, prompt: Any) -> Tuple[Any, List[Message], GenerationParams, Optional[float]]:
        """The Router, messages, params and timeout of one prompt."""
        if self.broken is not None:
            raise llm.ModelError(f"multi-llm-orchestrator: the configuration did not load: {self.broken}")
        options = prompt.options
        with _model_errors():
            params = GenerationParams(temperature=options.temperature, max_tokens=options.max_tokens, top_p=options.top_p)
            return _router(self.config_key, self.provider), to_router_messages(prompt), params, options.timeout

    @staticmethod
    def _record(response: Any, result: Any) -> None:
        """Usage and who answered, for ``llm logs``."""
        if result.usage is not None:
            response.set_usage(input=result.usage.prompt_tokens, output=result.usage.completion_tokens)
        response.response_json = {
            "provider": result.provider,
            "model": result.model,
            "finish_reason": result.finish_reason,
            "attempts": [attempt.to_dict() for attempt in result.attempts],
        }
        if result.model and hasattr(response, "set_resolved_model"):
            response.set_resolved_model(result.model)


class RouterModel(_RouterModelBase, llm.Model):
    """An llm model answered by the configured Router, or by one of its providers."""

    def execute(self, prompt: Any, stream: bool, response: Any, conversation: Any) -> Iterator[str]:
        router, messages, params, timeout = self._request(prompt)
        with _model_errors():
            if stream:
                with router.route_stream(messages, params, timeout=timeout) as text:
                    yield from text
                result: Any = text
            else:
                result = router.complete(messages, params, timeout=timeout)
                yield result.text
        self._record(response, result)


class AsyncRouterModel(_RouterModelBase, llm.AsyncModel):
    """The same model for llm's async API: the blocking Router runs in worker threads."""

    async def execute(self, prompt: Any, stream: bool, response: Any, conversation: Any) -> AsyncIterator[str]:
        router, messages, params, timeout = self._request(prompt)
        with _model_errors():
            if stream:
                text = await asyncio.to_thread(router.route_stream, messages, params, timeout=timeout)
                try:
                    while True:
                        chunk = await asyncio.to_thread(next, text, None)
                        if chunk is None:
                            break
                        yield chunk
                finally:
                    text.close()
                result: Any = text
            else:
                result = await asyncio.to_thread(router.complete, messages, params, timeout=timeout)
                yield result.text
        self._record(response, result)


@contextlib.contextmanager
def _model_errors() -> Iterator[None]:
    """The library's errors as llm's ModelError, which llm shows as "Error: ..." (exit 1)."""
    try:
        yield
    except OrchestratorError as error:
        raise llm.ModelError(f"{type(error).__name__}: {error}") from error


def to_router_messages(prompt: Any) -> List[Message]:
    """The whole conversation llm hands over (``prompt.messages``) as Router Messages."""
    messages: List[Message] = []
    for message in prompt.messages:
        text = "".join(getattr(part, "text", "") for part in message.parts if type(part).__name__ == "TextPart")
        others = sorted({type(part).__name__ for part in message.parts} - {"TextPart", "ReasoningPart"})
        if others:
            raise llm.ModelError(f"multi-llm-orchestrator models take text only; this prompt has {', '.join(others)}")
        if message.role not in ("system", "user", "assistant"):
            raise llm.ModelError(f"multi-llm-orchestrator models take system, user and assistant messages; got {message.role!r}")
        messages.append(Message(message.role, text))
    return messages


def _config() -> Tuple[Tuple[str, float], RouterConfig]:
    source = os.environ.get(CONFIG_ENV) or None
    if source is None:
        key: Tuple[str, float] = ("", 0.0)
    else:
        try:
            key = (source, os.path.getmtime(source))
        except OSError:
            key = (source, -1.0)  # load_config says the file is missing
    with _lock:
        config = _configs.get(key)
    if config is None:
        config = load_config(source if source is not None else DEFAULT_CONFIG)
        with _lock:
            _configs[key] = config
    return key, config


def _router(config_key: Any, provider: Optional[str]) -> Any:
    """The Router for a model, built once: the whole configuration, or (for a provider's
    model) the same Router settings over that provider alone."""
    with _lock:
        router = _routers.get((config_key, provider))
        if router is not None:
            return router
        config = _configs[config_key]
        if provider is not None:
            config = dataclasses.replace(config, providers=[s for s in config.providers if s.config.name == provider])
        router = config.build()
        _routers[(config_key, provider)] = router
        return router


@atexit.register
def close_routers() -> None:
    """Close every Router the plugin built (also run at exit)."""
    with _lock:
        routers = list(_routers.values())
        _routers.clear()
    for router in routers:
        router.close()

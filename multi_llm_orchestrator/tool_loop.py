"""The common tool loop: call the model, run the tools it asks for, send the results
back, until it answers with text.

>>> def get_weather(city: str) -> str:
...     "Current weather in a city."
...     return f"+21°C and sunny in {city}"
>>> completion = run_tools(router, "Weather in Kazan?", [get_weather])      # doctest: +SKIP
>>> completion.text                                                           # doctest: +SKIP
'It is +21°C and sunny in Kazan.'

The loop is bounded twice: by ``max_rounds`` (rounds of tool calls; one more request
asking for tools raises ``ToolLoopError``) and by time (``timeout``, default the
Router's own ``timeout``: one budget for the whole loop, each call getting what is left;
running out raises ``DeadlineExceededError``). A tool that raises, or is called with
arguments it does not take, does not end the loop: the model gets
``{"error": "<type>: <message>"}`` as that call's result (and the error is logged at
WARNING), as the OpenAI and simonw/llm loops do, so it can correct itself; pass
``raise_errors=True`` to stop at the first failing tool instead.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from .errors import ConfigurationError, DeadlineExceededError, ToolLoopError
from .types import Completion, GenerationParams, Message, Prompt, Tool, ToolCall, Usage, to_messages
from .validation import check_int

__all__ = ["run_tools"]

logger = logging.getLogger("multi_llm_orchestrator.tools")

Functions = Union[Mapping[str, Callable[..., Any]], Sequence[Callable[..., Any]]]


def run_tools(
    target: Any,
    prompt: Prompt,
    functions: Functions,
    params: Optional[GenerationParams] = None,
    *,
    max_rounds: int = 8,
    timeout: Optional[float] = None,
    raise_errors: bool = False,
) -> Completion:
    """Run the tool loop on ``target`` (a Router, or any provider) and return the final
    text answer.

    ``functions`` are the Python callables the model may call: a list (each named by its
    ``__name__``) or a ``{name: callable}`` dict. Without ``params.tools`` the tools are
    described from the functions themselves (``Tool.from_function``: type hints and
    docstring); with them, every tool must have a function. The returned Completion is
    the last answer, with ``usage`` summed over every round, ``latency_s`` the whole
    loop, and ``attempts`` every attempt of every round.
    """
    check_int("max_rounds", max_rounds, 1)
    registry = _registry(functions)
    params = params or GenerationParams()
    if not params.tools:
        params = dataclasses.replace(params, tools=[Tool.from_function(fn, name=name) for name, fn in registry.items()])
    missing = [tool.name for tool in params.tools or () if tool.name not in registry]
    if missing:
        raise ConfigurationError(f"No function for the tool(s) {', '.join(missing)}: pass one for each tool")
    budget = getattr(target, "timeout", None) if timeout is None else timeout
    started = time.monotonic()
    deadline = None if budget is None else started + budget
    messages: List[Message] = list(to_messages(prompt))
    usage = Usage()
    attempts: list = []
    for round_number in range(max_rounds + 1):
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceededError([], budget, f"The tool loop ran out of its {budget:g} s after "
                                                    f"{round_number} round(s) of tool calls")
        completion = target.complete(messages, params, timeout=remaining)
        usage = _add(usage, completion.usage)
        attempts.extend(completion.attempts)
        if not completion.tool_calls:
            return dataclasses.replace(completion, usage=usage, latency_s=time.monotonic() - started, attempts=attempts)
        if round_number == max_rounds:
            raise ToolLoopError(
                f"The model still asked for tools after {max_rounds} round(s): raise max_rounds, or check that "
                f"the tools' results answer what it asks",
                completion=completion, messages=messages,
            )
        messages.append(completion.message)
        for call in completion.tool_calls:
            messages.append(Message.tool_result(call, _run(call, registry, raise_errors)))
    raise AssertionError("unreachable")  # the loop returns or raises


def _registry(functions: Functions) -> Dict[str, Callable[..., Any]]:
    if isinstance(functions, Mapping):
        registry = dict(functions)
    elif isinstance(functions, (str, bytes)) or not isinstance(functions, Sequence):
        raise ConfigurationError(f"functions must be a list of callables or a {{name: callable}} dict; got {functions!r}")
    else:
        registry = {getattr(fn, "__name__", ""): fn for fn in functions}
    for name, fn in registry.items():
        if not callable(fn):
            raise ConfigurationError(f"The tool function {name!r} is not callable: {fn!r}")
    if not registry:
        raise ConfigurationError("functions is empty: pass at least one function the model may call")
    return registry


def _run(call: ToolCall, registry: Mapping[str, Callable[..., Any]], raise_errors: bool) -> Any:
    function = registry.get(call.name)
    try:
        if function is None:
            raise LookupError(f"no tool named {call.name!r}; the tools are {', '.join(registry)}")
        return function(**call.arguments)
    except Exception as exc:
        if raise_errors:
            raise
        logger.warning("tool %r failed: %s: %s; the model gets the error as the result", call.name,
                       type(exc).__name__, exc, extra={"tool": call.name})
        return {"error": f"{type(exc).__name__}: {exc}"}


def _add(total: Usage, more: Usage) -> Usage:
    return Usage(
        total.prompt_tokens + more.prompt_tokens, total.completion_tokens + more.completion_tokens,
        total.total_tokens + more.total_tokens, total.cached_prompt_tokens + more.cached_prompt_tokens,
        total.reasoning_tokens + more.reasoning_tokens,
    )

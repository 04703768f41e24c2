"""A provider that plays a small, deterministic tool-using model, for adapter tests.

LangChain's standard integration tests ask a real model to call tools and to answer in a
schema ("What is the value of magic_function(3)? Use the tool." must give
``magic_function(input=3)``). ``ScriptedProvider`` answers such prompts by rule, through
the same Router path as any provider (capabilities, planning, streams, usage):

- with ``tools`` (and ``tool_choice`` not "none") and a user message last: a call of the
  chosen tool (the forced one, else one named in the prompt, else the first), its
  arguments filled from the prompt by the schema: integers and numbers from the numbers
  in the prompt, in order; strings from quoted text, else a capitalised word;
- with ``response_format``: a JSON object with the schema's properties (for "json":
  the keys quoted in the prompt);
- after a tool result: "The tool <name> returned <content>"; otherwise
  "Scripted answer to: <last message>".
"""

from __future__ import annotations

import itertools
import json
import re
import time
from typing import Any, Dict, Iterator, List, Optional, Union

from multi_llm_orchestrator.providers.base import BaseProvider
from multi_llm_orchestrator.types import Completion, GenerationParams, Prompt, StreamEnd, TextStream, Tool, ToolCall, Usage

__all__ = ["ScriptedProvider", "scripted_reply"]

_ids = itertools.count(1)


class ScriptedProvider(BaseProvider):
    default_model = "scripted-1"
    type_name = "scripted"
    declared_capabilities = frozenset({"tools", "structured_output", "streaming_tools"})

    def complete(self, messages: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None) -> Completion:
        started = time.perf_counter()
        messages, params = self._prepare(messages, params)
        text, calls = self._answer(messages, params)
        return self._completion(text, started, usage=self._usage(messages, text),
                                finish_reason="tool_calls" if calls else "stop", tool_calls=calls)

    def stream(self, messages: Prompt, params: Optional[GenerationParams] = None, *, timeout: Optional[float] = None) -> TextStream:
        messages, params = self._prepare(messages, params)
        text, calls = self._answer(messages, params)
        usage = self._usage(messages, text)

        def events() -> Iterator[Union[str, StreamEnd]]:
            words = text.split(" ") if text else []
            for index, word in enumerate(words):
                yield word if index == len(words) - 1 else word + " "
            yield StreamEnd(usage, "tool_calls" if calls else "stop", tool_calls=calls or None)

        return self._text_stream(events())

    def health_check(self, timeout: Optional[float] = None) -> bool:
        return True

    # The rules ------------------------------------------------------------------------

    def _answer(self, messages: List[Any], params: GenerationParams) -> "tuple[str, List[ToolCall]]":
        last = messages[-1]
        if params.response_format is not None:
            return json.dumps(_instance(params.response_format, last.content), ensure_ascii=False), []
        if params.tools and params.tool_choice != "none" and last.role == "user":
            tool = _chosen_tool(params.tools, params.tool_choice, last.content)
            return "", [ToolCall(f"call_{next(_ids)}", tool.name, _arguments(tool.parameters, last.content))]
        if last.role == "tool":
            return f"The tool {last.name or 'tool'} returned {last.content}", []
        return f"Scripted answer to: {last.content}", []

    @staticmethod
    def _usage(messages: List[Any], text: str) -> Usage:
        return Usage.of(sum(len(m.content.split()) for m in messages), len(text.split()))


def _chosen_tool(tools: List[Tool], choice: Optional[str], prompt: str) -> Tool:
    for tool in tools:
        if tool.name == choice:
            return tool
    for tool in tools:
        if tool.name in prompt:
            return tool
    return tools[0]


def _arguments(schema: Dict[str, Any], prompt: str) -> Dict[str, Any]:
    numbers = iter(re.findall(r"-?\d+(?:\.\d+)?", prompt.split("(", 1)[-1] if "(" in prompt else prompt))
    quoted = iter(re.findall(r"'([^']+)'|\"([^\"]+)\"", prompt))
    words = iter(re.findall(r"\b[A-Z][a-z]+\b", prompt)[1:] or ["Value"])
    properties = schema.get("properties", {})
    required = schema.get("required", list(properties))
    arguments: Dict[str, Any] = {}
    for name in required:
        kind = properties.get(name, {}).get("type", "string")
        if kind in ("integer", "number"):
            value = next(numbers, "1")
            arguments[name] = int(float(value)) if kind == "integer" else float(value)
        elif kind == "boolean":
            arguments[name] = True
        elif kind == "array":
            arguments[name] = []
        elif kind == "object":
            arguments[name] = {}
        else:
            found = next(quoted, None)
            arguments[name] = (found[0] or found[1]) if found else next(words, "Value")
    return arguments


def _instance(response_format: Union[str, Dict[str, Any]], prompt: str) -> Dict[str, Any]:
    if response_format == "json":
        keys = re.findall(r"'(\w+)'", prompt) or ["answer"]
        return {key: f"{key} about {prompt[:20]}" for key in keys}
    properties = response_format.get("properties", {})
    instance: Dict[str, Any] = {}
    for name, spec in properties.items():
        kind = spec.get("type") or next((o.get("type") for o in spec.get("anyOf", []) if o.get("type") != "null"), "string")
        instance[name] = {"integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}}.get(kind, f"{name} text")
    return instance


def scripted_reply(payload: Dict[str, Any]) -> str:
    """A ``FakeOpenAIServer`` reply by the same rules, for requests without tools: JSON for
    a ``response_format`` (json_schema or json_object), else an echo of the last message."""
    last = payload["messages"][-1]
    prompt = last.get("content") if isinstance(last.get("content"), str) else ""
    response_format = payload.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return json.dumps(_instance(response_format["json_schema"]["schema"], prompt))
    if response_format.get("type") == "json_object":
        return json.dumps(_instance("json", prompt))
    return f"Scripted answer to: {prompt}"

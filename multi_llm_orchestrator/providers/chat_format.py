"""The OpenAI-shaped chat wire that GigaChat (API v1) and OpenAI-compatible servers share.

A completion is ``{"choices": [{"message": {"content"}, "finish_reason"}], "usage":
{"prompt_tokens", "completion_tokens", "total_tokens"}, "model"}``; a streamed chunk has
``delta`` where the completion has ``message``, and usage comes in one of the last
chunks (PROTOCOLS.md §1.6-1.7, §4.3-4.4). Only that shared shape is read here: each
provider first checks its own error bodies (OpenAI's ``{"error"}`` under HTTP 200,
GigaChat's ``{"status"}`` event) and then hands the data over.

Beyond text (PROTOCOLS.md §6-8): tool calls come as OpenAI's ``message.tool_calls``
(arguments a JSON string) or GigaChat's single ``message.function_call`` (arguments an
object, with ``functions_state_id`` as the id); in streams OpenAI sends fragments keyed
by ``index`` and GigaChat whole calls, both assembled by ``ToolCallAssembler``. Thinking
text is ``reasoning_content`` (GigaChat, vLLM <= 0.10, Yandex /v1, llama.cpp) or
``reasoning`` (vLLM >= 0.11, Ollama /v1). Finish reasons are normalised to "stop",
"length", "tool_calls", "content_filter".
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Tuple, Union

from ..errors import ResponseFormatError
from ..types import GenerationParams, Message, ReasoningDelta, StreamEnd, ToolCall, Usage

__all__ = [
    "parse_completion", "parse_answer", "Answer", "usage_of", "chunk_deltas", "finish_reason_of",
    "parse_arguments", "new_call_id", "ToolCallAssembler", "openai_messages", "openai_tool_fields",
]

# Provider finish reasons that mean one of the four common ones.
FINISH_REASONS = {
    "function_call": "tool_calls",  # GigaChat, OpenAI's legacy functions
    "tool_call": "tool_calls",
    "blacklist": "content_filter",  # GigaChat
    "max_tokens": "length",
}


def finish_reason_of(reason: Any, tool_calls: bool = False) -> Optional[str]:
    """``reason`` normalised: "tool_calls" whenever the answer carries calls (Ollama says
    "stop"), GigaChat's "function_call"/"blacklist" as "tool_calls"/"content_filter".

    >>> finish_reason_of("function_call"), finish_reason_of("stop", tool_calls=True)
    ('tool_calls', 'tool_calls')
    """
    if tool_calls:
        return "tool_calls"
    if not isinstance(reason, str):
        return None
    return FINISH_REASONS.get(reason, reason)


def new_call_id() -> str:
    """An id for a tool call whose provider sends none (GigaChat, YandexGPT): 96 random
    bits (``uuid`` is not imported for this: it loads ``platform``, a cost at import)."""
    return f"call_{os.urandom(12).hex()}"


def parse_arguments(raw: Any, name: str, provider: str) -> Dict[str, Any]:
    """A tool call's arguments as a dict: an object as is (GigaChat, Ollama, Yandex), a
    JSON string parsed (OpenAI); anything else is a ResponseFormatError."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ResponseFormatError(
                f"the arguments of the tool call {name!r} are not valid JSON ({exc.msg}): {raw[:80]!r}",
                provider=provider,
            ) from None
    if not isinstance(raw, dict):
        raise ResponseFormatError(
            f"the arguments of the tool call {name!r} are a JSON {type(raw).__name__}, not an object",
            provider=provider,
        )
    return raw


def _call_of(item: Any, provider: str) -> Optional[ToolCall]:
    """One OpenAI/Ollama ``tool_calls[]`` item (``custom`` tools are not ours: skipped)."""
    if not isinstance(item, dict) or item.get("type") not in (None, "", "function"):
        return None
    function = item.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise ResponseFormatError(f"a tool call has no function name: {str(item)[:120]!r}", provider=provider)
    name = function["name"]
    call_id = item.get("id")
    return ToolCall(call_id if isinstance(call_id, str) and call_id else new_call_id(), name,
                    parse_arguments(function.get("arguments"), name, provider))


def tool_calls_of(message: Mapping[str, Any], provider: str) -> List[ToolCall]:
    """The tool calls of an answer's message: OpenAI's/Ollama's ``tool_calls`` list, or
    GigaChat's single ``function_call`` (its ``functions_state_id`` becomes the id)."""
    raw = message.get("tool_calls")
    if raw:
        if not isinstance(raw, list):
            raise ResponseFormatError(f"message.tool_calls is {type(raw).__name__}, not a list", provider=provider)
        return [call for call in (_call_of(item, provider) for item in raw) if call is not None]
    function = message.get("function_call")
    if isinstance(function, dict) and function.get("name"):
        state = message.get("functions_state_id")
        name = str(function["name"])
        return [ToolCall(state if isinstance(state, str) and state else new_call_id(), name,
                         parse_arguments(function.get("arguments"), name, provider))]
    return []


def reasoning_of(message: Mapping[str, Any]) -> Optional[str]:
    """The thinking text of a message or delta, where a server sends one."""
    text = message.get("reasoning_content")
    if not isinstance(text, str):
        text = message.get("reasoning")
    return text if isinstance(text, str) and text else None


class Answer(NamedTuple):
    """Everything read from one completion body."""

    text: str
    usage: Usage
    finish_reason: Optional[str]
    model: Optional[str]
    tool_calls: List[ToolCall]
    reasoning: Optional[str]


def usage_of(raw: Any, provider: Optional[str] = None) -> Optional[Usage]:
    """The token counts of a ``usage`` object; None when there is no object or its
    counts cannot be trusted (``Usage.parse``).

    >>> usage_of({"prompt_tokens": 3, "completion_tokens": 4})
    Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7)
    >>> usage_of(None) is None
    True
    """
    if not isinstance(raw, dict):
        return None
    prompt_details = raw.get("prompt_tokens_details") or raw.get("input_tokens_details")
    completion_details = raw.get("completion_tokens_details")
    cached = prompt_details.get("cached_tokens") if isinstance(prompt_details, dict) else None
    if cached is None:
        cached = raw.get("precached_prompt_tokens")  # GigaChat v1
    reasoning = completion_details.get("reasoning_tokens") if isinstance(completion_details, dict) else None
    return Usage.parse(raw.get("prompt_tokens"), raw.get("completion_tokens"), raw.get("total_tokens"), provider=provider,
                       cached_prompt_tokens=cached, reasoning_tokens=reasoning)


def parse_completion(
    data: Any, provider: str, what: str = "chat/completions"
) -> Tuple[str, Usage, Optional[str], Optional[str]]:
    """``(text, usage, finish_reason, model)`` of a parsed completion body.

    A body this cannot read raises ResponseFormatError naming ``what`` answered it.
    ``content: null`` (an answer of tool calls only) is empty text; absent usage is
    zeros; ``model`` is None when the body names none.

    >>> parse_completion({"choices": [{"message": {"content": "Hi"}, "finish_reason": "stop"}]}, "p")
    ('Hi', Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0), 'stop', None)
    """
    return parse_answer(data, provider, what)[:4]


def parse_answer(data: Any, provider: str, what: str = "chat/completions") -> Answer:
    """Everything in a parsed completion body: ``parse_completion``'s four fields, the
    tool calls and the reasoning text; the finish reason normalised."""
    if not isinstance(data, dict):
        raise ResponseFormatError(f"{what} answered {type(data).__name__}, not an object", provider=provider)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ResponseFormatError(f"{what} answered without choices", provider=provider)
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise ResponseFormatError(f"{what} answered without choices[0].message", provider=provider)
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise ResponseFormatError(
            f"choices[0].message.content is {type(content).__name__}, not text", provider=provider
        )
    calls = tool_calls_of(message, provider) if "tool_calls" in message or "function_call" in message else []
    return Answer(
        content or "", usage_of(data.get("usage"), provider) or Usage(),
        finish_reason_of(choice.get("finish_reason"), bool(calls)), data.get("model"), calls, reasoning_of(message),
    )


class ToolCallAssembler:
    """Tool calls put together from stream deltas.

    OpenAI fragments are keyed by ``index``: ``id``, ``type`` and ``name`` are set only
    from non-empty values (vLLM-style servers resend ``""``), ``arguments`` strings are
    concatenated and parsed at the end. Whole calls (GigaChat's ``function_call``,
    YandexGPT's and Ollama's one-chunk calls) go through the same path.
    """

    def __init__(self) -> None:
        self._calls: Dict[int, Dict[str, Any]] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add_fragments(self, fragments: Any) -> None:
        if not isinstance(fragments, list):
            return
        for position, fragment in enumerate(fragments):
            if not isinstance(fragment, dict):
                continue
            index = fragment.get("index")
            if not isinstance(index, int):
                index = len(self._calls) if fragment.get("id") or position else max(self._calls, default=0)
            call = self._calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
            if fragment.get("id"):
                call["id"] = fragment["id"]
            function = fragment.get("function")
            if isinstance(function, dict):
                self._add(call, function)

    def add_function_call(self, function: Any, state_id: Any = None) -> None:
        """GigaChat's ``delta.function_call`` (a whole call, or string pieces of one)."""
        if not isinstance(function, dict):
            return
        call = self._calls.setdefault(0, {"id": "", "name": "", "arguments": ""})
        if isinstance(state_id, str) and state_id:
            call["id"] = state_id
        self._add(call, function)

    @staticmethod
    def _add(call: Dict[str, Any], function: Dict[str, Any]) -> None:
        if function.get("name"):
            call["name"] = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, dict):
            call["arguments"] = arguments
        elif isinstance(arguments, str) and arguments:
            previous = call["arguments"]
            call["arguments"] = (previous if isinstance(previous, str) else json.dumps(previous)) + arguments

    def calls(self, provider: str) -> List[ToolCall]:
        """The assembled calls in index order, arguments parsed."""
        result = []
        for index in sorted(self._calls):
            call = self._calls[index]
            if not call["name"]:
                raise ResponseFormatError(f"the stream's tool call #{index} never named its function", provider=provider)
            result.append(ToolCall(call["id"] or new_call_id(), call["name"],
                                   parse_arguments(call["arguments"], call["name"], provider)))
        return result


def chunk_deltas(events: Iterable[Mapping[str, Any]], provider: str) -> Iterator[Union[str, StreamEnd]]:
    """The text deltas of parsed stream chunks, then one StreamEnd with the last usage,
    finish_reason and model reported (usage None when no chunk had any) and the tool
    calls assembled from the deltas. Thinking text comes as ``ReasoningDelta``.

    Only choice 0 is read: a request with ``n > 1`` streams the others interleaved.

    >>> list(chunk_deltas([{"choices": [{"delta": {"content": "Hi"}}]},
    ...                    {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}], "p"))
    ['Hi', StreamEnd(usage=Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2), finish_reason=None, model=None)]
    """
    usage: Optional[Usage] = None
    finish_reason: Optional[str] = None
    model: Optional[str] = None
    calls = ToolCallAssembler()
    for event in events:
        model = event.get("model") or model
        raw_usage = event.get("usage")
        if raw_usage is not None:
            usage = usage_of(raw_usage, provider) or usage  # OpenAI: a last chunk with choices == []
        choices = event.get("choices") or []
        if not isinstance(choices, list):
            raise ResponseFormatError(
                f"a stream chunk has choices of type {type(choices).__name__}, not a list", provider=provider
            )
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            finish_reason = choice.get("finish_reason") or finish_reason
            if not isinstance(delta, dict):
                continue
            if delta.get("role") == "function_in_progress":  # GigaChat built-in function progress
                continue
            content = delta.get("content")
            if content is not None and not isinstance(content, str):
                raise ResponseFormatError(
                    f"a stream chunk's delta.content is {type(content).__name__}, not text", provider=provider
                )
            if len(delta) > 1 or content is None:  # more than text: reasoning or tool calls
                reasoning = reasoning_of(delta)
                if reasoning:
                    yield ReasoningDelta(reasoning)
                if delta.get("tool_calls"):
                    calls.add_fragments(delta["tool_calls"])
                elif delta.get("function_call"):
                    calls.add_function_call(delta["function_call"], delta.get("functions_state_id"))
            if content:
                yield content
    tool_calls = calls.calls(provider) if calls else None
    yield StreamEnd(usage=usage, finish_reason=finish_reason_of(finish_reason, bool(tool_calls)), model=model,
                    tool_calls=tool_calls)


# Requests in the OpenAI shape ----------------------------------------------------------------


def openai_messages(messages: Iterable[Message]) -> List[Dict[str, Any]]:
    """Messages as OpenAI's Chat Completions ``messages``."""
    return [
        m.to_openai() if m.tool_calls or m.role == "tool" else {"role": m.role, "content": m.content}
        for m in messages
    ]


def openai_tool_fields(params: GenerationParams, body: Dict[str, Any], *, tool_choice: bool = True) -> None:
    """Set ``tools`` and ``tool_choice`` of an OpenAI-shaped ``body`` from ``params``
    (``tool_choice`` False: a server without it, such as Ollama)."""
    if params.tools:
        body["tools"] = [tool.to_openai() for tool in params.tools]
    choice = params.tool_choice
    if choice is not None and tool_choice:
        body["tool_choice"] = choice if choice in ("auto", "none", "required") else {
            "type": "function", "function": {"name": choice}}


def openai_response_format(response_format: Any) -> Optional[Dict[str, Any]]:
    """``response_format`` ("json" or a JSON Schema) in OpenAI's shape; ``name`` (which
    OpenAI requires) from the schema's ``title``, else "response"."""
    if response_format is None:
        return None
    if response_format == "json":
        return {"type": "json_object"}
    title = response_format.get("title")
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in title)[:64] if isinstance(title, str) and title else "response"
    return {"type": "json_schema", "json_schema": {"name": name, "schema": response_format}}

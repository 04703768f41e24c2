"""Value types passed in and out of the Router: messages, parameters, usage, results.

All are dataclasses serialisable with dataclasses-json (``to_dict()``, ``to_json()``,
``from_dict()``), which is imported the first time one of them is used (``jsonable.py``).
They are written as ``records.py`` value classes (each ``__init__`` written out), which
become dataclasses the first time something asks (``dataclasses.fields``,
``is_dataclass``, ``replace``, ``asdict``...): importing a provider runs no ``@dataclass``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from .errors import ConfigurationError, ProviderError, ResponseFormatError
from .jsonable import lazy_dataclass_json
from .records import FACTORY, FrozenRecord, field
from .validation import check_int, check_number

__all__ = [
    "Tool",
    "ToolCall",
    "Message",
    "GenerationParams",
    "Usage",
    "Attempt",
    "Completion",
    "Embeddings",
    "TokenCount",
    "StreamEnd",
    "ReasoningDelta",
    "RouterEvent",
    "TextStream",
    "Prompt",
    "to_messages",
]

logger = logging.getLogger("multi_llm_orchestrator.types")

ROLES = ("system", "user", "assistant", "tool")
TOOL_CHOICES = ("auto", "none", "required")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
# Roles other apps send that mean one of ours (OpenAI's "developer" is the o1+ "system";
# "function" is the legacy OpenAI/GigaChat tool result).
ROLE_ALIASES = {"developer": "system", "function": "tool"}


def _empty_object_schema() -> Dict[str, Any]:
    return {"type": "object", "properties": {}}


@lazy_dataclass_json
class Tool(FrozenRecord):
    """A function the model may call: ``name``, what it does, and its ``parameters`` as a
    JSON Schema object. Build one directly, from a plain Python function with type hints
    and a docstring (``Tool.from_function``), or from an OpenAI-shaped dict
    (``Tool.of``); ``GenerationParams(tools=[...])`` accepts all three.

    >>> def get_weather(city: str) -> str:
    ...     "Current weather in a city."
    >>> Tool.from_function(get_weather).parameters
    {'type': 'object', 'properties': {'city': {'type': 'string'}}, 'required': ['city']}
    """

    name: str
    description: str = ""
    parameters: Dict[str, Any] = field(default_factory=_empty_object_schema)

    def __init__(self, name: str, description: str = "", parameters: Dict[str, Any] = FACTORY) -> None:
        state = self.__dict__
        state["name"] = name
        state["description"] = description
        state["parameters"] = _empty_object_schema() if parameters is FACTORY else parameters
        self.__post_init__()

    def __post_init__(self) -> None:
        from .tool_schema import check_tool_name

        check_tool_name(self.name)
        if not isinstance(self.description, str):
            raise ConfigurationError(f"Tool {self.name!r}: description must be a str; got {type(self.description).__name__}")
        if not isinstance(self.parameters, dict) or self.parameters.get("type", "object") != "object":
            raise ConfigurationError(
                f"Tool {self.name!r}: parameters must be a JSON Schema object such as "
                f"{{'type': 'object', 'properties': {{...}}}}; got {self.parameters!r}"
            )

    @classmethod
    def from_function(cls, function: Callable[..., Any], *, name: Optional[str] = None,
                      description: Optional[str] = None) -> "Tool":
        """A Tool describing ``function``: its name, its docstring's first paragraph, and a
        schema built from its type hints (parameter descriptions from ``Args:``)."""
        from .tool_schema import schema_of_function

        found_name, found_description, parameters = schema_of_function(function)
        return cls(name or found_name, found_description if description is None else description, parameters)

    @classmethod
    def of(cls, value: Any) -> "Tool":
        """A Tool from a Tool, a function, or a dict: OpenAI's ``{"type": "function",
        "function": {name, description, parameters}}`` or the flat inner object."""
        if isinstance(value, Tool):
            return value
        if isinstance(value, Mapping):
            inner = value.get("function") if value.get("type") == "function" or "function" in value else value
            if not isinstance(inner, Mapping) or "name" not in inner:
                raise ConfigurationError(
                    f"A tool dict needs a name: {{'name', 'description', 'parameters'}} or OpenAI's "
                    f"{{'type': 'function', 'function': {{...}}}}; got {dict(value)!r}"
                )
            parameters = inner.get("parameters")
            return cls(inner["name"], inner.get("description") or "",
                       dict(parameters) if parameters else {"type": "object", "properties": {}})
        if callable(value):
            return cls.from_function(value)
        raise ConfigurationError(f"A tool must be a Tool, a function or a dict; got {type(value).__name__}")

    def to_openai(self) -> Dict[str, Any]:
        """``{"type": "function", "function": {name, description, parameters}}``."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


@lazy_dataclass_json
class ToolCall(FrozenRecord):
    """A call of a tool requested by the model: ``arguments`` already parsed to a dict.

    ``id`` pairs the call with its result (``Message.tool_result``). Providers without
    call ids (GigaChat, YandexGPT) get a generated one; GigaChat's ``functions_state_id``
    is used as the id when it sends one.

    >>> ToolCall("call_1", "get_weather", {"city": "Kazan"}).to_openai()["function"]
    {'name': 'get_weather', 'arguments': '{"city": "Kazan"}'}
    """

    id: str
    name: str
    arguments: Dict[str, Any] = field(default_factory=dict)

    def __init__(self, id: str, name: str, arguments: Dict[str, Any] = FACTORY) -> None:  # noqa: A002 - the field's name
        state = self.__dict__
        state["id"] = id
        state["name"] = name
        state["arguments"] = {} if arguments is FACTORY else arguments
        self.__post_init__()

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not isinstance(self.name, str) or not self.name:
            raise ConfigurationError(f"A ToolCall needs a str id and a non-empty str name; got {self.id!r}, {self.name!r}")
        if not isinstance(self.arguments, dict):
            raise ConfigurationError(
                f"ToolCall {self.name!r}: arguments must be a dict; got {type(self.arguments).__name__}"
            )

    def to_openai(self) -> Dict[str, Any]:
        """``{"id", "type": "function", "function": {"name", "arguments": "<JSON string>"}}``."""
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)}}

    @classmethod
    def from_openai(cls, data: Mapping[str, Any]) -> "ToolCall":
        """From OpenAI's shape; ``arguments`` may be a JSON string or an object."""
        function = data.get("function") if isinstance(data, Mapping) else None
        if not isinstance(function, Mapping) or not function.get("name"):
            raise ConfigurationError(f"A tool call dict needs function.name; got {data!r}")
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                raise ConfigurationError(
                    f"Tool call {function['name']!r}: arguments are not valid JSON: {arguments[:80]!r}"
                ) from None
        return cls(str(data.get("id") or ""), function["name"], arguments if arguments is not None else {})


@lazy_dataclass_json
class Message(FrozenRecord):
    """One chat message. ``role`` is "system", "user", "assistant" or "tool".

    An assistant message may carry ``tool_calls`` (the model asked for them); a "tool"
    message carries one call's result in ``content`` with ``tool_call_id`` (and the
    tool's ``name``). ``Message.from_openai``/``to_openai`` convert OpenAI-shaped dicts,
    which a prompt list may also contain as they are.

    >>> Message("user", "What is Python?")
    Message(role='user', content='What is Python?')
    """

    role: str
    content: str
    tool_calls: Optional[List[ToolCall]] = None
    tool_call_id: Optional[str] = None
    name: Optional[str] = None

    def __init__(self, role: str, content: str, tool_calls: Optional[List[ToolCall]] = None,
                 tool_call_id: Optional[str] = None, name: Optional[str] = None) -> None:
        state = self.__dict__
        state["role"] = role
        state["content"] = content
        state["tool_calls"] = tool_calls
        state["tool_call_id"] = tool_call_id
        state["name"] = name
        self.__post_init__()

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigurationError(
                f"Message role must be one of {', '.join(ROLES)}; got {self.role!r}"
            )
        if not isinstance(self.content, str):
            raise ConfigurationError(
                f"Message content must be a str; got {type(self.content).__name__}"
            )
        if self.tool_calls is not None or self.tool_call_id is not None or self.name is not None or self.role == "tool":
            self._check_tool_fields()

    def _check_tool_fields(self) -> None:
        if self.tool_calls is not None and not self.tool_calls:
            object.__setattr__(self, "tool_calls", None)  # [] means no calls
        if self.tool_calls is not None:
            if self.role != "assistant":
                raise ConfigurationError(f"Only an assistant message carries tool_calls; this one is {self.role!r}")
            calls = [ToolCall.from_openai(c) if isinstance(c, Mapping) else c for c in self.tool_calls]
            if not all(isinstance(c, ToolCall) for c in calls):
                raise ConfigurationError("Message.tool_calls must be a list of ToolCall (or OpenAI tool call dicts)")
            object.__setattr__(self, "tool_calls", calls)
        if self.role == "tool" and not (self.tool_call_id or self.name):
            raise ConfigurationError(
                "A tool message needs tool_call_id (the ToolCall.id it answers) or name: "
                "build it with Message.tool_result(call, result)"
            )
        for key in ("tool_call_id", "name"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise ConfigurationError(f"Message.{key} must be a str; got {type(value).__name__}")

    @classmethod
    def tool_result(cls, call: ToolCall, result: Any) -> "Message":
        """The "tool" message answering ``call``: a str result as is, anything else as JSON.

        >>> Message.tool_result(ToolCall("call_1", "add", {"a": 1}), {"sum": 3}).content
        '{"sum": 3}'
        """
        content = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
        return cls("tool", content, tool_call_id=call.id, name=call.name)

    @classmethod
    def from_openai(cls, data: Mapping[str, Any]) -> "Message":
        """A Message from an OpenAI-shaped dict (``content`` may be None or a list of text
        parts; ``tool_calls`` with JSON-string arguments; roles "developer" and "function"
        read as "system" and "tool")."""
        if not isinstance(data, Mapping) or "role" not in data:
            raise ConfigurationError(f"A message dict needs a 'role'; got {data!r}")
        role = ROLE_ALIASES.get(data["role"], data["role"])
        content = data.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            content = "".join(part.get("text") or "" for part in content if isinstance(part, Mapping))
        calls = data.get("tool_calls")
        if not calls and isinstance(data.get("function_call"), Mapping):  # legacy single call
            calls = [{"id": "", "function": data["function_call"]}]
        return cls(
            role,
            "" if content is None else content,
            [ToolCall.from_openai(c) if isinstance(c, Mapping) else c for c in calls] if calls else None,
            data.get("tool_call_id"),
            data.get("name"),
        )

    def to_openai(self) -> Dict[str, Any]:
        """The OpenAI Chat Completions shape of this message."""
        wire: Dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            wire["tool_calls"] = [call.to_openai() for call in self.tool_calls]
            if not self.content:
                wire["content"] = None
        if self.role == "tool":
            if self.tool_call_id is not None:
                wire["tool_call_id"] = self.tool_call_id
            if self.name is not None:
                wire["name"] = self.name
        return wire

    def __repr__(self) -> str:
        shown = f"role={self.role!r}, content={self.content!r}"
        for key in ("tool_calls", "tool_call_id", "name"):
            value = getattr(self, key)
            if value is not None:
                shown += f", {key}={value!r}"
        return f"Message({shown})"


Prompt = Union[str, Message, Dict[str, str], Sequence[Union[Message, Dict[str, str]]]]


class Messages(List[Message]):
    """A list of Messages already validated by ``to_messages`` (so the Router's check is
    not repeated by the provider). ``has_tool_messages``: some message carries tool calls
    or a tool result (found while validating, so planning need not look again)."""

    has_tool_messages = False


def to_messages(prompt: Prompt) -> List[Message]:
    """Turn a plain string, a Message, a {"role", "content"} dict or a list of those into
    a validated, non-empty list of Messages.

    >>> to_messages("Hi")
    [Message(role='user', content='Hi')]
    """
    if isinstance(prompt, Messages):
        return prompt
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ConfigurationError("The prompt is empty: pass a non-empty string or messages")
        return Messages([Message("user", prompt)])
    if isinstance(prompt, (Message, dict)):
        prompt = [prompt]
    if isinstance(prompt, (bytes, bytearray)) or not isinstance(prompt, Sequence):
        raise ConfigurationError(
            "A prompt must be a str, a Message, a {'role', 'content'} dict or a list of them; "
            f"got {type(prompt).__name__}"
        )
    messages = Messages()
    for index, item in enumerate(prompt):
        if isinstance(item, Message):
            message = item
        elif isinstance(item, dict):
            if (len(item) == 2 and "content" in item and isinstance(item["content"], str)
                    and item.get("role") in ROLES):
                message = Message(item["role"], item["content"])
            else:  # tool calls, tool results, content parts: the OpenAI shape
                if "role" not in item or ("content" not in item and not item.get("tool_calls")
                                          and not item.get("function_call")):
                    missing = "'role'" if "role" not in item else "'content'"
                    raise ConfigurationError(
                        f"Message #{index} lacks the key {missing}: each dict needs 'role' and 'content'"
                    )
                message = Message.from_openai(item)
        else:
            raise ConfigurationError(
                f"Message #{index} must be a Message or a dict; got {type(item).__name__}"
            )
        if message.tool_calls or message.role == "tool":
            messages.has_tool_messages = True
        messages.append(message)
    if not messages:
        raise ConfigurationError("The message list is empty: pass at least one user message")
    if not messages.has_tool_messages and not any(m.content.strip() for m in messages):
        raise ConfigurationError("Every message is empty: pass some text to answer")
    return messages


@lazy_dataclass_json
class GenerationParams(FrozenRecord):
    """Sampling parameters, validated on construction. ``None`` means the provider's default.

    ``extra`` carries provider-specific fields (e.g. ``{"repetition_penalty": 1.1}`` for
    GigaChat) and is passed through as is.

    Beyond plain text (each provider maps them to its own wire; the Router only plans
    the call over providers that support them, see ``capabilities``):

    - ``tools``: functions the model may call: ``Tool`` objects, plain Python functions
      with type hints, or OpenAI-shaped dicts (all turned into ``Tool``).
    - ``tool_choice``: "auto" (default with tools), "none", "required", or a tool's name.
    - ``response_format``: "json" (any JSON object) or a JSON Schema dict (OpenAI's
      ``{"type": "json_schema", "json_schema": {...}}`` and ``{"type": "json_object"}``
      are accepted too). An answer that does not parse, or lacks the schema's
      required keys, is a ``ResponseFormatError`` and the Router falls back.
    - ``reasoning_effort``: "none", "minimal", "low", "medium", "high", "xhigh" or "max".

    >>> GenerationParams(temperature=0.7, max_tokens=256)
    GenerationParams(temperature=0.7, max_tokens=256, top_p=None, stop=None, extra={}, tools=None, tool_choice=None, response_format=None, reasoning_effort=None)
    """

    temperature: Optional[float] = None
    max_tokens: Optional[int] = None
    top_p: Optional[float] = None
    stop: Optional[List[str]] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    tools: Optional[List[Tool]] = None
    tool_choice: Optional[str] = None
    response_format: Optional[Union[str, Dict[str, Any]]] = None
    reasoning_effort: Optional[str] = None

    def __init__(
        self,
        temperature: Optional[float] = None,
        max_tokens: Optional[int] = None,
        top_p: Optional[float] = None,
        stop: Optional[List[str]] = None,
        extra: Dict[str, Any] = FACTORY,
        tools: Optional[List[Tool]] = None,
        tool_choice: Optional[str] = None,
        response_format: Optional[Union[str, Dict[str, Any]]] = None,
        reasoning_effort: Optional[str] = None,
    ) -> None:
        state = self.__dict__
        state["temperature"] = temperature
        state["max_tokens"] = max_tokens
        state["top_p"] = top_p
        state["stop"] = stop
        state["extra"] = {} if extra is FACTORY else extra
        state["tools"] = tools
        state["tool_choice"] = tool_choice
        state["response_format"] = response_format
        state["reasoning_effort"] = reasoning_effort
        self.__post_init__()

    def __post_init__(self) -> None:
        if self.temperature is not None:
            check_number("temperature", self.temperature, 0, 2)
        if self.max_tokens is not None:
            check_int("max_tokens", self.max_tokens, 0, low_open=True)
        if self.top_p is not None:
            check_number("top_p", self.top_p, 0, 1, low_open=True)
        if self.stop is not None:
            stop = [self.stop] if isinstance(self.stop, str) else self.stop
            if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
                raise ConfigurationError(f"stop must be a str or a list of str; got {self.stop!r}")
            object.__setattr__(self, "stop", list(stop))
        if not isinstance(self.extra, dict):
            raise ConfigurationError(f"extra must be a dict; got {type(self.extra).__name__}")
        if (self.tools is not None or self.tool_choice is not None or self.response_format is not None
                or self.reasoning_effort is not None):
            self._check_beyond_text()

    def _check_beyond_text(self) -> None:
        if self.tools is not None:
            if isinstance(self.tools, (str, bytes, Mapping)) or not isinstance(self.tools, Sequence):
                raise ConfigurationError(f"tools must be a list of Tool, functions or dicts; got {type(self.tools).__name__}")
            tools = [Tool.of(tool) for tool in self.tools]
            names = [tool.name for tool in tools]
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise ConfigurationError(f"Two tools share the name {', '.join(duplicates)}: tool names must be unique")
            object.__setattr__(self, "tools", tools)
        choice = self.tool_choice
        if isinstance(choice, Mapping):  # OpenAI's {"type": "function", "function": {"name": ...}}
            function = choice.get("function")
            choice = function.get("name") if isinstance(function, Mapping) else None
            object.__setattr__(self, "tool_choice", choice)
        if choice is not None:
            known = [tool.name for tool in self.tools or ()]
            if not isinstance(choice, str) or (choice not in TOOL_CHOICES and choice not in known):
                raise ConfigurationError(
                    f"tool_choice must be 'auto', 'none', 'required' or the name of one of the tools "
                    f"({', '.join(known) or 'none given'}); got {choice!r}"
                )
            if choice in ("required",) and not known:
                raise ConfigurationError("tool_choice='required' needs tools=[...]")
        object.__setattr__(self, "response_format", _response_format(self.response_format))
        if self.reasoning_effort is not None and self.reasoning_effort not in REASONING_EFFORTS:
            raise ConfigurationError(
                f"reasoning_effort must be one of {', '.join(REASONING_EFFORTS)}; got {self.reasoning_effort!r}"
            )


def _response_format(value: Any) -> Optional[Union[str, Dict[str, Any]]]:
    """"json", a JSON Schema dict, or None, from the forms a caller may pass."""
    if value is None or value == "json":
        return value
    if isinstance(value, Mapping):
        kind = value.get("type")
        if kind == "json_object":
            return "json"
        if kind == "text":
            return None
        if kind == "json_schema":  # OpenAI's wrapper, or GigaChat's flat one
            inner = value.get("json_schema", value)
            schema = inner.get("schema") if isinstance(inner, Mapping) else None
            if not isinstance(schema, Mapping):
                raise ConfigurationError("response_format json_schema needs a 'schema' dict")
            return dict(schema)
        return dict(value)
    raise ConfigurationError(
        f"response_format must be 'json' or a JSON Schema dict; got {value!r}"
    )


@lazy_dataclass_json
class Usage(FrozenRecord):
    """Token counts as reported by the provider (0 where it reported nothing).

    ``cached_prompt_tokens`` is the part of ``prompt_tokens`` served from the provider's
    prompt cache (GigaChat ``precached_prompt_tokens``, OpenAI ``cached_tokens``);
    ``reasoning_tokens`` the part of ``completion_tokens`` spent thinking (OpenAI,
    YandexGPT). Cost uses them (``ProviderConfig.price_per_1k_cached_prompt_tokens``).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_prompt_tokens: int = 0
    reasoning_tokens: int = 0

    def __init__(self, prompt_tokens: int = 0, completion_tokens: int = 0, total_tokens: int = 0,
                 cached_prompt_tokens: int = 0, reasoning_tokens: int = 0) -> None:
        state = self.__dict__
        state["prompt_tokens"] = prompt_tokens
        state["completion_tokens"] = completion_tokens
        state["total_tokens"] = total_tokens
        state["cached_prompt_tokens"] = cached_prompt_tokens
        state["reasoning_tokens"] = reasoning_tokens

    @classmethod
    def of(cls, prompt_tokens: Any, completion_tokens: Any, total_tokens: Any = None,
           cached_prompt_tokens: Any = None, reasoning_tokens: Any = None) -> "Usage":
        """Build from loosely typed values (strings, None), computing a missing total;
        zeros when a value is not a token count (see ``parse``)."""
        return cls.parse(prompt_tokens, completion_tokens, total_tokens, cached_prompt_tokens=cached_prompt_tokens,
                         reasoning_tokens=reasoning_tokens) or cls()

    @classmethod
    def parse(
        cls, prompt_tokens: Any, completion_tokens: Any, total_tokens: Any = None, *, provider: Optional[str] = None,
        cached_prompt_tokens: Any = None, reasoning_tokens: Any = None,
    ) -> "Optional[Usage]":
        """Usage from a provider's wire values, or None (usage unknown) when any of them
        is not a whole number in [0, MAX_TOKEN_COUNT]: ``1e400``, ``-5000``, ``"abc"``,
        ``true``. None (absent) counts as 0, digit strings are read (YandexGPT sends
        int64 as strings). What was rejected is logged at DEBUG. The cached and
        reasoning parts are optional details: one that is not a count is read as 0.

        >>> Usage.parse("19", 4), Usage.parse(-5000, 4)
        (Usage(prompt_tokens=19, completion_tokens=4, total_tokens=23), None)
        """
        prompt, completion = _token_count(prompt_tokens), _token_count(completion_tokens)
        total = _token_count(total_tokens) if total_tokens is not None else None
        if prompt is None or completion is None or (total_tokens is not None and total is None):
            logger.debug(
                "provider %r reported usage that is not token counts (prompt %.40r, completion %.40r, "
                "total %.40r): usage treated as unknown", provider, prompt_tokens, completion_tokens, total_tokens,
                extra={"provider": provider},
            )
            return None
        total = prompt + completion if total is None else total
        if cached_prompt_tokens is None and reasoning_tokens is None:
            return cls(prompt, completion, total)
        # A cached or reasoning count is a part of its total: never more than it.
        return cls(prompt, completion, total, min(_token_count(cached_prompt_tokens) or 0, prompt),
                   min(_token_count(reasoning_tokens) or 0, completion))

    @property
    def plausible(self) -> bool:
        """Whether every count is a whole number in [0, MAX_TOKEN_COUNT] (what metrics add up)."""
        p, c, t, cached, reasoning = counts = (
            self.prompt_tokens, self.completion_tokens, self.total_tokens, self.cached_prompt_tokens, self.reasoning_tokens
        )
        if type(p) is int and type(c) is int and type(t) is int and type(cached) is int and type(reasoning) is int:
            # Nearly every Usage (metrics ask on every call): plain ints, compared in place.
            return (0 <= p <= MAX_TOKEN_COUNT and 0 <= c <= MAX_TOKEN_COUNT and 0 <= t <= MAX_TOKEN_COUNT
                    and 0 <= cached <= MAX_TOKEN_COUNT and 0 <= reasoning <= MAX_TOKEN_COUNT)
        return all(_token_count(value) is not None and not isinstance(value, str) for value in counts)

    def __repr__(self) -> str:
        shown = f"prompt_tokens={self.prompt_tokens}, completion_tokens={self.completion_tokens}, total_tokens={self.total_tokens}"
        if self.cached_prompt_tokens:
            shown += f", cached_prompt_tokens={self.cached_prompt_tokens}"
        if self.reasoning_tokens:
            shown += f", reasoning_tokens={self.reasoning_tokens}"
        return f"Usage({shown})"


#: No answer reports more tokens than this: a larger count comes from a broken or hostile
#: server, and summed over days it would make costs and Prometheus floats overflow.
MAX_TOKEN_COUNT = 10**12


def _token_count(value: Any) -> Optional[int]:
    """``value`` as a token count (None: absent -> 0), or None when it is not one."""
    if value is None:
        return 0
    if isinstance(value, str):
        text = value.strip()
        # isascii: "²".isdigit() is True; the length bound keeps int() away from 5,000 digits.
        value = int(text) if text.isascii() and text.isdigit() and len(text) <= 13 else None
    elif isinstance(value, float):
        value = int(value) if math.isfinite(value) and value.is_integer() else None
    elif isinstance(value, bool) or not isinstance(value, int):
        value = None
    return value if value is not None and 0 <= value <= MAX_TOKEN_COUNT else None


@lazy_dataclass_json
class Attempt(FrozenRecord):
    """One provider tried during one Router call.

    ``outcome`` is "ok", "error", "lost" (a hedge race it did not win) or "skipped"
    (circuit open, or left out when the call was planned: ``error`` then says why, e.g.
    the provider lacks a capability the call needs, or the prompt does not fit the
    provider's context window, its expected cost is above ``max_cost``, or it had no
    capacity or budget left when the attempt was due: then with when capacity returns);
    ``hedge`` is True for an attempt started by hedging.
    """

    provider: str
    outcome: str
    latency_s: float = 0.0
    error: Optional[str] = None
    error_type: Optional[str] = None
    hedge: bool = False

    def __init__(self, provider: str, outcome: str, latency_s: float = 0.0, error: Optional[str] = None,
                 error_type: Optional[str] = None, hedge: bool = False) -> None:
        state = self.__dict__
        state["provider"] = provider
        state["outcome"] = outcome
        state["latency_s"] = latency_s
        state["error"] = error
        state["error_type"] = error_type
        state["hedge"] = hedge


@lazy_dataclass_json
class Completion(FrozenRecord):
    """The result of one call: the text and where and how it was produced.

    ``tool_calls`` holds the calls the model asked for (then ``finish_reason`` is
    "tool_calls" and ``text`` is usually empty); ``reasoning`` the thinking text where a
    provider returns it. ``finish_reason`` is normalised to "stop", "length",
    "tool_calls" or "content_filter" where the provider's value maps to one.
    ``message`` is the assistant message to append to the history before tool results.
    """

    text: str
    provider: str
    model: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: Optional[str] = None
    latency_s: float = 0.0
    attempts: List[Attempt] = field(default_factory=list)
    tool_calls: List[ToolCall] = field(default_factory=list)
    reasoning: Optional[str] = None
    #: True when the answer came from the response cache (no provider was called).
    cached: bool = False

    def __init__(
        self,
        text: str,
        provider: str,
        model: str,
        usage: Usage = FACTORY,
        finish_reason: Optional[str] = None,
        latency_s: float = 0.0,
        attempts: List[Attempt] = FACTORY,
        tool_calls: List[ToolCall] = FACTORY,
        reasoning: Optional[str] = None,
        cached: bool = False,
    ) -> None:
        state = self.__dict__
        state["text"] = text
        state["provider"] = provider
        state["model"] = model
        state["usage"] = Usage() if usage is FACTORY else usage
        state["finish_reason"] = finish_reason
        state["latency_s"] = latency_s
        state["attempts"] = [] if attempts is FACTORY else attempts
        state["tool_calls"] = [] if tool_calls is FACTORY else tool_calls
        state["reasoning"] = reasoning
        state["cached"] = cached

    def __str__(self) -> str:
        return self.text

    # Notebook display (display.py): an HTML table, and one line of plain text.
    def _repr_html_(self) -> str:
        from .display import completion_html

        return completion_html(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        from .display import completion_text

        printer.text(completion_text(self))

    @property
    def message(self) -> Message:
        """The answer as an assistant Message (with its tool calls), for the next turn."""
        return Message("assistant", self.text, list(self.tool_calls) if self.tool_calls else None)

    def json(self) -> Any:
        """The text parsed as JSON (for ``response_format`` calls; a Markdown fence
        around it is tolerated); ResponseFormatError when it is not JSON."""
        from .answers import parse_json_answer

        return parse_json_answer(self.text, None, self.provider)


@lazy_dataclass_json
class Embeddings(FrozenRecord):
    """Vectors for a list of texts, in the order of the texts, and where they came from.

    ``provider`` made the vectors (when the batches of a large input were spread over
    several providers of one embedding space: the one that made most of them; ``attempts``
    lists every provider tried for every batch). ``space`` is the embedding space;
    vectors of different spaces must never be compared. Iterating, ``len()`` and indexing
    go to ``vectors``.

    >>> result = router.embed(["first text", "second text"])          # doctest: +SKIP
    >>> len(result), len(result[0]), result.provider
    (2, 1024, 'giga')
    """

    vectors: List[List[float]]
    provider: str
    model: str
    usage: Usage = field(default_factory=Usage)
    space: Optional[str] = None
    latency_s: float = 0.0
    attempts: List[Attempt] = field(default_factory=list)

    def __init__(self, vectors: List[List[float]], provider: str, model: str, usage: Usage = FACTORY,
                 space: Optional[str] = None, latency_s: float = 0.0, attempts: List[Attempt] = FACTORY) -> None:
        state = self.__dict__
        state["vectors"] = vectors
        state["provider"] = provider
        state["model"] = model
        state["usage"] = Usage() if usage is FACTORY else usage
        state["space"] = space
        state["latency_s"] = latency_s
        state["attempts"] = [] if attempts is FACTORY else attempts

    @property
    def dimensions(self) -> int:
        """The length of each vector (0 when there are none)."""
        return len(self.vectors[0]) if self.vectors else 0

    def __len__(self) -> int:
        return len(self.vectors)

    def __iter__(self) -> Iterator[List[float]]:  # type: ignore[override]
        return iter(self.vectors)

    def __getitem__(self, index: int) -> List[float]:
        return self.vectors[index]

    def __repr__(self) -> str:
        return (f"Embeddings({len(self.vectors)} x {self.dimensions}, provider={self.provider!r}, "
                f"model={self.model!r}, space={self.space!r})")


class TokenCount(int):
    """A number of tokens that says how it was obtained.

    It is an ``int``; ``estimated`` is True when it is the library's estimate (the
    provider has no counting API, see ``tokens.estimate_tokens``) rather than the
    provider's own count; ``provider`` names who counted.

    >>> TokenCount(42, estimated=True)
    TokenCount(42, estimated=True)
    >>> TokenCount(42, estimated=True) + 1
    43
    """

    estimated: bool
    provider: Optional[str]

    def __new__(cls, value: int, *, estimated: bool = False, provider: Optional[str] = None) -> "TokenCount":
        count = super().__new__(cls, value)
        count.estimated = estimated
        count.provider = provider
        return count

    def __reduce__(self):  # keep the marks through pickling and copying
        return (_rebuild_token_count, (int(self), self.estimated, self.provider))

    def __repr__(self) -> str:
        return f"TokenCount({int(self)}, estimated={self.estimated})"


def _rebuild_token_count(value: int, estimated: bool, provider: Optional[str]) -> TokenCount:
    return TokenCount(value, estimated=estimated, provider=provider)


class RouterEvent(FrozenRecord):
    """What ``Router.add_listener`` callbacks receive.

    ``kind`` is "attempt" (one provider tried; ``outcome`` "ok", "error" or "lost") or
    "call" (one Router call finished; ``outcome`` "ok" or "error", ``attempts`` counts the
    providers tried: 0 for an answer from the response cache, which has no ``usage``).
    ``error`` is the exception's message, never a secret.
    """

    kind: str
    provider: Optional[str]
    model: Optional[str]
    outcome: str
    latency_s: float
    error_type: Optional[str] = None
    error: Optional[str] = None
    usage: Optional[Usage] = None
    hedge: bool = False
    attempts: int = 1
    streaming: bool = False

    def __init__(self, kind: str, provider: Optional[str], model: Optional[str], outcome: str, latency_s: float,
                 error_type: Optional[str] = None, error: Optional[str] = None, usage: Optional[Usage] = None,
                 hedge: bool = False, attempts: int = 1, streaming: bool = False) -> None:
        state = self.__dict__
        state["kind"] = kind
        state["provider"] = provider
        state["model"] = model
        state["outcome"] = outcome
        state["latency_s"] = latency_s
        state["error_type"] = error_type
        state["error"] = error
        state["usage"] = usage
        state["hedge"] = hedge
        state["attempts"] = attempts
        state["streaming"] = streaming


class StreamEnd(FrozenRecord):
    """Yielded last by a provider's stream generator: what the provider reported at the end
    (``tool_calls``: the calls assembled from the stream's deltas)."""

    usage: Optional[Usage] = None
    finish_reason: Optional[str] = None
    model: Optional[str] = None
    tool_calls: Optional[List[ToolCall]] = None

    def __init__(self, usage: Optional[Usage] = None, finish_reason: Optional[str] = None, model: Optional[str] = None,
                 tool_calls: Optional[List[ToolCall]] = None) -> None:
        state = self.__dict__
        state["usage"] = usage
        state["finish_reason"] = finish_reason
        state["model"] = model
        state["tool_calls"] = tool_calls


class ReasoningDelta(str):
    """A piece of the model's thinking in a stream, kept apart from the answer text:
    ``TextStream`` iteration skips it (collected in ``TextStream.reasoning``);
    ``TextStream.events()`` yields it."""

    __slots__ = ()


_NO_EVENT = object()  # never returned by next_event: TextStream.events ends at its StopIteration


class TextStream(Iterator[str]):
    """An iterator of text chunks that remembers what the stream reported.

    Iterate it to receive text as it arrives. Once exhausted, ``text`` holds the whole
    text, ``usage`` and ``finish_reason`` what the provider reported, ``tool_calls`` the
    tool calls assembled from the stream, ``reasoning`` the thinking text (never mixed
    into ``text``; ``events()`` yields it as ``ReasoningDelta`` pieces while it arrives),
    and ``provider`` who answered. ``close()`` (or leaving a ``with`` block) releases the
    connection early.

    >>> for chunk in router.route_stream("Tell me a story"):    # doctest: +SKIP
    ...     print(chunk, end="", flush=True)
    """

    def __init__(
        self,
        events: Iterator[Union[str, ReasoningDelta, StreamEnd]],
        *,
        provider: str,
        model: str,
        on_close: Optional[Callable[[], None]] = None,
        on_error: Optional[Callable[[ProviderError], ProviderError]] = None,
    ) -> None:
        self._events = events
        self._on_close = on_close
        self._on_error = on_error  # a provider's last word on its errors (HttpProvider: scrubbing)
        self._lock = threading.Lock()
        self._parts: List[str] = []
        self.provider = provider
        self.model = model
        self._reasoning: List[str] = []
        self.usage: Optional[Usage] = None
        self.finish_reason: Optional[str] = None
        self.tool_calls: List[ToolCall] = []
        #: Set by ``Router.route_stream``: the providers tried before this one answered.
        self.attempts: List[Attempt] = []
        #: True when the stream replays a cached answer.
        self.cached = False
        self.done = False

    def __iter__(self) -> "TextStream":
        return self

    def _ipython_display_(self) -> None:
        """As a notebook cell's result: the text shown while it arrives (display.py)."""
        from .display import show_stream

        show_stream(self)

    def __next__(self) -> str:
        while True:
            event = self.next_event()
            if type(event) is str:
                return event

    def next_event(self) -> str:
        """The next text chunk or ``ReasoningDelta``; StopIteration at the end."""
        while True:
            try:
                event = next(self._events)
            except BaseException as exc:  # StopIteration included: the stream is over either way
                self._finish()
                if self._on_error is not None and isinstance(exc, ProviderError):
                    error = self._on_error(exc)
                    if error is not exc:
                        raise error from exc
                raise
            if type(event) is str:
                if event:
                    self._parts.append(event)
                    return event
            elif isinstance(event, ReasoningDelta):
                if event:
                    self._reasoning.append(event)
                    return event
            elif isinstance(event, StreamEnd):
                if event.usage is not None:
                    self.usage = event.usage
                if event.finish_reason is not None:
                    self.finish_reason = event.finish_reason
                if event.model:
                    self.model = event.model
                if event.tool_calls:
                    self.tool_calls = list(event.tool_calls)
            elif isinstance(event, str):
                if event:
                    self._parts.append(event)
                    return event
            else:  # a provider passing on a server's 123 or [...]
                self._finish()
                raise ResponseFormatError(
                    f"the stream yielded a {type(event).__name__}, not text", provider=self.provider
                )

    def events(self) -> Iterator[str]:
        """Text chunks and ``ReasoningDelta`` pieces, in the order they arrive."""
        # A callable iterator ends at next_event's StopIteration: no generator step per piece.
        return iter(self.next_event, _NO_EVENT)

    @property
    def text(self) -> str:
        """The text received so far (all of it once the stream is exhausted)."""
        return "".join(self._parts)

    @property
    def reasoning(self) -> Optional[str]:
        """The thinking text received so far; None when the provider sent none."""
        return "".join(self._reasoning) if self._reasoning else None

    def _finish(self) -> None:
        with self._lock:
            if self.done:
                return
            self.done = True
        close = getattr(self._events, "close", None)
        if close is not None:
            close()
        if self._on_close is not None:
            self._on_close()

    def close(self) -> None:
        """Stop the stream early and release its connection."""
        self._finish()

    def __enter__(self) -> "TextStream":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:  # a stream dropped half-read still releases its connection
        try:
            if not self.done:
                self._finish()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"TextStream(provider={self.provider!r}, model={self.model!r}, done={self.done})"


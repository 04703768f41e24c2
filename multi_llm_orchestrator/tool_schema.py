"""JSON Schema for a tool from a plain Python function: its type hints and its docstring.

Used by ``Tool.from_function``. A parameter's type hint becomes its schema (``str`` ->
``{"type": "string"}``, ``int`` -> integer, ``float`` -> number, ``bool`` -> boolean,
``list[X]`` -> array of X, ``dict`` -> object, ``Literal["a", "b"]`` and ``Enum``
subclasses -> ``enum``, ``Optional[X]`` -> X); a parameter without a default is
required. The docstring's first paragraph is the tool's description, and parameter
descriptions are read from a Google-style ``Args:`` section or Sphinx ``:param x:``
lines.

>>> def get_weather(city: str, days: int = 1) -> str:
...     '''Forecast for a city.
...
...     Args:
...         city: the city name, e.g. "Kazan"
...         days: how many days ahead
...     '''
>>> schema_of_function(get_weather)[2]["required"]
['city']
"""

from __future__ import annotations

import enum
import inspect
import re
import types
import typing
from typing import Any, Callable, Dict, Tuple

from .errors import ConfigurationError

__all__ = ["schema_of_function", "check_tool_name", "TOOL_NAME"]

# What every provider accepts: OpenAI's [a-zA-Z0-9_-]{1,64}, and GigaChat's "must not
# start with a digit" (its examples use underscores, so they are allowed).
TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")

_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean"}
_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Params)\s*:\s*$")
_OTHER_SECTION = re.compile(r"^\s*(Returns?|Raises|Yields|Examples?|Notes?)\s*:\s*$")
_ARG_LINE = re.compile(r"^\s*\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SPHINX = re.compile(r":param\s+(?:[\w\[\], ]+\s+)?(\w+)\s*:\s*(.*)")


def check_tool_name(name: Any, what: str = "A tool name") -> str:
    """``name`` if every provider accepts it as a function name, else ConfigurationError."""
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise ConfigurationError(
            f"{what} must be 1-64 Latin letters, digits, '_' or '-', not starting with a digit; got {name!r}"
        )
    return name


def schema_of_function(function: Callable[..., Any]) -> Tuple[str, str, Dict[str, Any]]:
    """``(name, description, parameters schema)`` of a function with type hints."""
    if not callable(function):
        raise ConfigurationError(f"A tool must be a function; got {type(function).__name__}")
    name = getattr(function, "__name__", None) or type(function).__name__
    check_tool_name(name, f"The function name {name!r} used as a tool name")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        raise ConfigurationError(f"Cannot read the signature of {name!r}: pass Tool(name, description, parameters)") from None
    try:
        hints = typing.get_type_hints(function, include_extras=False)
    except Exception as exc:  # a forward reference that does not resolve
        raise ConfigurationError(f"Cannot resolve the type hints of {name!r}: {exc}") from None
    summary, described = _read_docstring(inspect.getdoc(function) or "")
    properties: Dict[str, Any] = {}
    required = []
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ConfigurationError(
                f"Tool function {name!r} takes *{parameter.name}: a model can only pass named arguments; "
                "list each parameter explicitly"
            )
        if parameter.name in ("self", "cls") and parameter.name not in hints:
            continue
        if parameter.name not in hints:
            raise ConfigurationError(
                f"Parameter {parameter.name!r} of tool function {name!r} has no type hint: add one "
                "(e.g. `city: str`) so the model knows what to pass"
            )
        schema, optional = _schema_of(hints[parameter.name], f"parameter {parameter.name!r} of {name!r}")
        if parameter.name in described:
            schema["description"] = described[parameter.name]
        properties[parameter.name] = schema
        if parameter.default is parameter.empty and not optional:
            required.append(parameter.name)
    parameters: Dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    return name, summary, parameters


def _schema_of(hint: Any, where: str) -> Tuple[Dict[str, Any], bool]:
    """The JSON Schema of a type hint, and whether it allows None."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) == 1:
            return _schema_of(rest[0], where)[0], len(rest) < len(args)
        return {"anyOf": [_schema_of(arg, where)[0] for arg in rest]}, len(rest) < len(args)
    if hint in _SIMPLE:
        return {"type": _SIMPLE[hint]}, False
    if hint is Any:
        return {}, False
    if origin is typing.Literal:
        values = list(args)
        kinds = {_SIMPLE.get(type(value)) for value in values}
        schema: Dict[str, Any] = {"enum": values}
        if len(kinds) == 1 and None not in kinds:
            schema["type"] = kinds.pop()
        return schema, False
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        values = [member.value for member in hint]
        kinds = {_SIMPLE.get(type(value)) for value in values}
        schema = {"enum": values}
        if len(kinds) == 1 and None not in kinds:
            schema["type"] = kinds.pop()
        return schema, False
    if hint in (list, tuple, set, frozenset) or origin in (list, tuple, set, frozenset, typing.Sequence):
        schema = {"type": "array"}
        if args and args[0] is not Ellipsis:
            schema["items"] = _schema_of(args[0], where)[0]
        return schema, False
    if hint is dict or origin in (dict, typing.Mapping):
        return {"type": "object"}, False
    raise ConfigurationError(
        f"The type hint {hint!r} of {where} has no JSON Schema equivalent here: use str, int, float, "
        "bool, list[...], dict, Literal[...], an Enum or Optional[...], or pass Tool(name, description, parameters)"
    )


def _read_docstring(doc: str) -> Tuple[str, Dict[str, str]]:
    """The first paragraph, and parameter descriptions from Args:/:param: lines."""
    paragraphs = doc.strip().split("\n\n")
    summary = " ".join(line.strip() for line in paragraphs[0].splitlines()) if doc.strip() else ""
    if _SECTION.match(paragraphs[0].splitlines()[0] if paragraphs[0] else "") or summary.startswith(":param"):
        summary = ""
    described: Dict[str, str] = {}
    in_args = False
    current = None
    arg_indent = 0
    for line in doc.splitlines():
        sphinx = _SPHINX.search(line)
        if sphinx:
            described[sphinx.group(1)] = sphinx.group(2).strip()
            continue
        if _SECTION.match(line):
            in_args, current = True, None
            continue
        if _OTHER_SECTION.match(line) or (in_args and not line.strip()):
            in_args, current = False, None
            continue
        if in_args:
            match = _ARG_LINE.match(line)
            if match and (current is None or _indent(line) <= arg_indent):
                current = match.group(1)
                arg_indent = _indent(line)
                described[current] = match.group(2).strip()
            elif current is not None:
                described[current] = (described[current] + " " + line.strip()).strip()
    return summary, described


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())

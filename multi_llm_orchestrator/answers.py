"""Checks of an answer against what the call asked for, so a malformed one falls back.

A call with ``tools`` whose answer calls a tool that was not offered, or a call with
``response_format`` whose answer does not parse as JSON (or lacks the schema's required
keys), gets a ``ResponseFormatError`` for that provider: the Router then tries the next
one, as for any other provider failure. Arguments that are not valid JSON are caught
earlier, where each provider parses its tool calls.

A full JSON Schema validator is a dependency this library does not take: the check is
the one that catches real failures (prose instead of JSON, truncated JSON, a missing
field). Validate further in the application where the schema is richer.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Dict, List, Optional, Sequence

from .errors import ResponseFormatError
from .types import GenerationParams, ToolCall

__all__ = ["answer_check", "parse_json_answer"]

# A model asked for JSON sometimes wraps it in a Markdown fence anyway.
_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*\n(.*?)\n?\s*```\s*$", re.DOTALL)

AnswerCheck = Callable[[str, Sequence[ToolCall], str], None]


def answer_check(params: GenerationParams) -> Optional[AnswerCheck]:
    """A check of ``(text, tool_calls, provider)`` for a call with ``params``; None for
    a plain-text call (nothing to check, nothing to pay)."""
    if not params.tools and params.response_format is None:
        return None
    names = frozenset(tool.name for tool in params.tools) if params.tools else None
    response_format = params.response_format

    def check(text: str, tool_calls: Sequence[ToolCall], provider: str) -> None:
        if tool_calls:
            if names is not None:
                unknown = [call.name for call in tool_calls if call.name not in names]
                if unknown:
                    raise ResponseFormatError(
                        f"the model called {', '.join(map(repr, unknown))}, which is not among the tools "
                        f"offered ({', '.join(sorted(names))})",
                        provider=provider,
                    )
            return
        if response_format is not None:
            parse_json_answer(text, response_format, provider)

    return check


def parse_json_answer(text: str, response_format: Any, provider: str) -> Any:
    """The answer parsed as JSON, checked against the schema's type and required keys."""
    fenced = _FENCE.match(text)
    body = fenced.group(1) if fenced else text
    try:
        value = json.loads(body)
    except ValueError as exc:
        preview = text[:80] + ("..." if len(text) > 80 else "")
        raise ResponseFormatError(
            f"the answer is not the JSON asked for by response_format ({exc.msg} at position {exc.pos}): {preview!r}",
            provider=provider,
        ) from None
    if isinstance(response_format, dict):
        _check_schema(value, response_format, provider)
    return value


def _check_schema(value: Any, schema: Dict[str, Any], provider: str) -> None:
    kind = schema.get("type")
    if kind == "object" or (kind is None and ("properties" in schema or "required" in schema)):
        if not isinstance(value, dict):
            raise ResponseFormatError(
                f"the answer is JSON {type(value).__name__}, but the schema asks for an object", provider=provider
            )
        required: List[str] = [key for key in schema.get("required") or () if isinstance(key, str)]
        missing = [key for key in required if key not in value]
        if missing:
            raise ResponseFormatError(
                f"the JSON answer lacks the required key(s) {', '.join(missing)} of the schema", provider=provider
            )
    elif kind == "array" and not isinstance(value, list):
        raise ResponseFormatError(
            f"the answer is JSON {type(value).__name__}, but the schema asks for an array", provider=provider
        )

"""The OpenAI-shaped chat wire that GigaChat (API v1) and OpenAI-compatible servers share.

A completion is ``{"choices": [{"message": {"content"}, "finish_reason"}], "usage":
{"prompt_tokens", "completion_tokens", "total_tokens"}, "model"}``; a streamed chunk has
``delta`` where the completion has ``message``, and usage comes in one of the last
chunks (PROTOCOLS.md §1.6-1.7, §4.3-4.4). Only that shared shape is read here: each
provider first checks its own error bodies (OpenAI's ``{"error"}`` under HTTP 200,
GigaChat's ``{"status"}`` event) and then hands the data over.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Optional, Tuple, Union

from ..errors import ResponseFormatError
from ..types import StreamEnd, Usage

__all__ = ["parse_completion", "usage_of", "chunk_deltas"]


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
    return Usage.parse(raw.get("prompt_tokens"), raw.get("completion_tokens"), raw.get("total_tokens"), provider=provider)


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
    return content or "", usage_of(data.get("usage"), provider) or Usage(), choice.get("finish_reason"), data.get("model")


def chunk_deltas(events: Iterable[Mapping[str, Any]], provider: str) -> Iterator[Union[str, StreamEnd]]:
    """The text deltas of parsed stream chunks, then one StreamEnd with the last usage,
    finish_reason and model reported (usage None when no chunk had any).

    Only choice 0 is read: a request with ``n > 1`` streams the others interleaved.

    >>> list(chunk_deltas([{"choices": [{"delta": {"content": "Hi"}}]},
    ...                    {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}], "p"))
    ['Hi', StreamEnd(usage=Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2), finish_reason=None, model=None)]
    """
    usage: Optional[Usage] = None
    finish_reason: Optional[str] = None
    model: Optional[str] = None
    for event in events:
        model = event.get("model") or model
        usage = usage_of(event.get("usage"), provider) or usage  # OpenAI: a last chunk with choices == []
        choices = event.get("choices") or []
        if not isinstance(choices, list):
            raise ResponseFormatError(
                f"a stream chunk has choices of type {type(choices).__name__}, not a list", provider=provider
            )
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            if content is not None and not isinstance(content, str):
                raise ResponseFormatError(
                    f"a stream chunk's delta.content is {type(content).__name__}, not text", provider=provider
                )
            if content:
                yield content
            finish_reason = choice.get("finish_reason") or finish_reason
    yield StreamEnd(usage=usage, finish_reason=finish_reason, model=model)

"""Reading embeddings answers: the OpenAI-shaped ``data`` list (OpenAI, vLLM, llama.cpp,
GigaChat) and single vectors (Ollama, YandexGPT), with a typed error for every bad body.

A vector is a non-empty list of finite numbers; YandexGPT's reference labels them
strings, so numeric strings are read too; a base64 string (OpenAI's
``encoding_format="base64"``) is little-endian float32.
"""

from __future__ import annotations

import base64
import binascii
import math
from array import array
from typing import Any, List, Optional, Tuple

from ..errors import ResponseFormatError
from ..types import Usage

_FLOAT_ONLY = {float}

__all__ = ["parse_vector", "parse_data_list", "check_count", "check_dimensions"]


def parse_vector(value: Any, provider: str, where: str) -> List[float]:
    """``value`` as a list of floats; ResponseFormatError naming ``where`` otherwise."""
    if isinstance(value, str):
        return _base64_vector(value, provider, where)
    if not isinstance(value, list) or not value:
        shown = "an empty list" if value == [] else f"a {type(value).__name__}"
        raise ResponseFormatError(f"{where} is {shown}, not a list of numbers", provider=provider)
    # The common case, checked at C speed: JSON floats only, and a finite sum (an inf or
    # nan anywhere makes the sum non-finite; a huge finite sum takes the slow path).
    if set(map(type, value)) == _FLOAT_ONLY and math.isfinite(sum(value)):
        return value
    vector: List[float] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float, str)):
            raise ResponseFormatError(f"{where} holds a {type(item).__name__}, not a number", provider=provider)
        try:
            number = float(item)
        except (ValueError, OverflowError):
            raise ResponseFormatError(f"{where} holds {str(item)[:40]!r}, not a number", provider=provider) from None
        if not math.isfinite(number):
            raise ResponseFormatError(f"{where} holds a non-finite number ({item!r})", provider=provider)
        vector.append(number)
    return vector


def _base64_vector(value: str, provider: str, where: str) -> List[float]:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ResponseFormatError(f"{where} is a string that is not base64 float32", provider=provider) from None
    if not raw or len(raw) % 4:
        raise ResponseFormatError(f"{where} is base64 of {len(raw)} bytes, not float32 values", provider=provider)
    floats = array("f")
    floats.frombytes(raw)
    if array("H", b"\x01\x00")[0] != 1:  # big-endian host: the wire is little-endian
        floats.byteswap()
    vector = floats.tolist()
    if not all(math.isfinite(number) for number in vector):
        raise ResponseFormatError(f"{where} holds a non-finite number", provider=provider)
    return vector


def parse_data_list(body: Any, count: int, provider: str, what: str) -> Tuple[List[List[float]], Usage, Optional[str]]:
    """(vectors in input order, usage, model) of ``{"data": [{"index", "embedding"}], ...}``.

    Items are placed by ``index`` (OpenAI does not promise order); every index from 0
    to ``count - 1`` must appear once. Usage is the top-level ``usage`` or, as GigaChat
    sends it, the sum of each item's ``usage.prompt_tokens``.
    """
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise ResponseFormatError(f"{what} answered without a 'data' list: {str(body)[:120]!r}", provider=provider)
    check_count(len(data), count, provider, what)
    vectors: List[Optional[List[float]]] = [None] * count
    item_tokens = 0
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            raise ResponseFormatError(f"{what}: data[{position}] is not an object", provider=provider)
        index = item.get("index", position)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count or vectors[index] is not None:
            raise ResponseFormatError(
                f"{what}: data[{position}] has index {index!r}: expected each of 0..{count - 1} once", provider=provider
            )
        vectors[index] = parse_vector(item.get("embedding"), provider, f"{what}: data[{position}].embedding")
        usage = item.get("usage")
        if isinstance(usage, dict):
            item_tokens += Usage.of(usage.get("prompt_tokens"), 0).prompt_tokens
    usage_body = body.get("usage")
    if isinstance(usage_body, dict):
        usage = Usage.of(usage_body.get("prompt_tokens"), 0, usage_body.get("total_tokens"))
    else:
        usage = Usage.of(item_tokens, 0)
    check_dimensions(vectors, provider, what)  # type: ignore[arg-type]
    model = body.get("model")
    return vectors, usage, model if isinstance(model, str) else None  # type: ignore[return-value]


def check_count(got: int, expected: int, provider: str, what: str) -> None:
    if got != expected:
        raise ResponseFormatError(f"{what} returned {got} vector(s) for {expected} text(s)", provider=provider)


def check_dimensions(vectors: List[List[float]], provider: str, what: str) -> None:
    """Every vector of one answer has the same length."""
    sizes = sorted({len(vector) for vector in vectors})
    if len(sizes) > 1:
        raise ResponseFormatError(f"{what} returned vectors of different lengths {sizes}", provider=provider)

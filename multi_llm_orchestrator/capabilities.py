"""What a provider can do beyond plain text, and the planning check that routes by it.

Capabilities are plain strings:

==================== =====================================================================
``tools``            tool (function) calling, and tool calls/results in the history
``structured_output`` ``response_format``: JSON mode or a JSON Schema
``reasoning``        ``reasoning_effort`` (thinking models)
``streaming_tools``  tool calls assembled from a stream
==================== =====================================================================

Each provider class declares ``capabilities``; ``ProviderConfig.capabilities`` replaces
that set for one provider (when it depends on the model: an Ollama model without tool
support, a vLLM server started without a tool parser). A call that needs a capability
is planned only over providers that have it; the others appear in
``Completion.attempts`` as skipped, with the reason; when none has it the call raises
``CapabilityError`` naming what is missing (``planning.CapabilityCheck``: every provider
module imports this one, and they need none of the planning machinery).

>>> sorted(needed_by(GenerationParams(response_format="json"), streaming=False))
['structured_output']
"""

from __future__ import annotations

from typing import FrozenSet, Optional, Sequence

from .errors import ConfigurationError
from .types import GenerationParams

__all__ = [
    "TOOLS", "STRUCTURED_OUTPUT", "REASONING", "STREAMING_TOOLS", "CAPABILITIES",
    "ALL_CAPABILITIES", "needed_by", "check_capabilities",
]

TOOLS = "tools"
STRUCTURED_OUTPUT = "structured_output"
REASONING = "reasoning"
STREAMING_TOOLS = "streaming_tools"
CAPABILITIES = (TOOLS, STRUCTURED_OUTPUT, REASONING, STREAMING_TOOLS)
ALL_CAPABILITIES: FrozenSet[str] = frozenset(CAPABILITIES)


def check_capabilities(value: object, where: str) -> Optional[FrozenSet[str]]:
    """``value`` (None or a list of capability names) as a frozenset, else ConfigurationError."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)):
        raise ConfigurationError(f"{where} must be a list of capabilities ({', '.join(CAPABILITIES)}); got {value!r}")
    unknown = sorted(str(name) for name in value if name not in ALL_CAPABILITIES)
    if unknown:
        raise ConfigurationError(f"{where} names unknown capabilities {', '.join(unknown)}; known: {', '.join(CAPABILITIES)}")
    return frozenset(value)


def needed_by(params: GenerationParams, streaming: bool, tool_messages: bool = False) -> FrozenSet[str]:
    """The capabilities a call with ``params`` needs (empty for plain text)."""
    needs = set()
    if params.tools or tool_messages:
        needs.add(TOOLS)
        if streaming and params.tools and params.tool_choice != "none":
            needs.add(STREAMING_TOOLS)
    if params.response_format is not None:
        needs.add(STRUCTURED_OUTPUT)
    if params.reasoning_effort is not None and params.reasoning_effort != "none":
        needs.add(REASONING)
    return frozenset(needs)

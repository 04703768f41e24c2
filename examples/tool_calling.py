"""Tool calling, structured output and routing by capability, in one runnable script.

With no configuration it runs on MockProviders (no keys, no network): a plain-text mock
that cannot call tools is skipped, and a ``mock-tools`` mock calls the weather and
calculator functions, then answers from their results. With real providers configured
through the environment, the same loop runs on them, falling back between them::

    python examples/tool_calling.py                      # mocks only
    export OPENAI_BASE_URL=https://api.openai.com/v1 OPENAI_API_KEY=... OPENAI_MODEL=gpt-4.1-mini
    export GIGACHAT_CREDENTIALS=...  GIGACHAT_CA_BUNDLE_FILE=/path/to/russian_trusted_root_ca.pem
    export YC_FOLDER_ID=...  YC_API_KEY=...
    export OLLAMA_HOST=localhost:11434  OLLAMA_MODEL=qwen3
    python examples/tool_calling.py "Use the calculator for 12.5 * 4, and tell me the weather in Kazan."

Exit status: 0 on success, 1 when every provider failed.
"""

from __future__ import annotations

import os
import sys
from typing import List, Literal, Optional

from multi_llm_orchestrator import (
    AllProvidersFailedError,
    GenerationParams,
    MockProvider,
    ProviderConfig,
    Router,
    run_tools,
)

DEFAULT_PROMPT = "Use the calculator for 12.5 * 4, and tell me the weather in Kazan."


def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> dict:
    """Current weather in a city.

    Args:
        city: the city name, e.g. "Kazan"
        unit: the temperature unit
    """
    temperature = 21 if unit == "celsius" else 70  # a real app would call a weather API here
    return {"city": city, "temperature": temperature, "unit": unit, "sky": "sunny"}


def calculator(a: float, operator: Literal["+", "-", "*", "/"], b: float) -> float:
    """Compute `a <operator> b`.

    Args:
        a: the left operand
        operator: one of + - * /
        b: the right operand
    """
    return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else float("nan")}[operator]


def real_providers() -> list:
    """Providers configured in the environment (none when nothing is set)."""
    found = []
    if os.environ.get("OPENAI_MODEL"):
        from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider

        found.append(OpenAICompatibleProvider.from_env())
    if os.environ.get("GIGACHAT_CREDENTIALS"):
        from multi_llm_orchestrator.providers.gigachat import GigaChatProvider

        found.append(GigaChatProvider.from_env())
    if os.environ.get("YC_FOLDER_ID"):
        from multi_llm_orchestrator.providers.yandexgpt import YandexGPTProvider

        found.append(YandexGPTProvider.from_env())
    if os.environ.get("OLLAMA_MODEL"):
        from multi_llm_orchestrator.providers.ollama import OllamaProvider

        found.append(OllamaProvider.from_env())
    return found


def mock_providers() -> list:
    return [
        # Plain text only: planned out of tool calls, listed as "skipped" with the reason.
        MockProvider(ProviderConfig(name="plain-mock", extra={"delay": 0})),
        MockProvider(ProviderConfig(name="tools-mock", model="mock-tools", extra={
            "delay": 0,
            "tool_arguments": {"get_weather": {"city": "Kazan"},
                               "calculator": {"a": 12.5, "operator": "*", "b": 4}},
        })),
    ]


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    prompt = " ".join(args) or DEFAULT_PROMPT
    with Router(strategy="round-robin", timeout=120) as router:
        for provider in real_providers() or mock_providers():
            router.add_provider(provider)
        try:
            # 1. The tool loop: the model asks, run_tools calls the functions and answers back.
            answer = run_tools(router, prompt, [get_weather, calculator], max_rounds=4)
            print(answer.text)
            for attempt in answer.attempts:
                reason = f" ({attempt.error})" if attempt.error else ""
                print(f"  {attempt.provider}: {attempt.outcome}{reason}")
            # 2. Structured output: JSON that fits a schema, or the next provider is tried.
            schema = {"type": "object", "properties": {"city": {"type": "string"}, "temperature": {"type": "integer"}},
                      "required": ["city", "temperature"]}
            report = router.complete("Give the weather in Kazan as JSON.", GenerationParams(response_format=schema))
            print("structured:", report.json(), f"(by {report.provider})")
        except AllProvidersFailedError as exc:
            print(f"tool_calling: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

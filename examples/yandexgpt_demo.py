"""YandexGPT demo: one whole answer, then one streamed answer.

Configure it with environment variables (see ``YandexGPTProvider.from_env``)::

    export YC_FOLDER_ID=b1g...                     # the folder that holds the model
    export YC_IAM_TOKEN=$(yc iam create-token)     # or: export YC_API_KEY=<service-account key>
    export YANDEXGPT_MODEL=yandexgpt-lite/latest   # optional, default yandexgpt/latest
    python examples/yandexgpt_demo.py "Почему небо голубое?"

Exit status: 0 on success, 1 when YandexGPT fails, 2 when the environment is incomplete.
"""

from __future__ import annotations

import sys
from typing import List, Optional

from multi_llm_orchestrator import ConfigurationError, GenerationParams, ProviderError
from multi_llm_orchestrator.providers.yandexgpt import YandexGPTProvider

DEFAULT_PROMPT = "Объясни в двух предложениях, что такое Python."


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    prompt = " ".join(args) or DEFAULT_PROMPT
    try:
        provider = YandexGPTProvider.from_env()
    except ConfigurationError as exc:
        print(f"yandexgpt_demo: {exc}", file=sys.stderr)
        return 2
    params = GenerationParams(temperature=0.3, max_tokens=300)
    with provider:
        try:
            completion = provider.complete(prompt, params)
            print(f"[{completion.model}] {completion.text}")
            print(f"(tokens: {completion.usage.total_tokens}, finish: {completion.finish_reason})")
            print("Streaming:", end=" ", flush=True)
            with provider.stream(prompt, params) as stream:
                for chunk in stream:
                    print(chunk, end="", flush=True)
            print()
        except ProviderError as exc:
            print(f"\nyandexgpt_demo: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

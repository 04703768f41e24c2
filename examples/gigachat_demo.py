"""GigaChat demo: the model list, one whole answer, then one streamed answer.

Configure it with the official SDK's environment variables (see ``GigaChatProvider.from_env``)::

    export GIGACHAT_CREDENTIALS=<authorization key from the Sber cabinet>
    export GIGACHAT_SCOPE=GIGACHAT_API_PERS            # or GIGACHAT_API_B2B, GIGACHAT_API_CORP
    export GIGACHAT_CA_BUNDLE_FILE=/path/to/russian_trusted_root_ca.pem   # https://www.gosuslugi.ru/crt
    python examples/gigachat_demo.py "Почему небо голубое?"

Exit status: 0 on success, 1 when GigaChat fails, 2 when the environment is incomplete.
"""

from __future__ import annotations

import sys
from typing import List, Optional

from multi_llm_orchestrator import ConfigurationError, ProviderError
from multi_llm_orchestrator.providers.gigachat import GigaChatProvider

DEFAULT_PROMPT = "Объясни в двух предложениях, что такое Python."


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    prompt = " ".join(args) or DEFAULT_PROMPT
    try:  # from_env names the variable to set when one is missing
        provider = GigaChatProvider.from_env()
    except ConfigurationError as exc:
        print(f"gigachat_demo: {exc}", file=sys.stderr)
        return 2
    with provider:
        try:
            print("Models:", ", ".join(provider.list_models()))
            completion = provider.complete(prompt)
            print(completion.text)
            print(
                f"[{completion.model}: {completion.usage.total_tokens} tokens, "
                f"finish_reason={completion.finish_reason}, {completion.latency_s:.2f} s]"
            )
            print("Streamed:")
            stream = provider.stream(prompt)
            for chunk in stream:
                print(chunk, end="", flush=True)
            print(f"\n[finish_reason={stream.finish_reason}]")
        except ProviderError as exc:
            print(f"gigachat_demo: GigaChat failed: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Semantic search in a few lines: embed documents once, embed a query, rank by cosine.

Runs on mock providers with no keys (their vectors are deterministic but carry no
meaning, so the ranking is arbitrary); with a real configuration it is a real search:

    python examples/embeddings_search.py "how do I reset my password?"
    MULTI_LLM_ORCHESTRATOR_CONFIG=router.json python examples/embeddings_search.py "..."
"""

import math
import os
import sys

from multi_llm_orchestrator import Router
from multi_llm_orchestrator.cli import DEFAULT_CONFIG

DOCUMENTS = [
    "To reset your password, open Settings, then Security, and choose Reset password.",
    "Invoices are sent on the first day of each month to the billing e-mail address.",
    "The mobile app works offline and syncs when the connection comes back.",
    "Two-factor authentication can be turned on in Settings under Security.",
]


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)) or 1.0)


def main(query: str) -> int:
    with Router.from_config(os.environ.get("MULTI_LLM_ORCHESTRATOR_CONFIG") or DEFAULT_CONFIG) as router:
        spaces = router.embedding_spaces()
        space = next(iter(spaces))  # a real application names the space it indexed with
        print(f"embedding space {space!r}: providers {', '.join(spaces[space])}")
        index = router.embed(DOCUMENTS, space=space, purpose="document")
        question = router.embed([query], space=space, purpose="query")
    print(f"{len(index)} documents, {index.dimensions} dimensions, embedded by {index.provider} ({index.model})")
    ranked = sorted(zip(DOCUMENTS, index.vectors), key=lambda pair: cosine(question[0], pair[1]), reverse=True)
    for document, vector in ranked[:3]:
        print(f"{cosine(question[0], vector):+.3f}  {document}")
    return 0


if __name__ == "__main__":
    sys.exit(main(" ".join(sys.argv[1:]) or "how do I reset my password?"))

"""LangChain over the Router, on mock providers (no API keys, no network).

    pip install -e ".[langchain]"
    python examples/langchain_agent.py

A chain (prompt | model | parser), streaming, a batch, and what the Router adds to each
answer: which provider answered, after which attempts, with how many tokens.
"""

from __future__ import annotations

import asyncio

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from multi_llm_orchestrator import MockProvider, ProviderConfig, Router
from multi_llm_orchestrator.langchain import ChatRouter


def build_router() -> Router:
    """Two mocks: the first passes its health check but fails every call, so the answers
    show the fallback (and, once its circuit breaker opens, the skip)."""
    router = Router(strategy="first-available", timeout=10)
    router.add_provider(MockProvider(ProviderConfig(name="flaky", extra={"delay": 0, "failure_rate": 1.0})))
    router.add_provider(MockProvider(ProviderConfig(name="steady", extra={"delay": 0.05, "chunk_delay": 0.02})))
    return router


def main() -> None:
    with build_router() as router:
        chat = ChatRouter(router=router, temperature=0.2, max_tokens=200)

        reply = chat.invoke("What is Python?")
        print("invoke:", reply.content)
        print("  answered by", reply.response_metadata["provider"], "after",
              [(a["provider"], a["outcome"]) for a in reply.response_metadata["attempts"]])
        print("  usage", reply.usage_metadata)

        chain = (
            ChatPromptTemplate.from_messages([("system", "You answer in one line."), ("human", "Explain {topic}")])
            | chat
            | StrOutputParser()
        )
        print("chain:", chain.invoke({"topic": "circuit breakers"}))

        print("stream:", end=" ")
        for chunk in chain.stream({"topic": "hedged requests"}):
            print(chunk, end="", flush=True)
        print()

        print("batch:", chain.batch([{"topic": "fallback"}, {"topic": "deadlines"}]))
        print("ainvoke:", asyncio.run(chain.ainvoke({"topic": "thread pools"})))


if __name__ == "__main__":
    main()

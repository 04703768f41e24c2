"""LangChain over the Router, on mock providers (no API keys, no network).

    pip install -e ".[langchain]"
    python examples/langchain_agent.py

A chain (prompt | model | parser), streaming, a batch, and what the Router adds to each
answer (which provider answered, after which attempts, with how many tokens); then an
agent: a model with tools called in a loop until it answers, and structured output.
The "mock-tools" provider plays a tool-using model; the plain mocks cannot call tools,
so the Router plans those calls onto it and lists the others as skipped.
"""

from __future__ import annotations

import asyncio

from langchain_core.messages import HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from pydantic import BaseModel

from multi_llm_orchestrator import MockProvider, ProviderConfig, Router
from multi_llm_orchestrator.langchain import ChatRouter


def build_router() -> Router:
    """Two mocks: the first passes its health check but fails every call, so the answers
    show the fallback (and, once its circuit breaker opens, the skip)."""
    router = Router(strategy="first-available", timeout=10)
    router.add_provider(MockProvider(ProviderConfig(name="flaky", extra={"delay": 0, "failure_rate": 1.0})))
    router.add_provider(MockProvider(ProviderConfig(name="steady", extra={"delay": 0.05, "chunk_delay": 0.02})))
    router.add_provider(MockProvider(ProviderConfig(
        name="agent", model="mock-tools",
        # What the mock "decides" to pass; a real model reads it from the question.
        extra={"delay": 0, "tool_arguments": {"get_weather": {"city": "Kazan"}}},
    )))
    return router


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"sunny, 21 C in {city}"


class CityFacts(BaseModel):
    city: str
    population: int


def run_agent(chat: ChatRouter, question: str) -> str:
    """Call the model with tools until it answers in text (a minimal ReAct loop)."""
    tools = {"get_weather": get_weather}
    agent = chat.bind_tools(list(tools.values()))
    messages = [HumanMessage(question)]
    for _ in range(5):
        reply = agent.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            return reply.content
        for call in reply.tool_calls:
            print(f"  tool call: {call['name']}({call['args']}) by {reply.response_metadata['provider']}")
            messages.append(tools[call["name"]].invoke(call))  # a ToolMessage with the result
    raise RuntimeError("the agent did not answer in 5 rounds")


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

        print("agent:")
        print("  answer:", run_agent(chat, "What is the weather in Kazan?"))
        facts = chat.with_structured_output(CityFacts).invoke("Kazan: city and population")
        print("structured:", repr(facts))


if __name__ == "__main__":
    main()

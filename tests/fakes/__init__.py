"""Reusable loopback fakes of LLM servers for tests and benchmarks."""

from .openai_server import FakeOpenAIServer, Fault, LoopbackServer, RecordedRequest

__all__ = ["FakeOpenAIServer", "Fault", "LoopbackServer", "RecordedRequest"]

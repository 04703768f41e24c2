"""run_tools (the tool loop) and MockProvider's tool-calling mode."""

from __future__ import annotations

import logging

import pytest

from multi_llm_orchestrator import tool_loop
from multi_llm_orchestrator import (
    CapabilityError,
    Completion,
    ConfigurationError,
    DeadlineExceededError,
    GenerationParams,
    Message,
    MockProvider,
    ProviderConfig,
    Router,
    ToolCall,
    ToolLoopError,
    Usage,
    run_tools,
)
from multi_llm_orchestrator.types import ReasoningDelta


def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"+21°C in {city}"


def calculator(expression: str) -> float:
    """Evaluate an arithmetic expression of two numbers and one operator."""
    left, operator, right = expression.split()
    return {"+": float(left) + float(right), "*": float(left) * float(right)}[operator]


def mock(name="tools", **extra) -> MockProvider:
    extra.setdefault("delay", 0)
    return MockProvider(ProviderConfig(name=name, model="mock-tools", extra=extra))


def router_of(*providers, **options) -> Router:
    router = Router(**options)
    for provider in providers:
        router.add_provider(provider)
    return router


# MockProvider mock-tools -----------------------------------------------------------------


def test_mock_calls_the_tools_the_prompt_names_then_answers_from_their_results():
    provider = mock(tool_arguments={"get_weather": {"city": "Kazan"}, "calculator": {"expression": "6 * 7"}})
    params = GenerationParams(tools=[get_weather, calculator])
    first = provider.complete("Use the calculator and tell me the weather", params)
    assert [(c.name, c.arguments) for c in first.tool_calls] == [
        ("get_weather", {"city": "Kazan"}), ("calculator", {"expression": "6 * 7"})]
    assert first.finish_reason == "tool_calls" and first.text == ""
    history = [Message("user", "weather?"), first.message] + [
        Message.tool_result(call, "ok") for call in first.tool_calls]
    second = provider.complete(history, params)
    assert second.text == "Mock answer from tool results: get_weather: ok; calculator: ok"
    assert second.tool_calls == [] and second.finish_reason == "stop"


def test_mock_tool_arguments_from_the_schema_and_tool_choice():
    provider = mock()
    params = GenerationParams(tools=[get_weather, calculator], tool_choice="calculator")
    [call] = provider.complete("Weather please", params).tool_calls
    assert (call.name, call.arguments) == ("calculator", {"expression": "mock"})
    assert provider.complete("Hi", GenerationParams(tools=[get_weather], tool_choice="none")).text == "Mock response to: Hi"


def test_mock_structured_output_reasoning_and_streams():
    provider = mock()
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "tag": {"enum": ["a", "b"]}}}
    completion = provider.complete("x", GenerationParams(response_format=schema, reasoning_effort="low"))
    assert completion.json() == {"n": 1, "tag": "a"}
    assert completion.reasoning == "Mock reasoning (low) about: x"
    assert provider.complete("x", GenerationParams(response_format="json")).json() == {"answer": "Mock response to: x"}
    stream = provider.stream("weather", GenerationParams(tools=[get_weather], reasoning_effort="high"))
    events = list(stream.events())
    assert all(isinstance(event, ReasoningDelta) for event in events) and stream.text == ""
    assert stream.tool_calls[0].name == "get_weather" and stream.finish_reason == "tool_calls"


def test_other_mock_modes_are_plain_text_only():
    router = router_of(MockProvider(ProviderConfig(name="plain", extra={"delay": 0})))
    with pytest.raises(CapabilityError, match="tools"):
        router.complete("Weather?", GenerationParams(tools=[get_weather]))
    assert mock().capabilities >= {"tools", "structured_output", "reasoning", "streaming_tools"}
    assert mock(name="m2").capabilities == MockProvider(
        ProviderConfig(name="x", model="mock-tools", capabilities=["tools", "streaming_tools", "reasoning",
                                                                   "structured_output"])).capabilities
    with pytest.raises(ConfigurationError, match="tool_arguments"):
        mock(tool_arguments={"get_weather": "Kazan"})


# run_tools --------------------------------------------------------------------------------


def test_the_loop_runs_tools_and_returns_the_text_answer():
    seen = []

    def weather(city: str) -> dict:
        """Current weather in a city."""
        seen.append(city)
        return {"temperature": 21}

    router = router_of(mock(tool_arguments={"weather": {"city": "Kazan"}}))
    completion = run_tools(router, "Weather in Kazan?", [weather])
    assert seen == ["Kazan"]
    assert completion.text == 'Mock answer from tool results: weather: {"temperature": 21}'
    assert completion.finish_reason == "stop"
    assert len(completion.attempts) == 2  # one per round
    assert completion.usage.prompt_tokens > 0 and completion.usage == Usage.of(
        completion.usage.prompt_tokens, completion.usage.completion_tokens)


def test_the_loop_reports_a_failing_tool_to_the_model_and_can_raise_instead(caplog):
    def broken(city: str) -> str:
        """Always fails."""
        raise RuntimeError("station offline")

    router = router_of(mock())
    with caplog.at_level(logging.WARNING, logger="multi_llm_orchestrator.tools"):
        completion = run_tools(router, "broken station?", {"broken": broken})
    assert "RuntimeError: station offline" in completion.text
    assert any("station offline" in record.getMessage() for record in caplog.records)
    with pytest.raises(RuntimeError, match="station offline"):
        run_tools(router, "broken?", {"broken": broken}, raise_errors=True)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class Stubborn:
    """A target that always asks for a tool, taking ``delay`` seconds of a fake clock."""

    timeout = None

    def __init__(self, delay: float = 0.0, clock: FakeClock = None) -> None:
        self.delay = delay
        self.clock = clock
        self.calls = 0
        self.timeouts = []

    def complete(self, messages, params, *, timeout=None):
        self.calls += 1
        self.timeouts.append(timeout)
        if self.clock is not None:
            self.clock.now += self.delay
        return Completion("", "stub", "m", finish_reason="tool_calls",
                          tool_calls=[ToolCall(f"c{self.calls}", "get_weather", {"city": "Oslo"})])


def test_the_loop_is_bounded_by_rounds():
    target = Stubborn()
    with pytest.raises(ToolLoopError, match="after 2 round") as caught:
        run_tools(target, "x", [get_weather], max_rounds=2)
    assert target.calls == 3  # two rounds of tools, then one more answer still asking
    assert caught.value.completion.tool_calls[0].id == "c3"
    assert [m.role for m in caught.value.messages] == ["user", "assistant", "tool", "assistant", "tool"]


def test_the_loop_is_bounded_by_the_deadline(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(tool_loop, "time", clock)
    target = Stubborn(delay=0.05, clock=clock)
    with pytest.raises(DeadlineExceededError, match="tool loop ran out of its 0.12 s after 3 round"):
        run_tools(target, "x", [get_weather], max_rounds=100, timeout=0.12)
    assert target.calls == 3
    assert target.timeouts == pytest.approx([0.12, 0.07, 0.02])  # each call gets what is left


def test_the_loop_uses_the_router_timeout_by_default():
    router = router_of(mock(delay=0.05), timeout=0.08)
    with pytest.raises(DeadlineExceededError):
        run_tools(router, "weather?", [get_weather])


def test_the_loop_checks_its_functions():
    router = router_of(mock())
    with pytest.raises(ConfigurationError, match="No function for the tool"):
        run_tools(router, "x", [get_weather], GenerationParams(tools=[calculator]))
    with pytest.raises(ConfigurationError, match="functions is empty"):
        run_tools(router, "x", [])
    with pytest.raises(ConfigurationError, match="not callable"):
        run_tools(router, "x", {"f": 3})
    with pytest.raises(ConfigurationError, match="max_rounds"):
        run_tools(router, "x", [get_weather], max_rounds=0)


def test_the_example_runs_the_whole_loop_on_mocks_without_keys():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    environ = {k: v for k, v in os.environ.items()
               if k not in ("OPENAI_MODEL", "GIGACHAT_CREDENTIALS", "YC_FOLDER_ID", "OLLAMA_MODEL")}
    environ["PYTHONPATH"] = str(root)
    result = subprocess.run([sys.executable, str(root / "examples" / "tool_calling.py")], capture_output=True,
                            text=True, timeout=120, env=environ)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Mock answer from tool results: get_weather: ")
    assert "calculator: 50.0" in lines[0]
    assert "  plain-mock: skipped (does not support tools)" in lines
    assert lines[-1] == "structured: {'city': 'mock', 'temperature': 1} (by tools-mock)"


def test_a_routed_stream_relays_reasoning_apart_and_the_tool_calls_at_the_end():
    router = router_of(MockProvider(ProviderConfig(name="plain", extra={"delay": 0})), mock())
    stream = router.route_stream("Weather?", GenerationParams(tools=[get_weather], reasoning_effort="low"))
    pieces = list(stream.events())
    assert pieces and all(isinstance(piece, ReasoningDelta) for piece in pieces)
    assert stream.reasoning == "Mock reasoning (low) about: Weather? " and stream.text == ""
    assert stream.tool_calls[0].name == "get_weather" and stream.finish_reason == "tool_calls"
    assert [(a.provider, a.outcome) for a in stream.attempts] == [("plain", "skipped"), ("tools", "ok")]
    assert router.stats()["providers"]["tools"]["successes"] == 1

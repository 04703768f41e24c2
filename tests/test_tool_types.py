"""Tools, tool calls, tool messages, structured output and reasoning settings (types.py),
and the planning that routes a call by capability (planning.py, capabilities.py)."""

from __future__ import annotations

import enum
import json
from typing import Dict, List, Literal, Optional

import pytest

from multi_llm_orchestrator import (
    AllProvidersFailedError,
    CapabilityError,
    Completion,
    ConfigurationError,
    GenerationParams,
    Message,
    ProviderConfig,
    ResponseFormatError,
    Router,
    Tool,
    ToolCall,
    Usage,
)
from multi_llm_orchestrator.metrics import ProviderMetrics
from multi_llm_orchestrator.planning import PlanCheck
from multi_llm_orchestrator.providers.base import BaseProvider
from multi_llm_orchestrator.types import ReasoningDelta, StreamEnd, TextStream, to_messages


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


def get_weather(city: str, days: int = 1, unit: Optional[Unit] = None, detail: Literal["short", "long"] = "short") -> str:
    """Weather forecast for a city.

    Longer text that is not the summary.

    Args:
        city: the city name, e.g. "Kazan"
        days: how many days ahead,
            counted from today
        unit: the temperature unit
    """
    return f"sunny in {city}"


# Tool ---------------------------------------------------------------------------------


def test_tool_from_function_reads_hints_defaults_and_docstring():
    tool = Tool.from_function(get_weather)
    assert tool.name == "get_weather"
    assert tool.description == "Weather forecast for a city."
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": 'the city name, e.g. "Kazan"'},
            "days": {"type": "integer", "description": "how many days ahead, counted from today"},
            "unit": {"enum": ["celsius", "fahrenheit"], "type": "string", "description": "the temperature unit"},
            "detail": {"enum": ["short", "long"], "type": "string"},
        },
        "required": ["city"],
    }


def test_tool_from_function_reads_sphinx_params_lists_and_dicts():
    def add(numbers: List[float], labels: Dict[str, str], flag: bool) -> float:
        """Sum numbers.

        :param numbers: what to add
        :param flag: a switch
        """
        return sum(numbers)

    tool = Tool.from_function(add)
    assert tool.parameters["properties"] == {
        "numbers": {"type": "array", "items": {"type": "number"}, "description": "what to add"},
        "labels": {"type": "object"},
        "flag": {"type": "boolean", "description": "a switch"},
    }
    assert tool.parameters["required"] == ["numbers", "labels", "flag"]


@pytest.mark.parametrize("source, message", [
    ("def f(x): pass", "has no type hint"),
    ("def f(*args: int): pass", "named arguments"),
    ("def f(x: set[bytes]): pass", None),
    ("def f(x: bytes): pass", "no JSON Schema equivalent"),
])
def test_tool_from_function_rejects_what_it_cannot_describe(source, message):
    namespace: dict = {}
    exec(source, namespace)
    if message is None:  # a set of unsupported items is still rejected
        with pytest.raises(ConfigurationError, match="no JSON Schema equivalent"):
            Tool.from_function(namespace["f"])
        return
    with pytest.raises(ConfigurationError, match=message):
        Tool.from_function(namespace["f"])


@pytest.mark.parametrize("name", ["1abc", "has space", "кириллица", "", "x" * 65])
def test_tool_names_every_provider_accepts(name):
    with pytest.raises(ConfigurationError, match="Latin letters"):
        Tool(name)


def test_tool_parameters_must_be_an_object_schema():
    with pytest.raises(ConfigurationError, match="JSON Schema object"):
        Tool("f", parameters={"type": "string"})


def test_tool_of_accepts_openai_dicts_flat_dicts_and_functions():
    openai = {"type": "function", "function": {"name": "f", "description": "d",
                                               "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}}
    assert Tool.of(openai) == Tool("f", "d", {"type": "object", "properties": {"a": {"type": "string"}}})
    assert Tool.of({"name": "g"}) == Tool("g")
    assert Tool.of(get_weather).name == "get_weather"
    assert Tool.of(openai).to_openai() == openai
    with pytest.raises(ConfigurationError, match="needs a name"):
        Tool.of({"type": "function", "function": {}})
    with pytest.raises(ConfigurationError, match="Tool, a function or a dict"):
        Tool.of(42)


# ToolCall and messages ----------------------------------------------------------------------


def test_tool_call_round_trips_the_openai_shape():
    call = ToolCall("call_1", "get_weather", {"city": "Paris"})
    wire = call.to_openai()
    assert wire == {"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    assert ToolCall.from_openai(wire) == call
    assert ToolCall.from_openai({"id": "x", "function": {"name": "n", "arguments": {"a": 1}}}).arguments == {"a": 1}
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        ToolCall.from_openai({"id": "x", "function": {"name": "n", "arguments": "{oops"}})


def test_openai_history_passes_as_it_is():
    history = [
        {"role": "developer", "content": "Be brief"},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
    ]
    messages = to_messages(history)
    assert messages.has_tool_messages
    assert messages[0].role == "system"
    assert messages[2].tool_calls == [ToolCall("call_1", "get_weather", {"city": "Paris"}),
                                      ToolCall("call_2", "get_weather", {"city": "Rome"})]
    assert messages[4] == Message("tool", "21C", tool_call_id="call_2")
    back = [m.to_openai() for m in messages[1:]]
    assert back[1]["content"] is None and json.loads(back[1]["tool_calls"][1]["function"]["arguments"]) == {"city": "Rome"}
    assert back[2] == {"role": "tool", "content": "18C", "tool_call_id": "call_1"}
    assert not to_messages("hi").has_tool_messages


def test_tool_messages_are_validated():
    with pytest.raises(ConfigurationError, match="tool_call_id"):
        Message("tool", "18C")
    with pytest.raises(ConfigurationError, match="Only an assistant"):
        Message("user", "x", tool_calls=[ToolCall("1", "f")])
    with pytest.raises(ConfigurationError, match="lacks the key 'content'"):
        to_messages([{"role": "user", "name": "x"}])


def test_tool_result_serialises_non_strings_and_repr_shows_only_set_fields():
    call = ToolCall("call_9", "add", {"a": 1})
    result = Message.tool_result(call, {"sum": 3, "unit": "°C"})
    assert result == Message("tool", '{"sum": 3, "unit": "°C"}', tool_call_id="call_9", name="add")
    assert repr(Message("user", "hi")) == "Message(role='user', content='hi')"
    assert "tool_call_id='call_9'" in repr(result)


def test_completion_message_carries_its_tool_calls():
    calls = [ToolCall("c1", "f", {"x": 1})]
    completion = Completion("", "p", "m", finish_reason="tool_calls", tool_calls=calls)
    assert completion.message == Message("assistant", "", tool_calls=calls)
    assert Completion("hi", "p", "m").message == Message("assistant", "hi")
    assert Completion('```json\n{"a": 1}\n```', "p", "m").json() == {"a": 1}


# GenerationParams ------------------------------------------------------------------------------


def test_params_turn_every_tool_form_into_tool():
    params = GenerationParams(tools=[get_weather, {"name": "other"}], tool_choice="other")
    assert [tool.name for tool in params.tools] == ["get_weather", "other"]
    named = GenerationParams(tools=[get_weather], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert named.tool_choice == "get_weather"


@pytest.mark.parametrize("fields, message", [
    ({"tools": [get_weather, get_weather]}, "share the name"),
    ({"tools": "get_weather"}, "list of Tool"),
    ({"tools": [get_weather], "tool_choice": "nope"}, "tool_choice must be"),
    ({"tool_choice": "required"}, "needs tools"),
    ({"response_format": 3}, "response_format must be"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "needs a 'schema'"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort must be"),
])
def test_params_reject_bad_tool_and_format_settings(fields, message):
    with pytest.raises(ConfigurationError, match=message):
        GenerationParams(**fields)


def test_params_normalise_response_formats():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    assert GenerationParams(response_format={"type": "json_object"}).response_format == "json"
    assert GenerationParams(response_format={"type": "text"}).response_format is None
    wrapped = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert GenerationParams(response_format=wrapped).response_format == schema
    assert GenerationParams(response_format=schema).response_format == schema


def test_params_round_trip_through_dicts():
    params = GenerationParams(tools=[get_weather], tool_choice="auto", response_format="json", reasoning_effort="low")
    again = GenerationParams.from_dict(json.loads(params.to_json()))
    assert again == params


# Usage ------------------------------------------------------------------------------------


def test_usage_keeps_cached_and_reasoning_parts_within_their_totals():
    assert Usage.of(100, 50, None, 30, 20) == Usage(100, 50, 150, 30, 20)
    assert Usage.of("10", "5", None, "99", "99") == Usage(10, 5, 15, 10, 5)  # a part never exceeds its total
    assert repr(Usage(1, 2, 3)) == "Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)"
    assert "cached_prompt_tokens=3" in repr(Usage(5, 2, 7, 3))


def test_cost_prices_cached_prompt_tokens_apart():
    metrics = ProviderMetrics(1.0, 2.0, price_per_1k_cached_prompt=0.1)
    metrics.started()
    metrics.succeeded(0.1, Usage(1000, 1000, 2000, cached_prompt_tokens=500, reasoning_tokens=300))
    snapshot = metrics.snapshot()
    assert snapshot["cost"] == pytest.approx(0.5 + 0.05 + 2.0)
    assert snapshot["cached_prompt_tokens"] == 500 and snapshot["reasoning_tokens"] == 300
    plain = ProviderMetrics(1.0, 2.0)  # no cached price: cached tokens cost the prompt price
    plain.started()
    plain.succeeded(0.1, Usage(1000, 1000, 2000, cached_prompt_tokens=500))
    assert plain.snapshot()["cost"] == pytest.approx(3.0)


# Streams ---------------------------------------------------------------------------------


def test_text_stream_keeps_reasoning_apart_and_collects_tool_calls():
    calls = [ToolCall("c", "f", {})]
    events = iter([ReasoningDelta("think "), ReasoningDelta("more"), "Hel", "lo",
                   StreamEnd(Usage(1, 2), "tool_calls", "m2", calls)])
    stream = TextStream(events, provider="p", model="m")
    assert list(stream) == ["Hel", "lo"]
    assert stream.text == "Hello" and stream.reasoning == "think more"
    assert stream.tool_calls == calls and stream.finish_reason == "tool_calls"
    raw = TextStream(iter([ReasoningDelta("t"), "a"]), provider="p", model="m")
    pieces = list(raw.events())
    assert pieces == ["t", "a"] and isinstance(pieces[0], ReasoningDelta)
    assert TextStream(iter(["x"]), provider="p", model="m").reasoning is None


# Routing by capability ------------------------------------------------------------------


class Scripted(BaseProvider):
    """A provider answering what the test scripts; declares every capability."""

    declared_capabilities = frozenset({"tools", "structured_output", "reasoning", "streaming_tools"})

    def __init__(self, name: str, answers=None, **config) -> None:
        super().__init__(ProviderConfig(name=name, **config))
        self.answers = list(answers or [])
        self.seen: List[GenerationParams] = []

    def complete(self, messages, params=None, *, timeout=None):
        messages, params = self._prepare(messages, params)
        self.seen.append(params)
        answer = self.answers.pop(0) if self.answers else Completion("ok", self.name, "m")
        return Completion(answer.text, self.name, "m", answer.usage, answer.finish_reason, tool_calls=answer.tool_calls)

    def stream(self, messages, params=None, *, timeout=None):
        completion = self.complete(messages, params, timeout=timeout)
        return self._text_stream(iter([completion.text, StreamEnd(None, completion.finish_reason, None,
                                                                  completion.tool_calls)]))

    def health_check(self, timeout=None):
        return True


WEATHER_CALL = Completion("", "x", "m", finish_reason="tool_calls",
                          tool_calls=[ToolCall("call_1", "get_weather", {"city": "Kazan"})])


def test_a_tool_call_is_planned_only_over_providers_with_tools():
    router = Router(strategy="first-available")
    plain = router.add_provider(Scripted("plain", capabilities=[]))
    tools = router.add_provider(Scripted("tools", [WEATHER_CALL]))
    completion = router.complete("Weather in Kazan?", GenerationParams(tools=[get_weather]))
    assert completion.provider == "tools" and completion.tool_calls == WEATHER_CALL.tool_calls
    assert completion.finish_reason == "tool_calls"
    skipped, answered = completion.attempts
    assert (skipped.provider, skipped.outcome, skipped.error_type) == ("plain", "skipped", "CapabilityError")
    assert skipped.error == "does not support tools"
    assert answered.outcome == "ok" and not plain.seen
    stats = router.stats()["providers"]
    assert stats["tools"]["successes"] == 1 and stats["plain"]["calls"] == 0
    # A plain call still goes everywhere, no skip recorded.
    assert router.complete("Hi").attempts[0].outcome == "ok"


def test_tool_history_needs_tools_too():
    router = Router()
    router.add_provider(Scripted("plain", capabilities=["structured_output"]))
    history = [Message("user", "Weather?"), WEATHER_CALL.message,
               Message.tool_result(WEATHER_CALL.tool_calls[0], "sunny")]
    with pytest.raises(CapabilityError) as caught:
        router.complete(history)
    assert caught.value.capabilities == ["tools"] and caught.value.providers == ["plain"]


def test_no_provider_with_the_capability_names_it():
    router = Router()
    router.add_provider(Scripted("a", capabilities=["tools"]))
    router.add_provider(Scripted("b", capabilities=["tools", "reasoning"]))
    with pytest.raises(CapabilityError, match="No provider supports structured_output") as caught:
        router.complete("x", GenerationParams(response_format="json", reasoning_effort="high"))
    assert caught.value.capabilities == ["structured_output"]
    assert isinstance(caught.value, ConfigurationError)
    assert router.stats()["failed"] == 1


def test_streaming_tool_calls_is_its_own_capability():
    router = Router()
    router.add_provider(Scripted("whole-only", capabilities=["tools"]))
    router.add_provider(Scripted("streams", [WEATHER_CALL]))
    stream = router.route_stream("Weather?", GenerationParams(tools=[get_weather]))
    assert list(stream) == []
    assert stream.provider == "streams" and stream.tool_calls == WEATHER_CALL.tool_calls
    assert [(a.provider, a.outcome) for a in stream.attempts] == [("whole-only", "skipped"), ("streams", "ok")]


def test_capabilities_in_config_are_checked():
    with pytest.raises(ConfigurationError, match="unknown capabilities telepathy"):
        ProviderConfig(name="x", capabilities=["tools", "telepathy"])
    with pytest.raises(ConfigurationError, match="list of capabilities"):
        ProviderConfig(name="x", capabilities="tools")
    assert ProviderConfig.from_dict({"name": "x", "capabilities": ["tools"]}).capabilities == ["tools"]


def test_unknown_tool_name_falls_back_to_the_next_provider():
    bad = Completion("", "x", "m", finish_reason="tool_calls", tool_calls=[ToolCall("c", "launch_rockets", {})])
    router = Router(strategy="first-available")
    router.add_provider(Scripted("confused", [bad]))
    router.add_provider(Scripted("good", [WEATHER_CALL]))
    completion = router.complete("Weather?", GenerationParams(tools=[get_weather]))
    assert completion.provider == "good"
    assert completion.attempts[0].error_type == "ResponseFormatError"
    assert "launch_rockets" in completion.attempts[0].error


@pytest.mark.parametrize("text, problem", [
    ("Sure! The answer is 3.", "not the JSON"),
    ('{"answer": "ok"', "not the JSON"),
    ('{"answer": "ok"}', "lacks the required key(s) n"),
    ("[1, 2]", "asks for an object"),
])
def test_structured_output_that_does_not_fit_falls_back(text, problem):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}, "n": {"type": "integer"}},
              "required": ["answer", "n"]}
    router = Router(strategy="first-available")
    router.add_provider(Scripted("sloppy", [Completion(text, "x", "m")]))
    router.add_provider(Scripted("exact", [Completion('{"answer": "ok", "n": 3}', "x", "m")]))
    completion = router.complete("x", GenerationParams(response_format=schema))
    assert completion.provider == "exact" and completion.json() == {"answer": "ok", "n": 3}
    assert problem in completion.attempts[0].error
    only = Router()
    only.add_provider(Scripted("sloppy", [Completion(text, "x", "m")]))
    with pytest.raises(AllProvidersFailedError) as caught:
        only.complete("x", GenerationParams(response_format=schema))
    assert isinstance(caught.value.errors[0], ResponseFormatError)


def test_plan_checks_are_generic_and_reasons_are_listed():
    class Pinned(PlanCheck):
        def prepare(self, request):
            wanted = request.params.extra.get("pin")
            return None if wanted is None else (lambda state: None if state.name == wanted else f"pinned to {wanted}")

    router = Router()
    router.add_provider(Scripted("a"))
    router.add_provider(Scripted("b", capabilities=[]))
    router._plan_checks = router._plan_checks + (Pinned(),)
    completion = router.complete("x", GenerationParams(extra={"pin": "b"}))
    assert completion.provider == "b"
    assert [(a.provider, a.outcome, a.error) for a in completion.attempts] == [
        ("a", "skipped", "pinned to b"), ("b", "ok", None)]
    # Different checks left everyone out: one generic error with every reason.
    with pytest.raises(AllProvidersFailedError, match=r"a: pinned to b; b: does not support tools"):
        router.complete("x", GenerationParams(extra={"pin": "b"}, tools=[get_weather]))


def test_a_streamed_structured_answer_is_checked_at_its_end():
    router = Router()
    router.add_provider(Scripted("sloppy", [Completion("not json", "x", "m")]))
    stream = router.route_stream("x", GenerationParams(response_format="json"))
    with pytest.raises(ResponseFormatError, match="not the JSON"):
        list(stream)
    assert stream.text == "not json"  # too late to fall back: the caller saw it, and gets the error
    assert router.stats()["providers"]["sloppy"]["failures"] == 1


def test_string_pieces_of_a_gigachat_function_call_are_concatenated():
    from multi_llm_orchestrator.providers.chat_format import chunk_deltas

    def piece(arguments, **more):
        return {"choices": [{"index": 0, "delta": {"function_call": {"arguments": arguments, **more}}}]}

    events = [piece('{"city": ', name="get_weather"), piece('"Kazan"}'),
              {"choices": [{"index": 0, "delta": {}, "finish_reason": "function_call"}]}]
    end = list(chunk_deltas(events, "g"))[-1]
    assert end.tool_calls[0].name == "get_weather" and end.tool_calls[0].arguments == {"city": "Kazan"}
    assert end.finish_reason == "tool_calls"



def test_a_provider_skipped_for_its_taken_recovery_probe_says_so():
    from multi_llm_orchestrator.calls import AttemptRun, Call, Telemetry
    from multi_llm_orchestrator.strategies import ProviderState

    class NoReservation:
        def reserve(self, force=False):
            return None  # open, or another thread holds the probe

    state = ProviderState(Scripted("busy"), NoReservation(), None)
    call = Call(None, False, Telemetry())
    assert AttemptRun.reserve(call, state, hedge=True, force=False) is None
    [attempt] = call.attempt_list()
    assert (attempt.provider, attempt.outcome, attempt.error_type, attempt.hedge) == ("busy", "skipped", "CircuitOpen", True)
    assert attempt.error.startswith("circuit open")

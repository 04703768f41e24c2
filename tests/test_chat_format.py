"""The OpenAI-shaped chat wire shared by GigaChat and OpenAI-compatible providers,
read directly (no HTTP): ``providers/chat_format.py``."""

import json
from pathlib import Path

import pytest

from multi_llm_orchestrator.errors import ResponseFormatError
from multi_llm_orchestrator.providers.chat_format import chunk_deltas, parse_answer, parse_completion, usage_of
from multi_llm_orchestrator.streaming import iter_sse_json
from multi_llm_orchestrator.types import StreamEnd, Usage

GIGACHAT_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "gigachat"


def gigachat_fixture(name):
    return (GIGACHAT_FIXTURES / name).read_text(encoding="utf-8")


def chunk(content=None, finish_reason=None, index=0, **fields):
    choice = {"index": index, "delta": {} if content is None else {"content": content}}
    if finish_reason is not None:
        choice["finish_reason"] = finish_reason
    return {"object": "chat.completion.chunk", "choices": [choice], **fields}


def split(items):
    """The text deltas and the StreamEnd of chunk_deltas' output, checking it ends once."""
    *deltas, end = items
    assert isinstance(end, StreamEnd) and all(isinstance(d, str) for d in deltas)
    return deltas, end


# usage_of ---------------------------------------------------------------------------------


def test_usage_of_reads_the_three_counters():
    assert usage_of({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}) == Usage(10, 5, 15)


def test_usage_of_keeps_a_reported_total_and_sums_a_missing_one():
    # GigaChat's total is the billable one and may differ from the sum: never recomputed.
    assert usage_of({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 13}) == Usage(10, 5, 13)
    assert usage_of({"prompt_tokens": 3, "completion_tokens": 4}) == Usage(3, 4, 7)


def test_usage_of_reads_strings_and_treats_junk_counters_as_unknown_usage():
    assert usage_of({"prompt_tokens": "3", "completion_tokens": None}) == Usage(3, 0, 3)
    # Issue 11: one counter that is not a count makes the whole usage unknown (None).
    assert usage_of({"prompt_tokens": "3", "completion_tokens": None, "total_tokens": "x"}) is None


@pytest.mark.parametrize("raw", [None, [], "12", 7, True])
def test_usage_of_is_none_without_a_usage_object(raw):
    assert usage_of(raw) is None


# parse_completion -------------------------------------------------------------------------


def test_parse_completion_reads_the_recorded_gigachat_answer():
    text, usage, finish_reason, model = parse_completion(json.loads(gigachat_fixture("chat_completion.json")), "g")
    assert text.startswith("Конечно, у человечества") and text.endswith("предрассудках.")
    assert usage == Usage(18, 68, 86)
    assert (finish_reason, model) == ("stop", "GigaChat:v1.2.19.2")


def test_parse_completion_reads_a_gigachat_function_call_as_a_tool_call():
    text, usage, finish_reason, _ = parse_completion(json.loads(gigachat_fixture("chat_completion_function.json")), "g")
    assert (text, finish_reason) == ("", "tool_calls")  # GigaChat's "function_call", normalised
    assert usage == Usage(138, 21, 159)
    answer = parse_answer(json.loads(gigachat_fixture("chat_completion_function.json")), "g")
    [call] = answer.tool_calls
    assert (call.name, call.arguments) == ("fc", {"location": "Москва", "num_days": 0})
    assert call.id.startswith("call_")  # no functions_state_id in this recording: one is made up
    assert parse_answer(json.loads(gigachat_fixture("chat_completion.json")), "g").reasoning == "... some reasoning ..."


def test_parse_completion_reads_an_openai_answer():
    answer = {
        "id": "chatcmpl-1", "object": "chat.completion", "model": "qwen2.5",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
    }
    assert parse_completion(answer, "o") == ("Hello!", Usage(4, 2, 6), "length", "qwen2.5")


@pytest.mark.parametrize("message", [
    {"role": "assistant", "content": None, "tool_calls": [{"id": "t", "type": "custom", "custom": {"name": "x"}}]},
    {"role": "assistant"},
])
def test_null_or_absent_content_is_empty_text_and_absent_fields_are_defaults(message):
    # A "custom" tool call is not one of ours (we never send custom tools): skipped.
    assert parse_completion({"choices": [{"message": message}]}, "o") == ("", Usage(0, 0, 0), None, None)


def test_a_tool_call_without_a_function_name_is_a_format_error():
    message = {"role": "assistant", "content": None, "tool_calls": [{"id": "t", "type": "function"}]}
    with pytest.raises(ResponseFormatError, match="no function name"):
        parse_completion({"choices": [{"message": message}]}, "o")


def test_only_the_first_choice_is_read():
    answer = {"choices": [{"message": {"content": "first"}}, {"message": {"content": "second"}}]}
    assert parse_completion(answer, "o")[0] == "first"


@pytest.mark.parametrize("body, fragment", [
    ([1, 2], "chat/completions answered list, not an object"),
    ("text", "chat/completions answered str, not an object"),
    (None, "chat/completions answered NoneType, not an object"),
    ({}, "chat/completions answered without choices"),
    ({"object": "chat.completion"}, "answered without choices"),
    ({"choices": []}, "answered without choices"),
    ({"choices": None}, "answered without choices"),
    ({"choices": {"0": {"message": {"content": "x"}}}}, "answered without choices"),
    ({"choices": ["Hello"]}, "answered without choices"),
    ({"choices": [{"index": 0, "finish_reason": "stop"}]}, "without choices[0].message"),
    ({"choices": [{"message": None}]}, "without choices[0].message"),
    ({"choices": [{"message": "Hello"}]}, "without choices[0].message"),
    ({"choices": [{"message": {"content": ["a", "b"]}}]}, "content is list, not text"),
    ({"choices": [{"message": {"content": 42}}]}, "content is int, not text"),
])
def test_every_malformed_answer_is_a_response_format_error(body, fragment):
    with pytest.raises(ResponseFormatError) as caught:
        parse_completion(body, "prov")
    assert fragment in caught.value.message
    assert caught.value.provider == "prov"


def test_parse_completion_names_what_answered():
    with pytest.raises(ResponseFormatError) as caught:
        parse_completion({"status": "ok"}, "g", what="GigaChat chat/completions")
    assert caught.value.message == "GigaChat chat/completions answered without choices"


# chunk_deltas -------------------------------------------------------------------------------


def test_recorded_gigachat_stream_gives_its_deltas_and_no_usage():
    lines = iter(gigachat_fixture("chat_completion.stream").split("\n"))
    deltas, end = split(list(chunk_deltas(iter_sse_json(lines, provider="g"), "g")))
    assert len(deltas) == 2 and deltas[-1] == "."  # the last, empty delta yields nothing
    assert "".join(deltas).startswith("Конечно, у человечества") and "".join(deltas).endswith("с умом.")
    assert end == StreamEnd(usage=None, finish_reason="stop", model="GigaChat:v1.2.19.2")


def test_gigachat_usage_in_the_last_json_event_is_reported():
    events = [chunk("Раз", model="GigaChat:2"), chunk("", "stop", model="GigaChat:2",
                                                      usage={"prompt_tokens": 17, "completion_tokens": 42,
                                                             "total_tokens": 59, "precached_prompt_tokens": 2})]
    deltas, end = split(list(chunk_deltas(events, "g")))
    assert deltas == ["Раз"]
    # precached_prompt_tokens: GigaChat's cached part of the prompt.
    assert end == StreamEnd(usage=Usage(17, 42, 59, cached_prompt_tokens=2), finish_reason="stop", model="GigaChat:2")


def test_openai_usage_chunk_with_empty_choices_ends_the_stream():
    events = [
        chunk("", model="m", usage=None),  # role-only first chunk; usage null in every chunk but the last
        chunk("Once", model="m", usage=None),
        chunk(" upon", model="m", usage=None),
        chunk(None, "stop", model="m", usage=None),
        {"object": "chat.completion.chunk", "model": "m", "choices": [],
         "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}},
    ]
    deltas, end = split(list(chunk_deltas(events, "o")))
    assert deltas == ["Once", " upon"]
    assert end == StreamEnd(usage=Usage(9, 3, 12), finish_reason="stop", model="m")


def test_without_usage_the_end_reports_none_not_zeros():
    deltas, end = split(list(chunk_deltas([chunk("a"), chunk("b", "length")], "o")))
    assert deltas == ["a", "b"]
    assert end.usage is None and end.finish_reason == "length" and end.model is None


def test_a_later_null_does_not_erase_a_reported_finish_reason_model_or_usage():
    events = [
        chunk("a", "stop", model="m1", usage={"prompt_tokens": 1, "completion_tokens": 1}),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": None}], "model": None, "usage": None},
    ]
    assert split(list(chunk_deltas(events, "o")))[1] == StreamEnd(Usage(1, 1, 2), "stop", "m1")


def test_only_choice_index_0_is_read():
    events = [
        {"choices": [{"index": 1, "delta": {"content": "other"}, "finish_reason": "length"},
                     {"index": 0, "delta": {"content": "mine"}}]},
        {"choices": [{"delta": {"content": " too"}, "finish_reason": "stop"}]},  # no index: choice 0
        {"choices": [{"index": 1, "delta": {"content": "other again"}}]},
    ]
    deltas, end = split(list(chunk_deltas(events, "o")))
    assert deltas == ["mine", " too"] and end.finish_reason == "stop"


@pytest.mark.parametrize("event", [
    {},
    {"choices": None},
    {"choices": []},
    {"choices": ["junk", 3, None]},
    {"choices": [{"index": 0}]},
    {"choices": [{"index": 0, "delta": None}]},
    {"choices": [{"index": 0, "delta": "text"}]},
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": "junk"}}]},
])
def test_chunks_without_text_are_tolerated(event):
    assert list(chunk_deltas([event, chunk("ok")], "o"))[:-1] == ["ok"]


@pytest.mark.parametrize("fragment, problem", [
    ({"index": 0, "function": {"arguments": "{"}}, "never named its function"),
    ({"index": 0, "id": "c", "function": {"name": "f", "arguments": "{"}}, "not valid JSON"),
])
def test_a_broken_streamed_tool_call_is_a_format_error_at_the_end(fragment, problem):
    stream = chunk_deltas([{"choices": [{"index": 0, "delta": {"tool_calls": [fragment]}}]}, chunk("ok")], "o")
    assert next(stream) == "ok"
    with pytest.raises(ResponseFormatError, match=problem):
        next(stream)


@pytest.mark.parametrize("event, fragment", [
    ({"choices": "abc"}, "choices of type str, not a list"),
    ({"choices": {"index": 0}}, "choices of type dict, not a list"),
    ({"choices": 5}, "choices of type int, not a list"),
    ({"choices": [{"index": 0, "delta": {"content": ["a"]}}]}, "delta.content is list, not text"),
    ({"choices": [{"index": 0, "delta": {"content": 7}}]}, "delta.content is int, not text"),
])
def test_unreadable_chunks_are_response_format_errors(event, fragment):
    stream = chunk_deltas([chunk("before"), event, chunk("after")], "prov")
    assert next(stream) == "before"
    with pytest.raises(ResponseFormatError) as caught:
        next(stream)
    assert fragment in caught.value.message and caught.value.provider == "prov"


def test_an_empty_stream_still_ends_with_a_stream_end():
    assert list(chunk_deltas([], "o")) == [StreamEnd()]


def test_deltas_are_yielded_as_events_arrive():
    read = []

    def events():
        for index, text in enumerate(["a", "b", "c"]):
            read.append(index)
            yield chunk(text)

    stream = chunk_deltas(events(), "o")
    assert next(stream) == "a" and read == [0]  # nothing read ahead of the caller
    assert next(stream) == "b" and read == [0, 1]

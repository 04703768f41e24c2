"""The public value types are dataclasses to every caller that asks, although a provider
import no longer runs ``@dataclass`` (``records.py``): fields, params, signatures, repr,
equality, hashing, frozenness, replace/asdict, dataclasses-json, pattern matching,
pickling and copying, each pinned against what the ``@dataclass`` versions gave
(``GOLDEN`` was printed by ``python tests/test_records.py`` on that code)."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import os
import pickle
import re
import warnings
from typing import Any, Callable, Dict, List

import pytest
from test_lazy_json import run_fresh

from multi_llm_orchestrator.auth import Token
from multi_llm_orchestrator.call_options import CallOptions
from multi_llm_orchestrator.config import ProviderConfig
from multi_llm_orchestrator.providers.base import EmbeddingLimits
from multi_llm_orchestrator.records import FACTORY, FrozenRecord, Record, field, field_names
from multi_llm_orchestrator.types import (
    Attempt, Completion, Embeddings, GenerationParams, Message, RouterEvent, StreamEnd, Tool, ToolCall, Usage,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _call() -> ToolCall:
    return ToolCall("call_1", "get_weather", {"city": "Kazan"})


def _tool() -> Tool:
    return Tool("get_weather", "Current weather.", {"type": "object", "properties": {"city": {"type": "string"}}})


#: One instance of each type with non-default values where it has them (a callable each:
#: every call builds a new, equal instance).
SAMPLES: Dict[str, Callable[[], Any]] = {
    "Tool": _tool,
    "ToolCall": _call,
    "Message": lambda: Message("assistant", "", [_call()]),
    "GenerationParams": lambda: GenerationParams(0.5, 10, 0.9, "END", {"seed": 1}, [_tool()], "auto", "json", "low"),
    "Usage": lambda: Usage(10, 5, 15, 4, 2),
    "Attempt": lambda: Attempt("p", "error", 0.5, "boom", "ProviderError", True),
    "Completion": lambda: Completion("hi", "p", "m", Usage(1, 2, 3), "stop", 0.25,
                                     [Attempt("q", "error", 0.1, "down", "ProviderUnavailableError")],
                                     [_call()], "thinking", True),
    "Embeddings": lambda: Embeddings([[0.5, 0.25]], "p", "m", Usage(3, 0, 3), "p:m", 0.1, [Attempt("p", "ok")]),
    "RouterEvent": lambda: RouterEvent("attempt", "p", "m", "ok", 0.1, usage=Usage(1, 1, 2), hedge=True),
    "StreamEnd": lambda: StreamEnd(Usage(1, 1, 2), "stop", "m", [_call()]),
    "ProviderConfig": lambda: ProviderConfig(name="p", model="m", api_key="sk-secret-value",
                                             base_url="https://user:pw@host/v1?key=1", extra={"delay": 0},
                                             limits={"rpm": 10}, capabilities=["tools"]),
    "EmbeddingLimits": lambda: EmbeddingLimits(10, 1000),
    "Token": lambda: Token("t1.secret", 2, 99.5),
    "CallOptions": lambda: CallOptions(GenerationParams(0.5), frozenset({"p"}), "m"),
}
CLASSES = {"Tool": Tool, "ToolCall": ToolCall, "Message": Message, "GenerationParams": GenerationParams,
           "Usage": Usage, "Attempt": Attempt, "Completion": Completion, "Embeddings": Embeddings,
           "RouterEvent": RouterEvent, "StreamEnd": StreamEnd, "ProviderConfig": ProviderConfig,
           "EmbeddingLimits": EmbeddingLimits, "Token": Token, "CallOptions": CallOptions}
#: Types with dataclasses-json's methods.
JSON_TYPES = ("Tool", "ToolCall", "Message", "GenerationParams", "Usage", "Attempt", "Completion", "Embeddings",
              "ProviderConfig")


def _shown(value: Any) -> str:
    """repr with functions by name and object addresses dropped (stable across runs)."""
    text = re.sub(r"<function ([\w.<>]+) at 0x\w+>", r"<function \1>", repr(value))
    # The signature default of a default_factory field: dataclasses' own marker, or MISSING.
    return re.sub(r"<dataclasses._MISSING_TYPE object at 0x\w+>", "<factory>", text)


def _field_line(spec: "dataclasses.Field[Any]") -> str:
    if spec.default is not dataclasses.MISSING:
        default = f" = {spec.default!r}"
    elif spec.default_factory is not dataclasses.MISSING:
        default = f" = <factory {spec.default_factory()!r}>"
    else:
        default = ""
    flags = [f"{name}={getattr(spec, name)!r}" for name, usual in
             (("init", True), ("repr", True), ("compare", True), ("hash", None), ("kw_only", False))
             if getattr(spec, name) != usual]
    if spec.metadata:
        flags.append(f"metadata={_shown(dict(spec.metadata))}")
    return f"{spec.name}: {spec.type}{default}{' [' + ', '.join(flags) + ']' if flags else ''}"


def describe(name: str) -> Dict[str, Any]:
    """What a caller can see of one type and its sample (GOLDEN holds these)."""
    cls, value = CLASSES[name], SAMPLES[name]()
    seen: Dict[str, Any] = {
        "fields": [_field_line(spec) for spec in dataclasses.fields(cls)],
        "frozen": cls.__dataclass_params__.frozen,
        "order": cls.__dataclass_params__.order,
        "match_args": list(cls.__match_args__),
        "signature": _signature(cls),
        "repr": _shown(value),
        "asdict": _shown(dataclasses.asdict(value)),
        "astuple": _shown(dataclasses.astuple(value)),
        "hash": "none" if cls.__hash__ is None else _hashable(value),
    }
    if name in JSON_TYPES:
        seen["to_dict"] = _shown(value.to_dict())
        seen["to_json"] = value.to_json()
    return seen


def _signature(cls: type) -> str:
    """The parameters of ``cls(...)``: names, kinds and defaults (annotations apart)."""
    shown = []
    for parameter in inspect.signature(cls).parameters.values():
        default = "" if parameter.default is inspect.Parameter.empty else f"={_shown(parameter.default)}"
        shown.append(f"{parameter.kind.name} {parameter.name}{default}")
    return ", ".join(shown)


def _hashable(value: Any) -> str:
    try:
        hash(value)
    except TypeError as exc:
        return f"TypeError: {exc}"
    return "hashable"


GOLDEN = os.path.join(ROOT, "tests", "fixtures", "records_golden.json")


@pytest.mark.parametrize("name", list(CLASSES))
def test_what_a_caller_sees_is_what_the_dataclass_gave(name):
    with open(GOLDEN, encoding="utf-8") as file:
        assert describe(name) == json.load(file)[name]


@pytest.mark.parametrize("name", list(CLASSES))
def test_is_a_dataclass_class_and_instance(name):
    cls, value = CLASSES[name], SAMPLES[name]()
    assert dataclasses.is_dataclass(cls) and dataclasses.is_dataclass(value)
    assert dataclasses.fields(value) == dataclasses.fields(cls)
    assert list(cls.__dataclass_fields__) == [spec.name for spec in dataclasses.fields(cls)]
    assert value.__dataclass_fields__ is cls.__dataclass_fields__
    assert cls.__dataclass_params__.eq and not cls.__dataclass_params__.order


@pytest.mark.parametrize("name", list(CLASSES))
def test_equality_follows_every_field_and_the_class(name):
    cls, value, twin = CLASSES[name], SAMPLES[name](), SAMPLES[name]()
    assert value == twin and not value != twin
    assert value.__eq__(object()) is NotImplemented and value != object()
    changed = 0
    for spec in dataclasses.fields(cls):
        other = OTHER_VALUES.get((name, spec.name), OTHER_VALUES.get(spec.name, _SKIP))
        if other is not _SKIP:
            assert dataclasses.replace(value, **{spec.name: other}) != value, spec.name
            changed += 1
    assert changed >= len(dataclasses.fields(cls)) - 2


_SKIP = object()
#: A valid value unlike the sample's for each field (by field name, or by (type, field)).
OTHER_VALUES: Dict[Any, Any] = {
    "role": "user", "content": "other", "tool_calls": None, "name": "other_name", "id": "call_2",
    "arguments": {}, "description": "other", "parameters": {"type": "object", "properties": {}},
    "temperature": 1.0, "max_tokens": 1, "top_p": 0.5, "stop": ["x"], "extra": {"other": 1},
    "tools": None, "tool_choice": None, "response_format": None, "reasoning_effort": "high",
    "prompt_tokens": 99, "completion_tokens": 99, "total_tokens": 99, "cached_prompt_tokens": 1,
    "reasoning_tokens": 1, "provider": "other", "outcome": "ok", "latency_s": 9.0, "error": "other",
    "error_type": "Other", "hedge": False, "text": "other", "model": "other", "usage": Usage(7, 7, 14),
    "finish_reason": "length", "attempts": [], "reasoning": None, "cached": False,
    "vectors": [[1.0]], "space": "other", "kind": "call", "streaming": True, "max_texts": 1, "max_chars": 1,
    "value": "t2.other", "generation": 3, "refresh_at": None, "params": GenerationParams(), "pinned": None,
    ("Message", "tool_call_id"): _SKIP, ("Message", "role"): _SKIP,  # the sample is an assistant's tool calls
    ("RouterEvent", "attempts"): 3, ("RouterEvent", "usage"): None, ("RouterEvent", "outcome"): "error",
    ("ProviderConfig", "timeout"): 5.0, ("ProviderConfig", "weight"): 2.0, ("ProviderConfig", "max_retries"): 0,
    ("ProviderConfig", "pool_size"): 2, ("ProviderConfig", "verify_ssl"): False, ("ProviderConfig", "api_key"): "k2",
    ("ProviderConfig", "base_url"): "https://other/v1", ("ProviderConfig", "auth_url"): "https://auth/v1",
    ("ProviderConfig", "scope"): "s", ("ProviderConfig", "folder_id"): "f", ("ProviderConfig", "ca_bundle"): "/ca.pem",
    ("ProviderConfig", "price_per_1k_prompt_tokens"): 1.0, ("ProviderConfig", "price_per_1k_completion_tokens"): 1.0,
    ("ProviderConfig", "context_window"): 100, ("ProviderConfig", "embedding_model"): "e",
    ("ProviderConfig", "embedding_space"): "s", ("ProviderConfig", "extra"): {"delay": 1},
    ("ProviderConfig", "price_per_1k_cached_prompt_tokens"): 0.5, ("ProviderConfig", "capabilities"): None,
    ("ProviderConfig", "prices"): {"prompt": 1.0}, ("ProviderConfig", "limits"): None,
    ("ProviderConfig", "budget"): {"limit": 5.0, "period": "day"}, ("ProviderConfig", "max_response_bytes"): 4096,
}


@pytest.mark.parametrize("name", list(CLASSES))
def test_hash_of_frozen_types_follows_the_fields(name):
    cls, value, twin = CLASSES[name], SAMPLES[name](), SAMPLES[name]()
    if not cls.__dataclass_params__.frozen:
        assert cls.__hash__ is None
        with pytest.raises(TypeError):
            hash(value)
        return
    try:
        expected = hash(tuple(getattr(value, spec.name) for spec in dataclasses.fields(cls)))
    except TypeError:  # a list or dict inside: unhashable, as a dataclass of it is
        with pytest.raises(TypeError):
            hash(value)
    else:
        assert hash(value) == hash(twin) == expected


@pytest.mark.parametrize("name", list(CLASSES))
def test_frozen_types_refuse_every_assignment_and_deletion(name):
    cls, value = CLASSES[name], SAMPLES[name]()
    first = dataclasses.fields(cls)[0].name
    if not cls.__dataclass_params__.frozen:
        setattr(value, first, getattr(value, first))
        value.anything = 1
        assert value.anything == 1
        return
    for attribute in (first, "not_a_field"):
        with pytest.raises(dataclasses.FrozenInstanceError, match=f"cannot assign to field '{attribute}'"):
            setattr(value, attribute, 1)
        with pytest.raises(dataclasses.FrozenInstanceError, match=f"cannot delete field '{attribute}'"):
            delattr(value, attribute)
    assert isinstance(dataclasses.FrozenInstanceError(), AttributeError)
    assert value == SAMPLES[name]()


@pytest.mark.parametrize("name", list(CLASSES))
def test_replace_keeps_the_rest_and_validates_again(name):
    cls, value = CLASSES[name], SAMPLES[name]()
    assert dataclasses.replace(value) == value and dataclasses.replace(value) is not value
    with pytest.raises(TypeError):
        dataclasses.replace(value, no_such_field=1)


@pytest.mark.parametrize("name", ["Message", "GenerationParams", "Tool", "ToolCall", "ProviderConfig"])
def test_replace_runs_the_validation(name):
    from multi_llm_orchestrator.errors import ConfigurationError

    bad = {"Message": {"role": "robot"}, "GenerationParams": {"temperature": 5}, "Tool": {"name": "bad name!"},
           "ToolCall": {"arguments": "x"}, "ProviderConfig": {"timeout": -1}}[name]
    with pytest.raises(ConfigurationError):
        dataclasses.replace(SAMPLES[name](), **bad)


@pytest.mark.parametrize("name", list(CLASSES))
def test_pickle_and_copy_give_equal_values_of_the_same_class(name):
    value = SAMPLES[name]()
    pickled = [pickle.loads(pickle.dumps(value, protocol)) for protocol in range(pickle.HIGHEST_PROTOCOL + 1)]
    for other in (*pickled, copy.copy(value), copy.deepcopy(value)):
        assert type(other) is type(value) and other == value and repr(other) == repr(value)
    if CLASSES[name].__dataclass_params__.frozen:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(copy.copy(value), dataclasses.fields(value)[0].name, 1)


@pytest.mark.parametrize("name", list(CLASSES))
def test_pattern_matching_by_position(name):
    cls, value = CLASSES[name], SAMPLES[name]()
    names = [spec.name for spec in dataclasses.fields(cls)]
    # ``case cls(a, b, ...)`` built for this class's number of fields
    captures = ", ".join(f"v{index}" for index in range(len(names)))
    code = f"match value:\n    case cls({captures}):\n        found = [{captures}]\n    case _:\n        found = None\n"
    scope: Dict[str, Any] = {"value": value, "cls": cls}
    exec(code, scope)  # noqa: S102 - the test's own source
    assert scope["found"] == [getattr(value, field_name) for field_name in names]


@pytest.mark.parametrize("name", list(CLASSES))
def test_mutable_defaults_are_new_for_every_instance(name):
    cls = CLASSES[name]
    required = [spec.name for spec in dataclasses.fields(cls)
                if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING]
    sample = SAMPLES[name]()
    one = cls(**{key: getattr(sample, key) for key in required})
    two = cls(**{key: getattr(sample, key) for key in required})
    for spec in dataclasses.fields(cls):
        if spec.default_factory is not dataclasses.MISSING:
            assert getattr(one, spec.name) == spec.default_factory()
            if isinstance(getattr(one, spec.name), (list, dict)):
                assert getattr(one, spec.name) is not getattr(two, spec.name), spec.name


@pytest.mark.parametrize("name", JSON_TYPES)
def test_dataclasses_json_round_trip(name):
    cls, value = CLASSES[name], SAMPLES[name]()
    back = cls.from_dict(value.to_dict())
    again = cls.from_json(value.to_json())
    if cls is ProviderConfig:  # the secret is left out of to_dict, and the URL's credentials
        value = dataclasses.replace(value, api_key=None, base_url="https://user@host/v1?key=1")
    assert back == value and again == value
    with warnings.catch_warnings():  # marshmallow cannot map typing's string annotations, and
        warnings.simplefilter("ignore", UserWarning)  # dataclasses-json uses what marshmallow 4 drops:
        warnings.simplefilter("ignore", DeprecationWarning)  # both say so, about their own code
        assert set(cls.schema().fields) == {spec.name for spec in dataclasses.fields(cls)}


@pytest.mark.parametrize("name", list(CLASSES))
def test_each_written_out_init_takes_the_fields_with_their_defaults(name):
    """The hand-written ``__init__`` and the field declarations cannot drift apart."""
    cls = CLASSES[name]
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    specs = dataclasses.fields(cls)
    assert [parameter.name for parameter in parameters] == [spec.name for spec in specs]
    for parameter, spec in zip(parameters, specs):
        assert parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert parameter.annotation == spec.type, spec.name
        if spec.default_factory is not dataclasses.MISSING:
            assert parameter.default is FACTORY, spec.name
        elif spec.default is dataclasses.MISSING:
            assert parameter.default is inspect.Parameter.empty, spec.name
        else:
            assert parameter.default == spec.default and type(parameter.default) is type(spec.default), spec.name
    assert field_names(cls) == tuple(spec.name for spec in specs)


class _One(FrozenRecord):
    """One field: compared and hashed as the 1-tuple a dataclass uses."""

    value: Any

    def __init__(self, value: Any) -> None:
        self.__dict__["value"] = value


class _Box(Record):
    items: List[Any] = field(default_factory=list)
    note: str = field(default="", repr=False, compare=False)

    def __init__(self, items: List[Any] = FACTORY, note: str = "") -> None:
        self.__dict__["items"] = [] if items is FACTORY else items
        self.__dict__["note"] = note


@dataclasses.dataclass(frozen=True)
class _OneDataclass:
    value: Any


@dataclasses.dataclass
class _BoxDataclass:
    items: List[Any] = dataclasses.field(default_factory=list)
    note: str = dataclasses.field(default="", repr=False, compare=False)


def test_a_record_behaves_as_the_dataclass_it_declares():
    nan = float("nan")
    assert _One(nan) == _One(nan) and _OneDataclass(nan) == _OneDataclass(nan)  # one object: identical, as in a tuple
    assert _One(float("nan")) != _One(float("nan"))
    assert hash(_One(3)) == hash(_OneDataclass(3)) == hash((3,))
    assert repr(_One(3)) == "_One(value=3)" and _One.__match_args__ == ("value",)
    assert _Box([1], note="a") == _Box([1], note="b")  # note: compare=False
    assert repr(_Box([1], "hidden")) == "_Box(items=[1])" == repr(_BoxDataclass([1], "hidden")).replace("Dataclass", "")
    assert _Box.__hash__ is None and not hasattr(_Box, "items")  # a default_factory leaves no class attribute
    assert _Box.note == "" and _BoxDataclass.note == ""
    assert [(spec.name, spec.repr, spec.compare) for spec in dataclasses.fields(_Box)] == [
        (spec.name, spec.repr, spec.compare) for spec in dataclasses.fields(_BoxDataclass)]
    assert not dataclasses.is_dataclass(Record) and not dataclasses.is_dataclass(FrozenRecord)
    with pytest.raises(AttributeError):
        Record.__dataclass_fields__  # noqa: B018


def test_a_value_holding_itself_shows_as_dataclasses_does():
    box = _Box()
    box.items.append(box)
    boxed = _BoxDataclass()
    boxed.items.append(boxed)
    assert repr(box) == "_Box(items=[...])" == repr(boxed).replace("Dataclass", "")


def test_a_subclass_of_a_record_is_a_plain_subclass_as_of_a_dataclass():
    class Sub(Usage):
        extra_note: str = "x"  # not a field: the subclass is not decorated

    @dataclasses.dataclass(frozen=True)
    class Base:
        prompt_tokens: int = 0

    class SubOfDataclass(Base):
        extra_note: str = "x"

    for sub, base in ((Sub, Usage), (SubOfDataclass, Base)):
        value = sub(1)
        assert dataclasses.fields(sub) == dataclasses.fields(base)
        value.other = 2  # a frozen dataclass lets its undecorated subclass set other names
        assert value.other == 2
        with pytest.raises(dataclasses.FrozenInstanceError):
            value.prompt_tokens = 5
        assert value != base(1)  # equality needs the same class
    assert repr(Sub(1)) == "Usage(prompt_tokens=1, completion_tokens=0, total_tokens=0)"  # Usage's own repr


def test_the_first_introspection_from_many_threads_at_once_makes_one_dataclass():
    code = """
        import threading, dataclasses
        from multi_llm_orchestrator.types import Completion
        start, seen = threading.Barrier(8), []
        def ask():
            start.wait()
            seen.append(dataclasses.fields(Completion))
        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads: thread.start()
        for thread in threads: thread.join()
        print(len(seen), len({id(s[0]) for s in seen}), len(seen[0]))
    """
    assert run_fresh(code).split() == ["8", "1", "10"]


def test_a_provider_import_runs_no_dataclass_machinery_until_a_caller_asks():
    """``import dataclasses`` is left out of a provider's import; building, comparing,
    hashing and showing values does not need it; the first introspection loads it and
    makes the class a dataclass then (``vars(cls)`` gains ``__dataclass_fields__``)."""
    code = """
        import sys
        import multi_llm_orchestrator.providers.openai
        from multi_llm_orchestrator.types import Completion, Message, Usage, GenerationParams
        from multi_llm_orchestrator.config import ProviderConfig
        from multi_llm_orchestrator.providers.base import EmbeddingLimits
        completion = Completion("hi", "p", "m", Usage(1, 2, 3))
        assert completion == Completion("hi", "p", "m", Usage(1, 2, 3))
        repr(completion), hash(Message("user", "hi")), hash(EmbeddingLimits(1, 2)), repr(GenerationParams(0.5))
        print("dataclasses" in sys.modules, "__dataclass_fields__" in vars(Completion))
        try:
            Usage().prompt_tokens = 1
        except AttributeError as exc:  # a FrozenInstanceError: raising it imports dataclasses
            print(type(exc).__name__, "__dataclass_fields__" in vars(Usage))
        import dataclasses
        print(dataclasses.is_dataclass(Completion), "__dataclass_fields__" in vars(Completion),
              [f.name for f in dataclasses.fields(completion)][:3], ProviderConfig.__dataclass_params__.frozen)
    """
    assert run_fresh(code).splitlines() == ["False False", "FrozenInstanceError False",
                                        "True True ['text', 'provider', 'model'] False"]


if __name__ == "__main__":  # print GOLDEN from the code checked out
    print(json.dumps({name: describe(name) for name in CLASSES}, indent=1, ensure_ascii=False))

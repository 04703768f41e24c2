"""dataclasses-json is imported only when something is serialised or parsed from a
configuration; the lazy methods behave (and are called) as dataclasses-json's own."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap

import pytest

from multi_llm_orchestrator import Completion, GenerationParams, ProviderConfig
from multi_llm_orchestrator.configuration import RouterConfig
from multi_llm_orchestrator.types import Attempt, Message, Usage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_fresh(code: str) -> str:
    """``code`` in a fresh interpreter (nothing imported yet); its stdout."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_routing_never_imports_dataclasses_json_and_serialising_does():
    out = run_fresh("""
        import sys
        from multi_llm_orchestrator import MockProvider, ProviderConfig, Router
        import multi_llm_orchestrator.providers.openai, multi_llm_orchestrator.configuration
        router = Router()
        router.add_provider(MockProvider(ProviderConfig(name="m", extra={"delay": 0})))
        completion = router.complete("hi")
        list(router.route_stream("hi"))
        print("dataclasses_json" in sys.modules, "marshmallow" in sys.modules)
        data = completion.to_dict()
        from dataclasses_json import DataClassJsonMixin
        print("dataclasses_json" in sys.modules, data["provider"], isinstance(completion, DataClassJsonMixin))
    """)
    assert out.split() == ["False", "False", "True", "m", "True"]


def test_parsing_a_configuration_imports_it():
    out = run_fresh("""
        import sys
        from multi_llm_orchestrator.configuration import RouterConfig
        print("dataclasses_json" in sys.modules)
        config = RouterConfig.from_dict({"providers": [{"type": "mock", "name": "m"}]})
        print("dataclasses_json" in sys.modules, config.providers[0].config.name)
    """)
    assert out.split() == ["False", "True", "m"]


def test_classes_are_dataclasses_json_mixins_when_it_was_imported_first():
    out = run_fresh("""
        import dataclasses_json
        from multi_llm_orchestrator import Completion, ProviderConfig
        print(issubclass(Completion, dataclasses_json.DataClassJsonMixin),
              issubclass(ProviderConfig, dataclasses_json.DataClassJsonMixin))
    """)
    assert out.split() == ["True", "True"]


def _lazy_methods():
    """(class, method) pairs served by the lazy mixin (not the class's own overrides,
    which were overrides of dataclasses-json's methods before too)."""
    from multi_llm_orchestrator.jsonable import LazyJsonMixin

    for cls in (Completion, Message, Usage, GenerationParams, ProviderConfig, RouterConfig):
        for name in ("to_json", "from_json", "from_dict", "to_dict", "schema"):
            if inspect.getattr_static(cls, name) is LazyJsonMixin.__dict__[name]:
                yield cls, name


@pytest.mark.parametrize("cls,name", list(_lazy_methods()))
def test_signatures_are_dataclasses_jsons(cls, name):
    from dataclasses_json import DataClassJsonMixin

    ours = inspect.signature(getattr(cls, name)).parameters
    theirs = inspect.signature(getattr(DataClassJsonMixin, name)).parameters
    assert [(p.name, p.kind, p.default) for p in ours.values()] == [
        (p.name, p.kind, p.default) for p in theirs.values()
    ]


# marshmallow warns that it has no field type for the postponed annotations ("int"):
# dataclasses-json's schema() did so before the import was made lazy.
@pytest.mark.filterwarnings("ignore:Unknown type:UserWarning")
def test_round_trips_through_dict_and_json():
    completion = Completion(
        text="Привет", provider="p", model="m", usage=Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
        attempts=[Attempt("p", "ok", 0.5)],
    )
    data = completion.to_dict()
    assert data["usage"]["total_tokens"] == 7 and data["attempts"][0]["outcome"] == "ok"
    assert Completion.from_dict(data) == completion
    text = completion.to_json(ensure_ascii=False, sort_keys=True)
    assert "Привет" in text and json.loads(text)["text"] == "Привет"
    assert Completion.from_json(text) == completion
    message = Message(role="user", content="hi")
    assert Message.from_dict(message.to_dict()) == message
    usage = Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)
    assert Usage.schema().dump(usage)["total_tokens"] == 3


def test_provider_config_keeps_its_field_metadata():
    config = ProviderConfig(name="p", model="m", api_key="sk-secret-value-123", budget={"limit": 1.5})
    data = config.to_dict()
    assert "api_key" not in data and "sk-secret" not in config.to_json()
    assert data["budget"] == config.budget and config.budget["limit"] == 1.5
    again = ProviderConfig.from_dict(data)
    assert again.name == "p" and again.api_key is None and again.budget == config.budget  # decoder _as_is: kept as given

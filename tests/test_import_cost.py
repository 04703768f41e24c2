"""What an import loads: the package's names are imported on first use (PEP 562), and a
provider module brings only what a provider needs, not the Router and its machinery.

Speed itself is measured in benchmarks/import_time.py; these tests pin which modules
get loaded, which is what the speed depends on."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import pytest

import multi_llm_orchestrator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Loaded by the Router, the cache, budgets, admission, tools, configuration files...
#: never by a provider module used on its own, nor by ``import multi_llm_orchestrator``.
ROUTER_SIDE = [
    "multi_llm_orchestrator.router", "multi_llm_orchestrator.calls", "multi_llm_orchestrator.hedging",
    "multi_llm_orchestrator.cache", "multi_llm_orchestrator.budgets", "multi_llm_orchestrator.limits",
    "multi_llm_orchestrator.admission", "multi_llm_orchestrator.state", "multi_llm_orchestrator.redis_state",
    "multi_llm_orchestrator.display", "multi_llm_orchestrator.health", "multi_llm_orchestrator.strategies",
    "multi_llm_orchestrator.embeddings", "multi_llm_orchestrator.tool_schema", "multi_llm_orchestrator.tool_loop",
    "multi_llm_orchestrator.configuration", "multi_llm_orchestrator.planning", "multi_llm_orchestrator.auth",
    "multi_llm_orchestrator.providers.mock", "concurrent.futures", "uuid", "platform",
    "dataclasses_json", "marshmallow", "redis",
]


def loaded_after(statement: str) -> dict:
    """Run ``statement`` in a fresh interpreter; which of ROUTER_SIDE (and a few other
    modules) it loaded."""
    watched = ROUTER_SIDE + ["requests", "urllib3", "dataclasses", "hashlib", "html", "datetime", "multi_llm_orchestrator.types",
                             "multi_llm_orchestrator.providers.openai"]
    code = f"""
        import json, sys
        {statement}
        print(json.dumps({{name: name in sys.modules for name in {watched!r}}}))
    """
    return json.loads(run_python(textwrap.dedent(code)))


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (this checkout first on the path); its stdout."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_the_package_loads_no_submodule_and_no_dependency():
    loaded = loaded_after("import multi_llm_orchestrator")
    assert [name for name, present in loaded.items() if present] == []


@pytest.mark.parametrize("provider", ["openai", "gigachat", "yandexgpt", "ollama"])
def test_a_provider_module_does_not_load_the_router_side(provider):
    loaded = loaded_after(f"import multi_llm_orchestrator.providers.{provider}")
    assert loaded["requests"] and loaded["multi_llm_orchestrator.types"]  # it did import what it needs
    # Token providers need the TokenCache.
    expected_extra = {"multi_llm_orchestrator.auth"} if provider in ("gigachat", "yandexgpt") else set()
    assert {name for name in ROUTER_SIDE if loaded[name]} == expected_extra
    assert loaded["multi_llm_orchestrator.providers.openai"] == (provider == "openai")  # not its siblings
    # Nor dataclasses (with inspect, ast, dis): its value types become dataclasses when asked (records.py).
    assert not loaded["dataclasses"]


def test_one_name_loads_only_its_own_modules():
    loaded = loaded_after("from multi_llm_orchestrator import ConfigurationError, Message")
    assert loaded["multi_llm_orchestrator.types"] and not loaded["requests"]
    assert not any(loaded[name] for name in ROUTER_SIDE)


def test_the_router_still_loads_lazily_what_only_some_calls_need():
    loaded = loaded_after("from multi_llm_orchestrator import MockProvider, ProviderConfig, Router\n"
                          "        Router().add_provider(MockProvider(ProviderConfig(name='m')))")
    assert loaded["multi_llm_orchestrator.router"] and loaded["multi_llm_orchestrator.providers.mock"]
    for name in ("requests", "dataclasses_json", "marshmallow", "redis", "uuid", "platform", "hashlib", "html",
                 "datetime", "multi_llm_orchestrator.redis_state", "multi_llm_orchestrator.configuration"):
        assert not loaded[name], name


def test_every_name_in_all_resolves_to_the_object_of_its_module():
    assert len(multi_llm_orchestrator.__all__) == len(set(multi_llm_orchestrator.__all__))
    for name in multi_llm_orchestrator.__all__:
        if name == "RedisState":
            continue  # needs the optional redis-py; checked below
        value = getattr(multi_llm_orchestrator, name)
        if name == "__version__":
            assert isinstance(value, str)
            continue
        module = sys.modules[value.__module__]
        assert getattr(module, name) is value, name
    assert multi_llm_orchestrator.Router.__module__ == "multi_llm_orchestrator.router"


def test_star_import_and_from_import_give_every_public_name():
    out = run_python("from multi_llm_orchestrator import *; from multi_llm_orchestrator import Router, "
                     "RedisState, ToolLoopError, run_tools; import multi_llm_orchestrator as m; "
                     "missing = [n for n in m.__all__ if n not in globals()]; print(missing, Router is m.Router)")
    assert out.split() == ["[]", "True"]


def test_redis_state_resolves_to_the_class_of_its_module():
    from multi_llm_orchestrator.redis_state import RedisState

    assert multi_llm_orchestrator.RedisState is RedisState


def test_unknown_names_raise_attribute_error_and_dir_lists_the_lazy_names():
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
        multi_llm_orchestrator.NoSuchThing  # noqa: B018
    for odd in ("no.such", "providers.base", "", "__wrapped__"):
        assert not hasattr(multi_llm_orchestrator, odd)
    with pytest.raises(ImportError):
        exec("from multi_llm_orchestrator import NoSuchThing", {})
    listed = dir(multi_llm_orchestrator)
    assert set(multi_llm_orchestrator.__all__) <= set(listed)
    assert "types" not in multi_llm_orchestrator.__all__


def test_the_provider_package_resolves_its_lazy_classes():
    from multi_llm_orchestrator import providers

    for name in providers.__all__:
        value = getattr(providers, name)
        assert getattr(sys.modules[value.__module__], name) is value, name
    with pytest.raises(AttributeError):
        providers.NoSuchProvider  # noqa: B018


def test_value_classes_are_complete_frozen_dataclasses():
    """(Every type, every property: tests/test_records.py.)"""
    from multi_llm_orchestrator.types import Completion, GenerationParams, Message, Usage

    message = Message("user", "hi")
    assert message == Message(role="user", content="hi") and hash(message) == hash(Message("user", "hi"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.content = "changed"  # type: ignore[misc]
    assert dataclasses.replace(message, content="bye").content == "bye"
    assert GenerationParams(temperature=0.5) == GenerationParams(0.5)
    with pytest.raises(TypeError):
        Usage(1, 2, 3, unknown=1)  # type: ignore[call-arg]
    completion = Completion("text", "p", "m")
    assert completion.attempts == [] and completion.attempts is not Completion("t", "p", "m").attempts
    assert json.loads(completion.to_json())["text"] == "text"


def test_type_checkers_see_every_lazy_name_from_the_module_that_defines_it():
    """The ``if TYPE_CHECKING:`` imports (what IDEs and type checkers read) name exactly
    the lazy names, each from the module ``__getattr__`` imports it from."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(multi_llm_orchestrator))
    block = next(node for node in tree.body if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING")
    seen = {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert seen == dict(multi_llm_orchestrator._EXPORTS)
    assert set(multi_llm_orchestrator.__all__) == set(seen) | {"__version__"}


def test_submodules_stay_attributes_of_the_package_as_when_it_imported_them_all():
    out = run_python("import multi_llm_orchestrator as m, sys; "
                     "print(m.errors.ProviderError is m.ProviderError, m.providers.base.BaseProvider is m.BaseProvider, "
                     "'multi_llm_orchestrator.router' in sys.modules, hasattr(m, 'no_such_module'), hasattr(m, '_private'))")
    assert out.split() == ["True", "True", "False", "False", "False"]

"""The simonw/llm plugin, through llm's own Python API (and once through its CLI): the
entry point registers the configured providers and "router", prompts route through the
configuration file, streaming and conversations work, errors are llm ModelErrors."""

from __future__ import annotations

import json
import threading

import llm
import pytest
from click.testing import CliRunner

from multi_llm_orchestrator import llm_plugin
from multi_llm_orchestrator.providers import MockProvider, register_provider


class SpyMock(MockProvider):
    """A mock that keeps every call's messages and params (registered as type "spy")."""

    calls: list = []
    threads: list = []

    def complete(self, messages, params=None, *, timeout=None):
        SpyMock.threads.append(threading.current_thread())
        SpyMock.calls.append((self.name, list(messages), params))
        return super().complete(messages, params, timeout=timeout)

    def stream(self, messages, params=None, *, timeout=None):
        SpyMock.threads.append(threading.current_thread())
        SpyMock.calls.append((self.name, list(messages), params))
        return super().stream(messages, params, timeout=timeout)


register_provider("spy", SpyMock)


@pytest.fixture(autouse=True)
def llm_home(tmp_path, monkeypatch):
    """llm keeps its logs and keys under LLM_USER_PATH: a fresh one per test."""
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm"))
    SpyMock.calls.clear()
    SpyMock.threads.clear()
    yield
    llm_plugin.close_routers()


@pytest.fixture
def config(tmp_path, monkeypatch):
    path = tmp_path / "router.json"
    path.write_text(json.dumps({
        "strategy": "first-available",
        "providers": [
            {"type": "spy", "name": "local", "extra": {"delay": 0}},
            {"type": "mock", "name": "down", "model": "mock-unavailable", "extra": {"delay": 0}},
        ],
    }))
    monkeypatch.setenv("MULTI_LLM_ORCHESTRATOR_CONFIG", str(path))
    return path


def test_router_and_each_provider_are_llm_models(config):
    ids = {model.model_id: model for model in llm.get_models()}
    assert {"router", "local", "down"} <= set(ids)
    assert isinstance(ids["router"], llm_plugin.RouterModel)
    assert llm.get_model("mlo/local").model_id == "local"  # the prefixed alias
    assert llm.get_model("mlo/router").model_id == "router"


def test_a_prompt_routes_through_the_configuration(config):
    response = llm.get_model("router").prompt("What is Python?")
    assert response.text() == "Mock response to: What is Python?"
    assert response.response_json["provider"] == "local"
    assert response.response_json["attempts"][0]["outcome"] == "ok"
    assert (response.input_tokens, response.output_tokens) == (3, 6)


def test_streaming_yields_chunks_as_they_come(config):
    chunks = list(llm.get_model("router").prompt("tell me a story", stream=True))
    assert len(chunks) == 7 and "".join(chunks) == "Mock response to: tell me a story"


def test_a_conversation_sends_the_history_and_the_system_prompt(config):
    conversation = llm.get_model("router").conversation()
    conversation.prompt("first question", system="Answer briefly.").text()
    assert conversation.prompt("second question").text() == "Mock response to: second question"
    _, messages, _ = SpyMock.calls[-1]
    assert [(m.role, m.content) for m in messages] == [
        ("system", "Answer briefly."),
        ("user", "first question"),
        ("assistant", "Mock response to: first question"),
        ("user", "second question"),
    ]


def test_options_become_generation_params(config):
    response = llm.get_model("router").prompt("one two three", stream=False, temperature=0.2, max_tokens=2, top_p=0.5)
    assert response.text() == "Mock response"  # max_tokens=2 words from the mock
    _, _, params = SpyMock.calls[-1]
    assert (params.temperature, params.max_tokens, params.top_p) == (0.2, 2, 0.5)


def test_a_bad_option_is_a_model_error_saying_what_is_valid(config):
    with pytest.raises(llm.ModelError, match="temperature"):
        llm.get_model("router").prompt("hi", temperature=7).text()


def test_a_provider_model_is_pinned_to_that_provider(config):
    with pytest.raises(llm.ModelError, match="ProviderUnavailableError|AllProvidersFailedError") as failure:
        llm.get_model("down").prompt("hi").text()
    assert "Mock service unavailable" in str(failure.value)
    assert SpyMock.calls == []  # no fallback to "local": the model is that provider
    response = llm.get_model("local").prompt("hi")
    assert response.text() == "Mock response to: hi" and response.response_json["provider"] == "local"


def test_a_configuration_that_does_not_load_fails_each_prompt_with_the_reason(tmp_path, monkeypatch):
    broken = tmp_path / "broken.json"
    broken.write_text('{"providers": [{"type": "nonsense"}]}')
    monkeypatch.setenv("MULTI_LLM_ORCHESTRATOR_CONFIG", str(broken))
    assert "router" in {model.model_id for model in llm.get_models()}  # llm itself still works
    with pytest.raises(llm.ModelError, match="unknown type 'nonsense'; valid types: .*mock"):
        llm.get_model("router").prompt("hi").text()


def test_without_a_configuration_the_clis_three_mocks_answer(monkeypatch):
    monkeypatch.delenv("MULTI_LLM_ORCHESTRATOR_CONFIG", raising=False)
    assert {"router", "mock-1", "mock-2", "mock-3"} <= {model.model_id for model in llm.get_models()}
    assert llm.get_model("mock-2").prompt("hi").text() == "Mock response to: hi"


def test_the_llm_command_line_runs_a_prompt_and_continues_the_conversation(config):
    from llm.cli import cli

    runner = CliRunner()
    first = runner.invoke(cli, ["-m", "local", "hello there"])
    assert first.exit_code == 0, first.output
    assert first.output.strip() == "Mock response to: hello there"
    follow_up = runner.invoke(cli, ["-c", "and again"])
    assert follow_up.exit_code == 0 and follow_up.output.strip() == "Mock response to: and again"
    _, messages, _ = SpyMock.calls[-1]
    assert [m.role for m in messages] == ["user", "assistant", "user"]
    failed = runner.invoke(cli, ["-m", "down", "hi"])
    assert failed.exit_code == 1 and "Mock service unavailable" in failed.output


def test_the_async_api_runs_the_router_in_a_thread(config):
    import asyncio

    async def main():
        model = llm.get_async_model("router")
        whole = await model.prompt("hi there", stream=False).text()
        chunks = [chunk async for chunk in model.prompt("tell me more")]
        return threading.current_thread(), whole, chunks

    loop_thread, whole, chunks = asyncio.run(main())
    assert whole == "Mock response to: hi there"
    assert "".join(chunks) == "Mock response to: tell me more" and len(chunks) == 6
    assert len(SpyMock.threads) == 2 and loop_thread not in SpyMock.threads
    with pytest.raises(llm.ModelError, match="Mock service unavailable"):
        asyncio.run(llm.get_async_model("down").prompt("hi").text())

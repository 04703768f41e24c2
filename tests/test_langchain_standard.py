"""LangChain's own standard test suite (langchain-tests) run against ChatRouter and
RouterEmbeddings.

Three integration runs: a Router over a MockProvider and a ScriptedProvider (a small
deterministic tool-using model, tests/fakes/scripted.py: the mock answers text only, so
calls with tools or a response format are planned onto the scripted one, as they would be
onto a capable provider), the same Router with every call pinned to the scripted provider,
and a Router whose provider talks to the loopback OpenAI-compatible server over real
sockets (streaming, usage chunk and all).

``invoke(..., model=...)`` is the Router's per-call ``model=``, which needs the call pinned
to one provider (a model name means something to one provider only). The
*_with_model_override tests run in TestChatRouterPinnedOverMocks (the same suite through
``ChatRouter(router=..., provider="scripted")``; the scripted provider answers as whatever
model it is asked to run) and over the loopback server (a Router of one provider needs no
pin; the server serves a second model).

Skips that remain, each with its reason (the suite skips them itself, from the flags
below):
- test_init_from_env runs (MULTI_LLM_ORCHESTRATOR_CONFIG); test_serdes is skipped: a
  ChatRouter holds a live Router (sessions, threads, breaker state), which LangChain's
  serializer cannot rebuild, so ``is_lc_serializable()`` is False.
- In TestChatRouterOverMocks (unpinned, two providers) the *_with_model_override tests:
  there ``model=`` without a pin is refused with a ConfigurationError by design, never sent
  to whichever provider the Router picks (test_langchain.py checks the refusal).
- image, PDF, audio, video and Anthropic-format inputs: the Router's providers take text.
- test_stream_time: needs VCR cassettes of a real API; the loopback run covers streaming.
- Over the loopback server, the tool-calling tests: the fake server answers text (and
  JSON for a response_format, so the structured-output and JSON-mode tests do run over the
  wire) but never decides on a tool call; they run over the scripted model in
  TestChatRouterOverMocks.
"""

from __future__ import annotations

import json
from typing import Any, Dict

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests, EmbeddingsIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests, EmbeddingsUnitTests

from multi_llm_orchestrator import Router
from multi_llm_orchestrator.langchain import ChatRouter, RouterEmbeddings
from multi_llm_orchestrator.providers import OpenAICompatibleProvider, ProviderConfig

from fakes import FakeOpenAIServer
from fakes.mocks import mock, router_with
from fakes.scripted import ScriptedProvider, scripted_reply

MOCK_ROUTER = router_with(mock("mock-a"), ScriptedProvider(ProviderConfig(name="scripted")))
#: The models the *_with_model_override tests ask for (the scripted provider's default is
#: "scripted-1"; the loopback server's "fake-model", and it serves this second one too).
OVERRIDE_MODEL = "scripted-2"
LOOPBACK_OVERRIDE_MODEL = "fake-model-large"


class TestChatRouterUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type:
        return ChatRouter

    @property
    def chat_model_params(self) -> Dict[str, Any]:
        return {"router": MOCK_ROUTER}

    @property
    def standard_chat_model_params(self) -> Dict[str, Any]:
        # The suite adds api_key="test" for integrations that take a key. ChatRouter has no
        # key of its own (each provider's ProviderConfig holds one) and refuses unknown
        # arguments rather than dropping them, so the key is left out; the other standard
        # parameters (temperature, max_tokens, timeout, stop, max_retries) are all taken.
        params = dict(super().standard_chat_model_params)
        params.pop("api_key")
        return params

    @pytest.fixture(autouse=True)
    def config_file(self, tmp_path):
        path = tmp_path / "router.json"
        path.write_text(json.dumps({"providers": [{"type": "mock", "name": "from-env", "extra": {"delay": 0}}]}))
        self.config_path = str(path)

    @property
    def init_from_env_params(self):
        # ChatRouter() with no router reads the file $MULTI_LLM_ORCHESTRATOR_CONFIG names.
        return {"MULTI_LLM_ORCHESTRATOR_CONFIG": self.config_path}, {}, {"config": self.config_path}

    @property
    def returns_usage_metadata(self) -> bool:
        return True


class TestChatRouterOverMocks(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type:
        return ChatRouter

    @property
    def chat_model_params(self) -> Dict[str, Any]:
        return {"router": MOCK_ROUTER}

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return False  # unpinned over two providers: see the module docstring


class TestChatRouterPinnedOverMocks(TestChatRouterOverMocks):
    """The same suite through ``ChatRouter(router=..., provider="scripted")``: every call
    pinned (the mock shows as a skipped attempt), so ``model=`` per call is taken."""

    @property
    def chat_model_params(self) -> Dict[str, Any]:
        return {"router": MOCK_ROUTER, "provider": "scripted"}

    @property
    def supports_model_override(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return OVERRIDE_MODEL


@pytest.fixture(scope="class")
def loopback_router(request):
    with FakeOpenAIServer(reply=scripted_reply, models=["fake-model", LOOPBACK_OVERRIDE_MODEL]) as server:
        router = Router(timeout=30)
        router.add_provider(OpenAICompatibleProvider(
            ProviderConfig(name="loopback", model=server.model, base_url=server.url, api_key="sk-test")
        ))
        request.cls.router = router
        yield
        router.close()


@pytest.mark.usefixtures("loopback_router")
class TestChatRouterOverLoopbackServer(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type:
        return ChatRouter

    @property
    def chat_model_params(self) -> Dict[str, Any]:
        return {"router": self.router}

    @property
    def has_tool_calling(self) -> bool:
        return False  # see the module docstring

    @property
    def has_structured_output(self) -> bool:
        return True  # json_schema and json_mode (the default method is json_schema)

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return LOOPBACK_OVERRIDE_MODEL


class TestRouterEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type:
        return RouterEmbeddings

    @property
    def embedding_model_params(self) -> Dict[str, Any]:
        return {"router": MOCK_ROUTER}

    @pytest.fixture(autouse=True)
    def config_file(self, tmp_path):
        path = tmp_path / "router.json"
        path.write_text(json.dumps({"providers": [{"type": "mock", "name": "from-env", "extra": {"delay": 0}}]}))
        self.config_path = str(path)

    @property
    def init_from_env_params(self):
        return {"MULTI_LLM_ORCHESTRATOR_CONFIG": self.config_path}, {}, {"config": self.config_path}


class TestRouterEmbeddingsOverMocks(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type:
        return RouterEmbeddings

    @property
    def embedding_model_params(self) -> Dict[str, Any]:
        return {"router": MOCK_ROUTER}

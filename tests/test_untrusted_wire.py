"""Wire values that cannot be trusted (issue 11): token counts that are not counts,
answers whose content is not text, redirects. Each is a typed error or a value treated
as unknown, never a raw exception, never a negative or infinite count in ``stats()``."""

from __future__ import annotations

import json
import logging

import pytest
import responses

from multi_llm_orchestrator import Router
from multi_llm_orchestrator.errors import AllProvidersFailedError, ProviderUnavailableError, ResponseFormatError
from multi_llm_orchestrator.providers import MockProvider
from multi_llm_orchestrator.providers.base import BaseProvider, ProviderConfig
from multi_llm_orchestrator.providers.ollama import OllamaProvider
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider
from multi_llm_orchestrator.providers.yandexgpt import YandexGPTProvider
from multi_llm_orchestrator.types import Completion, StreamEnd, TextStream, Usage

OPENAI = "http://llm.test/v1"
OLLAMA = "http://ollama.test"
YANDEX = "http://yandex.test"

# Raw JSON texts: 1e400 parses as float('inf'), 1e13 is above any real answer.
BAD_COUNTS = ["1e400", "-1e400", "-5000", '"abc"', "true", "2.5", "1e13", '"-3"', '"²"', "[1]", '{"n": 1}']


@pytest.fixture
def wire():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def openai_router():
    router = Router()
    router.add_provider(OpenAICompatibleProvider(ProviderConfig(name="oa", model="m", base_url=OPENAI, max_retries=0)))
    return router


def tokens_in_stats(router, name):
    provider = router.stats()["providers"][name]
    return provider["prompt_tokens"], provider["completion_tokens"], provider["total_tokens"]


# Usage ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_COUNTS)
def test_openai_usage_that_is_not_a_count_is_unknown_and_the_text_is_kept(wire, caplog, bad):
    body = '{"choices": [{"message": {"content": "Hi"}, "finish_reason": "stop"}], ' \
           f'"usage": {{"prompt_tokens": {bad}, "completion_tokens": 2}}}}'
    wire.post(OPENAI + "/chat/completions", body=body, content_type="application/json")
    caplog.set_level(logging.DEBUG, logger="multi_llm_orchestrator")
    with openai_router() as router:
        completion = router.complete("Hi")
        assert completion.text == "Hi"
        assert completion.usage == Usage()
        assert tokens_in_stats(router, "oa") == (0, 0, 0)
    assert any("usage treated as unknown" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("bad", ["1e400", "-5000", '"abc"'])
def test_openai_stream_usage_that_is_not_a_count_is_none(wire, bad):
    events = [
        '{"choices": [{"index": 0, "delta": {"content": "Hi"}}]}',
        f'{{"choices": [], "usage": {{"prompt_tokens": 1, "completion_tokens": {bad}}}}}',
    ]
    body = "".join(f"data: {event}\n\n" for event in events) + "data: [DONE]\n\n"
    wire.post(OPENAI + "/chat/completions", body=body, content_type="text/event-stream")
    with openai_router() as router:
        stream = router.route_stream("Hi")
        assert "".join(stream) == "Hi"
        assert stream.usage is None
        assert tokens_in_stats(router, "oa") == (0, 0, 0)


def test_good_counts_still_add_up(wire):
    body = {"choices": [{"message": {"content": "Hi"}}], "usage": {"prompt_tokens": 3, "completion_tokens": "4"}}
    wire.post(OPENAI + "/chat/completions", json=body)
    with openai_router() as router:
        assert router.complete("Hi").usage == Usage(3, 4, 7)
        assert tokens_in_stats(router, "oa") == (3, 4, 7)


@pytest.mark.parametrize("bad", ["1e400", "-5000", '"abc"'])
def test_ollama_usage_that_is_not_a_count_is_unknown(wire, bad):
    body = f'{{"message": {{"role": "assistant", "content": "Hi"}}, "done": true, "prompt_eval_count": {bad}, "eval_count": 3}}'
    wire.post(OLLAMA + "/api/chat", body=body, content_type="application/json")
    with OllamaProvider(ProviderConfig(name="ol", base_url=OLLAMA, max_retries=0)) as provider:
        completion = provider.complete("Hi")
        assert (completion.text, completion.usage) == ("Hi", Usage())
        stream_body = '{"message": {"content": "Hi"}, "done": false}\n' + body + "\n"
        wire.replace(responses.POST, OLLAMA + "/api/chat", body=stream_body, content_type="application/x-ndjson")
        stream = provider.stream("Hi")
        assert "".join(stream) == "HiHi" and stream.usage is None


@pytest.mark.parametrize("bad", ['"-5000"', '"1e400"', "1e400", '"99999999999999999999"'])
def test_yandexgpt_usage_that_is_not_a_count_is_unknown(wire, bad):
    body = ('{"result": {"alternatives": [{"message": {"role": "assistant", "text": "Hi"}, '
            '"status": "ALTERNATIVE_STATUS_FINAL"}], '
            f'"usage": {{"inputTextTokens": {bad}, "completionTokens": "2", "totalTokens": "3"}}}}}}')
    wire.post(YANDEX + "/foundationModels/v1/completion", body=body, content_type="application/json")
    config = ProviderConfig(name="ya", api_key="t1.token-value", folder_id="b1gfolder", base_url=YANDEX, max_retries=0)
    with YandexGPTProvider(config) as provider:
        completion = provider.complete("Hi")
    assert (completion.text, completion.usage) == ("Hi", Usage())


class UsageProvider(BaseProvider):
    """A custom provider reporting whatever usage it is given."""

    def __init__(self, usage):
        super().__init__(ProviderConfig(name="custom"))
        self.usage = usage

    def complete(self, messages, params=None, *, timeout=None):
        return Completion("ok", self.name, "m", self.usage)

    def stream(self, messages, params=None, *, timeout=None):
        return TextStream(iter(["ok", StreamEnd(self.usage)]), provider=self.name, model="m")

    def health_check(self, timeout=None):
        return True


@pytest.mark.parametrize("usage", [
    Usage(-5000, 3, -4997), Usage(10**30, 1, 10**30 + 1), Usage(float("inf"), 1, 1),
    Usage(1, 1, 2, cached_prompt_tokens=-7), Usage(1, 1, 2, reasoning_tokens=float("nan")),
])
def test_stats_never_add_implausible_counts_from_a_custom_provider(usage):
    with Router() as router:
        router.add_provider(UsageProvider(usage))
        assert router.route("Hi") == "ok"
        assert "".join(router.route_stream("Hi")) == "ok"
        assert tokens_in_stats(router, "custom") == (0, 0, 0)
        provider_stats = router.stats()["providers"]["custom"]
        assert provider_stats.get("cached_prompt_tokens", 0) == 0 and provider_stats.get("reasoning_tokens", 0) == 0


def test_usage_parse_reads_wire_strings_and_rejects_the_rest():
    assert Usage.parse(" 19 ", None) == Usage(19, 0, 19)
    assert Usage.parse(3.0, 4, "7") == Usage(3, 4, 7)
    assert Usage.parse(float("nan"), 1) is None
    assert Usage.parse("5" * 5000, 1) is None  # never handed to int()
    assert Usage.of(-1, 2) == Usage()


# Content that is not text ---------------------------------------------------------------


@pytest.mark.parametrize("content", [123, ["a", "b"], {"text": "x"}, True])
def test_ollama_content_that_is_not_a_string_is_a_response_format_error(wire, content):
    body = {"message": {"role": "assistant", "content": content}, "done": True}
    wire.post(OLLAMA + "/api/chat", json=body)
    with OllamaProvider(ProviderConfig(name="ol", base_url=OLLAMA, max_retries=0)) as provider:
        with pytest.raises(ResponseFormatError, match="not text"):
            provider.complete("Hi")
        stream_body = json.dumps({"message": {"content": content}, "done": False}) + "\n"
        wire.replace(responses.POST, OLLAMA + "/api/chat", body=stream_body, content_type="application/x-ndjson")
        with pytest.raises(ResponseFormatError, match="not text"):
            list(provider.stream("Hi"))


@pytest.mark.parametrize("content", [123, ["a"]])
def test_route_returns_str_or_raises_and_falls_back(wire, content):
    wire.post(OLLAMA + "/api/chat", json={"message": {"content": content}, "done": True})
    with Router(strategy="first-available", breaker=False) as router:
        router.add_provider(OllamaProvider(ProviderConfig(name="ol", base_url=OLLAMA, max_retries=0)))
        with pytest.raises(AllProvidersFailedError) as failure:
            router.route("Hi")
        assert isinstance(failure.value.errors[0], ResponseFormatError)
        router.add_provider(MockProvider(ProviderConfig(name="backup", extra={"delay": 0})))
        answer = router.route("Hi")
    assert isinstance(answer, str) and answer.startswith("Mock response")


class NotTextProvider(UsageProvider):
    def complete(self, messages, params=None, *, timeout=None):
        return Completion(123, self.name, "m")  # type: ignore[arg-type]

    def stream(self, messages, params=None, *, timeout=None):
        return TextStream(iter(["ok", 123]), provider=self.name, model="m")


def test_a_custom_provider_returning_non_text_is_a_typed_error():
    with Router() as router:
        router.add_provider(NotTextProvider(None))
        with pytest.raises(AllProvidersFailedError) as failure:
            router.route("Hi")
        assert isinstance(failure.value.errors[0], ResponseFormatError)
        stream = router.route_stream("Hi")
        assert next(stream) == "ok"
        with pytest.raises(ResponseFormatError, match="int, not text"):
            next(stream)


# Redirects ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_an_error_naming_status_and_host_and_is_not_followed(wire, status):
    target = "https://elsewhere.example:8443/v1/chat/completions?api_key=sk-secret-in-query"
    wire.post(OPENAI + "/chat/completions", status=status, headers={"Location": target})
    wire.get("https://elsewhere.example:8443/v1/chat/completions", json={})
    provider = OpenAICompatibleProvider(ProviderConfig(name="oa", model="m", base_url=OPENAI, max_retries=0))
    with provider, pytest.raises(ProviderUnavailableError) as failure:
        provider.complete("Hi")
    message = str(failure.value)
    assert str(status) in message and "elsewhere.example" in message
    assert "sk-secret" not in message
    assert failure.value.status_code == status and failure.value.retryable is False
    assert len(wire.calls) == 1


def test_a_relative_or_malformed_location_still_gives_a_clear_error(wire):
    wire.post(OPENAI + "/chat/completions", status=302, headers={"Location": "/login"})
    with OpenAICompatibleProvider(ProviderConfig(name="oa", model="m", base_url=OPENAI, max_retries=0)) as provider:
        with pytest.raises(ProviderUnavailableError, match="302 redirecting to http://llm.test"):
            provider.complete("Hi")
        wire.replace(responses.POST, OPENAI + "/chat/completions", status=301, headers={"Location": "http://[::1"})
        with pytest.raises(ProviderUnavailableError, match="301 redirecting to a malformed Location"):
            provider.complete("Hi")


@pytest.mark.parametrize("value", ["1e400", "-1e400", "NaN"])
def test_a_gigachat_balance_that_is_not_a_finite_number_is_a_response_format_error(wire, value):
    from multi_llm_orchestrator.providers.gigachat import GigaChatProvider

    base = "http://giga.test/api/v1"
    wire.get(base + "/balance", body=f'{{"balance": [{{"usage": "GigaChat", "value": {value}}}]}}',
             content_type="application/json")
    config = ProviderConfig(name="giga", base_url=base, extra={"access_token": "tok-0123456789"}, max_retries=0)
    with GigaChatProvider(config) as provider, pytest.raises(ResponseFormatError, match="lacks usage or value"):
        provider.balance()

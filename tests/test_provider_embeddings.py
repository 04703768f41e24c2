"""provider.embed, provider.count_tokens and provider.balance on every provider type:
exact wire bodies (``responses``), recorded GigaChat fixtures, and a loopback server for
YandexGPT's one-text-per-request fan-out (order kept, concurrency bounded)."""

from __future__ import annotations

import base64
import json
import struct
import threading
from pathlib import Path
from typing import Any, Dict

import pytest
import responses

from fakes import LoopbackServer
from multi_llm_orchestrator import (
    ConfigurationError,
    Embeddings,
    InvalidRequestError,
    MockProvider,
    NotSupportedError,
    ProviderConfig,
    ResponseFormatError,
    TokenCount,
)
from multi_llm_orchestrator.errors import AuthenticationError, RateLimitError
from multi_llm_orchestrator.providers.gigachat import GigaChatProvider
from multi_llm_orchestrator.providers.mock import mock_vector
from multi_llm_orchestrator.providers.ollama import OllamaProvider
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider
from multi_llm_orchestrator.providers.yandexgpt import YandexGPTProvider
from multi_llm_orchestrator.tokens import estimate_tokens, is_context_length_error
from multi_llm_orchestrator.types import Message

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "gigachat"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "gigachat"
GIGA_API = "https://gigachat.devices.sberbank.ru/api/v1"
GIGA_OAUTH = "https://ngw.devices.sberbank.ru:9443/api/v2/oauth"
YANDEX = "https://llm.api.cloud.yandex.net/foundationModels/v1"
OLLAMA = "http://ollama.test:11434"
OPENAI = "http://vllm.test:8000/v1"
FOLDER = "b1gfolder123"


def fixture(name: str) -> Any:
    data = (FIXTURES / name).read_bytes()
    if (SHARED / name).is_file():
        assert (SHARED / name).read_bytes() == data, f"{name} drifted from shared/fixtures"
    return json.loads(data)


def giga(**fields: Any) -> GigaChatProvider:
    fields["extra"] = {"access_token": "giga-access-token-1", **fields.get("extra", {})}
    return GigaChatProvider(ProviderConfig(name="giga", max_retries=0, **fields))


def yandex(base_url: str = "https://llm.api.cloud.yandex.net", **fields: Any) -> YandexGPTProvider:
    return YandexGPTProvider(ProviderConfig(name="yandex", api_key="t1.iam-token-abc", folder_id=FOLDER,
                                            base_url=base_url, max_retries=0, **fields))


def ollama(**fields: Any) -> OllamaProvider:
    fields.setdefault("model", "nomic-embed-text")
    return OllamaProvider(ProviderConfig(name="ollama", base_url=OLLAMA, max_retries=0, **fields))


def openai(**fields: Any) -> OpenAICompatibleProvider:
    fields.setdefault("model", "text-embedding-3-small")
    return OpenAICompatibleProvider(ProviderConfig(name="oai", base_url=OPENAI, api_key="sk-test-key-123", max_retries=0, **fields))


def sent(call: Any) -> Dict[str, Any]:
    return json.loads(call.request.body)


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


# GigaChat -------------------------------------------------------------------------------


def test_gigachat_embed_wire_order_and_usage(rsps):
    rsps.post(GIGA_API + "/embeddings", json={
        "object": "list", "model": "Embeddings",
        "data": [  # answered out of order: placed by index
            {"object": "embedding", "embedding": [0.3, 0.4], "index": 1, "usage": {"prompt_tokens": 3}},
            {"object": "embedding", "embedding": [0.1, 0.2], "index": 0, "usage": {"prompt_tokens": 2}},
        ],
    })
    result = giga().embed(["First text", "Second text"])
    assert sent(rsps.calls[0]) == {"model": "Embeddings", "input": ["First text", "Second text"]}
    assert rsps.calls[0].request.headers["Authorization"] == "Bearer giga-access-token-1"
    assert isinstance(result, Embeddings)
    assert result.vectors == [[0.1, 0.2], [0.3, 0.4]]
    assert result.usage.prompt_tokens == 5  # summed over the items: there is no top-level usage
    assert (result.provider, result.model, result.space) == ("giga", "Embeddings", "gigachat:Embeddings")


def test_gigachat_embedding_model_is_configurable_and_names_the_space(rsps):
    rsps.post(GIGA_API + "/embeddings", json={"data": [{"embedding": [1.0], "index": 0}]})
    provider = giga(embedding_model="EmbeddingsGigaR")
    provider.embed("one")
    assert sent(rsps.calls[0])["model"] == "EmbeddingsGigaR"
    assert provider.embedding_space == "gigachat:EmbeddingsGigaR"
    assert giga(embedding_space="shared-space").embedding_space == "shared-space"


def test_gigachat_count_tokens_with_the_recorded_fixture(rsps):
    rsps.post(GIGA_API + "/tokens/count", json=fixture("tokens_count.json"))
    count = giga().count_tokens("Какой-то текст длиной в 36 символов")
    assert count == 7 and isinstance(count, TokenCount) and count.estimated is False
    assert sent(rsps.calls[0]) == {"model": "GigaChat", "input": ["Какой-то текст длиной в 36 символов"]}


def test_gigachat_count_tokens_adds_up_every_message(rsps):
    rsps.post(GIGA_API + "/tokens/count", json=[
        {"object": "tokens", "tokens": 2, "characters": 10}, {"object": "tokens", "tokens": 5, "characters": 11}])
    count = giga().count_tokens([Message("system", "Be brief"), Message("user", "Second text")])
    assert count == 7
    assert sent(rsps.calls[0])["input"] == ["Be brief", "Second text"]


@pytest.mark.parametrize("body", [{"tokens": 3}, [], [{"tokens": "3"}], [{"object": "tokens"}], [{"tokens": -1}]])
def test_gigachat_count_tokens_bad_bodies_are_typed(rsps, body):
    rsps.post(GIGA_API + "/tokens/count", json=body)
    with pytest.raises(ResponseFormatError):
        giga().count_tokens("hi")


def test_gigachat_balance_with_the_recorded_fixture(rsps):
    rsps.get(GIGA_API + "/balance", json=fixture("balance.json"))
    assert giga().balance() == {"embeddings": 9999967, "GigaChat-Pro": 991490, "GigaChat-Max": 50000, "GigaChat": 900000}


def test_gigachat_balance_403_means_pay_as_you_go_not_an_auth_failure(rsps):
    rsps.get(GIGA_API + "/balance", json={"status": 403, "message": "Permission denied"}, status=403)
    with pytest.raises(NotSupportedError, match="prepaid") as info:
        giga().balance()
    assert isinstance(info.value, NotImplementedError) and info.value.operation == "balance"


def test_gigachat_balance_401_stays_an_auth_error(rsps):
    rsps.get(GIGA_API + "/balance", json={"status": 401, "message": "Unauthorized"}, status=401)
    with pytest.raises(AuthenticationError):
        giga().balance()


@pytest.mark.parametrize("body", [{}, {"balance": {}}, {"balance": [{"usage": "GigaChat"}]}, {"balance": [{"value": 1}]}])
def test_gigachat_balance_bad_bodies_are_typed(rsps, body):
    rsps.get(GIGA_API + "/balance", json=body)
    with pytest.raises(ResponseFormatError):
        giga().balance()


# Bad embedding bodies, every OpenAI-shaped parser ---------------------------------------


BAD_DATA_BODIES = [
    {"object": "list"},                                                        # no data
    {"data": {}},                                                              # not a list
    {"data": [{"embedding": [1.0], "index": 0}]},                              # one vector for two texts
    {"data": [{"embedding": [1.0], "index": 0}, {"embedding": [2.0], "index": 0}]},  # duplicate index
    {"data": [{"embedding": [1.0], "index": 0}, {"embedding": [2.0], "index": 5}]},  # index out of range
    {"data": [{"embedding": [1.0], "index": 0}, {"embedding": [], "index": 1}]},     # empty vector
    {"data": [{"embedding": [1.0], "index": 0}, {"embedding": ["x"], "index": 1}]},  # not a number
    {"data": [{"embedding": [1.0], "index": 0}, {"embedding": [True], "index": 1}]},  # a bool
    {"data": [{"embedding": [1.0], "index": 0}, {"embedding": None, "index": 1}]},    # missing
    {"data": [{"embedding": [1.0], "index": 0}, {"embedding": [1.0, 2.0], "index": 1}]},  # ragged
    {"data": [{"embedding": [1.0], "index": 0}, "oops"]},                      # not an object
    {"data": [{"embedding": [1.0], "index": 0}, {"embedding": "@@notbase64", "index": 1}]},
]


@pytest.mark.parametrize("body", BAD_DATA_BODIES)
def test_gigachat_bad_embedding_bodies_are_typed(rsps, body):
    rsps.post(GIGA_API + "/embeddings", json=body)
    with pytest.raises(ResponseFormatError):
        giga().embed(["a", "b"])


@pytest.mark.parametrize("body", BAD_DATA_BODIES)
def test_openai_bad_embedding_bodies_are_typed(rsps, body):
    rsps.post(OPENAI + "/embeddings", json=body)
    with pytest.raises(ResponseFormatError):
        openai().embed(["a", "b"])


def test_not_json_is_typed(rsps):
    rsps.post(OPENAI + "/embeddings", body=b"<html>gateway</html>")
    with pytest.raises(ResponseFormatError):
        openai().embed(["a"])


# OpenAI-compatible ------------------------------------------------------------------------


def test_openai_embed_wire_with_dimensions_and_index_order(rsps):
    rsps.post(OPENAI + "/embeddings", json={
        "object": "list", "model": "text-embedding-3-small",
        "data": [{"object": "embedding", "index": 1, "embedding": [0.5]},
                 {"object": "embedding", "index": 0, "embedding": [0.25]}],
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    })
    provider = openai(extra={"dimensions": 512})
    result = provider.embed(["a", "b"])
    assert sent(rsps.calls[0]) == {"model": "text-embedding-3-small", "input": ["a", "b"],
                                   "encoding_format": "float", "dimensions": 512}
    assert rsps.calls[0].request.headers["Authorization"] == "Bearer sk-test-key-123"
    assert result.vectors == [[0.25], [0.5]] and result.usage.prompt_tokens == 4
    assert provider.embedding_space == "openai:text-embedding-3-small:512"


def test_openai_embedding_model_separate_from_chat_model(rsps):
    rsps.post(OPENAI + "/embeddings", json={"data": [{"index": 0, "embedding": [1.0]}]})
    openai(model="qwen-chat", embedding_model="bge-m3").embed("x")
    assert sent(rsps.calls[0])["model"] == "bge-m3"


def test_openai_base64_vectors_are_decoded(rsps):
    packed = base64.b64encode(struct.pack("<3f", 0.5, -1.0, 2.0)).decode()
    rsps.post(OPENAI + "/embeddings", json={"data": [{"index": 0, "embedding": packed}]})
    assert openai().embed("x").vectors == [[0.5, -1.0, 2.0]]


def test_openai_error_under_200_and_http_errors_are_typed(rsps):
    rsps.post(OPENAI + "/embeddings", json={"error": {"message": "boom", "code": 500}})
    rsps.post(OPENAI + "/embeddings", status=429, json={"error": {"message": "slow down", "type": "requests"}})
    with pytest.raises(Exception) as first:
        openai().embed("x")
    assert type(first.value).__name__ == "ProviderUnavailableError"
    with pytest.raises(RateLimitError):
        openai().embed("x")


# Ollama ----------------------------------------------------------------------------------


def test_ollama_embed_wire(rsps):
    rsps.post(OLLAMA + "/api/embed", json={
        "model": "nomic-embed-text", "embeddings": [[0.1, 0.2], [0.3, 0.4]], "prompt_eval_count": 7})
    provider = ollama(extra={"dimensions": 2, "truncate": False, "keep_alive": "5m"})
    result = provider.embed(["a", "b"])
    assert sent(rsps.calls[0]) == {"model": "nomic-embed-text", "input": ["a", "b"], "dimensions": 2,
                                   "truncate": False, "keep_alive": "5m"}
    assert result.vectors == [[0.1, 0.2], [0.3, 0.4]] and result.usage.prompt_tokens == 7
    assert provider.embedding_space == "ollama:nomic-embed-text:2"


@pytest.mark.parametrize("body", [
    {"model": "m"}, {"embeddings": [[1.0]]}, {"embeddings": [[1.0], "x"]}, {"embeddings": [[1.0], [1.0, 2.0]]},
    {"error": "model crashed"}, [1, 2],
])
def test_ollama_bad_bodies_are_typed(rsps, body):
    rsps.post(OLLAMA + "/api/embed", json=body)
    with pytest.raises((ResponseFormatError, Exception)) as info:
        ollama().embed(["a", "b"])
    assert type(info.value).__name__ in ("ResponseFormatError", "ProviderUnavailableError")


def test_ollama_context_length_refusal_is_recognised(rsps):
    rsps.post(OLLAMA + "/api/embed", status=400, json={"error": "the input length exceeds the context length"})
    with pytest.raises(InvalidRequestError) as info:
        ollama(extra={"truncate": False}).embed("x" * 100)
    assert is_context_length_error(info.value)


def test_ollama_has_no_balance_and_estimates_tokens():
    provider = ollama()
    with pytest.raises(NotSupportedError, match="balance"):
        provider.balance()
    count = provider.count_tokens("What is Python?")
    assert count.estimated is True and count == estimate_tokens([Message("user", "What is Python?")])


# YandexGPT -------------------------------------------------------------------------------


class FakeYandexEmbeddings(LoopbackServer):
    """textEmbedding, one text per request: the vector encodes the text's number, and
    later texts answer sooner (so a fan-out that kept arrival order would be caught)."""

    def __init__(self, fail_text: str = "") -> None:
        super().__init__()
        self.fail_text = fail_text
        self.in_flight = 0
        self.most_in_flight = 0
        self.bodies = []
        self.lock = threading.Lock()

    def handle(self, handler, request, fault):
        body = request.json
        number = int(body["text"].split()[-1])
        with self.lock:
            self.bodies.append(body)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self._stopping.wait(max(0.0, 0.03 - number * 0.002))
            if body["text"] == self.fail_text:
                self.send_body(handler, 429, {"error": {"grpcCode": 8, "httpCode": 429, "message": "quota"}})
                return
            self.send_body(handler, 200, {"embedding": [number, str(number / 2)], "numTokens": "3",
                                          "modelVersion": "06.12.2023"})
        finally:
            with self.lock:
                self.in_flight -= 1


def test_yandex_fans_out_one_text_per_request_keeping_order_and_the_bound():
    with FakeYandexEmbeddings() as server:
        provider = yandex(base_url=server.base_url, extra={"embedding_concurrency": 3})
        try:
            texts = [f"text {number}" for number in range(12)]
            result = provider.embed(texts)
        finally:
            provider.close()
    assert result.vectors == [[float(n), n / 2] for n in range(12)]
    assert len(server.bodies) == 12 and all(set(b) == {"modelUri", "text"} for b in server.bodies)
    assert {b["modelUri"] for b in server.bodies} == {f"emb://{FOLDER}/text-search-doc/latest"}
    assert server.most_in_flight == 3  # the pool's bound, reached and never passed
    assert result.usage.prompt_tokens == 36 and result.model == "text-search-doc/latest"
    assert server.requests[0].headers["authorization"] == "Bearer t1.iam-token-abc"


def test_yandex_query_purpose_uses_the_query_model_of_the_pair_and_dim():
    with FakeYandexEmbeddings() as server:
        provider = yandex(base_url=server.base_url, extra={"dimensions": 256})
        try:
            provider.embed(["q 1"], purpose="query")
        finally:
            provider.close()
    assert server.bodies == [{"modelUri": f"emb://{FOLDER}/text-search-query/latest", "text": "q 1", "dim": "256"}]
    assert provider.embedding_space == "yandexgpt:text-search-doc/latest:256"


def test_yandex_one_failed_text_fails_the_batch_typed():
    with FakeYandexEmbeddings(fail_text="text 5") as server:
        provider = yandex(base_url=server.base_url, extra={"embedding_concurrency": 2})
        try:
            with pytest.raises(RateLimitError):
                provider.embed([f"text {n}" for n in range(10)])
        finally:
            provider.close()
    assert len(server.bodies) < 10  # texts not sent when the failure came are never sent


@pytest.mark.parametrize("body", [{"numTokens": "3"}, {"embedding": []}, {"embedding": ["a"]}, ["x"],
                                  {"embedding": [float("1e400")]}])
def test_yandex_bad_bodies_are_typed(rsps, body):
    if isinstance(body, dict) and body.get("embedding") == [float("1e400")]:
        rsps.post(YANDEX + "/textEmbedding", body=b'{"embedding": [1e400]}', content_type="application/json")
    else:
        rsps.post(YANDEX + "/textEmbedding", json=body)
    with pytest.raises(ResponseFormatError):
        yandex().embed("one")


def test_yandex_count_tokens_sends_the_whole_completion_request(rsps):
    rsps.post(YANDEX + "/tokenizeCompletion", json={
        "tokens": [{"id": "1", "text": "<s>", "special": True}] + [{"id": str(n), "text": "x"} for n in range(14)],
        "modelVersion": "23.10.2024"})
    count = yandex().count_tokens([Message("system", "Be brief"), Message("user", "ping")])
    body = sent(rsps.calls[0])
    assert body["modelUri"] == f"gpt://{FOLDER}/yandexgpt/latest"
    assert body["messages"] == [{"role": "system", "text": "Be brief"}, {"role": "user", "text": "ping"}]
    assert count == 15 and count.estimated is False


def test_yandex_count_tokens_bad_body_is_typed(rsps):
    rsps.post(YANDEX + "/tokenizeCompletion", json={"modelVersion": "x"})
    with pytest.raises(ResponseFormatError):
        yandex().count_tokens("ping")


# Mock and the shared rules --------------------------------------------------------------


def test_mock_vectors_are_deterministic_unit_vectors():
    provider = MockProvider(ProviderConfig(name="m", extra={"delay": 0, "dimensions": 8}))
    first, again = provider.embed(["hello", "world"]), provider.embed(["world"])
    assert first.vectors[1] == again.vectors[0] == mock_vector("world", 8)
    assert first.vectors[0] != first.vectors[1]
    assert all(abs(sum(x * x for x in v) - 1.0) < 1e-9 for v in first.vectors)
    assert first.dimensions == 8 and first.space == "mock:mock-embedding:8"


def test_mock_embed_honours_its_failure_modes():
    with pytest.raises(InvalidRequestError):
        MockProvider(ProviderConfig(name="m", model="mock-invalid-request", extra={"delay": 0})).embed("x")


@pytest.mark.parametrize("texts", [[], [""], ["ok", None], b"bytes", 42])
def test_bad_texts_are_configuration_errors(texts):
    provider = MockProvider(ProviderConfig(name="m", extra={"delay": 0}))
    with pytest.raises(ConfigurationError):
        provider.embed(texts)


def test_bad_purpose_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="purpose"):
        MockProvider(ProviderConfig(name="m", extra={"delay": 0})).embed("x", purpose="search")


def test_a_single_string_is_one_text():
    assert len(MockProvider(ProviderConfig(name="m", extra={"delay": 0})).embed("just one")) == 1


@pytest.mark.parametrize("extra", [{"embedding_batch_size": 0}, {"embedding_batch_chars": "many"}, {"dimensions": 0}])
def test_bad_embedding_settings_are_configuration_errors(extra):
    with pytest.raises(ConfigurationError):
        MockProvider(ProviderConfig(name="m", extra=extra)).batch_limits()


@pytest.mark.parametrize("field,value", [("context_window", 0), ("context_window", "8k"), ("embedding_space", ""),
                                         ("embedding_model", 3)])
def test_bad_config_fields_are_configuration_errors(field, value):
    with pytest.raises(ConfigurationError, match=field):
        ProviderConfig(name="x", **{field: value})


def test_estimate_counts_cyrillic_denser_than_ascii():
    english = estimate_tokens([Message("user", "a" * 400)])
    russian = estimate_tokens([Message("user", "я" * 400)])
    assert (english, russian) == (104, 164) and english.estimated


@pytest.mark.parametrize("status,message,expected", [
    (413, "Request Entity Too Large", True),
    (422, "Invalid params: context length exceeded", True),
    (400, "This model's maximum context length is 8192 tokens", True),
    (400, "the input length exceeds the context length", True),
    (400, "temperature must be positive", False),
    (404, "context length model not found", False),
])
def test_context_length_refusals(status, message, expected):
    assert is_context_length_error(InvalidRequestError(message, status_code=status)) is expected


@pytest.mark.parametrize("value,expected", [
    ([0.5, -0.25], [0.5, -0.25]),
    ([1, "2.5"], [1.0, 2.5]),            # ints, and the numeric strings Yandex's reference shows
    ([1e308, 1e308], [1e308, 1e308]),    # a sum that overflows is still a finite vector
])
def test_parse_vector_accepts(value, expected):
    from multi_llm_orchestrator.providers.embedding_format import parse_vector

    assert parse_vector(value, "p", "where") == expected


@pytest.mark.parametrize("value", [[1.0, float("inf")], [float("nan")], [float("-inf"), float("inf")], ["inf"]])
def test_parse_vector_refuses_non_finite(value):
    from multi_llm_orchestrator.providers.embedding_format import parse_vector

    with pytest.raises(ResponseFormatError, match="non-finite"):
        parse_vector(value, "p", "where")


def test_gigachat_giga_r_queries_get_the_instruction_documents_do_not(rsps):
    rsps.post(GIGA_API + "/embeddings", json={"data": [{"embedding": [1.0], "index": 0}]})
    provider = giga(embedding_model="EmbeddingsGigaR")
    provider.embed(["как сбросить пароль"], purpose="query")
    provider.embed(["Документ"], purpose="document")
    giga(embedding_model="EmbeddingsGigaR", extra={"query_prefix": ""}).embed(
        ["q"], purpose="query")
    giga().embed(["q"], purpose="query")  # the plain Embeddings model: no instruction
    inputs = [sent(call)["input"] for call in rsps.calls]
    assert inputs == [["Дано предложение, необходимо найти его парафраз \nпредложение: как сбросить пароль"],
                      ["Документ"], ["q"], ["q"]]


def test_gigachat_query_prefix_must_be_text():
    with pytest.raises(ConfigurationError, match="query_prefix"):
        giga(extra={"query_prefix": 3})

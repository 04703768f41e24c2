"""GigaChatProvider on the exact wire (``responses``), fed the recorded GigaChat fixtures."""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Dict, List
from urllib.parse import parse_qs

import pytest
import responses
import yaml

from multi_llm_orchestrator import GenerationParams, Message, MockProvider, ProviderConfig
from multi_llm_orchestrator.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitError,
    ResponseFormatError,
)
from multi_llm_orchestrator.http import error_from_exception
from multi_llm_orchestrator.providers import provider_class
from multi_llm_orchestrator.providers.gigachat import DEFAULT_AUTH_URL, SCOPES, GigaChatProvider

LOCAL_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "gigachat"
SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "gigachat"

API = "https://gigachat.devices.sberbank.ru/api/v1"
OAUTH = "https://ngw.devices.sberbank.ru:9443/api/v2/oauth"
CHAT = API + "/chat/completions"
MODELS = API + "/models"
AUTH_KEY = base64.b64encode(b"client-id:client-secret-xyz").decode()
TOKEN = "eyJhbGciOiJSU0EtT0FFUCJ9.test-access-token-1"
TOKEN_2 = "eyJhbGciOiJSU0EtT0FFUCJ9.test-access-token-2"
FAR_FUTURE_MS = 4102444800000
RQUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def fixture_bytes(name: str) -> bytes:
    """A recorded fixture from the repo's copy, checked against ../shared when present."""
    data = (LOCAL_FIXTURES / name).read_bytes()
    shared = SHARED_FIXTURES / name
    if shared.is_file():
        assert shared.read_bytes() == data, f"tests/fixtures/gigachat/{name} drifted from shared/fixtures"
    return data


def fixture_json(name: str) -> Any:
    return json.loads(fixture_bytes(name))


def cassette(name: str) -> List[Dict[str, Any]]:
    return yaml.safe_load(fixture_bytes(f"cassettes/{name}"))["interactions"]


def replay(rsps: responses.RequestsMock, interaction: Dict[str, Any]) -> None:
    """Serve one recorded exchange: same URL, status, Content-Type and body bytes."""
    request, response = interaction["request"], interaction["response"]
    headers = {
        key: values[0]
        for key, values in response["headers"].items()
        if key.lower() not in ("content-type", "content-length", "transfer-encoding", "connection")
    }
    rsps.add(
        request["method"],
        request["uri"],
        body=response["body"]["string"].encode("utf-8"),
        status=response["status"]["code"],
        content_type=response["headers"]["Content-Type"][0],
        headers=headers,
    )


def make(**fields: Any) -> GigaChatProvider:
    fields.setdefault("name", "giga")
    fields.setdefault("api_key", AUTH_KEY)
    fields.setdefault("max_retries", 0)
    return GigaChatProvider(ProviderConfig(**fields))


def add_token(rsps, token: str = TOKEN, expires_at: Any = FAR_FUTURE_MS, status: int = 200) -> None:
    rsps.post(OAUTH, json={"access_token": token, "expires_at": expires_at}, status=status)


def sent_json(call) -> Dict[str, Any]:
    return json.loads(call.request.body)


def calls_to(rsps, url: str) -> list:
    return [c for c in rsps.calls if c.request.url == url]


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


# Configuration ----------------------------------------------------------------------------


def test_defaults_and_registry():
    provider = make()
    assert provider.base_url == API
    assert provider.auth_url == OAUTH == DEFAULT_AUTH_URL
    assert provider.scope == "GIGACHAT_API_PERS"
    assert provider.model == "GigaChat"
    assert provider_class("gigachat") is GigaChatProvider
    assert GigaChatProvider.type_name == "gigachat"


@pytest.mark.parametrize("scope", SCOPES)
def test_every_documented_scope_is_accepted(scope):
    assert make(scope=scope).scope == scope


def test_unknown_scope_lists_the_valid_ones():
    with pytest.raises(ConfigurationError) as info:
        make(scope="GIGACHAT_API_PERSONAL")
    for scope in ("GIGACHAT_API_PERS", "GIGACHAT_API_B2B", "GIGACHAT_API_CORP"):
        assert scope in str(info.value)


def test_base_and_auth_url_are_overridable():
    provider = make(base_url="http://127.0.0.1:8080/api/v1/", auth_url="http://127.0.0.1:8081/oauth")
    assert provider.base_url == "http://127.0.0.1:8080/api/v1"
    assert provider.auth_url == "http://127.0.0.1:8081/oauth"


def test_missing_credentials_say_what_to_set():
    with pytest.raises(ConfigurationError, match="GIGACHAT_CREDENTIALS"):
        make(api_key=None)


def test_key_with_control_characters_is_rejected_without_echoing_it():
    with pytest.raises(ConfigurationError) as info:
        make(api_key="abc\ndef-secret")
    assert "def-secret" not in str(info.value)


def test_key_pasted_with_basic_prefix_and_spaces_is_cleaned(rsps):
    add_token(rsps)
    rsps.get(MODELS, json=fixture_json("models.json"))
    make(api_key=f"  Basic {AUTH_KEY}\n").list_models()
    assert rsps.calls[0].request.headers["Authorization"] == f"Basic {AUTH_KEY}"


def test_a_key_that_is_not_base64_logs_a_warning_without_the_key(caplog):
    caplog.set_level(logging.WARNING)
    make(api_key="raw-client-secret-not-base64!")
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "not base64" in text
    assert "raw-client-secret" not in text


ENV = (
    "GIGACHAT_CREDENTIALS", "GIGACHAT_SCOPE", "GIGACHAT_MODEL", "GIGACHAT_BASE_URL", "GIGACHAT_AUTH_URL",
    "GIGACHAT_VERIFY_SSL_CERTS", "GIGACHAT_CA_BUNDLE_FILE", "GIGACHAT_TIMEOUT", "GIGACHAT_ACCESS_TOKEN",
)


@pytest.fixture
def clean_env(monkeypatch):
    for key in ENV:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_from_env_reads_every_variable(clean_env, tmp_path):
    bundle = tmp_path / "russian_trusted_root_ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    clean_env.setenv("GIGACHAT_CREDENTIALS", AUTH_KEY)
    clean_env.setenv("GIGACHAT_SCOPE", "GIGACHAT_API_CORP")
    clean_env.setenv("GIGACHAT_MODEL", "GigaChat-2-Max")
    clean_env.setenv("GIGACHAT_BASE_URL", "http://127.0.0.1:1/api/v1")
    clean_env.setenv("GIGACHAT_AUTH_URL", "http://127.0.0.1:2/oauth")
    clean_env.setenv("GIGACHAT_CA_BUNDLE_FILE", str(bundle))
    clean_env.setenv("GIGACHAT_TIMEOUT", "12.5")
    clean_env.setenv("GIGACHAT_ACCESS_TOKEN", TOKEN)
    provider = GigaChatProvider.from_env()
    assert provider.name == "gigachat"
    assert provider.config.api_key == AUTH_KEY
    assert provider.scope == "GIGACHAT_API_CORP"
    assert provider.model == "GigaChat-2-Max"
    assert provider.base_url == "http://127.0.0.1:1/api/v1"
    assert provider.auth_url == "http://127.0.0.1:2/oauth"
    assert provider.config.ca_bundle == str(bundle) and provider.session.verify == str(bundle)
    assert provider.config.timeout == 12.5
    assert provider.config.extra["access_token"] == TOKEN


def test_from_env_overrides_win_and_verify_flag_is_parsed(clean_env, caplog):
    clean_env.setenv("GIGACHAT_CREDENTIALS", AUTH_KEY)
    clean_env.setenv("GIGACHAT_MODEL", "GigaChat-Pro")
    clean_env.setenv("GIGACHAT_VERIFY_SSL_CERTS", "False")
    provider = GigaChatProvider.from_env(name="giga-env-insecure", model="GigaChat-Max", timeout=3)
    assert provider.name == "giga-env-insecure"
    assert provider.model == "GigaChat-Max"
    assert provider.config.verify_ssl is False and provider.session.verify is False
    assert provider.config.timeout == 3


def test_from_env_without_credentials_names_the_variable(clean_env):
    with pytest.raises(ConfigurationError, match="GIGACHAT_CREDENTIALS"):
        GigaChatProvider.from_env()


def test_from_env_with_only_an_access_token(clean_env):
    clean_env.setenv("GIGACHAT_ACCESS_TOKEN", TOKEN)
    assert GigaChatProvider.from_env().config.api_key is None


@pytest.mark.parametrize(
    "key, value, match",
    [("GIGACHAT_VERIFY_SSL_CERTS", "maybe", "true or false"), ("GIGACHAT_TIMEOUT", "soon", "seconds")],
)
def test_from_env_rejects_bad_values(clean_env, key, value, match):
    clean_env.setenv("GIGACHAT_CREDENTIALS", AUTH_KEY)
    clean_env.setenv(key, value)
    with pytest.raises(ConfigurationError, match=match):
        GigaChatProvider.from_env()


def test_from_env_unknown_keyword_lists_the_valid_ones(clean_env):
    clean_env.setenv("GIGACHAT_CREDENTIALS", AUTH_KEY)
    with pytest.raises(ConfigurationError) as info:
        GigaChatProvider.from_env(scopes="GIGACHAT_API_B2B")
    assert "'scopes'" in str(info.value) and "scope" in str(info.value) and "ca_bundle" in str(info.value)


def test_from_env_credentials_keyword_needs_no_variable(clean_env):
    assert GigaChatProvider.from_env(api_key=AUTH_KEY).config.api_key == AUTH_KEY


# OAuth --------------------------------------------------------------------------------------


def test_oauth_request_is_exactly_as_documented(rsps):
    add_token(rsps)
    rsps.get(MODELS, json=fixture_json("models.json"))
    make(scope="GIGACHAT_API_B2B").list_models()
    oauth = rsps.calls[0].request
    assert oauth.method == "POST" and oauth.url == OAUTH
    assert oauth.headers["Authorization"] == f"Basic {AUTH_KEY}"
    assert RQUID.match(oauth.headers["RqUID"])
    assert oauth.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert oauth.headers["Accept"] == "application/json"
    assert parse_qs(oauth.body) == {"scope": ["GIGACHAT_API_B2B"]}
    api = rsps.calls[1].request
    assert api.headers["Authorization"] == f"Bearer {TOKEN}"


def test_token_is_cached_and_every_oauth_call_has_a_fresh_rquid(rsps):
    add_token(rsps)
    rsps.get(MODELS, json=fixture_json("models.json"))
    provider = make()
    for _ in range(3):
        provider.list_models()
    assert len(calls_to(rsps, OAUTH)) == 1
    due = provider._tokens.token.refresh_at
    provider._tokens.clock = lambda: due + 1  # as if 29 minutes had passed
    provider.list_models()
    oauth_calls = calls_to(rsps, OAUTH)
    assert len(oauth_calls) == 2
    assert oauth_calls[0].request.headers["RqUID"] != oauth_calls[1].request.headers["RqUID"]


@pytest.mark.parametrize("unit", ["ms", "s"])
def test_expiry_in_ms_or_seconds_refreshes_60_s_early(rsps, unit):
    expires = time.time() + 1800
    add_token(rsps, expires_at=int(expires * 1000) if unit == "ms" else int(expires))
    rsps.get(MODELS, json=fixture_json("models.json"))
    provider = make()
    provider.list_models()
    left = provider._tokens.token.refresh_at - time.monotonic()
    assert 1800 - 60 - 3 < left <= 1800 - 60


def test_short_lived_token_is_refreshed_halfway_not_on_every_call(rsps):
    add_token(rsps, expires_at=int((time.time() + 40) * 1000))
    rsps.get(MODELS, json=fixture_json("models.json"))
    provider = make()
    provider.list_models()
    provider.list_models()
    assert len(calls_to(rsps, OAUTH)) == 1
    assert 15 < provider._tokens.token.refresh_at - time.monotonic() <= 20


def test_legacy_tok_exp_answer_is_accepted(rsps):
    rsps.post(OAUTH, json={"tok": TOKEN, "exp": FAR_FUTURE_MS})
    rsps.get(MODELS, json=fixture_json("models.json"))
    make().list_models()
    assert rsps.calls[1].request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_oauth_answer_that_is_not_json_hides_the_body(rsps):
    rsps.post(OAUTH, body='{"access_token": "eyJ-PARTIAL-TOKEN', content_type="application/json")
    with pytest.raises(ResponseFormatError) as info:
        make().list_models()
    assert "PARTIAL" not in str(info.value)


def test_oauth_answer_without_a_token(rsps):
    rsps.post(OAUTH, json={"expires_at": FAR_FUTURE_MS})
    with pytest.raises(ResponseFormatError, match="access_token"):
        make().list_models()


def test_wrong_scope_oauth_error_says_the_scope_does_not_match(rsps):
    rsps.post(OAUTH, status=400, json={"code": 7, "message": "scope from db not fully includes consumed scope"})
    with pytest.raises(AuthenticationError) as info:
        make(scope="GIGACHAT_API_CORP").complete("Привет")
    message = str(info.value)
    assert "does not match" in message and "GIGACHAT_API_CORP" in message and "code 7" in message
    assert info.value.status_code == 400
    assert len(rsps.calls) == 1  # the API itself was never called


def test_wrong_key_oauth_error_points_at_the_key(rsps):
    rsps.post(OAUTH, status=401, json={"code": 6, "message": "credentials doesn't match db data"})
    with pytest.raises(AuthenticationError) as info:
        make().complete("Привет")
    assert "authorization key" in str(info.value) and "GIGACHAT_CREDENTIALS" in str(info.value)
    assert AUTH_KEY not in str(info.value)


def test_oauth_server_failure_is_unavailable(rsps):
    rsps.post(OAUTH, status=503, json={"message": "maintenance"})
    with pytest.raises(ProviderUnavailableError):
        make().complete("Привет")


# Chat -----------------------------------------------------------------------------------------


def test_recorded_chat_simple(rsps):
    oauth, chat = cassette("test_chat_simple.yaml")
    replay(rsps, oauth)
    replay(rsps, chat)
    completion = make().complete("Say 'Hello' and nothing else")
    assert sent_json(rsps.calls[1]) == json.loads(chat["request"]["body"])
    assert rsps.calls[1].request.url == chat["request"]["uri"]
    assert rsps.calls[1].request.headers["Authorization"] == "Bearer REDACTED"
    assert completion.text == "Hello."
    assert completion.model == "GigaChat:2.0.28.2"
    assert completion.finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (
        17, 3, 20,
    )
    assert completion.provider == "giga"


def test_recorded_request_and_russian_response(rsps):
    request = fixture_json("chat.json")
    add_token(rsps)
    rsps.post(CHAT, body=fixture_bytes("chat_completion.json"), content_type="application/json")
    messages = [Message(m["role"], m["content"]) for m in request["messages"]]
    completion = make(model="GigaChat:latest").complete(messages, GenerationParams(temperature=0.7))
    expected = {**request, "messages": [{"role": m["role"], "content": m["content"]} for m in request["messages"]]}
    assert sent_json(rsps.calls[1]) == expected
    body = rsps.calls[1].request.body
    assert "Думаешь, у нас еще есть шанс?".encode("utf-8") in body  # raw UTF-8, no \u escapes
    assert completion.text.startswith("Конечно, у человечества всегда есть возможность")
    assert completion.model == "GigaChat:v1.2.19.2"
    assert completion.usage.total_tokens == 86 and completion.usage.completion_tokens == 68
    assert completion.finish_reason == "stop"


def test_function_call_answer(rsps):
    add_token(rsps)
    rsps.post(CHAT, body=fixture_bytes("chat_completion_function.json"), content_type="application/json")
    functions = fixture_json("chat_function.json")["functions"]
    completion = make().complete("Какая погода в Москве сегодня?", GenerationParams(extra={"functions": functions}))
    assert completion.text == ""
    assert completion.finish_reason == "tool_calls"  # GigaChat's "function_call", normalised
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [("fc", {"location": "Москва", "num_days": 0})]
    assert completion.usage.total_tokens == 159
    assert sent_json(rsps.calls[1])["functions"] == functions


def test_system_messages_are_joined_and_moved_first(rsps):
    add_token(rsps)
    rsps.post(CHAT, body=fixture_bytes("chat_completion.json"), content_type="application/json")
    make().complete(
        [
            {"role": "user", "content": "Привет"},
            {"role": "system", "content": "Отвечай кратко."},
            {"role": "assistant", "content": "Здравствуйте!"},
            {"role": "system", "content": "Говори по-русски."},
            {"role": "user", "content": "Как дела?"},
        ]
    )
    assert sent_json(rsps.calls[1])["messages"] == [
        {"role": "system", "content": "Отвечай кратко.\n\nГовори по-русски."},
        {"role": "user", "content": "Привет"},
        {"role": "assistant", "content": "Здравствуйте!"},
        {"role": "user", "content": "Как дела?"},
    ]


def test_generation_params_mapping(rsps, caplog):
    caplog.set_level(logging.DEBUG, logger="multi_llm_orchestrator")
    add_token(rsps)
    rsps.post(CHAT, body=fixture_bytes("chat_completion.json"), content_type="application/json")
    params = GenerationParams(
        temperature=0, top_p=0.5, max_tokens=64, stop=["\n\n"],
        extra={"repetition_penalty": 1.1, "update_interval": 0, "profanity_check": False},
    )
    make().complete("Привет", params)
    assert sent_json(rsps.calls[1]) == {
        "model": "GigaChat",
        "messages": [{"role": "user", "content": "Привет"}],
        "temperature": 0.001,
        "top_p": 0.5,
        "max_tokens": 64,
        "repetition_penalty": 1.1,
        "update_interval": 0,
        "profanity_check": False,
    }
    assert any("no stop sequences" in r.getMessage() for r in caplog.records)


def test_positive_temperature_is_sent_unchanged(rsps):
    add_token(rsps)
    rsps.post(CHAT, body=fixture_bytes("chat_completion.json"), content_type="application/json")
    make().complete("Привет", GenerationParams(temperature=1.3))
    assert sent_json(rsps.calls[1])["temperature"] == 1.3


def test_extra_may_not_override_messages_or_stream():
    with pytest.raises(ConfigurationError, match="stream"):
        make().complete("Привет", GenerationParams(extra={"stream": True}))


def test_answer_without_choices_is_a_format_error(rsps):
    add_token(rsps)
    rsps.post(CHAT, json={"object": "chat.completion"})
    with pytest.raises(ResponseFormatError, match="choices"):
        make().complete("Привет")


# Streaming ----------------------------------------------------------------------------------


def test_recorded_stream_simple(rsps):
    oauth, chat = cassette("test_stream_simple.yaml")
    replay(rsps, oauth)
    replay(rsps, chat)
    stream = make().stream("Count from 1 to 3")
    chunks = list(stream)
    sent = rsps.calls[1].request
    assert json.loads(sent.body) == json.loads(chat["request"]["body"])
    assert sent.headers["Accept"] == "text/event-stream"
    assert sent.headers["Cache-Control"] == "no-store"
    assert len(chunks) == 4
    assert stream.text == "".join(chunks)
    assert stream.text.startswith("$1\\, 2\\, 3$")
    assert "Заканчиваем счётом числом три." in stream.text
    assert stream.finish_reason == "stop"
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens, stream.usage.total_tokens) == (17, 42, 59)
    assert stream.model == "GigaChat:2.0.28.2"


def test_sdk_stream_fixture_with_leading_blank_line(rsps):
    add_token(rsps)
    rsps.post(CHAT, body=fixture_bytes("chat_completion.stream"), content_type="text/event-stream")
    stream = make().stream("Думаешь, у нас еще есть шанс?")
    chunks = list(stream)
    assert chunks[-1] == "."
    assert stream.text.startswith("Конечно, у человечества") and stream.text.endswith("с умом.")
    assert stream.finish_reason == "stop"
    assert stream.usage is None  # this recording carries no usage
    assert stream.model == "GigaChat:v1.2.19.2"


def test_stream_cut_before_done_raises_after_the_text_so_far(rsps):
    add_token(rsps)
    body = fixture_bytes("chat_completion.stream").split(b"data: [DONE]")[0].rsplit(b"data: {", 1)[0]
    rsps.post(CHAT, body=body, content_type="text/event-stream")
    stream = make().stream("Привет")
    assert next(stream).startswith("Конечно")
    with pytest.raises(ProviderUnavailableError, match="DONE"):
        list(stream)


def test_stream_error_event_is_typed(rsps):
    add_token(rsps)
    body = b'data: {"choices":[{"delta":{"content":"a"},"index":0}]}\n\ndata: {"status": 429, "message": "Too many requests"}\n\n'
    rsps.post(CHAT, body=body, content_type="text/event-stream")
    stream = make().stream("Привет")
    assert next(stream) == "a"
    with pytest.raises(RateLimitError, match="Too many requests"):
        next(stream)


def test_stream_answered_with_json_is_a_format_error(rsps):
    add_token(rsps)
    rsps.post(CHAT, body=fixture_bytes("chat_completion.json"), content_type="application/json")
    with pytest.raises(ResponseFormatError, match="text/event-stream"):
        make().stream("Привет")


def test_stream_401_refreshes_before_the_first_chunk(rsps):
    add_token(rsps, TOKEN)
    add_token(rsps, TOKEN_2)
    rsps.post(CHAT, status=401, json={"status": 401, "message": "Unauthorized"})
    rsps.post(CHAT, body=fixture_bytes("chat_completion.stream"), content_type="text/event-stream")
    stream = make().stream("Привет")
    assert stream.text == ""
    assert "".join(stream).endswith("с умом.")
    chats = calls_to(rsps, CHAT)
    assert [c.request.headers["Authorization"] for c in chats] == [f"Bearer {TOKEN}", f"Bearer {TOKEN_2}"]


# Models and health --------------------------------------------------------------------------


def test_recorded_models_list_and_health(rsps):
    oauth, models = cassette("test_get_models.yaml")
    replay(rsps, oauth)
    replay(rsps, models)
    provider = make()
    names = provider.list_models()
    assert len(names) == 20 and names[0] == "GigaChat" and "GigaChat-2-Max" in names
    assert provider.health_check() is True
    assert calls_to(rsps, MODELS)[0].request.method == "GET"


@pytest.mark.parametrize("status", [401, 500, 503])
def test_health_check_is_false_and_never_raises(rsps, status):
    add_token(rsps)
    rsps.get(MODELS, status=status, json={"status": status, "message": "nope"})
    assert make().health_check(timeout=2) is False


def test_health_check_is_false_when_oauth_fails_or_nothing_answers(rsps):
    rsps.post(OAUTH, status=401, json={"code": 6, "message": "bad key"})
    assert make().health_check() is False
    assert make(base_url="http://127.0.0.1:9/api/v1", auth_url="http://127.0.0.1:9/oauth").health_check(1) is False


# Error mapping ------------------------------------------------------------------------------


def test_recorded_model_not_found(rsps):
    oauth, chat = cassette("test_chat_model_not_found.yaml")
    replay(rsps, oauth)
    replay(rsps, chat)
    with pytest.raises(InvalidRequestError) as info:
        make(model="NonExistentModel").complete("Hello")
    assert "No such model" in str(info.value) and "list_models()" in str(info.value)
    assert info.value.status_code == 404
    assert sent_json(rsps.calls[1]) == json.loads(chat["request"]["body"])


@pytest.mark.parametrize(
    "status, message, error_type",
    [
        (400, "Bad request", InvalidRequestError),
        (404, "No such model", InvalidRequestError),
        (413, "Request entity too large", InvalidRequestError),
        (422, "Invalid params: repetition_penalty must be in range (0, +inf)", InvalidRequestError),
        (402, "Payment required", QuotaExceededError),
        (403, "Forbidden", AuthenticationError),
        (500, "Internal Server Error", ProviderUnavailableError),
        (502, "Bad Gateway", ProviderUnavailableError),
        (503, "Service Unavailable", ProviderUnavailableError),
    ],
)
def test_api_error_mapping(rsps, status, message, error_type):
    add_token(rsps)
    rsps.post(CHAT, status=status, json={"status": status, "message": message})
    with pytest.raises(error_type) as info:
        make().complete("Привет")
    assert type(info.value) is error_type
    assert message in str(info.value)
    assert info.value.status_code == status and info.value.provider == "giga"


def test_429_carries_retry_after(rsps):
    add_token(rsps)
    rsps.post(CHAT, status=429, json={"status": 429, "message": "Too many requests"}, headers={"Retry-After": "7"})
    with pytest.raises(RateLimitError) as info:
        make().complete("Привет")
    assert info.value.retry_after == 7.0 and info.value.retryable


def test_401_refreshes_once_and_retries_once(rsps):
    add_token(rsps, TOKEN)
    add_token(rsps, TOKEN_2)
    rsps.post(CHAT, status=401, json={"status": 401, "message": "Unauthorized"})
    rsps.post(CHAT, body=fixture_bytes("chat_completion.json"), content_type="application/json")
    assert make().complete("Привет").text.startswith("Конечно")
    assert len(calls_to(rsps, OAUTH)) == 2
    assert [c.request.headers["Authorization"] for c in calls_to(rsps, CHAT)] == [
        f"Bearer {TOKEN}", f"Bearer {TOKEN_2}",
    ]


def test_401_after_refresh_is_an_authentication_error(rsps):
    add_token(rsps, TOKEN)
    add_token(rsps, TOKEN_2)
    rsps.post(CHAT, status=401, json={"status": 401, "message": "Unauthorized"})
    with pytest.raises(AuthenticationError) as info:
        make().complete("Привет")
    assert info.value.status_code == 401
    assert len(calls_to(rsps, OAUTH)) == 2 and len(calls_to(rsps, CHAT)) == 2


def test_pre_obtained_token_is_used_without_oauth_and_never_expires(rsps):
    rsps.get(MODELS, json=fixture_json("models.json"))
    provider = make(api_key=None, extra={"access_token": TOKEN})
    provider.list_models()
    provider.list_models()
    assert [c.request.url for c in rsps.calls] == [MODELS, MODELS]
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert provider._tokens.token.refresh_at is None


def test_pre_obtained_token_rejected_without_a_key_explains_what_to_do(rsps):
    rsps.get(MODELS, status=401, json={"status": 401, "message": "Unauthorized"})
    with pytest.raises(AuthenticationError, match="GIGACHAT_CREDENTIALS") as info:
        make(api_key=None, extra={"access_token": TOKEN}).list_models()
    assert TOKEN not in str(info.value)
    assert not calls_to(rsps, OAUTH)


def test_pre_obtained_token_rejected_with_a_key_reauthenticates(rsps):
    rsps.get(MODELS, status=401, json={"status": 401, "message": "Unauthorized"})
    rsps.get(MODELS, json=fixture_json("models.json"))
    add_token(rsps, TOKEN_2)
    make(extra={"access_token": TOKEN}).list_models()
    assert [c.request.headers["Authorization"] for c in calls_to(rsps, MODELS)] == [
        f"Bearer {TOKEN}", f"Bearer {TOKEN_2}",
    ]


def test_budget_spent_on_the_token_is_not_granted_again_to_the_api_call(rsps):
    def slow_token(request):
        time.sleep(0.3)
        return 200, {}, json.dumps({"access_token": TOKEN, "expires_at": FAR_FUTURE_MS})

    rsps.add_callback("POST", OAUTH, callback=slow_token)
    rsps.post(CHAT, body=fixture_bytes("chat_completion.json"), content_type="application/json")
    with pytest.raises(ProviderTimeoutError):
        make(timeout=30).complete("Привет", timeout=0.2)
    assert not calls_to(rsps, CHAT)


def test_tls_hint_names_ca_bundle_and_the_russian_root():
    error = error_from_exception(
        __import__("requests").exceptions.SSLError("CERTIFICATE_VERIFY_FAILED"),
        provider="giga", timeout=5, tls_hint=GigaChatProvider.tls_hint,
    )
    assert "ca_bundle" in str(error) and "Russian Trusted Root CA" in str(error)


# Secrets --------------------------------------------------------------------------------------


def test_secrets_never_appear_in_repr_logs_or_errors(rsps, caplog):
    caplog.set_level(logging.DEBUG)
    add_token(rsps, TOKEN)
    add_token(rsps, TOKEN_2)
    rsps.post(CHAT, status=401, json={"status": 401, "message": "Unauthorized"})
    rsps.post(CHAT, body=fixture_bytes("chat_completion.stream"), content_type="text/event-stream")
    rsps.post(CHAT, status=400, json={"status": 400, "message": f"bad header Bearer {TOKEN} / Basic {AUTH_KEY}"})
    rsps.get(MODELS, status=500, json={"status": 500, "message": "boom"})
    provider = make(extra={"access_token": "given-token-SECRET"})
    rsps.calls.reset()
    errors = []
    for action in (
        lambda: list(provider.stream("Привет")),
        lambda: provider.complete("Привет"),
        lambda: provider.list_models(),
    ):
        try:
            action()
        except Exception as exc:  # collected to inspect their messages
            errors.append(exc)
    assert [type(e) for e in errors] == [InvalidRequestError, ProviderUnavailableError]
    texts = [repr(provider), str(provider), repr(provider.config), str(provider.config)]
    texts += [repr(provider._tokens), repr(provider._tokens.token)]
    texts += [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [r.getMessage() for r in caplog.records]
    assert len(caplog.records) > 3
    for secret in (AUTH_KEY, TOKEN, TOKEN_2, "given-token-SECRET", "client-secret-xyz"):
        for text in texts:
            assert secret not in text


# Router -----------------------------------------------------------------------------------------


def test_router_routes_and_falls_back_across_gigachat_and_mock(rsps):
    from multi_llm_orchestrator import Router

    add_token(rsps)
    rsps.post(CHAT, body=fixture_bytes("chat_completion.json"), content_type="application/json")
    rsps.post(CHAT, status=503, json={"status": 503, "message": "Service Unavailable"})
    giga = make()
    mock = MockProvider(ProviderConfig(name="mock", extra={"delay": 0}))
    with Router(strategy="round-robin") as router:
        router.add_provider(giga)
        router.add_provider(mock)
        first = router.complete("Привет")
        second = router.complete("Привет")
        third = router.complete("Привет")  # GigaChat's turn, but it answers 503
    assert (first.provider, second.provider) == ("giga", "mock")
    assert first.text.startswith("Конечно") and first.usage.total_tokens == 86
    assert second.text == "Mock response to: Привет"
    assert third.provider == "mock"
    assert [(a.provider, a.outcome) for a in third.attempts] == [("giga", "error"), ("mock", "ok")]
    assert third.attempts[0].error_type == "ProviderUnavailableError"


def test_router_streams_through_gigachat(rsps):
    from multi_llm_orchestrator import Router

    add_token(rsps)
    rsps.post(CHAT, body=fixture_bytes("chat_completion.stream"), content_type="text/event-stream")
    with Router(strategy="round-robin") as router:
        router.add_provider(make())
        router.add_provider(MockProvider(ProviderConfig(name="mock", extra={"delay": 0})))
        stream = router.route_stream("Привет")
        text = "".join(stream)
    assert text.endswith("с умом.") and stream.provider == "giga"

"""YandexGPTProvider at the wire level, with ``responses`` (no sockets)."""

from __future__ import annotations

import json
import logging
import time

import pytest
import responses

from multi_llm_orchestrator.config import ProviderConfig
from multi_llm_orchestrator.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    ResponseFormatError,
)
from multi_llm_orchestrator.providers import provider_class
from multi_llm_orchestrator.providers.yandexgpt import YandexGPTProvider
from multi_llm_orchestrator.types import GenerationParams, Message, Usage

BASE = "https://llm.api.cloud.yandex.net"
COMPLETION_URL = BASE + "/foundationModels/v1/completion"
TOKENIZE_URL = BASE + "/foundationModels/v1/tokenize"
FOLDER = "b1gfolder123"
IAM_TOKEN = "t1.9euelZrSECRETiamTOKEN"
API_KEY = "AQVNsecretAPIkey42"
NEW_TOKEN = "t1.9euelZrFRESHtoken"


def make(api_key=IAM_TOKEN, token_provider=None, **fields):
    fields.setdefault("folder_id", FOLDER)
    fields.setdefault("max_retries", 0)
    config = ProviderConfig(name=fields.pop("name", "yandex"), api_key=api_key, **fields)
    return YandexGPTProvider(config, token_provider=token_provider)


def answer(text="Ошибки сами не исправятся.", status="ALTERNATIVE_STATUS_FINAL", usage=("29", "9", "38")):
    return {
        "result": {
            "alternatives": [{"message": {"role": "assistant", "text": text}, "status": status}],
            "usage": {
                "inputTextTokens": usage[0],
                "completionTokens": usage[1],
                "totalTokens": usage[2],
                "completionTokensDetails": {"reasoningTokens": "0"},
            },
            "modelVersion": "07.03.2024",
        }
    }


def frames_body(*frames):
    return "".join(json.dumps(frame, ensure_ascii=False) + "\n" for frame in frames).encode("utf-8")


def sent_json(call):
    return json.loads(call.request.body.decode("utf-8"))


@pytest.fixture
def mocked():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


# Configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, uri",
    [
        (None, f"gpt://{FOLDER}/yandexgpt/latest"),
        ("yandexgpt/latest", f"gpt://{FOLDER}/yandexgpt/latest"),
        ("yandexgpt-lite/latest", f"gpt://{FOLDER}/yandexgpt-lite/latest"),
        ("llama/rc", f"gpt://{FOLDER}/llama/rc"),
        ("gpt://b1gother/yandexgpt-32k/latest", "gpt://b1gother/yandexgpt-32k/latest"),
        ("ds://b1gother/bt1abc", "ds://b1gother/bt1abc"),
    ],
)
def test_model_uri(model, uri):
    assert make(model=model).model_uri == uri


def test_registered_under_its_type_name():
    assert provider_class("yandexgpt") is YandexGPTProvider
    assert YandexGPTProvider.type_name == "yandexgpt"
    assert YandexGPTProvider.default_model == "yandexgpt/latest"


@pytest.mark.parametrize("folder_id", [None, "", "   "])
def test_missing_folder_id_is_a_configuration_error(folder_id):
    with pytest.raises(ConfigurationError, match="folder_id"):
        make(folder_id=folder_id)


def test_bad_folder_id_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="folder ID"):
        make(folder_id="b1g/../x")


def test_missing_api_key_is_a_configuration_error_saying_what_to_set():
    with pytest.raises(ConfigurationError) as info:
        make(api_key=None)
    message = str(info.value)
    assert "api_key" in message and "token_provider" in message and "api-key" in message


def test_token_provider_replaces_api_key():
    provider = make(api_key=None, token_provider=lambda: NEW_TOKEN)
    assert provider._tokens.refreshable


@pytest.mark.parametrize("auth", ["oauth", "IAM", "", None, 1])
def test_unknown_auth_mode_is_a_configuration_error(auth):
    with pytest.raises(ConfigurationError, match="'iam'.*'api-key'"):
        make(extra={"auth": auth})


@pytest.mark.parametrize("max_age", [0, -5, 43201, "3600", True, float("nan")])
def test_bad_token_max_age_is_a_configuration_error(max_age):
    with pytest.raises(ConfigurationError, match="token_max_age"):
        make(extra={"token_max_age": max_age})


def test_token_provider_must_be_callable():
    with pytest.raises(ConfigurationError, match="callable"):
        make(token_provider="t1.not-callable")


@pytest.mark.parametrize("bad", ["Bearer " + IAM_TOKEN, IAM_TOKEN + "\nx", "   "])
def test_malformed_api_key_is_rejected_without_showing_it(bad):
    with pytest.raises(ConfigurationError) as info:
        make(api_key=bad)
    assert IAM_TOKEN not in str(info.value)
    assert "api_key" in str(info.value)


def test_api_key_whitespace_around_is_stripped(mocked):
    mocked.post(COMPLETION_URL, json=answer())
    make(api_key=f"  {IAM_TOKEN}\n").complete("Hi")
    assert mocked.calls[0].request.headers["Authorization"] == f"Bearer {IAM_TOKEN}"


# from_env --------------------------------------------------------------------------------


def test_from_env_with_iam_token():
    provider = YandexGPTProvider.from_env(environ={"YC_IAM_TOKEN": IAM_TOKEN, "YC_FOLDER_ID": FOLDER})
    assert provider.auth_mode == "iam"
    assert provider.name == "yandexgpt"
    assert provider.model_uri == f"gpt://{FOLDER}/yandexgpt/latest"
    assert provider.base_url == BASE
    assert provider._headers(IAM_TOKEN)["x-folder-id"] == FOLDER


def test_from_env_with_api_key_model_and_base_url():
    provider = YandexGPTProvider.from_env(
        "yc",
        environ={
            "YC_API_KEY": API_KEY,
            "YC_FOLDER_ID": FOLDER,
            "YANDEXGPT_MODEL": "yandexgpt-lite/latest",
            "YANDEXGPT_BASE_URL": "http://127.0.0.1:9/",
        },
        timeout=5,
    )
    assert provider.auth_mode == "api-key"
    assert provider.name == "yc"
    assert provider.model == "yandexgpt-lite/latest"
    assert provider.base_url == "http://127.0.0.1:9"
    assert provider.config.timeout == 5
    assert provider.config.api_key == API_KEY


def test_from_env_prefers_api_key_unless_iam_is_asked_for():
    environ = {"YC_API_KEY": API_KEY, "YC_IAM_TOKEN": IAM_TOKEN, "YC_FOLDER_ID": FOLDER}
    assert YandexGPTProvider.from_env(environ=environ).auth_mode == "api-key"
    chosen = YandexGPTProvider.from_env(environ=environ, extra={"auth": "iam"})
    assert chosen.auth_mode == "iam" and chosen.config.api_key == IAM_TOKEN


@pytest.mark.parametrize(
    "environ, named, not_named",
    [
        ({"YC_IAM_TOKEN": IAM_TOKEN}, ["YC_FOLDER_ID"], ["YC_IAM_TOKEN"]),
        ({"YC_FOLDER_ID": FOLDER}, ["YC_API_KEY", "YC_IAM_TOKEN"], ["YC_FOLDER_ID"]),
        ({"YC_FOLDER_ID": FOLDER, "YC_IAM_TOKEN": "  "}, ["YC_IAM_TOKEN"], []),
        ({}, ["YC_FOLDER_ID", "YC_API_KEY", "YC_IAM_TOKEN"], []),
    ],
)
def test_from_env_names_each_missing_variable(environ, named, not_named):
    with pytest.raises(ConfigurationError) as info:
        YandexGPTProvider.from_env(environ=environ)
    for variable in named:
        assert variable in str(info.value)
    for variable in not_named:
        assert variable not in str(info.value)


def test_from_env_asked_for_iam_names_only_that_variable():
    with pytest.raises(ConfigurationError) as info:
        YandexGPTProvider.from_env(environ={"YC_API_KEY": API_KEY, "YC_FOLDER_ID": FOLDER}, extra={"auth": "iam"})
    assert "YC_IAM_TOKEN" in str(info.value) and "YC_API_KEY" not in str(info.value)


def test_from_env_with_token_provider_needs_no_credential_variable():
    provider = YandexGPTProvider.from_env(environ={"YC_FOLDER_ID": FOLDER}, token_provider=lambda: NEW_TOKEN)
    assert provider.auth_mode == "iam" and provider._tokens.get(time.monotonic() + 5).value == NEW_TOKEN


def test_from_env_reads_os_environ(monkeypatch):
    monkeypatch.setenv("YC_IAM_TOKEN", IAM_TOKEN)
    monkeypatch.setenv("YC_FOLDER_ID", FOLDER)
    monkeypatch.delenv("YC_API_KEY", raising=False)
    monkeypatch.setenv("YANDEXGPT_MODEL", "yandexgpt-lite")
    assert YandexGPTProvider.from_env().model_uri == f"gpt://{FOLDER}/yandexgpt-lite"


def test_from_env_keywords_override_the_environment():
    environ = {"YC_API_KEY": API_KEY, "YC_FOLDER_ID": FOLDER, "YANDEXGPT_MODEL": "yandexgpt-lite"}
    provider = YandexGPTProvider.from_env(environ=environ, api_key=IAM_TOKEN, extra={"auth": "iam"},
                                          folder_id="b1gotherfolder", model="yandexgpt/rc")
    assert provider.config.api_key == IAM_TOKEN and provider.auth_mode == "iam"
    assert provider.model_uri == "gpt://b1gotherfolder/yandexgpt/rc"


def test_from_env_folder_id_keyword_replaces_the_variable():
    provider = YandexGPTProvider.from_env(environ={"YC_IAM_TOKEN": IAM_TOKEN}, folder_id=FOLDER)
    assert provider.folder_id == FOLDER and provider.config.api_key == IAM_TOKEN
    provider = YandexGPTProvider.from_env(environ={}, folder_id=FOLDER, api_key=API_KEY, extra={"auth": "api-key"})
    assert provider.auth_mode == "api-key"


def test_from_env_unknown_keyword_is_a_configuration_error_listing_the_valid_ones():
    with pytest.raises(ConfigurationError) as info:
        YandexGPTProvider.from_env(environ={"YC_IAM_TOKEN": IAM_TOKEN, "YC_FOLDER_ID": FOLDER}, folder="b1g")
    assert "'folder'" in str(info.value) and "folder_id" in str(info.value) and "timeout" in str(info.value)


# The request on the wire -----------------------------------------------------------------


def test_iam_request_wire(mocked):
    mocked.post(COMPLETION_URL, json=answer())
    provider = make(model="yandexgpt-lite/latest")
    provider.complete(
        [
            Message("system", "Ты помощник."),
            Message("user", "Привет"),
            Message("assistant", "Здравствуйте!"),
            Message("user", "Как дела?"),
        ],
        GenerationParams(temperature=0.5, max_tokens=100),
    )
    (call,) = mocked.calls
    assert call.request.method == "POST"
    assert call.request.url == COMPLETION_URL
    headers = call.request.headers
    assert headers["Authorization"] == f"Bearer {IAM_TOKEN}"
    assert headers["x-folder-id"] == FOLDER
    assert headers["Content-Type"] == "application/json"
    assert "Привет".encode("utf-8") in call.request.body  # UTF-8, not \\u escapes
    assert sent_json(call) == {
        "modelUri": f"gpt://{FOLDER}/yandexgpt-lite/latest",
        "completionOptions": {"stream": False, "temperature": 0.5, "maxTokens": "100"},
        "messages": [
            {"role": "system", "text": "Ты помощник."},
            {"role": "user", "text": "Привет"},
            {"role": "assistant", "text": "Здравствуйте!"},
            {"role": "user", "text": "Как дела?"},
        ],
    }


def test_api_key_request_wire(mocked):
    mocked.post(COMPLETION_URL, json=answer())
    make(api_key=API_KEY, extra={"auth": "api-key"}).complete("Hi")
    headers = mocked.calls[0].request.headers
    assert headers["Authorization"] == f"Api-Key {API_KEY}"
    assert "x-folder-id" not in {name.lower() for name in headers}
    assert sent_json(mocked.calls[0])["modelUri"] == f"gpt://{FOLDER}/yandexgpt/latest"


def test_custom_base_url(mocked):
    mocked.post("https://proxy.example/yc/foundationModels/v1/completion", json=answer())
    assert make(base_url="https://proxy.example/yc/").complete("Hi").text == "Ошибки сами не исправятся."


def test_defaults_send_only_stream_flag(mocked):
    mocked.post(COMPLETION_URL, json=answer())
    make().complete("Hi")
    body = sent_json(mocked.calls[0])
    assert body["completionOptions"] == {"stream": False}
    assert body["messages"] == [{"role": "user", "text": "Hi"}]


@pytest.mark.parametrize("temperature", [0, 0.0, 1, 1.0])
def test_temperature_bounds_are_accepted(mocked, temperature):
    mocked.post(COMPLETION_URL, json=answer())
    make().complete("Hi", GenerationParams(temperature=temperature))
    assert sent_json(mocked.calls[0])["completionOptions"]["temperature"] == temperature


@pytest.mark.parametrize("method", ["complete", "stream"])
def test_temperature_above_one_is_a_configuration_error_before_sending(mocked, method):
    with pytest.raises(ConfigurationError, match=r"\[0, 1\].*1.5"):
        getattr(make(), method)("Hi", GenerationParams(temperature=1.5))
    assert len(mocked.calls) == 0


def test_top_p_and_stop_are_ignored_with_a_debug_log(mocked, caplog):
    mocked.post(COMPLETION_URL, json=answer())
    caplog.set_level(logging.DEBUG, logger="multi_llm_orchestrator")
    make().complete("Hi", GenerationParams(top_p=0.9, stop=["\n"], max_tokens=5))
    options = sent_json(mocked.calls[0])["completionOptions"]
    assert options == {"stream": False, "maxTokens": "5"}
    assert any("top_p" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)


def test_params_extra_passes_yandex_fields_only(mocked):
    mocked.post(COMPLETION_URL, json=answer())
    extra = {
        "reasoningOptions": {"mode": "DISABLED"},
        "jsonObject": True,
        "toolChoice": {"mode": "AUTO"},
        "repetition_penalty": 1.1,  # a GigaChat field: must not reach Yandex
    }
    make().complete("Hi", GenerationParams(extra=extra))
    body = sent_json(mocked.calls[0])
    assert body["completionOptions"] == {"stream": False, "reasoningOptions": {"mode": "DISABLED"}}
    assert body["jsonObject"] is True and body["toolChoice"] == {"mode": "AUTO"}
    assert "repetition_penalty" not in json.dumps(body)


# Parsing ---------------------------------------------------------------------------------


def test_completion_parsing(mocked):
    mocked.post(COMPLETION_URL, json=answer())
    completion = make(name="yc-main").complete("Hi")
    assert completion.text == "Ошибки сами не исправятся."
    assert completion.usage == Usage(29, 9, 38)
    assert completion.finish_reason == "stop"
    assert completion.provider == "yc-main"
    assert completion.model == "yandexgpt/latest"
    assert completion.latency_s >= 0


@pytest.mark.parametrize(
    "status, reason",
    [
        ("ALTERNATIVE_STATUS_FINAL", "stop"),
        ("ALTERNATIVE_STATUS_TRUNCATED_FINAL", "length"),
        ("ALTERNATIVE_STATUS_CONTENT_FILTER", "content_filter"),
        ("ALTERNATIVE_STATUS_TOOL_CALLS", "tool_calls"),
        ("ALTERNATIVE_STATUS_UNSPECIFIED", None),
        ("ALTERNATIVE_STATUS_SOMETHING_NEW", "something_new"),
    ],
)
def test_finish_reasons(mocked, status, reason):
    mocked.post(COMPLETION_URL, json=answer(status=status))
    assert make().complete("Hi").finish_reason == reason


def test_tool_call_answer_has_empty_text(mocked):
    body = answer(status="ALTERNATIVE_STATUS_TOOL_CALLS")
    message = body["result"]["alternatives"][0]["message"]
    del message["text"]
    message["toolCallList"] = {"toolCalls": [{"functionCall": {"name": "f", "arguments": {}}}]}
    mocked.post(COMPLETION_URL, json=body)
    completion = make().complete("Hi")
    assert completion.text == "" and completion.finish_reason == "tool_calls"


def test_missing_usage_gives_zeros(mocked):
    body = answer()
    del body["result"]["usage"]
    mocked.post(COMPLETION_URL, json=body)
    assert make().complete("Hi").usage == Usage(0, 0, 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"json": {"result": {}}},
        {"json": {"result": {"alternatives": []}}},
        {"json": {"result": {"alternatives": [{"message": {"text": 5}}]}}},
        {"json": ["not", "an", "object"]},
        {"body": "<html>gateway</html>"},
    ],
)
def test_unparseable_answers_are_response_format_errors(mocked, kwargs):
    mocked.post(COMPLETION_URL, status=200, **kwargs)
    with pytest.raises(ResponseFormatError):
        make().complete("Hi")


# Errors ----------------------------------------------------------------------------------


def yandex_error(http_code, grpc_code, message, http_status="Bad Request"):
    return {"error": {"grpcCode": grpc_code, "httpCode": http_code, "message": message,
                      "httpStatus": http_status, "details": []}}


def test_400_folder_mismatch_keeps_message(mocked):
    text = f"Specified folder ID '{FOLDER}' does not match with service account folder ID 'b1gother'"
    mocked.post(COMPLETION_URL, status=400, json=yandex_error(400, 3, text))
    with pytest.raises(InvalidRequestError) as info:
        make(api_key=API_KEY, extra={"auth": "api-key"}).complete("Hi")
    assert info.value.status_code == 400
    assert text in str(info.value)
    assert "check folder_id" in str(info.value)
    assert info.value.provider == "yandex"
    assert not info.value.retryable


def test_401_without_token_provider_is_authentication_error(mocked):
    mocked.post(COMPLETION_URL, status=401, json=yandex_error(401, 16, "The token is invalid", "Unauthorized"))
    with pytest.raises(AuthenticationError) as info:
        make().complete("Hi")
    assert info.value.status_code == 401
    assert "The token is invalid" in str(info.value) and "12 h" in str(info.value)
    assert len(mocked.calls) == 1


def test_401_with_api_key_suggests_checking_the_auth_form(mocked):
    mocked.post(COMPLETION_URL, status=401, json=yandex_error(401, 16, "Unknown api key", "Unauthorized"))
    with pytest.raises(AuthenticationError, match="API key.*extra\\['auth'\\]='iam'"):
        make(api_key=API_KEY, extra={"auth": "api-key"}).complete("Hi")


def test_403_mentions_folder_and_role(mocked):
    mocked.post(COMPLETION_URL, status=403, json=yandex_error(403, 7, "Permission denied", "Forbidden"))
    with pytest.raises(AuthenticationError) as info:
        make().complete("Hi")
    message = str(info.value)
    assert info.value.status_code == 403
    assert "Permission denied" in message and "folder_id" in message and "ai.languageModels.user" in message


def test_404_is_invalid_request_naming_the_model(mocked):
    mocked.post(COMPLETION_URL, status=404, json=yandex_error(404, 5, "Model not found", "Not Found"))
    with pytest.raises(InvalidRequestError) as info:
        make(model="nope/latest").complete("Hi")
    assert info.value.status_code == 404
    assert f"gpt://{FOLDER}/nope/latest" in str(info.value) and "Model not found" in str(info.value)


def test_429_carries_retry_after(mocked):
    mocked.post(COMPLETION_URL, status=429, headers={"Retry-After": "7"},
                json=yandex_error(429, 8, "ai.textGenerationCompletionSessionsCount.count gauge quota exceeded",
                                  "Too Many Requests"))
    with pytest.raises(RateLimitError) as info:
        make().complete("Hi")
    assert info.value.retry_after == 7
    assert info.value.retryable and "quota" in str(info.value)


def test_429_without_retry_after(mocked):
    mocked.post(COMPLETION_URL, status=429, json=yandex_error(429, 8, "too many", "Too Many Requests"))
    with pytest.raises(RateLimitError) as info:
        make().complete("Hi")
    assert info.value.retry_after is None


@pytest.mark.parametrize("status", [500, 503, 504])
def test_5xx_is_unavailable(mocked, status):
    mocked.post(COMPLETION_URL, status=status, json=yandex_error(status, 13, "internal", "Internal"))
    with pytest.raises(ProviderUnavailableError) as info:
        make().complete("Hi")
    assert info.value.status_code == status and info.value.retryable
    assert "internal" in str(info.value)


def test_plain_text_error_body(mocked):
    mocked.post(COMPLETION_URL, status=502, body="Bad Gateway from the balancer",
                content_type="text/plain")
    with pytest.raises(ProviderUnavailableError, match="Bad Gateway from the balancer"):
        make().complete("Hi")


def test_grpc_gateway_v2_error_body(mocked):
    mocked.post(COMPLETION_URL, status=400, json={"code": 3, "message": "maxTokens must be positive",
                                                  "details": []})
    with pytest.raises(InvalidRequestError, match="maxTokens must be positive"):
        make().complete("Hi")


def test_5xx_is_retried_by_the_transport():
    with responses.RequestsMock() as mocked:
        mocked.post(COMPLETION_URL, status=503, json=yandex_error(503, 14, "unavailable", "Service Unavailable"))
        mocked.post(COMPLETION_URL, json=answer("ok"))
        assert make(max_retries=1).complete("Hi").text == "ok"
        assert len(mocked.calls) == 2


# Token refresh ---------------------------------------------------------------------------


class Tokens:
    """A token_provider handing out t1.fresh-1, t1.fresh-2, ... and counting calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return f"t1.fresh-{self.calls}"


def test_401_refreshes_once_and_retries_once(mocked):
    mocked.post(COMPLETION_URL, status=401, json=yandex_error(401, 16, "expired", "Unauthorized"))
    mocked.post(COMPLETION_URL, json=answer("after refresh"))
    tokens = Tokens()
    provider = make(token_provider=tokens)
    assert provider.complete("Hi").text == "after refresh"
    assert tokens.calls == 1
    assert [c.request.headers["Authorization"] for c in mocked.calls] == [
        f"Bearer {IAM_TOKEN}", "Bearer t1.fresh-1"]
    assert all(c.request.headers["x-folder-id"] == FOLDER for c in mocked.calls)


def test_401_twice_gives_up_after_one_retry(mocked):
    mocked.post(COMPLETION_URL, status=401, json=yandex_error(401, 16, "expired", "Unauthorized"))
    tokens = Tokens()
    with pytest.raises(AuthenticationError, match="even after a refresh"):
        make(token_provider=tokens).complete("Hi")
    assert tokens.calls == 1
    assert len(mocked.calls) == 2


def test_403_is_not_refreshed(mocked):
    mocked.post(COMPLETION_URL, status=403, json=yandex_error(403, 7, "denied", "Forbidden"))
    tokens = Tokens()
    with pytest.raises(AuthenticationError):
        make(token_provider=tokens).complete("Hi")
    assert tokens.calls == 0 and len(mocked.calls) == 1


def test_token_is_fetched_lazily_then_refreshed_by_age(mocked):
    mocked.post(COMPLETION_URL, json=answer())
    tokens = Tokens()
    provider = make(api_key=None, token_provider=tokens, extra={"token_max_age": 100})
    assert tokens.calls == 0  # constructing does no I/O
    now = [1000.0]
    provider._tokens.clock = lambda: now[0]
    provider.complete("Hi")
    now[0] += 99
    provider.complete("Hi")
    assert tokens.calls == 1
    now[0] += 2
    provider.complete("Hi")
    assert tokens.calls == 2
    assert [c.request.headers["Authorization"] for c in mocked.calls] == [
        "Bearer t1.fresh-1", "Bearer t1.fresh-1", "Bearer t1.fresh-2"]


def test_api_key_is_used_until_it_reaches_the_max_age(mocked):
    mocked.post(COMPLETION_URL, json=answer())
    tokens = Tokens()
    provider = make(token_provider=tokens)  # default token_max_age: 3600 s
    now = [provider._tokens.clock()]
    provider._tokens.clock = lambda: now[0]
    provider.complete("Hi")
    now[0] += 3601
    provider.complete("Hi")
    assert tokens.calls == 1
    assert [c.request.headers["Authorization"] for c in mocked.calls] == [
        f"Bearer {IAM_TOKEN}", "Bearer t1.fresh-1"]


def test_token_from_provider_is_stripped(mocked):
    mocked.post(COMPLETION_URL, json=answer())
    make(api_key=None, token_provider=lambda: f"{NEW_TOKEN}\n").complete("Hi")
    assert mocked.calls[0].request.headers["Authorization"] == f"Bearer {NEW_TOKEN}"


def test_token_provider_in_config_extra(mocked):
    mocked.post(COMPLETION_URL, json=answer())
    provider = make(api_key=None, extra={"token_provider": lambda: NEW_TOKEN})
    provider.complete("Hi")
    assert mocked.calls[0].request.headers["Authorization"] == f"Bearer {NEW_TOKEN}"
    assert "<lambda>" not in repr(provider.config)


def test_api_key_mode_with_token_provider_uses_api_key_scheme(mocked):
    mocked.post(COMPLETION_URL, json=answer())
    make(api_key=None, token_provider=lambda: API_KEY, extra={"auth": "api-key"}).complete("Hi")
    assert mocked.calls[0].request.headers["Authorization"] == f"Api-Key {API_KEY}"


def test_failing_token_provider_is_an_authentication_error(mocked):
    def broken():
        raise RuntimeError(f"IAM endpoint down, last token {IAM_TOKEN}")

    with pytest.raises(AuthenticationError) as info:
        make(api_key=None, token_provider=broken).complete("Hi")
    assert "RuntimeError" in str(info.value) and IAM_TOKEN not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # tracebacks stay clean
    assert len(mocked.calls) == 0


@pytest.mark.parametrize("value, problem", [(None, "NoneType"), ("", "empty"), ("Bearer t1.x", "spaces")])
def test_bad_token_provider_values(mocked, value, problem):
    with pytest.raises(AuthenticationError, match=problem):
        make(api_key=None, token_provider=lambda: value).complete("Hi")
    assert len(mocked.calls) == 0


# Streaming -------------------------------------------------------------------------------


def frame(text, status="ALTERNATIVE_STATUS_PARTIAL", completion_tokens="1"):
    return {
        "result": {
            "alternatives": [{"message": {"role": "assistant", "text": text}, "status": status}],
            "usage": {"inputTextTokens": "12", "completionTokens": completion_tokens,
                      "totalTokens": str(12 + int(completion_tokens))},
            "modelVersion": "09.02.2025",
        }
    }


RUSSIAN_FRAMES = [
    frame("Один", completion_tokens="1"),
    frame("Один, два", completion_tokens="3"),
    frame("Один, два, три, четыре", completion_tokens="7"),
    frame("Один, два, три, четыре, пять.", "ALTERNATIVE_STATUS_FINAL", completion_tokens="10"),
]


def test_stream_turns_cumulative_frames_into_deltas(mocked):
    mocked.post(COMPLETION_URL, body=frames_body(*RUSSIAN_FRAMES))
    stream = make().stream("Считай до пяти", GenerationParams(max_tokens=50))
    chunks = list(stream)
    assert chunks == ["Один", ", два", ", три, четыре", ", пять."]
    assert "".join(chunks) == "Один, два, три, четыре, пять." == stream.text
    assert stream.usage == Usage(12, 10, 22)
    assert stream.finish_reason == "stop"
    assert stream.provider == "yandex"
    body = sent_json(mocked.calls[0])
    assert body["completionOptions"] == {"stream": True, "maxTokens": "50"}
    assert mocked.calls[0].request.headers["Authorization"] == f"Bearer {IAM_TOKEN}"


def test_stream_with_crlf_blank_lines_and_repeated_frames(mocked):
    raw = frames_body(RUSSIAN_FRAMES[0]).replace(b"\n", b"\r\n") + b"\r\n\n"
    raw += frames_body(RUSSIAN_FRAMES[0], RUSSIAN_FRAMES[1], RUSSIAN_FRAMES[3])
    mocked.post(COMPLETION_URL, body=raw)
    chunks = list(make().stream("Hi"))
    assert "".join(chunks) == "Один, два, три, четыре, пять."
    assert "" not in chunks


def test_stream_frame_that_does_not_extend_the_text_replaces_it(mocked, caplog):
    mocked.post(COMPLETION_URL, body=frames_body(
        frame("Hello wor"),
        frame("Hello, world"),
        frame("Hello, world!", "ALTERNATIVE_STATUS_FINAL"),
    ))
    caplog.set_level(logging.WARNING, logger="multi_llm_orchestrator")
    chunks = list(make().stream("Hi"))
    # The rewritten frame is yielded whole (append-only consumers cannot un-print),
    # and the stream then continues from the new text.
    assert chunks == ["Hello wor", "Hello, world", "!"]
    assert any("rewrote" in r.getMessage() for r in caplog.records)


def test_stream_stops_at_the_final_status(mocked):
    raw = frames_body(frame("a"), frame("ab", "ALTERNATIVE_STATUS_TRUNCATED_FINAL")) + b"not json at all\n"
    mocked.post(COMPLETION_URL, body=raw)
    stream = make().stream("Hi")
    assert list(stream) == ["a", "b"]
    assert stream.finish_reason == "length"


def test_stream_ending_without_final_status(mocked):
    mocked.post(COMPLETION_URL, body=frames_body(frame("a"), frame("ab")))
    stream = make().stream("Hi")
    assert list(stream) == ["a", "b"]
    assert stream.finish_reason is None and stream.usage == Usage(12, 1, 13)


def test_error_line_mid_stream_raises_typed_error(mocked):
    error = yandex_error(429, 8, "quota exceeded mid-stream", "Too Many Requests")
    mocked.post(COMPLETION_URL, body=frames_body(frame("Один"), error, frame("Один, два")))
    stream = make().stream("Hi")
    assert next(stream) == "Один"
    with pytest.raises(RateLimitError, match="quota exceeded mid-stream") as info:
        next(stream)
    assert info.value.status_code == 429 and info.value.provider == "yandex"
    assert stream.done


def test_error_line_with_server_code_mid_stream(mocked):
    mocked.post(COMPLETION_URL, body=frames_body(frame("x"), yandex_error(500, 13, "boom", "Internal")))
    with pytest.raises(ProviderUnavailableError, match="boom"):
        list(make().stream("Hi"))


@pytest.mark.parametrize("raw", [b"", b"\n\n", b"{not json\n", b"[1, 2]\n", b'{"result": {}}\n'])
def test_broken_streams_are_response_format_errors(mocked, raw):
    mocked.post(COMPLETION_URL, body=raw)
    with pytest.raises(ResponseFormatError):
        list(make().stream("Hi"))


def test_stream_errors_before_the_first_frame_are_raised_by_stream(mocked):
    mocked.post(COMPLETION_URL, status=403, json=yandex_error(403, 7, "denied", "Forbidden"))
    with pytest.raises(AuthenticationError, match="ai.languageModels.user"):
        make().stream("Hi")


def test_stream_401_refreshes_and_retries(mocked):
    mocked.post(COMPLETION_URL, status=401, json=yandex_error(401, 16, "expired", "Unauthorized"))
    mocked.post(COMPLETION_URL, body=frames_body(*RUSSIAN_FRAMES))
    tokens = Tokens()
    stream = make(token_provider=tokens).stream("Hi")
    assert stream.text == "" and tokens.calls == 1
    assert "".join(stream) == "Один, два, три, четыре, пять."
    assert mocked.calls[1].request.headers["Authorization"] == "Bearer t1.fresh-1"


def test_closing_a_stream_early_releases_it(mocked):
    mocked.post(COMPLETION_URL, body=frames_body(*RUSSIAN_FRAMES))
    stream = make().stream("Hi")
    assert next(stream) == "Один"
    stream.close()
    assert stream.done
    with pytest.raises(StopIteration):
        next(stream)


# Health check ----------------------------------------------------------------------------


def test_health_check_uses_tokenize(mocked):
    mocked.post(TOKENIZE_URL, json={"tokens": [{"id": "1", "text": "ping", "special": False}],
                                    "modelVersion": "07.03.2024"})
    assert make().health_check() is True
    (call,) = mocked.calls
    assert sent_json(call) == {"modelUri": f"gpt://{FOLDER}/yandexgpt/latest", "text": "ping"}
    assert call.request.headers["Authorization"] == f"Bearer {IAM_TOKEN}"
    assert call.request.headers["x-folder-id"] == FOLDER


@pytest.mark.parametrize("status", [400, 401, 403, 429, 500])
def test_health_check_false_on_errors(mocked, status):
    mocked.post(TOKENIZE_URL, status=status, json=yandex_error(status, 3, "nope"))
    assert make().health_check() is False
    assert len(mocked.calls) == 1


def test_health_check_false_on_connection_error_and_bad_body(mocked):
    assert make().health_check() is False  # nothing registered: connection refused
    mocked.post(TOKENIZE_URL, json={"unexpected": True})
    assert make().health_check() is False


def test_health_check_falls_back_to_a_one_token_completion(mocked):
    mocked.post(TOKENIZE_URL, status=404, body="404 page not found")
    mocked.post(COMPLETION_URL, json=answer("p", "ALTERNATIVE_STATUS_TRUNCATED_FINAL"))
    assert make().health_check() is True
    assert sent_json(mocked.calls[1])["completionOptions"] == {"stream": False, "maxTokens": "1"}


def test_health_check_fallback_failing_is_false(mocked):
    mocked.post(TOKENIZE_URL, status=405, body="method not allowed")
    mocked.post(COMPLETION_URL, status=404, json=yandex_error(404, 5, "no such model"))
    assert make().health_check() is False
    assert len(mocked.calls) == 2


def test_health_check_refreshes_on_401(mocked):
    mocked.post(TOKENIZE_URL, status=401, json=yandex_error(401, 16, "expired"))
    mocked.post(TOKENIZE_URL, json={"tokens": []})
    tokens = Tokens()
    assert make(token_provider=tokens).health_check() is True
    assert tokens.calls == 1


def test_health_check_never_raises_even_when_token_provider_does():
    def broken():
        raise RuntimeError("down")

    assert make(api_key=None, token_provider=broken).health_check() is False


# Secrets ---------------------------------------------------------------------------------


def test_secrets_never_in_repr_logs_or_errors(mocked, caplog):
    caplog.set_level(logging.DEBUG)
    echoed = f"IAM token {IAM_TOKEN} is expired; new {NEW_TOKEN} too"
    mocked.post(COMPLETION_URL, status=401, json=yandex_error(401, 16, echoed, "Unauthorized"))
    mocked.post(TOKENIZE_URL, status=401, body=echoed)
    provider = make(token_provider=lambda: NEW_TOKEN, max_retries=1)
    errors = []
    with pytest.raises(ProviderError) as info:
        provider.complete("Hi")
    errors.append(info.value)
    assert provider.health_check() is False
    api = make(api_key=API_KEY, extra={"auth": "api-key"})
    mocked.post(COMPLETION_URL, status=403, body=f"key {API_KEY} denied")
    with pytest.raises(ProviderError) as info:
        api.complete("Hi")
    errors.append(info.value)

    shown = [repr(provider), str(provider), repr(provider.config), repr(api), repr(api.config),
             json.dumps(provider.config.to_dict())]
    shown += [str(e) for e in errors] + [repr(e) for e in errors] + [e.message for e in errors]
    shown += [r.getMessage() for r in caplog.records] + [str(r.args) for r in caplog.records]
    assert caplog.records, "expected DEBUG logs to check"
    for secret in (IAM_TOKEN, NEW_TOKEN, API_KEY):
        for text in shown:
            assert secret not in text
    assert "<redacted>" in str(errors[0])


def test_a_slow_token_provider_counts_against_the_timeout(mocked):
    def slow():
        time.sleep(0.3)
        return NEW_TOKEN

    with pytest.raises(ProviderTimeoutError, match="token"):
        make(api_key=None, token_provider=slow, timeout=0.2).complete("Hi")
    assert len(mocked.calls) == 0

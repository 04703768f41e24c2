"""No API key, authorization key or access token is ever shown (issue 8).

Every provider type that takes a secret (GigaChat with an authorization key and OAuth
tokens, or a ready access token; OpenAI-compatible with an api_key; YandexGPT with an
IAM token and with an API key) is called at DEBUG level, successfully and failing
(401, 5xx, reset, cut and malformed bodies, TLS errors, a key with a newline), against
servers that echo the credentials they received in their error messages, as some
proxies do. Then every log record (message, args, extras, traceback), every exception
(message and the traceback a logger would print), the reprs of providers, configs and
the Router, configs' to_dict/to_json, Router events and stats are searched for each
secret.
"""

import base64
import json
import logging
import threading
import traceback

import pytest
import responses
from fakes.fault_server import FaultServer

from multi_llm_orchestrator import (
    AllProvidersFailedError,
    AuthenticationError,
    OrchestratorError,
    ProviderConfig,
    Router,
)
from multi_llm_orchestrator.providers.gigachat import GigaChatProvider
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider
from multi_llm_orchestrator.providers.yandexgpt import YandexGPTProvider

# Distinctive values that cannot occur by chance in any message.
GIGA_AUTH_KEY = base64.b64encode(b"secrets-suite-client:secrets-suite-XYZZY-secret").decode()
GIGA_WRONG_KEY = base64.b64encode(b"secrets-suite-client:wrong-PLUGH-secret").decode()
GIGA_READY_TOKEN = "giga-ready-token-Zorkmid-4242"
OPENAI_KEY = "openai-suite-key-Frobozz-0451"
OPENAI_WRONG_KEY = "openai-suite-key-Wrong-Flathead-0452"
YANDEX_IAM = "yc-iam-suite-token-Grue-0777"
YANDEX_API_KEY = "yc-api-suite-key-Bedquilt-0303"
YANDEX_FRESH_IAM = "yc-iam-suite-token-Fresh-Aragain-0999"
GATEWAY_KEY = "gateway-suite-key-Cyclops-0101"
STATIC_SECRETS = (
    GIGA_AUTH_KEY, GIGA_WRONG_KEY, GIGA_READY_TOKEN, OPENAI_KEY, OPENAI_WRONG_KEY,
    YANDEX_IAM, YANDEX_API_KEY, YANDEX_FRESH_IAM, GATEWAY_KEY,
)
YANDEX_BASE = "https://yandex.secrets.test"
YANDEX_URL = YANDEX_BASE + "/foundationModels/v1/completion"
TOKENIZE_URL = YANDEX_BASE + "/foundationModels/v1/tokenize"


class Exposure:
    """Everything the tests saw that a user could print, checked for secrets at the end."""

    def __init__(self):
        self.texts = []
        self.lock = threading.Lock()
        self.extra_secrets = []  # e.g. the OAuth tokens a fake server issued
        self.uses_sockets = True

    def add(self, where, text):
        with self.lock:
            self.texts.append((where, text))

    def error(self, where, exc):
        self.add(where + " str", str(exc))
        self.add(where + " repr", repr(exc))
        self.add(where + " traceback", "".join(traceback.format_exception(exc)))
        for index, error in enumerate(getattr(exc, "errors", ())):
            self.add(f"{where} errors[{index}]", f"{error} {error!r} {getattr(error, 'message', '')}")

    def call(self, where, function, *args, **kwargs):
        """Run ``function``; a typed error is recorded (and returned), anything else fails."""
        try:
            result = function(*args, **kwargs)
            if hasattr(result, "__next__"):  # a stream: consume it
                return "".join(result)
            return result
        except OrchestratorError as exc:
            self.error(where, exc)
            return exc

    def objects(self, where, *things):
        for thing in things:
            self.add(f"{where} {type(thing).__name__} repr", repr(thing))
            self.add(f"{where} {type(thing).__name__} str", str(thing))
            config = getattr(thing, "config", None)
            if isinstance(config, ProviderConfig):
                self.add(f"{where} config repr", repr(config))
                self.add(f"{where} config str", str(config))
                self.add(f"{where} config to_dict", repr(config.to_dict()))
                self.add(f"{where} config to_json", config.to_json())

    def router(self, where, router):
        self.objects(where, router)
        self.add(where + " stats", repr(router.stats()))
        for provider in router.providers:
            self.objects(where, provider)

    def records(self, records):
        for record in records:
            self.add(f"log {record.name}:{record.levelname}", record_text(record))

    def check(self):
        secrets = STATIC_SECRETS + tuple(self.extra_secrets)
        leaks = [(where, secret) for where, text in self.texts for secret in secrets if secret in text]
        assert leaks == [], leaks[:5]
        return len(self.texts)


def record_text(record):
    """What a handler could print: formatted message, args, extra attributes, traceback."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    parts = [formatter.format(record), record.getMessage(), repr(record.args)]
    parts += [f"{key}={value!r}" for key, value in vars(record).items()]
    if record.exc_info:
        parts.append(formatter.formatException(record.exc_info))
    return "\n".join(parts)


@pytest.fixture
def exposure(caplog):
    seen = Exposure()
    caplog.set_level(logging.DEBUG, logger="multi_llm_orchestrator")
    caplog.set_level(logging.DEBUG, logger="urllib3")
    caplog.set_level(logging.DEBUG)
    yield seen
    records = caplog.get_records("setup") + caplog.get_records("call")
    seen.records(records)
    assert any(r.name.startswith("multi_llm_orchestrator") and r.levelno == logging.DEBUG for r in records)
    assert any(r.name.startswith("urllib3") for r in records) or not seen.uses_sockets
    assert seen.check() > 20


def with_router(exposure, where, *providers, **kwargs):
    router = Router(breaker=False, **kwargs)
    for provider in providers:
        router.add_provider(provider)
    router.add_listener(lambda event: exposure.add(where + " event", repr(event)))
    return router


def tls_url(server, path):
    """An https URL to a plain-HTTP port: the TLS handshake fails."""
    return f"https://127.0.0.1:{server.port}{path}"


# GigaChat ----------------------------------------------------------------------------------


def test_gigachat_keys_and_tokens_stay_hidden(exposure):
    kinds = ("500", "429", "reset", "malformed", "cut", "sse_error")
    with FaultServer("gigachat", auth_key=GIGA_AUTH_KEY, echo_secrets=True, retry_after=5) as server:
        urls = dict(base_url=server.gigachat_url, auth_url=server.auth_url, max_retries=0, timeout=2)
        giga = GigaChatProvider(ProviderConfig(name="giga", api_key=GIGA_AUTH_KEY, **urls))
        wrong = GigaChatProvider(ProviderConfig(name="giga-wrong-key", api_key=GIGA_WRONG_KEY, **urls))
        ready = GigaChatProvider(ProviderConfig(name="giga-ready", extra={"access_token": GIGA_READY_TOKEN}, **urls))
        tls = GigaChatProvider(ProviderConfig(
            name="giga-tls", api_key=GIGA_AUTH_KEY, base_url=tls_url(server, "/api/v1"),
            auth_url=tls_url(server, "/api/v2/oauth"), max_retries=0, timeout=2))
        providers = (giga, wrong, ready, tls)
        exposure.objects("giga before", *providers)

        assert exposure.call("giga complete", giga.complete, "Hello").text.startswith("Fault-free")
        assert exposure.call("giga stream", giga.stream, "Hello").startswith("Fault-free")
        assert exposure.call("giga models", giga.list_models) == [server.model]
        assert giga.health_check() is True
        for kind in kinds:
            for method in (giga.complete, giga.stream):
                server.force(kind, at_chunk=1)
                assert isinstance(exposure.call(f"giga {kind}", method, "Hello"), OrchestratorError)
        # The server forgets its tokens: a 401 quoting the token, a refresh, an answer.
        with server._lock:
            revoked = list(server.tokens_issued)
            server.tokens_issued.clear()
        assert exposure.call("giga refresh", giga.complete, "Hello").text.startswith("Fault-free")
        assert server.counts["oauth"] == 2 and server.counts["unauthorized"] == 1

        failure = exposure.call("giga wrong key", wrong.complete, "Hello")
        assert isinstance(failure, AuthenticationError) and "authorization key" in failure.message
        failure = exposure.call("giga ready token", ready.complete, "Hello")
        assert isinstance(failure, AuthenticationError) and failure.status_code == 401
        failure = exposure.call("giga tls", tls.complete, "Hello")
        assert "TLS" in str(failure) and "russian_trusted_root_ca" in str(failure)
        assert wrong.health_check() is False and ready.health_check() is False

        with with_router(exposure, "giga router", wrong, ready, tls) as router:
            failure = exposure.call("giga router", router.complete, "Hello")
            assert isinstance(failure, AllProvidersFailedError) and len(failure.errors) == 3
            exposure.call("giga router stream", router.route_stream, "Hello")
            exposure.router("giga router", router)
            assert router.health_check() == {"giga-wrong-key": False, "giga-ready": False, "giga-tls": False}
        exposure.objects("giga after", *providers)
        for provider in providers:
            provider.close()
    exposure.extra_secrets += revoked + server.tokens_issued
    assert len(exposure.extra_secrets) >= 2


# OpenAI-compatible -------------------------------------------------------------------------


def test_openai_compatible_keys_stay_hidden(exposure):
    kinds = ("500", "429", "reset", "malformed", "cut", "sse_error")
    with FaultServer("openai", api_key=OPENAI_KEY, echo_secrets=True, retry_after=5) as server:
        def make(name, key, base_url=server.openai_url, **extra):
            return OpenAICompatibleProvider(ProviderConfig(
                name=name, model=server.model, base_url=base_url, api_key=key, max_retries=0, timeout=2,
                extra=extra))

        good = make("openai", OPENAI_KEY)
        # Credentials in extra headers (a gateway's key, a hand-made Authorization).
        gateway = make("openai-gateway", None, headers={
            "X-Api-Key": GATEWAY_KEY, "Authorization": f"Bearer {OPENAI_KEY}", "HTTP-Referer": "https://app.test"})
        assert "https://app.test" in repr(gateway.config)
        wrong = make("openai-wrong-key", OPENAI_WRONG_KEY)
        newline = make("openai-newline", OPENAI_KEY + "\n")  # pasted with its line end
        tls = make("openai-tls", OPENAI_KEY, tls_url(server, "/v1"))
        providers = (good, gateway, wrong, newline, tls)
        exposure.objects("openai before", *providers)
        assert exposure.call("openai gateway", gateway.complete, "Hello").text.startswith("Fault-free")

        assert exposure.call("openai complete", good.complete, "Hello").text.startswith("Fault-free")
        assert exposure.call("openai stream", good.stream, "Hello").startswith("Fault-free")
        assert exposure.call("openai models", good.list_models) == [server.model]
        for kind in kinds:
            for method in (good.complete, good.stream):
                server.force(kind, at_chunk=1)
                assert isinstance(exposure.call(f"openai {kind}", method, "Hello"), OrchestratorError)

        failure = exposure.call("openai wrong key", wrong.complete, "Hello")
        assert isinstance(failure, AuthenticationError) and "check api_key" in failure.message
        assert "<redacted>" in failure.message  # the server did quote the key back
        failure = exposure.call("openai newline", newline.complete, "Hello")
        assert "value not shown" in failure.message
        failure = exposure.call("openai tls", tls.stream, "Hello")
        assert "TLS" in failure.message

        with with_router(exposure, "openai router", wrong, newline, tls) as router:
            failure = exposure.call("openai router", router.complete, "Hello")
            assert isinstance(failure, AllProvidersFailedError) and len(failure.errors) == 3
            exposure.call("openai router stream", router.route_stream, "Hello")
            exposure.router("openai router", router)
        exposure.objects("openai after", *providers)
        for provider in providers:
            provider.close()


# YandexGPT ---------------------------------------------------------------------------------


def yandex_answer(text):
    return {"result": {
        "alternatives": [{"message": {"role": "assistant", "text": text}, "status": "ALTERNATIVE_STATUS_FINAL"}],
        "usage": {"inputTextTokens": "3", "completionTokens": "2", "totalTokens": "5"}, "modelVersion": "1"}}


def echo_credentials(status):
    """A responses callback answering ``status`` with the received credentials quoted."""
    def callback(request):
        received = request.headers.get("Authorization", "")
        body = {"error": {"grpcCode": 16, "httpCode": status, "httpStatus": "Unauthorized",
                          "message": f"credentials {received!r} rejected", "details": []}}
        return status, {"Content-Type": "application/json"}, json.dumps(body)
    return callback


@pytest.mark.parametrize("auth, secret", [("iam", YANDEX_IAM), ("api-key", YANDEX_API_KEY)])
def test_yandexgpt_tokens_and_api_keys_stay_hidden(exposure, auth, secret):
    exposure.uses_sockets = False  # `responses` answers inside requests
    def make(name, **fields):
        fields.setdefault("api_key", secret)
        return YandexGPTProvider(ProviderConfig(
            name=name, folder_id="b1gsecretsfolder", base_url=YANDEX_BASE, max_retries=0, timeout=2,
            extra={"auth": auth}, **fields))

    def refreshing_token():
        return YANDEX_FRESH_IAM

    def failing_token_provider():
        raise RuntimeError(f"metadata service refused {YANDEX_FRESH_IAM}")

    yandex = make("yandex")
    refreshing = YandexGPTProvider(ProviderConfig(
        name="yandex-refresh", api_key=secret, folder_id="b1gsecretsfolder", base_url=YANDEX_BASE,
        max_retries=0, timeout=2), token_provider=refreshing_token)
    broken = YandexGPTProvider(ProviderConfig(
        name="yandex-broken", folder_id="b1gsecretsfolder", base_url=YANDEX_BASE, max_retries=0, timeout=2),
        token_provider=failing_token_provider)
    providers = (yandex, refreshing, broken)
    exposure.objects("yandex before", *providers)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        mocked.add("POST", YANDEX_URL, json=yandex_answer("Yandex answer"))
        mocked.add("POST", YANDEX_URL, body=json.dumps(yandex_answer("Yandex stream")) + "\n")
        mocked.add_callback("POST", YANDEX_URL, callback=echo_credentials(401))
        mocked.add_callback("POST", YANDEX_URL, callback=echo_credentials(500))
        mocked.add("POST", YANDEX_URL, body=b"\xff\xfe not json")
        mocked.add_callback("POST", YANDEX_URL, callback=echo_credentials(401))  # refreshing: old token
        mocked.add("POST", YANDEX_URL, json=yandex_answer("after refresh"))
        mocked.add_callback("POST", TOKENIZE_URL, callback=echo_credentials(401))

        assert exposure.call("yandex complete", yandex.complete, "Hello").text == "Yandex answer"
        assert exposure.call("yandex stream", yandex.stream, "Hello") == "Yandex stream"
        failure = exposure.call("yandex 401", yandex.complete, "Hello")
        assert isinstance(failure, AuthenticationError) and "<redacted>" in failure.message
        assert isinstance(exposure.call("yandex 500", yandex.stream, "Hello"), OrchestratorError)
        assert isinstance(exposure.call("yandex malformed", yandex.complete, "Hello"), OrchestratorError)
        assert exposure.call("yandex refresh", refreshing.complete, "Hello").text == "after refresh"
        failure = exposure.call("yandex broken token_provider", broken.complete, "Hello")
        assert isinstance(failure, AuthenticationError) and "RuntimeError" in failure.message
        assert yandex.health_check() is False

        mocked.add_callback("POST", YANDEX_URL, callback=echo_credentials(401))
        with with_router(exposure, "yandex router", yandex, broken) as router:
            failure = exposure.call("yandex router", router.complete, "Hello")
            assert isinstance(failure, AllProvidersFailedError) and len(failure.errors) == 2
            exposure.router("yandex router", router)
    exposure.objects("yandex after", *providers)
    for provider in providers:
        provider.close()


# Every provider type in one Router ---------------------------------------------------------


def test_a_router_over_every_provider_type_failing_shows_no_secret(exposure):
    with FaultServer("gigachat", auth_key=GIGA_AUTH_KEY, echo_secrets=True) as giga_server, \
            FaultServer("openai", api_key=OPENAI_KEY, echo_secrets=True) as openai_server, \
            responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        mocked.add_passthru("http://127.0.0.1")
        for _ in range(2):
            mocked.add_callback("POST", YANDEX_URL, callback=echo_credentials(401))
        providers = [
            GigaChatProvider(ProviderConfig(
                name="giga", api_key=GIGA_WRONG_KEY, base_url=giga_server.gigachat_url,
                auth_url=giga_server.auth_url, max_retries=0)),
            OpenAICompatibleProvider(ProviderConfig(
                name="openai", model="fault-model", base_url=openai_server.openai_url, api_key=OPENAI_WRONG_KEY,
                max_retries=0)),
            YandexGPTProvider(ProviderConfig(
                name="yandex-iam", api_key=YANDEX_IAM, folder_id="b1gsecretsfolder", base_url=YANDEX_BASE,
                max_retries=0)),
            YandexGPTProvider(ProviderConfig(
                name="yandex-key", api_key=YANDEX_API_KEY, folder_id="b1gsecretsfolder", base_url=YANDEX_BASE,
                max_retries=0, extra={"auth": "api-key"})),
        ]
        with with_router(exposure, "all router", *providers, timeout=5) as router:
            failure = exposure.call("all router", router.complete, "Hello")
            assert isinstance(failure, AllProvidersFailedError)
            assert [type(error).__name__ for error in failure.errors] == ["AuthenticationError"] * 4
            assert str(failure).count("AuthenticationError") == 4
            exposure.router("all router", router)
        exposure.add("all router closed", repr(router))


# One scrubber for every HTTP provider (HttpProvider.scrub) ---------------------------------

OLLAMA_KEY = "ollama-cloud-suite-key-Zork-0808"
HEADER_KEY = "gateway-header-suite-key-Thief-0606"


def assert_hidden(error, *secrets):
    """Neither the message nor the traceback a logger would print shows any secret."""
    texts = (str(error), repr(error), error.message, *map(str, error.args),
             "".join(traceback.format_exception(error)))
    for secret in secrets:
        assert all(secret not in text for text in texts), secret
    assert "<redacted>" in error.message


def echo_all_headers(status):
    """A responses callback answering ``status`` with every received header quoted."""
    def callback(request):
        return status, {"Content-Type": "application/json"}, json.dumps({"error": f"got {dict(request.headers)}"})
    return callback


def test_ollama_error_bodies_echoing_the_key_are_scrubbed():
    from multi_llm_orchestrator.providers.ollama import OllamaProvider

    ollama = OllamaProvider(ProviderConfig(
        name="ollama-cloud", api_key=OLLAMA_KEY, base_url="https://ollama.secrets.test", max_retries=0))
    with responses.RequestsMock() as mocked:
        mocked.add_callback("POST", "https://ollama.secrets.test/api/chat", callback=echo_all_headers(400))
        mocked.add("POST", "https://ollama.secrets.test/api/chat", body=json.dumps(
            {"message": {"role": "assistant", "content": "Hi"}, "done": False}) + "\n" + json.dumps(
            {"error": f"upstream refused key {OLLAMA_KEY}"}) + "\n")
        mocked.add("POST", "https://ollama.secrets.test/api/chat", json={"error": f"bad key {OLLAMA_KEY}"})
        with pytest.raises(OrchestratorError) as refused:
            ollama.complete("Hello")
        assert_hidden(refused.value, OLLAMA_KEY)
        stream = ollama.stream("Hello")
        assert next(stream) == "Hi"
        with pytest.raises(OrchestratorError) as cut:
            next(stream)
        assert_hidden(cut.value, OLLAMA_KEY)
        with pytest.raises(OrchestratorError) as in_body:
            ollama.complete("Hello")
        assert_hidden(in_body.value, OLLAMA_KEY)


def test_openai_secret_extra_headers_echoed_in_a_401_are_scrubbed():
    gateway = OpenAICompatibleProvider(ProviderConfig(
        name="gateway", model="m", base_url="https://gateway.secrets.test/v1", max_retries=0,
        extra={"headers": {"X-Api-Key": HEADER_KEY, "Authorization": f"Bearer {OPENAI_KEY}"}}))
    with responses.RequestsMock() as mocked:
        mocked.add_callback("POST", "https://gateway.secrets.test/v1/chat/completions", callback=echo_all_headers(401))
        with pytest.raises(AuthenticationError) as refused:
            gateway.complete("Hello")
    assert_hidden(refused.value, HEADER_KEY, OPENAI_KEY)


def test_stream_error_events_echoing_tokens_are_scrubbed():
    giga = GigaChatProvider(ProviderConfig(
        name="giga", base_url="https://giga.secrets.test/api/v1", max_retries=0,
        extra={"access_token": GIGA_READY_TOKEN}))
    yandex = YandexGPTProvider(ProviderConfig(
        name="yandex", api_key=YANDEX_IAM, folder_id="b1gsecretsfolder", base_url=YANDEX_BASE, max_retries=0))
    sse = {"Content-Type": "text/event-stream"}
    with responses.RequestsMock() as mocked:
        for event in ({"status": 500, "message": f"token {GIGA_READY_TOKEN} broke"},
                      {"error": {"message": f"token {GIGA_READY_TOKEN} expired", "code": 401}}):
            mocked.add("POST", "https://giga.secrets.test/api/v1/chat/completions", headers=sse,
                       body=f"data: {json.dumps(event)}\n\n")
        mocked.add("POST", YANDEX_URL, body=json.dumps(
            {"error": {"grpcCode": 16, "httpCode": 401, "message": f"token {YANDEX_IAM} expired"}}) + "\n")
        for provider, secret in ((giga, GIGA_READY_TOKEN), (giga, GIGA_READY_TOKEN), (yandex, YANDEX_IAM)):
            with pytest.raises(OrchestratorError) as failure:
                "".join(provider.stream("Hello"))
            assert_hidden(failure.value, secret)

"""Secrets in quoted bodies (issue 11): a loopback server echoes the request's headers
(the API key, the bearer token, extra secret headers) in a 200 non-JSON body, a 200 JSON
body without choices, error bodies and stream events, padded so the secret also straddles
every quote length. No key, token or start of one may reach an exception, a log record
at any level, a listener event or the CLI's output, for any provider or list_models."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from multi_llm_orchestrator import Router, cli
from multi_llm_orchestrator import config as config_module
from multi_llm_orchestrator.errors import OrchestratorError, ProviderError
from multi_llm_orchestrator.providers.base import ProviderConfig
from multi_llm_orchestrator.providers.gigachat import GigaChatProvider
from multi_llm_orchestrator.providers.ollama import OllamaProvider
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider
from multi_llm_orchestrator.providers.yandexgpt import YandexGPTProvider

OPENAI_KEY = "sk-test-SECRET-0123456789abcdef"
HEADER_KEY = "hk-header-SECRET-9876543210"
OLLAMA_KEY = "ol-cloud-SECRET-5555666677778888"
GIGA_AUTH_KEY = "R2lnYUNsaWVudDpTRUNSRVQtZ2lnYS1jbGllbnQtc2VjcmV0/x+y="
GIGA_TOKEN = "gc-token-SECRET-abcdef0123456789"
YANDEX_TOKEN = "t1.yc-SECRET-iam-token-0123456789"
SECRETS = (OPENAI_KEY, HEADER_KEY, OLLAMA_KEY, GIGA_AUTH_KEY, GIGA_TOKEN, YANDEX_TOKEN)
# Quotes are cut at 60, 80, 120, 200 and 300 characters: pads that put a secret across each.
PADS = (0, 45, 70, 100, 110, 190, 280, 290)


class EchoServer:
    """Answers every request with ``mode`` (see ``respond``), quoting the request headers
    (Authorization first) after ``pad`` characters; OAuth gets a real token."""

    def __init__(self) -> None:
        self.mode = "text200"
        self.pad = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each answer waits for a delayed ACK (40 ms)

            def do_GET(self) -> None:
                server.respond(self)

            def do_POST(self) -> None:
                server.respond(self)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def echo(self, handler) -> str:
        headers = sorted(handler.headers.items(), key=lambda item: item[0].lower() != "authorization")
        return "x" * self.pad + " ".join(f"{name}: {value}" for name, value in headers)

    def respond(self, handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        handler.rfile.read(length)
        status, content_type = 200, "text/plain"
        if handler.path.endswith("/oauth"):
            body = json.dumps({"access_token": GIGA_TOKEN, "expires_at": 4102444800000})
            content_type = "application/json"
        elif self.mode == "text200":
            body = self.echo(handler)
        elif self.mode == "json200":  # JSON, but none of the fields the provider needs
            body, content_type = json.dumps({"echo": self.echo(handler)}), "application/json"
        elif self.mode.startswith("error-json-"):
            status, content_type = int(self.mode[-3:]), "application/json"
            body = json.dumps({"error": {"message": self.echo(handler)}, "message": self.echo(handler)})
        elif self.mode.startswith("error-"):
            status, body = int(self.mode[-3:]), self.echo(handler)
        elif self.mode == "stream-garbage":  # a stream whose event is not JSON
            content_type = "text/event-stream" if "ollama" not in handler.path else "application/x-ndjson"
            line = self.echo(handler)
            body = f"data: {line}\n\n" if content_type == "text/event-stream" else line + "\n"
        else:  # pragma: no cover
            raise AssertionError(self.mode)
        data = body.encode()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def echo():
    server = EchoServer()
    yield server
    server.close()


def providers(url):
    common = {"max_retries": 0, "timeout": 5}
    return [
        OpenAICompatibleProvider(ProviderConfig(
            name="openai", model="m", base_url=url + "/v1", api_key=OPENAI_KEY,
            extra={"headers": {"X-Api-Key": HEADER_KEY}}, **common)),
        OllamaProvider(ProviderConfig(name="ollama", base_url=url + "/ollama", api_key=OLLAMA_KEY, **common)),
        GigaChatProvider(ProviderConfig(
            name="giga", api_key=GIGA_AUTH_KEY, base_url=url + "/api/v1", auth_url=url + "/oauth", **common)),
        YandexGPTProvider(ProviderConfig(name="yandex", api_key=YANDEX_TOKEN, folder_id="b1gfolder", base_url=url, **common)),
    ]


def assert_clean(text: str) -> None:
    for secret in SECRETS:
        for variant in (secret, secret.replace("/", "\\/")):
            assert variant[:8] not in text, f"{variant[:8]!r} leaked in: {text!r}"


def exercise(provider):
    """Every public call of the provider; the texts of what each raised."""
    texts = []
    for call in (
        lambda: provider.complete("Hi"),
        lambda: list(provider.stream("Hi")),
        lambda: provider.list_models(timeout=5),
        lambda: provider.health_check(timeout=5),
    ):
        try:
            call()
        except OrchestratorError as exc:
            texts += [str(exc), repr(exc), getattr(exc, "message", "")]
    return texts


MODES = ["text200", "json200", "error-400", "error-401", "error-404", "error-429", "error-500",
         "error-json-400", "error-json-403", "error-json-503", "stream-garbage"]


@pytest.mark.parametrize("mode", MODES)
def test_no_secret_in_errors_or_logs_for_any_provider(echo, caplog, mode):
    caplog.set_level(logging.DEBUG, logger="multi_llm_orchestrator")
    echo.mode = mode
    quoted = 0
    for pad in PADS:
        echo.pad = pad
        for provider in providers(echo.url):
            with provider:
                for text in exercise(provider):
                    assert_clean(text)
                    quoted += "<redacted>" in text
    for record in caplog.records:
        assert_clean(record.getMessage())
    assert_clean(caplog.text)
    if mode in ("text200", "error-400", "error-json-400", "stream-garbage"):
        assert quoted, "the body was never quoted: the test proves nothing"


@pytest.mark.parametrize("mode", ["text200", "json200", "error-json-401", "error-500", "stream-garbage"])
def test_no_secret_in_router_errors_and_listener_events(echo, mode):
    echo.mode = mode
    events = []
    for pad in PADS:
        echo.pad = pad
        with Router(breaker=False) as router:
            router.add_listener(events.append)
            for provider in providers(echo.url):
                router.add_provider(provider)
            for call in (lambda: router.route("Hi"), lambda: list(router.route_stream("Hi"))):
                with pytest.raises(OrchestratorError) as failure:
                    call()
                assert_clean(str(failure.value))
                for error in getattr(failure.value, "errors", []):
                    assert_clean(str(error))
            report = router.health_report(timeout=5)
            assert_clean(repr(report))
    assert events
    for event in events:
        assert_clean(repr(event))


@pytest.mark.parametrize("mode", ["text200", "json200", "error-json-400", "stream-garbage"])
def test_no_secret_in_cli_output(echo, tmp_path, capsys, mode):
    echo.mode, echo.pad = mode, 70
    config = {"strategy": "first-available", "breaker": False, "providers": [
        {"type": "openai", "name": "openai", "model": "m", "base_url": echo.url + "/v1", "api_key": OPENAI_KEY,
         "max_retries": 0, "extra": {"headers": {"X-Api-Key": HEADER_KEY}}},
        {"type": "ollama", "name": "ollama", "base_url": echo.url + "/ollama", "api_key": OLLAMA_KEY, "max_retries": 0},
        {"type": "gigachat", "name": "giga", "api_key": GIGA_AUTH_KEY, "base_url": echo.url + "/api/v1",
         "auth_url": echo.url + "/oauth", "max_retries": 0},
        {"type": "yandexgpt", "name": "yandex", "api_key": YANDEX_TOKEN, "folder_id": "b1gfolder",
         "base_url": echo.url, "max_retries": 0},
    ]}
    path = tmp_path / "router.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    for args in (["ask", "Hi"], ["ask", "--stream", "Hi"], ["models"], ["health"], ["health", "--json"], ["-vv", "ask", "Hi"]):
        code = cli.main(["--config", str(path), *args])
        captured = capsys.readouterr()
        assert code != 0 or args[0] in ("models", "health") or mode == "error-json-400"
        assert_clean(captured.out)
        assert_clean(captured.err)
    logging.getLogger().handlers.clear()  # -vv installed a handler on the root logger


def test_scrub_removes_a_secret_cut_by_a_quote():
    provider = OpenAICompatibleProvider(ProviderConfig(name="o", model="m", api_key=OPENAI_KEY))
    with provider:
        body = "Authorization: Bearer " + OPENAI_KEY
        for cut in range(len(body) - len(OPENAI_KEY) + 8, len(body) + 1):
            quoted = f"the response is not valid JSON: {body[:cut]!r} (more)"
            assert_clean(provider.scrub(quoted))
        assert provider.scrub("a key sk-test... that is merely similar") == "a key sk-test... that is merely similar"
    assert config_module.scrub_secrets("x" + GIGA_AUTH_KEY.replace("/", "\\/"), ["unrelated-secret"]) != ""


def test_scrubbing_covers_the_json_and_url_escaped_forms_of_a_base64_key():
    provider = GigaChatProvider(ProviderConfig(name="g", api_key=GIGA_AUTH_KEY, base_url="http://h/api/v1"))
    with provider:
        escaped = json.dumps({"auth": "Basic " + GIGA_AUTH_KEY}).replace("/", "\\/")
        assert_clean(provider.scrub(escaped))
        from urllib.parse import quote

        assert provider.scrub(quote(GIGA_AUTH_KEY, safe="")) == "<redacted>"


def test_a_provider_error_raised_by_any_public_method_is_scrubbed():
    class Leaky(OpenAICompatibleProvider):
        def list_models(self, timeout=None):
            raise ProviderError(f"server said: {OPENAI_KEY}", provider=self.name)

    with Leaky(ProviderConfig(name="o", model="m", api_key=OPENAI_KEY)) as provider:
        with pytest.raises(ProviderError) as failure:
            provider.list_models()
    assert OPENAI_KEY not in str(failure.value) and "<redacted>" in str(failure.value)

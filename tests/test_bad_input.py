"""Bad input gets a typed error whose message says what is wrong (issue 8).

One table: each row does one wrong thing and names the error type and a fragment of
the message the caller must see. Rows cover prompts, messages, generation parameters,
Router settings, provider settings, configuration files and bad server answers
(nothing listening, non-UTF-8 bytes, JSON of the wrong shape).
"""

import json
import math
import socket

import pytest

from multi_llm_orchestrator import (
    AllProvidersFailedError,
    ConfigurationError,
    GenerationParams,
    MockProvider,
    NoProvidersError,
    ProviderConfig,
    ProviderUnavailableError,
    ResponseFormatError,
    Router,
)
from multi_llm_orchestrator.breaker import BreakerPolicy
from multi_llm_orchestrator.providers.gigachat import GigaChatProvider
from multi_llm_orchestrator.providers.openai import OpenAICompatibleProvider
from multi_llm_orchestrator.providers.yandexgpt import YandexGPTProvider

CHAT = "/v1/chat/completions"


class Context:
    """What a row may use: a working Router, a loopback HTTP server, a temp dir, env."""

    def __init__(self, httpserver, tmp_path, monkeypatch):
        self.http = httpserver
        self.tmp = tmp_path
        self.env = monkeypatch
        self.router = Router()
        self.router.add_provider(MockProvider(ProviderConfig(name="mock", extra={"delay": 0})))

    def openai(self, body, content_type="application/json", **fields):
        """An OpenAI-compatible provider whose server answers ``body`` to every chat request."""
        self.http.expect_request(CHAT, method="POST").respond_with_data(body, content_type=content_type)
        return OpenAICompatibleProvider(ProviderConfig(
            name="wire", model="m", base_url=self.http.url_for("/v1"), max_retries=0, timeout=5, **fields))

    def config_file(self, text):
        path = self.tmp / "router.json"
        path.write_text(text, encoding="utf-8")
        return Router.from_config(path)

    def close(self):
        self.router.close()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def nothing_listening(ctx):
    provider = OpenAICompatibleProvider(ProviderConfig(
        name="nowhere", model="m", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0, timeout=2))
    with Router() as router:
        router.add_provider(provider)
        try:
            router.complete("hi")
        except AllProvidersFailedError as exc:
            assert [type(error) for error in exc.errors] == [ProviderUnavailableError]
            assert "could not connect" in str(exc.errors[0])
            raise


def yandex(**fields):
    fields.setdefault("folder_id", "b1gfolder")
    fields.setdefault("api_key", "yandex-bad-input-token")
    return YandexGPTProvider(ProviderConfig(name="y", base_url="http://127.0.0.1:9", **fields))


def sse(*events):
    return b"".join(b"data: " + event + b"\n\n" for event in events)


GOOD_CHUNK = json.dumps({"choices": [{"index": 0, "delta": {"content": "ok"}}]}).encode()

CASES = [
    # Prompts and messages
    ("empty prompt", lambda c: c.router.route(""), ConfigurationError, "The prompt is empty"),
    ("whitespace prompt", lambda c: c.router.route(" \n\t "), ConfigurationError, "The prompt is empty"),
    ("int prompt", lambda c: c.router.route(42), ConfigurationError, "got int"),
    ("bytes prompt", lambda c: c.router.complete(b"hello"), ConfigurationError, "got bytes"),
    ("None prompt", lambda c: c.router.route_stream(None), ConfigurationError, "got NoneType"),
    ("empty message list", lambda c: c.router.route([]), ConfigurationError, "message list is empty"),
    ("message without content", lambda c: c.router.route([{"role": "user"}]), ConfigurationError,
     "lacks the key 'content'"),
    ("message without role", lambda c: c.router.route({"content": "hi"}), ConfigurationError, "lacks the key 'role'"),
    ("bad role", lambda c: c.router.route([{"role": "wizard", "content": "hi"}]), ConfigurationError,
     "role must be one of system, user, assistant"),
    ("content not text", lambda c: c.router.route([{"role": "user", "content": 7}]), ConfigurationError,
     "content must be a str"),
    ("only empty messages", lambda c: c.router.route([{"role": "user", "content": "  "}]), ConfigurationError,
     "Every message is empty"),
    ("list of ints", lambda c: c.router.route([1, 2]), ConfigurationError, "Message #0 must be a Message or a dict"),
    # Generation parameters
    ("temperature too high", lambda c: GenerationParams(temperature=3), ConfigurationError,
     "temperature must be in [0, 2]"),
    ("temperature not a number", lambda c: GenerationParams(temperature="hot"), ConfigurationError,
     "temperature must be a number"),
    ("temperature NaN", lambda c: GenerationParams(temperature=math.nan), ConfigurationError,
     "temperature must be a number"),
    ("top_p zero", lambda c: GenerationParams(top_p=0), ConfigurationError, "top_p must be in (0, 1]"),
    ("max_tokens zero", lambda c: GenerationParams(max_tokens=0), ConfigurationError, "max_tokens must be an integer > 0"),
    ("max_tokens float", lambda c: GenerationParams(max_tokens=1.5), ConfigurationError, "max_tokens must be an integer"),
    ("max_tokens bool", lambda c: GenerationParams(max_tokens=True), ConfigurationError, "max_tokens must be an integer"),
    ("stop of ints", lambda c: GenerationParams(stop=[1, 2]), ConfigurationError, "stop must be a str or a list of str"),
    ("extra not a dict", lambda c: GenerationParams(extra=["seed"]), ConfigurationError, "extra must be a dict"),
    ("params as a dict", lambda c: c.router.route("hi", {"temperature": 0.5}), ConfigurationError,
     "params must be a GenerationParams"),
    ("YandexGPT temperature above 1", lambda c: yandex().complete("hi", GenerationParams(temperature=1.5)),
     ConfigurationError, "YandexGPT accepts temperature in [0, 1]"),
    # Router settings
    ("unknown strategy", lambda c: Router("fastest"), ConfigurationError, "Unknown strategy 'fastest'; valid: round-robin"),
    ("duplicate provider name",
     lambda c: c.router.add_provider(MockProvider(ProviderConfig(name="mock"))), ConfigurationError,
     "A provider named 'mock' is already registered"),
    ("not a provider", lambda c: c.router.add_provider("openai"), ConfigurationError, "add_provider takes a BaseProvider"),
    ("no providers", lambda c: Router().route("hi"), NoProvidersError, "has no providers"),
    ("negative Router timeout", lambda c: Router(timeout=-1), ConfigurationError,
     "timeout must be a number of seconds > 0"),
    ("zero call timeout", lambda c: c.router.complete("hi", timeout=0), ConfigurationError,
     "timeout must be a number of seconds > 0"),
    ("negative provider timeout", lambda c: ProviderConfig(name="p", timeout=-5), ConfigurationError,
     "timeout of 'p' must be a number of seconds > 0"),
    ("hedge_after negative", lambda c: Router(hedge_after=-0.1), ConfigurationError,
     "hedge_after must be seconds > 0 or a percentile like 'p95'"),
    ("hedge_after p100", lambda c: Router(hedge_after="p100"), ConfigurationError, "percentile like 'p95'; got 'p100'"),
    ("hedge_after word", lambda c: Router(hedge_after="fast"), ConfigurationError, "got 'fast'"),
    ("max_hedges zero", lambda c: Router(hedge_after=0.1, max_hedges=0), ConfigurationError,
     "max_hedges must be an integer >= 1"),
    ("breaker threshold zero", lambda c: Router(breaker={"failure_threshold": 0}), ConfigurationError,
     "failure_threshold must be an integer >= 1"),
    ("breaker negative cooldown", lambda c: BreakerPolicy(cooldown=-1), ConfigurationError,
     "cooldown must be a number of seconds >= 0"),
    ("breaker unknown setting", lambda c: Router(breaker={"threshold": 3}), ConfigurationError,
     "Unknown breaker setting in ['threshold']; valid: failure_threshold"),
    ("breaker of a wrong type", lambda c: Router(breaker="yes"), ConfigurationError,
     "breaker must be a BreakerPolicy, a dict or a bool"),
    ("when_all_open unknown", lambda c: Router(when_all_open="panic"), ConfigurationError,
     "when_all_open must be one of closest, fail"),
    ("max_workers zero", lambda c: Router(max_workers=0), ConfigurationError, "max_workers must be an integer >= 1"),
    # Provider settings
    ("empty provider name", lambda c: ProviderConfig(name=" "), ConfigurationError, "name must be a non-empty str"),
    ("base_url without scheme", lambda c: ProviderConfig(name="p", base_url="localhost:8000"), ConfigurationError,
     "base_url of 'p' must be an http(s) URL"),
    ("ftp base_url", lambda c: ProviderConfig(name="p", base_url="ftp://x"), ConfigurationError,
     "must be an http(s) URL such as 'https://host/api/v1'; got 'ftp://x'"),
    ("max_retries negative", lambda c: ProviderConfig(name="p", max_retries=-1), ConfigurationError,
     "max_retries of 'p' must be in [0, 100]"),
    ("YandexGPT without folder_id", lambda c: yandex(folder_id=None), ConfigurationError, "needs folder_id"),
    ("YandexGPT without api_key", lambda c: yandex(api_key=None), ConfigurationError, "needs api_key"),
    ("YandexGPT unknown auth", lambda c: yandex(extra={"auth": "oauth"}), ConfigurationError,
     "must be 'iam' (IAM token, the default) or 'api-key'"),
    ("GigaChat without api_key", lambda c: GigaChatProvider(ProviderConfig(name="g")), ConfigurationError,
     "needs api_key: the authorization key"),
    ("GigaChat unknown scope", lambda c: GigaChatProvider(ProviderConfig(name="g", api_key="a2V5", scope="PERS")),
     ConfigurationError, "Unknown GigaChat scope 'PERS'"),
    ("OpenAI without model", lambda c: OpenAICompatibleProvider(ProviderConfig(name="o")), ConfigurationError,
     "needs model=..."),
    ("missing ca_bundle file",
     lambda c: OpenAICompatibleProvider(ProviderConfig(name="o", model="m", ca_bundle=str(c.tmp / "none.pem"))),
     ConfigurationError, "ca_bundle of 'o' does not exist"),
    # Configuration files
    ("config: invalid JSON", lambda c: c.config_file('{"providers": [}'), ConfigurationError, "invalid JSON at line 1"),
    ("config: unknown key", lambda c: c.config_file('{"stratgy": "random", "providers": [{"type": "mock"}]}'),
     ConfigurationError, "unknown key 'stratgy'; valid keys: strategy"),
    ("config: unknown provider key", lambda c: c.config_file('{"providers": [{"type": "mock", "modle": "x"}]}'),
     ConfigurationError, "unknown key 'modle'"),
    ("config: unknown type", lambda c: c.config_file('{"providers": [{"type": "gpt5"}]}'), ConfigurationError,
     "has an unknown type 'gpt5'; valid types:"),
    ("config: missing variable",
     lambda c: (c.env.delenv("MLO_BAD_INPUT_KEY", raising=False),
                c.config_file('{"providers": [{"type": "mock", "api_key": "${MLO_BAD_INPUT_KEY}"}]}')),
     ConfigurationError, "environment variable MLO_BAD_INPUT_KEY is not set"),
    ("config: no providers", lambda c: c.config_file('{"strategy": "random"}'), ConfigurationError,
     "needs a non-empty 'providers' list"),
    ("config: not an object", lambda c: c.config_file("[1, 2]"), ConfigurationError, "must be a JSON object"),
    ("config: file missing", lambda c: Router.from_config(c.tmp / "absent.json"), ConfigurationError, "not found"),
    ("config: bad provider value", lambda c: c.config_file('{"providers": [{"type": "mock", "timeout": "soon"}]}'),
     ConfigurationError, "timeout must be a number; got 'soon'"),
    # Bad servers
    ("nothing listening", nothing_listening, AllProvidersFailedError, "could not connect"),
    ("non-UTF-8 JSON body", lambda c: c.openai(b'{"choices": "\xff\xfe\xfa"}').complete("hi"), ResponseFormatError,
     "not valid JSON"),
    ("non-UTF-8 stream", lambda c: "".join(c.openai(sse(GOOD_CHUNK, b'{"x": "\xff\xc3"}'), "text/event-stream")
                                           .stream("hi")),
     ResponseFormatError, "not valid UTF-8"),
    ("JSON body is a list", lambda c: c.openai(b"[1, 2, 3]").complete("hi"), ResponseFormatError,
     "answered list, not an object"),
    ("JSON body without choices", lambda c: c.openai(b'{"id": "x", "object": "chat.completion"}').complete("hi"),
     ResponseFormatError, "answered without choices"),
    ("empty choices", lambda c: c.openai(b'{"choices": []}').complete("hi"), ResponseFormatError,
     "answered without choices"),
    ("stream event not an object", lambda c: "".join(c.openai(sse(b"[1, 2]"), "text/event-stream").stream("hi")),
     ResponseFormatError, "not a JSON object"),
    ("JSON nested too deep", lambda c: c.openai(b"[" * 100_000).complete("hi"), ResponseFormatError,
     "not valid JSON (RecursionError)"),
    ("error code that is no number", lambda c: c.openai(b'{"object": "error", "code": "\xc2\xb2", "message": "odd"}')
     .complete("hi"), ProviderUnavailableError, "the server reported an error mid-response: odd"),
    ("stream error code of 5,000 digits",
     lambda c: "".join(c.openai(sse(b'{"error": {"message": "odd", "code": "' + b"5" * 5000 + b'"}}'),
                                "text/event-stream").stream("hi")),
     ProviderUnavailableError, "error mid-stream: odd"),
    ("stream cut before [DONE]", lambda c: "".join(c.openai(b"data: " + GOOD_CHUNK + b"\n\n", "text/event-stream")
                                                   .stream("hi")),
     ProviderUnavailableError, "ended before [DONE]"),
]


@pytest.fixture
def ctx(httpserver, tmp_path, monkeypatch):
    context = Context(httpserver, tmp_path, monkeypatch)
    yield context
    context.close()


@pytest.mark.parametrize("action, error, fragment", [pytest.param(*row[1:], id=row[0]) for row in CASES])
def test_bad_input_gets_a_typed_error_with_a_clear_message(ctx, action, error, fragment):
    with pytest.raises(error) as caught:
        action(ctx)
    assert fragment in str(caught.value)
    assert type(caught.value).__module__ == "multi_llm_orchestrator.errors"


def test_the_table_covers_enough_cases():
    assert len(CASES) >= 20
    assert len({row[0] for row in CASES}) == len(CASES)


def test_bad_input_leaves_the_router_usable_and_uncounted(ctx):
    for bad in ("", 42, [{"role": "wizard", "content": "x"}]):
        with pytest.raises(ConfigurationError):
            ctx.router.complete(bad)
    assert ctx.router.route("still fine") == "Mock response to: still fine"
    stats = ctx.router.stats()
    assert (stats["calls"], stats["failed"], stats["providers"]["mock"]["calls"]) == (1, 0, 1)

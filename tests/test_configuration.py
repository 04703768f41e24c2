"""Configuration from dicts and JSON files: good files, every bad case, ${VAR} expansion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multi_llm_orchestrator import ConfigurationError, MockProvider, Router
from multi_llm_orchestrator.configuration import ProviderSpec, RouterConfig, expand_env, load_config
from multi_llm_orchestrator.providers import BaseProvider, ProviderConfig, register_provider

SECRET = "sk-config-secret-0123456789"


@pytest.fixture(autouse=True)
def own_registry(monkeypatch):
    """Types registered by a test vanish after it."""
    import multi_llm_orchestrator.providers as registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def mock(name: str, **fields):
    return {"type": "mock", "name": name, "extra": {"delay": 0}, **fields}


def write(tmp_path, data, name="router.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


# Good configurations ------------------------------------------------------------------


def test_a_full_file_builds_a_router_with_every_setting(tmp_path):
    path = write(tmp_path, {
        "strategy": "first-available",
        "timeout": 4,
        "hedge_after": "p95",
        "max_hedges": 2,
        "hedge_budget": 0.2,
        "breaker": {"failure_threshold": 2, "cooldown": 1.5},
        "when_all_open": "fail",
        "health_ttl": 3,
        "health_timeout": 1,
        "max_workers": 4,
        "providers": [mock("a", weight=2), mock("b", model="mock-unavailable", timeout=2.5)],
    })
    with Router.from_config(path) as router:
        assert [p.name for p in router.providers] == ["a", "b"]
        assert router.strategy.name == "first-available"
        assert router.timeout == 4.0
        assert router.when_all_open == "fail"
        assert router._breaker_policy.failure_threshold == 2 and router._breaker_policy.cooldown == 1.5
        assert router._hedge.after == "p95" and router._hedge.max_hedges == 2 and router._hedge.budget == 0.2
        b = router.providers[1]
        assert isinstance(b, MockProvider) and b.model == "mock-unavailable" and b.config.timeout == 2.5
        assert router.providers[0].config.weight == 2.0
        assert router.route("Hi") == "Mock response to: Hi"


def test_defaults_are_the_routers_own_and_name_defaults_to_type():
    with Router.from_config({"providers": [{"type": "mock", "extra": {"delay": 0}}]}) as router:
        assert router.strategy.name == "round-robin"
        assert router.timeout is None and router._hedge is None
        assert router._breaker_policy.enabled is True
        assert [p.name for p in router.providers] == ["mock"]


def test_path_may_be_str_or_pathlike(tmp_path):
    path = write(tmp_path, {"providers": [mock("a")]})
    for source in (path, str(path)):
        with Router.from_config(source) as router:
            assert router.route("x").startswith("Mock response")


def test_breaker_false_disables_breakers():
    config = load_config({"breaker": False, "providers": [mock("a")]})
    assert config.breaker is False
    with config.build() as router:
        assert router._breaker_policy.enabled is False


def test_strings_are_converted_to_the_fields_type():
    config = load_config({
        "timeout": "2.5", "hedge_after": "0.5", "max_workers": "3", "breaker": {"failure_threshold": "4", "enabled": "yes"},
        "providers": [mock("a", timeout="7", max_retries="0", verify_ssl="false", weight="1.5")],
    })
    assert config.timeout == 2.5 and config.hedge_after == 0.5 and config.max_workers == 3
    assert config.breaker == {"failure_threshold": 4, "enabled": True}
    provider = config.providers[0].config
    assert (provider.timeout, provider.max_retries, provider.verify_ssl, provider.weight) == (7.0, 0, False, 1.5)
    # A str field stays a str even when it looks like a number.
    assert load_config({"providers": [mock("a", scope="123")]}).providers[0].config.scope == "123"


def test_registered_custom_type_is_usable():
    class EchoProvider(MockProvider):
        type_name = "echo-test"

    register_provider("echo-test", EchoProvider)
    with Router.from_config({"providers": [{"type": "echo-test", "name": "e", "extra": {"delay": 0}}]}) as router:
        assert isinstance(router.providers[0], EchoProvider)


def test_registered_type_given_as_module_path_is_imported_on_use():
    register_provider("mock-by-path", "multi_llm_orchestrator.providers.mock:MockProvider")
    spec = load_config({"providers": [{"type": "mock-by-path", "name": "p"}]}).providers[0]
    assert isinstance(spec.build(), MockProvider)


def test_a_type_whose_module_is_missing_is_a_configuration_error():
    register_provider("missing-module", "no_such_module_here:Provider")
    with pytest.raises(ConfigurationError, match="'missing-module' could not be loaded"):
        Router.from_config({"providers": [{"type": "missing-module", "name": "p"}]})


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "config.example.json"
EXAMPLE_ENV = ("GIGACHAT_AUTH_KEY", "YANDEX_API_KEY", "YANDEX_FOLDER_ID", "OPENAI_API_KEY")


def test_example_config_file_parses_once_its_variables_are_set(monkeypatch):
    for name in EXAMPLE_ENV + ("GIGACHAT_SCOPE", "OLLAMA_URL", "OPENAI_BASE_URL", "GIGACHAT_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="GIGACHAT_AUTH_KEY is not set"):
        RouterConfig.from_file(EXAMPLE)
    for name in EXAMPLE_ENV:
        monkeypatch.setenv(name, f"value-of-{name}")
    config = RouterConfig.from_file(EXAMPLE)
    assert [spec.type for spec in config.providers] == ["gigachat", "yandexgpt", "openai", "ollama", "mock"]
    by_type = {spec.type: spec.config for spec in config.providers}
    assert by_type["gigachat"].scope == "GIGACHAT_API_PERS"
    assert by_type["yandexgpt"].folder_id == "value-of-YANDEX_FOLDER_ID"
    assert by_type["ollama"].base_url == "http://127.0.0.1:11434"
    assert "value-of" not in config.to_json().replace("value-of-YANDEX_FOLDER_ID", "")


# Environment variables ----------------------------------------------------------------


def test_env_variables_expand_everywhere(monkeypatch):
    monkeypatch.setenv("MLO_TEST_KEY", SECRET)
    monkeypatch.setenv("MLO_TEST_MODEL", "mock-normal")
    monkeypatch.setenv("MLO_TEST_HOST", "127.0.0.1")
    monkeypatch.setenv("MLO_TEST_TIMEOUT", "9")
    config = load_config({
        "timeout": "${MLO_TEST_TIMEOUT}",
        "providers": [{
            "type": "mock", "name": "a", "api_key": "${MLO_TEST_KEY}", "model": "${MLO_TEST_MODEL}",
            "base_url": "http://${MLO_TEST_HOST}:${MLO_TEST_PORT:-8080}/v1",
            "extra": {"delay": 0, "nested": {"list": ["x-${MLO_TEST_MODEL}", 1]}, "price": "$$5"},
        }],
    })
    provider = config.providers[0].config
    assert config.timeout == 9.0
    assert provider.api_key == SECRET and provider.model == "mock-normal"
    assert provider.base_url == "http://127.0.0.1:8080/v1"
    assert provider.extra["nested"] == {"list": ["x-mock-normal", 1]}
    assert provider.extra["price"] == "$5"


def test_a_missing_variable_names_it_and_where_it_was_used(monkeypatch):
    monkeypatch.delenv("MLO_TEST_UNSET", raising=False)
    with pytest.raises(ConfigurationError) as caught:
        load_config({"providers": [mock("a", api_key="${MLO_TEST_UNSET}")]})
    assert "MLO_TEST_UNSET" in str(caught.value) and "providers[0].api_key" in str(caught.value)
    with pytest.raises(ConfigurationError, match="MLO_TEST_UNSET"):
        load_config({"providers": [mock("a", extra={"delay": 0, "deep": ["${MLO_TEST_UNSET}"]})]})


def test_an_empty_variable_falls_back_to_the_default_and_bad_references_are_errors(monkeypatch):
    monkeypatch.setenv("MLO_TEST_EMPTY", "")
    assert expand_env("${MLO_TEST_EMPTY:-fallback}") == "fallback"
    with pytest.raises(ConfigurationError, match="MLO_TEST_EMPTY is not set"):
        expand_env("${MLO_TEST_EMPTY}")
    with pytest.raises(ConfigurationError, match="not a valid reference"):
        expand_env({"a": "${1BAD}"})
    assert expand_env({"k": ["${A}", 3, None]}, environ={"A": "v"}) == {"k": ["v", 3, None]}


# Bad configurations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"strategy": "round-robin"}, "non-empty 'providers' list"),
        ({"providers": []}, "non-empty 'providers' list"),
        ({"providers": {"type": "mock"}}, "non-empty 'providers' list"),
        ({"providers": ["mock"]}, r"providers\[0\] must be an object"),
        ({"providers": [{"name": "a"}]}, r"providers\[0\] has no 'type'; valid types: .*mock"),
        ({"providers": [{"type": "nope", "name": "a"}]}, r"unknown type 'nope'; valid types: gigachat, mock, ollama, openai"),
        ({"strategyy": "random", "providers": [mock("a")]}, r"unknown key 'strategyy'; valid keys: strategy, timeout, .*providers"),
        ({"providers": [mock("a", modle="x")]}, r"providers\[0\] \('a'\): unknown key 'modle'; valid keys: name, model"),
        ({"breaker": {"treshold": 1}, "providers": [mock("a")]}, r"breaker: unknown key 'treshold'; valid keys: failure_threshold"),
        ({"breaker": "sometimes", "providers": [mock("a")]}, "breaker must be an object or true/false"),
        ({"providers": [mock("a", timeout="soon")]}, r"providers\[0\] \('a'\): timeout must be a number; got 'soon'"),
        ({"providers": [mock("a", max_retries=1.5)]}, "max_retries must be an integer; got 1.5"),
        ({"providers": [mock("a", verify_ssl="maybe")]}, "verify_ssl must be true/false"),
        ({"providers": [mock("a", extra=[1])]}, "extra must be an object"),
        ({"providers": [{"type": "mock", "name": None}]}, "name must be a string; got None"),
        ({"providers": [mock("a"), mock("a")]}, r"providers\[1\] \('a'\): the name is already used by providers\[0\]"),
        ({"providers": [mock("a", model="mock-bogus")]}, r"providers\[0\] \('a'\): Unknown mock model 'mock-bogus'"),
        ({"providers": [mock("a", base_url="ftp://host")]}, r"providers\[0\] \('a'\): .*base_url of 'a' must be an http"),
        ({"providers": [mock("a", timeout=0)]}, r"providers\[0\] \('a'\): .*timeout of 'a' must be a number of seconds > 0"),
        ({"strategy": "fastest", "providers": [mock("a")]}, "Unknown strategy 'fastest'; valid: round-robin"),
        ({"timeout": -1, "providers": [mock("a")]}, "timeout must be a number of seconds > 0"),
        ({"hedge_after": "p200", "providers": [mock("a")]}, "hedge_after must be"),
        ({"when_all_open": "panic", "providers": [mock("a")]}, "when_all_open must be one of"),
    ],
)
def test_bad_configuration_names_what_is_wrong(data, expected):
    with pytest.raises(ConfigurationError, match=expected):
        Router.from_config(data)


def test_a_source_that_is_neither_dict_nor_path_is_rejected():
    with pytest.raises(ConfigurationError, match="dict or the path"):
        Router.from_config(["providers"])  # type: ignore[arg-type]


def test_a_file_holding_a_list_is_rejected(tmp_path):
    with pytest.raises(ConfigurationError, match="must be a JSON object"):
        Router.from_config(write(tmp_path, [mock("a")]))


def test_missing_file(tmp_path):
    missing = tmp_path / "nowhere.json"
    with pytest.raises(ConfigurationError, match="nowhere.json not found"):
        Router.from_config(missing)


def test_a_directory_is_not_a_file(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot be read"):
        Router.from_config(tmp_path)


def test_bad_json_names_file_line_and_column(tmp_path):
    path = write(tmp_path, '{\n  "strategy": "random",\n  "providers": [\n    {"type": "mock",}\n  ]\n}\n', "broken.json")
    with pytest.raises(ConfigurationError) as caught:
        Router.from_config(path)
    message = str(caught.value)
    assert "broken.json" in message and "line 4" in message and "column" in message


def test_a_provider_that_fails_to_build_leaves_nothing_open(monkeypatch):
    closed = []
    monkeypatch.setattr(MockProvider, "close", lambda self: closed.append(self.name))
    with pytest.raises(ConfigurationError, match="Unknown mock model"):
        Router.from_config({"providers": [mock("a"), mock("b"), mock("c", model="mock-wrong")]})
    assert sorted(closed) == ["a", "b"]


# Secrets ----------------------------------------------------------------------------------


def test_secrets_never_appear_in_to_dict_json_repr_or_errors(monkeypatch):
    monkeypatch.setenv("MLO_TEST_KEY", SECRET)
    config = load_config({"providers": [
        mock("a", api_key="${MLO_TEST_KEY}"),
        {"type": "mock", "name": "b", "api_key": SECRET, "extra": {"delay": 0, "access_token": SECRET}},
    ]})
    assert config.providers[0].config.api_key == SECRET
    for shown in (repr(config), str(config), config.to_json(), json.dumps(config.to_dict()), repr(config.providers)):
        assert SECRET not in shown
    assert all("api_key" not in entry for entry in config.to_dict()["providers"])
    with pytest.raises(ConfigurationError) as caught:
        load_config({"providers": [mock("a", api_key=12345)]})
    assert "12345" not in str(caught.value) and "api_key must be a string" in str(caught.value)
    with Router.from_config({"providers": [mock("a", api_key=SECRET)]}) as router:
        assert SECRET not in repr(router) and SECRET not in repr(router.providers[0].config)


def test_to_dict_round_trips_without_secrets():
    data = {"strategy": "random", "breaker": {"cooldown": 2.0}, "providers": [mock("a", api_key=SECRET, weight=3.0)]}
    config = load_config(data)
    again = RouterConfig.from_dict(config.to_dict())
    assert again.strategy == "random" and again.breaker == {"cooldown": 2.0}
    assert again.providers[0].config.weight == 3.0 and again.providers[0].config.api_key is None
    assert again.to_dict() == config.to_dict()
    assert ProviderSpec("mock", ProviderConfig(name="x", api_key=SECRET)).to_dict()["type"] == "mock"


def test_router_kwargs_only_holds_settings_that_are_set():
    config = load_config({"strategy": "random", "providers": [mock("a")]})
    assert config.router_kwargs() == {"strategy": "random"}
    assert isinstance(config.providers[0].build(), BaseProvider)


# HTTP provider types ------------------------------------------------------------------------


def test_every_builtin_type_builds_from_a_config(monkeypatch):
    monkeypatch.setenv("MLO_TEST_KEY", SECRET)
    with Router.from_config({"providers": [
        {"type": "gigachat", "name": "giga", "api_key": "${MLO_TEST_KEY}", "scope": "GIGACHAT_API_CORP"},
        {"type": "yandexgpt", "name": "yandex", "api_key": "${MLO_TEST_KEY}", "folder_id": "b1gfolder",
         "extra": {"auth": "api-key"}},
        {"type": "ollama", "name": "local", "model": "llama3.2", "base_url": "http://127.0.0.1:11434"},
        {"type": "openai", "name": "oa", "model": "gpt-test", "api_key": "${MLO_TEST_KEY}",
         "base_url": "http://127.0.0.1:8000/v1"},
    ]}) as router:
        kinds = {p.name: type(p).__name__ for p in router.providers}
        assert kinds == {"giga": "GigaChatProvider", "yandex": "YandexGPTProvider", "local": "OllamaProvider",
                         "oa": "OpenAICompatibleProvider"}
        giga = router.providers[0]
        assert giga.scope == "GIGACHAT_API_CORP" and giga.model == "GigaChat"
        assert all(SECRET not in repr(p) and SECRET not in repr(p.config) for p in router.providers)


def test_an_http_providers_own_check_is_reported_with_its_place():
    with pytest.raises(ConfigurationError, match=r"providers\[1\] \('oa'\): .*needs model"):
        Router.from_config({"providers": [mock("a"), {"type": "openai", "name": "oa", "base_url": "http://127.0.0.1:1/v1"}]})


def test_an_openai_provider_from_config_answers_over_loopback(tmp_path, monkeypatch):
    from fakes import FakeOpenAIServer

    monkeypatch.setenv("MLO_TEST_KEY", SECRET)
    with FakeOpenAIServer(api_key=SECRET) as server:
        port = server.port
        monkeypatch.setenv("MLO_TEST_PORT", str(port))
        path = write(tmp_path, {"strategy": "first-available", "timeout": 10, "providers": [
            {"type": "openai", "name": "fake", "model": server.model, "api_key": "${MLO_TEST_KEY}",
             "base_url": "http://127.0.0.1:${MLO_TEST_PORT}/v1", "max_retries": "0"},
            mock("backup"),
        ]})
        config = RouterConfig.from_file(path)
        with config.build() as router:
            completion = router.complete("Hello over loopback")
            streamed = "".join(router.route_stream("Stream it"))
        assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert completion.provider == "fake" and "Hello over loopback" in completion.text
    assert "Stream it" in streamed
    assert SECRET not in config.to_json() and "api_key" not in config.to_dict()["providers"][0]
    assert config.to_dict()["providers"][0]["base_url"] == f"http://127.0.0.1:{port}/v1"

"""Hostile configuration (issue 11): numbers too large to use, malformed URLs and paths,
absurd nesting, huge configurations and an empty ``--config``. Each is a
ConfigurationError naming what is wrong (CLI exit status 2), never an OverflowError,
RecursionError or bare ValueError at call time."""

from __future__ import annotations

import gc
import json
import time

import pytest

from multi_llm_orchestrator import Router
from multi_llm_orchestrator import cli, configuration
from multi_llm_orchestrator.breaker import BreakerPolicy
from multi_llm_orchestrator.configuration import load_config
from multi_llm_orchestrator.errors import ConfigurationError
from multi_llm_orchestrator.hedging import HedgePolicy
from multi_llm_orchestrator.providers import MockProvider
from multi_llm_orchestrator.providers.base import ProviderConfig

MOCK = {"type": "mock", "name": "m", "extra": {"delay": 0}}


def deep(levels):
    value = {}
    for _ in range(levels):
        value = {"x": value}
    return value


def run_cli(capsys, *args):
    code = cli.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write(tmp_path, data, name="router.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


# Numbers too large to use -------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: Router(timeout=1e12), "timeout"),
        (lambda: Router(hedge_after=1e12), "hedge_after"),
        (lambda: Router(health_interval=1e12), "health_interval"),
        (lambda: Router(health_timeout=1e10), "health_timeout"),
        (lambda: Router(breaker={"cooldown": 1e12}), "cooldown"),
        (lambda: BreakerPolicy(auth_cooldown=1e10), "auth_cooldown"),
        (lambda: HedgePolicy(after=0.1, window=1e7), "window"),
        (lambda: ProviderConfig(name="p", timeout=1e10), "ProviderConfig.timeout of 'p'"),
        (lambda: ProviderConfig(name="p", max_retries=10**6), "ProviderConfig.max_retries of 'p'"),
        (lambda: ProviderConfig(name="p", pool_size=10**9), "ProviderConfig.pool_size of 'p'"),
        (lambda: ProviderConfig(name="p", weight=1e300), "ProviderConfig.weight of 'p'"),
        (lambda: ProviderConfig(name="p", price_per_1k_prompt_tokens=1e300), "price_per_1k_prompt_tokens"),
    ],
)
def test_numbers_too_large_to_use_name_the_field_and_the_limit(build, field):
    with pytest.raises(ConfigurationError) as failure:
        build()
    message = str(failure.value)
    assert field in message
    assert any(limit in message for limit in ("604800", "1e+15", "3600", "100", "10000")), message


def test_call_time_timeouts_too_large_are_configuration_errors():
    class SlowHealth(MockProvider):
        def health_check(self, timeout=None):
            time.sleep(0.05)  # still running when the checker starts waiting with the timeout
            return True

    with Router() as router:
        router.add_provider(SlowHealth(ProviderConfig(name="m", extra={"delay": 0})))
        with pytest.raises(ConfigurationError, match="timeout must be at most 604800"):
            router.route("Hi", timeout=1e12)
        with pytest.raises(ConfigurationError, match="timeout must be at most 604800"):
            router.health_check(timeout=1e12)
        assert router.route("Hi", timeout=604800).startswith("Mock response")


def test_usable_large_values_still_pass():
    assert ProviderConfig(name="p", timeout=3600, max_retries=100, pool_size=512).timeout == 3600
    Router(timeout=86400, hedge_after=60, health_interval=3600).close()


def test_a_config_file_with_a_huge_timeout_exits_2(tmp_path, capsys):
    path = write(tmp_path, {"timeout": 1e12, "providers": [MOCK]})
    code, out, err = run_cli(capsys, "--config", path, "ask", "Hi")
    assert code == 2 and out == ""
    assert "timeout must be at most 604800" in err


# Malformed URLs, paths, nesting -------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://host:99999/v1", "http://ho st/v1", "http://host/v1\x00", "http://host/\nv1", "http://:80/v1"]
)
def test_a_malformed_base_url_is_a_configuration_error(url, tmp_path, capsys):
    with pytest.raises(ConfigurationError, match="base_url of 'p' must be an http"):
        ProviderConfig(name="p", base_url=url)
    path = write(tmp_path, {"providers": [{"type": "openai", "name": "p", "model": "m", "base_url": url}]})
    code, out, err = run_cli(capsys, "--config", path, "health")
    assert code == 2 and "base_url" in err and "Traceback" not in err


def test_a_url_with_credentials_is_not_quoted_in_the_error():
    with pytest.raises(ConfigurationError) as failure:
        ProviderConfig(name="p", base_url="http://user:s3cret-pass@[::1/v1")
    assert "s3cret" not in str(failure.value)


def test_a_config_path_with_a_nul_byte_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="not a valid path"):
        Router.from_config("router\x00.json")
    with pytest.raises(ConfigurationError, match="path is empty"):
        load_config("")


def test_json_nested_100000_deep_is_a_configuration_error(tmp_path, capsys):
    text = '{"providers": [' + "[" * 100_000 + "]" * 100_000 + "]}"
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError, match="too deeply"):
        load_config(path)
    code, out, err = run_cli(capsys, "--config", path, "ask", "Hi")
    assert code == 2 and "too deeply" in err


def test_an_extra_nested_5000_deep_is_a_configuration_error(tmp_path, capsys):
    with pytest.raises(ConfigurationError, match="extra of 'p' nests .* more than 64 levels"):
        ProviderConfig(name="p", extra=deep(5000))
    with pytest.raises(ConfigurationError, match="more than 64 levels"):
        Router.from_config({"providers": [{**MOCK, "extra": deep(5000)}]})
    path = write(tmp_path, {"providers": [{**MOCK, "extra": deep(900)}]})  # json.dumps stops near 1,000
    code, out, err = run_cli(capsys, "--config", path, "ask", "Hi")
    assert code == 2 and "more than 64 levels" in err


def test_nesting_within_the_limit_is_fine():
    assert ProviderConfig(name="p", extra=deep(60)).extra["x"]["x"]


# Size ---------------------------------------------------------------------------------------


def build_seconds(count):
    config = load_config({"providers": [{"type": "mock", "name": f"m{i}", "extra": {"delay": 0}} for i in range(count)]})
    gc.collect()
    gc.disable()  # the collector's passes grow with the heap: measure the algorithm alone
    try:
        started = time.perf_counter()
        router = config.build()
        elapsed = time.perf_counter() - started
    finally:
        gc.enable()
    assert len(router.providers) == count
    router.close()
    return elapsed


def test_building_a_router_from_thousands_of_providers_is_linear():
    small = min(build_seconds(300) for _ in range(3))
    large = min(build_seconds(2400) for _ in range(3))
    # 8 times the providers: linear is ~8x; the quadratic name check was ~60x.
    assert large < 24 * small + 0.05, (small, large)


def test_loading_thousands_of_providers_takes_milliseconds_each():
    data = {"providers": [{"type": "openai", "name": f"p{i}", "model": "m", "base_url": "http://h/v1"} for i in range(2000)]}
    started = time.perf_counter()
    config = load_config(data)
    assert len(config.providers) == 2000
    assert time.perf_counter() - started < 2.0  # ~2 ms each before (type hints re-evaluated per provider)


def test_a_config_file_above_the_size_limit_gets_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(configuration, "MAX_CONFIG_BYTES", 1000)
    path = write(tmp_path, {"providers": [MOCK], "pad": "x" * 2000})
    with pytest.raises(ConfigurationError, match="larger than"):
        load_config(path)
    code, out, err = run_cli(capsys, "--config", path, "ask", "Hi")
    assert code == 2 and "larger than" in err


def test_thousands_of_duplicate_names_are_reported_at_once():
    with Router() as router:
        with pytest.raises(ConfigurationError, match="'a' is given twice"):
            router.add_providers([MockProvider(ProviderConfig(name="a")), MockProvider(ProviderConfig(name="a"))])
        assert router.providers == []
        router.add_provider(MockProvider(ProviderConfig(name="a")))
        with pytest.raises(ConfigurationError, match="'a' is already registered"):
            router.add_providers([MockProvider(ProviderConfig(name="b")), MockProvider(ProviderConfig(name="a"))])
        assert [p.name for p in router.providers] == ["a"]
        router.remove_provider("a")
        router.add_provider(MockProvider(ProviderConfig(name="a")))  # the name is free again


# --config '' ----------------------------------------------------------------------------------


def test_an_empty_config_option_is_a_usage_error(capsys, monkeypatch):
    monkeypatch.delenv(cli.CONFIG_ENV, raising=False)
    code, out, err = run_cli(capsys, "--config", "", "ask", "Hi")
    assert code == 2 and out == "" and "--config is empty" in err
    code, out, err = run_cli(capsys, "ask", "Hi", "--config", " ")
    assert code == 2 and "--config is empty" in err


def test_an_empty_config_variable_means_unset(capsys, monkeypatch):
    monkeypatch.setenv(cli.CONFIG_ENV, "")
    code, out, err = run_cli(capsys, "ask", "Hi")
    assert code == 0 and out.startswith("Mock response to: Hi")

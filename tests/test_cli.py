"""The command line, run as a user runs it: `python -m multi_llm_orchestrator ...` in a subprocess."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fakes import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-cli-secret-abcdefghijklmnop"


def run(*args, env=None, stdin=None, cwd=None, timeout=60):
    """Run the CLI; returns CompletedProcess with text stdout/stderr."""
    environ = {k: v for k, v in os.environ.items() if k != "MULTI_LLM_ORCHESTRATOR_CONFIG"}
    environ["PYTHONPATH"] = str(ROOT) + os.pathsep + environ.get("PYTHONPATH", "")
    environ.update(env or {})
    # No input: stdin is empty (the CLI reads piped stdin; the test runner's must not leak in).
    feed = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run(
        [sys.executable, "-m", "multi_llm_orchestrator", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=environ, cwd=cwd or ROOT, **feed,
    )


def mocks(*models, **extra):
    return [
        {"type": "mock", "name": f"p{index}", "model": model, "extra": {"delay": 0, **extra}}
        for index, model in enumerate(models, 1)
    ]


def config_file(tmp_path, data, name="router.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def assert_one_line_error(result, code, *fragments):
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("multi-llm-orchestrator: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


# ask ------------------------------------------------------------------------------------


def test_ask_without_config_routes_over_three_mocks(tmp_path):
    result = run("ask", "What is Python?", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Mock response to: What is Python?\n"
    assert result.stderr == ""


def test_ask_json_prints_the_whole_completion(tmp_path):
    path = config_file(tmp_path, {"providers": mocks("mock-unavailable", "mock-normal")})
    result = run("--config", path, "ask", "--json", "Hi there")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["text"] == "Mock response to: Hi there" and data["provider"] == "p2"
    assert data["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7,
                             "cached_prompt_tokens": 0, "reasoning_tokens": 0}
    assert [(a["provider"], a["outcome"], a["error_type"]) for a in data["attempts"]] == [
        ("p1", "error", "ProviderUnavailableError"), ("p2", "ok", None)]


def test_ask_options_after_the_command_and_system_message_and_params(tmp_path):
    path = config_file(tmp_path, {"providers": mocks("mock-normal")})
    result = run("ask", "one two three", "--config", path, "--system", "Be brief", "--max-tokens", "3",
                 "--temperature", "0.2", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["text"] == "Mock response to:"  # max_tokens=3 words
    assert data["usage"]["prompt_tokens"] == 5  # the system message counted too


def test_ask_reads_the_prompt_from_stdin(tmp_path):
    result = run("ask", "-", stdin="from stdin\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Mock response to: from stdin\n\n"


def test_config_from_environment_variable_and_strategy_override(tmp_path):
    path = config_file(tmp_path, {"strategy": "round-robin", "providers": mocks("mock-unhealthy", "mock-normal")})
    env = {"MULTI_LLM_ORCHESTRATOR_CONFIG": str(path)}
    assert json.loads(run("ask", "--json", "x", env=env).stdout)["provider"] == "p1"
    # first-available skips p1, whose health check fails.
    result = run("ask", "--json", "--strategy", "first-available", "x", env=env)
    assert json.loads(result.stdout)["provider"] == "p2"


def test_ask_stream_prints_chunks_while_they_arrive(tmp_path):
    path = config_file(tmp_path, {"providers": mocks("mock-normal", chunk_delay=0.15)})
    environ = {k: v for k, v in os.environ.items() if k != "MULTI_LLM_ORCHESTRATOR_CONFIG"}
    environ["PYTHONPATH"] = str(ROOT)
    process = subprocess.Popen(
        [sys.executable, "-m", "multi_llm_orchestrator", "--config", str(path), "ask", "--stream", "a b c d"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ,
    )
    try:
        first = process.stdout.read1(100)  # returns as soon as the first chunk is flushed
        assert first.startswith(b"Mock")
        assert process.poll() is None, "the first chunk came only when the process ended"
        rest = process.stdout.read()
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()
    assert (first + rest).decode() == "Mock response to: a b c d\n"


def test_ask_stream_and_json_are_exclusive():
    result = run("ask", "--stream", "--json", "x")
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


def test_all_providers_failing_exits_1_with_one_line(tmp_path):
    path = config_file(tmp_path, {"providers": mocks("mock-unavailable", "mock-auth-error")})
    result = run("--config", path, "ask", "x")
    assert result.stdout == ""
    assert_one_line_error(result, 1, "All providers failed", "p1: ProviderUnavailableError", "p2: AuthenticationError")


def test_verbose_shows_the_traceback_and_the_log(tmp_path):
    path = config_file(tmp_path, {"providers": mocks("mock-unavailable", "mock-normal")})
    ok = run("-v", "--config", path, "ask", "x")
    assert ok.returncode == 0
    assert "WARNING multi_llm_orchestrator.router: attempt on p1 failed" in ok.stderr
    assert "INFO multi_llm_orchestrator.router: call answered by p2" in ok.stderr
    path = config_file(tmp_path, {"providers": mocks("mock-unavailable")}, "fail.json")
    failed = run("--config", path, "ask", "x", "--verbose")
    assert failed.returncode == 1 and "Traceback" in failed.stderr and "AllProvidersFailedError" in failed.stderr


@pytest.mark.parametrize(
    "args, fragments",
    [
        (("--strategy", "fastest", "ask", "x"), ("Unknown strategy 'fastest'",)),
        (("--config", "missing.json", "ask", "x"), ("missing.json not found",)),
        (("ask", " "), ("The prompt is empty",)),
        (("batch", "no-such-file.txt"), ("cannot read no-such-file.txt",)),
        (("batch", "--workers", "0", "-"), ("--workers must be at least 1",)),
        (("--timeout", "-1", "ask", "x"), ("timeout must be a number of seconds > 0",)),
    ],
)
def test_usage_and_configuration_errors_exit_2(tmp_path, args, fragments):
    assert_one_line_error(run(*args, cwd=tmp_path), 2, *fragments)


def test_bad_json_config_exits_2_naming_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"providers": [\n  {"type": "mock"\n]}', encoding="utf-8")
    assert_one_line_error(run("--config", path, "health"), 2, "bad.json", "line 3", "column")


def test_argparse_errors_and_no_command_exit_2():
    missing = run("ask")
    assert missing.returncode == 2 and "no prompt: give one as an argument, or pipe it in" in missing.stderr
    nothing = run()
    assert nothing.returncode == 2 and "COMMAND" in nothing.stderr
    assert run("--version").stdout.startswith("multi-llm-orchestrator ")


# health and models ------------------------------------------------------------------------


def test_health_prints_a_table_of_every_provider(tmp_path):
    path = config_file(tmp_path, {"providers": mocks("mock-normal", "mock-unhealthy", "mock-normal")})
    result = run("--config", path, "health")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["PROVIDER", "TYPE", "MODEL", "STATUS", "LATENCY", "ERROR"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["p1"][1:4] == ["mock", "mock-normal", "healthy"] and rows["p1"][5] == "ms"
    assert rows["p2"][3] == "UNHEALTHY" and "health check failed" in lines[2]


def test_health_json_and_exit_1_when_nothing_is_healthy(tmp_path):
    path = config_file(tmp_path, {"providers": mocks("mock-unavailable", "mock-auth-error")})
    result = run("--config", path, "health", "--json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert set(data) == {"p1", "p2"} and not any(entry["healthy"] for entry in data.values())
    assert all(entry["latency_s"] >= 0 and entry["error"] for entry in data.values())


def test_health_cuts_off_a_hung_check_at_the_timeout(tmp_path):
    path = config_file(tmp_path, {"providers": mocks("mock-normal", "mock-normal", "mock-timeout", health_delay=0.2)})
    result = run("--config", path, "health", "--json", "--timeout", "0.5")
    data = json.loads(result.stdout)
    assert result.returncode == 0
    assert data["p1"]["healthy"] and data["p2"]["healthy"] and not data["p3"]["healthy"]
    assert data["p1"]["latency_s"] > 0.15
    assert data["p3"]["latency_s"] < 1.5


def test_models_lists_each_providers_models_and_reports_failures(tmp_path):
    with FakeOpenAIServer(models=["fake-a", "fake-b"], api_key=SECRET) as server:
        path = config_file(tmp_path, {"providers": [
            {"type": "openai", "name": "fake", "model": "fake-a", "base_url": server.url, "api_key": "${FAKE_KEY}"},
            {"type": "openai", "name": "down", "model": "x", "base_url": "http://127.0.0.1:9/v1",
             "api_key": SECRET, "max_retries": 0, "timeout": 5},
            {"type": "mock", "name": "mock"},
        ]})
        result = run("--config", path, "models", env={"FAKE_KEY": SECRET})
        as_json = run("--config", path, "models", "--json", env={"FAKE_KEY": SECRET})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "fake:\n  fake-a\n  fake-b\n" in out
    assert "down:\n  error: ProviderUnavailableError" in out
    assert "mock:\n  mock-normal\n" in out
    assert SECRET not in out + result.stderr
    data = json.loads(as_json.stdout)
    assert data["fake"] == {"models": ["fake-a", "fake-b"]} and "error" in data["down"]


def test_ask_over_an_openai_provider_on_loopback(tmp_path):
    with FakeOpenAIServer(api_key=SECRET) as server:
        path = config_file(tmp_path, {"providers": [
            {"type": "openai", "name": "fake", "model": server.model, "base_url": server.url, "api_key": "${FAKE_KEY}"},
        ]})
        result = run("--config", path, "-v", "-v", "ask", "--json", "Hello", env={"FAKE_KEY": SECRET})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["provider"] == "fake"
    assert "DEBUG" in result.stderr and SECRET not in result.stderr + result.stdout


# batch ------------------------------------------------------------------------------------


def test_batch_keeps_input_order_and_shows_progress(tmp_path):
    # Providers of different speeds so that prompts finish out of order.
    providers = [
        {"type": "mock", "name": "slow", "extra": {"delay": 0.03}},
        {"type": "mock", "name": "fast", "extra": {"delay": 0}},
    ]
    path = config_file(tmp_path, {"providers": providers})
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"question {n}" for n in range(24)) + "\n\n", encoding="utf-8")
    result = run("--config", path, "batch", prompts, "--workers", "6")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["index"] for r in records] == list(range(24))
    assert [r["line"] for r in records] == list(range(1, 25))
    assert [r["text"] for r in records] == [f"Mock response to: question {n}" for n in range(24)]
    assert {r["provider"] for r in records} == {"slow", "fast"}
    assert "24/24" in result.stderr
    assert "24 prompt(s), 24 answered, 0 failed" in result.stderr


def test_batch_jsonl_from_stdin_reports_failures_per_line(tmp_path):
    lines = [
        json.dumps({"prompt": "first", "id": "a"}),
        json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "second"}]}),
        "{not json",
        json.dumps({"text": "no prompt key"}),
        json.dumps({"messages": [{"role": "robot", "content": "x"}]}),
        "",
        json.dumps({"prompt": "last"}),
    ]
    result = run("batch", "-", "--no-progress", stdin="\n".join(lines) + "\n", cwd=tmp_path)
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2, 3, 4, 5]
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5, 7]
    assert records[0]["id"] == "a" and records[0]["text"] == "Mock response to: first"
    assert records[1]["text"] == "Mock response to: second"
    assert records[2]["error_type"] == "ConfigurationError" and "invalid JSON" in records[2]["error"]
    assert records[3]["error_type"] == "ConfigurationError" and '"prompt"' in records[3]["error"]
    assert records[4]["error_type"] == "ConfigurationError" and "role" in records[4]["error"]
    assert records[5]["text"] == "Mock response to: last"
    assert set(records[2]) == {"index", "line", "error_type", "error"}
    assert "6 prompt(s), 3 answered, 3 failed" in result.stderr and "/3" not in result.stderr


def test_batch_where_every_provider_fails_goes_on_and_exits_1(tmp_path):
    path = config_file(tmp_path, {"providers": mocks("mock-unavailable", "mock-ratelimit")})
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\nc\n", encoding="utf-8")
    result = run("--config", path, "batch", prompts, "--format", "text")
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 3
    assert all(r["error_type"] == "AllProvidersFailedError" and "\n" not in r["error"] for r in records)
    assert "p1: ProviderUnavailableError" in records[0]["error"]


def test_batch_text_format_keeps_lines_that_look_like_json(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text('{"prompt": "literal"}\n', encoding="utf-8")
    result = run("batch", prompts, "--format", "text", "--no-progress")
    assert result.returncode == 0
    assert json.loads(result.stdout)["text"] == 'Mock response to: {"prompt": "literal"}'
    assert result.stderr.count("\n") == 1  # only the summary


# demo and import weight --------------------------------------------------------------------


def test_demo_runs_every_part_in_seconds():
    started = time.monotonic()
    result = run("demo")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 20
    for part in ("round-robin", "random", "first-available", "automatic fallback", "every provider fails",
                 "AllProvidersFailedError", "streaming"):
        assert part in result.stdout


def test_importing_the_cli_stays_light():
    code = (
        "import sys, multi_llm_orchestrator.cli; "
        "print(sorted(m for m in ('requests', 'urllib3', 'tqdm', 'prometheus_client', 'django') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.strip() == "[]", result.stderr


# progress, in process -----------------------------------------------------------------------


def test_plain_progress_counts_exactly_from_many_threads(monkeypatch):
    from multi_llm_orchestrator import cli

    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if the [progress] extra were missing
    stream = io.StringIO()
    progress = cli._Progress(800, stream)
    threads = [threading.Thread(target=lambda: [progress(0, 800) for _ in range(100)]) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    progress.close()
    assert progress.done == 800
    assert stream.getvalue().rstrip().endswith("batch: 800/800")


def test_progress_uses_tqdm_when_installed(monkeypatch):
    from multi_llm_orchestrator import cli

    class FakeTqdm:
        instances = []

        def __init__(self, total, file, desc, unit):
            self.total, self.n, self.closed = total, 0, False
            FakeTqdm.instances.append(self)

        def update(self, n):
            self.n += n

        def close(self):
            self.closed = True

    fake = type(sys)("tqdm")
    fake.tqdm = FakeTqdm
    monkeypatch.setitem(sys.modules, "tqdm", fake)
    stream = io.StringIO()
    progress = cli._Progress(3, stream)
    for done in (1, 3, 2):
        progress(done, 3)
    progress.close()
    bar = FakeTqdm.instances[-1]
    assert (bar.total, bar.n, bar.closed) == (3, 3, True) and stream.getvalue() == ""
    silent = cli._Progress(3, stream, enabled=False)
    silent(1, 3)
    assert len(FakeTqdm.instances) == 1


def test_main_in_process_returns_the_exit_status(capsys, monkeypatch):
    from multi_llm_orchestrator.cli import main

    monkeypatch.delenv("MULTI_LLM_ORCHESTRATOR_CONFIG", raising=False)
    assert main(["ask", "in process"]) == 0
    assert capsys.readouterr().out == "Mock response to: in process\n"
    assert main(["--strategy", "nope", "ask", "x"]) == 2
    assert main([]) == 2


# ask --json-schema ---------------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
          "required": ["city", "days"]}


def test_ask_json_schema_answers_json_with_the_default_mocks(tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA), encoding="utf-8")
    result = run("ask", "--json-schema", schema, "Weather for 3 days in Kazan, as JSON")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"city": "mock", "days": 1}


def test_ask_json_schema_skips_providers_without_structured_output(tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA), encoding="utf-8")
    path = config_file(tmp_path, {"strategy": "round-robin", "providers": mocks("mock-normal", "mock-tools")})
    result = run("--config", path, "ask", "--json", "--json-schema", schema, "Weather?")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["provider"] == "p2" and json.loads(data["text"]) == {"city": "mock", "days": 1}
    assert data["attempts"][0] == {"provider": "p1", "outcome": "skipped", "latency_s": 0.0,
                                   "error": "does not support structured_output", "error_type": "CapabilityError",
                                   "hedge": False}
    only_plain = config_file(tmp_path, {"providers": mocks("mock-normal")}, name="plain.json")
    assert_one_line_error(run("--config", only_plain, "ask", "--json-schema", schema, "Weather?"), 2,
                          "No provider supports structured_output")


@pytest.mark.parametrize("content, message", [
    (None, "cannot read"),
    ("{not json", "is not JSON"),
    ("[1, 2]", "must hold a JSON Schema object"),
])
def test_ask_json_schema_file_problems_are_usage_errors(tmp_path, content, message):
    schema = tmp_path / "schema.json"
    if content is not None:
        schema.write_text(content, encoding="utf-8")
    assert_one_line_error(run("ask", "--json-schema", schema, "x"), 2, "--json-schema", message)

"""CLI habits of simonw/llm users: a bare prompt, stdin joined with it, -s/-m, streaming on a
terminal, demo refusing options it does not use, health saying why. Exit codes 0, 1, 2."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from multi_llm_orchestrator import cli

from fakes import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[1]


class Terminal(io.StringIO):
    """stdout as a terminal: records each write, so streaming is visible."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list = []

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@pytest.fixture(autouse=True)
def no_config(monkeypatch):
    monkeypatch.delenv(cli.CONFIG_ENV, raising=False)


def run_cli(monkeypatch, capsys, *args, stdin=None, terminal=False):
    """main() in process; stdin None: an interactive terminal (never read)."""
    if stdin is None:
        fake_stdin = io.StringIO("never read")
        fake_stdin.isatty = lambda: True  # type: ignore[method-assign]
    else:
        fake_stdin = io.StringIO(stdin)
    monkeypatch.setattr(sys, "stdin", fake_stdin)
    out = Terminal() if terminal else None
    if out is not None:
        monkeypatch.setattr(sys, "stdout", out)
    try:
        code = cli.main(list(args))
    except SystemExit as exit_:  # argparse's own usage errors (2), --help/--version (0)
        code = exit_.code
    captured = capsys.readouterr()
    return code, (out.getvalue() if out is not None else captured.out), captured.err, out


def subprocess_cli(*args, stdin=None, env=None):
    environ = {k: v for k, v in os.environ.items() if k != cli.CONFIG_ENV}
    environ["PYTHONPATH"] = str(ROOT) + os.pathsep + environ.get("PYTHONPATH", "")
    environ.update(env or {})
    feed = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run([sys.executable, "-m", "multi_llm_orchestrator", *map(str, args)],
                          capture_output=True, text=True, timeout=60, env=environ, cwd=ROOT, **feed)


def config(tmp_path, providers):
    path = tmp_path / "router.json"
    path.write_text(json.dumps({"providers": providers}), encoding="utf-8")
    return str(path)


def mocks(*models):
    return [{"type": "mock", "name": f"p{i}", "model": m, "extra": {"delay": 0}} for i, m in enumerate(models, 1)]


# A bare prompt is `ask` --------------------------------------------------------------------


def test_a_bare_prompt_works_as_ask(monkeypatch, capsys):
    assert run_cli(monkeypatch, capsys, "What is Python?")[:2] == (0, "Mock response to: What is Python?\n")
    # Options before the prompt, global or ask's own, are skipped over to find it.
    code, out, _, _ = run_cli(monkeypatch, capsys, "--timeout", "5", "-s", "Be brief", "--max-tokens", "50",
                              "--json", "Hi there")
    assert code == 0 and json.loads(out)["text"] == "Mock response to: Hi there"
    # A command name is still a command.
    code, out, _, _ = run_cli(monkeypatch, capsys, "health", "--json")
    assert code == 0 and set(json.loads(out)) == {"mock-1", "mock-2", "mock-3"}


def test_a_bare_prompt_in_a_real_process_and_python_m():
    result = subprocess_cli("What is Python?")
    assert (result.returncode, result.stdout, result.stderr) == (0, "Mock response to: What is Python?\n", "")


def test_no_prompt_anywhere_prints_help_and_exits_2(monkeypatch, capsys):
    code, out, err, _ = run_cli(monkeypatch, capsys)
    assert code == 2 and out == "" and "COMMAND" in err and "usage:" in err
    code, _, err, _ = run_cli(monkeypatch, capsys, "ask")
    assert code == 2 and "no prompt: give one as an argument, or pipe it in" in err
    for flag in ("--help", "--version"):  # alone, they keep their meaning (argparse exits 0)
        with pytest.raises(SystemExit) as info:
            cli.main([flag])
        assert info.value.code == 0


# stdin -------------------------------------------------------------------------------------


def test_stdin_is_joined_with_the_prompt_argument(monkeypatch, capsys):
    code, out, _, _ = run_cli(monkeypatch, capsys, "--json", "summarise", stdin="line one\nline two\n")
    assert code == 0
    assert json.loads(out)["text"] == "Mock response to: line one\nline two\n\nsummarise"


def test_stdin_alone_is_the_prompt(monkeypatch, capsys):
    assert run_cli(monkeypatch, capsys, stdin="piped only\n")[:2] == (0, "Mock response to: piped only\n\n")
    assert run_cli(monkeypatch, capsys, "ask", stdin="piped only")[:2] == (0, "Mock response to: piped only\n")


def test_empty_stdin_leaves_the_argument_alone(monkeypatch, capsys):
    assert run_cli(monkeypatch, capsys, "Hi", stdin="")[:2] == (0, "Mock response to: Hi\n")
    code, _, err, _ = run_cli(monkeypatch, capsys, "ask", stdin="  \n")
    assert code == 2 and "no prompt" in err


def test_cat_file_pipe_summarise_in_a_real_process(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("The meeting moved to Friday.\n", encoding="utf-8")
    result = subprocess.run(
        f'cat {notes} | "{sys.executable}" -m multi_llm_orchestrator "summarise"', shell=True,
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k != cli.CONFIG_ENV}, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Mock response to: The meeting moved to Friday.\n\nsummarise\n"


# -s/--system, --strategy, -m/--provider, --model ----------------------------------------------


def test_short_s_is_the_system_prompt_and_strategy_keeps_its_long_flag(monkeypatch, capsys):
    code, out, _, _ = run_cli(monkeypatch, capsys, "-s", "Answer briefly.", "--json", "one two")
    assert code == 0 and json.loads(out)["usage"]["prompt_tokens"] == 4  # 2 system words + 2 prompt words
    code, out, _, _ = run_cli(monkeypatch, capsys, "--strategy", "first-available", "--json", "Hi")
    assert code == 0 and json.loads(out)["provider"] == "mock-1"
    code, _, err, _ = run_cli(monkeypatch, capsys, "health", "-s", "first-available")
    assert code == 2 and "unrecognized arguments: -s" in err


def test_m_pins_a_provider(monkeypatch, capsys, tmp_path):
    for _ in range(3):  # round-robin would move on
        code, out, _, _ = run_cli(monkeypatch, capsys, "-m", "mock-3", "--json", "Hi")
        data = json.loads(out)
        assert code == 0 and data["provider"] == "mock-3"
        assert {a["provider"]: a["outcome"] for a in data["attempts"]} == {
            "mock-1": "skipped", "mock-2": "skipped", "mock-3": "ok"}
    # Pinned to a provider that fails: no fallback elsewhere, exit 1.
    path = config(tmp_path, mocks("mock-unavailable", "mock-normal"))
    code, out, err, _ = run_cli(monkeypatch, capsys, "--config", path, "--provider", "p1", "Hi")
    assert code == 1 and out == "" and "p1: ProviderUnavailableError" in err and "p2" not in err.split("error:")[1]
    code, _, err, _ = run_cli(monkeypatch, capsys, "-m", "nope", "Hi")
    assert code == 2 and "No provider named 'nope'; registered: mock-1, mock-2, mock-3" in err


def test_model_overrides_the_pinned_providers_model(monkeypatch, capsys, tmp_path):
    path = config(tmp_path, mocks("mock-normal", "mock-normal"))
    code, out, _, _ = run_cli(monkeypatch, capsys, "--config", path, "-m", "p2", "--model", "mock-unavailable", "Hi")
    assert code == 1
    code, _, err, _ = run_cli(monkeypatch, capsys, "--config", path, "--model", "mock-normal", "Hi")
    assert code == 2 and "pin the call to it too" in err


# streaming -----------------------------------------------------------------------------------


def test_streaming_is_the_default_on_a_terminal(monkeypatch, capsys, tmp_path):
    path = config(tmp_path, mocks("mock-normal"))
    code, out, _, terminal = run_cli(monkeypatch, capsys, "--config", path, "a b c", terminal=True)
    assert code == 0 and out == "Mock response to: a b c\n"
    assert len(terminal.writes) > 3  # chunk by chunk
    code, out, _, terminal = run_cli(monkeypatch, capsys, "--config", path, "--no-stream", "a b c", terminal=True)
    assert code == 0 and out == "Mock response to: a b c\n"
    assert terminal.writes[0] == "Mock response to: a b c"  # one piece (print adds the newline)
    # --json on a terminal is one document, not a stream.
    code, out, _, _ = run_cli(monkeypatch, capsys, "--config", path, "--json", "x", terminal=True)
    assert code == 0 and json.loads(out)["text"] == "Mock response to: x"


def test_not_a_terminal_does_not_stream_unless_asked(monkeypatch, capsys, tmp_path):
    path = config(tmp_path, mocks("mock-normal"))
    stream_calls = []
    from multi_llm_orchestrator import Router

    original = Router.route_stream
    monkeypatch.setattr(Router, "route_stream", lambda self, *a, **k: stream_calls.append(1) or original(self, *a, **k))
    assert run_cli(monkeypatch, capsys, "--config", path, "x")[:2] == (0, "Mock response to: x\n")
    assert stream_calls == []
    assert run_cli(monkeypatch, capsys, "--config", path, "--stream", "x")[:2] == (0, "Mock response to: x\n")
    assert stream_calls == [1]


def test_stream_failure_on_a_terminal_exits_1(monkeypatch, capsys, tmp_path):
    path = config(tmp_path, mocks("mock-unavailable"))
    code, _, err, _ = run_cli(monkeypatch, capsys, "--config", path, "x", terminal=True)
    assert code == 1 and "ProviderUnavailableError" in err


# demo, python -m -------------------------------------------------------------------------------


@pytest.mark.parametrize("args, option", [
    (("--config", "router.json", "demo"), "--config"),
    (("demo", "--strategy", "random"), "--strategy"),
    (("demo", "--timeout", "3"), "--timeout"),
])
def test_demo_rejects_options_it_does_not_use(monkeypatch, capsys, args, option):
    code, out, err, _ = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and out == ""
    assert f"demo runs on its own mock providers and does not use {option}" in err


def test_demo_rejects_unknown_arguments(monkeypatch, capsys):
    code, _, err, _ = run_cli(monkeypatch, capsys, "demo", "--json")
    assert code == 2 and "unrecognized arguments: --json" in err


def test_python_m_demo_as_the_readme_says():
    result = subprocess_cli("demo")
    assert result.returncode == 0 and "round-robin" in result.stdout


# health says why -------------------------------------------------------------------------------


def test_health_shows_the_typed_error_of_an_unhealthy_provider(monkeypatch, capsys, tmp_path):
    with FakeOpenAIServer(api_key="sk-right-key-abcdefgh") as server:
        path = config(tmp_path, [
            {"type": "openai", "name": "wrong-key", "model": "fake-model", "base_url": server.url,
             "api_key": "sk-wrong-key-abcdefgh", "max_retries": 0},
            {"type": "openai", "name": "good", "model": "fake-model", "base_url": server.url,
             "api_key": "sk-right-key-abcdefgh", "max_retries": 0},
        ])
        code, out, _, _ = run_cli(monkeypatch, capsys, "--config", path, "health")
        assert code == 0
        rows = {line.split()[0]: line for line in out.splitlines()[1:]}
        assert "UNHEALTHY" in rows["wrong-key"] and "AuthenticationError: " in rows["wrong-key"]
        assert "Incorrect API key" in rows["wrong-key"]
        assert "healthy" in rows["good"] and "Error" not in rows["good"]
        code, out, _, _ = run_cli(monkeypatch, capsys, "--config", path, "health", "--json")
        data = json.loads(out)
        assert data["wrong-key"]["error"].startswith("AuthenticationError: ") and data["good"]["error"] is None
        assert "sk-wrong-key-abcdefgh" not in out
    # A server that is gone: exit 1, the connection error named.
    code, out, _, _ = run_cli(monkeypatch, capsys, "--config", path, "health", "--json")
    assert code == 1
    assert all(entry["error"].startswith("ProviderUnavailableError: ") for entry in json.loads(out).values())


def test_a_health_reason_does_not_leak_to_the_next_check(tmp_path):
    from multi_llm_orchestrator.health import HealthChecker
    from multi_llm_orchestrator.providers import MockProvider, ProviderConfig
    from multi_llm_orchestrator.providers.base import report_health_failure

    report_health_failure("stale reason from an earlier check")
    checker = HealthChecker(timeout=5, ttl=0)
    try:
        unhealthy = MockProvider(ProviderConfig(name="u", model="mock-unhealthy"))
        assert checker._check_one(unhealthy, 5).error == "health check failed"
    finally:
        checker.close()

"""`multi-llm-orchestrator embed` and `balance`, run as a user runs them (a subprocess)."""

from __future__ import annotations

import json
from pathlib import Path

from fakes import LoopbackServer
from multi_llm_orchestrator.providers.mock import mock_vector
from test_cli import config_file, mocks, run

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "gigachat"


def lines(out):
    return [json.loads(line) for line in out.splitlines()]


def test_embed_texts_from_arguments_with_the_default_mocks():
    result = run("embed", "hello world", "second text")
    assert result.returncode == 0, result.stderr
    records = lines(result.stdout)
    assert [(r["index"], r["text"]) for r in records] == [(0, "hello world"), (1, "second text")]
    assert records[0]["embedding"] == mock_vector("hello world", 16)
    assert "2 text(s), 16 dimensions, space 'mock:mock-embedding'" in result.stderr


def test_embed_from_stdin_skips_blank_lines_and_keeps_line_numbers():
    result = run("embed", stdin="first\n\n  \nsecond\n")
    assert result.returncode == 0, result.stderr
    assert [(r["index"], r["line"], r["text"]) for r in lines(result.stdout)] == [(0, 1, "first"), (1, 4, "second")]


def test_embed_from_a_file_with_space_and_purpose(tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("один\nдва\nтри\n", encoding="utf-8")
    config = config_file(tmp_path, {"providers": mocks("mock-normal", embedding_batch_size=1)})
    result = run("--config", config, "embed", "--file", texts, "--space", "mock:mock-embedding",
                 "--purpose", "query", "--parallel", "2")
    assert result.returncode == 0, result.stderr
    assert [r["text"] for r in lines(result.stdout)] == ["один", "два", "три"]


def test_embed_usage_errors(tmp_path):
    two_spaces = {"providers": [
        {"type": "mock", "name": "a", "extra": {"delay": 0}},
        {"type": "mock", "name": "b", "embedding_space": "other", "extra": {"delay": 0}},
    ]}
    result = run("--config", config_file(tmp_path, two_spaces), "embed", "x")
    assert result.returncode == 2 and "space=" in result.stderr and result.stdout == ""
    assert run("embed", stdin="\n\n").returncode == 2
    assert run("embed", "--parallel", "0", "x").returncode == 2
    assert run("embed", "--file", tmp_path / "missing.txt").returncode == 2
    assert run("embed", "--file", tmp_path / "missing.txt", "also-a-text").returncode == 2


def test_embed_failing_everywhere_exits_1(tmp_path):
    config = config_file(tmp_path, {"providers": mocks("mock-unavailable", "mock-unavailable")})
    result = run("--config", config, "embed", "x")
    assert result.returncode == 1 and "All providers failed" in result.stderr


class FakeGigaBalance(LoopbackServer):
    def handle(self, handler, request, fault):
        if request.path.endswith("/balance") and request.headers.get("authorization") == "Bearer giga-token-123":
            self.send_body(handler, 200, json.loads((FIXTURES / "balance.json").read_text()))
        elif request.path.endswith("/balance"):
            self.send_body(handler, 403, {"status": 403, "message": "Permission denied"})
        else:
            self.send_body(handler, 404, {"status": 404, "message": "no route"})


def test_balance_table_and_json(tmp_path):
    with FakeGigaBalance() as server:
        def giga(name, token):
            return {"type": "gigachat", "name": name, "base_url": server.base_url + "/api/v1",
                    "max_retries": 0, "extra": {"access_token": token}}

        config = config_file(tmp_path, {"providers": [
            giga("prepaid", "giga-token-123"), giga("payg", "giga-token-456"),
            {"type": "mock", "name": "m", "extra": {"delay": 0}}]})
        table = run("--config", config, "balance")
        data = run("--config", config, "balance", "--json")
    assert table.returncode == 0, table.stderr
    assert "prepaid   GigaChat-Pro  991,490" in table.stdout
    assert "no balance API" in table.stdout and "NotSupportedError" in table.stdout
    assert "giga-token" not in table.stdout + table.stderr
    parsed = json.loads(data.stdout)
    assert parsed["prepaid"]["balance"]["embeddings"] == 9999967
    assert parsed["m"] == {"error": "no balance API"}
    assert parsed["payg"]["error"].startswith("NotSupportedError")


def test_balance_without_any_balance_api_exits_1():
    result = run("balance")
    assert result.returncode == 1 and result.stdout.count("no balance API") == 3

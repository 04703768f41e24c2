"""The routing demo runs as a new user would run it: a subprocess, no keys, exit 0."""

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_routing_demo_script_runs_in_seconds_and_shows_every_part():
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "routing_demo.py")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 20
    out = result.stdout
    for heading in ("round-robin", "random", "first-available", "fallback", "every provider fails"):
        assert heading in out
    assert "call 1 -> provider-1: Mock response to: What is Python?" in out
    assert "call 2 -> provider-2" in out
    assert "AllProvidersFailedError" in out
    assert "Traceback" not in result.stderr


def test_embeddings_search_example_runs_without_keys():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "embeddings_search.py"), "reset password"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={k: v for k, v in __import__("os").environ.items() if k != "MULTI_LLM_ORCHESTRATOR_CONFIG"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "embedding space 'mock:mock-embedding': providers mock-1, mock-2, mock-3"
    assert lines[1] == "4 documents, 16 dimensions, embedded by mock-1 (mock-embedding)"
    assert len(lines) == 5 and all(line[0] in "+-" for line in lines[2:])

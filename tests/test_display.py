"""Notebook display (display.py): HTML and plain reprs, the live stream view, and
examples/notebook.ipynb executed in a real kernel (the venv's own) with nbclient."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from multi_llm_orchestrator import Completion, Router
from multi_llm_orchestrator.display import HealthReport, Stats, show_stream
from multi_llm_orchestrator.types import Attempt, Usage

from fakes.mocks import mock, router_with

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "notebook.ipynb"
HOSTILE = '<script>alert("x")</script> & \'quotes\''


class Printer:
    """IPython's pretty printer, as far as _repr_pretty_ uses it."""

    def __init__(self) -> None:
        self.out = ""

    def text(self, text: str) -> None:
        self.out += text


def pretty(value) -> str:
    printer = Printer()
    value._repr_pretty_(printer, False)
    return printer.out


def hostile_completion() -> Completion:
    return Completion(
        HOSTILE, "prov<1>", "model&co", Usage.of(3, 4), "stop", 0.0123,
        [Attempt("down<2>", "error", 0.001, "bad <b>thing</b>", "ProviderUnavailableError"),
         Attempt("prov<1>", "ok", 0.011), Attempt("third", "skipped", 0.0, "pinned to prov<1>", "Pinned")],
    )


def test_completion_html_is_a_table_with_everything_escaped():
    page = hostile_completion()._repr_html_()
    assert "<script>" not in page and "<b>thing" not in page and "prov<1>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;quotes&#x27;" in page
    for fact in ("prov&lt;1&gt;", "model&amp;co", "12.3 ms", "3 prompt + 4 completion = 7", "stop"):
        assert fact in page
    # The attempts table: one row each, with the typed error.
    assert page.count("<tr>") >= 3 + 1 + 5
    assert "ProviderUnavailableError: bad &lt;b&gt;thing&lt;/b&gt;" in page
    assert "Pinned: pinned to prov&lt;1&gt;" in page and "3 attempt(s)" in page


def test_completion_plain_repr_is_one_compact_line():
    text = pretty(Completion("x" * 200, "a", "m", Usage.of(1, 2), latency_s=0.5, attempts=[Attempt("a", "ok")]))
    assert text == f"Completion({'x' * 57 + '...'!r}, provider='a', model='m', 500.0 ms, 3 tokens, 1 attempt)"
    assert "\n" not in text
    # repr() itself stays the full dataclass repr (logs, debugging).
    assert repr(Completion("hi", "a", "m")).startswith("Completion(text='hi', provider='a'")


def test_stats_and_health_report_are_still_plain_dicts_with_tables():
    with router_with(mock("a"), mock("down<x>", "mock-unavailable"), breaker={"failure_threshold": 1}) as router:
        for _ in range(3):
            router.complete("Hi")
        stats = router.stats()
        report = router.health_report()
    assert isinstance(stats, Stats) and isinstance(stats, dict)
    assert json.loads(json.dumps(stats)) == dict(stats)  # serialises as before
    assert stats["providers"]["a"]["calls"] == 3
    page = stats._repr_html_()
    assert "down&lt;x&gt;" in page and "down<x>" not in page
    assert "ProviderUnavailableError x1" in page and ">open<" in page and ">closed<" in page
    text = pretty(stats)
    assert text.startswith("Stats(calls=3, ") and "  a: 3 calls, 3 ok, 0 failed" in text and "breaker open" in text

    assert isinstance(report, HealthReport) and dict(report) == {name: report[name] for name in ("a", "down<x>")}
    assert report.breakers == {"a": "closed", "down<x>": "open"}
    page = report._repr_html_()
    assert "UNHEALTHY" in page and "health check failed" in page and "down&lt;x&gt;" in page
    assert "<th>breaker</th>" in page and ">open<" in page
    assert pretty(report).splitlines()[1].startswith("  a: healthy, ")


def test_health_check_keeps_returning_booleans():
    with router_with(mock("a")) as router:
        assert router.health_check() == {"a": True}


def test_importing_the_library_and_rendering_does_not_import_ipython():
    code = (
        "import sys\n"
        "from multi_llm_orchestrator import Router\n"
        "from multi_llm_orchestrator.providers import MockProvider, ProviderConfig\n"
        "r = Router(); r.add_provider(MockProvider(ProviderConfig(name='a', extra={'delay': 0})))\n"
        "c = r.complete('x'); c._repr_html_(); r.stats()._repr_html_(); r.health_report()._repr_html_()\n"
        "print(''.join(r.route_stream('y')))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('IPython', 'ipykernel')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["Mock response to: y", "[]"]


def test_show_stream_updates_one_display_in_place(monkeypatch):
    import IPython.display as ipd

    shown = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj.data))

    def display(obj, display_id=False):
        assert display_id is True
        shown.append(("display", obj.data))
        return Handle()

    monkeypatch.setattr(ipd, "display", display)
    with router_with(mock("a", chunk_delay=0.01)) as router:
        stream = router.route_stream("one two <three>")
        assert show_stream(stream, refresh_s=0) is stream
    assert stream.text == "Mock response to: one two <three>" and stream.done
    assert shown[0][0] == "display" and "streaming..." in shown[0][1]
    assert all(kind == "update" for kind, _ in shown[1:]) and len(shown) > 4  # live: once a chunk
    final = shown[-1][1]
    assert "Mock response to: one two &lt;three&gt;" in final and "streaming" not in final and "tokens" in final


def test_the_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)


@pytest.fixture
def venv_kernel(tmp_path, monkeypatch):
    """A kernelspec running this very interpreter (the venv's), found before any other."""
    spec = tmp_path / "kernels" / "mlo-venv"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mlo venv", "language": "python",
    }), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.delenv("MULTI_LLM_ORCHESTRATOR_CONFIG", raising=False)
    return "mlo-venv"


def test_the_notebook_executes_in_a_real_kernel(venv_kernel):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    NotebookClient(notebook, timeout=120, kernel_name=venv_kernel, resources={"metadata": {"path": str(ROOT)}}).execute()
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert not [o for cell in cells for o in cell.outputs if o.output_type == "error"]

    def output(source_start):
        cell = next(c for c in cells if c.source.startswith(source_start))
        return cell.outputs

    assert output("import sys")[0].text.strip() == sys.executable  # the venv's own kernel

    completion = output("completion = ")[0]
    assert completion.output_type == "execute_result"
    page = completion.data["text/html"]
    assert "Mock response to: What is Python?" in page and "mock-2" in page and "ProviderUnavailableError" in page
    assert completion.data["text/plain"].startswith("Completion('Mock response to: What is Python?', provider='mock-2'")

    pinned = output('router.complete("Hi", provider="mock-3")')[0].data["text/html"]
    assert "pinned to mock-3" in pinned

    # The live stream: one display, updated in place to the whole text (escaped).
    live = output('router.route_stream("Tell me')
    assert len(live) == 1 and live[0].output_type == "display_data"
    html = live[0].data["text/html"]
    assert "Mock response to: Tell me a story about a &lt;b&gt;bold&lt;/b&gt; router" in html
    assert "streaming..." not in html and "tokens" in html

    printed = output("for chunk in")[0]
    assert printed.text == "Mock response to: Stream it by hand"

    health = output("router.health_report()")[0].data
    assert "<th>breaker</th>" in health["text/html"] and "UNHEALTHY" in health["text/html"]
    stats = output("router.stats()")[0].data
    assert "mock-1" in stats["text/html"] and stats["text/plain"].startswith("Stats(calls=")

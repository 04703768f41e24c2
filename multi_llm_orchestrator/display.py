"""Notebook display: HTML tables and compact text for results, a live view of streams.

Jupyter shows the last expression of a cell through its ``_repr_html_`` (rich) and
``_repr_pretty_`` (plain text) methods; the library's results define them by calling
this module:

- ``Completion``: text, provider, model, latency, tokens, and the attempts as a table;
- ``Router.stats()`` (a ``Stats`` dict) and ``Router.health_report()`` (a
  ``HealthReport`` dict): a table a provider a row, with the breaker state;
- ``TextStream`` (``router.route_stream(...)`` as a cell's last expression): the text
  appears as it arrives, in one display that is updated in place (``show_stream``).

Nothing here imports IPython except ``show_stream``, which only runs under IPython
(IPython calls ``_ipython_display_``). Every value is HTML-escaped: answers and error
messages come from models and servers. ``Stats`` and ``HealthReport`` are plain dicts
otherwise (equal to, and serialised as, the dicts they were before).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence

if TYPE_CHECKING:
    from .health import HealthResult
    from .types import Completion, TextStream

__all__ = ["Stats", "HealthReport", "completion_html", "completion_text", "show_stream"]

#: Longest text shown in a plain repr before it is cut with "...".
PLAIN_TEXT_CHARS = 60
#: Least seconds between two updates of a live stream display (a fast stream would
#: otherwise send the browser one message per chunk).
STREAM_REFRESH_S = 0.05

_TABLE = '<table class="mlo" style="border-collapse:collapse;text-align:left">'


def _e(value: Any) -> str:
    from html import escape  # here: html loads its table of entities, import time for notebooks only

    return escape("" if value is None else str(value), quote=True)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"{_TABLE}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _short(text: str, limit: int = PLAIN_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pretty(printer: Any, text: str) -> None:
    printer.text(text)


# Completion -----------------------------------------------------------------------------


def completion_text(completion: "Completion") -> str:
    """One line: the text (cut), who answered, latency, tokens, attempts."""
    usage = completion.usage
    tokens = f"{usage.total_tokens} tokens" if usage is not None else "no usage"
    tried = len(completion.attempts)
    cached = ", cached" if completion.cached else ""
    return (f"Completion({_short(completion.text)!r}, provider={completion.provider!r}, model={completion.model!r}, "
            f"{_ms(completion.latency_s)}, {tokens}, {tried} attempt{'s' if tried != 1 else ''}{cached})")


def completion_html(completion: "Completion") -> str:
    """The answer's text, who answered and how, and a table of the attempts."""
    usage = completion.usage
    tokens = (f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion = {usage.total_tokens}"
              if usage is not None else "-")
    facts = [("provider", completion.provider), ("model", completion.model),
             ("latency", _ms(completion.latency_s)), ("tokens", tokens),
             ("finish reason", completion.finish_reason or "-")]
    if completion.cached:
        facts.append(("cached", "yes"))
    if completion.tool_calls:
        facts.append(("tool calls", ", ".join(f"{call.name}({call.arguments})" for call in completion.tool_calls)))
    rows = "".join(f"<tr><th>{_e(name)}</th><td>{_e(value)}</td></tr>" for name, value in facts)
    attempts = _table(
        ("provider", "outcome", "latency", "error"),
        ((a.provider, a.outcome + (" (hedge)" if a.hedge else ""), _ms(a.latency_s),
          f"{a.error_type}: {a.error}" if a.error_type else (a.error or "")) for a in completion.attempts),
    )
    return (f'<div class="mlo-completion"><div style="white-space:pre-wrap">{_e(completion.text)}</div>'
            f"{_TABLE}{rows}</table><details><summary>{len(completion.attempts)} attempt(s)</summary>"
            f"{attempts}</details></div>")


# stats() and health_report() ----------------------------------------------------------------


class Stats(Dict[str, Any]):
    """``Router.stats()``: the dict described in the README, shown as tables in a notebook."""

    _COLUMNS = (("calls", "calls"), ("successes", "ok"), ("failures", "failed"), ("latency_p50_s", "p50"),
                ("latency_p95_s", "p95"), ("total_tokens", "tokens"), ("cost", "cost"))

    def _provider_rows(self) -> List[List[Any]]:
        rows = []
        for name, data in (self.get("providers") or {}).items():
            row: List[Any] = [name, data.get("model", "")]
            for key, _ in self._COLUMNS:
                value = data.get(key)
                row.append(_ms(value) if key.startswith("latency") else ("-" if value is None else value))
            failures = data.get("failures_by_type") or {}
            row.append(", ".join(f"{kind} x{count}" for kind, count in failures.items()))
            row.append((data.get("breaker") or {}).get("state", "-"))
            rows.append(row)
        return rows

    def _repr_html_(self) -> str:
        totals = [(key, value) for key, value in self.items() if not isinstance(value, Mapping)]
        header = ("provider", "model", *(title for _, title in self._COLUMNS), "failures by type", "breaker")
        return (f'<div class="mlo-stats">{_table([k for k, _ in totals], [[v for _, v in totals]])}'
                f"{_table(header, self._provider_rows())}</div>")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        totals = ", ".join(f"{key}={value}" for key, value in self.items() if not isinstance(value, Mapping))
        lines = [f"Stats({totals})"]
        for row in self._provider_rows():
            lines.append(f"  {row[0]}: {row[2]} calls, {row[3]} ok, {row[4]} failed, p50 {row[5]}, "
                         f"breaker {row[-1]}")
        _pretty(printer, "\n".join(lines))


class HealthReport(Dict[str, "HealthResult"]):
    """``Router.health_report()``: {name: HealthResult}, shown as a table with each
    provider's breaker state (``breakers``) in a notebook."""

    def __init__(self, results: Mapping[str, "HealthResult"], breakers: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(results)
        #: The breaker state of each provider when the report was made.
        self.breakers: Dict[str, str] = dict(breakers or {})

    def _rows(self) -> List[List[Any]]:
        return [[name, "healthy" if result.healthy else "UNHEALTHY", _ms(result.latency_s),
                 self.breakers.get(name, "-"), result.error or ""] for name, result in self.items()]

    def _repr_html_(self) -> str:
        return f'<div class="mlo-health">{_table(("provider", "status", "latency", "breaker", "error"), self._rows())}</div>'

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        lines = ["HealthReport("]
        for name, status, latency, breaker, error in self._rows():
            lines.append(f"  {name}: {status}, {latency}, breaker {breaker}" + (f", {error}" if error else ""))
        _pretty(printer, "\n".join(lines) + "\n)")


# Streams -----------------------------------------------------------------------------------------


def stream_html(stream: "TextStream", text: str, finished: bool) -> str:
    status = f"{stream.provider} ({stream.model})"
    if finished:
        usage = stream.usage
        status += f", {usage.total_tokens} tokens" if usage is not None else ""
    else:
        status += ", streaming..."
    return (f'<div class="mlo-stream"><div style="white-space:pre-wrap">{_e(text)}</div>'
            f'<div style="opacity:0.6;font-size:smaller">{_e(status)}</div></div>')


def show_stream(stream: "TextStream", *, refresh_s: float = STREAM_REFRESH_S) -> "TextStream":
    """Show ``stream`` in the notebook, updated in place while its text arrives; returns it
    (exhausted: ``text``, ``usage`` ... are set). Only under IPython (which calls it as
    ``TextStream._ipython_display_``); elsewhere iterate the stream."""
    from IPython.display import HTML, display  # runs only under IPython

    handle = display(HTML(stream_html(stream, "", False)), display_id=True)
    shown_at = time.monotonic()
    parts: List[str] = []
    try:
        for chunk in stream:
            parts.append(chunk)
            now = time.monotonic()
            if now - shown_at >= refresh_s:
                shown_at = now
                handle.update(HTML(stream_html(stream, "".join(parts), False)))
    finally:
        handle.update(HTML(stream_html(stream, "".join(parts), True)))
    return stream

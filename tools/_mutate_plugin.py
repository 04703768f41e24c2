"""pytest plugin used by ``tools/mutate.py`` (loaded with ``-p _mutate_plugin``); inert otherwise.

Two jobs, chosen by environment variables set by the tool:

- ``MLO_MUTATE_TRACE=<out.json>`` with ``MLO_MUTATE_FILES=<file>:<file>...``: record which
  lines of those files each test executes (``sys.settrace`` on every thread, with a
  local tracer only in frames of the traced files, so other code runs at full speed),
  each test's duration and outcome. Lines run outside any test (module import) are
  recorded under ``"<import>"``.
- ``MLO_MUTATE_SELECT=<tests.json>``: run only the listed ``[test id, seconds]`` pairs, in
  the listed order (fastest first, so a mutant is usually killed within the first tests
  with ``-x``). A test running past its seconds (a mutant that loops or hangs) ends the
  process after writing a traceback to ``MLO_MUTATE_TIMEOUTS=<file>``: the tool reads
  that as "timed out" without waiting for the whole selection's time limit.

Serving mutants from one pre-collected process is ``_mutate_server``'s job.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import threading
from collections import defaultdict
from typing import Any, Dict, Optional, Set

IMPORT = "<import>"

_current: Optional[str] = None
_targets: Dict[str, str] = {}  # absolute path -> itself, for the traced files
_known: Dict[str, Optional[str]] = {}  # co_filename -> traced path or None
_lines: Dict[str, Dict[int, Set[str]]] = defaultdict(lambda: defaultdict(set))
_durations: Dict[str, float] = defaultdict(float)
_failed: Set[str] = set()
_limits: Dict[str, float] = {}
_timeouts: Any = None


def _target(filename: str) -> Optional[str]:
    try:
        return _known[filename]
    except KeyError:
        path = os.path.realpath(filename)
        _known[filename] = found = _targets.get(path)
        return found


def _global_tracer(frame: Any, event: str, arg: Any) -> Any:
    path = _target(frame.f_code.co_filename)
    if path is None:
        return None
    lines = _lines[path]
    lines[frame.f_lineno].add(_current or IMPORT)

    def local(frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            lines[frame.f_lineno].add(_current or IMPORT)
        return local

    return local


def pytest_configure(config: Any) -> None:
    if os.environ.get("MLO_MUTATE_TRACE"):
        for path in os.environ.get("MLO_MUTATE_FILES", "").split(os.pathsep):
            if path:
                real = os.path.realpath(path)
                _targets[real] = real
        sys.settrace(_global_tracer)
        threading.settrace(_global_tracer)


def pytest_collection_modifyitems(session: Any, config: Any, items: list) -> None:
    selection = os.environ.get("MLO_MUTATE_SELECT")
    if not selection:
        return
    with open(selection, encoding="utf-8") as handle:
        chosen = [entry if isinstance(entry, list) else [entry, 0.0] for entry in json.load(handle)]
    rank = {nodeid: index for index, (nodeid, _) in enumerate(chosen)}
    _limits.update((nodeid, limit) for nodeid, limit in chosen if limit)
    keep = sorted((item for item in items if item.nodeid in rank), key=lambda item: rank[item.nodeid])
    dropped = [item for item in items if item.nodeid not in rank]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    global _current, _timeouts
    _current = nodeid
    limit = _limits.get(nodeid)
    path = os.environ.get("MLO_MUTATE_TIMEOUTS")
    if limit and path:
        if _timeouts is None:
            _timeouts = open(path, "w", encoding="utf-8")
        faulthandler.dump_traceback_later(limit, exit=True, file=_timeouts)


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    global _current
    _current = None
    if _timeouts is not None:
        faulthandler.cancel_dump_traceback_later()


def pytest_runtest_logreport(report: Any) -> None:
    if not os.environ.get("MLO_MUTATE_TRACE"):
        return
    _durations[report.nodeid] += report.duration
    if report.failed:
        _failed.add(report.nodeid)


def pytest_unconfigure(config: Any) -> None:
    out = os.environ.get("MLO_MUTATE_TRACE")
    if not out:
        return
    sys.settrace(None)
    threading.settrace(None)  # type: ignore[arg-type]
    data = {
        "lines": {path: {str(line): sorted(ids) for line, ids in lines.items()} for path, lines in _lines.items()},
        "durations": dict(_durations),
        "failed": sorted(_failed),
    }
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(data, handle)

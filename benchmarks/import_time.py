"""Import cost: ``import multi_llm_orchestrator`` vs ``import requests``.

Each import runs in a fresh interpreter (``python -c``), timed with perf_counter inside
it, so interpreter start-up is left out and nothing is cached in ``sys.modules``. The
runs alternate between the statements (drift cancels out); medians of ``RUNS`` each.
The package's public names are imported on first use (PEP 562), so
``import multi_llm_orchestrator`` alone loads almost nothing: the two statements a
program actually starts with are shown too, ``from multi_llm_orchestrator import Router``
(the Router and what it needs, no requests: HTTP providers load it when first used) and
``import multi_llm_orchestrator.providers.openai`` (an HTTP provider, which imports
requests). Nothing here loads dataclasses-json (loaded when something is serialised or
parsed from a configuration, see ``jsonable.py``), and a provider module does not load
``dataclasses`` (its value types become dataclasses when first asked, see ``records.py``;
the Router's modules still use ``@dataclass``).
Targets: the package at most 0.6x ``import requests``, a provider module at most 1.1x.
The last part shows, from one ``-X importtime`` run each, where the Router import and
the provider module (beyond requests itself) spend their time.

    python benchmarks/import_time.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, List, Tuple

import _common
from _common import LoadWatch, median

RUNS = 25
TARGET = 0.6
PROVIDER = "multi_llm_orchestrator.providers.openai"
PROVIDER_TARGET = 1.1
REQUESTS = "import requests"
PACKAGE = "import multi_llm_orchestrator"
ROUTER = "from multi_llm_orchestrator import Router"
PROVIDER_IMPORT = f"import {PROVIDER}"
STATEMENTS = (REQUESTS, PACKAGE, ROUTER, PROVIDER_IMPORT)
TIMER = (
    "import sys, time; started = time.perf_counter(); {statement}; "
    "print(time.perf_counter() - started, len(sys.modules), 'dataclasses_json' in sys.modules, "
    "'dataclasses' in sys.modules)"
)


def environment() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = _common.ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure with .pyc files, as users do
    return env


def timed_import(statement: str) -> Tuple[float, int, bool, bool]:
    output = subprocess.run(
        [sys.executable, "-c", TIMER.format(statement=statement)],
        check=True, capture_output=True, text=True, env=environment(), cwd=_common.ROOT,
    ).stdout.split()
    return float(output[0]), int(output[1]), output[2] == "True", output[3] == "True"


def import_tree(statement: str, name: str, before: str = "", min_ms: float = 1.0) -> List[Tuple[int, int, str]]:
    """(depth, cumulative us, name) of the imports under ``name`` (the top-level module
    that ``statement`` imports) at most three levels deep that took at least ``min_ms``,
    parents before their children (one ``-X importtime`` run). Modules imported by
    ``before`` (run first) are loaded already, so they are left out of the tree."""
    stderr = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"{before}; {statement}" if before else statement],
        check=True, capture_output=True, text=True, env=environment(), cwd=_common.ROOT,
    ).stderr
    rows: List[Tuple[int, int, str]] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, cumulative, module = line[len("import time:"):].split("|")
        depth = (len(module) - len(module.lstrip()) - 1) // 2
        if depth == 0:  # importtime prints children first: a top-level line closes a tree
            if module.strip() == name:
                rows.append((0, int(cumulative), module.strip()))
                break
            rows = []  # that tree was interpreter start-up (site) or ``before``, not ours
        elif depth <= 3 and int(cumulative) >= min_ms * 1000:
            rows.append((depth, int(cumulative), module.strip()))
    return rows[::-1]


def print_tree(title: str, rows: List[Tuple[int, int, str]]) -> None:
    print(title)
    for depth, cumulative, name in rows:
        print(f"  {cumulative / 1000:6.1f} ms  {'  ' * depth}{name}")


def main() -> None:
    watch = LoadWatch()
    for statement in STATEMENTS:  # warm-up: compile .pyc files, fill the OS file cache
        timed_import(statement)
    seconds: Dict[str, List[float]] = {statement: [] for statement in STATEMENTS}
    loaded: Dict[str, int] = {}
    with_json: Dict[str, bool] = {}
    with_dataclasses: Dict[str, bool] = {}
    for index in range(RUNS):
        shift = index % len(STATEMENTS)
        for statement in STATEMENTS[shift:] + STATEMENTS[:shift]:
            elapsed, modules, json_loaded, dataclasses_loaded = timed_import(statement)
            seconds[statement].append(elapsed)
            loaded[statement] = modules
            with_json[statement] = json_loaded
            with_dataclasses[statement] = dataclasses_loaded

    print(f"{RUNS} fresh interpreters per statement, alternated; perf_counter around the statement")
    base = median(seconds[REQUESTS])
    for statement in STATEMENTS:
        values = sorted(seconds[statement])
        print(
            f"{statement:<48} median {median(values) * 1000:6.1f} ms = {median(values) / base:4.2f}x requests "
            f"(min {values[0] * 1000:.1f}, max {values[-1] * 1000:.1f}; {loaded[statement]} modules in sys.modules; "
            f"dataclasses_json loaded: {with_json[statement]}; dataclasses: {with_dataclasses[statement]})"
        )
    print()
    print_tree(f"where {ROUTER} spends its time (one -X importtime run, cumulative, >= 1 ms):",
               import_tree(ROUTER, "multi_llm_orchestrator.router", before=PACKAGE))
    print_tree(f"where {PROVIDER_IMPORT} spends its time beyond requests (one -X importtime run, "
               "requests imported first, cumulative, >= 1 ms):",
               import_tree(PROVIDER_IMPORT, PROVIDER, before=REQUESTS))
    print(watch.summary())
    ratio = median(seconds[PACKAGE]) / base
    provider_ratio = median(seconds[PROVIDER_IMPORT]) / base
    verdict = "met" if ratio <= TARGET else "MISSED"
    print(f"target: the package at most {TARGET}x the import time of requests: {verdict}")
    verdict = "met" if provider_ratio <= PROVIDER_TARGET else "MISSED"
    print(f"target: a provider module at most {PROVIDER_TARGET}x the import time of requests: {verdict}")
    print(f"ratio multi_llm_orchestrator/requests: {ratio:.2f}x; {PROVIDER}/requests: {provider_ratio:.2f}x")


if __name__ == "__main__":
    main()

"""Import cost: ``import multi_llm_orchestrator`` vs ``import requests``.

Each import runs in a fresh interpreter (``python -c``), timed with perf_counter inside
it, so interpreter start-up is left out and nothing is cached in ``sys.modules``. The
runs alternate between the modules (drift cancels out); medians of ``RUNS`` each. The
package import does not load requests (HTTP providers load it when first used), nor
dataclasses-json (loaded when something is serialised or parsed from a configuration,
see ``jsonable.py``), so ``multi_llm_orchestrator.providers.openai`` (an HTTP provider,
which imports requests) is shown as well.
Targets: the package at most 0.6x ``import requests``, a provider module at most 1.1x.
The last part shows the package's biggest imports from one ``-X importtime`` run.

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
MODULES = ("requests", "multi_llm_orchestrator", PROVIDER)
TIMER = (
    "import sys, time; started = time.perf_counter(); import {module}; "
    "print(time.perf_counter() - started, len(sys.modules), 'dataclasses_json' in sys.modules)"
)


def environment() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = _common.ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure with .pyc files, as users do
    return env


def timed_import(module: str) -> Tuple[float, int, bool]:
    output = subprocess.run(
        [sys.executable, "-c", TIMER.format(module=module)],
        check=True, capture_output=True, text=True, env=environment(), cwd=_common.ROOT,
    ).stdout.split()
    return float(output[0]), int(output[1]), output[2] == "True"


def import_tree(module: str, min_ms: float = 4.0) -> List[Tuple[int, int, str]]:
    """(depth, cumulative us, name) of the imports under ``module`` two levels deep that
    took at least ``min_ms``, parents before their children (one ``-X importtime`` run)."""
    stderr = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        check=True, capture_output=True, text=True, env=environment(), cwd=_common.ROOT,
    ).stderr
    rows: List[Tuple[int, int, str]] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        if depth == 0:  # importtime prints children first: a top-level line closes a tree
            if name.strip() == module:
                break
            rows = []  # that tree was interpreter start-up (site), not ours
        elif depth <= 2 and int(cumulative) >= min_ms * 1000:
            rows.append((depth, int(cumulative), name.strip()))
    return rows[::-1]


def main() -> None:
    watch = LoadWatch()
    for module in MODULES:  # warm-up: compile .pyc files, fill the OS file cache
        timed_import(module)
    seconds: Dict[str, List[float]] = {module: [] for module in MODULES}
    loaded: Dict[str, int] = {}
    with_json: Dict[str, bool] = {}
    for index in range(RUNS):
        for module in MODULES[index % 3:] + MODULES[:index % 3]:
            elapsed, modules, json_loaded = timed_import(module)
            seconds[module].append(elapsed)
            loaded[module] = modules
            with_json[module] = json_loaded

    print(f"{RUNS} fresh interpreters per module, alternated; perf_counter around the import statement")
    for module in MODULES:
        values = sorted(seconds[module])
        print(
            f"import {module:<28} median {median(values) * 1000:6.1f} ms "
            f"(min {values[0] * 1000:.1f}, max {values[-1] * 1000:.1f}; {loaded[module]} modules in sys.modules; "
            f"dataclasses_json loaded: {with_json[module]})"
        )
    print("\nwhere import multi_llm_orchestrator spends its time (one -X importtime run, cumulative, >= 4 ms):")
    for depth, cumulative, name in import_tree("multi_llm_orchestrator"):
        print(f"  {cumulative / 1000:6.1f} ms  {'  ' * (depth - 1)}{name}")
    print(watch.summary())
    ratio = median(seconds["multi_llm_orchestrator"]) / median(seconds["requests"])
    provider_ratio = median(seconds[PROVIDER]) / median(seconds["requests"])
    verdict = "met" if ratio <= TARGET else "MISSED"
    print(f"target: the package at most {TARGET}x the import time of requests: {verdict}")
    verdict = "met" if provider_ratio <= PROVIDER_TARGET else "MISSED"
    print(f"target: a provider module at most {PROVIDER_TARGET}x the import time of requests: {verdict}")
    print(f"ratio multi_llm_orchestrator/requests: {ratio:.2f}x; {PROVIDER}/requests: {provider_ratio:.2f}x")


if __name__ == "__main__":
    main()

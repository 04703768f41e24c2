"""pytest plugin used by ``tools/mutate.py`` to run mutants fast (loaded with
``-p _mutate_server``; inert unless ``MLO_MUTATE_SERVE=1``).

The process collects the tests once, then serves mutants instead of running the suite.
Each request (a JSON line on stdin: module, mutated file, tests with their limits,
overall limit) forks a child that swaps the mutated code into the already imported
module and runs the listed tests in-process, stopping at the first failure; the answer
is a ``MLO-RESULT <json>`` line on stdout: the status and the test that killed it. No
interpreter start and no collection per mutant, and the fork keeps every mutant's
effects out of the next.
"""

from __future__ import annotations

import json
import os
import signal
import time
import types
from typing import Any, Dict

SIMPLE = (int, float, bool, str, bytes, type(None))
EXIT_PASSED, EXIT_FAILED, EXIT_TIMEOUT, EXIT_NO_SWAP = 0, 1, 75, 76


def _functions(value: Any) -> list:
    """The plain functions behind a namespace value (methods, properties, static/class methods)."""
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        return [f for f in (value.fget, value.fset, value.fdel) if f is not None]
    return [value] if callable(value) and hasattr(value, "__code__") else []


def _swap(module: Any, source: str) -> bool:
    """Make the imported ``module`` behave as ``source``: its functions (methods included)
    get the new code and simple default values, module and class constants the new
    values (a deleted one is removed). False when a function cannot take its new code
    (its closure changed): the tool then runs that mutant in a fresh interpreter."""
    namespace = {"__name__": module.__name__, "__package__": module.__package__, "__file__": module.__file__}
    exec(compile(source, module.__file__, "exec"), namespace)
    return _apply(module, namespace, module.__name__, 0)


def _apply(target: Any, new: Dict[str, Any], module_name: str, depth: int) -> bool:
    old = dict(vars(target))
    for name, old_value in old.items():
        # A module-level name the mutant no longer assigns (e.g. ``_SCAN = _DECODER.scan_once``
        # deleted) is removed whatever its value, so its readers fail as on a fresh import;
        # in classes only simple constants (methods are swapped in place below).
        deleted = isinstance(old_value, SIMPLE) or (depth == 0 and not isinstance(old_value, types.ModuleType))
        if not name.startswith("__") and name not in new and deleted:
            delattr(target, name)
    for name, new_value in new.items():
        if name not in old:
            continue
        old_value = old[name]
        if isinstance(new_value, type) and isinstance(old_value, type):
            if new_value.__module__ == module_name and depth < 4:
                if not _apply(old_value, dict(vars(new_value)), module_name, depth + 1):
                    return False
            continue
        if name.startswith("__") and not _functions(new_value):
            continue
        if isinstance(new_value, SIMPLE) and isinstance(old_value, SIMPLE):
            if new_value != old_value or type(new_value) is not type(old_value):
                setattr(target, name, new_value)
            continue
        olds, news = _functions(old_value), _functions(new_value)
        if len(olds) != len(news):
            return False
        for old_function, new_function in zip(olds, news):
            if getattr(old_function, "__module__", None) != module_name:
                continue
            try:
                old_function.__code__ = new_function.__code__
            except ValueError:
                return False
            if old_function.__defaults__ and new_function.__defaults__:
                old_function.__defaults__ = tuple(
                    n if isinstance(n, SIMPLE) else o for o, n in zip(old_function.__defaults__, new_function.__defaults__)
                )
            if old_function.__kwdefaults__ and new_function.__kwdefaults__:
                old_function.__kwdefaults__ = {
                    key: (n if isinstance(n, SIMPLE) else old_function.__kwdefaults__.get(key))
                    for key, n in new_function.__kwdefaults__.items()
                }
    return True


def _child(job: dict, items: Dict[str, Any]) -> int:
    from _pytest.runner import runtestprotocol

    import importlib

    module = importlib.import_module(job["module"])  # imported by the collection already, as a rule
    with open(job["path"], encoding="utf-8") as handle:
        if not _swap(module, handle.read()):
            return EXIT_NO_SWAP
    chosen = [(items[nodeid], limit) for nodeid, limit in job["tests"] if nodeid in items]
    debug = os.environ.get("MLO_MUTATE_DEBUG")
    if debug:
        with open(debug, "a", encoding="utf-8") as handle:
            handle.write(f"job {job['module']} {len(job['tests'])} tests, {len(chosen)} known\n")
    signal.signal(signal.SIGALRM, lambda *_: os._exit(EXIT_TIMEOUT))
    for index, (item, limit) in enumerate(chosen):
        following = chosen[index + 1][0] if index + 1 < len(chosen) else None
        signal.setitimer(signal.ITIMER_REAL, limit)
        reports = runtestprotocol(item, nextitem=following, log=False)
        signal.setitimer(signal.ITIMER_REAL, 0)

        failed = [report for report in reports if report.failed]
        if failed:
            with open(job["report"], "w", encoding="utf-8") as handle:
                handle.write(item.nodeid)
            if debug:  # how the test killed the mutant (to check the tool itself)
                with open(debug, "a", encoding="utf-8") as handle:
                    handle.write(f"{item.nodeid}\n{failed[0].longreprtext[-3000:]}\n\n")
            return EXIT_FAILED
    return EXIT_PASSED


def _serve_one(job: dict, items: Dict[str, Any]) -> dict:
    try:
        os.unlink(job["report"])
    except FileNotFoundError:
        pass
    pid = os.fork()
    if pid == 0:  # the child: quiet, its own process group (so its subprocesses die with it)
        code = 2
        try:
            os.setpgid(0, 0)
            quiet = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(quiet, fd)
            code = _child(job, items)
        except BaseException:
            code = 2
        os._exit(code)
    limit = time.monotonic() + job["timeout"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > limit:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"status": "timed out"}
        time.sleep(0.005)
    code = os.waitstatus_to_exitcode(status)
    try:  # a mutant's test may have started subprocesses: never leave them behind
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    status = {EXIT_PASSED: "survived", EXIT_TIMEOUT: "timed out", EXIT_NO_SWAP: "no swap"}.get(code, "killed")
    killer = None
    if status == "killed" and os.path.exists(job["report"]):
        with open(job["report"], encoding="utf-8") as handle:
            killer = handle.read()
    return {"status": status, "killer": killer}


def pytest_runtestloop(session: Any) -> Any:
    if not os.environ.get("MLO_MUTATE_SERVE"):
        return None
    items = {item.nodeid: item for item in session.items}
    out = os.dup(1)
    os.write(out, f"MLO-READY {len(items)}\n".encode())
    for line in os.fdopen(os.dup(0), encoding="utf-8"):
        if not line.strip():
            break
        status = _serve_one(json.loads(line), items)
        os.write(out, f"MLO-RESULT {json.dumps(status)}\n".encode())
    return True

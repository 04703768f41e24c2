#!/usr/bin/env python3
"""Mutation testing for multi_llm_orchestrator: which changes to the code would no test notice?

For each chosen module the tool makes small changes ("mutants") one at a time with the
stdlib ``ast`` module:

- comparison flips: ``<`` -> ``<=``, ``<=`` -> ``<``, ``>`` -> ``>=``, ``>=`` -> ``>``,
  ``==`` <-> ``!=``, ``is`` <-> ``is not``, ``in`` <-> ``not in``;
- boolean operator swaps: ``and`` <-> ``or``, ``not x`` -> ``x``;
- constant shifts: a number ``n`` -> ``n + 1``, ``True`` <-> ``False``;
- statement deletions: a simple statement (call, assignment, raise, break, ...) -> ``pass``;
- return replacements: ``return <value>`` -> ``return None``;

and runs the tests against each mutant. A mutant is *killed* when a test fails, *timed
out* when the tests run past the mutant's time limit (counted as detected), *survived*
when every test passes. Only real behaviour changes should survive review: a survivor
either gets a test that kills it, or an entry in ``tools/mutation_equivalents.txt``
saying why no test can tell it apart (the score leaves those out).

Tests are chosen per mutant: one traced run of the suite (cached in the temp directory
until the package or the tests change) records which tests execute each line of the
module; a mutant runs only the tests that execute its line (all tests using the module
for lines run only at import, such as defaults), fastest first, stopping at the first
failure. Every run happens in a scratch copy of the package and tests in a temporary
directory, never in the working tree.

Not part of CI: a full run takes minutes per module. Run it at low priority::

    nice -n 10 .venv/bin/python tools/mutate.py                       # the six core modules
    nice -n 10 .venv/bin/python tools/mutate.py -m breaker -n 40      # a sample of 40 mutants
    nice -n 10 .venv/bin/python tools/mutate.py -m streaming --lines 80-95
    .venv/bin/python tools/mutate.py -m router --list                 # the mutants, no run
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "multi_llm_orchestrator"
TOOLS = Path(__file__).resolve().parent
EQUIVALENTS = TOOLS / "mutation_equivalents.txt"
DEFAULT_MODULES = ("breaker", "hedging", "streaming", "strategies", "calls", "router")
SEPARATOR = " || "
IMPORT = "<import>"

COMPARE_FLIPS = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In,
}
OP_TEXT = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
    ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
}
OP_PATTERN = {
    ast.Lt: r"<(?!=)", ast.LtE: r"<=", ast.Gt: r">(?!=)", ast.GtE: r">=", ast.Eq: r"==", ast.NotEq: r"!=",
    ast.Is: r"\bis\b(?!\s+not\b)", ast.IsNot: r"\bis\s+not\b", ast.In: r"(?<!not )\bin\b", ast.NotIn: r"\bnot\s+in\b",
}
DELETABLE = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Raise, ast.Break, ast.Continue, ast.Delete, ast.Assert)


# Mutants ---------------------------------------------------------------------------------


@dataclass
class Edit:
    """Replace source from (line, col) to (end_line, end_col); lines 1-based, cols in UTF-8 bytes."""

    line: int
    col: int
    end_line: int
    end_col: int
    text: str


@dataclass
class Mutant:
    module: str  # "breaker.py"
    line: int
    end_line: int
    mutation: str  # "`>=` -> `>`"
    line_text: str
    edits: List[Edit]
    key: str = ""
    source: str = ""
    function: str = ""  # the innermost function around the mutant ("" at module or class level)
    tests: List[str] = field(default_factory=list)

    @property
    def location(self) -> str:
        return f"{PACKAGE}/{self.module}:{self.line}"


def _padding(node: ast.AST) -> str:
    # Whole-node replacements keep the node's line count, so every later line keeps its number.
    return "\n" * (node.end_lineno - node.lineno)  # type: ignore[attr-defined]


def _edit(node: ast.AST, text: str) -> Edit:
    return Edit(node.lineno, node.col_offset, node.end_lineno, node.end_col_offset, text)  # type: ignore[attr-defined]


class _Finder(ast.NodeVisitor):
    """Collects (node, mutation, edits) for every mutation point of a module."""

    def __init__(self, lines: List[bytes]) -> None:
        self.lines = lines
        self.found: List[Tuple[ast.AST, str, List[Edit]]] = []

    def _segment(self, line: int, col: int, end_line: int, end_col: int) -> str:
        if line == end_line:
            return self.lines[line - 1][col:end_col].decode("utf-8")
        parts = [self.lines[line - 1][col:]] + self.lines[line:end_line - 1] + [self.lines[end_line - 1][:end_col]]
        return b"".join(parts).decode("utf-8")

    def _token_edit(self, start: Tuple[int, int], end: Tuple[int, int], pattern: str, text: str) -> Optional[Edit]:
        """An edit replacing the operator matched by ``pattern`` between two operands."""
        segment = self._segment(*start, *end)
        # Blank out comments (same length, so offsets hold) so an operator inside one is not matched.
        code = re.sub(r"#[^\n]*", lambda m: " " * len(m.group(0)), segment)
        match = re.search(pattern, code)
        if match is None:
            return None
        # Turn the match's character offsets into (line, byte column).
        before = segment[: match.start()]
        line = start[0] + before.count("\n")
        if "\n" in before:
            col = len(before.rsplit("\n", 1)[1].encode("utf-8"))
        else:
            col = start[1] + len(before.encode("utf-8"))
        length = len(match.group(0).encode("utf-8"))
        if "\n" in match.group(0):
            return None
        return Edit(line, col, line, col + length, text)

    # Skipped subtrees: annotations, docstrings, type-checking imports, __all__, f-strings.
    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(default)
        for statement in node.body:
            self.visit(statement)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for statement in node.body:
            if isinstance(statement, ast.AnnAssign):  # a dataclass field: mutate its default only
                if statement.value is not None:
                    self.visit(statement.value)
                continue
            self.visit(statement)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self._delete(node)

    def visit_If(self, node: ast.If) -> None:
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            return
        self.generic_visit(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        return

    def visit_Import(self, node: ast.AST) -> None:
        return

    visit_ImportFrom = visit_Import

    def visit_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return  # a docstring
        self._delete(node)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        if any(isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets):
            return
        self._delete(node)
        self.generic_visit(node)

    def visit_stmt_deletable(self, node: ast.stmt) -> None:
        self._delete(node)
        self.generic_visit(node)

    visit_AugAssign = visit_Raise = visit_Break = visit_Continue = visit_Delete = visit_Assert = visit_stmt_deletable

    def _delete(self, node: ast.stmt) -> None:
        self.found.append((node, "statement deleted", [_edit(node, "pass" + _padding(node))]))

    def visit_Return(self, node: ast.Return) -> None:
        value = node.value
        if value is not None and not (isinstance(value, ast.Constant) and value.value is None):
            self.found.append((node, "return None", [_edit(value, "None" + _padding(value))]))
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        operands = [node.left] + node.comparators
        for index, op in enumerate(node.ops):
            flipped = COMPARE_FLIPS[type(op)]
            left, right = operands[index], operands[index + 1]
            edit = self._token_edit(
                (left.end_lineno, left.end_col_offset), (right.lineno, right.col_offset),  # type: ignore[arg-type]
                OP_PATTERN[type(op)], OP_TEXT[flipped],
            )
            if edit is not None:
                self.found.append((node, f"`{OP_TEXT[type(op)]}` -> `{OP_TEXT[flipped]}`", [edit]))
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
        edits = [_edit_at(node, "(", start=True), _edit_at(node, ")", start=False)]
        for left, right in zip(node.values, node.values[1:]):
            edit = self._token_edit(
                (left.end_lineno, left.end_col_offset), (right.lineno, right.col_offset),  # type: ignore[arg-type]
                rf"\b{old}\b", new,
            )
            if edit is None:
                break
            edits.append(edit)
        else:
            self.found.append((node, f"`{old}` -> `{new}`", edits))
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not):
            edit = self._token_edit(
                (node.lineno, node.col_offset), (node.operand.lineno, node.operand.col_offset),  # type: ignore[arg-type]
                r"\bnot\b\s*", "",
            )
            if edit is not None:
                self.found.append((node, "`not` removed", [edit]))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool):
            self.found.append((node, f"{value} -> {not value}", [_edit(node, str(not value))]))
        elif isinstance(value, (int, float)) and not isinstance(value, complex):
            self.found.append((node, f"{value!r} -> {value + 1!r}", [_edit(node, repr(value + 1))]))


def _edit_at(node: ast.AST, text: str, start: bool) -> Edit:
    if start:
        return Edit(node.lineno, node.col_offset, node.lineno, node.col_offset, text)  # type: ignore[attr-defined]
    return Edit(node.end_lineno, node.end_col_offset, node.end_lineno, node.end_col_offset, text)  # type: ignore[attr-defined]


def apply(lines: List[bytes], edits: Sequence[Edit]) -> str:
    """The source with ``edits`` applied (latest position first, so offsets stay valid)."""
    text = list(lines)
    for edit in sorted(edits, key=lambda e: (e.line, e.col), reverse=True):
        head = text[edit.line - 1][: edit.col]
        tail = text[edit.end_line - 1][edit.end_col:]
        text[edit.line - 1: edit.end_line] = (head + edit.text.encode("utf-8") + tail).splitlines(keepends=True) or [b""]
    return b"".join(text).decode("utf-8")


def mutants_of(module: str, source: str) -> List[Mutant]:
    """Every mutant of one module, in source order, each keyed stably by line text and mutation."""
    lines = source.encode("utf-8").splitlines(keepends=True)
    finder = _Finder(lines)
    finder.visit(ast.parse(source))
    seen: Counter = Counter()
    mutants = []
    spans = sorted(
        ((node.lineno, node.end_lineno, node.name) for node in ast.walk(ast.parse(source))
         if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))),
        key=lambda span: span[1] - span[0],
    )
    for node, mutation, edits in sorted(finder.found, key=lambda f: (f[0].lineno, f[0].col_offset, f[1])):  # type: ignore[attr-defined]
        mutated = apply(lines, edits)
        if mutated == source:
            continue
        try:
            compile(mutated, module, "exec")
        except SyntaxError:
            continue
        line_text = lines[node.lineno - 1].decode("utf-8").strip()  # type: ignore[attr-defined]
        seen[(line_text, mutation)] += 1
        count = seen[(line_text, mutation)]
        key_mutation = mutation if count == 1 else f"{mutation} #{count}"
        mutants.append(Mutant(
            module, node.lineno, node.end_lineno, key_mutation, line_text, edits,  # type: ignore[attr-defined]
            key=SEPARATOR.join((module, line_text, key_mutation)), source=mutated,
            function=next((name for low, high, name in spans if low <= node.lineno <= high), ""),  # type: ignore[attr-defined]
        ))
    return mutants


def read_equivalents(path: Path = EQUIVALENTS) -> Dict[str, str]:
    """``module || line text || mutation || reason`` per line; ``#`` starts a comment line."""
    known: Dict[str, str] = {}
    if not path.exists():
        return known
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        parts = raw.split(SEPARATOR)
        if len(parts) != 4 or not parts[3].strip():
            raise SystemExit(f"{path}:{number}: expected 'module || line text || mutation || reason'; got {raw!r}")
        known[SEPARATOR.join(part.strip() for part in parts[:3])] = parts[3].strip()
    return known


# Test selection --------------------------------------------------------------------------


def _hash(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _test_files() -> List[Path]:
    return sorted((ROOT / "tests").glob("test_*.py"))


def _base_digest() -> str:
    """Changes with the package, the test helpers or the tracer: then the whole map is redone.
    A changed test file only has its own tests traced again."""
    helpers = [path for path in sorted((ROOT / "tests").rglob("*.py")) if path not in set(_test_files())]
    return _hash(sorted((ROOT / PACKAGE).rglob("*.py")) + helpers + [TOOLS / "_mutate_plugin.py"])


def make_scratch(into: Path) -> Path:
    """A copy of the working tree (package, tests, examples, settings) without bytecode, VCS or venv."""
    ignore = shutil.ignore_patterns(
        "__pycache__", "*.pyc", ".hypothesis", ".pytest_cache", ".git", ".venv", "*.egg-info", "build", "dist"
    )
    shutil.copytree(ROOT, into, ignore=ignore)
    return into


def _env(scratch: Path, **extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(scratch), str(TOOLS)])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutant must never be served from a stale .pyc
    env.pop("MLO_MUTATE_TRACE", None)
    env.pop("MLO_MUTATE_SELECT", None)
    env.update(extra)
    return env


# A test file that cannot be imported must not stop the others from being traced and run.
PYTEST = [
    "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "_mutate_plugin", "-o", "addopts=", "--no-header",
    "--continue-on-collection-errors",
]


def _trace(scratch: Path, modules: Sequence[str], targets: Sequence[str]) -> dict:
    files = [str(scratch / PACKAGE / f"{module}.py") for module in modules]
    out = scratch / "trace.json"
    subprocess.run(
        [sys.executable, *PYTEST, *targets], cwd=scratch, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=_env(scratch, MLO_MUTATE_TRACE=str(out), MLO_MUTATE_FILES=os.pathsep.join(files)),
    )
    raw = json.loads(out.read_text())
    lines = {}
    for module in modules:
        path = os.path.realpath(scratch / PACKAGE / f"{module}.py")
        lines[module] = raw["lines"].get(path, {})
    return {"durations": raw["durations"], "failed": raw["failed"], "lines": lines}


def coverage_map(scratch: Path, modules: Sequence[str]) -> dict:
    """Which tests execute which lines of ``modules``: one traced run of the suite, cached in
    the temp directory; test files changed since are traced again on their own."""
    every = sorted(set(DEFAULT_MODULES) | set(modules))
    cache = Path(tempfile.gettempdir()) / f"mlo-mutate-{_base_digest()}.json"
    files = {str(path.relative_to(ROOT)): _hash([path]) for path in _test_files()}
    data = json.loads(cache.read_text()) if cache.exists() else None
    if data is None or not set(every) <= set(data["modules"]):
        data = {"modules": every, "files": {}, "durations": {}, "failed": [], "lines": {m: {} for m in every}}
    redo = sorted(name for name, digest in files.items() if data["files"].get(name) != digest)
    gone = set(data["files"]) - set(files)
    stale = set(redo) | gone
    if stale:
        def keep(nodeid: str) -> bool:
            return nodeid.split("::", 1)[0] not in stale

        data["durations"] = {n: d for n, d in data["durations"].items() if keep(n)}
        data["failed"] = [n for n in data["failed"] if keep(n)]
        for module in data["lines"]:
            data["lines"][module] = {
                line: [n for n in ids if keep(n)] for line, ids in data["lines"][module].items()
            }
    if redo:
        whole = len(redo) == len(files)
        print(f"tracing {'the test suite' if whole else ', '.join(redo)} to map tests to lines ...", flush=True)
        started = time.monotonic()
        fresh = _trace(scratch, data["modules"], ["tests"] if whole else redo)
        print(f"traced in {time.monotonic() - started:.0f} s", flush=True)
        if not fresh["durations"]:
            raise SystemExit("the traced run ran no test: run the suite (pytest -q) and fix what stops it")
        if fresh["failed"]:
            print(f"warning: {len(fresh['failed'])} test(s) failed under tracing and are left out: "
                  + ", ".join(fresh["failed"][:5]), flush=True)
        data["durations"].update(fresh["durations"])
        data["failed"] = sorted(set(data["failed"]) | set(fresh["failed"]))
        for module, lines in fresh["lines"].items():
            merged = data["lines"].setdefault(module, {})
            for line, ids in lines.items():
                merged[line] = sorted(set(merged.get(line, [])) | set(ids))
        data["files"] = files
    elif gone:
        data["files"] = files
    cache.write_text(json.dumps(data))
    return data


def select_tests(mutant: Mutant, lines: Dict[str, List[str]], durations: Dict[str, float], failed: Set[str]) -> List[str]:
    """The tests that execute the mutant's lines, fastest first; for lines run only at import
    (defaults, module constants), every test that uses the module."""
    chosen: Set[str] = set()
    import_only = False
    for line in range(mutant.line, mutant.end_line + 1):
        ids = lines.get(str(line), [])
        chosen.update(i for i in ids if i != IMPORT)
        import_only = import_only or IMPORT in ids
    if not chosen and import_only:
        for ids in lines.values():
            chosen.update(i for i in ids if i != IMPORT)
    if not chosen and mutant.function:
        # Never seen running: maybe it runs where the tracer cannot see (a forked child, a
        # subprocess). Try the test files named after a word of its function (_after_fork:
        # test_fork_*.py).
        words = {word for word in mutant.function.lower().split("_") if len(word) >= 4}
        chosen.update(
            nodeid for nodeid in durations
            if words & set(Path(nodeid.split("::", 1)[0]).stem.lower().split("_"))
        )
    chosen -= failed
    return sorted(chosen, key=lambda nodeid: (durations.get(nodeid, 0.0), nodeid))


# Running ---------------------------------------------------------------------------------


KILLED, SURVIVED, TIMED_OUT, NO_TESTS = "killed", "survived", "timed out", "no tests"


def stages(tests: List[str], files: int = 2) -> List[List[str]]:
    """The tests in two runs: first those of the ``files`` test files holding most of them
    (most mutants die there, and collecting few files is quick), then the rest."""
    per_file = Counter(nodeid.split("::", 1)[0] for nodeid in tests)
    first_files = {name for name, _ in per_file.most_common(files)}
    first = [nodeid for nodeid in tests if nodeid.split("::", 1)[0] in first_files]
    rest = [nodeid for nodeid in tests if nodeid.split("::", 1)[0] not in first_files]
    return [stage for stage in (first, rest) if stage]


class Server:
    """A pytest process in one scratch copy that collected the suite once and runs each
    mutant's tests in a forked child (see ``_mutate_plugin``); restarted if it dies."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.process: Optional[subprocess.Popen] = None

    def ensure(self) -> None:
        """Started, on the unmutated tree (a mutant on disk would break its collection)."""
        if self.process is None or self.process.poll() is not None:
            self._start()

    def _start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *PYTEST, "-p", "_mutate_server", "-s", "tests"], cwd=self.scratch, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
            env=_env(self.scratch, MLO_MUTATE_SERVE="1"),
        )
        self.collected = int(self._read("MLO-READY") or 0)

    def _read(self, prefix: str) -> Optional[str]:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        return None

    def run(self, job: dict) -> Optional[dict]:
        """``{"status": ..., "killer": test id}``, or None when the server could not say (it died)."""
        if self.process is None or self.process.poll() is not None:
            return None
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(job) + "\n")
            self.process.stdin.flush()
        except OSError:
            self.process = None
            return None
        answer = self._read("MLO-RESULT")
        if answer is None:
            self.process = None
            return None
        return json.loads(answer)

    def close(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            assert self.process.stdin is not None
            self.process.stdin.write("\n")
            self.process.stdin.close()
            self.process.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


def run_mutant(
    mutant: Mutant, scratch: Path, server: Optional[Server], durations: Dict[str, float], factor: float, floor: float
) -> Tuple[str, Optional[str]]:
    """The mutant's status and, when a server ran it and a test killed it, that test."""
    if not mutant.tests:
        return NO_TESTS, None
    target = scratch / PACKAGE / mutant.module
    original = target.read_bytes()
    if server is not None:
        server.ensure()
    # On disk too: tests that start a subprocess (the CLI, the demos) import the package from it.
    target.write_text(mutant.source, encoding="utf-8")
    try:
        if server is not None:
            answer = server.run({
                "module": f"{PACKAGE}.{mutant.module[:-3]}", "path": str(target), "report": str(scratch / "killer.txt"),
                "tests": [[nodeid, floor / 2 + factor * durations.get(nodeid, 0.0)] for nodeid in mutant.tests],
                "timeout": floor + factor * sum(durations.get(nodeid, 0.0) for nodeid in mutant.tests),
            })
            if answer is not None and answer["status"] in (KILLED, SURVIVED, TIMED_OUT):
                return answer["status"], answer.get("killer")
        # No server, or the mutant cannot be swapped in (a closure changed): a fresh interpreter.
        for tests in stages(mutant.tests):
            status = _run_tests(tests, scratch, durations, factor, floor)
            if status != SURVIVED:
                return status, None
        return SURVIVED, None
    finally:
        target.write_bytes(original)


def _run_tests(tests: List[str], scratch: Path, durations: Dict[str, float], factor: float, floor: float) -> str:
    selection = scratch / "selection.json"
    timeouts = scratch / "timeouts.txt"
    if timeouts.exists():
        timeouts.unlink()
    # Each test gets its own limit, so a mutant that hangs the first test is caught early.
    selection.write_text(json.dumps([[nodeid, floor / 2 + factor * durations.get(nodeid, 0.0)] for nodeid in tests]))
    files = sorted({nodeid.split("::", 1)[0] for nodeid in tests})
    limit = floor + factor * sum(durations.get(nodeid, 0.0) for nodeid in tests)
    process = subprocess.Popen(
        [sys.executable, *PYTEST, "-x", *files], cwd=scratch, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
        env=_env(scratch, MLO_MUTATE_SELECT=str(selection), MLO_MUTATE_TIMEOUTS=str(timeouts)),
    )
    try:
        code = process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return TIMED_OUT
    if timeouts.exists() and timeouts.stat().st_size:
        return TIMED_OUT
    if code == 0:
        return SURVIVED
    if code == 5:  # nothing collected: a selection problem, not a kill
        return NO_TESTS
    return KILLED


def row(module: str, outcome: Dict[str, List[Mutant]], every: List[Mutant], equivalents: Dict[str, str], partial: bool) -> str:
    """One line of the summary table."""
    killed, timed_out = len(outcome[KILLED]), len(outcome[TIMED_OUT])
    survived = len(outcome[SURVIVED]) + len(outcome[NO_TESTS])
    equivalent = sum(1 for m in every if m.key in equivalents)
    real = killed + timed_out + survived
    score = 100.0 * (killed + timed_out) / real if real else 100.0
    total = real + (0 if partial else equivalent)
    return f"{module + '.py':<15}{total:>8}{killed:>8}{timed_out:>8}{survived:>9}{equivalent:>7}{score:>7.1f}%"


def parse_lines(spec: Optional[str]) -> Optional[Tuple[int, int]]:
    if not spec:
        return None
    low, _, high = spec.partition("-")
    return int(low), int(high or low)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--modules", nargs="+", default=list(DEFAULT_MODULES),
                        help="modules of the package to mutate (default: %(default)s)")
    parser.add_argument("-n", "--sample", type=int, default=0, help="run N random mutants per module (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (default: 0)")
    parser.add_argument("--lines", help="only mutants starting on these lines, e.g. 80-95")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="mutants run in parallel (default: 1)")
    parser.add_argument("--timeout-factor", type=float, default=3.0,
                        help="a mutant times out after floor + factor x its tests' traced time (default: 3)")
    parser.add_argument("--timeout-floor", type=float, default=20.0,
                        help="seconds; each test gets half of it plus factor x its traced time (default: 20)")
    parser.add_argument("--survivors", action="store_true",
                        help="run only the mutants that survived the previous run (to check new tests quickly)")
    parser.add_argument("--fresh", action="store_true",
                        help="run every mutant in a fresh interpreter (slow) instead of a forked, pre-collected one")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)

    equivalents = read_equivalents()
    modules = [module[:-3] if module.endswith(".py") else module for module in args.modules]
    mutants: Dict[str, List[Mutant]] = {}
    for module in modules:
        path = ROOT / PACKAGE / f"{module}.py"
        if not path.exists():
            parser.error(f"no module {path}")
        mutants[module] = mutants_of(f"{module}.py", path.read_text(encoding="utf-8"))
    all_keys = {m.key for found in mutants.values() for m in found}
    stale = [key for key in equivalents if key.split(SEPARATOR)[0][:-3] in modules and key not in all_keys]

    if args.list:
        for module in modules:
            for mutant in mutants[module]:
                mark = "  (equivalent)" if mutant.key in equivalents else ""
                print(f"{mutant.location}: {mutant.mutation}: {mutant.line_text}{mark}")
        return 0

    last_file = Path(tempfile.gettempdir()) / f"mlo-mutate-last-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]}.json"
    last: Dict[str, str] = json.loads(last_file.read_text()) if last_file.exists() else {}
    span = parse_lines(args.lines)
    rng = random.Random(args.seed)
    plan: Dict[str, List[Mutant]] = {}
    for module in modules:
        real = [m for m in mutants[module] if m.key not in equivalents]
        if span:
            real = [m for m in real if span[0] <= m.line <= span[1]]
        if args.survivors:
            real = [m for m in real if last.get(m.key) in (SURVIVED, NO_TESTS)]
        if args.sample and args.sample < len(real):
            real = sorted(rng.sample(real, args.sample), key=lambda m: m.line)
        plan[module] = real

    partial = bool(args.sample or span or args.survivors)
    jobs = max(1, args.jobs)
    with tempfile.TemporaryDirectory(prefix="mlo-mutate-") as temp:
        scratches = [make_scratch(Path(temp) / f"w{index}") for index in range(jobs)]
        servers = {scratch: (None if args.fresh else Server(scratch)) for scratch in scratches}
        for server in servers.values():
            if server is not None:
                server.ensure()
                print(f"server in {server.scratch.name}: {server.collected} tests collected", flush=True)
        data = coverage_map(scratches[0], modules)
        durations: Dict[str, float] = data["durations"]
        failed = set(data["failed"])
        results: Dict[str, Dict[str, List[Mutant]]] = {}
        started = time.monotonic()
        for module in modules:
            for mutant in plan[module]:
                mutant.tests = select_tests(mutant, data["lines"][module], durations, failed)
            free = list(scratches)

            killers: Counter = Counter()  # tests that killed this module's mutants so far

            def one(mutant: Mutant) -> Tuple[Mutant, str]:
                # The tests that killed most mutants first (then the fastest): a mutant usually
                # dies at its first test, and only survivors run every test of their line.
                mutant.tests.sort(key=lambda nodeid: (-killers[nodeid], durations.get(nodeid, 0.0), nodeid))
                scratch = free.pop()
                try:
                    status, killer = run_mutant(
                        mutant, scratch, servers[scratch], durations, args.timeout_factor, args.timeout_floor
                    )
                finally:
                    free.append(scratch)
                if killer:
                    killers[killer] += 1
                return mutant, status

            outcome: Dict[str, List[Mutant]] = defaultdict(list)
            print(f"{module}.py: {len(plan[module])} mutants", end="", flush=True)
            with ThreadPoolExecutor(jobs) as pool:
                for done, (mutant, status) in enumerate(pool.map(one, plan[module]), 1):
                    outcome[status].append(mutant)
                    if done % 10 == 0:
                        print(".", end="", flush=True)
            results[module] = outcome
            print(" " + row(module, outcome, mutants[module], equivalents, partial), flush=True)
            for mutant in sorted(outcome[SURVIVED] + outcome[NO_TESTS], key=lambda m: m.line):
                print(f"    survived: {mutant.key}", flush=True)
            # Re-read first: another run (of other modules) may have written since.
            merged = json.loads(last_file.read_text()) if last_file.exists() else {}
            merged.update({m.key: status for status, found in outcome.items() for m in found})
            last_file.write_text(json.dumps(merged))
        for server in servers.values():
            if server is not None:
                server.close()

    print()
    print(f"mutation run: {', '.join(modules)}; "
          f"{'sample of ' + str(args.sample) + ' per module' if args.sample else 'all mutants' if not partial else 'some mutants'}"
          f"{'; lines ' + args.lines if args.lines else ''}{'; previous survivors only' if args.survivors else ''}; {time.monotonic() - started:.0f} s")
    print(f"{'module':<15}{'mutants':>8}{'killed':>8}{'timeout':>8}{'survived':>9}{'equiv':>7}{'score':>8}")
    for module in modules:
        print(row(module, results[module], mutants[module], equivalents, partial))
    print("score = (killed + timed out) / (mutants - equivalent)")
    survivors = [m for module in modules for s in (SURVIVED, NO_TESTS) for m in results[module][s]]
    if survivors:
        print(f"\nsurvivors ({len(survivors)}); mark one equivalent by adding its last line plus ' || <reason>' "
              f"to {EQUIVALENTS.relative_to(ROOT)}:")
        for mutant in sorted(survivors, key=lambda m: (m.module, m.line)):
            note = " (no test runs this line)" if not mutant.tests else ""
            print(f"{mutant.location}: {mutant.mutation}{note}\n    {mutant.key}")
    if stale:
        print(f"\n{len(stale)} equivalent entr{'y' if len(stale) == 1 else 'ies'} no longer match a mutant "
              "(the line changed; review and update):")
        for key in stale:
            print(f"    {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

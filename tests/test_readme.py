"""The README's commands, run as pasted after its two setup commands.

Every ```python and ```bash block runs, in a subprocess with this venv, from the
repository root, with no keys and no configuration set; Python blocks after the
Quickstart's first block (three mock providers in ``router``), as the README says.
A block that needs real providers, keys or servers is excluded only by an explicit mark
on the line above it, ``<!-- readme-test: not run: <why> -->``; nothing else is left out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
MARK = re.compile(r"^\s*<!-- readme-test: not run: (.*?) -->\s*$")
# Lines that are shell commands: they belong in a ```bash block (so that they are run).
COMMAND = re.compile(r"^\s*(\$ |multi-llm-orchestrator |python3? |\.venv/|pip |llm |curl |cd |cat |export )")


@dataclass
class Block:
    line: int
    language: str
    code: str
    not_run: Optional[str]

    @property
    def id(self) -> str:
        return f"README.md:{self.line}:{self.language or 'text'}"


def readme_blocks(path: Path = ROOT / "README.md") -> List[Block]:
    lines = path.read_text(encoding="utf-8").split("\n")
    blocks, index = [], 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        end = index + 1
        while not re.match(r"^\s*```\s*$", lines[end]):
            end += 1
        previous = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        mark = MARK.match(previous)
        code = textwrap.dedent("\n".join(lines[index + 1:end]))
        blocks.append(Block(index + 1, fence.group(2), code, mark.group(1).strip() if mark else None))
        index = end + 1
    return blocks


BLOCKS = readme_blocks()
CODE = [b for b in BLOCKS if b.language in ("python", "bash")]
QUICKSTART = next(b for b in CODE if b.language == "python")
RUN = [b for b in CODE if b.not_run is None]


def environment() -> dict:
    """As after `. .venv/bin/activate`: this venv's bin first on PATH; nothing configured."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "GIGACHAT_", "YC_", "YANDEX", "OLLAMA_", "MULTI_LLM_ORCHESTRATOR_"))}
    venv_bin = str(Path(sys.executable).parent)
    env.update(PATH=venv_bin + os.pathsep + env.get("PATH", ""), VIRTUAL_ENV=str(Path(venv_bin).parent),
               PYTHONIOENCODING="utf-8")
    env.pop("PYTHONPATH", None)  # the package comes from the venv (installed -e), as for a user
    return env


def test_the_readme_has_code_to_run_and_every_exclusion_says_why():
    assert len(RUN) >= 8
    for block in CODE:
        if block.not_run is not None:
            assert len(block.not_run) > 10, f"{block.id}: say why it is not run"
    # A command in an untagged block would escape this test: commands go in ```bash.
    for block in BLOCKS:
        if block.language not in ("python", "bash"):
            assert not any(COMMAND.match(line) for line in block.code.splitlines()), (
                f"{block.id} holds shell commands: tag it ```bash (or mark it not run)")


@pytest.mark.parametrize("block", RUN, ids=[b.id for b in RUN])
def test_readme_block_runs_as_pasted(block, tmp_path):
    if block.language == "python":
        code = block.code if block is QUICKSTART else QUICKSTART.code + "\n\n" + block.code
        command = [sys.executable, "-c", code]
    else:
        command = ["bash", "-c", "set -euo pipefail\n" + block.code]
    result = subprocess.run(command, cwd=ROOT, env=environment(), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{block.id} failed:\n{block.code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert "Traceback" not in result.stderr

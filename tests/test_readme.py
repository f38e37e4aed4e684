"""The README's quickstart runs as written and prints what the README says it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def _blocks(language: str) -> list[str]:
    """Return the README's fenced code blocks of ``language`` ("" for blocks without one)."""
    blocks: list[str] = []
    lines: list[str] = []
    inside = wanted = False
    for line in README.read_text().splitlines(keepends=True):
        if line.startswith("```"):
            if inside and wanted:
                blocks.append("".join(lines))
            inside, wanted, lines = not inside, line[3:].strip() == language, []
        elif inside:
            lines.append(line)
    return blocks


def test_quickstart_prints_what_the_readme_says() -> None:
    quickstart = next(block for block in _blocks("python") if "anyio.run(main)" in block)
    printed = next(block for block in _blocks("") if "'name': 'Alice'" in block)
    result = subprocess.run([sys.executable, "-c", quickstart], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == printed


def test_readme_test_command_is_what_ci_runs() -> None:
    command = next(block for block in _blocks("bash") if "pytest" in block).strip()
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    assert command in ci

"""The main job runs on its embedded defaults and shows what it promises; the ``kvrt`` command behaves."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from kvrt.demo import run_demo

pytestmark = pytest.mark.anyio

TICK = re.compile(r"^\s*(\d+\.\d)s  (\w+)")


async def test_demo_serves_culls_and_persists(tmp_path: Path) -> None:
    lines: list[str] = []
    final = await run_demo(seconds=1.2, callers=8, directory=str(tmp_path), say=lines.append)
    assert set(final) == {"sessions", "cache", "ratelimit", "profiles"}
    assert all(sum(stats.ops.values()) > 0 for stats in final.values())
    assert all(not stats.errors for stats in final.values())
    reopened = lines[-1]
    assert reopened.startswith(f"\nreopened {tmp_path}")
    kept = int(reopened.split(": ")[1].split(" profiles")[0].replace(",", ""))
    assert kept > 0


async def test_demo_ticks_stay_on_the_second_however_long_a_row_takes(tmp_path: Path) -> None:
    """A slow terminal (every line takes 60 ms to print) delays the rows, not the ticks after them."""
    lines: list[str] = []

    def slow_terminal(line: str) -> None:
        time.sleep(0.06)  # the terminal's own cost, not a wait for anything
        lines.append(line)

    await run_demo(seconds=3.5, callers=4, directory=str(tmp_path), say=slow_terminal)
    ticks = sorted({float(match[1]) for line in lines if (match := TICK.match(line))})
    assert ticks[-1] == pytest.approx(3.5, abs=0.3)
    assert len(ticks) == 4
    for second, tick in enumerate(ticks[:3], start=1):
        assert second <= tick < second + 0.25, ticks  # a tick's lines took 5 x 60 ms; none of it carries over


async def test_demo_explains_its_columns_and_names_listings(tmp_path: Path) -> None:
    lines: list[str] = []
    await run_demo(seconds=0.5, callers=2, directory=str(tmp_path), say=lines.append)
    text = "\n".join(lines)
    assert "per call: requests merged into each backend call" in text
    summary = next(line for line in text.splitlines() if line.strip().startswith("profiles ") and "calls" in line)
    assert re.search(r"\d key listings", summary), summary
    assert not re.search(r"\d keys\b", summary), summary


def kvrt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvrt", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_version() -> None:
    result = kvrt("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"kvrt {version('kvrt')}"


def test_no_arguments_prints_the_version_and_the_commands() -> None:
    result = kvrt()
    assert result.returncode == 0
    first, *rest = result.stdout.splitlines()
    assert first == f"kvrt {version('kvrt')}"
    assert any(line.split()[:1] == ["demo"] for line in rest), result.stdout


def test_demo_help_names_the_disk_worker() -> None:
    result = kvrt("demo", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps lines
    assert "three memory workers and one disk worker" in text
    assert "memory-backed" not in text


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_ctrl_c_stops_the_demo_cleanly(tmp_path: Path, loop: str) -> None:
    """Ctrl-C after the first row: no traceback, the data drained and on disk, one line, exit 130."""
    process = subprocess.Popen(
        [sys.executable, "-m", "kvrt", "demo", "--loop", loop, "--seconds", "120", "--directory", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": ""},
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # the first row says the load is running
            if TICK.match(line):
                break
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, errors
    assert errors == "interrupted\n"
    reopened = rest.strip().splitlines()[-1]
    assert reopened.startswith(f"reopened {tmp_path}"), rest
    kept = int(reopened.split(": ")[1].split(" profiles")[0].replace(",", ""))
    assert kept > 0

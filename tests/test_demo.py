"""The main job runs on its embedded defaults and shows what it promises; the ``kvrt`` command behaves."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from functools import partial
from importlib.metadata import version
from pathlib import Path

import anyio
import pytest
from rich.console import Console

from kvrt.demo import run_demo
from kvrt.stats_server import StatsSnapshot, connect_stats, parse_stats_address

pytestmark = pytest.mark.anyio

FRAME = re.compile(r"^kvrt demo\s+(\d+\.\d) s of ([\d.]+) s   in flight \d+ of [\d,]+")
"""The first line of each frame of the live view: the time into the run."""
WORKERS = ("sessions", "cache", "ratelimit", "profiles")


def piped(file: io.StringIO | None = None) -> tuple[Console, io.StringIO]:
    """A console as stdout is in a pipe (no terminal: each frame is printed after the last), and what it wrote."""
    file = file or io.StringIO()
    return Console(file=file, width=120), file


async def test_demo_shows_every_worker_each_second_and_persists(tmp_path: Path) -> None:
    console, printed = piped()
    final = await run_demo(seconds=2.2, callers=8, directory=str(tmp_path), console=console)
    assert set(final) == set(WORKERS)
    assert all(sum(stats.ops.values()) > 0 for stats in final.values())
    assert all(not stats.errors for stats in final.values())
    text = printed.getvalue()
    assert "mean batch: requests merged into each backend call" in text  # the legend
    frames = [frame.strip("\n") for frame in text.split("\n\n") if FRAME.match(frame.strip("\n"))]
    assert [float(FRAME.match(frame)[1]) for frame in frames] == pytest.approx([1.0, 2.0, 2.2], abs=0.2)  # type: ignore[index]
    for frame in frames[1:]:  # the first second's ops/s are measured from the demo's start
        rows = {line.split()[0]: line.split() for line in frame.splitlines() if line.split()[0] in WORKERS}
        assert set(rows) == set(WORKERS), frame
        for name, row in rows.items():
            state, circuit, mailbox, _in_flight, rate = row[1:6]
            assert (state, circuit) == ("running", "closed"), frame
            assert re.fullmatch(r"\d+/1,024", mailbox), frame
            assert int(rate.replace(",", "")) > 0, (name, frame)
    summary = text[text.index("done in ") :].splitlines()
    assert len(summary) < 20  # one screen: the headline, the table, the reopened line
    assert re.match(r"done in 2\.\d s: [\d,]+ requests answered \([\d,]+/s\), at most \d+ in flight", summary[0])
    profiles = next(line for line in summary if line.startswith("profiles "))
    assert re.search(r"\d key listings", profiles), profiles
    assert not re.search(r"\d keys\b", profiles), profiles
    reopened = summary[-1]
    assert reopened.startswith(f"reopened {tmp_path}")
    kept = int(reopened.split(": ")[1].split(" profiles")[0].replace(",", ""))
    assert 0 < kept <= final["profiles"].ops["put"]


async def test_a_slow_terminal_never_holds_up_the_workers_loop(tmp_path: Path) -> None:
    """Each write takes 0.3 s: the loop the workers run on goes on, and the frames stay on the second."""

    class SlowTerminal(io.StringIO):
        def write(self, text: str) -> int:
            time.sleep(0.3)  # the terminal's own cost, not a wait for anything
            return super().write(text)

    file = SlowTerminal()
    worst = 0.0
    done = anyio.Event()

    async def watch_the_loop() -> None:
        nonlocal worst
        while not done.is_set():
            before = anyio.current_time()
            await anyio.sleep(0.01)
            worst = max(worst, anyio.current_time() - before - 0.01)

    async with anyio.create_task_group() as group:
        group.start_soon(watch_the_loop)
        await run_demo(seconds=2.2, callers=4, directory=str(tmp_path), console=piped(file)[0])
        done.set()
    assert worst < 0.15, worst
    ticks = [float(match[1]) for line in file.getvalue().splitlines() if (match := FRAME.match(line))]
    assert len(ticks) == 3, ticks
    assert ticks[-1] == pytest.approx(2.2, abs=0.35)
    for second, tick in enumerate(ticks[:2], start=1):
        assert second <= tick < second + 0.25, ticks  # a frame's 0.3 s of writing never carries over


async def test_in_a_terminal_the_live_view_is_redrawn_in_place(tmp_path: Path) -> None:
    file = io.StringIO()
    console = Console(file=file, width=120, height=40, force_terminal=True)
    await run_demo(seconds=1.2, callers=4, directory=str(tmp_path), console=console)
    text = file.getvalue()
    assert "\x1b[1A\x1b[2K" in text  # the cursor goes back up over the last frame, erasing it
    drawn = [float(second) for second in re.findall(r"kvrt demo\s+(\d+\.\d) s of 1.2 s", text)]
    assert drawn[0] == pytest.approx(1.0, abs=0.2)
    assert drawn[-1] == pytest.approx(1.2, abs=0.2)
    assert "reopened " in text[text.rindex("done in ") :]  # the summary, after the last frame


async def test_demo_serves_its_stats_to_kvrt_top_while_it_runs(tmp_path: Path) -> None:
    path = str(tmp_path / "stats.sock")
    console, printed = piped()
    stop = anyio.Event()
    seen: list[StatsSnapshot] = []
    async with anyio.create_task_group() as group:
        group.start_soon(partial(run_demo, 30, 4, str(tmp_path / "data"), console, stop, stats_address=path))
        with anyio.fail_after(10):
            while not seen or len(seen[-1].workers) < len(WORKERS):
                try:
                    async with connect_stats(parse_stats_address(path)) as client:
                        seen.append(await client.snapshot())
                except ConnectionError:
                    pass  # the demo has not yet bound its address
                await anyio.sleep(0.05)
        stop.set()
    assert set(seen[-1].workers) == set(WORKERS)
    assert all(worker.state == "running" for worker in seen[-1].workers.values())
    assert f"kvrt top {path}" in printed.getvalue()
    assert not await anyio.Path(path).exists()


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


def test_demo_refuses_a_stats_address_off_the_loopback() -> None:
    result = kvrt("demo", "--stats-address", "0.0.0.0:9100", "--seconds", "0.1")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("kvrt: ValueError: stats are served on a loopback address only")
    assert len(result.stderr.splitlines()) == 1


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
        for line in process.stdout:  # the first frame says the load is running
            if FRAME.match(line):
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

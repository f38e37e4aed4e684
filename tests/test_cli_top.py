"""``kvrt top`` against a running runtime (``kvrt demo --stats-address``): the table, its exits, and in a terminal."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

ROOT = Path(__file__).parent.parent
WORKERS = ("sessions", "cache", "ratelimit", "profiles")
ROW = re.compile(
    r"^(?P<worker>sessions|cache|ratelimit|profiles) +(?P<state>\w+) +(?P<circuit>\w+) +(?P<depth>\d+)/1,024 +"
    r"(?P<in_flight>\d+) +(?P<rate>[\d,]+|-) +(?P<p50>[\d.,]+) +(?P<p99>[\d.,]+) +(?P<batches>[\d,]+) +"
    r"(?P<mean_batch>[\d.]+) +(?P<restarts>\d+) +(?P<culled>[\d,]+) +(?P<errors>[\d,]+)$",
    re.MULTILINE,
)
"""A worker's row of the table."""
ENV = dict(os.environ)
"""The environment as Python sees it, passed explicitly: under pytest the process's own environment can hold a
COLUMNS=80 that ``os.environ`` lacks, and a child would draw its table at that width."""
_T = TypeVar("_T")


def kvrt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvrt", *args], capture_output=True, text=True, timeout=60, check=False, env=ENV
    )


def ask(address: str) -> dict[str, Any] | None:
    """Return the snapshot the runtime at ``address`` serves, or None if nothing answers yet."""
    try:
        if ":" in address:
            host, port = address.rsplit(":", 1)
            connection = socket.create_connection((host, int(port)), timeout=5)
        else:
            connection = socket.socket(socket.AF_UNIX)
        with connection, connection.makefile("rb") as answers:
            if connection.family == socket.AF_UNIX:
                connection.settimeout(5)
                connection.connect(address)
            connection.sendall(b"stats\n")
            snapshot: dict[str, Any] = msgspec.json.decode(answers.readline())
            return snapshot
    except OSError:
        return None


def eventually(condition: Callable[[], _T | None], within: float = 15.0) -> _T:
    """Poll ``condition`` until it returns something, failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while (found := condition()) is None:
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)
    return found


def serving(address: str) -> dict[str, Any] | None:
    snapshot = ask(address)
    return snapshot if snapshot is not None and set(snapshot["workers"]) == set(WORKERS) else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A demo runtime under load, serving its stats on loopback TCP; its address."""
    address = f"127.0.0.1:{free_port()}"
    directory = tmp_path_factory.mktemp("demo")
    command = ["demo", "--seconds", "120", "--callers", "4", "--directory", str(directory), "--stats-address", address]
    process = subprocess.Popen(
        [sys.executable, "-m", "kvrt", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        eventually(lambda: serving(address) if process.poll() is None else pytest.fail("the demo ended"))
        yield address
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=30)
        assert process.returncode == 130, errors
        assert ask(address) is None  # it stopped serving with its runtime
    finally:
        process.kill()
        process.wait()


def rows(text: str) -> dict[str, dict[str, str]]:
    return {match["worker"]: match.groupdict() for match in ROW.finditer(text)}


def number(text: str) -> float:
    return float(text.replace(",", ""))


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_once_prints_a_row_per_worker_and_the_runtime_line(demo: str, loop: str) -> None:
    result = kvrt("top", demo, "--once", "--interval", "0.3", "--loop", loop)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    first = result.stdout.splitlines()[0]
    assert re.fullmatch(
        rf"kvrt top {re.escape(demo)}   in flight \d+ of 65,536 \(peak \d+\)   4 workers   [\d,]+ ops/s", first
    ), first
    table = rows(result.stdout)
    assert set(table) == set(WORKERS), result.stdout
    for row in table.values():
        assert (row["state"], row["circuit"]) == ("running", "closed")
        assert number(row["rate"]) > 0  # measured over the interval between two snapshots
        assert number(row["batches"]) > 0
        assert number(row["p99"]) >= number(row["p50"]) > 0
        assert row["errors"] == "0"


def test_json_prints_one_snapshot(demo: str) -> None:
    result = kvrt("top", demo, "--json")
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    snapshot = msgspec.json.decode(line)
    assert snapshot["version"] == 1
    assert set(snapshot["workers"]) == set(WORKERS)
    assert snapshot["runtime"]["max_in_flight"] == 65536
    assert all(worker["ops"] for worker in snapshot["workers"].values())


def test_svg_saves_the_table_as_a_picture(demo: str, tmp_path: Path) -> None:
    picture = tmp_path / "top.svg"
    result = kvrt("top", demo, "--svg", str(picture), "--interval", "0.2")
    assert result.returncode == 0, result.stderr
    assert set(rows(result.stdout)) == set(WORKERS)
    svg = picture.read_text()
    assert svg.startswith("<svg")
    assert all(name in svg for name in WORKERS)


def test_ctrl_c_stops_top_quietly(demo: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "kvrt", "top", demo],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ENV, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # outside a terminal each frame is printed: the first means it is drawing
            if ROW.match(line.rstrip("\n")):
                break
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130
    assert errors == ""


@pytest.mark.parametrize("where", ["unix", "tcp"])
def test_an_address_nothing_serves_is_one_line_and_exit_3(tmp_path: Path, where: str) -> None:
    address = str(tmp_path / "nobody.sock") if where == "unix" else f"127.0.0.1:{free_port()}"
    result = kvrt("top", address, "--once")
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.startswith(f"kvrt: ConnectionError: no kvrt runtime serves stats at {address} (")
    assert len(result.stderr.splitlines()) == 1


def test_an_address_off_the_loopback_is_bad_usage() -> None:
    result = kvrt("top", "10.1.2.3:9100")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("kvrt: ValueError: stats are served on a loopback address only")
    assert len(result.stderr.splitlines()) == 1


def test_kvrt_top_in_a_terminal_shows_the_workers_live(tmp_path: Path) -> None:
    """A demo under load in one tmux pane, ``kvrt top`` in another: the rows are drawn and their figures move."""
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed: apt-get install tmux (.ci/run does)")
    server = f"kvrt-top-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # a private tmux server, killed at the end
    address = str(tmp_path / "stats.sock")
    python = shlex.quote(sys.executable)

    def tmux(*args: str) -> str:
        command = ["tmux", "-L", server, "-f", os.devnull, *args]
        return subprocess.run(command, capture_output=True, text=True, check=True, timeout=10, env=ENV).stdout

    def capture(pane: str) -> str:
        return tmux("capture-pane", "-p", "-t", pane)

    try:
        demo_pane = tmux(
            "new-session", "-d", "-P", "-F", "#{pane_id}", "-x", "150", "-y", "50", "-c", str(ROOT),
            f"{python} -m kvrt demo --seconds 60 --callers 8 --directory {shlex.quote(str(tmp_path / 'data'))} "
            f"--stats-address {shlex.quote(address)}; sleep 600",
        ).strip()  # fmt: skip
        eventually(lambda: serving(address))
        top_pane = tmux(
            "split-window", "-v", "-P", "-F", "#{pane_id}", "-t", demo_pane, "-c", str(ROOT),
            f"{python} -m kvrt top {shlex.quote(address)}; sleep 600",
        ).strip()  # fmt: skip

        def drawn() -> tuple[str, dict[str, dict[str, str]]] | None:
            screen = capture(top_pane)
            table = rows(screen)
            return (screen, table) if set(table) == set(WORKERS) else None

        first_screen, first = eventually(drawn)
        assert re.search(rf"^kvrt top {re.escape(address)}   in flight \d+ of 65,536", first_screen, re.MULTILINE)

        def moved() -> tuple[str, dict[str, dict[str, str]]] | None:
            found = drawn()
            if found is None or not all(
                number(found[1][name]["batches"]) > number(first[name]["batches"]) for name in WORKERS
            ):
                return None
            return found

        second_screen, second = eventually(moved)
        (tmp_path / "top-1.txt").write_text(first_screen)  # kept for a look when this test fails
        (tmp_path / "top-2.txt").write_text(second_screen)
        for name in WORKERS:
            assert (second[name]["state"], second[name]["circuit"]) == ("running", "closed")
            assert number(second[name]["rate"]) > 0, second_screen
        assert "Traceback" not in second_screen
        assert second_screen.count("in flight") == 1  # redrawn in place, not scrolled frame after frame

        tmux("send-keys", "-t", demo_pane, "C-c")  # the demo drains, summarises and ends; top says so

        def showing(pane: str, text: str) -> Callable[[], str | None]:
            return lambda: screen if text in (screen := capture(pane)) else None

        eventually(showing(demo_pane, "reopened "))
        ended = eventually(showing(top_pane, "stopped serving stats"))
        assert f"kvrt: ConnectionError: the runtime at {address} stopped serving stats" in ended
        assert "Traceback" not in ended + capture(demo_pane)
    finally:
        subprocess.run(["tmux", "-L", server, "kill-server"], capture_output=True, check=False, timeout=10)

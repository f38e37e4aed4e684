"""``kvrt bench`` measures each URL through kvrt, the reference and the raw driver; prints, records and draws it."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import msgspec
import pytest
import redis

from kvrt.testing.servers import RedisTarget, redis_binary, redis_server
from kvrt.workload import Results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHARTS = ("throughput.png", "latency.png", "stall.png")
BENCH = Path(__file__).parent.parent / "bench"
ROW = re.compile(r"^│ (kvrt|reference|raw)\s+│\s+([\d,]+) │ (put|get) │\s+([\d,]+) │")


def kvrt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvrt", *args], capture_output=True, text=True, timeout=120, check=False
    )


def rows(stdout: str) -> set[tuple[str, int, str]]:
    """Every (subject, callers, op) the tables print a figure for."""
    return {(m[1], int(m[2].replace(",", "")), m[3]) for line in stdout.splitlines() if (m := ROW.match(line))}


def assert_png(path: Path) -> None:
    import matplotlib.image

    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    assert len(data) > 10_000, path
    height, width, channels = matplotlib.image.imread(path).shape
    assert height > 300, (path, height)
    assert width > 400, (path, width)
    assert channels in (3, 4), path


def results(out: Path) -> Results:
    return msgspec.json.decode((out / "results.json").read_bytes(), type=Results)


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_memory_and_disk_against_the_reference_and_raw(tmp_path: Path, loop: str) -> None:
    out = tmp_path / "out"
    disk = f"disk://{tmp_path / 'store'}"
    result = kvrt(
        "bench", "memory://", disk, "null://", "--callers", "1,4", "--keys", "200",
        "--against", "reference,raw", "--out", str(out), "--loop", loop,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = {
        (subject, callers, op)
        for subject in ("kvrt", "reference", "raw")
        for callers in (1, 4)
        for op in ("put", "get")
    }
    printed = rows(result.stdout)
    assert printed >= expected
    assert "memory://" in result.stdout
    assert f"disk://{tmp_path / 'store'}" in result.stdout
    assert "no reference store for null:// URLs" in result.stderr
    assert "no raw driver for null:// URLs" in result.stderr
    assert "200 of 200 gets found nothing" in result.stderr  # null:// keeps nothing, and says so
    for name in CHARTS:
        assert_png(out / name)
    recorded = results(out)
    assert recorded.loop == loop
    assert recorded.keys == 200
    assert recorded.idle_stall_ms >= 0
    by = {(m.backend, m.subject, m.run.callers, m.run.op): m.run for m in recorded.measured}
    assert len(by) == len(recorded.measured) == 2 * 12 + 4  # memory and disk: 3 subjects; null: kvrt alone
    for (backend, subject, callers, op), run in by.items():
        assert run.operations == 200
        assert run.callers == callers
        assert run.latency_ms["p50"] <= run.latency_ms["p99"]
        assert run.worst_stall_ms >= 0
        assert run.missing == (200 if backend == "null://" and op == "get" else 0), (backend, subject, op)
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".kvrt-bench-")]


def test_redis_against_the_raw_driver_and_the_reference_cleans_up(redis_server: RedisTarget, tmp_path: Path) -> None:
    result = kvrt(
        "bench", redis_server.url, "--callers", "1,128", "--keys", "256", "--against", "reference,raw",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = rows(result.stdout)
    expected = {(subject, callers, op) for subject in ("kvrt", "raw") for callers in (1, 128) for op in ("put", "get")}
    assert printed >= expected | {("reference", 1, "put"), ("reference", 1, "get")}
    recorded = results(tmp_path)
    assert {m.backend for m in recorded.measured} == {redis_server.url}
    # redis-py 8's pool holds 100 connections and refuses the 101st: the reference's limit is a finding, not
    # the end of the bench (older redis-py, unbounded, measures it)
    if ("reference", 128, "put") not in printed:
        (failure,) = recorded.failed
        assert (failure.subject, failure.callers) == ("reference", 128)
        assert f"(reference, 128 callers) failed: {failure.error}" in result.stderr
    host, port = redis_server.nodes[0]
    with redis.Redis(host=host, port=port) as client:
        assert not list(client.scan_iter(match="*kvrt-bench*"))


def test_a_password_in_the_url_is_never_shown(tmp_path: Path) -> None:
    password = "s3cr3t-Pa55word"
    refused = tmp_path / "refused"
    with redis_server(redis_binary()) as server:
        with redis.Redis(port=server.port) as client:
            client.config_set("requirepass", password)  # once it answered PING: a server that needs the password
        url = f"redis://:{password}@127.0.0.1:{server.port}/0"
        result = kvrt("bench", url, "--callers", "1", "--keys", "50", "--against", "raw", "--out", str(tmp_path))
        wrong = kvrt("bench", url.replace(password, "not-it"), "--callers", "1", "--keys", "5", "--out", str(refused))
    assert result.returncode == 0, result.stderr
    assert rows(result.stdout) == {(s, 1, op) for s in ("kvrt", "raw") for op in ("put", "get")}
    assert f"redis://:***@127.0.0.1:{server.port}/0" in result.stdout
    recorded = (tmp_path / "results.json").read_text()
    assert "redis://:***@" in recorded
    for text in (result.stdout, result.stderr, recorded, wrong.stdout, wrong.stderr):
        assert password not in text
        assert "not-it" not in text
    assert wrong.returncode == 3
    assert wrong.stderr.splitlines()[-1].startswith("kvrt: "), wrong.stderr
    assert not refused.exists()  # kvrt's own failure stops the bench: nothing recorded


def test_without_the_plots_extra_the_table_is_printed_with_a_hint(tmp_path: Path) -> None:
    prelude = "import sys; sys.modules['matplotlib'] = None; from kvrt.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = ["bench", "memory://", "--callers", "1", "--keys", "50", "--out", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-c", prelude, *argv], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert rows(result.stdout) == {("kvrt", 1, "put"), ("kvrt", 1, "get")}
    hints = [line for line in result.stderr.splitlines() if line.startswith("kvrt bench:")]
    assert hints == ["kvrt bench: PNGs need the 'plots' extra: pip install 'kvrt[plots]' (results.json is written)"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["results.json"]
    assert results(tmp_path).measured


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["nope://x"], "kvrt cannot open nope:// URLs"),
        (["memory://", "--against", "oracle"], "--against takes reference and/or raw"),
        (["memory://", "--callers", "0"], "must be a positive whole number"),
    ],
)
def test_bad_usage_is_status_2(tmp_path: Path, args: list[str], said: str) -> None:
    result = kvrt("bench", *args, "--out", str(tmp_path))
    assert result.returncode == 2
    assert said in result.stderr
    assert not list(tmp_path.iterdir())


def load(name: str) -> ModuleType:
    sys.path.insert(0, str(BENCH))  # the bench scripts import each other as their folder's modules
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_plot_results_reads_and_draws_the_recorded_sections(tmp_path: Path) -> None:
    plot_results = load("plot_results")
    found = plot_results.sections((BENCH / "RESULTS.md").read_text())
    compared = {comparison.backend: comparison for comparison in plot_results.comparisons(found)}
    assert {"Memory", "Memory (trio)", "Disk", "Redis"} <= set(compared)
    for comparison in compared.values():
        for key in ((1, "put"), (1, "get"), (64, "put"), (64, "get")):
            assert comparison.ratio[key] > 0
            assert comparison.kvrt_stall[key] > 0
            assert comparison.reference_stall[key] > 0
    scaling = plot_results.scaling(found)
    assert set(scaling) == {"asyncio", "trio"}
    assert {row["workers"] for row in scaling["asyncio"].rows} == {"1", "16", "100"}
    written = [  # two of the four: the others draw the same rows the same way
        plot_results.draw_ratios(list(compared.values()), tmp_path),
        plot_results.draw_scaling("trio", scaling["trio"], tmp_path),
    ]
    assert [path.name for path in written] == ["ratios.png", "scale-trio.png"]
    for path in written:
        assert_png(path)


def test_regenerate_runs_every_bench_with_write() -> None:
    regenerate = load("regenerate")
    commands = regenerate.bench_commands()
    assert all(command[-1] == "--write" or "--write" in command for command in commands)
    scripts = {command[0] for command in commands}
    assert scripts == {f"bench/{path.name}" for path in BENCH.glob("bench_*.py")}
    assert ["bench/bench_memory.py", "--rounds", "5", "--loop", "trio", "--write"] in commands
    assert len(commands) == len({tuple(command) for command in commands})

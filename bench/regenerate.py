"""Regenerate bench/RESULTS.md and every chart it embeds: the one command for all of bench/.

    python bench/regenerate.py                # every bench with --write, kvrt bench, then the charts (over an hour)
    python bench/regenerate.py --plots-only   # only redraw the charts from what is recorded (seconds)
    python bench/regenerate.py --skip-benches # only the kvrt bench example, then the charts (minutes)
    python bench/regenerate.py --dry-run      # print the commands it would run

The benches run one after another, each as the section it wrote says (its ``Command:`` line in
RESULTS.md, with ``--write``), then any bench/bench_*.py no section names yet; each starts the
servers it needs. Then ``kvrt bench`` runs the standard workload on memory, disk and a
redis-server of its own against the reference and the raw drivers, into bench/plots/bench/. Last,
bench/plot_results.py draws bench/plots/*.png from the tables just recorded. A bench that fails
does not stop the others: the failures are listed at the end, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import plot_results

from kvrt.testing.servers import redis_binary, redis_server

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
_COMMAND = re.compile(r"^Command: `python (bench/bench_[\w]+\.py[^`]*)`", re.MULTILINE)
BENCH_URLS = ("memory://", "disk://kvrt-bench-disk")
"""What the ``kvrt bench`` example measures, with the redis-server it starts (a relative directory: short labels)."""


def bench_commands(results: Path = plot_results.RESULTS) -> list[list[str]]:
    """Return each bench's command line: as RESULTS.md's sections name them (in order, once each), with ``--write``."""
    commands: list[list[str]] = []
    for line in _COMMAND.findall(results.read_text() if results.exists() else ""):
        command = shlex.split(line)
        if "--write" not in command:
            command.append("--write")
        if command not in commands:
            commands.append(command)
    named = {command[0] for command in commands}
    for script in sorted(HERE.glob("bench_*.py")):
        path = script.relative_to(ROOT).as_posix()
        if path not in named:
            commands.append([path, "--write"])
    return commands


def kvrt_bench_command(redis_url: str, out: Path) -> list[str]:
    """Return the ``kvrt bench`` example's command line."""
    return ["-m", "kvrt", "bench", *BENCH_URLS, redis_url, "--against", "reference,raw", "--out", str(out)]


def _run(argv: list[str], cwd: Path) -> bool:
    print(f"$ python {shlex.join(argv)}", flush=True)
    return subprocess.run([sys.executable, *argv], cwd=cwd, check=False).returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate bench/RESULTS.md and the charts it embeds.")
    parser.add_argument("--plots-only", action="store_true", help="only redraw the charts from what is recorded")
    parser.add_argument("--skip-benches", action="store_true", help="run only the kvrt bench example, then draw")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    out = plot_results.OUT / plot_results.BENCH
    commands = [] if args.plots_only or args.skip_benches else bench_commands()
    if args.dry_run:
        for command in commands:
            print(f"python {shlex.join(command)}")
        if not args.plots_only:
            print(f"python {shlex.join(kvrt_bench_command('redis://127.0.0.1:PORT/0', out))}  (its own redis-server)")
        print(f"python {(HERE / 'plot_results.py').relative_to(ROOT)}")
        return 0
    failed: list[str] = []
    for index, command in enumerate(commands, start=1):
        print(f"[{index}/{len(commands)}]", end=" ")
        if not _run(command, ROOT):
            failed.append(shlex.join(command))
    if not args.plots_only:
        with redis_server(redis_binary()) as server, tempfile.TemporaryDirectory() as scratch:
            if not _run(kvrt_bench_command(server.url, out), Path(scratch)):
                failed.append("kvrt bench")
    for path in plot_results.draw_all():
        print(f"wrote {path.relative_to(ROOT)}")
    if failed:
        print(f"{len(failed)} failed (their sections are as they were):", *failed, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

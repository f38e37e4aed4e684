"""The shared harness of kvrt's comparative benches: the same workload through two subjects in one process.

Each round runs the standard workload (kvrt.workload, which ``kvrt bench`` runs too): puts of a
3-field dict, then gets of the same keys, with 1 caller and with 64 concurrent callers, through
each subject in turn (fresh for every round), so machine noise falls on both; the best round of
each is reported with the ratio. While each run goes on, a monitor task sleeps 1 ms in a loop and
records how late it wakes: the worst stall the run inflicted on the host loop, reported as the
median over the rounds (the run's own) and the worst of all rounds (which includes the machine's
hiccups). The same monitor on an idle loop gives the machine's own floor (a shared VM stalls an
idle loop too). Before each timed run the garbage collector runs, so no run pays for the last
one's garbage.
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import tempfile
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

import kvrt
from kvrt import workload
from kvrt.backends.base import Backend
from kvrt.backends.memory import MemoryBackend
from kvrt.handle import Handle
from kvrt.workload import Run

VALUE = workload.VALUE
KEYS_PER_CALLER = {1: 20_000, 64: 500}
IDLE_SECONDS = 3.0
RESULTS = Path(__file__).with_name("RESULTS.md")

Subject = Callable[[], AbstractAsyncContextManager[Any]]
"""Makes a fresh store (an ``AsyncKeyValue``) for one round, and cleans up after it."""


@asynccontextmanager
async def kvrt_memory() -> AsyncIterator[Handle]:
    """kvrt's memory backend: the same runtime and load without I/O (what callers' own work stalls the loop by)."""
    async with kvrt.Runtime() as runtime:
        yield await runtime.spawn(MemoryBackend(max_entries_per_collection=1_000_000))


@asynccontextmanager
async def kvrt_in_directory(backend: Callable[[Path], Backend]) -> AsyncIterator[Handle]:
    """kvrt over the backend ``backend`` makes in a fresh temporary directory, removed after."""
    with tempfile.TemporaryDirectory() as directory:
        async with kvrt.Runtime() as runtime:
            yield await runtime.spawn(backend(Path(directory)))


@asynccontextmanager
async def reference_in_directory(store: Callable[[Path], Any]) -> AsyncIterator[Any]:
    """The reference's store ``store`` makes in a fresh temporary directory: closed (where it can be), removed after."""
    with tempfile.TemporaryDirectory() as directory:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "A configured store is unstable")
            made = store(Path(directory))
        try:
            yield made
        finally:
            close = getattr(made, "close", None)
            if close is not None:  # the file tree holds nothing open between calls
                await close()


def main_against_reference(title: str, kvrt_subject: Subject, reference: Subject, section_name: str) -> None:
    """Run :func:`main` with kvrt, the reference and kvrt's memory backend (the stall baseline) as subjects."""
    main(title, {"kvrt": kvrt_subject, "reference": reference, "kvrt's memory backend": kvrt_memory}, section_name)


@dataclass
class Best:
    runs: list[Run] = field(default_factory=list)

    @property
    def ops(self) -> float:
        return max(run.ops_per_second for run in self.runs)

    @property
    def stall(self) -> str:
        """Each run's worst stall: the median over the rounds, then the worst of all rounds."""
        stalls = sorted(run.worst_stall_ms for run in self.runs)
        return f"{stalls[len(stalls) // 2]:.2f} / {stalls[-1]:.2f} ms"


@dataclass
class Table:
    results: dict[int, dict[str, dict[str, Best]]] = field(default_factory=dict)
    """callers -> subject -> operation -> results."""
    idle_stall_ms: float = 0.0
    """The worst stall of the host loop with nothing running, over ``IDLE_SECONDS``."""


async def _idle_stall() -> float:
    return await workload.idle_stall(IDLE_SECONDS)


async def _round(store: Any, callers: int, results: dict[str, Best]) -> None:
    put, get = await workload.run_workload(store, callers, callers * KEYS_PER_CALLER[callers])
    if get.missing:
        raise AssertionError(f"{get.missing} of {get.operations} keys went missing")
    results["put"].runs.append(put)
    results["get"].runs.append(get)


async def compare(subjects: dict[str, Subject], rounds: int) -> Table:
    """Run every round through every subject, alternating; return the results by callers and subject."""
    # Imported libraries (py-key-value and its dependencies add 3 ms here) make every full
    # collection slower for both subjects; move what exists now out of the collector's sight.
    gc.collect()
    gc.freeze()
    table = Table(idle_stall_ms=await _idle_stall())
    for callers in KEYS_PER_CALLER:
        table.results[callers] = {name: {"put": Best(), "get": Best()} for name in subjects}
        for _ in range(rounds):
            for name, subject in subjects.items():
                async with subject() as store:
                    await _round(store, callers, table.results[callers][name])
    return table


def report(title: str, table: Table, rounds: int, loop: str, extra: list[str] | None = None) -> str:
    """The markdown section for ``table``: the first subject against the second, with ratios and stalls."""
    first, second, *baselines = next(iter(table.results.values()))
    lines = [
        f"## {title}, {loop}",
        "",
        f"Command: `python {' '.join(sys.argv)}`  ",
        f"Python {platform.python_version()}, {platform.machine()}, {sys.platform}; best of {rounds} rounds, "
        "alternating subjects, same process and event loop.",
        "",
        f"| callers | op | {first} ops/s | {second} ops/s | ratio | {first} worst stall (median / max) "
        f"| {second} worst stall (median / max) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for callers, subjects in table.results.items():
        for op in ("put", "get"):
            ours, theirs = subjects[first][op], subjects[second][op]
            lines.append(
                f"| {callers} | {op} | {ours.ops:,.0f} | {theirs.ops:,.0f} | {ours.ops / theirs.ops:.2f}x "
                f"| {ours.stall} | {theirs.stall} |"
            )
    for name in baselines:
        lines += ["", f"Same load, same process, through {name} (a baseline for the stall columns):", ""]
        for callers, subjects in table.results.items():
            for op in ("put", "get"):
                result = subjects[name][op]
                lines.append(f"- {callers} callers, {op}: {result.ops:,.0f} ops/s, worst stall {result.stall}")
    lines += [
        "",
        f"Idle host loop, same process, nothing running: worst stall {table.idle_stall_ms:.2f} ms over "
        f"{IDLE_SECONDS:.0f} s (the machine's own floor for the stall columns).",
    ]
    return "\n".join(lines + (extra or [])) + "\n"


def write_section(section: str) -> None:
    """Replace the section of bench/RESULTS.md with ``section``'s heading, or append it."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    heading = section.splitlines()[0]
    if heading in text:
        start = text.index(heading)
        rest = text.find("\n## ", start + 1)
        text = text[:start] + section + ("" if rest < 0 else text[rest:])
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


def main(
    title: str,
    subjects: dict[str, Subject],
    section_name: str,
    extra: Callable[[], list[str]] | None = None,
    argv: list[str] | None = None,
) -> None:
    """The command line of a comparative bench: run it, print its section, optionally record it.

    ``argv`` is what is left once the bench took its own options (the report shows the whole command).
    """
    parser = argparse.ArgumentParser(description=f"{title} (see bench/harness.py for the method).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--write", action="store_true", help=f"rewrite the {section_name} section of bench/RESULTS.md")
    args = parser.parse_args(argv)
    table = anyio.run(compare, subjects, args.rounds, backend=args.loop)
    section = report(title, table, args.rounds, args.loop, extra() if extra else None)
    print(section)
    if args.write:
        write_section(section)

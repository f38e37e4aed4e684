"""kvrt's memory handle against py-key-value-aio's MemoryStore, in one process, on one event loop.

Each round runs the same workload through both: puts of a 3-field dict, then gets of the same keys,
with 1 caller and with 64 concurrent callers. While each run goes on, a monitor task sleeps 1 ms in a
loop and records how late it wakes: the worst stall the run inflicted on the host loop. Rounds
alternate between the two subjects so that machine noise falls on both; the best round of each is
reported, with the ratio. Last, the cost of encoding and decoding one request frame. Objects that
exist after the imports are frozen (``gc.freeze()``) so neither subject's stall includes the
collector walking the libraries this script imported.

    python bench/bench_memory.py                 # print the tables
    python bench/bench_memory.py --write         # also rewrite bench/RESULTS.md's memory section
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
import timeit
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio

import kvrt
from kvrt import frames
from kvrt.backends.memory import MemoryBackend

VALUE = {"name": "Alice", "age": 30, "active": True}
KEYS_PER_CALLER = {1: 20_000, 64: 500}
RESULTS = Path(__file__).with_name("RESULTS.md")


@dataclass
class Run:
    ops_per_second: float
    worst_stall_ms: float


@dataclass
class Best:
    runs: list[Run] = field(default_factory=list)

    @property
    def ops(self) -> float:
        return max(run.ops_per_second for run in self.runs)

    @property
    def stall(self) -> float:
        return max(run.worst_stall_ms for run in self.runs)


async def _stall_monitor(done: anyio.Event, worst: list[float]) -> None:
    while not done.is_set():
        started = time.perf_counter()
        await anyio.sleep(0.001)
        worst[0] = max(worst[0], time.perf_counter() - started - 0.001)


async def _timed(callers: int, work: Callable[[int], Coroutine[Any, Any, None]]) -> Run:
    gc.collect()  # start clean: no run pays for collecting the garbage of the run before it
    worst = [0.0]
    done = anyio.Event()
    async with anyio.create_task_group() as monitor:
        monitor.start_soon(_stall_monitor, done, worst)
        await anyio.sleep(0.005)
        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for caller in range(callers):
                group.start_soon(work, caller)
        elapsed = time.perf_counter() - started
        done.set()
    return Run(callers * KEYS_PER_CALLER[callers] / elapsed, worst[0] * 1000)


async def _round(store: Any, callers: int, results: dict[str, Best]) -> None:
    count = KEYS_PER_CALLER[callers]
    keys = [[f"user-{caller}-{index}" for index in range(count)] for caller in range(callers)]

    async def puts(caller: int) -> None:
        for key in keys[caller]:
            await store.put(key, VALUE, collection="bench")

    async def gets(caller: int) -> None:
        for key in keys[caller]:
            if await store.get(key, collection="bench") is None:
                raise AssertionError(f"{key} went missing")

    results["put"].runs.append(await _timed(callers, puts))
    results["get"].runs.append(await _timed(callers, gets))


def _frame_cost() -> dict[str, float]:
    entry = (
        b'{"collection": "bench", "created_at": "2026-01-01T00:00:00.000000+00:00", "key": "user-1", '
        b'"value": {"active": true, "age": 30, "name": "Alice"}, "version": 1}'
    )
    get = frames.Get(None, "bench", ["user-1"])
    put = frames.Put(None, "bench", ["user-1"], [entry], None)
    number = 200_000
    costs: dict[str, float] = {}
    requests: dict[str, frames.AnyRequest] = {"get": get, "put": put}
    for label, request in requests.items():
        frame = frames.encode(request)
        encode_time = timeit.timeit(partial(frames.encode, request), number=number)
        decode_time = timeit.timeit(partial(frames.decode, frame), number=number)
        costs[f"{label} encode"] = encode_time / number * 1e9
        costs[f"{label} decode"] = decode_time / number * 1e9
        costs[f"{label} frame bytes"] = len(frame)
    return costs


async def main(rounds: int) -> dict[str, Any]:
    from key_value.aio.stores.memory import MemoryStore

    # Imported libraries (py-key-value and its dependencies add 3 ms here) make every full
    # collection slower for both subjects; move what exists now out of the collector's sight.
    gc.collect()
    gc.freeze()
    table: dict[str, Any] = {}
    for callers in (1, 64):
        subjects: dict[str, dict[str, Best]] = {
            "kvrt": {"put": Best(), "get": Best()},
            "reference": {"put": Best(), "get": Best()},
        }
        for _ in range(rounds):
            # A fresh runtime per round, as the reference gets a fresh store: no round pays for the
            # garbage collector walking an earlier round's data.
            async with kvrt.Runtime() as runtime:
                handle = await runtime.spawn(MemoryBackend(max_entries_per_collection=1_000_000))
                await _round(handle, callers, subjects["kvrt"])
            await _round(MemoryStore(), callers, subjects["reference"])
        table[str(callers)] = subjects
    return table


def _report(table: dict[str, Any], frame: dict[str, float], rounds: int, loop: str, command: str) -> str:
    lines = [
        f"## Memory: kvrt vs py-key-value-aio MemoryStore, {loop}",
        "",
        f"Command: `{command}`  ",
        f"Python {platform.python_version()}, {platform.machine()}, {sys.platform}; best of {rounds} rounds, "
        "alternating subjects, same process and event loop.",
        "",
        "| callers | op | kvrt ops/s | reference ops/s | ratio | kvrt worst stall | reference worst stall |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for callers, subjects in table.items():
        for op in ("put", "get"):
            ours, theirs = subjects["kvrt"][op], subjects["reference"][op]
            lines.append(
                f"| {callers} | {op} | {ours.ops:,.0f} | {theirs.ops:,.0f} | {ours.ops / theirs.ops:.2f}x "
                f"| {ours.stall:.2f} ms | {theirs.stall:.2f} ms |"
            )
    lines += ["", "Frame cost (msgpack, reused encoder/decoder), per request:", ""]
    lines += [f"- {name}: {value:.0f} {'bytes' if name.endswith('bytes') else 'ns'}" for name, value in frame.items()]
    return "\n".join(lines) + "\n"


def _write(section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    heading = section.splitlines()[0]
    if heading in text:
        start = text.index(heading)
        rest = text.find("\n## ", start + 1)
        text = text[:start] + section + ("" if rest < 0 else text[rest:])
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--write", action="store_true", help="rewrite the memory section of bench/RESULTS.md")
    args = parser.parse_args()
    table = anyio.run(main, args.rounds, backend=args.loop)
    report = _report(table, _frame_cost(), args.rounds, args.loop, "python " + " ".join(sys.argv))
    print(report)
    if args.write:
        _write(report)

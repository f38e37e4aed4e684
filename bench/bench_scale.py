"""Scaling: throughput from 1 to 10,000 callers and from 1 to 100 workers, on asyncio and on trio.

Every cell runs a fixed number of operations (puts of a 3-field dict, then gets of the same keys),
spread evenly over its callers, and the callers evenly over its workers. The subjects, in one
process, each fresh per cell:

- ``floor``: the least an actor round trip can cost: each caller sends a msgpack frame and an
  event over an anyio memory stream (kvrt's mailbox size) to one draining task per worker, which
  decodes it, reads or writes a dict, and sets the event. kvrt's memory backend against it shows
  what kvrt's machinery costs over the bare design.
- ``batched floor``: the least a *batching* actor can cost on the loop itself: each caller appends
  its request to a deque and parks on the loop's own primitive (an asyncio future; trio's
  ``wait_task_rescheduled``), and one task per worker serves up to 128 of them a pass. No
  encoding, no streams, no bounds: how it scales from 64 to 1,024 callers and from 1 to 16
  workers is the loop's own scaling, the ceiling for kvrt's.
- ``memory``, ``disk``, ``redis``: kvrt handles on that many workers, one backend each.
- ``raw redis-py``: the same callers calling one ``redis.asyncio.Redis`` per worker directly, a
  command per call, on a blocking pool of up to 1,024 connections (a connection per caller up to
  there; the default pool refuses callers past its size); one worker's cells only, asyncio only
  (redis-py's asyncio client does not run on trio).

Each cell runs under asyncio and then trio before the next (so the machine's drift falls on both),
``--rounds`` times, keeping the best. For each cell it records the throughput and the spread of
the callers' completion times (the worst caller's against the median's), and for the
10,000-caller cells the runtime's peak requests in flight and the process's peak RSS growth.

    python bench/bench_scale.py                      # asyncio then trio, every subject
    python bench/bench_scale.py --loop trio --only memory,floor
    python bench/bench_scale.py --rounds 2 --write   # best of 2, also rewrite its sections of bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import gc
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import msgspec
import sniffio
from harness import write_section

import kvrt
from kvrt.backends.base import Backend
from kvrt.backends.disk import DiskBackend
from kvrt.backends.memory import MemoryBackend
from kvrt.backends.redis import RedisBackend
from kvrt.testing.servers import RedisTarget, redis_binary, redis_server

VALUE = {"name": "Alice", "age": 30, "active": True}
CALLERS = (1, 64, 256, 1_024, 10_000)
WORKERS = (1, 16, 100)
OPERATIONS = {
    "floor": 40_000,
    "batched floor": 40_000,
    "memory": 40_000,
    "disk": 10_000,
    "redis": 40_000,
    "raw redis-py": 20_000,
}
"""Operations per cell (of each kind), by subject: slower subjects get fewer, so the run stays short."""
DISK_WORKERS = (1, 16)
"""Disk workers each own a directory and a SQLite connection: 100 of them is a file-handle test, not a bench."""

Put = Callable[[str, dict[str, Any]], Awaitable[Any]]
Get = Callable[[str], Awaitable[Any]]
Stores = list[tuple[Put, Get]]
"""Each worker's put and get, as the callers call them."""


@dataclass
class Cell:
    ops: dict[str, float] = field(default_factory=dict)
    """Operations per second, by ``put`` / ``get``."""
    spread: dict[str, float] = field(default_factory=dict)
    """The worst caller's completion time over the median's, by operation."""
    peak_in_flight: int | None = None
    rss_growth_mb: float | None = None


# --- the floor: a bare actor round trip --------------------------------------------------------

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


class _FloorActor:
    """One draining task and its dict; callers send ``(frame, reply)`` and wait on the reply's event."""

    def __init__(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[tuple[bytes, list[Any]]](1024)
        self.data: dict[str, Any] = {}

    async def drain(self) -> None:
        data = self.data
        async for frame, reply in self.receive:
            op, key, value = _decode(frame)
            if op:
                data[key] = value
            else:
                reply[0] = data.get(key)
            reply[1].set()

    async def put(self, key: str, value: Any) -> None:
        reply: list[Any] = [None, anyio.Event()]
        await self.send.send((_encode((1, key, value)), reply))
        await reply[1].wait()

    async def get(self, key: str) -> Any:
        reply: list[Any] = [None, anyio.Event()]
        await self.send.send((_encode((0, key, None)), reply))
        await reply[1].wait()
        return reply[0]


@asynccontextmanager
async def floor(workers: int) -> AsyncIterator[Stores]:
    actors = [_FloorActor() for _ in range(workers)]
    async with anyio.create_task_group() as group:
        for actor in actors:
            group.start_soon(actor.drain)
        yield [(actor.put, actor.get) for actor in actors]
        for actor in actors:
            actor.send.close()


class _BatchedActor:
    """A deque of ``(op, key, value, waiter)`` served up to 128 a pass by one task, on the loop's own waits."""

    def __init__(self, park: Callable[[list[Any]], Awaitable[Any]], wake: Callable[[Any, Any], None]) -> None:
        self.queue: deque[list[Any]] = deque()
        self.data: dict[str, Any] = {}
        self.idle: list[Any] | None = None
        self._park, self._wake = park, wake

    async def drain(self) -> None:
        queue, data, wake = self.queue, self.data, self._wake
        while True:
            if not queue:
                self.idle = [None]
                await self._park(self.idle)
                continue
            for _ in range(min(len(queue), 128)):
                op, key, value, waiter = queue.popleft()
                if op:
                    data[key] = value
                wake(waiter, data.get(key))
            await anyio.lowlevel.cancel_shielded_checkpoint()

    async def _call(self, op: int, key: str, value: Any) -> Any:
        request = [op, key, value, None]
        self.queue.append(request)
        if self.idle is not None:
            idle, self.idle = self.idle, None
            self._wake(idle[0], None)
        return await self._park(request)

    async def put(self, key: str, value: Any) -> None:
        await self._call(1, key, value)

    async def get(self, key: str) -> Any:
        return await self._call(0, key, None)


def _loop_waits() -> tuple[Callable[[list[Any]], Awaitable[Any]], Callable[[Any, Any], None]]:
    """How to park a task (its waiter stored in the request's last slot) and wake it, on this loop."""
    if sniffio.current_async_library() == "trio":
        import outcome
        import trio

        async def park_trio(request: list[Any]) -> Any:
            request[-1] = trio.lowlevel.current_task()
            return await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.SUCCEEDED)

        return park_trio, lambda task, result: trio.lowlevel.reschedule(task, outcome.Value(result))

    import asyncio

    loop = asyncio.get_running_loop()

    async def park_asyncio(request: list[Any]) -> Any:
        request[-1] = future = loop.create_future()
        return await future

    return park_asyncio, lambda future, result: future.set_result(result)


@asynccontextmanager
async def batched_floor(workers: int) -> AsyncIterator[Stores]:
    park, wake = _loop_waits()
    actors = [_BatchedActor(park, wake) for _ in range(workers)]
    async with anyio.create_task_group() as group:
        for actor in actors:
            group.start_soon(actor.drain)
        yield [(actor.put, actor.get) for actor in actors]
        group.cancel_scope.cancel()


# --- kvrt and raw redis-py -------------------------------------------------------------------

runtime_numbers: list[kvrt.Runtime] = []
"""The runtime of the cell under way, for its in-flight figures."""


def kvrt_subject(make: Callable[[int], Backend]) -> Callable[[int], Any]:
    @asynccontextmanager
    async def subject(workers: int) -> AsyncIterator[Stores]:
        async with kvrt.Runtime() as runtime:
            runtime_numbers[:] = [runtime]
            handles = [await runtime.spawn(make(number), name=f"w{number}") for number in range(workers)]
            yield [
                (partial(handle.put, collection="bench"), partial(handle.get, collection="bench")) for handle in handles
            ]

    return subject


def raw_redis(server: RedisTarget) -> Callable[[int], Any]:
    import redis.asyncio

    @asynccontextmanager
    async def subject(workers: int) -> AsyncIterator[Stores]:
        clients = [
            redis.asyncio.Redis(
                connection_pool=redis.asyncio.BlockingConnectionPool.from_url(server.url, max_connections=1_024)
            )
            for _ in range(workers)
        ]

        async def put(client: redis.asyncio.Redis, key: str, value: dict[str, Any]) -> None:
            await client.set(key, msgspec.json.encode(value))

        try:
            yield [(partial(put, client), client.get) for client in clients]
        finally:
            for client in clients:
                await client.aclose()

    return subject


# --- the runs ---------------------------------------------------------------------------------


async def _timed(callers: int, work: Callable[[int], Awaitable[None]]) -> tuple[float, list[float]]:
    """Run ``work`` for every caller at once; return the elapsed time and each caller's completion time."""
    gc.collect()
    finished: list[float] = []
    started = time.perf_counter()

    async def one(caller: int) -> None:
        await work(caller)
        finished.append(time.perf_counter() - started)

    async with anyio.create_task_group() as group:
        for caller in range(callers):
            group.start_soon(one, caller)
    return time.perf_counter() - started, finished


async def run_cell(subject: Callable[[int], Any], name: str, workers: int, callers: int) -> Cell:
    per_caller = max(OPERATIONS[name] // callers, 2)
    cell = Cell()
    rss_before = _peak_rss_mb()
    async with subject(workers) as stores:
        keys = [[f"c{caller}-{index}" for index in range(per_caller)] for caller in range(callers)]

        async def puts(caller: int) -> None:
            put = stores[caller % workers][0]
            for key in keys[caller]:
                await put(key, VALUE)

        async def gets(caller: int) -> None:
            get = stores[caller % workers][1]
            for key in keys[caller]:
                if await get(key) is None:
                    raise AssertionError(f"{key} went missing")

        for op, work in (("put", puts), ("get", gets)):
            elapsed, finished = await _timed(callers, work)
            cell.ops[op] = callers * per_caller / elapsed
            cell.spread[op] = max(finished) / statistics.median(finished)
        if callers >= 10_000 and name in ("memory", "disk", "redis"):
            cell.peak_in_flight = runtime_numbers[0].runtime_stats().peak_in_flight
            cell.rss_growth_mb = _peak_rss_mb() - rss_before
    return cell


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cells(name: str) -> list[tuple[int, int]]:
    """The (workers, callers) cells a subject runs: callers at least as many as workers."""
    worker_counts = DISK_WORKERS if name == "disk" else (1,) if name == "raw redis-py" else WORKERS
    return [(workers, callers) for workers in worker_counts for callers in CALLERS if callers >= workers]


def run_all(
    subjects: dict[str, Callable[[int], Any]], loops: list[str], rounds: int
) -> dict[str, dict[tuple[str, int, int], Cell]]:
    """Run every subject's cells, each under every loop in turn (so drift falls on both), best of ``rounds``."""
    gc.collect()
    gc.freeze()
    results: dict[str, dict[tuple[str, int, int], Cell]] = {loop: {} for loop in loops}
    for name, subject in subjects.items():
        for workers, callers in cells(name):
            for _ in range(rounds):
                for loop in loops:
                    if loop == "trio" and name == "raw redis-py":
                        continue
                    cell = anyio.run(run_cell, subject, name, workers, callers, backend=loop)
                    best = results[loop].get((name, workers, callers))
                    if best is not None:
                        cell = _best(best, cell)
                    results[loop][name, workers, callers] = cell
            for loop in loops:
                if (name, workers, callers) in results[loop]:
                    cell = results[loop][name, workers, callers]
                    print(
                        f"  {loop:>7} {name:>12} {workers:>3} workers {callers:>6} callers: "
                        f"put {cell.ops['put']:>9,.0f}/s  get {cell.ops['get']:>9,.0f}/s",
                        file=sys.stderr,
                    )
    return results


def _best(one: Cell, other: Cell) -> Cell:
    """Per operation, the faster run's figures (and the larger bounds, to be safe)."""
    best = Cell()
    for op in one.ops:
        winner = one if one.ops[op] >= other.ops[op] else other
        best.ops[op], best.spread[op] = winner.ops[op], winner.spread[op]
    if one.peak_in_flight is not None and other.peak_in_flight is not None:
        best.peak_in_flight = max(one.peak_in_flight, other.peak_in_flight)
        best.rss_growth_mb = max(one.rss_growth_mb or 0.0, other.rss_growth_mb or 0.0)
    return best


# --- the report -------------------------------------------------------------------------------


def report(loop: str, results: dict[tuple[str, int, int], Cell], names: list[str]) -> str:
    lines = [
        f"## Scaling, {loop}",
        "",
        f"Command: `python {' '.join(sys.argv)}`  ",
        f"Python {platform.python_version()}, {platform.machine()}, {sys.platform}; ops/s, the best of the runs of "
        "each cell, the loops taking turns cell by cell in one process. Spread: the worst caller's completion time "
        "over the median's.",
        "",
        "| workers | callers | op | " + " | ".join(names) + " | memory / floor | redis / raw | memory spread |",
        "| ---: | ---: | --- | " + " | ".join("---:" for _ in names) + " | ---: | ---: | ---: |",
    ]
    for workers in WORKERS:
        for callers in CALLERS:
            if callers < workers:
                continue
            for op in ("put", "get"):
                row = [str(workers), f"{callers:,}", op]
                for name in names:
                    cell = results.get((name, workers, callers))
                    row.append(f"{cell.ops[op]:,.0f}" if cell else "—")
                row.append(_ratio(results, ("memory", "floor"), workers, callers, op))
                row.append(_ratio(results, ("redis", "raw redis-py"), workers, callers, op))
                memory = results.get(("memory", workers, callers))
                row.append(f"{memory.spread[op]:.2f}" if memory else "—")
                lines.append("| " + " | ".join(row) + " |")
    bounded = [
        f"- {name}, {workers} workers, 10,000 callers: peak in flight {cell.peak_in_flight:,}, "
        f"peak RSS growth {cell.rss_growth_mb:.0f} MB"
        for (name, workers, callers), cell in results.items()
        if cell.peak_in_flight is not None
    ]
    if bounded:
        lines += ["", "Bounds at 10,000 callers (the runtime's cap is 65,536 in flight; each mailbox holds 1,024):", ""]
        lines += bounded
    return "\n".join(lines) + "\n"


def _ratio(
    results: dict[tuple[str, int, int], Cell], pair: tuple[str, str], workers: int, callers: int, op: str
) -> str:
    ours, theirs = (results.get((name, workers, callers)) for name in pair)
    return f"{ours.ops[op] / theirs.ops[op]:.2f}x" if ours and theirs else "—"


def targets(by_loop: dict[str, dict[tuple[str, int, int], Cell]]) -> list[str]:
    """The issue's 'done when' figures, each with whether it holds."""
    lines = ["## Scaling targets", "", f"Command: `python {' '.join(sys.argv)}`", ""]

    def check(label: str, value: float | None, target: float, ceiling: float | None = None) -> None:
        if value is None:
            lines.append(f"- {label}: not measured")
            return
        line = f"- {label}: {value:.2f}x (target ≥ {target}x) {'✓' if value >= target else '✗'}"
        if ceiling is not None:
            line += f"; the batched floor's own: {ceiling:.2f}x"
        lines.append(line)

    def ops(loop: str, name: str, workers: int, callers: int, op: str) -> float | None:
        cell = by_loop.get(loop, {}).get((name, workers, callers))
        return cell.ops[op] if cell else None

    def over(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b is not None else None

    for loop in by_loop:
        for op in ("put", "get"):
            base = ops(loop, "memory", 1, 64, op)
            for workers in (1, 16):
                check(
                    f"{loop}, memory {op}s: {workers} worker{'s' if workers > 1 else ''} x 1,024 callers / 1 x 64",
                    over(ops(loop, "memory", workers, 1_024, op), base),
                    0.9,
                    over(ops(loop, "batched floor", workers, 1_024, op), ops(loop, "batched floor", 1, 64, op)),
                )
            floor_target = 0.9 if op == "put" else 0.95
            check(f"{loop}, memory {op}s / floor, 64 callers", over(base, ops(loop, "floor", 1, 64, op)), floor_target)
            cell = by_loop[loop].get(("memory", 1, 10_000))
            if cell:
                lines.append(
                    f"- {loop}, memory {op}s, 10,000 callers: worst caller {cell.spread[op]:.2f}x the median "
                    f"(target ≤ 3x) {'✓' if cell.spread[op] <= 3 else '✗'}"
                )
        for op in ("put", "get"):
            check(
                f"{loop}, redis {op}s / raw redis-py, 64 callers",
                over(ops(loop, "redis", 1, 64, op), ops(loop, "raw redis-py", 1, 64, op)),
                5,
            )
    if "trio" in by_loop and "asyncio" in by_loop:
        for workers in (1, 16):
            for callers in (64, 1_024):
                for op in ("put", "get"):
                    check(
                        f"trio / asyncio, redis {op}s, {workers} workers x {callers:,} callers",
                        over(ops("trio", "redis", workers, callers, op), ops("asyncio", "redis", workers, callers, op)),
                        0.8,
                    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=["asyncio", "trio", "both"], default="both")
    parser.add_argument("--only", default=",".join(OPERATIONS), help="comma-separated subjects")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each cell under each loop; the best is kept")
    parser.add_argument("--write", action="store_true", help="rewrite the scaling sections of bench/RESULTS.md")
    args = parser.parse_args()
    names = [name for name in OPERATIONS if name in args.only.split(",")]
    loops = ["asyncio", "trio"] if args.loop == "both" else [args.loop]
    with redis_server(redis_binary()) as process, tempfile.TemporaryDirectory() as scratch:
        server = RedisTarget([("127.0.0.1", process.port)])
        counter = iter(range(1_000_000))
        available: dict[str, Callable[[int], Any]] = {
            "floor": floor,
            "batched floor": batched_floor,
            "memory": kvrt_subject(lambda _: MemoryBackend(max_entries_per_collection=1_000_000)),
            "disk": kvrt_subject(lambda _: DiskBackend(Path(scratch) / f"cache-{next(counter)}")),
            "redis": kvrt_subject(lambda _: RedisBackend(server.url)),
            "raw redis-py": raw_redis(server),
        }
        by_loop = run_all({name: available[name] for name in names}, loops, args.rounds)
        for loop in loops:
            section = report(
                loop, by_loop[loop], [name for name in names if loop == "asyncio" or name != "raw redis-py"]
            )
            print(section)
            if args.write:
                write_section(section)
        summary = "\n".join(targets(by_loop)) + "\n"
        print(summary)
        if args.write and len(loops) == 2 and len(names) == len(OPERATIONS):
            write_section(summary)


if __name__ == "__main__":
    main()

"""``kvrt demo``: the runtime at work on its embedded defaults, with no server.

Four workers serve many concurrent callers: a memory session store whose entries live a second or
two, a read-mostly memory cache, short-lived memory rate-limit counters, and user profiles on disk
(the persistent default). Every second the demo prints what each worker did: requests answered,
how many were merged into each backend call, the mailbox, live keys, and expired entries culled in
the background. At the end it reopens the disk directory in a fresh runtime to show the profiles
survived.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio

from kvrt.backends.disk import DiskBackend
from kvrt.backends.memory import MemoryBackend
from kvrt.handle import Handle, KeysSegment
from kvrt.policies import CullPolicy
from kvrt.runtime import Runtime
from kvrt.stats import WorkerStats

Say = Callable[[str], None]


async def run_demo(
    seconds: float = 5.0,
    callers: int = 48,
    directory: str | None = None,
    say: Say = print,
    stop: anyio.Event | None = None,
) -> dict[str, WorkerStats]:
    """Run the demo for ``seconds`` (profiles in ``directory``, a temporary one by default); return final stats.

    Setting ``stop`` ends the load early (``kvrt demo`` sets it on Ctrl-C): the callers finish the
    call they are in, the runtime drains, and the summary and the reopened directory are shown.
    """
    stop = stop or anyio.Event()
    with tempfile.TemporaryDirectory() as scratch:
        where = Path(directory or scratch)
        async with Runtime(cull=CullPolicy(interval=0.25, budget=256)) as runtime:
            sessions = await runtime.spawn(MemoryBackend(max_entries_per_collection=50_000), name="sessions")
            cache = await runtime.spawn(MemoryBackend(max_entries_per_collection=2_000), name="cache")
            limits = await runtime.spawn(MemoryBackend(), name="ratelimit")
            profiles = await runtime.spawn(DiskBackend(where), name="profiles")
            handles: list[Handle] = [sessions, cache, limits, profiles]
            say(f"kvrt demo: {callers} callers on 3 memory workers and 1 disk worker ({where}) for {seconds:g} s")
            say(_LEGEND)
            async with anyio.create_task_group() as group:
                group.start_soon(_reporter, runtime, handles, seconds, stop, say)
                async with anyio.create_task_group() as load:
                    for number in range(callers):
                        load.start_soon(_caller, number, handles, stop)
                    with anyio.move_on_after(seconds):
                        await stop.wait()
                    stop.set()  # each caller finishes the call it is in
            final = runtime.stats()
            written = final["profiles"].ops.get("put", 0)
        say(_summary(final))
        async with Runtime() as reopened:
            again = await reopened.spawn(DiskBackend(where), name="profiles")
            kept = len(await again.keys("profiles"))
        say(f"\nreopened {where} in a fresh runtime: {kept:,} profiles on disk ({written:,} writes made them)")
    return final


_LEGEND = """
req/s: requests answered per second; per call: requests merged into each backend call; mailbox:
requests waiting for their worker; live keys: entries stored now; culled: expired entries removed
in the background so far.
"""


async def _caller(number: int, handles: list[Handle], stop: anyio.Event) -> None:
    """One application task: log users in, read a cache, count requests against a limit, keep profiles."""
    sessions, cache, limits, profiles = handles
    rng = random.Random(number)
    work: list[Callable[[], Coroutine[Any, Any, Any]]] = [
        lambda: sessions.put(f"s-{number}-{rng.randrange(10_000)}", {"user": number}, ttl=rng.uniform(0.3, 2.0)),
        lambda: sessions.get(f"s-{number}-{rng.randrange(10_000)}"),
        lambda: cache.get(f"page-{rng.randrange(3_000)}", collection="pages"),
        lambda: cache.put(f"page-{rng.randrange(3_000)}", {"html": "<p>…</p>", "size": 42}, collection="pages"),
        lambda: limits.put(f"client-{rng.randrange(200)}", {"hits": rng.randrange(100)}, ttl=0.5),
        lambda: limits.ttl(f"client-{rng.randrange(200)}"),
        lambda: profiles.put(
            f"user-{rng.randrange(5_000)}", {"plan": "pro", "seen": time.time()}, collection="profiles"
        ),
        lambda: profiles.get(f"user-{rng.randrange(5_000)}", collection="profiles"),
    ]
    weights = [3, 4, 8, 1, 2, 2, 1, 2]
    while not stop.is_set():
        await rng.choices(work, weights)[0]()


async def _reporter(runtime: Runtime, handles: list[Handle], seconds: float, stop: anyio.Event, say: Say) -> None:
    """Print a row per worker every second (on the second, however long a row takes), and at the end."""
    say(f"{'time':>5}  {'worker':<10} {'req/s':>8} {'per call':>8} {'mailbox':>7} {'live keys':>9} {'culled':>8}")
    previous = {name: sum(stats.ops.values()) for name, stats in runtime.stats().items()}
    started = last = anyio.current_time()
    tick = 0
    while not stop.is_set():
        tick += 1
        if tick < seconds:
            with anyio.move_on_after(started + tick - anyio.current_time()):
                await stop.wait()
        else:
            await stop.wait()  # the last row, when the load stops
        now = anyio.current_time()
        stats = runtime.stats()
        for handle in handles:
            worker = stats[handle.name]
            done = sum(worker.ops.values())
            live = (
                sum([len(await handle.keys(name)) for name in ("default_collection", "pages", "profiles")])
                if isinstance(handle, KeysSegment)
                else 0
            )
            rate = (done - previous[handle.name]) / max(now - last, 1e-3)
            say(
                f"{now - started:>4.1f}s  {handle.name:<10} {rate:>8,.0f} "
                f"{worker.mean_batch:>8.1f} {worker.mailbox_depth:>7} {live:>9,} {worker.culled:>8,}"
            )
            previous[handle.name] = done
        last = now
        say("")


_OP_NAMES = {"keys": "key listings"}
"""How the summary names an operation, where its own name would read as something else."""


def _summary(final: dict[str, WorkerStats]) -> str:
    lines = ["done:"]
    for name, stats in final.items():
        ops = ", ".join(f"{count:,} {_OP_NAMES.get(op, op)}" for op, count in sorted(stats.ops.items()))
        lines.append(
            f"  {name:<10} {ops}; {stats.batches:,} backend calls (largest {stats.max_batch}), "
            f"{stats.culled:,} expired entries culled, {stats.restarts} restarts, errors: {stats.errors or 'none'}"
        )
    return "\n".join(lines)

"""``kvrt demo``: the runtime at work on its embedded defaults, with no server.

Four workers serve many concurrent callers: a memory session store whose entries live a second or
two, a read-mostly memory cache, short-lived memory rate-limit counters, and user profiles on disk
(the persistent default). While they run, the demo shows the live view ``kvrt top`` shows (each
worker's state, mailbox, ops/s, latency, batching, culled expired entries), redrawn every second;
at the end, a summary of what each worker did, and the disk directory reopened in a fresh runtime
to show the profiles survived.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from kvrt.backends.disk import DiskBackend
from kvrt.backends.memory import MemoryBackend
from kvrt.cli.view import LEGEND, Screen, StatsView, frame_console
from kvrt.handle import Handle, KeysSegment
from kvrt.policies import CullPolicy
from kvrt.runtime import Runtime
from kvrt.stats import WorkerStats
from kvrt.stats_server import snapshot_of

LIVE_COLLECTIONS = ("default_collection", "pages", "profiles")
"""The collections the demo's callers write, counted for the summary's live keys."""


async def run_demo(
    seconds: float = 5.0,
    callers: int = 48,
    directory: str | None = None,
    console: Console | None = None,
    stop: anyio.Event | None = None,
    stats_address: str | None = None,
) -> dict[str, WorkerStats]:
    """Run the demo for ``seconds`` (profiles in ``directory``, a temporary one by default); return final stats.

    The live view and the summary go to ``console`` (stdout by default), written from a thread so a
    slow terminal never holds up the loop the workers run on. Setting ``stop`` ends the load early
    (``kvrt demo`` sets it on Ctrl-C): the callers finish the call they are in, the runtime drains,
    and the summary and the reopened directory are shown. ``stats_address`` also serves the
    runtime's stats there, for ``kvrt top``.
    """
    stop = stop or anyio.Event()
    console = console or frame_console()
    with tempfile.TemporaryDirectory() as scratch:
        where = Path(directory or scratch)
        async with Runtime(cull=CullPolicy(interval=0.25, budget=256), stats_address=stats_address) as runtime:
            sessions = await runtime.spawn(MemoryBackend(max_entries_per_collection=50_000), name="sessions")
            cache = await runtime.spawn(MemoryBackend(max_entries_per_collection=2_000), name="cache")
            limits = await runtime.spawn(MemoryBackend(), name="ratelimit")
            profiles = await runtime.spawn(DiskBackend(where), name="profiles")
            handles: list[Handle] = [sessions, cache, limits, profiles]
            lines = [f"kvrt demo: {callers} callers on 3 memory workers and 1 disk worker ({where}) for {seconds:g} s"]
            if runtime.stats_address is not None:
                lines.append(
                    f"stats served at {runtime.stats_address}: watch them with kvrt top {runtime.stats_address}"
                )
            lines.append(f"{LEGEND}.")
            await _print(console, *(Text(line) for line in lines), Text())
            started = anyio.current_time()
            async with anyio.create_task_group() as group:
                group.start_soon(_live_view, runtime, console, seconds, stop)
                async with anyio.create_task_group() as load:
                    for number in range(callers):
                        load.start_soon(_caller, number, handles, stop)
                    with anyio.move_on_after(seconds):
                        await stop.wait()
                    stop.set()  # each caller finishes the call it is in
            elapsed = anyio.current_time() - started
            live = {handle.name: await _live_keys(handle) for handle in handles}
            final, totals = runtime.stats(), runtime.runtime_stats()
            written = final["profiles"].ops.get("put", 0)
        summary = _summary(final, live, elapsed, totals.peak_in_flight, totals.max_in_flight)
        async with Runtime() as reopened:
            again = await reopened.spawn(DiskBackend(where), name="profiles")
            kept = len(await again.keys("profiles"))
        reopened_line = f"reopened {where} in a fresh runtime: {kept:,} profiles on disk ({written:,} writes made them)"
        await _print(console, summary, Text(), Text(reopened_line))
    return final


async def _print(console: Console, *renderables: RenderableType) -> None:
    """Print on ``console`` from a thread: the loop goes on serving however slow the terminal is."""

    def write() -> None:
        with console:  # one write for them all
            for renderable in renderables:
                console.print(renderable, soft_wrap=not console.is_terminal)  # in a pipe a line is never cut

    await anyio.to_thread.run_sync(write)


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


async def _live_view(runtime: Runtime, console: Console, seconds: float, stop: anyio.Event) -> None:
    """Redraw the live view every second (on the second, however long a frame takes to draw), and at the end."""
    view = StatsView()
    view.render(snapshot_of(runtime), "")  # the base the first second's ops/s are measured from
    started = anyio.current_time()
    with Screen(console) as screen:
        tick = 0
        last = False
        while not last:
            tick = max(tick + 1, int(anyio.current_time() - started) + 1)  # a late frame skips a tick, not bunches
            if tick < seconds:
                with anyio.move_on_after(started + tick - anyio.current_time()):
                    await stop.wait()
            else:
                await stop.wait()
            last = stop.is_set()  # the last frame, drawn when the load has stopped
            elapsed = anyio.current_time() - started
            frame = view.render(snapshot_of(runtime), f"kvrt demo {elapsed:4.1f} s of {seconds:g} s")
            await anyio.to_thread.run_sync(screen.show, frame)


async def _live_keys(handle: Handle) -> int:
    """Return how many entries ``handle``'s worker holds now in the demo's collections."""
    if not isinstance(handle, KeysSegment):
        return 0
    return sum([len(await handle.keys(name)) for name in LIVE_COLLECTIONS])


_OP_NAMES = {"keys": "key listings"}
"""How the summary names an operation, where its own name would read as something else."""


def _summary(
    final: dict[str, WorkerStats], live: dict[str, int], elapsed: float, peak: int, cap: int
) -> RenderableType:
    """Return one screen of what each worker did over the run."""
    answered = sum(sum(stats.ops.values()) for stats in final.values())
    headline = (
        f"done in {elapsed:.1f} s: {answered:,} requests answered ({answered / max(elapsed, 1e-3):,.0f}/s), "
        f"at most {peak:,} in flight (cap {cap:,})"
    )
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=0)
    table.add_column("worker", style="bold", no_wrap=True)
    table.add_column("requests answered")
    table.add_column("backend\ncalls", justify="right")
    table.add_column("mean / largest\nbatch", justify="right")
    table.add_column("p50 / p99\nms", justify="right")
    table.add_column("culled", justify="right")
    table.add_column("live\nkeys", justify="right")
    table.add_column("restarts", justify="right")
    table.add_column("errors")
    for name, stats in final.items():
        ops = ", ".join(f"{count:,} {_OP_NAMES.get(op, op)}" for op, count in sorted(stats.ops.items()))
        errors = ", ".join(f"{count:,} {kind}" for kind, count in sorted(stats.errors.items())) or "none"
        latency = stats.latency_ms
        table.add_row(
            name,
            ops,
            f"{stats.batches:,}",
            f"{stats.mean_batch:.1f} / {stats.max_batch}",
            f"{latency.get('p50', 0.0):.2f} / {latency.get('p99', 0.0):.2f}",
            f"{stats.culled:,}",
            f"{live.get(name, 0):,}",
            f"{stats.restarts}",
            Text(errors, style="red" if stats.errors else ""),
        )
    return Group(Text(headline, style="bold"), table)

"""The standard workload: concurrent callers put a 3-field dict under keys of their own, then get them all back.

It is what ``kvrt bench`` and the comparative benches (bench/harness.py) measure, so a figure from
one means the same as a figure from the other. A run is one operation by ``callers`` concurrent
tasks, each working through its own share of the keys in turn; it gives the operations per second
over the whole run and each call's latency, from the caller's side. While it goes on, a monitor
task sleeps 1 ms in a loop and records how late it wakes: the worst stall the run inflicted on
the host loop, which is what every other task on that loop would have waited. Before each run
the garbage collector runs, so no run pays for the garbage of the one before.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Protocol

import anyio
import msgspec
from anyio.abc import TaskStatus

VALUE: Final = {"name": "Alice", "age": 30, "active": True}
"""The document every put stores: small, so the figures measure the store's path rather than encoding."""

OPERATIONS: Final = ("put", "get")
"""The runs of one workload, in the order they happen: the gets read what the puts stored."""

_TICK = 0.001
"""How long the stall monitor sleeps each time: a late wake-up past it is a stall."""


class Store(Protocol):
    """What the workload calls: any ``AsyncKeyValue`` (a kvrt handle, the reference's stores) takes it."""

    async def put(self, key: str, value: dict[str, Any], *, collection: str | None = None) -> None:
        """Store ``value`` under ``key``."""

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        """Return what ``key`` holds, or ``None``."""


class Run(msgspec.Struct, frozen=True, kw_only=True):
    """What one run of one operation measured."""

    op: str
    callers: int
    operations: int
    seconds: float
    """From the first caller's start to the last caller's end."""
    ops_per_second: float
    latency_ms: dict[str, float]
    """Each call's time as its caller saw it: ``p50``, ``p90``, ``p99`` and ``max``, in milliseconds."""
    worst_stall_ms: float
    """How late the 1 ms monitor woke at worst during the run: what the run cost the host loop's other tasks."""
    missing: int = 0
    """Gets that found nothing (a store that evicted or expired what the puts stored)."""


class StallMonitor:
    """The worst lateness, so far, of a task sleeping 1 ms in a loop on the host loop."""

    __slots__ = ("worst",)

    def __init__(self) -> None:
        self.worst = 0.0
        """In seconds."""

    async def _watch(self, done: anyio.Event, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()  # it is asleep before the block it watches starts
        while not done.is_set():
            started = time.perf_counter()
            await anyio.sleep(_TICK)
            self.worst = max(self.worst, time.perf_counter() - started - _TICK)


@asynccontextmanager
async def watching_stalls() -> AsyncIterator[StallMonitor]:
    """Run the stall monitor for the duration of the block; read ``worst`` from what it yields."""
    monitor = StallMonitor()
    done = anyio.Event()
    async with anyio.create_task_group() as group:
        await group.start(monitor._watch, done)
        try:
            yield monitor
        finally:
            done.set()


async def idle_stall(seconds: float) -> float:
    """Return the worst stall of the host loop with nothing else running, over ``seconds``: the machine's floor."""
    async with watching_stalls() as monitor:
        await anyio.sleep(seconds)
    return monitor.worst * 1000


def key_names(callers: int, keys: int) -> list[list[str]]:
    """Return each caller's keys: ``keys`` in all, shared out as evenly as the count allows."""
    share, extra = divmod(keys, callers)
    return [[f"user-{caller}-{index}" for index in range(share + (caller < extra))] for caller in range(callers)]


def latency_summary(samples: Sequence[float]) -> dict[str, float]:
    """Return ``p50``, ``p90``, ``p99`` and ``max`` of ``samples`` (seconds), in milliseconds, by nearest rank."""
    if not samples:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(samples)

    def rank(fraction: float) -> float:
        return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)] * 1000

    return {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": ordered[-1] * 1000}


async def timed(
    op: str, keys: list[list[str]], work: Callable[[list[str], list[float]], Coroutine[Any, Any, int]]
) -> Run:
    """Run ``work`` once per caller (its keys, a list for its latencies) concurrently, with the stall monitor.

    ``work`` returns how many of its calls found nothing.
    """
    gc.collect()  # start clean: no run pays for collecting the garbage of the run before it
    latencies: list[list[float]] = [[] for _ in keys]
    missing = [0] * len(keys)

    async def caller(index: int) -> None:
        missing[index] = await work(keys[index], latencies[index])

    async with watching_stalls() as monitor:
        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for index in range(len(keys)):
                group.start_soon(caller, index)
        seconds = time.perf_counter() - started
    operations = sum(len(own) for own in keys)
    return Run(
        op=op,
        callers=len(keys),
        operations=operations,
        seconds=seconds,
        ops_per_second=operations / seconds if seconds > 0 else 0.0,
        latency_ms=latency_summary([sample for own in latencies for sample in own]),
        worst_stall_ms=monitor.worst * 1000,
        missing=sum(missing),
    )


async def run_workload(
    store: Store,
    callers: int,
    keys: int,
    *,
    collection: str = "bench",
    after: Callable[[Run], None] | None = None,
) -> tuple[Run, Run]:
    """Put ``keys`` keys through ``callers`` concurrent callers, then get them all back; return both runs.

    ``after`` hears each run as it ends, outside the timed part (a progress bar drawn there costs no run anything).
    """
    if callers < 1 or keys < 0:
        raise ValueError("a workload needs at least one caller and no negative number of keys")
    names = key_names(callers, keys)

    async def puts(own: list[str], samples: list[float]) -> int:
        last = time.perf_counter()
        for key in own:
            await store.put(key, VALUE, collection=collection)
            now = time.perf_counter()
            samples.append(now - last)
            last = now
        return 0

    async def gets(own: list[str], samples: list[float]) -> int:
        missing = 0
        last = time.perf_counter()
        for key in own:
            if await store.get(key, collection=collection) is None:
                missing += 1
            now = time.perf_counter()
            samples.append(now - last)
            last = now
        return missing

    runs = []
    for op, work in zip(OPERATIONS, (puts, gets), strict=True):
        run = await timed(op, names, work)
        runs.append(run)
        if after is not None:
            after(run)
    return runs[0], runs[1]


class Measured(msgspec.Struct, frozen=True, kw_only=True):
    """One run of the workload on one subject: the figures ``kvrt bench`` prints, draws and records."""

    backend: str
    """The URL the run was on, as kvrt shows URLs (no password)."""
    subject: str
    """``kvrt`` (through kvrt), ``reference`` (the reference's store) or ``raw`` (the driver alone)."""
    run: Run


class Failed(msgspec.Struct, frozen=True, kw_only=True):
    """A run that did not finish: the reference's own limits are findings too (its Redis pool holds 100)."""

    backend: str
    subject: str
    callers: int
    error: str
    """The error's name and message, with any password masked."""


class Results(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one ``kvrt bench`` measured, as its JSON records it."""

    kvrt: str
    """kvrt's version."""
    loop: str
    keys: int
    """Keys per run, shared out among its callers."""
    idle_stall_ms: float
    """The host loop's worst stall with nothing running: the machine's floor for the stall figures."""
    measured: list[Measured]
    failed: list[Failed] = msgspec.field(default_factory=list)

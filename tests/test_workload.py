"""The standard workload measures what it says: every call counted, latencies ordered, stalls of the host loop seen."""

from __future__ import annotations

import time

import pytest

from kvrt import Runtime
from kvrt.backends.memory import MemoryBackend
from kvrt.workload import Run, key_names, latency_summary, run_workload, watching_stalls

pytestmark = pytest.mark.anyio


async def test_puts_then_gets_every_key_with_ordered_percentiles(runtime: Runtime) -> None:
    handle = await runtime.spawn(MemoryBackend())
    heard: list[Run] = []
    put, get = await run_workload(handle, callers=4, keys=202, collection="c", after=heard.append)
    assert heard == [put, get]
    for run, op in ((put, "put"), (get, "get")):
        assert run.op == op
        assert run.callers == 4
        assert run.operations == 202
        assert run.missing == 0
        assert run.seconds > 0
        assert run.ops_per_second == pytest.approx(202 / run.seconds)
        latency = run.latency_ms
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
        # Half the 202 calls took p50 or longer, and the 4 callers' calls add up to at most 4 runs:
        # a latency counted from the caller's start rather than its call's would break this.
        assert latency["p50"] <= run.seconds * 1000 * 4 / 101
        assert latency["max"] <= run.seconds * 1000
        assert run.worst_stall_ms >= 0
    stored = await handle.get_many([key for own in key_names(4, 202) for key in own], collection="c")
    assert all(value == {"name": "Alice", "age": 30, "active": True} for value in stored)


async def test_gets_that_find_nothing_are_counted(runtime: Runtime) -> None:
    handle = await runtime.spawn(MemoryBackend(max_entries_per_collection=50))
    _, get = await run_workload(handle, callers=2, keys=200)
    assert get.missing == 150


async def test_the_stall_monitor_sees_the_loop_blocked() -> None:
    async with watching_stalls() as monitor:
        time.sleep(0.03)  # noqa: ASYNC251 -- the host loop blocked on purpose: what the monitor is there to see
    assert monitor.worst >= 0.025


async def test_a_workload_needs_a_caller(runtime: Runtime) -> None:
    handle = await runtime.spawn(MemoryBackend())
    with pytest.raises(ValueError, match="at least one caller"):
        await run_workload(handle, callers=0, keys=10)


def test_keys_are_shared_out_evenly_and_never_twice() -> None:
    names = key_names(3, 10)
    assert [len(own) for own in names] == [4, 3, 3]
    flat = [key for own in names for key in own]
    assert len(set(flat)) == 10
    assert key_names(4, 2) == [["user-0-0"], ["user-1-0"], [], []]


def test_percentiles_by_nearest_rank() -> None:
    samples = [index / 1000 for index in range(100, 0, -1)]  # 1 ms to 100 ms, out of order
    assert latency_summary(samples) == pytest.approx({"p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0})
    assert latency_summary([]) == {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}

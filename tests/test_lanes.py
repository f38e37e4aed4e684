from __future__ import annotations

import threading
from pathlib import Path

import anyio
import pytest

from kvrt import Runtime
from kvrt.backends.disk import DiskBackend
from kvrt.backends.multi_disk import MultiDiskBackend
from kvrt.lanes import ThreadLane

pytestmark = pytest.mark.anyio


async def test_calls_run_in_order_on_the_lanes_own_thread() -> None:
    lane = ThreadLane("test lane")
    seen: list[tuple[int, str]] = []

    def record(n: int) -> int:
        seen.append((n, threading.current_thread().name))
        return n * 2

    async with anyio.create_task_group() as group:
        for n in range(50):
            group.start_soon(lane.run, record, n)
            await anyio.lowlevel.checkpoint()  # each call is made before the next
    assert seen == [(n, "test lane") for n in range(50)]
    assert await lane.run(record, 21) == 42
    await lane.aclose()


async def test_an_error_reaches_the_caller_and_the_lane_goes_on() -> None:
    lane = ThreadLane("test lane")

    def fail() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        await lane.run(fail)
    assert await lane.run(len, "abc") == 3
    await lane.aclose()


async def test_a_blocking_call_does_not_stall_the_loop() -> None:
    lane = ThreadLane("test lane")
    released = threading.Event()

    async def release() -> None:
        await anyio.lowlevel.checkpoint()
        released.set()  # runs on the loop only while the lane blocks

    async with anyio.create_task_group() as group:
        group.start_soon(release)
        assert await lane.run(released.wait, 10)
    await lane.aclose()


async def test_a_cancelled_caller_waits_for_its_call_to_finish() -> None:
    lane = ThreadLane("test lane")
    started, release = threading.Event(), threading.Event()
    finished: list[bool] = []

    def slow() -> None:
        started.set()
        release.wait(10)
        finished.append(True)

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(lane.run, slow)
            await anyio.to_thread.run_sync(started.wait)
            scope.cancel()
            release.set()
    assert finished == [True], "the caller left only once its call had run"
    await lane.aclose()


async def test_closing_joins_the_thread_and_the_lane_starts_again() -> None:
    lane = ThreadLane("test lane")
    thread = await lane.run(threading.current_thread)
    await lane.aclose()
    assert not thread.is_alive()
    again = await lane.run(threading.current_thread)
    assert again is not thread
    assert again.is_alive()
    await lane.aclose()
    await lane.aclose()  # closing a closed lane is nothing
    assert not again.is_alive()


@pytest.mark.parametrize("make", [DiskBackend, MultiDiskBackend], ids=["disk", "multi-disk"])
async def test_a_closed_runtime_leaves_no_disk_thread_behind(tmp_path: Path, make: type[DiskBackend]) -> None:
    before = set(threading.enumerate())
    async with Runtime() as runtime:
        store = await runtime.spawn(make(tmp_path))
        await store.put("k", {"v": 1})
        assert await store.get("k") == {"v": 1}
        assert set(threading.enumerate()) - before, "the backend works on a thread of its own"
    assert [thread.name for thread in set(threading.enumerate()) - before] == []

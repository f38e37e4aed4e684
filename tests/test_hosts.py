"""The asyncio host: calls and answers cross a batch per wake; a caller who leaves cancels its call."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from kvrt.hosts import AsyncioThread
from kvrt.testing.conformance import eventually

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # the host exists for asyncio-only drivers under trio


def counting(schedule: Callable[[Callable[[], None]], Any], wakes: list[int]) -> Callable[[Callable[[], None]], Any]:
    def counted(callback: Callable[[], None]) -> Any:
        wakes[0] += 1
        return schedule(callback)

    return counted


async def test_calls_made_together_share_their_wakes() -> None:
    """50 calls rung while the host loop is busy wake it once; 50 answers rung while trio is busy wake trio once.

    Each loop is held busy on purpose (blocked on a ``threading.Event``), so what arrives meanwhile
    is certainly together: without that, whether two rings share a wake is up to the thread switch.
    """
    host = AsyncioThread()
    calls, answers = [0], [0]
    host._calls._schedule = counting(host._calls._schedule, calls)
    host._answers._schedule = counting(host._answers._schedule, answers)
    host_free = threading.Event()
    release = asyncio.Event()  # waited on and set on the host's loop only
    blocked = [False]

    async def block_host() -> None:
        blocked[0] = True
        host_free.wait(10)  # holds the host loop itself

    async def held(number: int) -> int:
        await release.wait()
        return number

    results: list[int] = []

    async def caller(number: int) -> None:
        results.append(await host.call(held, number))

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(host.call, block_host)
            await eventually(lambda: blocked[0])
            for number in range(50):
                group.start_soon(caller, number)
            await anyio.wait_all_tasks_blocked()  # every caller has rung and waits for its answer
            host_free.set()
            await eventually(lambda: calls[0] == 2 and not host._answers._items)  # the blocker has answered
            answers_before = answers[0]
            host._loop.call_soon_threadsafe(release.set)
            deadline = time.monotonic() + 10
            while len(host._answers._items) < 50 and time.monotonic() < deadline:
                time.sleep(0.001)  # noqa: ASYNC251 - holds the trio loop itself while the 50 answers ring
        assert sorted(results) == list(range(50))
        assert calls[0] == 2, "the blocker's wake, then one for the 50 calls rung meanwhile"
        assert answers[0] - answers_before == 1, "one wake for the 50 answers rung meanwhile"
    finally:
        await host.stop()


async def test_a_caller_who_leaves_cancels_its_call_on_the_host() -> None:
    host = AsyncioThread()
    cancelled: list[bool] = []

    async def hang() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    try:
        with anyio.move_on_after(0.05) as scope:
            await host.call(hang)
        assert scope.cancelled_caught
        await eventually(lambda: cancelled == [True])
    finally:
        await host.stop()

"""The asyncio host: calls and answers cross a batch per wake; a caller who leaves cancels its call."""

from __future__ import annotations

import asyncio
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
    host = AsyncioThread()
    calls, answers = [0], [0]
    host._calls._schedule = counting(host._calls._schedule, calls)
    host._answers._schedule = counting(host._answers._schedule, answers)
    release = asyncio.Event()  # waited on and set on the host's loop only
    started = [0]

    async def held(number: int) -> int:
        started[0] += 1
        await release.wait()
        return number

    async def open_gate() -> None:
        release.set()

    results: list[int] = []

    async def caller(number: int) -> None:
        results.append(await host.call(held, number))

    try:
        async with anyio.create_task_group() as group:
            for number in range(50):
                group.start_soon(caller, number)
            await eventually(lambda: started[0] == 50)
            await host.call(open_gate)
        assert sorted(results) == list(range(50))
        assert calls[0] < 51 / 2, f"51 calls woke the host loop {calls[0]} times"
        assert answers[0] < 51 / 2, f"51 answers woke the trio loop {answers[0]} times"
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

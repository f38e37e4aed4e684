"""Handles made where a store is made: at import time, used from any loop and thread, closed from anywhere."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

import kvrt
import kvrt.sync
from kvrt.errors import RuntimeClosedError
from kvrt.testing.conformance import eventually
from kvrt.testing.servers import RedisProcess, RedisTarget, redis_binary

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "disk", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://"
    elif request.param == "disk":
        yield f"disk://{tmp_path / 'cache'}"
    else:
        server: RedisTarget = request.getfixturevalue("redis_server")
        server.flush()
        yield server.url


def run_script(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True, timeout=120, check=False
    )


IMPORT_TIME_HANDLE = """
    import asyncio, sys, threading
    import anyio
    import kvrt, kvrt.sync

    cache = kvrt.open(sys.argv[1], name="cache")  # made at import time: no loop is running
    blocking = kvrt.sync.open(sys.argv[1], name="blocking")
    assert threading.active_count() == 1, "nothing starts before the first call"

    async def use(tag):
        await cache.put(tag, {"tag": tag}, ttl=60)
        assert await cache.get(tag) == {"tag": tag}
        async with anyio.create_task_group() as group:  # the framework's own tasks
            for n in range(16):
                group.start_soon(cache.put, f"{tag}-{n}", {"n": n})
        assert await cache.get_many([f"{tag}-{n}" for n in range(16)]) == [{"n": n} for n in range(16)]

    asyncio.run(use("first asyncio run"))
    asyncio.run(use("second asyncio run"))  # a new loop: the same handle still works
    anyio.run(use, "trio run", backend="trio")

    def thread(number):
        for n in range(200):
            blocking.put(f"t{number}-{n}", {"n": n})
            assert blocking.get(f"t{number}-{n}") == {"n": n}

    threads = [threading.Thread(target=thread, args=(number,)) for number in range(8)]
    for each in threads:
        each.start()
    for each in threads:
        each.join()
    assert blocking.get_many([f"t7-{n}" for n in range(200)]) == [{"n": n} for n in range(200)]
    cache_stats, blocking_stats = (kvrt.detached.default_runtime().stats()[name] for name in ("cache", "blocking"))
    print(cache_stats.ops.get("put"), blocking_stats.ops.get("put"), cache_stats.errors, blocking_stats.errors)
    kvrt.detached.default_runtime().close()
    print([thread.name for thread in threading.enumerate()])
"""


def test_a_handle_made_at_import_time_serves_every_loop_and_thread(url: str) -> None:
    result = run_script(IMPORT_TIME_HANDLE, url)
    assert result.returncode == 0, result.stderr
    counts, threads = result.stdout.strip().splitlines()
    assert counts == "51 1600 {} {}"  # 3 runs of 17 puts; 8 threads of 200
    assert threads == "['MainThread']", "no thread is left after close"


WRITE_THEN_EXIT = """
    import asyncio, sys
    import kvrt

    cache = kvrt.open(sys.argv[1])

    async def main():
        await cache.put("last words", {"said": True})  # acknowledged; the process ends right after

    asyncio.run(main())
"""

READ_BACK = """
    import sys
    import kvrt.sync

    print(kvrt.sync.open(sys.argv[1]).get("last words"))
"""


def test_an_acknowledged_write_just_before_exit_is_there_for_the_next_process(tmp_path: Path) -> None:
    url = f"disk://{tmp_path / 'cache'}"
    wrote = run_script(WRITE_THEN_EXIT, url)
    assert wrote.returncode == 0, wrote.stderr
    assert wrote.stderr == ""
    read = run_script(READ_BACK, url)
    assert read.stdout.strip() == "{'said': True}", read.stderr


async def test_setup_and_teardown_in_different_tasks(url: str) -> None:
    """What pytest-asyncio fixtures and framework lifespans do: open in one task, close in another."""
    runtime = kvrt.Runtime.detached()
    opened: dict[str, Any] = {}

    async def setup() -> None:
        opened["cache"] = runtime.open(url, name="cache")
        await opened["cache"].put("k", {"v": 1})

    async def teardown() -> None:
        await opened["cache"].aclose()
        await runtime.aclose()

    async with anyio.create_task_group() as group:
        group.start_soon(setup)
    assert await opened["cache"].get("k") == {"v": 1}  # the test body, in yet another task
    async with anyio.create_task_group() as group:
        group.start_soon(teardown)
    with pytest.raises(RuntimeClosedError):
        await opened["cache"].get("k")
    thread = runtime._thread
    assert thread is not None
    assert not thread.is_alive(), "its thread ended (another runtime's, such as the default one, may live on)"


async def test_closing_a_handle_stops_its_worker_and_leaves_no_connection(redis_server: RedisTarget) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    try:
        before = len(admin.client_list())
        with kvrt.Runtime.detached() as runtime:
            async with runtime.open(redis_server.url, name="cache") as cache:
                await cache.put("k", {"v": 1})
                assert len(admin.client_list()) > before
            assert "cache" not in runtime.stats()
            assert len(admin.client_list()) == before, "the worker's connections are closed with it"
            again = runtime.open(redis_server.url, name="cache")  # the name is free again
            assert await again.get("k") == {"v": 1}
        assert len(admin.client_list()) == before
    finally:
        admin.close()


async def test_a_full_mailbox_holds_detached_callers_back_or_refuses_them() -> None:
    with kvrt.Runtime.detached(mailbox=kvrt.MailboxPolicy(size=2, drain=2)) as runtime:
        cache = runtime.open("memory://", name="small")
        async with anyio.create_task_group() as group:
            for number in range(50):
                group.start_soon(cache.put, f"k{number}", {"n": number})
        assert await cache.get_many([f"k{number}" for number in range(50)]) == [{"n": n} for n in range(50)]
    with kvrt.Runtime.detached(mailbox=kvrt.MailboxPolicy(size=1, drain=1, when_full="fail")) as runtime:
        cache = runtime.open("memory://", name="tiny")
        outcomes: list[str] = []

        async def put(number: int) -> None:
            try:
                await cache.put(f"k{number}", {"n": number})
                outcomes.append("stored")
            except kvrt.errors.OverloadedError:
                outcomes.append("refused")

        async with anyio.create_task_group() as group:
            for number in range(50):
                group.start_soon(put, number)
        assert "refused" in outcomes
        assert "stored" in outcomes
        assert runtime.stats()["tiny"].overloaded == outcomes.count("refused")


async def test_a_server_that_is_not_up_yet_fails_first_calls_then_serves(tmp_path: Path) -> None:
    """A handle made at import time for a Redis that starts later: no error at open, a clear one per call."""
    server = RedisProcess(redis_binary(), tmp_path / "redis")  # its port is chosen, nothing listens yet
    with kvrt.Runtime.detached() as runtime:
        cache = runtime.open(server.url, name="late")
        with pytest.raises(kvrt.errors.StoreSetupError, match="Could not open the backend"):
            await cache.get("k")
        await anyio.to_thread.run_sync(server.start)
        try:
            await cache.put("k", {"v": 1})  # the next call opens it
            assert await cache.get("k") == {"v": 1}
        finally:
            server.stop()


async def test_closing_the_runtime_under_load_answers_every_caller() -> None:
    """Callers hammering a handle while its runtime closes: each gets its reply or RuntimeClosedError, none hangs."""
    runtime = kvrt.Runtime.detached()
    cache = runtime.open("memory://", name="busy")
    await cache.put("k", {"v": 0})
    outcomes: dict[str, int] = {"answered": 0, "closed": 0}

    async def caller() -> None:
        while True:
            try:
                await cache.put("k", {"v": 1})
            except RuntimeClosedError:
                outcomes["closed"] += 1
                return
            outcomes["answered"] += 1

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for _ in range(16):
                group.start_soon(caller)
            await eventually(lambda: outcomes["answered"] >= 500)
            await runtime.aclose()
    assert outcomes["closed"] == 16


def test_finished_loops_leave_nothing_behind() -> None:
    """Each loop's reply doorbell goes with the loop: a process that runs many loops one after another does not grow."""
    import asyncio
    import gc

    from kvrt.crossing import Doorbell

    def doorbells() -> int:
        gc.collect()
        return sum(isinstance(each, Doorbell) for each in gc.get_objects())

    handle = kvrt.open("memory://", runtime=kvrt.Runtime.detached())

    async def use(tag: str) -> None:
        await handle.put(tag, {"tag": tag})
        assert await handle.get(tag) == {"tag": tag}

    try:
        asyncio.run(use("first"))  # the runtime's own doorbell, and one loop's
        before = doorbells()
        for run in range(3):
            anyio.run(use, f"trio {run}", backend="trio")
            asyncio.run(use(f"asyncio {run}"))
        assert doorbells() <= before, "the last asyncio loop's doorbell replaced the first's; the rest are gone"
    finally:
        handle.close()
        handle._remote.runtime.close()


@pytest.mark.parametrize("cap", [3, 10_000], ids=["callers queued for the cap", "callers with room"])
async def test_the_in_flight_cap_bounds_detached_callers_and_every_place_comes_back(cap: int) -> None:
    """``max_in_flight`` bounds crossed requests as it bounds attached ones; a caller who leaves gives its place back.

    Callers leave while queued for the cap (a cap of 3), or once their request is in the mailbox.
    """
    with kvrt.Runtime.detached(max_in_flight=cap) as runtime:
        cache = runtime.open("memory://", name="capped")
        left = 0

        async def hurry(number: int) -> None:
            nonlocal left
            # Cancelled, not timed out: no deadline goes with it. Every fourth has no time at all, so some
            # certainly leave on a fast machine too (their request has crossed by the first checkpoint).
            with anyio.move_on_after(0.0005 * (number % 4) / 3) as scope:
                await cache.put(f"h{number}", {"n": number})
            left += scope.cancelled_caught

        async with anyio.create_task_group() as group:
            for number in range(400):
                group.start_soon(cache.put, f"k{number}", {"n": number})
                group.start_soon(hurry, number)
        assert await cache.get_many([f"k{number}" for number in range(400)]) == [{"n": n} for n in range(400)]
        numbers = runtime.runtime_stats()
        assert numbers.max_in_flight == cap
        assert 1 < numbers.peak_in_flight <= cap
        await eventually(lambda: runtime.runtime_stats().in_flight == 0)  # withdrawn requests gave theirs back
        assert left > 0, "some hurried callers left before their reply"


async def test_closing_the_runtime_answers_callers_still_waiting_for_their_turn() -> None:
    """Callers queued for the in-flight cap when the runtime closes past its grace hear so; none is left waiting."""
    from kvrt.testing.faults import FaultyBackend

    backend = FaultyBackend()
    backend.slow(30)
    runtime = kvrt.Runtime.detached(max_in_flight=1, shutdown_grace=0.2)
    cache = runtime.open(backend, name="slow")
    outcomes: list[str] = []

    async def put(number: int) -> None:
        try:
            await cache.put(f"k{number}", {"n": number})
            outcomes.append("stored")
        except RuntimeClosedError:
            outcomes.append("closed")

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            for number in range(5):
                group.start_soon(put, number)
            await eventually(lambda: backend.entered == 1 and runtime.runtime_stats().in_flight == 1)
            await runtime.aclose()
    assert outcomes == ["closed"] * 5

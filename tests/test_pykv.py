"""py-key-value's own stores as supervised kvrt workers: the bridge passes kvrt's behaviour suite, and heals."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import ClassVar

import anyio
import pytest

from kvrt import Runtime
from kvrt.backends.pykv import PyKeyValueBackend
from kvrt.errors import KeyValueError
from kvrt.testing import BehaviourSuite
from kvrt.testing.servers import RedisProcess, RedisTarget, redis_binary, reference_module

memory_store = reference_module("key_value.aio.stores.memory")
disk_store = reference_module("key_value.aio.stores.disk")
redis_store = reference_module("key_value.aio.stores.redis")

pytestmark = pytest.mark.anyio

COLLIDES = (
    "the reference's {store} joins collection and key with '::', so ('a::b', 'c') and ('a', 'b::c') are one entry"
)


class TestReferenceMemoryStore(BehaviourSuite):
    deviations: ClassVar[dict[str, str]] = dict.fromkeys(
        ["test_destroy_collection_removes_only_that_collection", "test_destroy_removes_everything"],
        "the reference's MemoryStore cannot write to a collection once it destroyed it (KeyError: not set up)",
    )

    @pytest.fixture
    def backend(self) -> PyKeyValueBackend:
        return PyKeyValueBackend(memory_store.MemoryStore(), asyncio_only=False)


class TestReferenceDiskStore(BehaviourSuite):
    deviations: ClassVar[dict[str, str]] = {
        "test_separators_cannot_make_two_entries_collide": COLLIDES.format(store="DiskStore")
    }

    @pytest.fixture
    def backend(self, tmp_path: Path) -> PyKeyValueBackend:
        return PyKeyValueBackend(disk_store.DiskStore(directory=tmp_path), asyncio_only=False)


class TestReferenceRedisStore(BehaviourSuite):
    deviations: ClassVar[dict[str, str]] = {
        "test_separators_cannot_make_two_entries_collide": COLLIDES.format(store="RedisStore"),
        **dict.fromkeys(
            [
                f"test_any_name_works_and_stays_in_its_collection[{name}]"
                for name in ("double colon", "glob class", "backslash")
            ],
            "the reference's RedisStore lists the wrong keys for a collection named with '::', '[...]' or a backslash",
        ),
        "test_destroy_removes_everything": "the reference's RedisStore destroy() says True on an empty database",
    }

    @pytest.fixture
    def backend(self, redis_server: RedisTarget) -> PyKeyValueBackend:
        redis_server.flush()
        return PyKeyValueBackend(redis_store.RedisStore(url=redis_server.url))


@pytest.mark.parametrize("outage", [0.5, 3.0], ids=lambda seconds: f"{seconds:g}s")
@pytest.mark.filterwarnings("ignore::ResourceWarning")  # see the gc.collect() at the end
async def test_a_reference_redis_store_heals_after_its_server_comes_back(tmp_path: Path, outage: float) -> None:
    """SIGKILL the server under writers, restart it on the same port: default policies bring the bridge back."""
    server = RedisProcess(redis_binary(), tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    acknowledged: dict[str, dict[str, int]] = {}
    errors: list[BaseException] = []
    warmed_up, back, stop = anyio.Event(), anyio.Event(), anyio.Event()
    restarted_at: list[float] = []
    back_at: list[float] = []

    async def writer(number: int) -> None:
        index = 0
        while not stop.is_set():
            key, value = f"w{number}-{index}", {"writer": number, "index": index}
            index += 1
            try:
                await store.put(key, value)
            except Exception as exc:  # each is checked below
                errors.append(exc)
                await anyio.sleep(0.01)  # pacing while the circuit is open
            else:
                acknowledged[key] = value
                if len(acknowledged) >= 200:
                    warmed_up.set()
                if restarted_at and not back_at:
                    back_at.append(anyio.current_time())
                    back.set()

    try:
        async with Runtime() as runtime:
            store = await runtime.spawn(
                PyKeyValueBackend(redis_store.RedisStore(url=server.url)), name="bridge", request_timeout=1.0
            )
            async with anyio.create_task_group() as group:
                for number in range(4):
                    group.start_soon(writer, number)
                with anyio.fail_after(30):
                    await warmed_up.wait()
                await anyio.to_thread.run_sync(server.kill)
                await anyio.sleep(outage)  # the outage itself, not a wait for a condition
                await anyio.to_thread.run_sync(server.start)
                restarted_at.append(anyio.current_time())
                with anyio.fail_after(10):
                    await back.wait()
                stop.set()
            stats = runtime.stats()["bridge"]
            assert stats.state == "running"
            assert back_at[0] - restarted_at[0] <= 2.0, "puts succeed within 2 s of the restart"
            if outage > 1.0:  # longer than the deadline: callers saw it, as kvrt errors
                assert errors
            assert [error for error in errors if not isinstance(error, KeyValueError)] == []
            keys = list(acknowledged)
            assert await store.get_many(keys) == [acknowledged[key] for key in keys], "no acknowledged put lost"
    finally:
        server.stop()
        # redis-py's asyncio client drops the connections the kill cut without closing their transports;
        # collected here, their ResourceWarnings fall under this test's filter, not at the session's end.
        gc.collect()

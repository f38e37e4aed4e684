"""The same chDB directory, written by one library and read by the other (SPEC.md section 5).

chDB runs one engine per process, so both libraries here work on the one directory of a test: in
turn (one closes before the other opens, as two programs would) or side by side (two sessions on
the same directory share the engine; the reference's runs on the event loop's thread, kvrt's on
its lane).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chdb.session import Session as _Session

from kvrt import Runtime
from kvrt.backends.chdb import ChDBBackend
from kvrt.policies import CullPolicy
from kvrt.protocol import cull_of
from kvrt.testing.conformance import assert_ttl, listing, sleep_past
from kvrt.testing.servers import reference_module

chdb_store = reference_module("key_value.aio.stores.chdb")

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore:A configured store is unstable")]

VALUES: dict[str, dict[str, Any]] = {
    "user-1": {"name": "Alice", "age": 30, "tags": ["a", "b"], "active": True},
    "user_2": {"nested": {"list": [1, 2.5, None]}, "unicode": "héllo 🎉"},
    "it's \\ 'quoted'": {"hostile": "'; DROP TABLE kv_entries; --"},
    "empty": {},
}
QUIET = CullPolicy(interval=3600.0)
Session: Callable[[str], Any] = _Session  # chdb's functions carry no annotations: a session is Any here


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the reference is asyncio-only


async def test_kvrt_reads_what_the_reference_wrote(tmp_path: Path) -> None:
    reference = chdb_store.ChDBStore(database_path=tmp_path)
    for key, value in VALUES.items():
        await reference.put(key, value, collection="users")
    await reference.put("brief", {"v": 1}, collection="users", ttl=100)
    await reference.put("gone", {"v": 2}, collection="users", ttl=0.2)
    await reference.put("replaced", {"v": "first"}, collection="users")
    await reference.put("replaced", {"v": "second"}, collection="users", ttl=100)
    await reference.delete("user-1", collection="users")
    await reference.close()
    await sleep_past(time.time() + 0.2)

    backend = ChDBBackend(tmp_path)
    async with Runtime() as runtime:
        store = listing(await runtime.spawn(backend))
        assert backend.patches is False, "the reference's table: deletes go its way, as mutations"
        expected = [None if key == "user-1" else value for key, value in VALUES.items()]
        assert await store.get_many(list(VALUES), collection="users") == expected
        assert_ttl(await store.ttl("brief", collection="users"), {"v": 1}, 100)
        assert_ttl(await store.ttl("replaced", collection="users"), {"v": "second"}, 100)
        assert await store.get("gone", collection="users") is None
        assert sorted(await store.keys("users")) == sorted([*VALUES, "brief", "replaced"][1:])
        assert await store.collections() == ["users"]
        assert await store.delete("gone", collection="users") is False, "an expired entry does not count"
        assert await store.delete_many(["brief", "empty"], collection="users") == 2
        assert await store.get_many(["brief", "empty", "replaced"], collection="users") == [None, None, {"v": "second"}]


async def test_the_reference_reads_what_kvrt_wrote(tmp_path: Path) -> None:
    backend = ChDBBackend(str(tmp_path))
    async with Runtime() as runtime:
        store = await runtime.spawn(backend)
        assert backend.patches is True, "kvrt's table: deletes write patch parts"
        await store.put_many(list(VALUES), list(VALUES.values()), collection="users")
        await store.put("brief", {"v": 1}, collection="users", ttl=100)
        await store.put("gone", {"v": 2}, collection="users", ttl=0.2)
        await store.put("replaced", {"v": "first"}, collection="users", ttl=100)
        await store.put("replaced", {"v": "second"}, collection="users")
        await store.delete("user_2", collection="users")
    await sleep_past(time.time() + 0.2)

    reference = chdb_store.ChDBStore(database_path=str(tmp_path))
    try:
        for key, value in VALUES.items():
            assert await reference.get(key, collection="users") == (None if key == "user_2" else value)
        assert_ttl(await reference.ttl("brief", collection="users"), {"v": 1}, 100)
        assert await reference.ttl("replaced", collection="users") == ({"v": "second"}, None)
        assert await reference.get("gone", collection="users") is None
        assert await reference.get("missing", collection="users") is None
        assert await reference.delete("brief", collection="users") is True, "its DELETE works on kvrt's table"
        assert await reference.get("brief", collection="users") is None
        await reference.put("brief", {"v": 3}, collection="users")
        assert await reference.get("brief", collection="users") == {"v": 3}
    finally:
        await reference.close()


async def test_side_by_side_each_sees_the_others_writes_at_once(tmp_path: Path) -> None:
    reference = chdb_store.ChDBStore(database_path=tmp_path)
    try:
        await reference.put("theirs", {"by": "reference"}, collection="c")
        async with Runtime() as runtime:
            store = listing(await runtime.spawn(ChDBBackend(tmp_path), cull=QUIET))
            assert await store.get("theirs", collection="c") == {"by": "reference"}
            await store.put("theirs", {"by": "kvrt"}, collection="c")  # a newer row of the reference's key
            await store.put("ours", {"by": "kvrt"}, collection="c", ttl=100)
            assert await reference.get("theirs", collection="c") == {"by": "kvrt"}
            assert_ttl(await reference.ttl("ours", collection="c"), {"by": "kvrt"}, 100)
            assert await reference.delete("ours", collection="c") is True
            assert await store.get("ours", collection="c") is None
            await reference.put("theirs", {"by": "reference again"}, collection="c")
            assert await store.get("theirs", collection="c") == {"by": "reference again"}
            assert await store.delete("theirs", collection="c") is True
            assert await reference.get("theirs", collection="c") is None
        assert await reference.get("missing", collection="c") is None, "kvrt closing its session left the reference's"
    finally:
        await reference.close()


async def test_kvrt_culls_what_the_reference_let_expire(tmp_path: Path) -> None:
    reference = chdb_store.ChDBStore(database_path=tmp_path)
    try:
        await reference.put_many([f"e{i}" for i in range(20)], [{"i": i} for i in range(20)], collection="c", ttl=0.2)
        await reference.put("kept", {"v": 1}, collection="c", ttl=0.2)
        await reference.put("kept", {"v": 2}, collection="c")  # its expired older row stays hidden
        await sleep_past(time.time() + 0.2)
        async with Runtime() as runtime:
            handle = await runtime.spawn(ChDBBackend(tmp_path), cull=QUIET)
            await cull_of(handle).cull()
            assert await listing(handle).keys("c") == ["kept"]
        assert await reference.get("kept", collection="c") == {"v": 2}
        session = Session(str(tmp_path))
        try:
            counted = session.query("SELECT count() FROM kv_entries FINAL", "CSV").bytes()
        finally:
            session.close()
        assert counted.strip() == b"1", "the expired entries' rows are gone"
    finally:
        await reference.close()

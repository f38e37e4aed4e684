"""The same RocksDB directory, written by one library and read by the other (SPEC.md section 5)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from kvrt import Runtime
from kvrt.backends.rocksdb import RocksDBBackend
from kvrt.protocol import AsyncCullProtocol
from kvrt.testing.conformance import assert_ttl, listing, raw_get, sleep_past
from kvrt.testing.servers import reference_module

rocksdb_store = reference_module("key_value.aio.stores.rocksdb")

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore:A configured store is unstable")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the reference store runs on asyncio


VALUES: dict[str, dict[str, Any]] = {
    "user-1": {"name": "Alice", "age": 30, "tags": ["a", "b"], "active": True},
    "user_2": {"nested": {"list": [1, 2.5, None]}, "unicode": "héllo 🎉"},
    "../../etc/passwd": {"path": "like"},
    "nul\x00key": {"n": 1},
    "k" * 1000: {"long": True},
    "empty": {},
}


async def test_kvrt_reads_what_the_reference_wrote(tmp_path: Path) -> None:
    reference = rocksdb_store.RocksDBStore(path=tmp_path)
    for key, value in VALUES.items():
        await reference.put(key, value, collection="users")
    await reference.put_many(["b1", "b2"], [{"v": 1}, {"v": 2}], collection="users", ttl=100)
    await reference.put("gone", {"v": 2}, collection="users", ttl=0.2)
    await reference.put("k", {"v": 3}, collection="other/..")
    await reference.close()
    await sleep_past(time.time() + 0.2)

    async with Runtime() as runtime:
        handle = await runtime.spawn(RocksDBBackend(tmp_path))
        store = listing(handle)
        assert await store.get_many(list(VALUES), collection="users") == list(VALUES.values())
        assert_ttl(await store.ttl("b2", collection="users"), {"v": 2}, 100)
        assert await store.get("gone", collection="users") is None
        assert sorted(await store.keys("users")) == sorted([*VALUES, "b1", "b2"])
        assert sorted(await store.collections()) == ["other/..", "users"]
        assert await store.get("k", collection="other/..") == {"v": 3}
        assert await raw_get(handle, "users", "gone") is not None, "the expired entry the reference left behind"
        assert isinstance(handle, AsyncCullProtocol)
        await handle.cull()
        assert await raw_get(handle, "users", "gone") is None
        assert await store.delete("b1", collection="users") is True


async def test_the_reference_reads_what_kvrt_wrote(tmp_path: Path) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(RocksDBBackend(tmp_path))
        await store.put_many(list(VALUES), list(VALUES.values()), collection="users")
        await store.put("brief", {"v": 1}, collection="users", ttl=100)
        await store.put("gone", {"v": 2}, collection="users", ttl=0.2)
        await store.put("k", {"v": 3}, collection="other/..")
    await sleep_past(time.time() + 0.2)

    reference = rocksdb_store.RocksDBStore(path=tmp_path)
    try:
        for key, value in VALUES.items():
            assert await reference.get(key, collection="users") == value
        assert_ttl(await reference.ttl("brief", collection="users"), {"v": 1}, 100)
        assert await reference.get("gone", collection="users") is None
        assert await reference.get("missing", collection="users") is None
        assert await reference.get("k", collection="other/..") == {"v": 3}
        assert await reference.delete("user-1", collection="users") is True
    finally:
        await reference.close()

    async with Runtime() as runtime:  # and back: the reference's delete is seen
        store = await runtime.spawn(RocksDBBackend(tmp_path))
        assert await store.get("user-1", collection="users") is None
        assert await store.get("user_2", collection="users") == VALUES["user_2"]

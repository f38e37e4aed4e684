"""One memcached server, written by one library and read by the other (SPEC.md section 5).

The reference's MemcachedStore runs only on asyncio (aiomcache), so these tests do too; kvrt's
side runs on both loops in tests/test_memcached.py. Names are the ones the reference can store
unsanitised (no spaces or control characters, at most 250 bytes with the collection).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kvrt import Runtime
from kvrt.backends.memcached import MemcachedBackend
from kvrt.testing.conformance import assert_ttl, sleep_past
from kvrt.testing.memcached import MemcachedTarget
from kvrt.testing.servers import reference_module

memcached_store = reference_module("key_value.aio.stores.memcached")

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:A configured store is unstable:UserWarning"),  # the reference marks it so
]

VALUES: dict[str, dict[str, Any]] = {
    "user-1": {"name": "Alice", "age": 30, "tags": ["a", "b"], "active": True},
    "user:2": {"nested": {"list": [1, 2.5, None]}, "unicode": "héllo 🎉"},
    "a/b": {"path": "like"},
    "empty": {},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def reference_store(memcached_server: MemcachedTarget) -> AsyncIterator[Any]:
    memcached_server.flush()
    async with memcached_store.MemcachedStore(host=memcached_server.host, port=memcached_server.port) as reference:
        yield reference


async def test_kvrt_reads_what_the_reference_wrote(memcached_server: MemcachedTarget, reference_store: Any) -> None:
    await reference_store.put_many(list(VALUES), list(VALUES.values()), collection="users")
    await reference_store.put("brief", {"v": 1}, collection="users", ttl=100)
    await reference_store.put("gone", {"v": 2}, collection="users", ttl=1)
    async with Runtime() as runtime:
        store = await runtime.spawn(MemcachedBackend(memcached_server.host, memcached_server.port))
        assert await store.get_many(list(VALUES), collection="users") == list(VALUES.values())
        assert_ttl(await store.ttl("brief", collection="users"), {"v": 1}, 100)
        await sleep_past(time.time() + 1)
        assert await store.get("gone", collection="users") is None
        assert await store.delete("user-1", collection="users") is True
    assert await reference_store.get("user-1", collection="users") is None


async def test_the_reference_reads_what_kvrt_wrote(memcached_server: MemcachedTarget, reference_store: Any) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(MemcachedBackend(memcached_server.host, memcached_server.port))
        await store.put_many(list(VALUES), list(VALUES.values()), collection="users")
        await store.put("brief", {"v": 1}, collection="users", ttl=100)
        await store.put("month", {"v": 1}, collection="users", ttl=40 * 24 * 3600)
    assert await reference_store.get_many(list(VALUES), collection="users") == list(VALUES.values())
    assert_ttl(await reference_store.ttl("brief", collection="users"), {"v": 1}, 100)
    assert_ttl(await reference_store.ttl("month", collection="users"), {"v": 1}, 40 * 24 * 3600)
    assert await reference_store.delete("user:2", collection="users") is True

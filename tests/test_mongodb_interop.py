"""One MongoDB database, written by one library and read by the other (SPEC.md section 5), on the tests' server.

The reference's MongoDBStore runs only on asyncio, so these tests do too; kvrt's side runs on both
loops in tests/test_mongodb.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog.testing

from kvrt import Runtime
from kvrt.backends.mongodb import MongoDBBackend
from kvrt.protocol import AsyncEnumerateKeysProtocol
from kvrt.testing.conformance import assert_ttl, sleep_past
from kvrt.testing.servers import MongoTarget, reference_module

mongodb_store = reference_module("key_value.aio.stores.mongodb")

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:A configured store is unstable:UserWarning"),  # the reference marks it so
]

VALUES: dict[str, dict[str, Any]] = {
    "user-1": {"name": "Alice", "age": 30, "tags": ["a", "b"], "active": True},
    "user:2": {"nested": {"list": [1, 2.5, None]}, "unicode": "héllo 🎉"},
    "a b/c": {"path": "like"},
    "$gt": {"looks": "like an operator"},
    "empty": {},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def reference_store(mongodb: MongoTarget, database: str) -> AsyncIterator[Any]:
    async with mongodb_store.MongoDBStore(url=mongodb.url, db_name=database) as reference:
        yield reference


async def test_kvrt_reads_what_the_reference_wrote(mongodb: MongoTarget, database: str, reference_store: Any) -> None:
    await reference_store.put_many(list(VALUES), list(VALUES.values()), collection="users")
    await reference_store.put("gone", {"v": 2}, collection="users", ttl=1)
    await sleep_past(time.time() + 1)
    await reference_store.put("brief", {"v": 1}, collection="users", ttl=100)
    async with Runtime() as runtime:
        store = await runtime.spawn(MongoDBBackend(mongodb.url, database=database))
        assert await store.get_many(list(VALUES), collection="users") == list(VALUES.values())
        assert_ttl(await store.ttl("brief", collection="users"), {"v": 1}, 100)
        assert await store.get("gone", collection="users") is None, "expired, though the server has not removed it"
        assert isinstance(store, AsyncEnumerateKeysProtocol)
        assert sorted(await store.keys("users")) == sorted([*VALUES, "brief"])
        assert await store.delete("user-1", collection="users") is True
        with structlog.testing.capture_logs() as logs:  # the reference's key index is not unique: kept, and said
            await store.put("user-1", {"back": True}, collection="users")
        assert [log["event"] for log in logs] == ["mongodb.key_index_not_unique"]
    assert await reference_store.get("user-1", collection="users") == {"back": True}


async def test_the_reference_reads_what_kvrt_wrote(mongodb: MongoTarget, database: str, reference_store: Any) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(MongoDBBackend(mongodb.url, database=database))
        await store.put_many(list(VALUES), list(VALUES.values()), collection="users")
        await store.put("brief", {"v": 1}, collection="users", ttl=100)
        await store.put("huge", {"n": 10**20}, collection="users")  # BSON holds no such int: stored as JSON text
        for key, value in VALUES.items():
            assert await reference_store.get(key, collection="users") == value
        assert_ttl(await reference_store.ttl("brief", collection="users"), {"v": 1}, 100)
        assert await reference_store.get("huge", collection="users") == {"n": 10**20}
        assert await reference_store.get("missing", collection="users") is None
        assert await reference_store.delete("brief", collection="users") is True
        assert await store.get("brief", collection="users") is None
        await reference_store.put("user-1", {"by": "reference"}, collection="users")
        assert await store.get("user-1", collection="users") == {"by": "reference"}

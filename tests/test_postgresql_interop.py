"""One PostgreSQL table, written by one library and read by the other (SPEC.md section 5), on the tests' server.

The reference's PostgreSQLStore runs only on asyncio, so these tests do too; kvrt's side runs on both
loops in tests/test_postgresql.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kvrt import Runtime
from kvrt.backends.postgresql import PostgreSQLBackend
from kvrt.protocol import AsyncEnumerateCollectionsProtocol, AsyncEnumerateKeysProtocol
from kvrt.testing.conformance import assert_ttl, sleep_past
from kvrt.testing.postgres import PostgresTarget
from kvrt.testing.servers import reference_module

postgresql_store = reference_module("key_value.aio.stores.postgresql")
reference_errors = reference_module("key_value.aio.errors")

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:A configured store is unstable:UserWarning"),  # the reference marks it so
]

VALUES: dict[str, dict[str, Any]] = {
    "user-1": {"name": "Alice", "age": 30, "tags": ["a", "b"], "active": True},
    "user:2": {"nested": {"list": [1, 2.5, None]}, "unicode": "héllo 🎉"},
    "a b/c": {"path": "like", "float": 1.0},
    "$gt": {"looks": "like an operator"},
    "empty": {},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def reference_store(postgresql: PostgresTarget, postgresql_table: str) -> AsyncIterator[Any]:
    async with postgresql_store.PostgreSQLStore(url=postgresql.url, table_name=postgresql_table) as reference:
        yield reference


async def test_kvrt_reads_what_the_reference_wrote(
    postgresql: PostgresTarget, postgresql_table: str, reference_store: Any
) -> None:
    await reference_store.put_many(list(VALUES), list(VALUES.values()), collection="users")
    await reference_store.put("gone", {"v": 2}, collection="users", ttl=1)
    await sleep_past(time.time() + 1)
    await reference_store.put("brief", {"v": 1}, collection="users", ttl=100)
    await reference_store.put("other", {"v": 3}, collection="others")
    async with Runtime() as runtime:
        # create_table=False: the reference made the table, and kvrt takes it as it is
        store = await runtime.spawn(PostgreSQLBackend(postgresql.url, table=postgresql_table, create_table=False))
        assert await store.get_many(list(VALUES), collection="users") == list(VALUES.values())
        assert_ttl(await store.ttl("brief", collection="users"), {"v": 1}, 100)
        assert await store.get("gone", collection="users") is None, "expired, though the row is still there"
        assert isinstance(store, AsyncEnumerateKeysProtocol)
        assert sorted(await store.keys("users")) == sorted([*VALUES, "brief"])
        assert isinstance(store, AsyncEnumerateCollectionsProtocol)
        assert sorted(await store.collections()) == ["others", "users"]
        assert await store.delete("user-1", collection="users") is True
        await store.put("user-1", {"back": True}, collection="users")
    assert await reference_store.get("user-1", collection="users") == {"back": True}


async def test_the_reference_reads_what_kvrt_wrote(
    postgresql: PostgresTarget, postgresql_table: str, reference_store: Any
) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(PostgreSQLBackend(postgresql.url, table=postgresql_table))
        await store.put_many(list(VALUES), list(VALUES.values()), collection="users")
        await store.put("brief", {"v": 1}, collection="users", ttl=100)
        await store.put("big float", {"f": 1e16}, collection="users")  # written out in full: a float for both
        await store.put("nul", {"s": "a\x00b"}, collection="users")  # JSONB holds no NUL: kept as its text
        for key, value in VALUES.items():
            assert await reference_store.get(key, collection="users") == value
        assert_ttl(await reference_store.ttl("brief", collection="users"), {"v": 1}, 100)
        big = await reference_store.get("big float", collection="users")
        assert big == {"f": 1e16}
        assert isinstance(big["f"], float)
        with pytest.raises(reference_errors.DeserializationError):  # the one kind of value the reference cannot read
            await reference_store.get("nul", collection="users")
        assert await reference_store.get("missing", collection="users") is None
        assert await reference_store.delete("brief", collection="users") is True
        assert await store.get("brief", collection="users") is None
        await reference_store.put("user-1", {"by": "reference"}, collection="users", ttl=50)
        assert_ttl(await store.ttl("user-1", collection="users"), {"by": "reference"}, 50)
        assert sorted(await reference_store.collections()) == ["users"]
        assert await reference_store.destroy_collection(collection="users") is True
        assert await store.get("user:2", collection="users") is None


async def test_both_use_one_table_whatever_the_case_of_its_name(
    postgresql: PostgresTarget, postgresql_table: str
) -> None:
    mixed = postgresql_table.replace("kvrt_", "KvStore_")
    async with postgresql_store.PostgreSQLStore(url=postgresql.url, table_name=mixed) as reference:
        await reference.put("k", {"by": "reference"})
        async with Runtime() as runtime:
            store = await runtime.spawn(PostgreSQLBackend(postgresql.url, table=mixed, create_table=False))
            assert await store.get("k") == {"by": "reference"}
    postgresql.drop(mixed.lower())

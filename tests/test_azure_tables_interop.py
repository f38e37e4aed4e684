"""One Azure table, written by one library and read by the other (SPEC.md section 5), on the tests' table service.

The reference's AzureTablesStore runs only on asyncio, so these tests do too; kvrt's side runs on
both loops in tests/test_azure_tables.py. The names are ones the reference stores as they are (it
sanitizes nothing by default): no ``/ \\ # ?`` or control characters, none starting with ``%``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from kvrt import Runtime
from kvrt.backends.azure_tables import AzureTablesBackend
from kvrt.protocol import AsyncEnumerateCollectionsProtocol, AsyncEnumerateKeysProtocol
from kvrt.testing.azurite import AzureTablesTarget
from kvrt.testing.conformance import assert_ttl, sleep_past
from kvrt.testing.servers import reference_module

azure_tables_store = reference_module("key_value.aio.stores.azure_tables")

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:A configured store is unstable:UserWarning"),  # the reference marks it so
]

VALUES: dict[str, dict[str, Any]] = {
    "user-1": {"name": "Alice", "age": 30, "tags": ["a", "b"], "active": True},
    "user:2": {"nested": {"list": [1, 2.5, None]}, "unicode": "héllo 🎉"},
    "a b.c": {"path": "like"},
    "it's 100%": {"quote": "and percent"},
    "ünï 名前": {"non": "ascii"},
    "empty": {},
}
COLLECTION = "users & co."


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def reference_store(azure_tables: AzureTablesTarget, azure_table: str) -> AsyncIterator[Any]:
    connection = azure_tables.connection_string
    async with azure_tables_store.AzureTablesStore(connection_string=connection, table_name=azure_table) as store:
        yield store


async def test_kvrt_reads_what_the_reference_wrote(
    azure_tables: AzureTablesTarget, azure_table: str, reference_store: Any
) -> None:
    await reference_store.put_many(list(VALUES), list(VALUES.values()), collection=COLLECTION)
    await reference_store.put("gone", {"v": 2}, collection=COLLECTION, ttl=1)
    await sleep_past(time.time() + 1)
    await reference_store.put("brief", {"v": 1}, collection=COLLECTION, ttl=100)
    async with Runtime() as runtime:
        store = await runtime.spawn(AzureTablesBackend(azure_tables.connection_string, table=azure_table))
        assert await store.get_many(list(VALUES), collection=COLLECTION) == list(VALUES.values())
        assert await store.get("user-1", collection=COLLECTION) == VALUES["user-1"]  # a point read, not a query
        assert_ttl(await store.ttl("brief", collection=COLLECTION), {"v": 1}, 100)
        assert await store.get("gone", collection=COLLECTION) is None, "expired, though still in the table"
        assert isinstance(store, AsyncEnumerateKeysProtocol)
        assert sorted(await store.keys(COLLECTION)) == sorted([*VALUES, "brief"])
        assert isinstance(store, AsyncEnumerateCollectionsProtocol)
        assert await store.collections() == [COLLECTION]
        assert await store.delete_many(["user-1", "gone", "missing"], collection=COLLECTION) == 1
        await store.put("user:2", {"by": "kvrt"}, collection=COLLECTION, ttl=50)
    assert await reference_store.get("user-1", collection=COLLECTION) is None
    assert await reference_store.get("gone", collection=COLLECTION) is None
    assert_ttl(await reference_store.ttl("user:2", collection=COLLECTION), {"by": "kvrt"}, 50, slack=2.5)


async def test_the_reference_reads_what_kvrt_wrote(
    azure_tables: AzureTablesTarget, azure_table: str, reference_store: Any
) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(AzureTablesBackend(azure_tables.connection_string, table=azure_table))
        await store.put_many(list(VALUES), list(VALUES.values()), collection=COLLECTION)  # one transaction
        await store.put("brief", {"v": 1}, collection=COLLECTION, ttl=100)  # one upsert
        for key, value in VALUES.items():
            assert await reference_store.get(key, collection=COLLECTION) == value
        # the reference reads the whole-second ExpiresAt, up to 1 s short, and a slow machine adds the calls' time
        assert_ttl(await reference_store.ttl("brief", collection=COLLECTION), {"v": 1}, 100, slack=2.5)
        assert await reference_store.get("missing", collection=COLLECTION) is None
        assert await reference_store.delete("brief", collection=COLLECTION) is True
        assert await store.get("brief", collection=COLLECTION) is None
        await reference_store.put("user-1", {"by": "reference"}, collection=COLLECTION)  # replaces kvrt's entity
        assert await store.get("user-1", collection=COLLECTION) == {"by": "reference"}
        assert await store.ttl("user-1", collection=COLLECTION) == ({"by": "reference"}, None)


async def test_a_value_past_64_kib_is_kvrts_alone_and_an_error_for_the_reference(
    azure_tables: AzureTablesTarget, azure_table: str, reference_store: Any
) -> None:
    big = {"s": "x" * 100_000}
    errors = reference_module("key_value.aio.errors")
    with pytest.raises(HttpResponseError, match="64KB"):  # the SDK's error, through the reference
        await reference_store.put("big", big, collection=COLLECTION)  # the service refuses its single Value
    async with Runtime() as runtime:
        store = await runtime.spawn(AzureTablesBackend(azure_tables.connection_string, table=azure_table))
        await store.put("big", big, collection=COLLECTION)  # Value, Value_1, ...
        assert await store.get("big", collection=COLLECTION) == big
    with pytest.raises(errors.DeserializationError):  # loudly: not a missing key
        await reference_store.get("big", collection=COLLECTION)
    assert await reference_store.delete("big", collection=COLLECTION) is True

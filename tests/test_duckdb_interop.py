"""The same database file, written by one library and read by the other (SPEC.md section 5).

DuckDB lets one process open a file for writing at a time, and each side here holds it open while
it runs, so one side is always closed before the other opens.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from kvrt import Runtime
from kvrt.backends.duckdb import DuckDBBackend
from kvrt.testing.conformance import assert_ttl, listing, same, sleep_past
from kvrt.testing.servers import reference_module

duckdb_store = reference_module("key_value.aio.stores.duckdb")

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore:A configured store is unstable")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# Values the reference writes faithfully (it hands DuckDB a dict, which DuckDB types as a STRUCT).
VALUES: dict[str, dict[str, Any]] = {
    "user-1": {"name": "Alice", "age": 30, "tags": ["a", "b"], "active": True},
    "user_2": {"nested": {"list": [1, 2, 3]}, "unicode": "héllo 🎉"},
    "floats": {"half": 0.5, "small": 1e-7},
}
# What kvrt writes, including values the reference could not write itself; it reads them all back.
KVRT_VALUES: dict[str, dict[str, Any]] = {
    **VALUES,
    "mixed": {"list": [1, "two", 3.5, None, {"k": []}], "big": 2**63 - 1, "zero": -0.0, "exp": 1e16},
    "empty": {},
    "a\x00'; DROP TABLE kv_entries; --": {"hostile": "name"},
}


async def test_kvrt_reads_what_the_reference_wrote(tmp_path: Path) -> None:
    path = tmp_path / "shared.duckdb"
    reference = duckdb_store.DuckDBStore(database_path=path)
    for key, value in VALUES.items():
        await reference.put(key, value, collection="users")
    await reference.put("brief", {"v": 1}, collection="users", ttl=100)
    await reference.put("gone", {"v": 2}, collection="users", ttl=0.2)
    await reference.put("other", {"v": 3}, collection="other")
    own_reading = {key: await reference.get(key, collection="users") for key in VALUES}
    await reference.close()
    await sleep_past(time.time() + 0.2)

    async with Runtime() as runtime:
        store = listing(await runtime.spawn(DuckDBBackend(path)))
        found = await store.get_many(list(VALUES), collection="users")
        assert found == list(VALUES.values())
        assert all(same(own_reading[key], value) for key, value in zip(VALUES, found, strict=True))
        assert_ttl(await store.ttl("brief", collection="users"), {"v": 1}, 100)
        assert await store.get("gone", collection="users") is None
        assert sorted(await store.keys("users")) == sorted([*VALUES, "brief"])
        assert sorted(await store.collections()) == ["other", "users"]
        await store.put("user-1", {"name": "Bob"}, collection="users", ttl=50)  # kvrt replaces the reference's row
        assert await store.delete("other", collection="other") is True

    reference = duckdb_store.DuckDBStore(database_path=path)
    try:
        assert_ttl(await reference.ttl("user-1", collection="users"), {"name": "Bob"}, 50)
        assert await reference.get("other", collection="other") is None
    finally:
        await reference.close()


async def test_the_reference_reads_what_kvrt_wrote(tmp_path: Path) -> None:
    path = tmp_path / "shared.duckdb"
    async with Runtime() as runtime:
        store = await runtime.spawn(DuckDBBackend(path))
        await store.put_many(list(KVRT_VALUES), list(KVRT_VALUES.values()), collection="users")
        await store.put("brief", {"v": 1}, collection="users", ttl=100)
        await store.put("gone", {"v": 2}, collection="users", ttl=0.2)
        await sleep_past(time.time() + 0.2)

    reference = duckdb_store.DuckDBStore(database_path=path)
    try:
        for key, value in KVRT_VALUES.items():
            assert same(value, await reference.get(key, collection="users")), key
        assert_ttl(await reference.ttl("brief", collection="users"), {"v": 1}, 100)
        assert await reference.get("gone", collection="users") is None, "expired by the expires_at kvrt wrote"
        assert await reference.get("missing", collection="users") is None
        await reference.put("brief", {"v": "theirs"}, collection="users")  # the reference replaces kvrt's row
    finally:
        await reference.close()

    async with Runtime() as runtime:
        store = await runtime.spawn(DuckDBBackend(path))
        assert await store.ttl("brief", collection="users") == ({"v": "theirs"}, None)


async def test_a_custom_table_is_the_same_table_for_both(tmp_path: Path) -> None:
    path = tmp_path / "shared.duckdb"
    async with Runtime() as runtime:
        store = await runtime.spawn(DuckDBBackend(path, table="my_entries"))
        await store.put("k", {"v": 1}, collection="c")

    reference = duckdb_store.DuckDBStore(database_path=path, table_name="my_entries", auto_create=False)
    try:
        assert await reference.get("k", collection="c") == {"v": 1}
    finally:
        await reference.close()
    with duckdb.connect(str(path), read_only=True) as connection:
        tables = connection.execute("SELECT table_name FROM information_schema.tables").fetchall()
        indexes = connection.execute("SELECT index_name FROM duckdb_indexes() ORDER BY 1").fetchall()
    assert tables == [("my_entries",)]
    assert indexes == [("idx_my_entries_collection",), ("idx_my_entries_expires_at",)], "the reference's indexes"

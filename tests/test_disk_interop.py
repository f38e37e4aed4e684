"""The same directory, written by one library and read by the other (SPEC.md section 5)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from kvrt import Runtime
from kvrt.backends.disk import DiskBackend
from kvrt.backends.layout import compound_key, split_compound_key
from kvrt.testing.conformance import assert_ttl, sleep_past
from kvrt.testing.servers import reference_module

disk_store = reference_module("key_value.aio.stores.disk")

pytestmark = pytest.mark.anyio

VALUES: dict[str, dict[str, Any]] = {
    "user-1": {"name": "Alice", "age": 30, "tags": ["a", "b"], "active": True},
    "user_2": {"nested": {"list": [1, 2.5, None]}, "unicode": "héllo 🎉"},
    "empty": {},
}


async def test_kvrt_reads_what_the_reference_wrote(tmp_path: Path) -> None:
    reference = disk_store.DiskStore(directory=tmp_path)
    for key, value in VALUES.items():
        await reference.put(key, value, collection="users")
    await reference.put("brief", {"v": 1}, collection="users", ttl=100)
    await reference.put("gone", {"v": 2}, collection="users", ttl=0.2)
    await reference.close()
    await sleep_past(time.time() + 0.2)

    async with Runtime() as runtime:
        store = await runtime.spawn(DiskBackend(tmp_path))
        assert await store.get_many(list(VALUES), collection="users") == list(VALUES.values())
        assert_ttl(await store.ttl("brief", collection="users"), {"v": 1}, 100)
        assert await store.get("gone", collection="users") is None
        assert sorted(await store.keys("users")) == sorted([*VALUES, "brief"])


async def test_the_reference_reads_what_kvrt_wrote(tmp_path: Path) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(DiskBackend(tmp_path))
        await store.put_many(list(VALUES), list(VALUES.values()), collection="users")
        await store.put("brief", {"v": 1}, collection="users", ttl=100)

    reference = disk_store.DiskStore(directory=tmp_path)
    try:
        for key, value in VALUES.items():
            assert await reference.get(key, collection="users") == value
        assert_ttl(await reference.ttl("brief", collection="users"), {"v": 1}, 100)
        assert await reference.get("missing", collection="users") is None
    finally:
        await reference.close()


def test_names_are_escaped_only_where_they_could_collide() -> None:
    assert compound_key("users", "u-1") == "users::u-1"
    assert compound_key("a::b", "c") != compound_key("a", "b::c")
    for collection, key in [("a::b", "c"), ("a", "b::c"), ("100%", "::"), ("%3A", "x"), (":", "")]:
        assert split_compound_key(compound_key(collection, key)) == (collection, key)
    assert split_compound_key("not kvrt's") is None
    assert split_compound_key(42) is None

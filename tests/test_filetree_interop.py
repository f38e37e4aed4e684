"""The same tree, written by one library and read by the other (SPEC.md section 5): the reference's FileTreeStore."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from kvrt import Runtime
from kvrt.backends.filetree import FileTreeBackend
from kvrt.handle import AttachedFullHandle
from kvrt.testing.conformance import assert_ttl, sleep_past
from kvrt.testing.servers import reference_module

filetree_store = reference_module("key_value.aio.stores.filetree")

pytestmark = pytest.mark.anyio

VALUES: dict[str, dict[str, Any]] = {
    "user-1": {"name": "Alice", "age": 30, "tags": ["a", "b"], "active": True},
    "user_2": {"nested": {"list": [1, 2.5, None]}, "unicode": "héllo 🎉"},
    "empty": {},
    "a.b c": {"v": 1},
    "ünïcødé 名前": {"v": 2},
    "!@#$%^&*()": {"v": 3},
    "k" * 250: {"v": 4},  # the longest key whose file name fits 255 bytes
}
COLLECTIONS = ["users", "with space", "ünï.c"]


async def spawn(runtime: Runtime, backend: FileTreeBackend, name: str = "filetree") -> AttachedFullHandle:
    """Spawn ``backend``: a handle with every segment, typed so even where the runtime's overloads omit this backend."""
    store = await runtime.spawn(backend, name=name)
    assert isinstance(store, AttachedFullHandle)
    return store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the reference's FileTreeStore runs on asyncio only


def _tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


async def test_kvrt_reads_what_the_reference_wrote(tmp_path: Path) -> None:
    reference = filetree_store.FileTreeStore(data_directory=tmp_path)
    for collection in COLLECTIONS:
        await reference.put_many(list(VALUES), list(VALUES.values()), collection=collection)
    await reference.put("brief", {"v": 1}, collection="users", ttl=100)
    await reference.put("gone", {"v": 2}, collection="users", ttl=0.2)
    await sleep_past(time.time() + 0.2)

    async with Runtime() as runtime:
        store = await spawn(runtime, FileTreeBackend(tmp_path))
        for collection in COLLECTIONS:
            assert await store.get_many(list(VALUES), collection=collection) == list(VALUES.values())
        assert_ttl(await store.ttl("brief", collection="users"), {"v": 1}, 100)
        assert await store.get("gone", collection="users") is None
        assert sorted(await store.keys("users")) == sorted([*VALUES, "brief"])
        assert sorted(await store.collections()) == sorted(COLLECTIONS)
        assert await store.delete("user-1", collection="users") is True
        await store.cull()
        assert not (tmp_path / "users" / "gone.json").exists(), "kvrt culls the reference's expired files"
        await store.put("from-kvrt", {"v": 3}, collection="users")

    assert await reference.get("user-1", collection="users") is None
    assert await reference.get("from-kvrt", collection="users") == {"v": 3}, "the reference still reads its tree"


async def test_the_reference_reads_what_kvrt_wrote(tmp_path: Path) -> None:
    async with Runtime() as runtime:
        store = await spawn(runtime, FileTreeBackend(tmp_path))
        for collection in COLLECTIONS:
            await store.put_many(list(VALUES), list(VALUES.values()), collection=collection)
        await store.put("brief", {"v": 1}, collection="users", ttl=100)
        await store.put("gone", {"v": 2}, collection="users", ttl=0.2)
        expiry = time.time() + 0.2

    reference = filetree_store.FileTreeStore(data_directory=tmp_path)
    for collection in COLLECTIONS:
        assert await reference.get_many(list(VALUES), collection=collection) == list(VALUES.values())
    assert_ttl(await reference.ttl("brief", collection="users"), {"v": 1}, 100)
    assert await reference.get("missing", collection="users") is None
    await sleep_past(expiry)
    assert await reference.get("gone", collection="users") is None
    await reference.cull()
    assert not (tmp_path / "users" / "gone.json").exists(), "the reference culls kvrt's expired files"
    await reference.put("from-reference", {"v": 3}, collection="users")  # into the directory kvrt's metadata names

    async with Runtime() as runtime:
        store = await spawn(runtime, FileTreeBackend(tmp_path))
        assert await store.get("from-reference", collection="users") == {"v": 3}


async def test_both_lay_out_the_same_tree(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "kvrt", tmp_path / "reference"
    async with Runtime() as runtime:
        store = await spawn(runtime, FileTreeBackend(ours))
        for collection in COLLECTIONS:
            await store.put_many(list(VALUES), list(VALUES.values()), collection=collection, ttl=60)
    reference = filetree_store.FileTreeStore(data_directory=theirs)
    for collection in COLLECTIONS:
        await reference.put_many(list(VALUES), list(VALUES.values()), collection=collection, ttl=60)

    assert _tree(ours) == _tree(theirs)
    for collection in COLLECTIONS:
        mine = json.loads((ours / f"{collection}-info.json").read_text())
        its = json.loads((theirs / f"{collection}-info.json").read_text())
        assert set(mine) == set(its)
        assert mine["collection"] == its["collection"] == collection
        assert Path(mine["directory"]).relative_to(ours.resolve()) == Path(its["directory"]).relative_to(theirs)
        for key in VALUES:
            name = f"{key}.json"
            document = json.loads((ours / collection / name).read_text())
            their_document = json.loads((theirs / collection / name).read_text())
            assert set(their_document) <= set(document), "kvrt's document adds only key and collection"
            assert set(document) - set(their_document) == {"key", "collection"}
            assert document["value"] == their_document["value"]


async def test_both_open_on_one_tree_see_each_others_writes(tmp_path: Path) -> None:
    reference = filetree_store.FileTreeStore(data_directory=tmp_path)
    async with Runtime() as runtime:
        store = await spawn(runtime, FileTreeBackend(tmp_path))
        await store.put("k", {"by": "kvrt"}, collection="shared", ttl=100)
        assert await reference.get("k", collection="shared") == {"by": "kvrt"}
        await reference.put("k", {"by": "reference"}, collection="shared")
        assert await store.ttl("k", collection="shared") == ({"by": "reference"}, None)
        await reference.put("r", {"v": 1}, collection="theirs", ttl=100)
        assert_ttl(await store.ttl("r", collection="theirs"), {"v": 1}, 100)
        assert sorted(await store.collections()) == ["shared", "theirs"]

"""The per-collection variant of the disk backend: one diskcache directory per collection."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvrt import Runtime
from kvrt.backends.multi_disk import MultiDiskBackend, collection_directory, directory_collection
from kvrt.testing import ConformanceSuite
from kvrt.testing.conformance import assert_ttl
from kvrt.testing.servers import reference_module

multi_store = reference_module("key_value.aio.stores.disk.multi_store")

AWKWARD = ["..", ".", "../escape", "/etc", "a/b", "a%2Fb", "a.b", "%%x", "émoji 🎉", "x" * 1000, "c" * 200]


class TestMultiDiskConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> MultiDiskBackend:
        return MultiDiskBackend(tmp_path / "base")


def test_directory_names_stay_inside_the_base_and_round_trip(tmp_path: Path) -> None:
    names = [collection_directory(collection) for collection in AWKWARD]
    assert len(set(names)) == len(AWKWARD), "no two collections share a directory"
    for collection, name in zip(AWKWARD, names, strict=True):
        assert name not in ("", ".", "..")
        assert "/" not in name
        assert len(name) <= 200
        if not name.startswith("%%"):
            assert directory_collection(tmp_path / name) == collection
    assert collection_directory("users_1-a") == "users_1-a", "simple names are the reference's directories"
    assert directory_collection(tmp_path / "a.b") is None, "another tool's name is not taken for kvrt's"


def _check_layout(root: Path, base: Path) -> None:
    assert [path.name for path in root.iterdir()] == [base.name], "nothing written outside the base directory"
    caches = sorted(base.rglob("cache.db"))
    assert caches == sorted(base.glob("*/cache.db")), "each cache directly under the base"
    assert len(caches) == len(AWKWARD)


@pytest.mark.anyio
async def test_awkward_collections_live_in_their_own_directories_and_persist(tmp_path: Path) -> None:
    base = tmp_path / "base"
    async with Runtime() as runtime:
        store = await runtime.spawn(MultiDiskBackend(base))
        for index, collection in enumerate(AWKWARD):
            await store.put("k", {"i": index}, collection=collection)
    _check_layout(tmp_path, base)

    async with Runtime() as runtime:  # a fresh runtime finds every collection on disk
        store = await runtime.spawn(MultiDiskBackend(base))
        assert sorted(await store.collections()) == sorted(AWKWARD)
        for index, collection in enumerate(AWKWARD):
            assert await store.get("k", collection=collection) == {"i": index}
        assert await store.destroy_collection("../escape") is True
        assert await store.get("k", collection="../escape") is None
        assert await store.get("k", collection="..") == {"i": 0}


@pytest.mark.anyio
async def test_kvrt_and_the_reference_read_each_others_collections(tmp_path: Path) -> None:
    reference = multi_store.MultiDiskStore(base_directory=tmp_path)
    await reference.put("from-reference", {"v": 1}, collection="users")
    await reference.close()

    async with Runtime() as runtime:
        store = await runtime.spawn(MultiDiskBackend(tmp_path))
        assert await store.get("from-reference", collection="users") == {"v": 1}
        await store.put("from-kvrt", {"v": 2}, collection="users", ttl=100)
        await store.put("plain", {"v": 3}, collection="default_collection")

    reference = multi_store.MultiDiskStore(base_directory=tmp_path)
    try:
        assert await reference.get("from-kvrt", collection="users") == {"v": 2}
        assert_ttl(await reference.ttl("from-kvrt", collection="users"), {"v": 2}, 100)
        assert await reference.get("plain") == {"v": 3}
    finally:
        await reference.close()

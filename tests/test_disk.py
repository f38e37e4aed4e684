from __future__ import annotations

import time
from pathlib import Path

import diskcache
import pytest

from kvrt import Runtime
from kvrt.backends.disk import DiskBackend
from kvrt.testing import ConformanceSuite


class TestDiskConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> DiskBackend:
        return DiskBackend(tmp_path / "cache")


@pytest.mark.anyio
async def test_a_size_limit_evicts_the_oldest_writes_first(tmp_path: Path) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(DiskBackend(tmp_path, size_limit=300_000))
        for start in range(0, 3000, 100):
            names = [f"k{i:04}" for i in range(start, start + 100)]
            await store.put_many(names, [{"pad": "x" * 1000}] * 100)
        kept = await store.keys()
        assert 100 < len(kept) < 3000, "a batch evicts what it must, not everything"
        assert "k2999" in kept, "the newest write stays"
        assert "k0000" not in kept, "the oldest write went first"
        assert await store.get("k2999") == {"pad": "x" * 1000}


@pytest.mark.anyio
async def test_under_least_recently_used_a_read_keeps_an_entry(tmp_path: Path) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(DiskBackend(tmp_path, size_limit=300_000, eviction_policy="least-recently-used"))
        for start in range(0, 1000, 10):
            names = [f"k{i:04}" for i in range(start, start + 10)]
            await store.put_many(names, [{"pad": "x" * 1000}] * 10)
            assert await store.get("k0000") == {"pad": "x" * 1000}, "read after every batch: never the least recent"
        kept = await store.keys()
        assert 100 < len(kept) < 1000, "a batch evicts what it must, not everything"
        assert "k0001" not in kept


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        DiskBackend()
    with pytest.raises(ValueError, match="positive"):
        DiskBackend(tmp_path, size_limit=0)


@pytest.mark.anyio
async def test_a_batch_writes_the_rows_diskcache_set_would(tmp_path: Path) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(DiskBackend(tmp_path / "kvrt"))
        await store.put_many(["a", "b"], [{"v": 1}, {"v": 2}], collection="c")
        await store.put_many(["b", "c"], [{"v": 3}, {"v": 4}], collection="c", ttl=60)  # replaces b
    ours = diskcache.Cache(str(tmp_path / "kvrt"))
    theirs = diskcache.Cache(str(tmp_path / "diskcache"))
    try:
        for name in ours.iterkeys():
            theirs.set(name, ours.get(name))
        assert len(ours) == 3, "diskcache's own count of rows"
        rows = "SELECT key, raw, access_count, tag, size, mode, filename, value FROM Cache ORDER BY key"
        assert ours._sql(rows).fetchall() == theirs._sql(rows).fetchall()
        expiry = dict(ours._sql("SELECT key, expire_time FROM Cache").fetchall())
        assert expiry["c::a"] is None
        assert time.time() + 55 < expiry["c::c"] <= time.time() + 60
    finally:
        ours.close()
        theirs.close()


@pytest.mark.anyio
async def test_a_document_in_a_file_of_its_own_is_replaced_without_leaving_the_file(tmp_path: Path) -> None:
    big = {"pad": "x" * 40_000}  # past diskcache's 32 KiB: a file of its own

    def files() -> list[Path]:
        return [path for path in tmp_path.rglob("*.val")]

    async with Runtime() as runtime:
        store = await runtime.spawn(DiskBackend(tmp_path))
        await store.put_many(["big", "small"], [big, {"v": 1}])
        assert len(files()) == 1
        assert await store.get("big") == big
        await store.put_many(["big", "other"], [{"v": 2}, {"v": 3}])
        assert files() == []
        assert await store.get_many(["big", "small", "other"]) == [{"v": 2}, {"v": 1}, {"v": 3}]


@pytest.mark.anyio
async def test_bulk_calls_of_300k_keys_succeed(tmp_path: Path) -> None:
    """Past SQLite's bound on variables in one statement (32,766 in stock builds; 999 in old ones)."""
    keys = [f"k{number}" for number in range(300_000)]
    async with Runtime() as runtime:
        store = await runtime.spawn(DiskBackend(tmp_path / "cache"))
        await store.put_many(keys, [{"n": number} for number in range(len(keys))])
        found = await store.get_many(keys)
        assert found[0] == {"n": 0}
        assert found[-1] == {"n": len(keys) - 1}
        assert None not in found
        assert await store.delete_many(keys) == len(keys)
        assert await store.get_many(keys[:5]) == [None] * 5

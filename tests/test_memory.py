from __future__ import annotations

import time

import pytest

from kvrt import CullPolicy, Runtime
from kvrt.backends.memory import MemoryBackend
from kvrt.testing import ConformanceSuite
from kvrt.testing.conformance import eventually, raw_get, sleep_past


class TestMemoryConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self) -> MemoryBackend:
        return MemoryBackend()


@pytest.mark.anyio
async def test_least_recently_used_goes_first() -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(MemoryBackend(max_entries_per_collection=3))
        await store.put_many(["a", "b", "c"], [{"v": 1}, {"v": 2}, {"v": 3}])
        assert await store.get("a") == {"v": 1}  # now "b" is the least recently used
        await store.put("d", {"v": 4})
        assert await store.get_many(["a", "b", "c", "d"]) == [{"v": 1}, None, {"v": 3}, {"v": 4}]
        await store.put("x", {"v": 0}, collection="other")
        assert await store.get("a") == {"v": 1}, "the bound is per collection"


def test_bound_must_be_a_positive_int() -> None:
    for bad in (0, -1, 1.5, None):
        with pytest.raises(ValueError, match="positive int"):
            MemoryBackend(max_entries_per_collection=bad)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_expired_entries_are_culled_in_the_background() -> None:
    async with Runtime(cull=CullPolicy(interval=0.05, budget=100)) as runtime:
        store = await runtime.spawn(MemoryBackend(max_entries_per_collection=5000), name="m")
        await store.put_many([f"k{i}" for i in range(1000)], [{"i": i} for i in range(1000)], ttl=0.2)
        await store.put("kept", {"v": 1})
        await sleep_past(time.time() + 0.2)
        await eventually(lambda: runtime.stats()["m"].culled >= 1000)
        assert await raw_get(store, "default_collection", "k7") is None
        assert await store.get("kept") == {"v": 1}
        assert runtime.stats()["m"].culled == 1000


@pytest.mark.anyio
async def test_overwritten_and_deleted_entries_leave_no_expiry_records() -> None:
    backend = MemoryBackend()
    far = time.time() + 1000
    for round_number in range(50):
        await backend.put_many("c", [f"k{i}" for i in range(100)], [b"{}"] * 100, [far + round_number] * 100)
    await backend.delete_many("c", [f"k{i}" for i in range(50)])
    stored = backend._collections["c"]
    assert sum(len(bucket) for bucket in stored.buckets.values()) == 50
    assert len(stored.expiries) == 50


@pytest.mark.anyio
async def test_a_cull_step_does_at_most_its_budget_of_work() -> None:
    backend = MemoryBackend()
    past = time.time() - 5
    await backend.put_many("c", [f"k{i}" for i in range(31)], [b"{}"] * 31, [past] * 31)
    removed, done = await backend.cull(10)
    assert (removed, done) == (10, False)
    total = removed
    while not done:
        removed, done = await backend.cull(10)
        total += removed
    assert total == 31
    assert await backend.collections(None) == []


@pytest.mark.anyio
async def test_stored_entries_are_invisible_to_the_garbage_collector() -> None:
    import gc

    backend = MemoryBackend()
    await backend.put_many("c", [f"k{i}" for i in range(1000)], [b"{}"] * 1000, [time.time() + 60] * 1000)
    stored = backend._collections["c"]
    assert not gc.is_tracked(stored.documents)
    assert not gc.is_tracked(stored.expiries)
    assert not any(gc.is_tracked(bucket) for bucket in stored.buckets.values())


@pytest.mark.anyio
async def test_a_full_collection_drops_expired_entries_before_live_ones() -> None:
    backend = MemoryBackend(max_entries_per_collection=3)
    soon = time.time() + 0.05
    await backend.put_many("c", ["live"], [b"{}"], [None])
    await backend.put_many("c", ["brief1", "brief2"], [b"{}", b"{}"], [soon, soon])
    await sleep_past(soon)
    await backend.put_many("c", ["new"], [b"{}"], [None])
    assert await backend.get_many("c", ["live", "new"]) == [b"{}", b"{}"]


@pytest.mark.anyio
async def test_collections_of_only_expired_entries_are_gone() -> None:
    backend = MemoryBackend()
    soon = time.time() + 0.05
    await backend.put_many("tmp", ["a"], [b"{}"], [soon])
    await backend.put_many("kept", ["a"], [b"{}"], [None])
    await sleep_past(soon)
    assert await backend.collections(None) == ["kept"]
    assert await backend.destroy_collection("tmp") is False
    assert await backend.destroy() is True


def _index_size(backend: MemoryBackend, collection: str) -> tuple[int, int, int]:
    """The expiry index of ``collection``: heap records, keys in buckets, and live entries."""
    stored = backend._collections[collection]
    return len(stored.bucket_ids), sum(map(len, stored.buckets.values())), len(stored.documents)


@pytest.mark.anyio
async def test_re_puts_keep_the_expiry_index_within_twice_the_live_entries() -> None:
    """500k re-puts over 8 keys with a TTL: each key overwritten again and again, alone in its bucket."""
    backend = MemoryBackend()
    expiry = time.time() + 3600
    for key in range(8):
        for _ in range(62_500):
            await backend.put_many("c", [f"k{key}"], [b"{}"], [expiry])
        expiry += 2.0  # the next key expires in another bucket
    heap, scheduled, live = _index_size(backend, "c")
    assert live == 8
    assert scheduled == 8
    assert heap <= 2 * live
    async with Runtime() as runtime:  # and through a handle, every put a fresh TTL
        store = await runtime.spawn(MemoryBackend(), name="m")
        for _ in range(20_000):
            await store.put("k", {"v": 1}, ttl=3600)
        assert await store.get("k") == {"v": 1}
        heap, scheduled, live = _index_size(runtime._workers["m"].backend, "default_collection")  # type: ignore[arg-type]
        assert (scheduled, live) == (1, 1)
        assert heap <= 2

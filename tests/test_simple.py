from __future__ import annotations

import time
from typing import Any

import pytest

from kvrt import Runtime
from kvrt.backends.simple import SimpleBackend
from kvrt.protocol import AsyncKeyValue
from kvrt.testing import ConformanceSuite
from kvrt.testing.conformance import listing, sleep_past
from kvrt.testing.servers import reference_module

pytestmark = pytest.mark.anyio


class TestSimpleConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self) -> SimpleBackend:
        return SimpleBackend()


async def live(store: AsyncKeyValue, names: list[str], collection: str = "c") -> list[str]:
    found = await store.get_many(names, collection=collection)
    return [name for name, value in zip(names, found, strict=True) if value is not None]


async def test_a_full_store_evicts_the_entry_written_first() -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(SimpleBackend(max_entries=3))
        await store.put_many(["a", "b", "c"], [{"v": 1}, {"v": 2}, {"v": 3}], collection="c")
        assert await store.get("a", collection="c") == {"v": 1}, "a read refreshes nothing"
        await store.put("a", {"v": 10}, collection="c")  # an overwrite keeps its place, and evicts nothing
        assert await live(store, ["a", "b", "c"]) == ["a", "b", "c"]
        await store.put("d", {"v": 4}, collection="c")
        assert await live(store, ["a", "b", "c", "d"]) == ["b", "c", "d"]
        assert await store.delete("b", collection="c") is True
        await store.put("a", {"v": 11}, collection="c")  # room left by the delete: no eviction
        assert await live(store, ["a", "b", "c", "d"]) == ["a", "c", "d"]
        await store.put("e", {"v": 5}, collection="c")
        assert await live(store, ["a", "c", "d", "e"]) == ["a", "d", "e"], "a rewritten deleted key is new"


async def test_the_bound_is_shared_by_every_collection() -> None:
    async with Runtime() as runtime:
        store = listing(await runtime.spawn(SimpleBackend(max_entries=2)))
        await store.put("k", {"v": 1}, collection="one")
        await store.put("k", {"v": 2}, collection="two")
        await store.put("k", {"v": 3}, collection="three")
        assert await store.get("k", collection="one") is None
        assert sorted(await store.collections()) == ["three", "two"]


async def test_a_batch_larger_than_the_bound_keeps_its_last_entries() -> None:
    async with Runtime() as runtime:
        store = listing(await runtime.spawn(SimpleBackend(max_entries=3)))
        names = [f"k{i}" for i in range(10)]
        await store.put_many(names, [{"i": i} for i in range(10)], collection="c")
        assert await store.keys("c") == ["k7", "k8", "k9"]


async def test_an_expired_entry_is_evicted_before_any_live_one() -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(SimpleBackend(max_entries=3))
        await store.put_many(["old", "older"], [{"v": 1}, {"v": 2}], collection="c")
        await store.put("brief", {"v": 3}, collection="c", ttl=0.2)
        expiry = time.time() + 0.2
        await sleep_past(expiry)
        await store.put("new", {"v": 4}, collection="c")
        assert await live(store, ["old", "older", "new"]) == ["old", "older", "new"]


async def test_cull_steps_through_expired_entries_within_its_budget() -> None:
    backend = SimpleBackend()
    past = time.time() - 1
    await backend.put_many("c", [f"e{i}" for i in range(10)], [b"{}"] * 10, [past] * 10)
    await backend.put_many("c", ["e0", "keep"], [b"{}"] * 2, [None, time.time() + 100])  # e0's record goes stale
    assert await backend.cull(4) == (3, False), "four records looked at, one of them stale"
    assert await backend.cull(100) == (6, True)
    assert await backend.cull(100) == (0, True)
    assert sorted(await backend.keys("c", None)) == ["e0", "keep"]


async def test_the_schedule_stays_within_twice_the_entries_that_expire() -> None:
    backend = SimpleBackend()
    for _ in range(1000):
        await backend.put_many("c", ["k"], [b"{}"], [time.time() + 100])
    assert len(backend._schedule) <= 2 * len(backend._expiries) + 64


def test_bad_bounds_are_refused() -> None:
    for bound in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="max_entries"):
            SimpleBackend(max_entries=bound)  # type: ignore[arg-type]


STEPS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("put", "a", {"v": 1}),
    ("put", "b", {"v": 2}),
    ("put", "c", {"v": 3}),
    ("put", "a", {"v": 4}),
    ("put", "d", {"v": 5}),
    ("delete", "c", None),
    ("put", "e", {"v": 6}),
    ("put", "f", {"v": 7}),
    ("put", "b", {"v": 8}),
    ("put", "g", {"v": 9}),
]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.filterwarnings("ignore:A configured store is unstable")
async def test_evicts_what_the_references_simple_store_evicts() -> None:
    simple_store = reference_module("key_value.aio.stores.simple")
    reference = simple_store.SimpleStore(max_entries=3)
    async with Runtime() as runtime:
        store = listing(await runtime.spawn(SimpleBackend(max_entries=3)))
        for step, key, value in STEPS:
            if step == "put":
                assert value is not None
                await reference.put(key, value, collection="c")
                await store.put(key, value, collection="c")
            else:
                assert await store.delete(key, collection="c") == await reference.delete(key, collection="c")
            names = list("abcdefg")
            theirs = await reference.get_many(names, collection="c")
            assert await store.get_many(names, collection="c") == theirs, f"after {step} {key}"
        assert await store.keys("c") == await reference.keys("c")

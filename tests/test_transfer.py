"""kvrt.transfer.copy: entries with their remaining TTLs, in batches, skipping the expired, counting the refused."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from kvrt import Runtime
from kvrt.backends.disk import DiskBackend
from kvrt.backends.memory import MemoryBackend
from kvrt.backends.null import NullBackend
from kvrt.errors import ReadOnlyError
from kvrt.protocol import AsyncKeyValue
from kvrt.testing.conformance import raw_put, sleep_past
from kvrt.testing.servers import reference_module
from kvrt.transfer import SHOWN_FAILURES, CopySummary, UnlistableSourceError, copy
from kvrt.wrappers.base import BaseWrapper
from kvrt.wrappers.limit_size import LimitSizeWrapper
from kvrt.wrappers.read_only import ReadOnlyWrapper

pytestmark = pytest.mark.anyio


def value(index: int) -> dict[str, Any]:
    return {"i": index, "name": f"entry {index}"}


async def test_copies_every_collection_memory_to_disk_with_remaining_ttls(tmp_path: Path) -> None:
    async with Runtime() as runtime:
        source = await runtime.spawn(MemoryBackend(), name="source")
        destination = await runtime.spawn(DiskBackend(tmp_path), name="destination")
        await source.put_many([f"k{i}" for i in range(25)], [value(i) for i in range(25)], collection="plain")
        await source.put_many([f"t{i}" for i in range(10)], [value(i) for i in range(10)], collection="ttl", ttl=100)
        for i in range(5):  # each with an expiry of its own
            await source.put(f"own{i}", value(i), collection="ttl", ttl=200 + 10 * i)
        seen: list[int] = []
        summary = await copy(source, destination, batch=7, progress=lambda progress: seen.append(progress.done))

        assert sorted(summary.collections) == ["plain", "ttl"]
        assert (summary.listed, summary.copied, summary.expired, summary.failed) == (40, 40, 0, 0)
        assert not summary.interrupted
        assert not summary.failures
        assert seen[-1] == 40
        assert len(seen) >= 40 // 7
        assert sorted(await destination.keys("plain")) == sorted(f"k{i}" for i in range(25))
        assert await destination.ttl_many([f"k{i}" for i in range(25)], collection="plain") == [
            (value(i), None) for i in range(25)
        ]
        for key in [f"t{i}" for i in range(10)] + [f"own{i}" for i in range(5)]:
            found, left = await destination.ttl(key, collection="ttl")
            expected, source_left = await source.ttl(key, collection="ttl")
            assert found == expected
            assert left is not None
            assert source_left is not None
            assert source_left - 1 < left <= source_left + 0.01, key  # the time it has left, never more


async def test_only_the_collections_asked_for(tmp_path: Path) -> None:
    async with Runtime() as runtime:
        source = await runtime.spawn(MemoryBackend(), name="source")
        destination = await runtime.spawn(DiskBackend(tmp_path), name="destination")
        for collection in ("a", "b", "c"):
            await source.put_many(["x", "y"], [value(1), value(2)], collection=collection)
        summary = await copy(source, destination, ["c", "a", "c", "absent"])
        assert summary.collections == ["c", "a", "absent"]
        assert (summary.listed, summary.copied) == (4, 4)
        assert sorted(await destination.collections()) == ["a", "c"]


class ListsThenWaits(BaseWrapper):
    """Lists keys, then lets the wall clock pass ``until``: what a slow copy sees of entries that expire meanwhile."""

    def __init__(self, key_value: AsyncKeyValue, until: float) -> None:
        self.key_value = key_value
        self.until = until
        super().__init__()

    async def _keys(self, collection: str | None, limit: int | None) -> list[str]:
        keys = await super()._keys(collection, limit)
        await sleep_past(self.until)
        return keys


async def test_entries_that_expire_meanwhile_are_skipped(tmp_path: Path) -> None:
    async with Runtime() as runtime:
        memory = await runtime.spawn(MemoryBackend(), name="source")
        destination = await runtime.spawn(MemoryBackend(), name="destination")
        await memory.put_many(["stays1", "stays2"], [value(1), value(2)], collection="c")
        await memory.put_many(["brief1", "brief2", "brief3"], [value(3)] * 3, collection="c", ttl=0.3)
        source = ListsThenWaits(memory, time.time() + 0.3)
        summary = await copy(source, destination, ["c"])
        assert (summary.listed, summary.copied, summary.expired, summary.failed) == (5, 2, 3, 0)
        assert sorted(await destination.keys("c")) == ["stays1", "stays2"]


class SlowToWrite(BaseWrapper):
    """Holds its first write until the wall clock passes ``until``: a destination slower than the entries' TTLs."""

    def __init__(self, key_value: AsyncKeyValue, until: float) -> None:
        self.key_value = key_value
        self.until = until
        super().__init__()

    async def put_many(self, keys: Any, values: Any, *, collection: str | None = None, ttl: Any = None) -> None:
        await sleep_past(self.until)
        await super().put_many(keys, values, collection=collection, ttl=ttl)


async def test_entries_that_expire_between_read_and_write_are_skipped() -> None:
    async with Runtime() as runtime:
        source = await runtime.spawn(MemoryBackend(), name="source")
        memory = await runtime.spawn(MemoryBackend(), name="destination")
        await source.put_many(["stays1", "stays2"], [value(1), value(2)], collection="c")
        await source.put_many(["brief1", "brief2"], [value(3)] * 2, collection="c", ttl=0.5)
        # the second batch is read (live) while the first is written, and has expired once its turn comes
        summary = await copy(source, SlowToWrite(memory, time.time() + 0.5), ["c"], batch=2)
        assert (summary.listed, summary.copied, summary.expired, summary.failed) == (4, 2, 2, 0)
        assert sorted(await memory.keys("c")) == ["stays1", "stays2"]


async def test_a_refused_entry_is_counted_with_its_reason_and_the_rest_copied() -> None:
    async with Runtime() as runtime:
        source = await runtime.spawn(MemoryBackend(), name="source")
        memory = await runtime.spawn(MemoryBackend(), name="destination")
        keys = [f"k{i}" for i in range(20)]
        values = [{"big": "x" * 500} if i in (3, 11) else value(i) for i in range(20)]
        await source.put_many(keys, values, collection="c", ttl=100)
        destination = LimitSizeWrapper(memory, max_size=200)
        summary = await copy(source, destination, ["c"], batch=8)
        assert (summary.listed, summary.copied, summary.expired, summary.failed) == (20, 18, 0, 2)
        assert summary.errors == {"EntryTooLargeError": 2}
        assert sorted(failure.key for failure in summary.failures) == ["k11", "k3"]
        failure = summary.failures[0]
        assert failure.collection == "c"
        assert failure.error == "EntryTooLargeError"
        assert "larger than the limit" in failure.reason
        assert "max_size: 200" in failure.reason
        assert "xxxx" not in str(summary.as_json())  # never a value
        assert sorted(await memory.keys("c")) == sorted(key for key in keys if key not in ("k3", "k11"))
        _, left = await memory.ttl("k0", collection="c")
        assert left is not None
        assert 99 < left <= 100


async def test_failures_are_named_up_to_a_bound_and_all_counted() -> None:
    count = SHOWN_FAILURES + 20
    async with Runtime() as runtime:
        source = await runtime.spawn(MemoryBackend(), name="source")
        memory = await runtime.spawn(MemoryBackend(), name="destination")
        await source.put_many([f"k{i}" for i in range(count)], [{"big": "x" * 300}] * count, collection="c")
        summary = await copy(source, LimitSizeWrapper(memory, max_size=100), ["c"])
        assert summary.failed == count
        assert summary.errors == {"EntryTooLargeError": count}
        assert len(summary.failures) == SHOWN_FAILURES


async def test_an_entry_that_cannot_be_read_is_counted_and_its_batch_copied() -> None:
    async with Runtime() as runtime:
        source = await runtime.spawn(MemoryBackend(), name="source")
        destination = await runtime.spawn(MemoryBackend(), name="destination")
        await source.put_many(["a", "b", "c"], [value(1), value(2), value(3)], collection="c")
        await raw_put(source, "c", "broken", b"not json")
        summary = await copy(source, destination, ["c"])
        assert (summary.listed, summary.copied, summary.failed) == (4, 3, 1)
        assert summary.errors == {"DeserializationError": 1}
        assert summary.failures[0].key == "broken"
        assert sorted(await destination.keys("c")) == ["a", "b", "c"]


async def test_stop_ends_after_the_batch_in_flight_and_copying_again_completes() -> None:
    async with Runtime() as runtime:
        source = await runtime.spawn(MemoryBackend(), name="source")
        destination = await runtime.spawn(MemoryBackend(), name="destination")
        await source.put_many([f"k{i}" for i in range(50)], [value(i) for i in range(50)], collection="c")
        stop = anyio.Event()

        def stop_once_started(summary: CopySummary) -> None:
            if summary.done:
                stop.set()

        first = await copy(source, destination, batch=10, progress=stop_once_started, stop=stop)
        assert first.interrupted
        assert (first.listed, first.copied) == (50, 10)
        assert len(await destination.keys("c")) == 10
        again = await copy(source, destination, batch=10)
        assert not again.interrupted
        assert again.copied == 50
        assert await destination.get_many([f"k{i}" for i in range(50)], collection="c") == [value(i) for i in range(50)]


async def test_a_read_only_destination_stops_the_copy_and_the_summary_keeps_the_counts() -> None:
    async with Runtime() as runtime:
        source = await runtime.spawn(MemoryBackend(), name="source")
        destination = await runtime.spawn(MemoryBackend(), name="destination")
        for i in range(3):  # expiries of their own: written at once, the first refusal stops the others
            await source.put(f"k{i}", value(i), collection="b", ttl=100 + i)
        summary = CopySummary()
        with pytest.raises(ReadOnlyError):  # as itself, not in an exception group
            await copy(source, ReadOnlyWrapper(destination), summary=summary)
        assert (summary.listed, summary.copied, summary.failed) == (3, 0, 0)
        assert summary.seconds > 0


async def test_a_source_that_cannot_list_is_refused() -> None:
    async with Runtime() as runtime:
        null = await runtime.spawn(NullBackend(), name="null")
        destination = await runtime.spawn(MemoryBackend(), name="destination")
        with pytest.raises(UnlistableSourceError, match="cannot list its keys"):
            await copy(null, destination, ["c"])

        class KeysOnly(BaseWrapper):
            def _segments(self) -> frozenset[str]:
                return frozenset({"keys"})

        keys_only = KeysOnly(await runtime.spawn(MemoryBackend(), name="source"))
        with pytest.raises(UnlistableSourceError, match="-c COLLECTION"):
            await copy(keys_only, destination)
        assert (await copy(keys_only, destination, ["c"])).listed == 0
        with pytest.raises(ValueError, match="batch"):
            await copy(keys_only, destination, ["c"], batch=0)


async def test_the_reference_disk_store_directory_is_copied(tmp_path: Path) -> None:
    disk_store = reference_module("key_value.aio.stores.disk")
    reference = disk_store.DiskStore(directory=tmp_path)
    await reference.put("alice", {"name": "Alice"}, collection="users")
    await reference.put("bob", {"name": "Bob"}, collection="users", ttl=100)
    await reference.put("s1", {"open": True}, collection="sessions", ttl=50)
    await reference.close()
    async with Runtime() as runtime:
        source = await runtime.spawn(DiskBackend(tmp_path), name="source")
        destination = await runtime.spawn(MemoryBackend(), name="destination")
        summary = await copy(source, destination)
        assert sorted(summary.collections) == ["sessions", "users"]
        assert summary.copied == 3
        assert await destination.ttl("alice", collection="users") == ({"name": "Alice"}, None)
        found, left = await destination.ttl("s1", collection="sessions")
        assert found == {"open": True}
        assert left is not None
        assert 49 < left <= 50

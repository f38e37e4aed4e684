"""The RocksDB backend: the conformance suite, batching counted by RocksDB itself, culling, names, ownership."""

from __future__ import annotations

import logging
import pickle
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from rocksdict import Options, Rdict

from kvrt import Runtime
from kvrt.backends.rocksdb import RocksDBBackend
from kvrt.entry import Stamp, encode_entry
from kvrt.errors import DeserializationError, StoreSetupError
from kvrt.testing import ConformanceSuite
from kvrt.testing.conformance import NAMES, eventually, listing, sleep_past

HOSTILE = [*NAMES.values(), "nul\x00inside", "\x00", "x" * 1000, "%%hashed-looking", "a::b", ":", "%3A", "default"]


class TestRocksDBConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> RocksDBBackend:
        return RocksDBBackend(tmp_path / "db")


class Counted:
    """A real Rdict opened with RocksDB's statistics on: RocksDB's own count of writes and multi-gets."""

    def __init__(self, path: Path) -> None:
        self.options = Options()
        self.options.create_if_missing(True)
        self.options.enable_statistics()
        self.db = Rdict(str(path), options=self.options)

    def ticker(self, name: str) -> int:
        statistics = self.options.get_statistics()
        assert statistics is not None
        found = re.search(rf"^rocksdb\.{re.escape(name)} COUNT : (\d+)$", statistics, re.M)
        assert found is not None, name
        return int(found.group(1))

    def counts(self) -> dict[str, int]:
        names = ("write.self", "number.keys.written", "number.multiget.get", "number.multiget.keys.read", "wal.synced")
        return {name: self.ticker(name) for name in names}

    def since(self, before: dict[str, int]) -> dict[str, int]:
        return {name: count - before[name] for name, count in self.counts().items()}


@pytest.fixture
def counted(tmp_path: Path) -> Iterator[Counted]:
    counted = Counted(tmp_path / "counted")
    yield counted
    counted.db.close()


pytestmark = pytest.mark.anyio


async def cull_pass(backend: RocksDBBackend, budget: int) -> list[tuple[int, bool]]:
    """Cull until the backend says it is done; return every step's answer (at most 100 steps)."""
    steps = [await backend.cull(budget)]
    while not steps[-1][1]:
        assert len(steps) < 100, "culling never finished its pass"
        steps.append(await backend.cull(budget))
    return steps


def document(expires_at: float | None) -> bytes:
    """A stored document, as the worker would hand it over, expiring at ``expires_at``."""
    stamp = Stamp(datetime.now(UTC).isoformat(), None, None)
    if expires_at is not None:
        stamp = Stamp(stamp.created_at, datetime.fromtimestamp(expires_at, UTC).isoformat(), expires_at)
    return encode_entry("k", "c", b"{}", stamp)


async def put(backend: RocksDBBackend, collection: str, keys: list[str], expires_at: float | None) -> None:
    await backend.put_many(collection, keys, [document(expires_at)] * len(keys), [expires_at] * len(keys))


async def test_a_batch_is_one_write_batch_or_one_multi_get(counted: Counted) -> None:
    names = [f"k{i}" for i in range(300)]
    async with Runtime() as runtime:
        store = await runtime.spawn(RocksDBBackend(db=counted.db))
        before = counted.counts()
        await store.put_many(names, [{"i": i} for i in range(300)], collection="c")
        assert counted.since(before) == {
            "write.self": 1,
            "number.keys.written": 300,
            "number.multiget.get": 0,
            "number.multiget.keys.read": 0,
            "wal.synced": 0,
        }
        counted.db.flush(True)  # from disk as well as from memory
        before = counted.counts()
        found = await store.get_many([*names, "missing"], collection="c")
        assert found == [{"i": i} for i in range(300)] + [None]
        assert counted.since(before) == {
            "write.self": 0,
            "number.keys.written": 0,
            "number.multiget.get": 1,
            "number.multiget.keys.read": 301,
            "wal.synced": 0,
        }
        before = counted.counts()
        assert await store.delete_many([*names[:10], "missing"], collection="c") == 10
        assert counted.since(before) == {
            "write.self": 1,
            "number.keys.written": 10,  # RocksDB counts a delete as a key written
            "number.multiget.get": 1,
            "number.multiget.keys.read": 11,
            "wal.synced": 0,
        }


async def test_concurrent_callers_share_multi_gets(counted: Counted) -> None:
    names = [f"k{i}" for i in range(64)]
    async with Runtime() as runtime:
        store = await runtime.spawn(RocksDBBackend(db=counted.db))
        await store.put_many(names, [{"i": i} for i in range(64)])
        before = counted.counts()
        found: dict[str, object] = {}

        async def get(name: str) -> None:
            found[name] = await store.get(name)

        async with anyio.create_task_group() as group:
            for name in names:
                group.start_soon(get, name)
        assert found == {name: {"i": i} for i, name in enumerate(names)}
        counts = counted.since(before)
        assert counts["number.multiget.keys.read"] == 64
        assert counts["number.multiget.get"] <= 8, "64 concurrent gets merge into a few multi-gets"


async def test_sync_waits_for_the_log_to_reach_the_disk(counted: Counted) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(RocksDBBackend(db=counted.db, sync=True))
        before = counted.counts()
        await store.put_many(["a", "b"], [{"v": 1}, {"v": 2}])
        await store.delete("a")
        assert counted.since(before)["wal.synced"] == 2, "one fsync of the log per batch"


async def test_a_database_given_is_used_and_left_open(counted: Counted) -> None:
    counted.db["outside::key"] = b'{"value": {"from": "outside"}}'
    async with Runtime() as runtime:
        store = await runtime.spawn(RocksDBBackend(db=counted.db))
        assert await store.get("key", collection="outside") == {"from": "outside"}
        await store.put("k", {"v": 1}, collection="c")
    assert counted.db.get("c::k") is not None, "kvrt wrote to the Rdict it was given"
    counted.db["still::open"] = b"yes"  # a closed Rdict would raise here
    assert counted.db["still::open"] == b"yes"


async def test_an_error_from_rocksdb_reaches_the_caller(tmp_path: Path) -> None:
    db = Rdict(str(tmp_path / "db"))
    backend = RocksDBBackend(db=db)
    await backend.open()
    try:
        db.close()  # behind kvrt's back
        with pytest.raises(Exception, match="closed"):
            await backend.put_many("c", ["k"], [document(None)], [None])
        with pytest.raises(Exception, match="closed"):
            await backend.delete_many("c", ["k"])
        with pytest.raises(Exception, match="closed"):
            await backend.get_many("c", ["k"])
    finally:
        await backend.close()


async def test_a_write_stall_leaves_the_event_loop_running(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Small memtables, flushed at 256 KB/s: RocksDB stalls writes until a flush makes room.
    options = Options()
    options.create_if_missing(True)
    options.set_write_buffer_size(64 * 1024)
    options.set_max_write_buffer_number(2)
    options.set_ratelimiter(256 * 1024, 10_000, 10)
    db = Rdict(str(tmp_path / "slow"), options=options)
    backend = RocksDBBackend(db=db)
    await backend.open()
    written: list[int] = []
    document_of = [document(None) + b" " * 1000 for _ in range(4)]

    async def write() -> None:
        for batch in range(4):
            names = [f"b{batch}-{i}" for i in range(64)]
            await backend.put_many("c", names, [document_of[batch]] * 64, [None] * 64)
            written.append(batch)

    def stalled() -> bool:
        return any("rocksdb.write_stalled" in record.getMessage() for record in caplog.records)

    try:
        with caplog.at_level(logging.INFO, logger="kvrt"):
            async with anyio.create_task_group() as group:
                group.start_soon(write)
                await eventually(stalled)  # polled by the event loop, which a stall inside RocksDB would freeze
                waiting = len(written)
                assert waiting < 4, "the loop ran while a write waited for RocksDB"
                # A read made meanwhile waits behind that write on the lane, and sees it.
                assert await backend.get_many("c", [f"b{waiting}-63"]) == [document_of[waiting]]
        assert written == [0, 1, 2, 3]
        assert any("rocksdb.write_resumed" in record.getMessage() for record in caplog.records)
        assert len(await backend.get_many("c", [f"b{batch}-{i}" for batch in range(4) for i in range(64)])) == 256
    finally:
        await backend.close()
        db.close()


async def test_culling_goes_a_budget_at_a_time_and_resumes_where_it_stopped(tmp_path: Path) -> None:
    backend = RocksDBBackend(tmp_path / "db")
    await backend.open()
    try:
        later, past = time.time() + 100, time.time() - 1
        await put(backend, "c", [f"e{i:03}" for i in range(100)], later)
        await put(backend, "c", [f"k{i:03}" for i in range(50)], None)
        # Another writer's document, written without an expiry of the backend's to go by: the document's counts.
        expired = b'{"expires_at": "2020-01-01T00:00:00+00:00", "value": {}}'
        await backend.put_many("a", ["old"], [expired], [None])
        assert await backend.cull(10) == (1, False), "only what has expired goes"
        assert sum(removed for removed, _ in await cull_pass(backend, 10)) == 0, "nothing else has expired"
        await put(backend, "c", [f"e{i:03}" for i in range(100)], past)
        steps = await cull_pass(backend, 10)
        assert all(removed <= 10 for removed, _ in steps)
        assert sum(removed for removed, _ in steps) == 100
        assert len(steps) == 15, "each step takes up where the last stopped: 150 keys left to see, 10 a step"
        assert sorted(await backend.keys("c", None)) == [f"k{i:03}" for i in range(50)]
        assert await backend.get_many("c", ["e000", "e099"]) == [None, None]
        assert await backend.get_many("a", ["old"]) == [None]
    finally:
        await backend.close()


async def test_a_cull_with_nothing_due_looks_at_nothing(tmp_path: Path) -> None:
    backend = RocksDBBackend(tmp_path / "db")
    await backend.open()
    try:
        await put(backend, "c", [f"k{i}" for i in range(30)], time.time() + 100)
        assert await backend.cull(10) == (0, False), "a first pass looks"
        assert await backend.cull(10) == (0, False)
        assert await backend.cull(10) == (0, True)
        assert await backend.cull(1) == (0, True), "nothing expires before the soonest expiry seen"
        await put(backend, "c", ["k0"], time.time() - 1)
        assert await backend.cull(100) == (1, True), "a write that expires sooner makes a pass due"
        # An entry written behind the cursor of a pass under way counts too.
        backend._soonest = -1.0
        assert await backend.cull(10) == (0, False)
        await put(backend, "a", ["behind"], time.time() - 1)
        assert sum(removed for removed, _ in await cull_pass(backend, 10)) == 0, "behind the cursor: not seen"
        assert await backend.cull(100) == (1, True)
    finally:
        await backend.close()


async def test_a_database_given_is_always_walked_when_culling(counted: Counted) -> None:
    backend = RocksDBBackend(db=counted.db)
    await backend.open()
    try:
        assert await backend.cull(10) == (0, True)
        counted.db["c::k"] = b'{"expires_at": "2020-01-01T00:00:00+00:00", "value": {}}'  # behind kvrt's back
        assert await backend.cull(10) == (1, True)
    finally:
        await backend.close()


async def test_hostile_names_round_trip_through_listings(tmp_path: Path) -> None:
    async with Runtime() as runtime:
        store = listing(await runtime.spawn(RocksDBBackend(tmp_path / "db")))
        for name in HOSTILE:
            await store.put(name, {"key": name}, collection="plain")
            await store.put("k", {"collection": name}, collection=name)
        assert sorted(await store.keys("plain")) == sorted(set(HOSTILE))
        assert sorted(await store.collections()) == sorted({*HOSTILE, "plain"})
        for name in HOSTILE:
            assert await store.keys(name) == ["k"]
            assert await store.get(name, collection="plain") == {"key": name}
            assert await store.get("k", collection=name) == {"collection": name}
        assert await store.destroy_collection("a::b") is True
        assert await store.get("k", collection="a") is None
        assert await store.get("k", collection=":") == {"collection": ":"}
        assert await store.get("a::b", collection="plain") == {"key": "a::b"}


async def test_listings_leave_out_what_has_expired(tmp_path: Path) -> None:
    async with Runtime() as runtime:
        store = listing(await runtime.spawn(RocksDBBackend(tmp_path / "db")))
        await store.put_many(["a", "b"], [{"v": 1}, {"v": 2}], collection="brief", ttl=0.2)
        await store.put("a", {"v": 3}, collection="mixed", ttl=0.2)
        await store.put("b", {"v": 4}, collection="mixed")
        await store.put("a", {"v": 5}, collection="stays")
        await sleep_past(time.time() + 0.2)
        assert sorted(await store.collections()) == ["mixed", "stays"]
        assert await store.collections(limit=1) == ["mixed"]
        for name in ("stay", "stays~", "stays-on", "stays:x", "staysz"):  # around "stays" in RocksDB's order
            await store.put("k", {"v": 6}, collection=name)
        assert sorted(await store.collections()) == sorted(
            ["mixed", "stays", "stay", "stays~", "stays-on", "stays:x", "staysz"]
        )
        assert await store.keys("mixed") == ["b"]
        assert await store.destroy_collection("brief") is False, "only expired entries were there"
        assert await store.destroy_collection("mixed") is True


async def test_keys_are_the_references_and_other_data_is_left_alone(tmp_path: Path) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(RocksDBBackend(tmp_path / "db"))
        await store.put("u1", {"v": 1}, collection="users")
        await store.put("c", {"v": 2}, collection="a::b")
    db = Rdict(str(tmp_path / "db"))
    try:
        assert sorted(db.keys()) == ["a%3A%3Ab::c", "users::u1"]
        assert isinstance(db["users::u1"], bytes), "the document as bytes, as the reference writes it"
        db["plain"] = b"not kvrt's"
        db[7] = 8
        db["zz::foreign"] = 9  # in kvrt's layout, but no document
    finally:
        db.close()
        del db
    async with Runtime() as runtime:
        again = listing(await runtime.spawn(RocksDBBackend(tmp_path / "db")))
        assert sorted(await again.collections()) == ["a::b", "users", "zz"]
        with pytest.raises(DeserializationError):
            await again.get("foreign", collection="zz")
        assert await again.destroy() is True
        assert await again.collections() == []
    db = Rdict(str(tmp_path / "db"))
    try:
        assert sorted(db.keys(), key=str) == [7, "plain"]
    finally:
        db.close()


unpickled: list[str] = []


def _record() -> str:
    unpickled.append("ran")
    return "payload"


class _Tripwire:
    def __reduce__(self) -> tuple[object, tuple[()]]:
        return _record, ()


async def test_a_pickled_value_is_never_unpickled(tmp_path: Path) -> None:
    db = Rdict(str(tmp_path / "db"))
    db["c::k"] = _Tripwire()
    db.close()
    del db
    assert pickle.loads(pickle.dumps(_Tripwire())) == "payload"
    assert unpickled == ["ran"], "the tripwire goes off when unpickled"
    unpickled.clear()
    async with Runtime() as runtime:
        store = listing(await runtime.spawn(RocksDBBackend(tmp_path / "db")))
        with pytest.raises(DeserializationError):
            await store.get("k", collection="c")
        assert await store.keys("c") == ["k"]
    assert unpickled == []


async def test_a_directory_open_elsewhere_is_a_clear_setup_error(tmp_path: Path) -> None:
    holder = Rdict(str(tmp_path / "db"))
    try:
        async with Runtime() as runtime:
            with pytest.raises(StoreSetupError, match="open elsewhere"):
                await runtime.spawn(RocksDBBackend(tmp_path / "db"))
    finally:
        holder.close()
    async with Runtime() as runtime:  # the lock is free again
        store = await runtime.spawn(RocksDBBackend(tmp_path / "db"))
        await store.put("k", {"v": 1})


async def test_a_raw_mode_database_is_refused(tmp_path: Path) -> None:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    db = Rdict(str(tmp_path / "raw"), options=options)
    try:
        async with Runtime() as runtime:
            with pytest.raises(StoreSetupError, match="raw mode"):
                await runtime.spawn(RocksDBBackend(db=db))
    finally:
        db.close()


async def test_closing_releases_the_directory_for_a_reopen(tmp_path: Path) -> None:
    for round_ in range(3):
        async with Runtime() as runtime:
            store = listing(await runtime.spawn(RocksDBBackend(tmp_path / "db")))
            await store.put(f"k{round_}", {"v": round_})
            assert len(await store.keys()) == round_ + 1  # an iterator was made and must not keep the lock


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        RocksDBBackend()
    db = Rdict(str(tmp_path / "db"))
    try:
        with pytest.raises(ValueError, match="not both"):
            RocksDBBackend(tmp_path, db=db)
        with pytest.raises(TypeError, match="sync"):
            RocksDBBackend(db=db, sync="yes")  # type: ignore[arg-type]
        assert RocksDBBackend(db=db).path == tmp_path / "db"
    finally:
        db.close()

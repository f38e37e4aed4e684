"""The chDB backend: the whole contract, the reference's table, a statement per batch, chDB's one-directory rule."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
from chdb.session import Session as _Session

from kvrt import Runtime
from kvrt.backends.chdb import ChDBBackend, quote
from kvrt.entry import DEFAULT_COLLECTION
from kvrt.errors import KeyValueStoreError, StoreSetupError
from kvrt.policies import CullPolicy
from kvrt.protocol import cull_of
from kvrt.testing import ConformanceSuite
from kvrt.testing.conformance import get_concurrently, listing, sleep_past
from kvrt.testing.crash import assert_intact, kill_mid_load

pytestmark = pytest.mark.anyio

QUIET = CullPolicy(interval=3600.0)  # no background cull among a test's statements
SECRET = "hunter2-do-not-show"
HOSTILE = [
    "it's",
    "back\\slash",
    "\\",
    "'",
    "\\'",
    "nul\x00inside",
    "'; DROP TABLE kv_entries; --",
    "'); DROP TABLE kv_entries; --",
    "tab\tand\nnewline\r",
    "{names:Array(String)}",
    "`backtick`",
    "\x7f\x01\x1f",
    "ünï 🎉",
    "q'" * 500,  # 1,000 characters
    "n" * 1000,
]
_tables = itertools.count()
Session: Callable[[str], Any] = _Session  # chdb's functions carry no annotations: a session is Any here


@pytest.fixture(scope="class")
def shared_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One directory for the suite, a fresh table per test; a session kept open holds chDB's engine up between them.

    chDB runs one engine per process, on one directory at a time, and starting it costs tens of
    milliseconds, so the suite keeps it running. The session closes with the class, so the tests
    after it start from no engine, as an application does.
    """
    path = tmp_path_factory.mktemp("chdb-suite")
    keeper = Session(str(path))
    try:
        yield path
    finally:
        keeper.close()


class TestChDBConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, shared_directory: Path) -> ChDBBackend:
        return ChDBBackend(shared_directory, table=f"conformance_{next(_tables)}")


@contextmanager
def inspector(path: Path) -> Iterator[Any]:
    """A session of the test's own on ``path`` (chDB shares the engine with the backend's), closed on the way out."""
    session = Session(str(path))
    try:
        yield session
    finally:
        session.close()


def sql(session: Any, statement: str, **params: str) -> list[list[Any]]:
    output = session.query(statement, "JSONCompactEachRow", params=params).bytes().decode()
    return [json.loads(line) for line in output.splitlines() if line]


def statements_so_far(session: Any) -> int:
    """chDB's count of statements run in this process (counted as each ends: this one is not, yet)."""
    ((count,),) = sql(session, "SELECT value FROM system.events WHERE event = 'Query'")
    return int(count)


def statements_since(session: Any, before: int) -> int:
    """How many statements ran since ``before`` was read (the reading itself aside)."""
    return statements_so_far(session) - before - 1


def user_tables(session: Any) -> list[list[Any]]:
    return sql(
        session,
        "SELECT database, name FROM system.tables "
        "WHERE database NOT IN ('system', 'INFORMATION_SCHEMA', 'information_schema') ORDER BY database, name",
    )


async def test_rows_are_the_references_layout(tmp_path: Path) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(ChDBBackend(tmp_path), cull=QUIET)
        await store.put("u1", {"name": "Alice", "n": [1, 2.5, None]}, collection="users", ttl=100)
        await store.put("u2", {"b": 1, "a": "ü"}, collection="users")
        with inspector(tmp_path) as session:
            (layout,) = sql(
                session,
                "SELECT engine, sorting_key, primary_key, engine_full FROM system.tables "
                "WHERE database = 'default' AND name = 'kv_entries'",
            )
            columns = sql(
                session, "SELECT name, type, default_expression FROM system.columns WHERE table = 'kv_entries'"
            )
            rows = sql(
                session,
                "SELECT collection, key, value, created_at, expires_at, version FROM kv_entries FINAL ORDER BY key",
            )
    assert layout[:3] == ["ReplacingMergeTree", "collection, key", "collection, key"]
    assert layout[3].startswith("ReplacingMergeTree(inserted_at) ORDER BY (collection, key)")
    assert "enable_block_number_column = 1, enable_block_offset_column = 1" in layout[3], "deletes as patch parts"
    assert columns == [
        ["collection", "String", ""],
        ["key", "String", ""],
        ["value", "String", ""],
        ["created_at", "String", ""],
        ["expires_at", "String", ""],
        ["version", "Int32", ""],
        ["inserted_at", "DateTime64(9, 'UTC')", "now64(9)"],
    ]
    (u1, u2) = rows
    assert u1[:3] == ["users", "u1", '{"n": [1, 2.5, null], "name": "Alice"}'], "the value's JSON text, keys sorted"
    created, expires = u1[3], u1[4]
    assert abs((datetime.fromisoformat(expires) - datetime.fromisoformat(created)).total_seconds() - 100) < 0.001
    assert u1[5] == 1
    assert u2[2:] == ['{"a": "ü", "b": 1}', u2[3], "", 1], "no expiry: an empty expires_at, as the reference writes"


async def test_a_batch_is_one_statement(tmp_path: Path) -> None:
    names = [f"k{i}" for i in range(64)]
    async with Runtime() as runtime:
        store = await runtime.spawn(ChDBBackend(tmp_path), cull=QUIET)
        with inspector(tmp_path) as session:
            before = statements_so_far(session)
            async with anyio.create_task_group() as group:
                for i, name in enumerate(names):
                    group.start_soon(store.put, name, {"i": i})
            puts = statements_since(session, before)
            ((stamps,),) = sql(session, "SELECT uniqExact(inserted_at) FROM kv_entries")
            before = statements_so_far(session)
            found = await get_concurrently(store, names)
            gets = statements_since(session, before)
            before = statements_so_far(session)
            assert await store.delete_many([*names, "absent"]) == 64
            deletes = statements_since(session, before)
            ((left,),) = sql(session, "SELECT count() FROM kv_entries")
    assert found == {name: {"i": i} for i, name in enumerate(names)}
    assert 1 <= puts <= 2, puts  # the first caller may go alone, before the others arrive
    assert int(stamps) == puts, "each INSERT stamps its rows once: one statement per round"
    assert 1 <= gets <= 2, gets
    assert deletes == 2, "a SELECT of what is there, then one DELETE"
    assert int(left) == 0


async def test_hostile_names_round_trip_and_write_nothing_outside_the_table(tmp_path: Path) -> None:
    async with Runtime() as runtime:
        store = listing(await runtime.spawn(ChDBBackend(tmp_path), cull=QUIET))
        with inspector(tmp_path) as session:
            tables = user_tables(session)
            for name in HOSTILE:
                await store.put(name, {"name": name}, collection=name)
            await store.put_many(HOSTILE, [{"as": "key"}] * len(HOSTILE), collection="plain")
            assert sorted(await store.collections()) == sorted([*HOSTILE, "plain"])
            assert sorted(await store.keys("plain")) == sorted(HOSTILE)
            for name in HOSTILE:
                assert await store.keys(name) == [name]
                assert await store.get(name, collection=name) == {"name": name}
            assert await store.get_many(HOSTILE, collection="plain") == [{"as": "key"}] * len(HOSTILE)
            assert await store.delete_many(HOSTILE[:5], collection="plain") == 5
            assert await store.destroy_collection(HOSTILE[6]) is True
            assert user_tables(session) == tables == [["default", "kv_entries"]]
            ((rows,),) = sql(session, "SELECT count() FROM kv_entries FINAL")
            stored = sql(session, "SELECT DISTINCT key FROM kv_entries WHERE collection = 'plain'")
    assert int(rows) == 2 * len(HOSTILE) - 5 - 1
    assert sorted(row[0] for row in stored) == sorted(HOSTILE[5:]), "names stored as they are, byte for byte"


def _every_kind_of_text() -> list[str]:
    picked = random.Random(17)
    texts = [*HOSTILE, "".join(map(chr, range(0x250))), "\\x41", "\\N", "NULL", "['a']", "'),('x", "${a}"]
    for _ in range(40):
        texts.append(
            "".join(
                chr(
                    picked.choice(
                        [picked.randrange(0x80), picked.randrange(0x80, 0xD800), picked.randrange(0xE000, 0x110000)]
                    )
                )
                for _ in range(30)
            )
        )
    return texts


def test_quoted_names_reach_clickhouse_byte_for_byte() -> None:
    texts = _every_kind_of_text()
    session = Session(":memory:")
    try:
        for text in texts:
            ((held,),) = sql(session, f"SELECT hex({quote(text)})")
            assert held == text.encode().hex().upper(), repr(text[:40])
        listed = "[" + ",".join(map(quote, texts)) + "]"
        ((held_all,),) = sql(session, "SELECT arrayMap(x -> hex(x), {names:Array(String)})", names=listed)
        assert held_all == [text.encode().hex().upper() for text in texts], "and as a query parameter"
    finally:
        session.close()


async def test_a_batch_of_long_names_goes_as_a_parameter_in_one_statement(tmp_path: Path) -> None:
    names = [f"{i:04}'\\" + "x" * 994 for i in range(300)]  # 300,000 characters: past ClickHouse's 256 KiB of text
    async with Runtime() as runtime:
        store = await runtime.spawn(ChDBBackend(tmp_path), cull=QUIET)
        await store.put_many(names, [{"i": i} for i in range(300)], collection="long")
        with inspector(tmp_path) as session:
            before = statements_so_far(session)
            found = await store.get_many([*names, "absent"], collection="long")
            gets = statements_since(session, before)
        assert found == [*({"i": i} for i in range(300)), None]
        assert gets == 1
        assert await store.delete_many(names[:250], collection="long") == 250
        assert await store.get_many(names[248:252], collection="long") == [None, None, {"i": 250}, {"i": 251}]


async def test_an_expired_overwrite_hides_the_older_row_and_the_cull_takes_both(tmp_path: Path) -> None:
    async with Runtime() as runtime:
        handle = await runtime.spawn(ChDBBackend(tmp_path), cull=QUIET)
        store = listing(handle)
        await store.put("k", {"v": "old"})
        await store.put("k", {"v": "new"}, ttl=0.3)
        expiry = time.time() + 0.3
        await store.put("other", {"v": 1}, ttl=0.3)
        await store.put("other", {"v": 2})  # the live newest row: stays, whatever its older row says
        await sleep_past(expiry)
        assert await store.get("k") is None, "the newest row rules, even expired: the older one never shows"
        assert await store.keys() == ["other"]
        assert await store.collections() == [DEFAULT_COLLECTION]
        await cull_of(handle).cull()
        with inspector(tmp_path) as session:
            rows = sql(session, "SELECT key, value FROM kv_entries ORDER BY key, inserted_at")
        assert {row[0] for row in rows} == {"other"}, "both rows of the expired entry went"
        assert rows[-1] == ["other", '{"v": 2}']
        assert await store.get("k") is None
        assert await store.get("other") == {"v": 2}


async def test_cull_goes_in_budgeted_steps(tmp_path: Path) -> None:
    backend = ChDBBackend(tmp_path)
    await backend.open()
    try:
        entry = b'{"created_at": "2020-01-01T00:00:00+00:00", "expires_at": "2020-01-01T00:00:01+00:00", "value": {}}'
        await backend.put_many("c", [f"e{i}" for i in range(50)], [entry] * 50, [1577836801.0] * 50)
        await backend.put_many("c", ["keep"], [b'{"value": {"a": 1}}'], [None])
        assert await backend.get_many("c", ["e0", "keep"]) == [
            None,
            b'{"collection": "c", "key": "keep", "value": {"a": 1}, "version": 1}',
        ]
        passed = datetime.fromtimestamp(time.time() - 60, timezone(timedelta(hours=5))).isoformat()
        elsewhere = f'{{"expires_at": "{passed}", "value": {{}}}}'.encode()  # past, written at another offset
        await backend.put_many("c", ["e50"], [elsewhere], [None])
        assert await backend.get_many("c", ["e50"]) == [None]
        steps = [await backend.cull(16) for _ in range(4)]
        assert steps == [(16, False), (16, False), (16, False), (3, True)]
        assert await backend.cull(16) == (0, True)
        assert await backend.keys("c", None) == ["keep"]
        long_names = [f"{i:03}" + "z" * 2000 for i in range(100)]  # a step's statement stays under 64 KiB of names
        await backend.put_many("c", long_names, [entry] * 100, [1577836801.0] * 100)
        removed, done = await backend.cull(512)
        assert 0 < removed < 100
        assert not done
        while not done:
            step, done = await backend.cull(512)
            removed += step
        assert removed == 100
        assert await backend.keys("c", None) == ["keep"]
    finally:
        await backend.close()


async def test_a_session_you_pass_is_used_and_never_closed(tmp_path: Path) -> None:
    session = Session(str(tmp_path))  # made on this thread, used on the backend's
    try:
        async with Runtime() as runtime:
            store = await runtime.spawn(ChDBBackend(session=session, table="yours"))
            await store.put("k", {"v": 1})
        assert sql(session, "SELECT key FROM yours") == [["k"]], "still open, and it holds the entry"
        async with Runtime() as runtime:
            store = await runtime.spawn(ChDBBackend(session=session, table="yours"))
            assert await store.get("k") == {"v": 1}
    finally:
        session.close()


async def test_a_second_directory_waits_for_the_first_to_close(tmp_path: Path) -> None:
    first = Session(str(tmp_path / "first"))
    try:
        async with Runtime() as runtime:
            with pytest.raises(StoreSetupError, match="one database directory per process") as raised:
                await runtime.spawn(ChDBBackend(tmp_path / "second"))
            assert "first" in str(raised.value)
    finally:
        first.close()
    async with Runtime() as runtime:
        store = await runtime.spawn(ChDBBackend(tmp_path / "second"))
        await store.put("k", {"v": 1})
        assert await store.get("k") == {"v": 1}


async def test_entries_outlive_the_engine(tmp_path: Path) -> None:
    backend = ChDBBackend(tmp_path / "kept")
    async with Runtime() as runtime:
        store = await runtime.spawn(backend)
        await store.put_many(["a", "b"], [{"v": 1}, {"v": 2}], collection="kept", ttl=100)
        await store.put("c", {"v": 3}, collection="kept")
        await store.delete("b", collection="kept")
    elsewhere = Session(str(tmp_path / "elsewhere"))  # the backend, still held, let go of its directory
    elsewhere.close()
    # every session closed: the engine stopped; this starts it again on the directory
    async with Runtime() as runtime:
        again = listing(await runtime.spawn(ChDBBackend(str(tmp_path / "kept"))))
        assert await again.get_many(["a", "b", "c"], collection="kept") == [{"v": 1}, None, {"v": 3}]
        _, left = await again.ttl("a", collection="kept")
        assert left is not None
        assert 95 < left <= 100
        assert sorted(await again.keys("kept")) == ["a", "c"]


async def test_in_memory_data_goes_with_the_last_session() -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(ChDBBackend())
        await store.put("k", {"v": 1})
        assert await store.get("k") == {"v": 1}
    async with Runtime() as runtime:
        store = await runtime.spawn(ChDBBackend(":memory:"))
        assert await store.get("k") is None


async def test_a_table_laid_out_otherwise_is_a_setup_error_and_is_left_alone(tmp_path: Path) -> None:
    with inspector(tmp_path) as session:
        session.query(
            "CREATE TABLE kv_entries (collection String, key String, value String) ENGINE = MergeTree ORDER BY key"
        )
        session.query("INSERT INTO kv_entries VALUES ('c', 'k', 'v')")
        async with Runtime() as runtime:
            with pytest.raises(StoreSetupError, match="not laid out as kvrt's") as raised:
                await runtime.spawn(ChDBBackend(tmp_path))
        assert "MergeTree engine ordered by (key)" in str(raised.value)
        assert "created_at String" in str(raised.value)
        assert sql(session, "SELECT * FROM kv_entries") == [["c", "k", "v"]]


async def test_a_refused_statement_names_the_error_and_never_the_data(tmp_path: Path) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(ChDBBackend(tmp_path), cull=QUIET)
        with inspector(tmp_path) as session:
            session.query("ALTER TABLE kv_entries MODIFY COLUMN value UInt64")  # rows can no longer be written
            with pytest.raises(KeyValueStoreError) as raised:
                await store.put("k", {"secret": SECRET})
    assert "CANNOT_PARSE" in str(raised.value)
    assert "code 27" in str(raised.value)
    error: BaseException | None = raised.value
    while error is not None:
        assert SECRET not in f"{error!s} {error!r} {error.args!r}"
        error = error.__cause__ or error.__context__


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    session = Session(str(tmp_path))
    try:
        with pytest.raises(ValueError, match="not both"):
            ChDBBackend(tmp_path, session=session)
    finally:
        session.close()
    with pytest.raises(TypeError, match=r"chdb\.session\.Session"):
        ChDBBackend(session=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str or a Path"):
        ChDBBackend(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="engine settings"):
        ChDBBackend(tmp_path / "what?verbose")
    for table in ["", "1abc", "a-b", "kv; DROP TABLE x", "`x`", "ü", "t" * 201, "a b"]:
        with pytest.raises(ValueError, match="identifier"):
            ChDBBackend(tmp_path, table=table)
    assert ChDBBackend(tmp_path, table="_T" + "t" * 198).table.startswith("_T")
    assert "table='kv_entries'" in repr(ChDBBackend(tmp_path))


def test_every_acknowledged_put_survives_sigkill(tmp_path: Path) -> None:
    directory = tmp_path / "chdb"
    acknowledged = kill_mid_load(
        "from kvrt.backends.chdb import ChDBBackend", "ChDBBackend(directory)", directory, "asyncio"
    )

    async def verify() -> None:
        async with Runtime() as runtime:  # the killed process's lock on the directory went with it
            await assert_intact(await runtime.spawn(ChDBBackend(directory)), acknowledged)

    anyio.run(verify)


def test_without_chdb_the_error_names_the_extra() -> None:
    script = (
        "import sys\nsys.modules['chdb'] = None\nfrom kvrt.errors import MissingExtraError\n"
        "try:\n    import kvrt.backends.chdb\nexcept MissingExtraError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert "ChDBBackend needs the 'chdb' extra" in result.stdout, result.stderr[-2000:]
    assert "pip install 'kvrt[chdb]'" in result.stdout

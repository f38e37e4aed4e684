"""The DuckDB backend on real databases: files on tmp_path, and in memory."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import duckdb
import msgspec
import pytest

from kvrt import Runtime
from kvrt.backends.duckdb import DuckDBBackend
from kvrt.entry import encode_entry, encode_value, stamp
from kvrt.errors import StoreSetupError
from kvrt.policies import CullPolicy
from kvrt.testing import ConformanceSuite
from kvrt.testing.conformance import NAMES, eventually, listing, raw_get, same, sleep_past

pytestmark = pytest.mark.anyio

QUIET = CullPolicy(interval=3600.0)  # no background cull among a test's statements or counts


def fresh_table() -> str:
    return f"kv_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def database_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One database file for the module, held open so that DuckDB keeps its instance warm.

    A file's first connection costs DuckDB ~20 ms to start its instance; later ones in the same
    process share it. Each test gets a table of its own in the file, through ``path=``, as a user would.
    """
    path = tmp_path_factory.mktemp("duckdb") / "kv.duckdb"
    keeper = duckdb.connect(str(path))
    yield path
    keeper.close()


@pytest.fixture(scope="module")
def memory_connection() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect(":memory:")
    yield connection
    connection.close()


class TestDuckDBConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, database_file: Path) -> DuckDBBackend:
        return DuckDBBackend(database_file, table=fresh_table())


class TestDuckDBInMemoryConformance(ConformanceSuite):
    """The suite again on an in-memory database, through a connection the user passes (asyncio: trio runs above)."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    def backend(self, memory_connection: duckdb.DuckDBPyConnection) -> DuckDBBackend:
        return DuckDBBackend(connection=memory_connection, table=fresh_table())


class Logged:
    """A connection to a database with DuckDB's own query log on: what statements ran, in which transaction."""

    def __init__(self) -> None:
        self.connection = duckdb.connect(":memory:")
        self.connection.execute("CALL enable_logging('QueryLog')")

    def statements(self, table: str, starting: str = "") -> list[tuple[int, str]]:
        """The (transaction, text) of every statement logged on ``table`` whose text starts with ``starting``."""
        rows = self.connection.execute(
            "SELECT transaction_id, message FROM duckdb_logs WHERE type = 'QueryLog' AND message LIKE ?",
            [f'%"{table}"%'],
        ).fetchall()
        return [(transaction, text) for transaction, text in rows if text.startswith(starting)]

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def logged() -> Iterator[Logged]:
    log = Logged()
    yield log
    log.close()


def batches(runtime: Runtime, name: str = "duckdb") -> int:
    return runtime.stats()[name].batches


async def test_a_round_is_one_statement_per_run(runtime: Runtime, logged: Logged) -> None:
    table = fresh_table()
    store = await runtime.spawn(DuckDBBackend(connection=logged.connection, table=table), cull=QUIET)
    names = [f"k{i}" for i in range(64)]
    for starting, call in [
        ("MERGE", lambda i, name: store.put(name, {"i": i}, ttl=60)),
        ("SELECT", lambda i, name: store.get(name)),
        ("DELETE", lambda i, name: store.delete(name)),
    ]:
        before, calls = len(logged.statements(table, starting)), batches(runtime)
        async with anyio.create_task_group() as group:
            for i, name in enumerate(names):
                group.start_soon(call, i, name)
        statements = len(logged.statements(table, starting)) - before
        calls = batches(runtime) - calls
        assert statements == calls, f"{starting}: one statement for each backend call"
        assert calls < len(names) // 4, f"{starting}: 64 concurrent callers merged into a few runs"
    assert runtime.stats()["duckdb"].max_batch > 16

    bulks: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("MERGE", lambda: store.put_many(names, [{"i": i} for i in range(64)])),
        ("SELECT", lambda: store.get_many(names)),
        ("DELETE", lambda: store.delete_many(names)),
    ]
    for starting, bulk in bulks:
        before = len(logged.statements(table, starting))
        await bulk()
        assert len(logged.statements(table, starting)) - before == 1, f"{starting}: a bulk call is one statement"


async def test_a_bulk_call_past_a_chunk_is_one_transaction_of_bounded_statements(
    runtime: Runtime, logged: Logged
) -> None:
    table = fresh_table()
    store = await runtime.spawn(DuckDBBackend(connection=logged.connection, table=table), cull=QUIET)
    names = [f"k{i}" for i in range(8193)]  # 3 chunks of at most 4,096 keys
    await store.put_many(names, [{"i": i} for i in range(len(names))])
    found = await store.get_many(names)
    assert found[0] == {"i": 0}
    assert found[-1] == {"i": 8192}
    assert None not in found
    for starting in ("MERGE", "SELECT"):
        statements = logged.statements(table, starting)
        assert len(statements) == 3, starting
        assert len({transaction for transaction, _ in statements}) == 1, f"{starting}: one transaction"
    assert await store.delete_many(names) == len(names)


async def test_cull_removes_expired_rows_a_budget_at_a_time(database_file: Path) -> None:
    table = fresh_table()
    async with Runtime() as runtime:
        store = await runtime.spawn(DuckDBBackend(database_file, table=table), cull=QUIET)
        await store.put_many([f"e{i}" for i in range(250)], [{"v": 0}] * 250, ttl=0.2)
        await store.put("keep", {"v": 1})
        await store.put("later", {"v": 2}, ttl=100)
        await sleep_past(time.time() + 0.2)
    backend = DuckDBBackend(database_file, table=table)
    await backend.open()
    try:
        assert [await backend.cull(100) for _ in range(3)] == [(100, False), (100, False), (50, True)]
        assert await backend.cull(100) == (0, True)
        with duckdb.connect(str(database_file)) as connection:
            assert sorted(row[0] for row in connection.execute(f'SELECT key FROM "{table}"').fetchall()) == [
                "keep",
                "later",
            ]
    finally:
        await backend.close()


async def test_the_backend_itself_leaves_out_expired_rows(memory_connection: duckdb.DuckDBPyConnection) -> None:
    table = fresh_table()
    backend = DuckDBBackend(connection=memory_connection, table=table)
    await backend.open()
    try:
        stale = b'{"created_at": "2020-01-01T00:00:00+00:00", "expires_at": "2020-01-01T00:00:01+00:00", "value": {}}'
        fresh = encode_entry("live", "c", b"{}", stamp(100.0))
        await backend.put_many("c", ["stale", "live"], [stale, fresh], [None, time.time() + 100])
        assert await backend.get_many("c", ["stale", "live", "stale"]) == [None, fresh, None], (
            "the very document kvrt wrote"
        )
        assert await backend.get_many("c", ["stale"]) == [None], "a single key too"
        assert await backend.get_many("c", ["live"]) == [fresh]
        assert await backend.keys("c", None) == ["live"]
        assert await backend.collections(None) == ["c"]
        assert await backend.delete_many("c", ["stale", "live"]) == [False, True], "an expired row is not live"
        rows = memory_connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()
        assert rows == (0,), "deleting removes the expired row too"
    finally:
        await backend.close()


async def test_a_key_given_twice_in_one_batch(memory_connection: duckdb.DuckDBPyConnection) -> None:
    backend = DuckDBBackend(connection=memory_connection, table=fresh_table())
    await backend.open()
    try:
        first, last = (encode_entry("k", "c", encode_value({"v": v}), stamp(None)) for v in (1, 2))
        await backend.put_many("c", ["k", "other", "k"], [first, first, last], [None, None, None])
        assert await backend.get_many("c", ["k", "k"]) == [last, last], "the later put wins"
        assert await backend.delete_many("c", ["k", "k", "missing"]) == [True, False, False]
    finally:
        await backend.close()


async def test_a_write_conflict_is_retried_until_it_clears(memory_connection: duckdb.DuckDBPyConnection) -> None:
    table = fresh_table()
    async with Runtime() as runtime:
        store = await runtime.spawn(DuckDBBackend(connection=memory_connection, table=table), cull=QUIET)
        await store.put("k", {"v": 1})
        other = memory_connection.cursor()  # another connection of this process, holding the row
        try:
            other.execute("BEGIN TRANSACTION")
            other.execute(f'DELETE FROM "{table}" WHERE key = ?', ["k"])
            async with anyio.create_task_group() as group:
                group.start_soon(store.put, "k", {"v": 2})
                await eventually(lambda: runtime.stats()["duckdb"].retries > 0)
                other.execute("COMMIT")
        finally:
            other.close()
        assert await store.get("k") == {"v": 2}, "the put landed once the conflict cleared"


async def test_a_connection_of_yours_is_used_and_left_open() -> None:
    connection = duckdb.connect(":memory:")
    try:
        async with Runtime() as runtime:
            store = await runtime.spawn(DuckDBBackend(connection=connection))
            await store.put("k", {"v": 1})
        assert connection.execute("SELECT key, value FROM kv_entries").fetchall() == [("k", '{"v": 1}')]
    finally:
        connection.close()


async def test_kvrt_closes_the_connection_it_opened(tmp_path: Path) -> None:
    path = tmp_path / "own.duckdb"
    async with Runtime() as runtime:
        store = await runtime.spawn(DuckDBBackend(path))
        await store.put("k", {"v": 1})
    # DuckDB refuses a second configuration for a file this process still holds open.
    with duckdb.connect(str(path), read_only=True) as connection:
        assert connection.execute("SELECT key FROM kv_entries").fetchall() == [("k",)]


async def test_an_in_memory_database_outlives_a_reopen_until_shutdown() -> None:
    backend = DuckDBBackend()
    await backend.open()
    await backend.put_many("c", ["k"], [encode_entry("k", "c", b'{"v": 1}', stamp(None))], [None])
    await backend.close()
    await backend.open()  # what a worker's restart does
    assert (await backend.get_many("c", ["k"]))[0] is not None
    await backend.close()
    await backend.shutdown()
    await backend.open()
    assert await backend.get_many("c", ["k"]) == [None], "a fresh database after shutdown"
    await backend.close()
    await backend.shutdown()


@pytest.mark.parametrize(
    "table",
    ["", "1st", "a-b", "a b", "kv; DROP TABLE x", 'a"b', "a'b", "ünï", "a.b", "kv_entries\n", None, 42],
)
def test_a_table_name_that_is_not_an_identifier_is_refused(table: Any) -> None:
    with pytest.raises(ValueError, match="table must be an identifier"):
        DuckDBBackend(table=table)


def test_bad_arguments_are_refused_where_the_backend_is_made(tmp_path: Path) -> None:
    with duckdb.connect(":memory:") as connection, pytest.raises(ValueError, match="not both"):
        DuckDBBackend(tmp_path / "x.duckdb", connection=connection)
    with pytest.raises(TypeError, match="DuckDB connection"):
        DuckDBBackend(connection="memory")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="path must be"):
        DuckDBBackend(42)  # type: ignore[arg-type]


HOSTILE = {
    **NAMES,
    "nul": "a\x00b",
    "thousand": "k" * 1000,
    "quotes": "'\"`",
    "sql": "'; DROP TABLE kv_entries; --",
    "identifier": '"; DROP TABLE victim; --',
    "slash": "/",
    "dot dot": "..",
}


async def test_hostile_names_are_parameters_that_stay_in_the_table(runtime: Runtime) -> None:
    connection = duckdb.connect(":memory:")
    try:
        connection.execute("CREATE TABLE victim (n INT)")
        connection.execute("INSERT INTO victim VALUES (1)")
        store = listing(await runtime.spawn(DuckDBBackend(connection=connection), cull=QUIET))
        names = list(dict.fromkeys(HOSTILE.values()))
        await store.put_many(names, [{"i": i} for i in range(len(names))], collection="hostile")
        for i, name in enumerate(names):
            await store.put("k", {"i": i}, collection=name)
        assert await store.get_many(names, collection="hostile") == [{"i": i} for i in range(len(names))]
        assert sorted(await store.keys("hostile")) == sorted(names)
        assert sorted(await store.collections()) == sorted([*names, "hostile"])
        for i, name in enumerate(names):  # one at a time: the single-key statements
            assert await store.get("k", collection=name) == {"i": i}
            assert await store.get(name, collection="hostile") == {"i": i}
        assert await store.delete_many(names[:3], collection="hostile") == 3
        tables = connection.execute("SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall()
        assert tables == [("kv_entries",), ("victim",)]
        assert connection.execute("SELECT n FROM victim").fetchall() == [(1,)]
        stored = connection.execute("SELECT collection, key FROM kv_entries").fetchall()
        expected = {("hostile", name) for name in names[3:]} | {(name, "k") for name in names}
        assert sorted(stored) == sorted(expected), "every row where it belongs, and nothing else"
    finally:
        connection.close()


EXACT: dict[str, Any] = {
    "ints": [0, -1, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1],
    "floats": [0.1 + 0.2, 1e16, 1e-7, -0.0, 5e-324, 1.7976931348623157e308, 1.0, 100.0],
    "text": ["a\x00b", "é 🎉 日本", "\\u0000", '"quoted"', "line\nbreak", ""],
    "nested": {"a": [{"b": None}, [], {}], "": True},
}


async def test_values_are_stored_as_kvrts_text_and_read_back_exactly(
    runtime: Runtime, memory_connection: duckdb.DuckDBPyConnection
) -> None:
    table = fresh_table()
    store = await runtime.spawn(DuckDBBackend(connection=memory_connection, table=table), cull=QUIET)
    await store.put("exact", EXACT, ttl=60)
    assert same(EXACT, await store.get("exact"))
    raw = await raw_get(store, "default_collection", "exact")
    assert raw is not None
    (text,) = memory_connection.execute(f'SELECT value FROM "{table}"').fetchone() or ("",)
    assert text == msgspec.json.format(encode_value(EXACT), indent=0).decode(), "the value's text, as kvrt wrote it"
    assert same(EXACT, json.loads(text)), "what any JSON reader (the reference's) gets"
    assert json.loads(text) == json.loads(raw)["value"]


async def test_a_table_of_another_layout_is_refused_at_spawn(memory_connection: duckdb.DuckDBPyConnection) -> None:
    table = fresh_table()
    memory_connection.execute(f'CREATE TABLE "{table}" (collection VARCHAR, key VARCHAR, payload VARCHAR)')
    async with Runtime() as runtime:
        with pytest.raises(StoreSetupError, match="no column created_at, expires_at, value, version"):
            await runtime.spawn(DuckDBBackend(connection=memory_connection, table=table))


HOLDER = "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.read()"


@pytest.fixture(scope="module")
def held_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A database file another process holds open for writing (one process for both loops' tests)."""
    path = tmp_path_factory.mktemp("held") / "held.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        yield path
    finally:
        holder.communicate("")


async def test_a_file_another_process_holds_is_a_clear_setup_error(held_file: Path) -> None:
    async with Runtime() as runtime:
        with pytest.raises(StoreSetupError, match="could not open the DuckDB database") as raised:
            await runtime.spawn(DuckDBBackend(held_file))
    assert "lock" in str(raised.value)

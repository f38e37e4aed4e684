"""PostgreSQL killed under 64 callers (SIGKILL of the postmaster) and restarted 3 s later on the same data directory.

The server is the test's own, not the session's. It runs with ``fsync=off`` and
``synchronous_commit=on``: a commit is acknowledged once its WAL is written to the kernel, and a
SIGKILL of the server (not of the machine) leaves the kernel's page cache as it was, so every put
acknowledged before the kill must still be there after crash recovery.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from kvrt import Runtime
from kvrt.backends.postgresql import PostgreSQLBackend, is_transient
from kvrt.testing.outages import Load, write_through_outage
from kvrt.testing.postgres import PostgresServer, PostgresTarget
from kvrt.testing.servers import free_port

pytestmark = pytest.mark.anyio

CALLERS = 64
DEADLINE = 1.0
OUTAGE = 3.0
SLACK = 0.5  # scheduling on a shared 2-core machine, on top of the deadline


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    """A server of the test's own, to kill (its directory under the system's temporary one: postgres reaches it)."""
    with tempfile.TemporaryDirectory(prefix="kvrt-postgres-fault-") as directory:
        server = PostgresServer(Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.stop()


async def test_a_killed_server_loses_no_acknowledged_put_and_puts_resume(server: PostgresServer) -> None:
    load = Load(warm_up_at=500)
    async with Runtime() as runtime:  # default policies
        store = await runtime.spawn(PostgreSQLBackend(server.url), name="postgresql", request_timeout=DEADLINE)
        await write_through_outage(store, server, load, callers=CALLERS, outage=OUTAGE, after_restart=200, read=True)

        load.check_healed(DEADLINE, SLACK)
        assert runtime.stats()["postgresql"].state == "running"
        keys = list(load.acknowledged)
        every = store.with_timeout(30.0)  # a read-back of thousands of keys, not a deadline test
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            assert await every.get_many(chunk) == [load.acknowledged[key] for key in chunk], "no put lost"
    recovered = (server.log.read_text(errors="replace")).count("database system was interrupted")
    assert recovered == 1, "the restart ran crash recovery: the kill was a real one"


@pytest.mark.parametrize("outage", [0.5, 10.0], ids=lambda seconds: f"{seconds:g}s")
async def test_an_outage_of_any_length_heals_with_default_policies(server: PostgresServer, outage: float) -> None:
    """SIGKILL the server under a light write load, restart it ``outage`` seconds later on the same data."""
    load = Load(warm_up_at=200)
    async with Runtime() as runtime:  # default policies: nothing tuned for the outage
        store = await runtime.spawn(PostgreSQLBackend(server.url), name="postgresql", request_timeout=DEADLINE)
        await write_through_outage(store, server, load, callers=4, outage=outage)
        stats = runtime.stats()["postgresql"]
        assert stats.state == "running"
        load.check_healed(DEADLINE, SLACK, outage_seen=outage > DEADLINE)  # a short one may go unseen
        assert stats.restarts == 1, "one outage, one restart, however many reconnects it took"
        assert stats.holds == 0
        keys = list(load.acknowledged)
        assert await store.with_timeout(30.0).get_many(keys) == [load.acknowledged[key] for key in keys], "none lost"


async def test_connections_the_server_terminates_are_replaced_and_no_caller_sees_it(server: PostgresServer) -> None:
    target = PostgresTarget(server.url, "fault")
    terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'kvrt-terminated'"
    async with Runtime() as runtime:
        backend = PostgreSQLBackend(server.url, server_settings={"application_name": "kvrt-terminated"})
        store = await runtime.spawn(backend, name="postgresql", request_timeout=10.0)
        errors: list[BaseException] = []

        async def writer(number: int) -> None:
            for index in range(60):
                try:
                    await store.put(f"w{number}-{index}", {"i": index})
                except Exception as exc:
                    errors.append(exc)

        async with anyio.create_task_group() as group:
            for number in range(16):
                group.start_soon(writer, number)
            for _ in range(3):  # admin shutdown of every kvrt connection, three times over, mid-load
                await anyio.sleep(0.1)
                assert await anyio.to_thread.run_sync(target.sql, terminate), "there were connections to end"
        assert errors == []
        assert await store.get_many([f"w{n}-59" for n in range(16)]) == [{"i": 59}] * 16


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # asyncpg's own calls, to collect its errors
async def test_lost_connections_and_serialization_failures_are_transient_and_refusals_are_not(
    anyio_backend: str, server: PostgresServer
) -> None:
    errors: dict[str, BaseException] = {}

    async def caught(name: str, call: Any) -> None:
        try:
            await call
        except Exception as exc:
            errors[name] = exc
        else:
            raise AssertionError(f"{name} did not fail")

    await caught("refused", asyncpg.connect(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"))
    first, second, third = [await asyncpg.connect(server.url) for _ in range(3)]
    try:
        await first.execute("CREATE TABLE t (k int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0)")
        await first.execute("CREATE ROLE nobody")
        for connection in (first, second):
            await connection.execute("BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT v FROM t")
        await first.execute("UPDATE t SET v = 1; COMMIT")
        await caught("serialization", second.execute("UPDATE t SET v = 2"))
        await second.execute("ROLLBACK")
        await caught("syntax", first.execute("SELEKT 1"))
        await caught("duplicate", first.execute("INSERT INTO t VALUES (1, 0)"))
        await caught("bad json", first.execute("SELECT $1::jsonb", '"a\\u0000"'))
        await caught("denied", first.execute("SET ROLE nobody; SELECT * FROM t"))
        await first.execute("RESET ROLE")
        await first.execute("SELECT pg_terminate_backend($1)", third.get_server_pid())
        await caught("terminated", third.execute("SELECT 1"))
        await asyncio.sleep(0)
        await caught("closed", third.execute("SELECT 1"))
    finally:
        for connection in (first, second, third):
            connection.terminate()
    assert {name for name, error in errors.items() if is_transient(error)} == {
        "refused",
        "serialization",
        "terminated",
        "closed",
    }, {name: type(error).__name__ for name, error in errors.items()}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the backend's own calls, to look at its connections
async def test_a_kept_connection_the_server_ended_is_replaced_before_it_is_used(
    anyio_backend: str, server: PostgresServer
) -> None:
    target = PostgresTarget(server.url, "fault")
    backend = PostgreSQLBackend(server.url, server_settings={"application_name": "kvrt-kept"})
    await backend.open()
    try:
        await backend.put_many("c", ["k"], [b'{"value": {"v": 1}}'], [None])
        (kept,) = backend._idle
        assert backend.pool.get_idle_size() == 1, "the pool holds another, made to create the table: it ends too"
        ended = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'kvrt-kept'"
        assert await anyio.to_thread.run_sync(target.sql, ended)
        with anyio.fail_after(5):
            while kept._con is not None and not kept.is_closed():  # noqa: ASYNC110 - asyncpg sees the socket close
                await anyio.sleep(0.01)
        assert await backend.get_many("c", ["k"]) == [
            b'{"collection": "c", "key": "k", "value": {"v": 1}, "version": 1}'
        ], "no error: the pool gave a new connection"
    finally:
        await backend.close()


def test_the_sqlstates_of_outages_are_transient_and_those_of_refusals_are_not() -> None:
    outages = [
        asyncpg.exceptions.AdminShutdownError,
        asyncpg.exceptions.CrashShutdownError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.ConnectionDoesNotExistError,
        asyncpg.exceptions.SerializationError,
        asyncpg.exceptions.DeadlockDetectedError,
        asyncpg.exceptions.TooManyConnectionsError,
        asyncpg.exceptions.QueryCanceledError,
        asyncpg.exceptions.LockNotAvailableError,
        asyncpg.exceptions.ReadOnlySQLTransactionError,
    ]
    refusals = [
        asyncpg.exceptions.PostgresSyntaxError,
        asyncpg.exceptions.InsufficientPrivilegeError,
        asyncpg.exceptions.UndefinedTableError,
        asyncpg.exceptions.UniqueViolationError,
        asyncpg.exceptions.UntranslatableCharacterError,
        asyncpg.exceptions.InvalidPasswordError,
        asyncpg.exceptions.ProgramLimitExceededError,
    ]
    assert [kind.__name__ for kind in outages if not is_transient(kind("x"))] == []
    assert [kind.__name__ for kind in refusals if is_transient(kind("x"))] == []
    assert is_transient(asyncpg.exceptions.TargetServerAttributeNotMatched("no primary"))
    assert not is_transient(
        asyncpg.exceptions.InterfaceError("the server expects 2 arguments for this query, 1 was passed")
    )
    assert not is_transient(ValueError("x"))

"""The PostgreSQL backend against a real server: the machine's PostgreSQL as a local process, or one you point at."""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

import kvrt
from kvrt import Runtime
from kvrt.backends.postgresql import PostgreSQLBackend, jsonb_text, stored_name
from kvrt.entry import encode_value
from kvrt.errors import InvalidKeyError, KeyValueError, StoreSetupError
from kvrt.policies import CullPolicy
from kvrt.testing import ConformanceSuite
from kvrt.testing.conformance import eventually, get_concurrently, listing, raw_get, raw_put, same, sleep_past
from kvrt.testing.logins import BAD_PASSWORD, GOOD_PASSWORD, logins_shown
from kvrt.testing.postgres import PostgresServer, PostgresTarget
from kvrt.urls import parse_url, redacted

pytestmark = pytest.mark.anyio

QUIET = CullPolicy(interval=3600.0)  # no background cull to be counted among a test's statements


class TestPostgreSQLConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, postgresql: PostgresTarget, postgresql_table: str) -> PostgreSQLBackend:
        return PostgreSQLBackend(postgresql.url, table=postgresql_table)


def rows(postgresql: PostgresTarget, table: str, where: str = "TRUE", *args: Any) -> list[dict[str, Any]]:
    """The rows of ``table`` as the server holds them (``value`` as JSONB's text, its type beside it)."""
    return postgresql.sql(
        f"SELECT collection, key, value::text AS value, jsonb_typeof(value) AS kind, ttl, created_at, expires_at "
        f'FROM "{table}" WHERE {where} ORDER BY collection, key',
        *args,
    )


async def test_64_concurrent_gets_are_one_select_and_64_puts_one_insert(
    runtime: Runtime, postgresql: PostgresTarget, postgresql_table: str
) -> None:
    store = await runtime.spawn(PostgreSQLBackend(postgresql.url, table=postgresql_table), cull=QUIET)
    names = [f"k{i}" for i in range(64)]
    before = postgresql.statements(postgresql_table)
    async with anyio.create_task_group() as group:
        for i, name in enumerate(names):
            group.start_soon(store.put, name, {"i": i})
    puts = postgresql.statements(postgresql_table) - before
    found = await get_concurrently(store, names)
    assert found == {name: {"i": i} for i, name in enumerate(names)}
    gets = postgresql.statements(postgresql_table) - before - puts
    # what the server ran; under trio the first caller may cross to the asyncio host alone
    assert set(puts) == {"INSERT"}, puts
    assert puts["INSERT"] <= 2, puts
    assert set(gets) == {"SELECT"}, gets
    assert gets["SELECT"] <= 2, gets
    assert await store.delete_many([*names, "absent"]) == 64
    assert postgresql.statements(postgresql_table) - before - puts - gets == {"DELETE": 1}


async def test_rows_are_the_references_layout(
    runtime: Runtime, postgresql: PostgresTarget, postgresql_table: str
) -> None:
    store = await runtime.spawn(PostgreSQLBackend(postgresql.url, table=postgresql_table))
    await store.put("u1", {"name": "Alice", "n": [1, 2.5, None]}, collection="users", ttl=100)
    columns = postgresql.sql(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_name = $1",
        postgresql_table,
    )
    assert {(c["column_name"], c["data_type"], c["is_nullable"]) for c in columns} == {
        ("collection", "text", "NO"),
        ("key", "text", "NO"),
        ("value", "jsonb", "NO"),
        ("ttl", "double precision", "YES"),
        ("created_at", "timestamp with time zone", "YES"),
        ("expires_at", "timestamp with time zone", "YES"),
    }
    indexes = {
        row["indexname"]: row["indexdef"]
        for row in postgresql.sql("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = $1", postgresql_table)
    }
    assert indexes[f"{postgresql_table}_pkey"].endswith("(collection, key)")
    assert indexes[f"idx_{postgresql_table}_expires_at"].endswith("(expires_at) WHERE (expires_at IS NOT NULL)")
    (row,) = rows(postgresql, postgresql_table)
    assert (row["collection"], row["key"], row["kind"]) == ("users", "u1", "object")
    assert json.loads(row["value"]) == {"name": "Alice", "n": [1, 2.5, None]}
    assert 99.999 < row["ttl"] <= 100.0
    assert abs((row["expires_at"] - row["created_at"]).total_seconds() - 100) < 0.001
    first_created = row["created_at"]
    await store.put("u1", {"name": "Bob"}, collection="users")  # no TTL: the expiry goes, as the reference's does
    (row,) = rows(postgresql, postgresql_table)
    assert (row["ttl"], row["expires_at"]) == (None, None)
    assert row["created_at"] > first_created, "the whole row is replaced (the reference keeps created_at)"
    assert json.loads(row["value"]) == {"name": "Bob"}


EXACT: dict[str, dict[str, Any]] = {
    "NUL in a string": {"s": "a\x00b"},
    "NUL in a field name": {"a\x00": 1},
    "float past 1e16": {"f": 1e16, "g": [-1.5e300, 1.7976931348623157e308]},
    "tiny floats": {"f": 5e-324, "g": 1e-7, "h": -2.5e-10},
    "negative zero": {"z": -0.0},
    "all of them": {"m": [1e16, "x\x00", -0.0, {"deep\x00": [1e22]}]},
    "keys JSONB reorders": {"bb": 1, "a": 2, "ccc": {"z": 1, "yy": 2, "": 3}},
    "strings that look like numbers": {"uuid": "123e4567-e89b-12d3", "date": "2025-01-01", "esc": "\\u0000 -0.0"},
}
HELD_AS_TEXT = {"NUL in a string", "NUL in a field name", "negative zero", "all of them"}


@pytest.mark.parametrize("name", EXACT)
async def test_values_jsonb_would_change_round_trip_exactly(
    runtime: Runtime, postgresql: PostgresTarget, postgresql_table: str, name: str
) -> None:
    value = EXACT[name]
    store = await runtime.spawn(PostgreSQLBackend(postgresql.url, table=postgresql_table))
    await store.put_many(["plain", "odd"], [{"v": 1}, value])
    plain, odd = await store.get_many(["plain", "odd"])
    assert same({"v": 1}, plain)
    assert odd is not None
    assert same(value, odd)
    if name == "negative zero":
        assert math.copysign(1.0, odd["z"]) == -1.0, "the sign of a negative zero is kept"
    raw = await raw_get(store, "default_collection", "odd")
    assert raw is not None
    raw = raw if isinstance(raw, bytes) else raw.encode()
    assert msgspec.json.format(encode_value(value), indent=0) in raw, "the document holds kvrt's own encoding"
    stored = {row["key"]: row for row in rows(postgresql, postgresql_table)}
    assert stored["plain"]["kind"] == "object"
    assert stored["odd"]["kind"] == ("string" if name in HELD_AS_TEXT else "object"), "JSONB as far as it can"


def test_floats_with_exponents_are_written_out_and_only_real_nuls_count() -> None:
    assert (
        jsonb_text(b'{"a":1e16,"b":"1e5","c":1.5e-7,"d":-1e2}')
        == '{"a":10000000000000000.0,"b":"1e5","c":0.00000015,"d":-100.0}'
    )
    assert jsonb_text(b'{"s":"a\\\\u0000"}') == '{"s":"a\\\\u0000"}', "an escaped backslash before u0000 is no NUL"
    assert jsonb_text(b'{"s":"a\\\\\\u0000"}') == json.dumps('{"s":"a\\\\\\u0000"}')
    assert jsonb_text(b'{"z":-0e3}') == json.dumps('{"z":-0e3}')
    assert jsonb_text(b'{"z":-0.05,"d":"2025-01-01"}') == '{"z":-0.05,"d":"2025-01-01"}'


async def test_names_text_cannot_hold_are_encoded_and_list_as_themselves(
    runtime: Runtime, postgresql: PostgresTarget, postgresql_table: str
) -> None:
    store = listing(await runtime.spawn(PostgreSQLBackend(postgresql.url, table=postgresql_table)))
    names = ["nul\x00inside", "%%looks encoded", "%", "plain-name_1", "ünï 🎉"]
    for name in names:
        await store.put(name, {"name": name}, collection=name)
    assert sorted(await store.collections()) == sorted(names)
    for name in names:
        assert await store.get(name, collection=name) == {"name": name}
        assert await store.keys(name) == [name]
    stored = {row["key"] for row in rows(postgresql, postgresql_table)}
    assert stored == {"%%nul%00inside", "%%%25%25looks encoded", "%", "plain-name_1", "ünï 🎉"}
    assert stored_name("a::b") == "a::b", "names the reference can read are kept as they are"
    assert await store.delete_many(names[:2], collection=names[0]) == 1


async def test_a_key_past_the_primary_keys_bound_is_an_invalid_key_and_its_neighbours_land(
    runtime: Runtime, postgresql: PostgresTarget, postgresql_table: str
) -> None:
    store = await runtime.spawn(PostgreSQLBackend(postgresql.url, table=postgresql_table))
    huge = "".join(uuid.uuid4().hex for _ in range(100))  # 3,200 bytes that do not compress
    errors: dict[str, KeyValueError] = {}

    async def put(key: str) -> None:
        try:
            await store.put(key, {"v": len(key)})
        except KeyValueError as exc:
            errors[key[:5]] = exc

    async with anyio.create_task_group() as group:  # one round, most likely: the worker finds the bad one
        group.start_soon(put, "small")
        group.start_soon(put, huge)
    assert list(errors) == [huge[:5]]
    assert isinstance(errors[huge[:5]], InvalidKeyError)
    assert "primary key" in str(errors[huge[:5]])
    assert await store.get_many(["small", huge]) == [{"v": 5}, None]


async def test_unreadable_documents_are_kept_as_they_came(
    runtime: Runtime, postgresql: PostgresTarget, postgresql_table: str
) -> None:
    store = await runtime.spawn(PostgreSQLBackend(postgresql.url, table=postgresql_table))
    for key, document in {
        "text": b"not json \x00 at all",
        "no value": b'{"created_at": "2025-01-01T00:00:00+00:00"}',
    }.items():
        await raw_put(store, "c", key, document)
        assert await raw_get(store, "c", key) == document.decode().replace("\x00", "\ufffd")


async def test_expired_rows_are_culled_in_the_background(
    runtime: Runtime, postgresql: PostgresTarget, postgresql_table: str
) -> None:
    store = await runtime.spawn(
        PostgreSQLBackend(postgresql.url, table=postgresql_table), cull=CullPolicy(interval=0.05, budget=8)
    )
    await store.put_many([f"e{i}" for i in range(30)], [{"i": i} for i in range(30)], ttl=0.2)
    await store.put("keep", {"v": 1})
    await store.put("later", {"v": 2}, ttl=100)
    await eventually(lambda: len(rows(postgresql, postgresql_table)) == 2, within=10, poll=0.05)
    assert [row["key"] for row in rows(postgresql, postgresql_table)] == ["keep", "later"]
    assert runtime.stats()["postgresql"].culled == 30


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the backend's own calls: asyncpg's loop
async def test_a_cull_step_removes_at_most_its_budget(
    anyio_backend: str, postgresql: PostgresTarget, postgresql_table: str
) -> None:
    backend = PostgreSQLBackend(postgresql.url, table=postgresql_table)
    await backend.open()
    try:
        past = time.time() - 1
        document = (
            b'{"created_at": "2020-01-01T00:00:00+00:00", "expires_at": "2020-01-01T00:00:01+00:00", "value": {}}'
        )
        await backend.put_many("c", [f"e{i}" for i in range(25)], [document] * 25, [past] * 25)
        await backend.put_many("c", ["live"], [b'{"value": {}}'], [None])
        assert [await backend.cull(10) for _ in range(3)] == [(10, False), (10, False), (5, True)]
        assert await backend.cull(10) == (0, True)
        assert [row["key"] for row in rows(postgresql, postgresql_table)] == ["live"]
    finally:
        await backend.close()


async def test_expired_rows_are_left_out_of_every_read(
    runtime: Runtime, postgresql: PostgresTarget, postgresql_table: str
) -> None:
    handle = await runtime.spawn(PostgreSQLBackend(postgresql.url, table=postgresql_table), cull=QUIET)
    store = listing(handle)
    await store.put("brief", {"v": 1}, collection="only-brief", ttl=0.2)
    await store.put("brief", {"v": 1}, ttl=0.2)
    await store.put("kept", {"v": 2})
    await sleep_past(time.time() + 0.2)
    assert len(rows(postgresql, postgresql_table)) == 3, "still there: no cull ran"
    assert await store.get_many(["brief", "kept"]) == [None, {"v": 2}]
    assert await raw_get(handle, "default_collection", "brief") is None, "the backend leaves it out itself"
    assert await store.keys() == ["kept"]
    assert await store.collections() == ["default_collection"]
    assert await store.delete("brief") is False


async def test_destroy_empties_the_table_and_nothing_else(
    runtime: Runtime, postgresql: PostgresTarget, postgresql_table: str
) -> None:
    other = postgresql.fresh_table()
    postgresql.sql(f'CREATE TABLE "{other}" (n int)')
    postgresql.sql(f'INSERT INTO "{other}" VALUES (1)')
    try:
        store = listing(await runtime.spawn(PostgreSQLBackend(postgresql.url, table=postgresql_table)))
        await store.put("k", {"v": 1}, collection="one")
        assert await store.destroy() is True
        assert rows(postgresql, postgresql_table) == [], "the table stays, empty"
        assert postgresql.sql(f'SELECT n FROM "{other}"') == [{"n": 1}]
        assert await store.destroy() is False
        await store.put("k", {"v": 2}, collection="one")
        assert await store.get("k", collection="one") == {"v": 2}
    finally:
        postgresql.drop(other)


async def test_a_missing_table_is_a_setup_error_that_names_it(
    runtime: Runtime, postgresql: PostgresTarget, postgresql_table: str
) -> None:
    with pytest.raises(StoreSetupError, match=postgresql_table) as missing:
        await runtime.spawn(PostgreSQLBackend(postgresql.url, table=postgresql_table, create_table=False))
    assert "create_table=True" in str(missing.value)
    postgresql.sql(f'CREATE TABLE "{postgresql_table}" (collection text, key text, value jsonb)')
    with pytest.raises(StoreSetupError, match="not laid out as kvrt's: no column created_at, expires_at, ttl"):
        await runtime.spawn(PostgreSQLBackend(postgresql.url, table=postgresql_table))


async def test_mixed_case_table_names_fold_to_the_references_table(
    runtime: Runtime, postgresql: PostgresTarget, postgresql_table: str
) -> None:
    store = await runtime.spawn(PostgreSQLBackend(postgresql.url, table=postgresql_table.upper()))
    await store.put("k", {"v": 1})
    assert len(rows(postgresql, postgresql_table)) == 1, "unquoted, the reference's MixedCase is mixedcase"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # a pool is made on the loop the worker runs on
async def test_a_pool_of_yours_is_used_and_left_open(
    anyio_backend: str, postgresql: PostgresTarget, postgresql_table: str
) -> None:
    import asyncpg

    sent: list[str] = []

    async def init(connection: Any) -> None:
        connection.add_query_logger(lambda record: sent.append(record.query.split(None, 1)[0]))

    pool = await asyncpg.create_pool(postgresql.url, min_size=1, max_size=2, init=init)
    try:
        backend = PostgreSQLBackend(pool=pool, table=postgresql_table)
        assert repr(backend) == f"<PostgreSQLBackend a pool of yours table={postgresql_table!r}>"
        async with Runtime() as runtime:
            store = await runtime.spawn(backend)
            await store.put("k", {"v": 1})
            assert await store.get("k") == {"v": 1}
        assert "INSERT" in sent, "kvrt used the pool given"
        assert await pool.fetchval(f'SELECT value::text FROM "{postgresql_table}" WHERE key = $1', "k") == '{"v": 1}'
    finally:
        await pool.close()


def test_bad_arguments_are_refused_where_the_backend_is_made() -> None:
    with pytest.raises(ValueError, match="url or a pool"):
        PostgreSQLBackend("postgresql://h/db", pool=object())
    with pytest.raises(ValueError, match="pool options"):
        PostgreSQLBackend(pool=object(), max_size=3)
    with pytest.raises(ValueError, match="an asyncpg pool"):
        PostgreSQLBackend(pool=object())
    with pytest.raises(ValueError, match="postgresql://"):
        PostgreSQLBackend("mysql://u:pw-hidden@h/db")
    for table in ("", "1abc", "a-b", "x" * 64, "has space", 'a"b', "ünï", "a.b"):
        with pytest.raises(ValueError, match="table must be") as raised:
            PostgreSQLBackend(table=table)
        assert "pw" not in str(raised.value)
    PostgreSQLBackend(table="_" + "x" * 62)
    assert repr(PostgreSQLBackend("postgresql://app:pw-hidden@h1:1,h2:2/db?sslmode=require")) == (
        "<PostgreSQLBackend postgresql://h1:1,h2:2/db table='kvrt'>"
    )


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the backend's own open()
async def test_a_driver_error_that_would_show_the_password_is_replaced(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncpg

    async def failing(dsn: str, **options: Any) -> None:
        raise ValueError(f"cannot read {dsn}")

    monkeypatch.setattr(asyncpg, "create_pool", failing)
    for url in ("postgresql://app:pw-s3cr3t-9@h/db", "postgresql://app@h/db?password=pw-s3cr3t-9"):
        with pytest.raises(StoreSetupError, match="could not connect to PostgreSQL: ValueError") as raised:
            await PostgreSQLBackend(url).open()
        assert raised.value.__cause__ is None
        assert raised.value.__context__ is None
        assert "pw-s3cr3t-9" not in repr(PostgreSQLBackend(url))


@pytest.fixture(scope="module")
def login_server() -> Iterator[PostgresServer]:
    """A server of the tests' own that wants a password from everyone but ``postgres``, and a role ``kvrt``."""
    with tempfile.TemporaryDirectory(prefix="kvrt-postgres-login-") as directory:
        server = PostgresServer(Path(directory))
        server.start()
        try:
            PostgresTarget(server.url, "login").sql(f"CREATE ROLE kvrt LOGIN PASSWORD '{GOOD_PASSWORD}'")
            hba = server.data / "pg_hba.conf"
            hba.write_text("host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
            PostgresTarget(server.url, "login").sql("SELECT pg_reload_conf()")
            yield server
        finally:
            server.stop()


async def test_a_password_appears_nowhere_and_a_refused_login_is_a_setup_error(login_server: PostgresServer) -> None:
    target = PostgresTarget(login_server.url, "login")
    target.sql("GRANT CREATE ON SCHEMA public TO kvrt")
    base = f"postgresql://kvrt:{{}}@127.0.0.1:{login_server.port}/postgres"
    refused, text = await logins_shown(lambda password: PostgreSQLBackend(base.format(password), table="logins"))
    assert isinstance(refused, StoreSetupError), text
    assert "refused kvrt's login" in str(refused)
    assert GOOD_PASSWORD not in text
    assert BAD_PASSWORD not in text


async def test_a_role_that_may_not_create_the_table_is_told_so_at_spawn(login_server: PostgresServer) -> None:
    target = PostgresTarget(login_server.url, "login")
    target.sql("REVOKE CREATE ON SCHEMA public FROM kvrt")
    async with Runtime() as runtime:
        backend = PostgreSQLBackend(
            f"postgresql://kvrt:{GOOD_PASSWORD}@127.0.0.1:{login_server.port}/postgres", table="denied"
        )
        with pytest.raises(StoreSetupError, match="denied kvrt the table 'denied'"):
            await runtime.spawn(backend)


async def test_postgresql_urls_name_the_table_and_pass_the_rest_to_asyncpg(
    postgresql: PostgresTarget, postgresql_table: str
) -> None:
    backend, spawn = parse_url(
        "postgresql://app:pw@h1:1,h2:2/db?table=cache&create_table=false&pool_size=2&sslmode=disable&name=sessions"
    )
    assert isinstance(backend, PostgreSQLBackend)
    assert (backend.table, backend._create_table, backend._options["max_size"]) == ("cache", False, 2)
    assert backend._url == "postgresql://app:pw@h1:1,h2:2/db?sslmode=disable"
    assert backend.capabilities.concurrency == 2
    assert spawn == {"name": "sessions"}
    old, _ = parse_url("postgres://h/db")
    assert isinstance(old, PostgreSQLBackend)
    url = postgresql.url.replace("postgresql://", "postgres://")
    separator = "&" if "?" in url else "?"
    with kvrt.Runtime.detached() as runtime:
        handle = runtime.open(f"{url}{separator}table={postgresql_table}")
        await handle.put("k", {"from": "url"})
        assert await handle.get("k") == {"from": "url"}
    assert [row["key"] for row in rows(postgresql, postgresql_table)] == ["k"]
    assert (
        redacted("postgresql://app:hunter2@h:5432/db?sslmode=require")
        == "postgresql://app:***@h:5432/db?sslmode=require"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://h/db?table=1bad", "table must be a PostgreSQL identifier"),
        ("postgresql://h/db?table=", "'table' must not be empty"),
        ("postgresql://h/db?create_table=maybe", "'create_table' must be true or false"),
        ("postgresql://h/db?pool_size=0", "'pool_size' must be a positive whole number"),
    ],
)
def test_bad_postgresql_urls_say_why(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_url(url)

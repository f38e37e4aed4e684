"""The MongoDB backend against SecantusDB (MongoDB-compatible, not mongod), or mongod where one is given."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pymongo
import pytest

from kvrt import Runtime
from kvrt.backends.mongodb import MongoDBBackend, encode_collection
from kvrt.errors import StoreSetupError
from kvrt.testing import ConformanceSuite
from kvrt.testing.conformance import get_concurrently, listing
from kvrt.testing.logins import BAD_PASSWORD, GOOD_PASSWORD, logins_shown
from kvrt.testing.servers import MongoTarget, SecantusServer, sent_commands

pytestmark = pytest.mark.anyio


class TestMongoDBConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, mongodb: MongoTarget, database: str) -> MongoDBBackend:
        return MongoDBBackend(mongodb.url, database=database)


class TestMongoDBConformanceWithAMotorClient(ConformanceSuite):
    """The same contract through a user's Motor client, which kvrt uses and leaves open."""

    @pytest.fixture
    def backend(self, mongodb: MongoTarget, database: str) -> Iterator[MongoDBBackend]:
        from motor.motor_asyncio import AsyncIOMotorClient

        client: Any = AsyncIOMotorClient(mongodb.url)
        yield MongoDBBackend(client=client, database=database)
        client.close()


def raw(mongodb: MongoTarget, database: str) -> Any:
    """A blocking client's view of ``database``, to see what the server holds."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongodb.url, tz_aware=True)
    return client, client[database]


async def test_64_concurrent_gets_are_one_find_and_64_puts_one_update(
    runtime: Runtime, mongodb: MongoTarget, database: str
) -> None:
    listener = sent_commands()
    store = await runtime.spawn(MongoDBBackend(mongodb.url, database=database, event_listeners=[listener]))
    await store.put("warm", {"v": 0})  # makes the collection's indexes: once per worker and collection
    names = [f"k{i}" for i in range(64)]
    listener.counts.clear()
    async with anyio.create_task_group() as group:
        for i, name in enumerate(names):
            group.start_soon(store.put, name, {"i": i})
    puts = dict(listener.counts)
    listener.counts.clear()
    found = await get_concurrently(store, names)
    assert found == {name: {"i": i} for i, name in enumerate(names)}
    # under trio the first caller may cross to the asyncio host alone, before the others arrive
    assert set(puts) == {"update"}, puts
    assert puts["update"] <= 2, puts
    assert set(listener.counts) == {"find"}, listener.counts
    assert listener.counts["find"] <= 2, listener.counts
    listener.counts.clear()
    assert await store.delete_many([*names, "absent"]) == 64
    assert listener.counts == {"find": 1, "delete": 1}


async def test_documents_are_the_references_layout_with_unique_keys(
    runtime: Runtime, mongodb: MongoTarget, database: str
) -> None:
    store = await runtime.spawn(MongoDBBackend(mongodb.url, database=database))
    await store.put("u1", {"name": "Alice", "n": [1, 2.5, None]}, collection="users", ttl=100)
    client, db = raw(mongodb, database)
    with client:
        document = db["users"].find_one({"key": "u1"}, {"_id": 0})
        assert set(document) == {"key", "collection", "version", "value", "created_at", "expires_at"}
        assert document["value"] == {"object": {"n": [1, 2.5, None], "name": "Alice"}}
        assert (document["collection"], document["version"]) == ("users", 1)
        assert 99 < (document["expires_at"] - document["created_at"]).total_seconds() <= 100.001
        indexes = db["users"].index_information()
        assert indexes["key_1"].get("unique") is True
        assert indexes["expires_at_1"]["expireAfterSeconds"] == 0
        await store.put("u1", {"name": "Bob"}, collection="users")  # no TTL: the expiry goes (the reference keeps it)
        document = db["users"].find_one({"key": "u1"}, {"_id": 0})
        assert "expires_at" not in document
        assert document["value"] == {"object": {"name": "Bob"}}
        assert db["users"].count_documents({"key": "u1"}) == 1


@pytest.mark.parametrize(
    "value",
    [{"big": 10**20}, {"small": -(10**19)}, {"a\x00b": 1}, {"$gt": 1, "a.b": {"$in": [1]}}, {"": 1}],
    ids=["int past 64 bits", "int below 64 bits", "NUL in a field name", "operators and dots", "empty field name"],
)
async def test_a_value_bson_cannot_hold_as_it_is_round_trips(
    runtime: Runtime, mongodb: MongoTarget, database: str, value: dict[str, Any]
) -> None:
    store = await runtime.spawn(MongoDBBackend(mongodb.url, database=database))
    await store.put_many(["plain", "odd"], [{"v": 1}, value])
    assert await store.get_many(["plain", "odd"]) == [{"v": 1}, value]
    client, db = raw(mongodb, database)
    with client:
        assert db["default_collection"].find_one({"key": "plain"})["value"] == {"object": {"v": 1}}


def test_collection_names_are_kept_where_mongodb_allows_them() -> None:
    for plain in ("users", "a.b", "ünï", "with space", "a/b", "x.y.z"):
        assert encode_collection(plain) == plain
    for odd, stored in {
        "$gt": "%24gt",
        "50%": "50%25",
        ".": "%2E",
        "..": "%2E%2E",
        "../../etc/passwd": "%2E./%2E./etc/passwd",
        "a..b": "a%2E.b",
        "end.": "end%2E",
        "system.users": "%73ystem.users",
        "nul\x00": "nul%00",
    }.items():
        assert encode_collection(odd) == stored


async def test_long_and_odd_collection_names_list_as_themselves(
    runtime: Runtime, mongodb: MongoTarget, database: str
) -> None:
    store = listing(await runtime.spawn(MongoDBBackend(mongodb.url, database=database)))
    names = ["n" * 300, "é" * 200, "%%looks hashed", "system.x", "$", "a..b"]
    for name in names:
        await store.put("k", {"name": name}, collection=name)
    assert sorted(await store.collections()) == sorted(names)
    for name in names:
        assert await store.get("k", collection=name) == {"name": name}
    client, db = raw(mongodb, database)
    with client:
        stored = db.list_collection_names()
        assert all(len(f"{database}.{name}".encode()) <= 235 for name in stored)
        assert len(stored) == len(names)


async def test_a_password_appears_nowhere_and_a_refused_login_is_a_setup_error(tmp_path: Path) -> None:
    server = SecantusServer(tmp_path / "secantus")
    server.start()
    try:
        client: pymongo.MongoClient[dict[str, Any]]
        with pymongo.MongoClient(server.url) as client:
            client.admin.command("createUser", "kvrt", pwd=GOOD_PASSWORD, roles=["root"])
        server.stop()
        server.auth = True
        server.start()
        base = server.url.replace("mongodb://", "mongodb://kvrt:{}@")
        refused, text = await logins_shown(lambda password: MongoDBBackend(base.format(password), database="auth"))
        assert isinstance(refused, StoreSetupError), text
        assert "login" in str(refused)
        assert GOOD_PASSWORD not in text
        assert BAD_PASSWORD not in text
    finally:
        server.stop()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # an AsyncMongoClient is asyncio's; Motor's runs under trio
async def test_a_client_of_yours_is_used_and_left_open(anyio_backend: str, mongodb: MongoTarget, database: str) -> None:
    listener = sent_commands()
    client: Any = pymongo.AsyncMongoClient(mongodb.url, event_listeners=[listener])
    try:
        async with Runtime() as runtime:
            store = await runtime.spawn(MongoDBBackend(client=client, database=database))
            await store.put("k", {"v": 1})
        assert listener.counts["update"] == 1, "kvrt used the client given"
        found = await client[database]["default_collection"].find_one({"key": "k"})  # still open
        assert found["value"] == {"object": {"v": 1}}
    finally:
        await client.close()


def test_bad_arguments_are_refused_where_the_backend_is_made() -> None:
    with pytest.raises(ValueError, match="url or a client"):
        MongoDBBackend("mongodb://127.0.0.1", client=object())
    with pytest.raises(ValueError, match="mongodb://"):
        MongoDBBackend("redis://127.0.0.1")
    for database in ("", "a.b", "a/b", "x" * 64, "has space", "$db"):
        with pytest.raises(ValueError, match="database must be"):
            MongoDBBackend(database=database)
    assert repr(MongoDBBackend("mongodb://user:pw-hidden@h1:1,h2:2/admin?tls=true")) == (
        "<MongoDBBackend mongodb://h1:1,h2:2 database='kvrt'>"
    )


async def test_the_servers_ttl_index_removes_expired_documents(tmp_path: Path) -> None:
    server = SecantusServer(tmp_path / "secantus", ttl_sweep_seconds=0.2)
    server.start()
    try:
        async with Runtime() as runtime:
            store = await runtime.spawn(MongoDBBackend(server.url, database="ttl"))
            await store.put("brief", {"v": 1}, ttl=0.3)
            await store.put("kept", {"v": 2})
            client: pymongo.MongoClient[dict[str, Any]]
            with pymongo.MongoClient(server.url) as client:
                target: Any = client["ttl"]["default_collection"]
                with anyio.fail_after(10):
                    while target.count_documents({"key": "brief"}):  # noqa: ASYNC110 - the server's sweep, unsignalled
                        await anyio.sleep(0.1)
                assert target.count_documents({"key": "kept"}) == 1
            assert await store.get_many(["brief", "kept"]) == [None, {"v": 2}]
    finally:
        server.stop()


async def test_destroy_in_a_shared_database_drops_only_kvrts_collections(
    runtime: Runtime, mongodb: MongoTarget, database: str
) -> None:
    store = listing(await runtime.spawn(MongoDBBackend(mongodb.url, database=database)))
    await store.put("k", {"v": 1}, collection="one")
    client, db = raw(mongodb, database)
    with client:
        db["the_apps_own"].insert_one({"order": 1})
        assert sorted(await store.collections()) == ["one"], "a collection of other documents is not listed"
        assert await store.destroy() is True
        assert db.list_collection_names() == ["the_apps_own"]
        assert db["the_apps_own"].count_documents({}) == 1
        await store.put("k", {"v": 1}, collection="two")
        db["the_apps_own"].drop()
        assert await store.destroy() is True
        assert database not in client.list_database_names(), "owning the whole database, kvrt drops it"

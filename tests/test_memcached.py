"""The memcached backend against a real memcached server."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import anyio
import pytest

import kvrt
from kvrt import Runtime
from kvrt.backends.memcached import MemcachedBackend, exptime, stored_key
from kvrt.backends.memcached_wire import MemcachedConnectionError
from kvrt.errors import EntryTooLargeError, KeyValueError
from kvrt.testing import ConformanceSuite
from kvrt.testing.conformance import get_concurrently, raw_get, sleep_past
from kvrt.testing.memcached import MemcachedServer, MemcachedTarget, send
from kvrt.testing.servers import free_port
from kvrt.urls import parse_url

pytestmark = pytest.mark.anyio


class TestMemcachedConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, memcached_server: MemcachedTarget) -> MemcachedBackend:
        memcached_server.flush()
        return MemcachedBackend(memcached_server.host, memcached_server.port)


class TestMemcachedConformanceWithAnAiomcacheClient(ConformanceSuite):
    """The same contract through a user's aiomcache client, which kvrt uses (a command at a time) and leaves open.

    An aiomcache client is an asyncio application's, closed on its loop: so asyncio only.
    """

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def backend(self, memcached_server: MemcachedTarget) -> AsyncIterator[MemcachedBackend]:
        import aiomcache

        memcached_server.flush()
        client = aiomcache.Client(memcached_server.host, memcached_server.port)
        yield MemcachedBackend(client=client)
        await client.close()


@pytest.fixture(scope="module")
def verbose_server() -> Iterator[MemcachedServer]:
    """A server of this module's own that logs every command it receives, with its connection."""
    server = MemcachedServer(verbose=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def verbose_store(runtime: Runtime, verbose_server: MemcachedServer) -> Any:
    return await runtime.spawn(MemcachedBackend(port=verbose_server.port))


def item(target: MemcachedTarget | MemcachedServer, key: bytes) -> bytes | None:
    """Return what the server holds under ``key``, read with a plain socket."""
    host = getattr(target, "host", "127.0.0.1")
    reply = send(host, target.port, b"get " + key)
    if reply == b"END\r\n":
        return None
    header, _, rest = reply.partition(b"\r\n")
    return rest[: int(header.split()[3])]


def expiry(target: MemcachedTarget, key: bytes) -> int:
    """Return the seconds memcached will keep ``key`` (a meta get of its TTL), -1 for never."""
    reply = send(target.host, target.port, b"mg " + key + b" t").split()
    assert reply[0] == b"HD", reply
    return int(reply[1].removeprefix(b"t"))


async def test_64_concurrent_gets_are_one_get_line_and_puts_and_deletes_one_connection(
    verbose_server: MemcachedServer, verbose_store: Any
) -> None:
    names = [f"k{i}" for i in range(64)]
    already = len(verbose_server.received())
    async with anyio.create_task_group() as group:
        for i, name in enumerate(names):
            group.start_soon(verbose_store.put, name, {"i": i})
    found = await get_concurrently(verbose_store, names)
    assert found == {name: {"i": i} for i, name in enumerate(names)}
    assert await verbose_store.delete_many([*names, "absent"]) == 64

    async def logged() -> None:
        while not verbose_server.received()[-1][1].startswith("delete default_collection::absent"):  # noqa: ASYNC110
            await anyio.sleep(0.01)  # the server's log is a file, written as it works

    with anyio.fail_after(5):
        await logged()
    received = verbose_server.received()[already:]
    sets = [(connection, line) for connection, line in received if line.startswith("set ")]
    gets = [line for _, line in received if line.startswith("get ")]
    deletes = [(connection, line) for connection, line in received if line.startswith("delete ")]
    assert len(sets) == 64
    assert len({connection for connection, _ in sets}) <= 2, "pipelined on one connection (trio: the first may lead)"
    # the gets of the 64 callers, then the delete's read of what is there: one line each
    assert len(gets) <= 3, gets
    assert len(gets[-1].split()) == 1 + 65
    assert len(deletes) == 65
    assert len({connection for connection, _ in deletes}) == 1


async def test_items_are_the_references_layout(runtime: Runtime, memcached_server: MemcachedTarget) -> None:
    memcached_server.flush()
    store = await runtime.spawn(MemcachedBackend(memcached_server.host, memcached_server.port))
    await store.put("u1", {"name": "Alice"}, collection="users", ttl=100)
    document = json.loads(item(memcached_server, b"users::u1") or b"null")
    assert document["value"] == {"name": "Alice"}
    assert document["key"] == "u1"
    assert document["collection"] == "users"
    assert document["expires_at"]
    await store.put("k", {"v": 1}, collection="a::b")  # the reference's separator in a name: kept apart
    await store.put("b::k", {"v": 2}, collection="a")
    assert item(memcached_server, b"a%3A%3Ab::k") is not None
    assert await store.get("k", collection="a::b") == {"v": 1}
    assert await store.get("b::k", collection="a") == {"v": 2}


def test_expiry_is_rounded_up_with_a_second_to_spare_and_absolute_past_30_days() -> None:
    now = 1_700_000_000.0
    assert exptime(None, now) == 0
    assert exptime(now + 0.2, now) == 2
    assert exptime(now + 10.0, now) == 11
    assert exptime(now - 5, now) == 1  # already expired: gone at once, and its document says so meanwhile
    month = 30 * 24 * 3600
    assert exptime(now + month - 1, now) == month
    assert exptime(now + month, now) == int(now) + month + 1
    assert exptime(now + month + 10, now) == int(now) + month + 11
    assert exptime(2**31 + 5.0, now) == 0  # memcached cannot say past 2038: the document does


async def test_the_server_keeps_an_item_at_least_as_long_as_its_ttl(
    runtime: Runtime, memcached_server: MemcachedTarget
) -> None:
    memcached_server.flush()
    store = await runtime.spawn(MemcachedBackend(memcached_server.host, memcached_server.port))
    await store.put("short", {"v": 1}, ttl=10.2)
    await store.put("long", {"v": 1}, ttl=40 * 24 * 3600)
    await store.put("forever", {"v": 1})
    assert 11 <= expiry(memcached_server, b"default_collection::short") <= 12
    # an absolute time: memcached counts it from its start, rounded down by up to a minute (never earlier)
    assert 40 * 24 * 3600 <= expiry(memcached_server, b"default_collection::long") <= 40 * 24 * 3600 + 65
    assert expiry(memcached_server, b"default_collection::forever") == -1


async def test_an_entry_past_its_document_expiry_is_never_returned_though_memcached_holds_it(
    runtime: Runtime, memcached_server: MemcachedTarget
) -> None:
    memcached_server.flush()
    store = await runtime.spawn(MemcachedBackend(memcached_server.host, memcached_server.port))
    await store.put("brief", {"v": 1}, ttl=0.3)
    await store.put("other", {"v": 1}, ttl=0.3)
    found = await raw_get(store, "default_collection", "brief")
    assert found is not None
    await sleep_past(datetime.fromisoformat(json.loads(found)["expires_at"]).timestamp())
    assert item(memcached_server, b"default_collection::brief") is not None, "memcached still holds it"
    assert await store.get("brief") is None
    assert await store.ttl("brief") == (None, None)
    assert await store.delete("other") is False, "an expired entry was not there to delete"


@pytest.mark.parametrize(
    "key",
    ["with space", "new\nline", "tab\there", "x" * 300, "é" * 130, "ctrl\x85"],
    ids=["space", "newline", "tab", "300 bytes", "260 bytes of é", "C1 control"],
)
async def test_names_memcached_cannot_hold_are_hashed_and_read_back(
    runtime: Runtime, memcached_server: MemcachedTarget, key: str
) -> None:
    memcached_server.flush()
    store = await runtime.spawn(MemcachedBackend(memcached_server.host, memcached_server.port))
    await store.put(key, {"k": key})
    await store.put(key + "!", {"k": "neighbour"})
    assert await store.get(key) == {"k": key}
    stored = stored_key("default_collection", key)
    assert stored.startswith(b"%%")
    assert len(stored) == 66
    assert json.loads(item(memcached_server, stored) or b"null")["key"] == key, "the name is kept in the document"
    assert await store.delete(key) is True
    assert await store.get(key + "!") == {"k": "neighbour"}


async def test_an_item_past_the_servers_size_bound_is_refused_naming_it_and_its_neighbours_land(
    runtime: Runtime,
) -> None:
    server = MemcachedServer(item_size=2 * 1024 * 1024)  # not the default, to show the bound is the server's
    server.start()
    try:
        store = await runtime.spawn(MemcachedBackend(port=server.port))
        await store.put("big", {"v": "small"})
        with pytest.raises(EntryTooLargeError, match="2,097,152 bytes"):
            await store.put("big", {"v": "x" * 2_200_000})
        assert await store.get("big") == {"v": "small"}, "what was stored is kept"
        results: list[Any] = []

        async def put(key: str, size: int) -> None:
            try:
                await store.put(key, {"v": "x" * size})
            except KeyValueError as exc:
                results.append((key, type(exc).__name__))
            else:
                results.append((key, "stored"))

        async with anyio.create_task_group() as group:
            for index in range(8):
                group.start_soon(put, f"k{index}", 2_200_000 if index == 3 else 10)
        assert sorted(results) == [(f"k{i}", "EntryTooLargeError" if i == 3 else "stored") for i in range(8)]
        assert await store.get_many([f"k{i}" for i in range(8)]) == [
            None if i == 3 else {"v": "x" * 10} for i in range(8)
        ]
    finally:
        server.stop()


async def test_no_listing_segments(runtime: Runtime, memcached_server: MemcachedTarget) -> None:
    store = await runtime.spawn(MemcachedBackend(memcached_server.host, memcached_server.port))
    for segment in ("keys", "collections", "destroy", "destroy_collection"):
        assert not hasattr(store, segment), segment


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_client_of_yours_is_left_open(runtime: Runtime, memcached_server: MemcachedTarget) -> None:
    import aiomcache

    client = aiomcache.Client(memcached_server.host, memcached_server.port)
    try:
        async with Runtime() as own:
            store = await own.spawn(MemcachedBackend(client=client))
            await store.put("mine", {"v": 1})
        assert await client.get(b"default_collection::mine") is not None, "the client still works"
    finally:
        await client.close()


async def test_a_refused_connection_is_transient() -> None:
    backend = MemcachedBackend(port=free_port())
    with pytest.raises(MemcachedConnectionError) as caught:
        await backend.open()
    assert backend.is_transient(caught.value)
    assert not backend.is_transient(EntryTooLargeError("too big"))


@pytest.mark.parametrize(
    "arguments",
    [{"host": ""}, {"port": 0}, {"port": 70000}, {"port": "11211"}, {"pool_size": 0}, {"pool_size": True}],
)
def test_bad_arguments_are_refused_at_construction(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each message names its argument
        MemcachedBackend(**arguments)


async def test_memcached_urls_name_the_server_and_its_pool(memcached_server: MemcachedTarget) -> None:
    backend, spawn = parse_url("memcached://cache.internal:11300?pool_size=2&timeout=0.5&name=sessions")
    assert isinstance(backend, MemcachedBackend)
    assert (backend.host, backend.port, backend.pool_size, spawn) == ("cache.internal", 11300, 2, {"name": "sessions"})
    memcached_server.flush()
    with kvrt.Runtime.detached() as detached:
        handle = detached.open(f"memcached://{memcached_server.host}:{memcached_server.port}")
        await handle.put("k", {"v": 1})
        assert await handle.get("k") == {"v": 1}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memcached://user:secret@host", "memcached:// URLs name a server and nothing else"),
        ("memcached://host/db", "memcached:// URLs name a server and nothing else"),
        ("memcached://host?pool_size=0", "'pool_size' must be a positive whole number"),
        ("memcached://host?colour=blue", "memcached:// URLs take no parameter colour"),
    ],
)
def test_bad_memcached_urls_say_why(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        parse_url(url)
    assert "secret" not in str(raised.value)

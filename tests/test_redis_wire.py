"""kvrt's own Redis connections (RESP on anyio sockets), on a real server, under asyncio and trio alike."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest
import redis.exceptions

from kvrt import Runtime
from kvrt.backends.redis import RedisBackend
from kvrt.backends.redis_wire import Address, WireConnections, address
from kvrt.testing.servers import RedisProcess, RedisTarget, redis_binary

pytestmark = pytest.mark.anyio


@pytest.fixture
async def wire(redis_server: RedisTarget) -> AsyncIterator[WireConnections]:
    redis_server.flush()
    where = address(redis_server.url, {})
    assert where is not None
    connections = WireConnections(where)
    try:
        yield connections
    finally:
        await connections.release()


async def test_a_connection_cancelled_midway_is_never_out_of_step(wire: WireConnections) -> None:
    with anyio.move_on_after(0.2) as waited:
        await wire.execute("BLPOP", "nothing", 5)  # cancelled while the server holds the reply back
    assert waited.cancelled_caught
    await wire.execute("RPUSH", "nothing", "late")
    assert await wire.execute("PING") == b"PONG", "the next command reads its own reply, not BLPOP's"
    assert await wire.pipeline([("LPOP", "nothing"), ("PING",)]) == [b"late", b"PONG"]


async def test_an_error_reply_is_raised_or_kept_in_its_place_and_the_rest_stay_in_step(wire: WireConnections) -> None:
    await wire.execute("RPUSH", "listy", "x")
    commands = [("SET", "a", "1"), ("GET", "listy"), ("GET", "a")]
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        await wire.pipeline(commands)
    ok, wrong, found = await wire.pipeline(commands, raise_on_error=False)
    assert (ok, found) == (b"OK", b"1")
    assert isinstance(wrong, redis.exceptions.ResponseError)
    assert await wire.execute("GET", "a") == b"1"


async def test_a_reply_longer_than_many_reads_comes_whole(wire: WireConnections) -> None:
    big = bytes(range(256)) * 8192  # 2 MiB, CRLFs inside
    await wire.execute("SET", "big", big)
    assert await wire.pipeline([("GET", "big"), ("STRLEN", "big"), ("GET", "big")]) == [big, len(big), big]


async def test_a_lost_server_is_a_connection_error_and_the_next_call_connects_anew(tmp_path: Path) -> None:
    server = RedisProcess(redis_binary(), tmp_path / "data")
    server.start()
    where = address(server.url, {"socket_connect_timeout": 2.0})
    assert where is not None
    connections = WireConnections(where)
    try:
        await connections.execute("SET", "k", "v")
        server.kill()
        with pytest.raises(redis.exceptions.ConnectionError):
            await connections.execute("GET", "k")
        server.start()
        assert await connections.execute("PING") == b"PONG"
    finally:
        await connections.release()
        server.stop()


def test_a_url_address_never_shows_its_password() -> None:
    where = address("redis://user:s3cret-pw@127.0.0.1:6390/4", {})
    assert isinstance(where, Address)
    assert (where.username, where.password, where.db) == ("user", "s3cret-pw", 4)
    assert "s3cret" not in repr(where)


def test_a_certificate_requirement_it_does_not_know_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="ssl_cert_reqs"):
        address("rediss://127.0.0.1:6390/0", {"ssl_cert_reqs": "sometimes"})


def test_options_the_wire_does_not_take_leave_the_backend_on_redis_py() -> None:
    assert address("redis://127.0.0.1:6390/0?health_check_interval=30", {}) is None
    assert RedisBackend("redis://127.0.0.1:6390/0", health_check_interval=30).asyncio_only
    assert not RedisBackend("redis://127.0.0.1:6390/0?socket_timeout=2").asyncio_only
    assert RedisBackend("redis://127.0.0.1:6390/0", cluster=True).asyncio_only


def _hosts() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "kvrt asyncio host"]


async def test_a_url_backend_runs_on_the_callers_own_loop_with_no_host_thread(redis_server: RedisTarget) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(RedisBackend(redis_server.url))
        await store.put("k", {"v": 1})
        assert await store.get("k") == {"v": 1}
        assert _hosts() == [], "no asyncio thread: the worker speaks to Redis on this loop, trio's too"
        hosted = await runtime.spawn(RedisBackend(redis_server.url, health_check_interval=30), name="hosted")
        assert await hosted.get("k") == {"v": 1}, "a backend left on redis-py still works (hosted under trio)"


@pytest.fixture(scope="module")
def unix_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("unix")
    socket = directory / "redis.sock"
    server = RedisProcess(redis_binary(), directory / "data", "--unixsocket", str(socket), "--unixsocketperm", "700")
    server.start()
    try:
        yield socket
    finally:
        server.stop()


async def test_unix_socket_urls_reach_the_server(unix_server: Path) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(RedisBackend(f"unix://{unix_server}?db=2"))
        await store.put("k", {"v": "over a unix socket"})
        assert await store.get("k") == {"v": "over a unix socket"}

"""A runtime serves its stats snapshots on a Unix socket or loopback TCP, and no client can hold it up."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import msgspec
import pytest
from anyio.abc import ByteStream
from anyio.streams.buffered import BufferedByteReceiveStream

from kvrt import Runtime
from kvrt.backends.memory import MemoryBackend
from kvrt.stats_server import (
    MAX_CLIENTS,
    MIN_INTERVAL,
    SEND_TIMEOUT,
    StatsClient,
    connect_stats,
    parse_stats_address,
)
from kvrt.testing.conformance import eventually

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def raw(address: str) -> AsyncIterator[tuple[ByteStream, BufferedByteReceiveStream]]:
    parsed = parse_stats_address(address)
    if parsed.path is not None:
        stream: ByteStream = await anyio.connect_unix(parsed.path)
    else:
        assert parsed.host is not None
        stream = await anyio.connect_tcp(parsed.host, parsed.port)
    async with stream:
        yield stream, BufferedByteReceiveStream(stream)


async def test_snapshots_on_a_unix_socket_are_the_runtimes_stats(tmp_path: Path) -> None:
    path = str(tmp_path / "stats.sock")
    async with Runtime(stats_address=path) as runtime:
        assert runtime.stats_address == path
        cache = await runtime.spawn(MemoryBackend(), name="cache")
        await runtime.spawn(MemoryBackend(), name="sessions")
        for number in range(20):
            await cache.put(f"k{number}", {"v": number})
        async with connect_stats(parse_stats_address(path)) as client:
            snapshot = await client.snapshot()
            assert snapshot.version == 1
            assert snapshot.workers == runtime.stats()
            assert snapshot.runtime == runtime.runtime_stats()
            assert abs(snapshot.time - time.time()) < 5
            await cache.get("k1")
            again = await client.snapshot()  # the same connection asks again, and sees the new request
            assert again.workers["cache"].ops == {"put": 20, "get": 1}
            assert again.time > snapshot.time
        assert (await anyio.Path(path).stat()).st_mode & 0o777 == 0o600  # for this user only
        async with raw(path) as (stream, lines):  # the wire format, as any client reads it
            await stream.send(b"stats\n")
            document = msgspec.json.decode(await lines.receive_until(b"\n", 1 << 20))
    assert set(document) == {"version", "time", "runtime", "workers"}
    assert document["version"] == 1
    assert set(document["workers"]) == {"cache", "sessions"}
    assert document["workers"]["cache"]["ops"] == {"put": 20, "get": 1}
    assert document["runtime"]["max_in_flight"] == runtime.runtime_stats().max_in_flight
    assert not await anyio.Path(path).exists()  # removed at close


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
async def test_snapshots_on_loopback_tcp_are_the_runtimes_stats(host: str) -> None:
    if host == "[::1]" and not socket.has_ipv6:
        pytest.fail("this machine has no IPv6 loopback")
    async with Runtime(stats_address=f"{host}:0") as runtime:
        bound = runtime.stats_address
        assert bound is not None
        assert not bound.endswith(":0")  # the port the system chose
        handle = await runtime.spawn(MemoryBackend(), name="cache")
        await handle.put("k", {"v": 1})
        async with connect_stats(parse_stats_address(bound)) as client:
            snapshot = await client.snapshot()
        assert snapshot.workers == runtime.stats()
        assert snapshot.runtime == runtime.runtime_stats()
    with pytest.raises(ConnectionError, match="no kvrt runtime serves stats"):  # closed with the runtime
        async with connect_stats(parse_stats_address(bound)):
            pass


@pytest.mark.parametrize("address", ["0.0.0.0:9100", "192.168.1.20:9100", "example.com:9100", ":9100", "[::]:9100"])
def test_a_host_off_the_loopback_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match="loopback address only"):
        Runtime(stats_address=address)
    with pytest.raises(ValueError, match="loopback address only"):
        Runtime.detached(stats_address=address)


def test_a_unix_path_too_long_for_a_socket_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 107 bytes"):
        Runtime(stats_address="/tmp/" + "x" * 120)


async def test_a_client_that_never_reads_does_not_hold_up_the_runtime(tmp_path: Path) -> None:
    """It asks and asks and never reads: the runtime serves on, others are answered, and it is cut off."""
    path = str(tmp_path / "stats.sock")
    async with Runtime(stats_address=path) as runtime:
        for number in range(300):  # snapshots of ~300 kB: two or three fill the socket's buffers
            await runtime.spawn(MemoryBackend(), name=f"worker-{number:03}")
        handle = runtime.handle("worker-000")
        async with raw(path) as (stuck, _):
            await stuck.send(b"stats\n" * 1000)
            started = anyio.current_time()
            worst = 0.0
            async with connect_stats(parse_stats_address(path)) as other:
                while anyio.current_time() - started < SEND_TIMEOUT + 0.5:
                    before = anyio.current_time()
                    await handle.put("k", {"v": 1})
                    worst = max(worst, anyio.current_time() - before)
                    await anyio.sleep(0.01)
                assert len((await other.snapshot()).workers) == 300
            assert worst < 0.25, worst  # a put is never held up by the answers piling up for the stuck client
            with anyio.fail_after(5):  # the server gave up on it: its socket is closed
                while True:
                    try:
                        await stuck.send(b"stats\n")
                    except (anyio.BrokenResourceError, OSError):
                        break
                    await anyio.sleep(0.05)
        assert sum(runtime.stats()["worker-000"].ops.values()) > 10


async def test_clients_past_the_cap_are_refused_at_once_until_a_place_frees(tmp_path: Path) -> None:
    path = str(tmp_path / "stats.sock")
    async with Runtime(stats_address=path) as runtime:
        await runtime.spawn(MemoryBackend(), name="cache")
        address = parse_stats_address(path)
        async with anyio.create_task_group() as group:
            idle: list[anyio.Event] = []
            connected = 0

            async def hold(leave: anyio.Event) -> None:
                nonlocal connected
                async with connect_stats(address) as client:
                    await client.snapshot()  # admitted
                    connected += 1
                    await leave.wait()

            for _ in range(MAX_CLIENTS):
                idle.append(anyio.Event())
                group.start_soon(hold, idle[-1])
            await eventually(lambda: connected == MAX_CLIENTS)
            with anyio.fail_after(1):
                async with connect_stats(address) as refused:
                    with pytest.raises(ConnectionError, match="refused: too many clients"):
                        await refused.snapshot()
            idle[0].set()
            with anyio.fail_after(5):  # its place goes to the next client
                while True:
                    try:
                        async with connect_stats(address) as client:
                            assert "cache" in (await client.snapshot()).workers
                            break
                    except ConnectionError:
                        await anyio.sleep(0.02)
            for leave in idle:
                leave.set()


async def test_a_client_asking_nonstop_is_answered_at_a_bounded_pace(tmp_path: Path) -> None:
    path = str(tmp_path / "stats.sock")
    async with Runtime(stats_address=path) as runtime:
        await runtime.spawn(MemoryBackend(), name="cache")
        async with raw(path) as (stream, lines):
            await stream.send(b"stats\n" * 200)
            answered = 0
            with anyio.move_on_after(0.5):
                while True:
                    await lines.receive_until(b"\n", 1 << 20)
                    answered += 1
    assert 2 <= answered <= 0.5 / MIN_INTERVAL + 2, answered


async def test_clients_asking_at_once_share_one_snapshot(tmp_path: Path) -> None:
    """However many clients ask, the runtime's counters are read at most once per ``FRESH_FOR``."""
    path = str(tmp_path / "stats.sock")
    async with Runtime(stats_address=path) as runtime:
        await runtime.spawn(MemoryBackend(), name="cache")
        address = parse_stats_address(path)
        async with connect_stats(address) as first, connect_stats(address) as second:
            times: list[float] = []

            async def ask(client: StatsClient) -> None:
                times.append((await client.snapshot()).time)

            async with anyio.create_task_group() as group:
                group.start_soon(ask, first)
                group.start_soon(ask, second)
            assert times[0] == times[1]
            later = await first.snapshot()  # paced past FRESH_FOR: taken anew
            assert later.time > times[0]


async def test_an_unknown_request_is_answered_with_an_error_and_closed(tmp_path: Path) -> None:
    path = str(tmp_path / "stats.sock")
    async with Runtime(stats_address=path), raw(path) as (stream, lines):
        await stream.send(b"GET / HTTP/1.1\r\n")
        refusal = msgspec.json.decode(await lines.receive_until(b"\n", 4096))
        assert refusal["version"] == 1
        assert "unknown request" in refusal["error"]
        with pytest.raises((anyio.IncompleteRead, anyio.EndOfStream)):
            await lines.receive_until(b"\n", 4096)


async def test_the_socket_file_goes_with_the_runtime_even_when_its_block_fails(tmp_path: Path) -> None:
    path = str(tmp_path / "stats.sock")

    async def fail() -> None:
        async with Runtime(stats_address=path) as runtime:
            assert await anyio.Path(path).exists()
            runtime.handle("nobody")

    with pytest.raises(LookupError):
        await fail()
    assert not await anyio.Path(path).exists()


async def test_a_live_server_on_the_path_is_refused_and_a_stale_file_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "stats.sock")
    async with Runtime(stats_address=path):
        with pytest.raises(OSError, match="another process serves at"):
            async with Runtime(stats_address=path):
                pass
        assert await anyio.Path(path).exists()  # the first runtime's socket stays
    stale = socket.socket(socket.AF_UNIX)  # what a killed process leaves: a socket file nobody listens on
    stale.bind(path)
    stale.close()
    async with Runtime(stats_address=path) as runtime:
        await runtime.spawn(MemoryBackend(), name="cache")
        async with connect_stats(parse_stats_address(path)) as client:
            assert set((await client.snapshot()).workers) == {"cache"}
    assert not await anyio.Path(path).exists()


async def test_a_taken_tcp_port_fails_the_runtime_entry() -> None:
    async with Runtime(stats_address="127.0.0.1:0") as first:
        assert first.stats_address is not None
        with pytest.raises(OSError, match="in use"):
            async with Runtime(stats_address=first.stats_address):
                pass


async def test_the_detached_runtime_serves_its_stats(tmp_path: Path) -> None:
    path = str(tmp_path / "stats.sock")
    with Runtime.detached(stats_address=path) as runtime:
        cache = runtime.open("memory://", name="cache")
        await cache.put("k", {"v": 1})  # starts the runtime's thread, and its stats server
        assert runtime.stats_address == path
        async with connect_stats(parse_stats_address(path)) as client:
            snapshot = await client.snapshot()
        assert snapshot.workers["cache"].ops == {"put": 1}
    assert not await anyio.Path(path).exists()

"""A runtime's stats snapshots, served on a local socket for ``kvrt top`` and anything else that asks.

``Runtime(stats_address=...)`` takes a Unix socket path or a loopback ``host:port``. The protocol
(version 1) is a line each way: the client sends ``stats``, the server answers one line of JSON,
``{"version": 1, "time": <Unix seconds>, "runtime": RuntimeStats, "workers": {name: WorkerStats}}``,
and the client may ask again on the same connection. Any other line gets
``{"version": 1, "error": "..."}`` and the connection closes.

Serving never makes the runtime wait: a snapshot is a read of the workers' counters, taken at most
once per :data:`FRESH_FOR` however many clients ask, and each client is answered at most once per
:data:`MIN_INTERVAL`; an answer the client has not taken within :data:`SEND_TIMEOUT` closes its
connection, as does a client silent for :data:`IDLE_TIMEOUT`; past :data:`MAX_CLIENTS` connections
a newcomer is refused at once. The snapshots are not authenticated, so they are served on the
machine only: a non-loopback host is refused.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import stat
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Protocol

import anyio
import msgspec
from anyio.abc import ByteStream, SocketAttribute, SocketListener, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from kvrt.log import logger
from kvrt.stats import RuntimeStats, WorkerStats

VERSION = 1
"""The protocol version this module speaks: every answer carries it."""
REQUEST = b"stats"
"""The line (without its newline) that asks for a snapshot."""
MAX_CLIENTS = 8
"""Connections served at once; a newcomer past them gets an error line and is closed."""
SEND_TIMEOUT = 1.0
"""Seconds an answer may wait for a client to take it before its connection is closed."""
IDLE_TIMEOUT = 60.0
"""Seconds a connection may go without asking before it is closed (freeing its place)."""
MIN_INTERVAL = 0.1
"""Seconds between two answers to one client: one asking faster is answered at this pace."""
FRESH_FOR = 0.05
"""Seconds a snapshot is sent again to whoever asks, rather than taken anew."""
CLIENT_TIMEOUT = 5.0
"""Seconds a client waits to connect, or for an answer, before it gives up."""
_MAX_LINE = 1024
_UNIX_PATH_MAX = 107  # sun_path holds 108 bytes, the last a NUL

_log = logger.bind(component="stats_server")


class StatsAddress(msgspec.Struct, frozen=True):
    """Where stats are served: a Unix socket ``path``, or a loopback ``host`` and ``port``."""

    path: str | None = None
    host: str | None = None
    port: int = 0

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        return f"[{self.host}]:{self.port}" if self.host and ":" in self.host else f"{self.host}:{self.port}"


class StatsSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """One answer of the stats server: the runtime-wide numbers and every worker's, at ``time``."""

    version: int = VERSION
    time: float
    """When the snapshot was taken, in Unix seconds."""
    runtime: RuntimeStats
    workers: dict[str, WorkerStats]


class _Refusal(msgspec.Struct, frozen=True):
    version: int
    error: str


class Observed(Protocol):
    """What a stats server reads: a runtime's ``stats()`` and ``runtime_stats()``."""

    def stats(self) -> dict[str, WorkerStats]:
        """Return every worker's snapshot, by name."""
        ...

    def runtime_stats(self) -> RuntimeStats:
        """Return the runtime-wide numbers."""
        ...


def parse_stats_address(text: str) -> StatsAddress:
    """Read ``text`` as a loopback ``host:port`` (``127.0.0.1:0`` picks a free port) or a Unix socket path.

    Raises ``ValueError`` for a host that is not loopback: the snapshots would be readable off the machine.
    """
    host, colon, port = text.rpartition(":")
    if colon and port.isdigit() and "/" not in text:
        host = host.removeprefix("[").removesuffix("]")
        if not _is_loopback(host):
            raise ValueError(
                f"stats are served on a loopback address only (127.0.0.1, ::1, localhost), not {host or '*'!r}: "
                "anyone who can reach the port could read them"
            )
        if int(port) > 65535:
            raise ValueError(f"not a TCP port: {port}")
        return StatsAddress(host="127.0.0.1" if host == "localhost" else host, port=int(port))
    if not text:
        raise ValueError("a stats address is a Unix socket path or a loopback host:port, not ''")
    if len(os.fsencode(text)) > _UNIX_PATH_MAX:
        raise ValueError(f"a Unix socket path holds at most {_UNIX_PATH_MAX} bytes: {text!r} is longer")
    return StatsAddress(path=text)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def snapshot_of(runtime: Observed) -> StatsSnapshot:
    """Return ``runtime``'s stats now, as the server sends them."""
    return StatsSnapshot(time=time.time(), runtime=runtime.runtime_stats(), workers=runtime.stats())


class StatsServer:
    """Serves one runtime's snapshots on a bound socket; :meth:`serve` runs in the runtime's task group."""

    def __init__(self, listener: SocketListener, address: StatsAddress, runtime: Observed) -> None:
        self._listener = listener
        self.address = address
        """Where the server listens: the port the system chose, for ``host:0``."""
        self._runtime = runtime
        self._encoder = msgspec.json.Encoder()
        self._clients = 0
        self._latest = b""
        self._latest_at = -FRESH_FOR
        self._socket_file: tuple[int, int] | None = None
        if address.path is not None:
            found = os.stat(address.path)
            self._socket_file = (found.st_dev, found.st_ino)
        self._closed = False

    @classmethod
    async def bind(cls, address: StatsAddress, runtime: Observed) -> StatsServer:
        """Listen at ``address`` for ``runtime``; raise ``OSError`` if it is taken (a live server on a path too)."""
        if address.path is not None:
            await _refuse_if_served(address.path)
            listener = await anyio.create_unix_listener(address.path, mode=0o600)  # for this user only
            return cls(listener, address, runtime)
        assert address.host is not None
        tcp = await anyio.create_tcp_listener(local_host=address.host, local_port=address.port)
        bound = tcp.listeners[0]  # one address (never "localhost", which could bind two)
        assert isinstance(bound, SocketListener)
        port = bound.extra(SocketAttribute.local_port)
        return cls(bound, StatsAddress(host=address.host, port=port), runtime)

    async def serve(self) -> None:
        """Accept clients and answer them until cancelled; then stop listening."""
        try:
            async with anyio.create_task_group() as clients:
                while True:
                    try:
                        stream = await self._listener.accept()
                    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                        return
                    except OSError as error:  # out of file descriptors, say: the runtime goes on
                        _log.warning("stats_accept_failed", error=type(error).__name__)
                        await anyio.sleep(0.1)
                        continue
                    self._admit(stream, clients)
        finally:
            with anyio.CancelScope(shield=True):
                await self.aclose()

    def _admit(self, stream: ByteStream, clients: TaskGroup) -> None:
        if self._clients >= MAX_CLIENTS:
            clients.start_soon(self._refuse, stream, f"too many clients (at most {MAX_CLIENTS})")
            return
        self._clients += 1
        clients.start_soon(self._answer, stream)

    async def _refuse(self, stream: ByteStream, reason: str) -> None:
        async with stream:
            with anyio.move_on_after(SEND_TIMEOUT), suppress(Exception):
                await stream.send(self._encoder.encode(_Refusal(VERSION, reason)) + b"\n")

    async def _answer(self, stream: ByteStream) -> None:
        """Answer one client's requests until it leaves, errs, idles or stops reading."""
        try:
            async with stream:
                lines = BufferedByteReceiveStream(stream)
                allowed = anyio.current_time()
                while True:
                    request: bytes | None = None
                    with anyio.move_on_after(IDLE_TIMEOUT):
                        request = await lines.receive_until(b"\n", _MAX_LINE)
                    if request is None:
                        return  # silent for too long: its place goes to another
                    if request.strip() != REQUEST:
                        await self._refuse(stream, f"unknown request (protocol {VERSION} asks with 'stats')")
                        return
                    await anyio.sleep_until(allowed)  # also a checkpoint: a client asking nonstop yields too
                    allowed = anyio.current_time() + MIN_INTERVAL
                    with anyio.move_on_after(SEND_TIMEOUT) as sending:
                        await stream.send(self._snapshot_line())
                    if sending.cancelled_caught:
                        return  # the client is not reading: its place goes to another
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.DelimiterNotFound, anyio.BrokenResourceError):
            return  # the client left, or sent what no client of this protocol sends
        except (anyio.ClosedResourceError, OSError):
            return
        except Exception as error:  # an observer never takes the runtime down
            _log.warning("stats_client_failed", error=type(error).__name__)
        finally:
            self._clients -= 1

    def _snapshot_line(self) -> bytes:
        """Return the latest snapshot's line, taken now unless one was taken within ``FRESH_FOR``."""
        now = anyio.current_time()
        if now - self._latest_at >= FRESH_FOR:
            self._latest = self._encoder.encode(snapshot_of(self._runtime)) + b"\n"
            self._latest_at = now
        return self._latest

    async def aclose(self) -> None:
        """Stop listening and remove the socket file (if it is still this server's)."""
        if self._closed:
            return
        self._closed = True
        with suppress(OSError):
            await self._listener.aclose()
        if self.address.path is not None:
            with suppress(OSError):
                found = os.stat(self.address.path)
                if (found.st_dev, found.st_ino) == self._socket_file:
                    os.unlink(self.address.path)


async def _refuse_if_served(path: str) -> None:
    """Raise ``OSError`` if a server answers at ``path``; a stale socket file is left for the bind to replace."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
    except OSError:
        return
    try:
        with anyio.fail_after(1.0):
            stream = await anyio.connect_unix(path)
    except (OSError, TimeoutError):
        return
    await stream.aclose()
    raise OSError(errno.EADDRINUSE, f"another process serves at {path}")


class StatsClient:
    """A connection to a stats server: :meth:`snapshot` asks for one."""

    def __init__(self, stream: ByteStream, address: StatsAddress) -> None:
        self._stream = stream
        self._lines = BufferedByteReceiveStream(stream)
        self.address = address
        self._decoder = msgspec.json.Decoder(StatsSnapshot)

    async def snapshot(self) -> StatsSnapshot:
        """Ask for a snapshot and return it; raise ``ConnectionError`` if the server is gone, silent or refuses."""
        try:
            with anyio.fail_after(CLIENT_TIMEOUT):
                await self._stream.send(REQUEST + b"\n")
                line = await self._lines.receive_until(b"\n", 64 * 1024 * 1024)
        except TimeoutError:
            raise ConnectionError(f"the runtime at {self.address} did not answer within {CLIENT_TIMEOUT:g} s") from None
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, OSError):
            raise ConnectionError(f"the runtime at {self.address} stopped serving stats") from None
        return self._decode(line)

    def _decode(self, line: bytes) -> StatsSnapshot:
        try:
            snapshot = self._decoder.decode(line)
        except msgspec.DecodeError:
            pass
        else:
            if snapshot.version != VERSION:
                raise ConnectionError(f"{self.address} speaks stats protocol {snapshot.version}, not {VERSION}")
            return snapshot
        try:
            refusal = msgspec.json.decode(line, type=_Refusal)
        except msgspec.DecodeError:
            raise ConnectionError(f"{self.address} does not serve kvrt stats (protocol {VERSION})") from None
        if refusal.version != VERSION:
            raise ConnectionError(f"{self.address} speaks stats protocol {refusal.version}, not {VERSION}")
        raise ConnectionError(f"the runtime at {self.address} refused: {refusal.error}")


@asynccontextmanager
async def connect_stats(address: StatsAddress) -> AsyncIterator[StatsClient]:
    """Yield a client connected to the stats server at ``address``; raise ``ConnectionError`` if none answers."""
    try:
        with anyio.fail_after(CLIENT_TIMEOUT):
            if address.path is not None:
                stream: ByteStream = await anyio.connect_unix(address.path)
            else:
                assert address.host is not None
                stream = await anyio.connect_tcp(address.host, address.port)
    except (OSError, TimeoutError) as error:
        reason = (error.strerror if isinstance(error, OSError) else None) or str(error) or type(error).__name__
        raise ConnectionError(f"no kvrt runtime serves stats at {address} ({reason})") from None
    async with stream:
        yield StatsClient(stream, address)

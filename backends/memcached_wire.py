"""Memcached's text protocol, spoken by kvrt over anyio sockets: pipelined, the same on asyncio and trio.

A worker's batch is many commands to one server, and the text protocol lets a client send them all
in one write and read the replies in order; aiomcache sends one command and waits for its reply
before the next. Replies are parsed from one buffer. A connection that fails or is cancelled
midway is closed, never reused out of step.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import anyio

_T = TypeVar("_T")
_READ_SIZE = 65536
_GET_CHUNK = 100  # keys per get line; memcached takes longer lines, but a bounded one is never refused


class MemcachedError(Exception):
    """The server refused a command (an ``ERROR``, ``CLIENT_ERROR`` or ``SERVER_ERROR`` reply)."""


class ItemTooLargeError(MemcachedError):
    """The server holds no item this large (its ``-I``, ``item_size_max``)."""


class MemcachedConnectionError(ConnectionError):
    """The connection to the server failed or was lost: worth a reconnect."""


@dataclass(frozen=True, slots=True)
class Get:
    """Read these keys (one or more ``get`` lines)."""

    keys: Sequence[bytes]


@dataclass(frozen=True, slots=True)
class Set:
    """Store ``data`` under ``key``, to expire at memcached's ``exptime``."""

    key: bytes
    data: bytes
    exptime: int


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove ``key``."""

    key: bytes


Command = Get | Set | Delete
Reply = dict[bytes, bytes] | bool | MemcachedError
"""A get's found values by key; a set's or delete's success (``False``: not found); or the server's refusal."""


def _pack(commands: Sequence[Command]) -> bytes:
    parts: list[bytes] = []
    for command in commands:
        if type(command) is Set:
            parts += (b"set %s 0 %d %d\r\n" % (command.key, command.exptime, len(command.data)), command.data, b"\r\n")
        elif type(command) is Get:
            for start in range(0, len(command.keys), _GET_CHUNK):
                parts += (b"get ", b" ".join(command.keys[start : start + _GET_CHUNK]), b"\r\n")
        else:
            parts.append(b"delete %s\r\n" % command.key)  # type: ignore[union-attr]
    return b"".join(parts)


def _refusal(line: bytes) -> MemcachedError | None:
    if line == b"ERROR" or line.startswith((b"CLIENT_ERROR", b"SERVER_ERROR")):
        text = line.decode("ascii", "replace")
        return ItemTooLargeError(text) if "too large" in text else MemcachedError(text)
    return None


class _Connection:
    """One connection to the server and what it has received but not yet parsed; subclasses move the bytes."""

    __slots__ = ("at", "buffer")

    def __init__(self) -> None:
        self.buffer = b""
        self.at = 0

    async def _send(self, payload: bytes) -> None:
        raise NotImplementedError

    async def _more(self) -> None:
        """Wait for more bytes and add them to :attr:`buffer` (``EndOfStream`` if the server closed)."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection at once (never reused: it may be out of step)."""
        raise NotImplementedError

    async def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n", self.at)) < 0:
            await self._more()
        line = self.buffer[self.at : end]
        self.at = end + 2
        return line

    async def _exactly(self, size: int) -> bytes:
        while len(self.buffer) - self.at < size + 2:
            await self._more()
        data = self.buffer[self.at : self.at + size]
        self.at += size + 2
        return data

    async def exchange(self, commands: Sequence[Command]) -> list[Reply]:
        """Send ``commands`` in one write and return their replies in order."""
        await self._send(_pack(commands))
        replies: list[Reply] = []
        for command in commands:
            if type(command) is Get:
                replies.append(await self._values(-(-len(command.keys) // _GET_CHUNK)))
                continue
            line = await self._line()
            refusal = _refusal(line)
            replies.append(refusal if refusal is not None else line in (b"STORED", b"DELETED"))
        return replies

    async def _values(self, lines: int) -> dict[bytes, bytes] | MemcachedError:
        found: dict[bytes, bytes] = {}
        refused: MemcachedError | None = None
        for _ in range(lines):
            while (line := await self._line()) != b"END":
                refusal = _refusal(line)
                if refusal is not None:  # the line's reply ends here, without END
                    refused = refusal
                    break
                _, key, _, size = line.split(b" ", 4)[:4]
                found[key] = await self._exactly(int(size))
        return found if refused is None else refused

    async def command_line(self, line: bytes) -> list[bytes]:
        """Send one line (``stats``, ``flush_all``, ``version``) and return its reply's lines, up to ``END``."""
        await self._send(line + b"\r\n")
        lines: list[bytes] = []
        while True:
            reply = await self._line()
            refusal = _refusal(reply)
            if refusal is not None:
                raise refusal
            if reply in (b"END", b"OK") or reply.startswith(b"VERSION "):
                return [*lines, reply] if reply != b"END" else lines
            lines.append(reply)


class _SocketConnection(_Connection):
    """A non-blocking socket read and written directly, waiting on anyio only when the kernel has nothing to give.

    A stream would add a scheduling checkpoint to every send and every receive (measured: twice
    aiomcache's time for a lone get). This serves every loop anyio runs on.
    """

    __slots__ = ("socket",)

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.socket = sock

    async def _send(self, payload: bytes) -> None:
        view = memoryview(payload)
        while view:
            try:
                view = view[self.socket.send(view) :]
            except BlockingIOError:
                await anyio.wait_writable(self.socket)

    async def _more(self) -> None:
        while True:
            try:
                received = self.socket.recv(_READ_SIZE)
                break
            except BlockingIOError:
                await anyio.wait_readable(self.socket)
        if not received:
            raise anyio.EndOfStream
        self.buffer = self.buffer[self.at :] + received
        self.at = 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            anyio.notify_closing(self.socket)
        self.socket.close()


class _AsyncioConnection(_Connection, asyncio.Protocol):
    """The same socket on asyncio, as a protocol of the loop's: registered with the loop once, not once a wait.

    Waiting on anyio's readiness costs asyncio two ``epoll_ctl`` calls and a callback each time; a
    transport keeps the socket registered and hands over what arrives, so a reply costs one wake.
    """

    __slots__ = ("_incoming", "_lost", "_transport", "_waiter")

    def __init__(self) -> None:
        super().__init__()
        self._incoming: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._incoming.append(data)
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or anyio.EndOfStream()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _send(self, payload: bytes) -> None:
        if self._lost is not None or self._transport is None:
            raise anyio.EndOfStream
        self._transport.write(payload)

    async def _more(self) -> None:
        while not self._incoming:
            if self._lost is not None:
                raise self._lost
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self.buffer = self.buffer[self.at :] + b"".join(self._incoming)
        self._incoming.clear()
        self.at = 0

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class Memcached:
    """Connections to one memcached server, opened as calls need them (at most ``pool_size``), kept and reused."""

    __slots__ = ("_closed", "_idle", "connect_timeout", "host", "port", "timeout")

    def __init__(self, host: str, port: int, *, connect_timeout: float | None, timeout: float | None) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._idle: list[_Connection] = []
        self._closed = False

    async def run(self, commands: Sequence[Command]) -> list[Reply]:
        """Send ``commands`` in one write on one connection; return their replies in order.

        A connection is opened for each call in flight beyond those idle: the worker bounds how
        many there are (its backend's ``concurrency``).
        """
        connection = self._idle.pop() if self._idle else await self._connect()
        try:
            replies = await self._bounded(connection.exchange(commands))
        except BaseException:
            _close(connection)
            raise
        if self._closed:
            _close(connection)
        else:
            self._idle.append(connection)
        return replies

    async def command_line(self, line: bytes) -> list[bytes]:
        """Send one administrative line on a connection of its own; return the reply's lines."""
        connection = await self._connect()
        try:
            return await self._bounded(connection.command_line(line))
        finally:
            _close(connection)

    async def _bounded(self, call: Awaitable[_T]) -> _T:
        try:
            if self.timeout is None:
                return await call
            with anyio.fail_after(self.timeout):
                return await call
        except TimeoutError:
            raise MemcachedConnectionError("memcached did not answer in time") from None
        except (OSError, anyio.EndOfStream, anyio.ClosedResourceError) as exc:
            raise MemcachedConnectionError(f"the connection to memcached was lost: {exc!r}") from None

    async def _connect(self) -> _Connection:
        try:
            with anyio.fail_after(self.connect_timeout):
                sock = await _connected(self.host, self.port)
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:  # not asyncio: trio
                    return _SocketConnection(sock)
                try:
                    _, protocol = await loop.create_connection(_AsyncioConnection, sock=sock)
                except BaseException:
                    sock.close()
                    raise
                return protocol
        except TimeoutError:
            raise MemcachedConnectionError(f"connecting to memcached at {self.host}:{self.port} timed out") from None
        except OSError as exc:
            raise MemcachedConnectionError(
                f"cannot connect to memcached at {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None

    async def release(self) -> None:
        """Close every connection; one still out on a call closes when that call ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            _close(connection)


async def _connected(host: str, port: int) -> socket.socket:
    """Return a non-blocking socket connected to the first address of ``host`` that takes the connection."""
    failure: OSError | None = None
    for family, kind, protocol, _, address in await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, protocol)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if sock.connect_ex(address) not in (0, errno.EINPROGRESS):
                sock.connect(address)  # raises the error the kernel gave
            await anyio.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, os.strerror(error))
        except BaseException as exc:
            sock.close()
            if not isinstance(exc, OSError):
                raise
            failure = exc
            continue
        return sock
    raise failure or OSError(f"no address for {host}")


def _close(connection: _Connection) -> None:
    connection.close()

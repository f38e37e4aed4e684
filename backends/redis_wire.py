"""Connections to one Redis server that kvrt speaks on itself, over anyio: the same on asyncio and trio.

redis-py's asyncio client runs only on asyncio, so under trio a worker on it must send each batch
to an asyncio loop in another thread and back (:mod:`kvrt.hosts`), two thread wakes a round. A
single server given by URL needs no more of a client than this: connect (TCP, TLS or a Unix
socket), log in and select the database, then send a batch of packed commands in one write and
read their replies (:mod:`kvrt.backends.resp`). Errors are redis-py's exceptions, so the backend
tells transient failures from permanent ones as it does for redis-py's own connections.

A connection that fails or is cancelled midway is closed, never reused out of step.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import redis.exceptions

from kvrt.backends.redis_connections import Connections
from kvrt.backends.resp import Incomplete, pack, parse

_READ_SIZE = 65536

WIRE_OPTIONS = frozenset(
    {
        "socket_timeout",
        "socket_connect_timeout",
        "retry",
        "max_connections",
        "ssl_ca_certs",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_cert_reqs",
        "ssl_check_hostname",
    }
)
"""The redis-py client options these connections honour; any other sends a backend to redis-py's client."""


@dataclass(frozen=True)
class Address:
    """Where one server is and how to log in: what a ``redis://``, ``rediss://`` or ``unix://`` URL says."""

    host: str
    port: int
    path: str | None
    db: int
    username: str | None
    password: str | None
    tls: ssl.SSLContext | None
    connect_timeout: float | None
    timeout: float | None

    def __repr__(self) -> str:  # never the password
        place = self.path or f"{self.host}:{self.port}"
        return f"<Address {place} db={self.db}{' tls' if self.tls else ''}>"


_CERT_REQUIREMENTS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_PLACE = frozenset({"host", "port", "path", "db", "username", "password", "connection_class"})


def address(url: str, options: dict[str, Any]) -> Address | None:
    """Read ``url`` as redis-py would, with its query and ``options``; ``None`` if an option is not ours.

    ``ValueError`` for a URL redis-py would refuse.
    """
    from redis.connection import parse_url

    parts: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    given = {**{name: value for name, value in parts.items() if name not in _PLACE}, **options}
    if not WIRE_OPTIONS.issuperset(given):
        return None
    tls = None
    if url.startswith("rediss://"):
        tls = ssl.create_default_context(cafile=given.get("ssl_ca_certs"))
        if given.get("ssl_certfile"):
            tls.load_cert_chain(given["ssl_certfile"], given.get("ssl_keyfile"))
        requirement = given.get("ssl_cert_reqs", ssl.CERT_REQUIRED)
        if isinstance(requirement, str):
            if requirement not in _CERT_REQUIREMENTS:
                raise ValueError(f"ssl_cert_reqs must be one of {sorted(_CERT_REQUIREMENTS)}, not {requirement!r}")
            requirement = _CERT_REQUIREMENTS[requirement]
        tls.check_hostname = bool(given.get("ssl_check_hostname", False)) and requirement != ssl.CERT_NONE
        tls.verify_mode = requirement
    return Address(
        host=parts.get("host", "localhost"),
        port=int(parts.get("port", 6379)),
        path=parts.get("path"),
        db=int(parts.get("db", 0)),
        username=parts.get("username"),
        password=parts.get("password"),
        tls=tls,
        connect_timeout=given.get("socket_connect_timeout"),
        timeout=given.get("socket_timeout"),
    )


class _Connection:
    """One socket to the server and what it has received but not yet parsed."""

    __slots__ = ("pending", "stream")

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.pending = b""

    async def exchange(self, payload: bytes, count: int) -> list[Any]:
        """Send ``payload`` (``count`` packed commands) and return their ``count`` replies."""
        await self.stream.send(payload)
        replies: list[Any] = []
        buffer, at = self.pending, 0
        while len(replies) < count:
            try:
                reply, at = parse(buffer, at)
            except Incomplete:
                buffer = buffer[at:] + await self.stream.receive(_READ_SIZE)
                at = 0
                continue
            replies.append(reply)
        self.pending = buffer[at:]
        return replies


class WireConnections(Connections):
    """Connections to one server, opened as calls need them (one per call in flight), kept and reused."""

    __slots__ = ("_address", "_closed", "_idle")

    def __init__(self, where: Address) -> None:
        self._address = where
        self._idle: list[_Connection] = []
        self._closed = False

    async def pipeline(self, commands: Sequence[tuple[Any, ...]], *, raise_on_error: bool = True) -> list[Any]:
        """Send ``commands`` in one write and return their replies in order.

        Every reply is read even when one is an error, so the connection stays in step; then the
        first error is raised, or with ``raise_on_error=False`` each ``ResponseError`` is returned
        in its command's place, as redis-py's own pipeline does.
        """
        connection = self._idle.pop() if self._idle else await self._connect()
        try:
            replies = await self._exchange(connection, pack(commands), len(commands))
        except BaseException:
            await _close(connection)
            raise
        if self._closed:
            await _close(connection)
        else:
            self._idle.append(connection)
        _raise_errors(replies, every=raise_on_error)
        return replies

    async def _exchange(self, connection: _Connection, payload: bytes, count: int) -> list[Any]:
        timeout = self._address.timeout
        try:
            if timeout is None:
                return await connection.exchange(payload, count)
            with anyio.fail_after(timeout):
                return await connection.exchange(payload, count)
        except TimeoutError:
            raise redis.exceptions.TimeoutError("Timeout reading from the Redis server") from None
        except (OSError, anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise redis.exceptions.ConnectionError(f"Connection to the Redis server lost: {exc!r}") from None

    async def _connect(self) -> _Connection:
        """Open a connection, log in and select the database (a refused login raises ``AuthenticationError``)."""
        where = self._address
        try:
            with anyio.fail_after(where.connect_timeout):
                if where.path is not None:
                    stream: anyio.abc.ByteStream = await anyio.connect_unix(where.path)
                elif where.tls is not None:
                    stream = await anyio.connect_tcp(
                        where.host, where.port, ssl_context=where.tls, tls_standard_compatible=False
                    )
                else:
                    stream = await anyio.connect_tcp(where.host, where.port)
        except TimeoutError:
            raise redis.exceptions.TimeoutError("Timeout connecting to the Redis server") from None
        except OSError as exc:
            raise redis.exceptions.ConnectionError(f"Error connecting to {where!r}: {exc.strerror or exc}") from None
        connection = _Connection(stream)
        login: list[tuple[Any, ...]] = []
        if where.password is not None:
            login.append(("AUTH", where.username, where.password) if where.username else ("AUTH", where.password))
        if where.db:
            login.append(("SELECT", where.db))
        if login:
            try:
                _raise_errors(await self._exchange(connection, pack(login), len(login)), every=True)
            except BaseException:
                await _close(connection)
                raise
        return connection

    async def release(self) -> None:
        """Close every connection; one still out on a call closes when that call ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await _close(connection)


def _raise_errors(replies: list[Any], *, every: bool) -> None:
    """Raise the first error reply (``every``), or the first that is not a ``ResponseError``.

    A refused login or a loading server is never a reply to hand back in a command's place.
    """
    for reply in replies:
        if isinstance(reply, redis.exceptions.RedisError) and (
            every or not isinstance(reply, redis.exceptions.ResponseError)
        ):
            raise reply


async def _close(connection: _Connection) -> None:
    with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
        await connection.stream.aclose()

"""Memcached: an item per entry under py-key-value's ``MemcachedStore`` key, pipelined batches, exact expiry.

An entry of ``key`` in ``collection`` is the item ``collection::key`` holding the stored JSON
document, as the reference writes it (:mod:`kvrt.backends.layout`), so either library reads the
other's items. A name memcached cannot hold as a key (past 250 bytes, or with whitespace or a
control character) is stored under a hashed stand-in (:mod:`kvrt.backends.names`); the document
keeps the names.

Memcached expires items in whole seconds by its own clock, which may lag a second behind, and reads
a time past 30 days as an absolute epoch time. So the expiry sent is the remaining time rounded up
plus a second (an item never leaves before its document says), as absolute time past 30 days; the
document's expiry to the millisecond is what decides, on every read, that an entry has expired.

kvrt speaks the text protocol itself (:mod:`kvrt.backends.memcached_wire`), so a round is one write
and one read: its gets one ``get`` of every key, its puts a ``set`` each, its deletes a ``get`` of
the keys (to tell live entries from expired ones) and a ``delete`` each. A user's aiomcache
``Client`` is used as it is instead, a command at a time, and never closed. Memcached cannot list
its keys, so this backend has no ``keys``, ``collections`` or ``destroy``.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Sequence
from typing import Any, Protocol

from kvrt.backends.base import Backend, Capabilities
from kvrt.backends.documents import is_live
from kvrt.backends.layout import compound_key
from kvrt.backends.memcached_wire import (
    Command,
    Delete,
    Get,
    ItemTooLargeError,
    Memcached,
    MemcachedConnectionError,
    MemcachedError,
    Reply,
    Set,
)
from kvrt.backends.names import hashed, is_hashed
from kvrt.errors import EntryTooLargeError

_MAX_KEY = 250  # bytes
_UNSAFE = re.compile(r"[\s\x00-\x20\x7f-\x9f]")  # what memcached's protocol (or aiomcache) refuses in a key
_RELATIVE = 30 * 24 * 3600  # past this, memcached reads an expiry as an epoch time
_LATEST = 2**31 - 1  # memcached's expiry is a signed 32-bit number
_ITEM_HEADER = 128  # what memcached adds to key and data in an item (about 60 bytes), with room to spare


def stored_key(collection: str, key: str) -> bytes:
    """Return the memcached key of ``key`` in ``collection``: the reference's, or a hashed stand-in."""
    name = compound_key(collection, key)
    encoded = name.encode()
    if len(encoded) > _MAX_KEY or _UNSAFE.search(name) or is_hashed(name):
        return hashed(name).encode()
    return encoded


def exptime(expires_at: float | None, now: float) -> int:
    """Return memcached's expiry for an entry that expires at ``expires_at`` (``0``: never)."""
    if expires_at is None:
        return 0
    remaining = math.ceil(expires_at - now) + 1  # its clock lags up to a second: never before the document says
    if remaining <= _RELATIVE:
        return max(remaining, 1)
    at = math.ceil(expires_at) + 1
    return at if at <= _LATEST else 0  # past 2038 memcached cannot say: the document does


class _Server(Protocol):
    """What the backend sends its commands through: kvrt's own connections, or a user's aiomcache client."""

    async def run(self, commands: Sequence[Command]) -> list[Reply]: ...

    async def command_line(self, line: bytes) -> list[bytes]: ...

    async def release(self) -> None: ...


class _ClientCommands:
    """A user's aiomcache ``Client`` behind the commands kvrt's own connections take (a call each, no pipelining)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def run(self, commands: Sequence[Command]) -> list[Reply]:
        from aiomcache.exceptions import ClientException

        replies: list[Reply] = []
        for command in commands:
            try:
                if isinstance(command, Get):
                    unique = list(dict.fromkeys(command.keys))
                    values = await self.client.multi_get(*unique)
                    replies.append({key: value for key, value in zip(unique, values, strict=True) if value is not None})
                elif isinstance(command, Set):
                    replies.append(await self.client.set(command.key, command.data, exptime=command.exptime))
                else:
                    replies.append(await self.client.delete(command.key))
            except ClientException as exc:
                text = str(exc)
                replies.append(ItemTooLargeError(text) if "too large" in text else MemcachedError(text))
        return replies

    async def command_line(self, line: bytes) -> list[bytes]:
        name, _, argument = line.partition(b" ")
        if name != b"stats":
            raise ValueError(f"only stats lines go through a user's client, not {line!r}")
        stats = await self.client.stats(argument or None)
        return [b"STAT %s %s" % (key, value or b"") for key, value in stats.items()]

    async def release(self) -> None:
        """Leave the client open: it is the user's."""


class MemcachedBackend(Backend):
    """Entries as items of one memcached server, under the reference's keys.

    ``pool_size`` connections at most (a round of gets, puts or deletes takes one); ``timeout``
    bounds a call's answer, ``connect_timeout`` a connection. Or pass an aiomcache ``client``:
    kvrt uses it (on asyncio only, as aiomcache runs) and never closes it.
    """

    name = "memcached"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 11211,
        *,
        pool_size: int = 4,
        client: Any = None,
        connect_timeout: float | None = 5.0,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError("host must be a host name or address")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ValueError("port must be a TCP port, 1-65535")
        if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 1:
            raise ValueError("pool_size must be a positive whole number")
        self.host = host
        self.port = port
        self.pool_size = pool_size
        self._given = client
        self._timeouts = (connect_timeout, timeout)
        self._server: _Server | None = None
        self.item_size_max: int | None = None
        """The largest item the server holds, in bytes (read at :meth:`open`)."""
        self.asyncio_only = client is not None
        self.capabilities = Capabilities(native_ttl=True, max_batch=1024, concurrency=pool_size)

    def __repr__(self) -> str:
        where = "a client of yours" if self._given is not None else f"{self.host}:{self.port}"
        return f"<MemcachedBackend {where}>"

    @property
    def server(self) -> _Server:
        """The connections, between :meth:`open` and :meth:`close`."""
        return self.opened(self._server)

    async def open(self) -> None:
        """Make the connections (or take the user's client) and read the server's item size bound."""
        if self._given is not None:
            self._server = _ClientCommands(self._given)
        else:
            connect_timeout, timeout = self._timeouts
            self._server = Memcached(self.host, self.port, connect_timeout=connect_timeout, timeout=timeout)
        try:
            for line in await self._server.command_line(b"stats settings"):
                if line.startswith(b"STAT item_size_max "):
                    self.item_size_max = int(line.split()[2])
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close kvrt's connections (a user's client stays open)."""
        server, self._server = self._server, None
        if server is not None:
            await server.release()

    async def _run(self, commands: Sequence[Command]) -> list[Reply]:
        replies = await self.server.run(commands)
        for reply in replies:
            if isinstance(reply, ItemTooLargeError):
                raise self._too_large() from None
            if isinstance(reply, MemcachedError):
                raise reply
        return replies

    def _too_large(self) -> EntryTooLargeError:
        limit = f"{self.item_size_max:,} bytes" if self.item_size_max else "its item size bound"
        return EntryTooLargeError(
            f"memcached holds items of at most {limit} with their key (its -I option)", backend=self.name
        )

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        """Read the batch with one multi-key ``get``."""
        names = [stored_key(collection, key) for key in keys]
        (found,) = await self._run([Get(list(dict.fromkeys(names)))])
        assert isinstance(found, dict)
        return [found.get(name) for name in names]

    async def put_many(
        self,
        collection: str,
        keys: Sequence[str],
        entries: Sequence[bytes],
        expires_at: Sequence[float | None],
    ) -> None:
        """Write the batch as a ``set`` each, in one write (a key given twice: its last entry wins)."""
        now = time.time()
        commands = [
            Set(stored_key(collection, key), entry, exptime(expiry, now))
            for key, entry, expiry in zip(keys, entries, expires_at, strict=True)
        ]
        bound = self.item_size_max
        if bound is not None and any(len(each.key) + len(each.data) + _ITEM_HEADER > bound for each in commands):
            # Refused here, not by the server: a set memcached refuses also removes what the key held
            raise self._too_large()
        await self._run(commands)

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Read the keys and remove them in one write; ``True`` where what was removed had not expired."""
        names = [stored_key(collection, key) for key in keys]
        now = time.time()
        found, *removed = await self._run([Get(list(dict.fromkeys(names))), *(Delete(name) for name in names)])
        assert isinstance(found, dict)
        return [
            bool(gone) and name in found and is_live(found[name], now)
            for name, gone in zip(names, removed, strict=True)
        ]

    def is_transient(self, error: BaseException) -> bool:
        """Lost connections and timeouts are transient; the server's refusals are not."""
        if isinstance(error, MemcachedConnectionError | ConnectionError | TimeoutError | asyncio.TimeoutError):
            return True
        return isinstance(error, OSError)

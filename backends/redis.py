"""Redis, Valkey and Redis Cluster: a single server on kvrt's own connections, a cluster on redis-py's client.

The worker owns its connections; what concurrent callers ask of one collection arrives here as
one batch. On a single server: gets as one ``MGET``, puts as one ``MSET`` (or, where entries
expire, one pipeline of ``SET ... PX``), deletes as one pipeline of ``UNLINK`` (a result per key),
a batch of one key as a single plain command, all on connections the worker holds: kvrt's own
RESP connections on anyio sockets for a server given by URL (:mod:`kvrt.backends.redis_wire`, on
asyncio and trio alike), or those of a passed-in client's pool
(:mod:`kvrt.backends.redis_connections`). On a cluster: one single-key command a key, pipelined per
node, since a slot being resharded refuses multi-key commands until it has moved.
The layout is py-key-value's ``RedisStore``'s, ``"{collection}::{key}"`` holding the JSON document
(see :mod:`kvrt.backends.layout`), with Redis's own expiry in milliseconds.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any, cast

from kvrt.backends.base import Backend, Capabilities
from kvrt.backends.layout import SEPARATOR, collection_prefix, compound_key, split_compound_key
from kvrt.extras import needs_extra

with needs_extra("redis", "RedisBackend"):
    import redis.asyncio
    import redis.exceptions
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from kvrt.backends.redis_connections import Connections, HeldConnections
    from kvrt.backends.redis_wire import WireConnections, address

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
_SCAN_COUNT = 1000
_UNLINK_CHUNK = 512

_TRANSIENT: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,  # refused, reset, closed; BusyLoadingError while a restarted server loads
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,  # ClusterDownError, MasterDownError: a failover in progress
    redis.exceptions.TryAgainError,  # a slot migrating
    redis.exceptions.ReadOnlyError,  # a write reached a primary that was just demoted
    redis.exceptions.AskError,  # MovedError too: redirections the client ran out of
    redis.exceptions.SlotNotCoveredError,  # no node serves a slot, mid-failover
    OSError,
)
_PERMANENT: tuple[type[BaseException], ...] = (
    redis.exceptions.AuthenticationError,  # a ConnectionError, but retrying a wrong password will not help
    redis.exceptions.AuthorizationError,
)


def _glob_escape(text: str) -> str:
    """Escape ``text`` for a SCAN MATCH pattern: names never act as wildcards."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def _found(replies: list[Any]) -> list[bytes | str | None]:
    """Return the documents in GET or MGET replies; a key of another Redis type reads as missing, as in MGET."""
    for reply in replies:
        if isinstance(reply, redis.exceptions.ResponseError) and not str(reply).startswith("WRONGTYPE"):
            raise reply
    return [reply if isinstance(reply, bytes | str) else None for reply in replies]


def _text(stored: bytes | str) -> str:
    return stored.decode(errors="replace") if isinstance(stored, bytes) else stored


class RedisBackend(Backend):
    """Entries in Redis, Valkey or a Redis Cluster.

    ``url`` takes ``redis://`` or ``rediss://`` (TLS), with ``user:password@`` (ACL) and the
    database number as the path (``redis://:secret@host:6379/2``); ``cluster=True`` treats it as
    one node of a Redis Cluster; ``unix://`` reaches a Unix socket. ``client_options`` are redis-py's
    ``from_url`` options: kvrt's own connections honour the timeouts and ``ssl_*`` ones, and any
    other leaves the backend on redis-py's client. Or pass an existing ``client``
    (``redis.asyncio.Redis`` or ``RedisCluster``): kvrt uses it as it is and never closes it.

    ``pool_size`` bounds the connections to a single server, and so the batches in flight at once.
    A cluster gets one connection per node and one batch in flight (pipelined to every node it
    touches): redis-py's cluster client sends the ``ASKING`` of a redirection during resharding on
    whichever of a node's connections is free, and the command on the next, so with more than one
    a key could be read from or written to the wrong node. A cluster ``client`` passed in should
    likewise not be used by anything else while kvrt runs on it.
    """

    name = "redis"
    asyncio_only = True

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.asyncio.Redis | RedisCluster | None = None,
        cluster: bool = False,
        pool_size: int = 8,
        **client_options: Any,
    ) -> None:
        if (url is None) == (client is None):
            raise ValueError("give RedisBackend a url or an existing client, not both")
        if type(pool_size) is not int or pool_size < 1:
            raise ValueError("pool_size must be a positive number of connections")
        self.url = url
        self._client = client
        self._owns_client = client is None
        self._cluster = cluster or isinstance(client, RedisCluster)
        # No retries inside redis-py (by default it sleeps and tries again, for seconds): a lost
        # connection crashes the worker, and its supervisor's backoff and deadlines decide.
        self._options = {
            "socket_timeout": 5.0,
            "socket_connect_timeout": 5.0,
            "retry": Retry(NoBackoff(), 0),
            **client_options,
        }
        self._pool_size = pool_size
        self._wire = None if url is None or self._cluster else address(url, client_options)
        """A single server by URL: kvrt speaks RESP itself on anyio sockets, so it runs on trio as well."""
        self.asyncio_only = self._wire is None
        calls_out = 1 if self._cluster else min(pool_size, 4)
        if isinstance(client, redis.asyncio.Redis):  # its pool's bound, not ours, then limits the calls out
            calls_out = min(calls_out, client.connection_pool.max_connections)
        self._held: Connections | None = None
        """A single server's connections, held by the worker (a cluster goes through its client)."""
        self._known_nodes: list[ClusterNode] = []
        self.capabilities = Capabilities(
            native_ttl=True,
            max_batch=1024,
            concurrency=calls_out,
            keys=True,
            collections=True,
            destroy=True,
            destroy_collection=True,
        )

    @property
    def client(self) -> Any:
        """The redis-py client (only between :meth:`open` and :meth:`close`)."""
        return self.opened(self._client)

    async def open(self) -> None:
        """Create the client (unless one was given) and check that the server answers."""
        if self._wire is not None:
            wire = WireConnections(self._wire)
            try:
                await wire.execute("PING")
            except BaseException:
                await wire.release()
                raise
            self._held = wire
            return
        if self._client is None:
            assert self.url is not None
            options = {"max_connections": self._pool_size, **self._options}
            if self._cluster:
                options["max_connections"] = 1  # per node: see the class docstring
                # After a failover the URL's node may be gone for good: start from every node
                # the last client knew as well.
                self._client = RedisCluster.from_url(self.url, startup_nodes=self._known_nodes or None, **options)
            else:
                self._client = redis.asyncio.Redis.from_url(self.url, **options)
        try:
            if self._cluster:
                await self._client.ping(target_nodes=RedisCluster.RANDOM)  # one node down must not fail the rest
            else:
                await self._client.ping()
        except BaseException:
            await self.close()
            raise
        if not self._cluster:
            self._held = HeldConnections(self.client.connection_pool)

    async def close(self) -> None:
        """Give back the held connections; close the client and its connections, if kvrt made it."""
        held, self._held = self._held, None
        try:
            if held is not None:
                await held.release()
        finally:
            if self._owns_client and self._client is not None:
                client, self._client = self._client, None
                if isinstance(client, RedisCluster):
                    known = [ClusterNode(node.host, node.port) for node in client.get_nodes()]
                    self._known_nodes = known or self._known_nodes
                await client.aclose()

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        """Read the batch with one ``MGET``, one key with ``GET``; on a cluster, one ``GET`` a key, pipelined.

        A key holding another Redis type reads as missing, as ``MGET`` has it.
        """
        held = self._held
        names = [compound_key(collection, key) for key in keys]
        if held is None:
            return _found(await self._pipeline([("GET", name) for name in names], raise_on_error=False))
        if len(names) == 1:  # GET's plain reply costs less to parse than MGET's array: a lone caller's case
            try:
                return _found([await held.execute("GET", names[0])])
            except redis.exceptions.ResponseError as exc:
                return _found([exc])
        return _found(await held.execute("MGET", *names))

    async def put_many(
        self,
        collection: str,
        keys: Sequence[str],
        entries: Sequence[bytes],
        expires_at: Sequence[float | None],
    ) -> None:
        """Write the batch: one ``MSET`` where nothing expires, else (and on a cluster) a pipeline of ``SET``.

        ``PX`` is the time left in whole milliseconds, rounded up; an entry already past its expiry
        still replaces what was there (it is unlinked), and reads as missing.
        """
        held = self._held
        prefix = collection_prefix(collection)
        if held is not None and all(expiry is None for expiry in expires_at):
            if len(keys) == 1:
                await held.execute("SET", prefix + keys[0], entries[0])
                return
            # Later duplicates win in a dict as they do in a pipeline.
            mapping = {prefix + key: entry for key, entry in zip(keys, entries, strict=True)}
            await held.execute("MSET", *(part for pair in mapping.items() for part in pair))
            return
        now = time.time()
        commands: list[tuple[Any, ...]] = []
        for key, entry, expiry in zip(keys, entries, expires_at, strict=True):
            left = None if expiry is None else math.ceil((expiry - now) * 1000)
            if left is None:
                commands.append(("SET", prefix + key, entry))
            elif left > 0:
                commands.append(("SET", prefix + key, entry, "PX", left))
            else:
                commands.append(("UNLINK", prefix + key))
        await self._pipeline(commands)

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Delete the batch as one pipeline of ``UNLINK``, a result per key; one key without a pipeline."""
        prefix = collection_prefix(collection)
        if len(keys) == 1 and self._held is not None:
            return [bool(await self._held.execute("UNLINK", prefix + keys[0]))]
        return [bool(removed) for removed in await self._pipeline([("UNLINK", prefix + key) for key in keys])]

    async def _pipeline(self, commands: list[tuple[Any, ...]], *, raise_on_error: bool = True) -> list[Any]:
        """Commands sent together, replies in order: on a held connection, or a cluster client pipeline.

        On a cluster only single-key commands go out: while a slot migrates, Redis refuses
        multi-key commands on it (``TRYAGAIN``) until the move is over, but redirects single keys.
        """
        if self._held is not None:
            return await self._held.pipeline(commands, raise_on_error=raise_on_error)
        pipeline = self.client.pipeline(transaction=False)
        for command in commands:
            pipeline.execute_command(*command)
        return cast(list[Any], await pipeline.execute(raise_on_error=raise_on_error))

    async def keys(self, collection: str, limit: int | None) -> list[str]:
        """Return the keys of ``collection``: a complete SCAN, not one page."""
        prefix = collection_prefix(collection)
        names: dict[str, None] = {}  # SCAN may return a key twice
        async with aclosing(self._scan(_glob_escape(prefix) + "*")) as scan:
            async for stored in scan:
                names[_text(stored)[len(prefix) :]] = None
                if limit is not None and len(names) >= limit:
                    break
        return list(names)

    async def collections(self, limit: int | None) -> list[str]:
        """Return the collections that hold keys in kvrt's layout (a SCAN of the database)."""
        names: dict[str, None] = {}
        async with aclosing(self._scan("*" + SEPARATOR + "*")) as scan:
            async for stored in scan:
                parts = split_compound_key(_text(stored))
                if parts is not None:
                    names[parts[0]] = None
                    if limit is not None and len(names) >= limit:
                        break
        return list(names)

    async def destroy(self) -> bool:
        """Remove every key in kvrt's layout (never FLUSHDB: the database may hold other data)."""
        return await self._unlink_matching("*" + SEPARATOR + "*")

    async def destroy_collection(self, collection: str) -> bool:
        """Remove every key of ``collection`` (SCAN, then UNLINK in chunks)."""
        return await self._unlink_matching(_glob_escape(collection_prefix(collection)) + "*")

    async def _unlink_matching(self, pattern: str) -> bool:
        removed = 0
        chunk: list[bytes | str] = []
        async for stored in self._scan(pattern):
            chunk.append(stored)
            if len(chunk) >= _UNLINK_CHUNK:
                removed += await self._unlink(chunk)
                chunk = []
        return removed + await self._unlink(chunk) > 0

    async def _unlink(self, names: list[bytes | str]) -> int:
        """Unlink ``names`` (as stored) in one pipeline; return how many existed."""
        return sum(await self._pipeline([("UNLINK", name) for name in names])) if names else 0

    async def _scan(self, pattern: str) -> AsyncGenerator[bytes | str]:
        """Every key matching ``pattern``, as stored: pages of SCAN on a held connection, or every node's."""
        held = self._held
        if held is None:
            async for stored in self.client.scan_iter(match=pattern, count=_SCAN_COUNT):
                yield stored
            return
        cursor: Any = 0
        while True:
            cursor, page = await held.execute("SCAN", cursor, "MATCH", pattern, "COUNT", _SCAN_COUNT)
            for stored in page:
                yield stored
            if int(cursor) == 0:
                return

    def is_transient(self, error: BaseException) -> bool:
        """Call lost connections, timeouts and cluster failovers transient; a refused login is not."""
        return isinstance(error, _TRANSIENT) and not isinstance(error, _PERMANENT)

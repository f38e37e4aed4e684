"""The connections a Redis worker holds: commands sent straight on them, without a pool round per call.

redis-py's client takes a connection from its pool and hands it back around every command, under
the pool's lock and with its bookkeeping each time; on a lone caller's request that is a good share
of the cost. The worker is its pool's only user, so it keeps the connections it has used and sends
packed commands on them itself. redis-py's connection still speaks the protocol, reconnects when
used again, and drops itself when a command fails or is cancelled midway, so a connection
going back to the idle list is always either in step with the server or closed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import anyio

from kvrt.extras import needs_extra

with needs_extra("redis", "RedisBackend"):
    import redis.asyncio
    import redis.exceptions


class Connections:
    """What a Redis worker sends its commands through: a batch of packed commands, their replies in order."""

    __slots__ = ()

    async def execute(self, *command: Any) -> Any:
        """Send one command and return its reply; an error reply raises redis-py's exception for it."""
        (reply,) = await self.pipeline([command])
        return reply

    async def pipeline(self, commands: Sequence[tuple[Any, ...]], *, raise_on_error: bool = True) -> list[Any]:
        """Send ``commands`` in one write and return their replies in order (see the subclasses)."""
        raise NotImplementedError

    async def release(self) -> None:
        """Let go of every connection; one still out on a call goes when that call ends."""
        raise NotImplementedError


class HeldConnections(Connections):
    """Connections taken from one redis-py pool and kept, one per call in flight at once."""

    __slots__ = ("_closed", "_held", "_idle", "_pool")

    def __init__(self, pool: redis.asyncio.ConnectionPool) -> None:
        self._pool = pool
        self._idle: list[Any] = []
        self._held: list[Any] = []
        """Every connection taken from the pool and not given back: idle, or out on a call."""
        self._closed = False

    async def pipeline(self, commands: Sequence[tuple[Any, ...]], *, raise_on_error: bool = True) -> list[Any]:
        """Send ``commands`` in one write and return their replies in order.

        Every reply is read even when one is an error, so the connection stays in step; then the
        first error is raised, as redis-py's own pipeline does, or with ``raise_on_error=False``
        each error is returned in its command's place.
        """
        connection = self._idle.pop() if self._idle else await self._take()
        try:
            await connection.send_packed_command(connection.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except redis.exceptions.ResponseError as exc:
                    replies.append(exc)
        finally:
            if self._closed:
                await self._give_back(connection)
            else:
                self._idle.append(connection)
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, redis.exceptions.ResponseError):
                    raise reply
        return replies

    async def _take(self) -> Any:
        connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        self._held.append(connection)
        return connection

    async def release(self) -> None:
        """Give the idle connections back to the pool (the client's owner may go on using it).

        A connection still out on a call goes back when that call ends, never while it is in use.
        """
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await self._give_back(connection)

    async def _give_back(self, connection: Any) -> None:
        self._held.remove(connection)
        # Disconnected first: under trio the worker's loop is kvrt's own asyncio thread, which ends
        # with the runtime, and a connection left open would belong to a dead loop; the owner's next
        # command reconnects on its own. Shielded: a cancelled call still returns what it borrowed.
        # A pool closed under us (the client's owner closed it) has nothing left to give back to.
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await connection.disconnect()
            await self._pool.release(connection)

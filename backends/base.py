"""The backend contract: what a worker may ask of a store, a batch at a time.

Entries cross this contract already encoded (the JSON document of :mod:`kvrt.entry`), and
expiry is absolute (seconds since the epoch), so a backend neither serialises values nor reads
the clock to decide what a TTL meant. Everything about time, failure and concurrency lives in the
runtime; a backend is plain code that does one batch against its store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import msgspec

from kvrt.errors import StoreSetupError

_T = TypeVar("_T")


class Capabilities(msgspec.Struct, frozen=True, kw_only=True):
    """What a backend can do, read once by the runtime when it spawns the backend's worker."""

    native_ttl: bool = False
    """The store expires entries itself; without it the runtime schedules :meth:`Backend.cull`."""
    max_batch: int = 1024
    """The most keys the worker merges into one call (a single larger request still goes whole)."""
    concurrency: int = 1
    """How many calls the backend can have in flight at once (its connection pool's size). Above 1,
    the worker sends the runs of a round concurrently, and the backend must allow concurrent calls."""
    rounds_in_flight: int = 1
    """How many rounds the worker may have at the backend at once (at most ``concurrency``). Above 1,
    it takes the next round while the last is still out, which costs a task per round: worth it
    only where a round's call is long next to that (measured: Redis on loopback and diskcache are
    faster with 1, since closed-loop callers arrive together anyway)."""
    keys: bool = False
    """The backend implements :meth:`Backend.keys`."""
    collections: bool = False
    """The backend implements :meth:`Backend.collections`."""
    destroy: bool = False
    """The backend implements :meth:`Backend.destroy`."""
    destroy_collection: bool = False
    """The backend implements :meth:`Backend.destroy_collection`."""
    cull: bool = False
    """The backend implements :meth:`Backend.cull`."""


class Backend:
    """Base class of every backend; subclasses override what their :attr:`capabilities` declare.

    Keys in one call may repeat: a later put of the same key wins, a later delete of it finds
    nothing. A backend may be made on one event loop (or none: at import time) and run on
    another, so it makes its clients, pools and anyio primitives in :meth:`open` or later, never
    in ``__init__``. Calls come from one worker, one at a time unless ``capabilities.concurrency`` says
    the backend takes more, so a backend with the default needs no locking of its own.
    """

    name: str = "backend"
    """Default name of the worker that runs this backend."""
    capabilities: Capabilities = Capabilities()
    asyncio_only: bool = False
    """The driver runs only on asyncio; under trio the runtime makes its calls on an asyncio loop
    in a thread of its own (:mod:`kvrt.hosts`)."""

    @property
    def kind(self) -> str:
        """What this backend is, for logs and errors (its class name)."""
        return type(self).__name__

    def opened(self, held: _T | None) -> _T:
        """Return ``held``, what :meth:`open` made (a client, a pool, a cache); raise if the backend is not open."""
        if held is None:
            raise StoreSetupError(f"the {self.kind} is not open", backend=self.name)
        return held

    async def open(self) -> None:
        """Create the client and its connection pool (called again after a transient failure)."""

    async def close(self) -> None:
        """Release the client; :meth:`open` may follow."""

    async def shutdown(self) -> None:
        """Release, after the last :meth:`close`, what must outlive restarts; no :meth:`open` follows.

        For a backend built on an object that cannot be reopened once closed (a py-key-value store).
        """

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        """Return the stored document of each key (JSON, as bytes or str), ``None`` where there is none."""
        raise NotImplementedError

    async def put_many(
        self,
        collection: str,
        keys: Sequence[str],
        entries: Sequence[bytes],
        expires_at: Sequence[float | None],
    ) -> None:
        """Store each entry under its key, to expire at its ``expires_at`` (epoch seconds, if not ``None``)."""
        raise NotImplementedError

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Remove each key; ``True`` for each where a live entry was removed."""
        raise NotImplementedError

    async def cull(self, budget: int) -> tuple[int, bool]:
        """Remove expired entries, doing at most ``budget`` units of work (entries or index records).

        Return how many entries were removed, and whether none that had expired are left. The
        runtime calls it again, between rounds of requests, until it says it is done.
        """
        raise NotImplementedError

    async def keys(self, collection: str, limit: int | None) -> list[str]:
        """Return the live keys of ``collection``, all of them when ``limit`` is ``None``."""
        raise NotImplementedError

    async def collections(self, limit: int | None) -> list[str]:
        """Return the names of collections that hold entries."""
        raise NotImplementedError

    async def destroy(self) -> bool:
        """Remove everything this backend holds for kvrt (never more); ``True`` if anything was removed."""
        raise NotImplementedError

    async def destroy_collection(self, collection: str) -> bool:
        """Remove every entry of ``collection``; ``True`` if anything was removed."""
        raise NotImplementedError

    def is_transient(self, error: BaseException) -> bool:
        """Whether ``error`` is worth a reconnect and a retry (a dropped connection, a timeout)."""
        return False

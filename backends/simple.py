"""py-key-value's ``SimpleStore`` for kvrt: one plain dict, at most ``max_entries`` across every collection.

For parity with the reference (code written against its ``SimpleStore`` keeps its behaviour), not
for speed: :class:`~kvrt.backends.memory.MemoryBackend` is the in-process store to choose. Like the
reference, it holds every entry under ``"{collection}::{key}"`` (:mod:`kvrt.backends.layout`) in
one dict, bounds the entries of all collections together, and when full evicts the entry written
first: overwriting a key keeps its place and reading it does not refresh it. Unlike the reference,
an entry that has expired goes before any live one, since no reader can see it any more. Listing
keys, collections or one collection's entries walks the whole dict, as the reference's does.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence

from kvrt.backends.base import Backend, Capabilities
from kvrt.backends.layout import collection_prefix, split_compound_key


class SimpleBackend(Backend):
    """Keeps documents in one dict, evicting the oldest written past ``max_entries`` (no bound if ``None``)."""

    name = "simple"
    capabilities = Capabilities(
        native_ttl=False,
        max_batch=4096,
        keys=True,
        collections=True,
        destroy=True,
        destroy_collection=True,
        cull=True,
    )

    def __init__(self, max_entries: int | None = None) -> None:
        if max_entries is not None and (type(max_entries) is not int or max_entries < 1):
            raise ValueError("max_entries must be a positive int, or None for no bound")
        self.max_entries = max_entries
        self._documents: dict[str, bytes] = {}
        """Stored key to document, in the order the keys were first written (the eviction order)."""
        self._expiries: dict[str, float] = {}
        self._schedule: list[tuple[float, str]] = []
        """A heap of (expiry, stored key); a record whose key was since rewritten or removed is stale."""

    def _live(self, name: str, now: float) -> bool:
        expiry = self._expiries.get(name)
        return expiry is None or expiry > now

    def _remove(self, name: str) -> None:
        del self._documents[name]
        self._expiries.pop(name, None)

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        """Return each key's document (reading refreshes nothing); an expired one reads as missing."""
        prefix = collection_prefix(collection)
        documents = self._documents
        now = time.time()
        found: list[bytes | str | None] = []
        for key in keys:
            name = prefix + key
            document = documents.get(name)
            found.append(document if document is None or self._live(name, now) else None)
        return found

    async def put_many(
        self,
        collection: str,
        keys: Sequence[str],
        entries: Sequence[bytes],
        expires_at: Sequence[float | None],
    ) -> None:
        """Store each document; a new key in a full store first evicts the expired, else the oldest written."""
        prefix = collection_prefix(collection)
        documents, expiries, bound = self._documents, self._expiries, self.max_entries
        for key, entry, expiry in zip(keys, entries, expires_at, strict=True):
            name = prefix + key
            if bound is not None and name not in documents and len(documents) >= bound:
                self._make_room()
            documents[name] = entry  # an overwritten key keeps its place in the order
            if expiry is None:
                expiries.pop(name, None)
            else:
                expiries[name] = expiry
                self._plan(expiry, name)

    def _make_room(self) -> None:
        """Remove one entry: one already expired if the schedule's earliest are, else the oldest written."""
        now = time.time()
        schedule = self._schedule
        while schedule and schedule[0][0] <= now:
            expiry, name = heapq.heappop(schedule)
            if self._expiries.get(name) == expiry:
                self._remove(name)
                return
        self._remove(next(iter(self._documents)))

    def _plan(self, expiry: float, name: str) -> None:
        """Schedule a key's expiry, rebuilding the heap once stale records make up half of it."""
        schedule = self._schedule
        if len(schedule) >= 2 * len(self._expiries) + 64:
            schedule[:] = [(when, key) for key, when in self._expiries.items()]
            heapq.heapify(schedule)
        else:
            heapq.heappush(schedule, (expiry, name))

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Remove each key; an entry that had already expired does not count as removed."""
        prefix = collection_prefix(collection)
        documents = self._documents
        now = time.time()
        removed: list[bool] = []
        for key in keys:
            name = prefix + key
            if name in documents:
                removed.append(self._live(name, now))
                self._remove(name)
            else:
                removed.append(False)
        return removed

    async def cull(self, budget: int) -> tuple[int, bool]:
        """Remove expired entries in expiry order, looking at most at ``budget`` schedule records."""
        now = time.time()
        schedule = self._schedule
        removed = 0
        for _ in range(budget):
            if not schedule or schedule[0][0] > now:
                return removed, True
            expiry, name = heapq.heappop(schedule)
            if self._expiries.get(name) == expiry:
                self._remove(name)
                removed += 1
        return removed, not schedule or schedule[0][0] > now

    async def keys(self, collection: str, limit: int | None) -> list[str]:
        """Return the live keys of ``collection``, oldest written first (a walk of every entry)."""
        prefix = collection_prefix(collection)
        now = time.time()
        found: list[str] = []
        for name in self._documents:
            if limit is not None and len(found) >= limit:
                break
            if name.startswith(prefix) and self._live(name, now):
                found.append(name[len(prefix) :])
        return found

    async def collections(self, limit: int | None) -> list[str]:
        """Return the collections that hold live entries (a walk of every entry)."""
        now = time.time()
        names: dict[str, None] = {}
        for name in self._documents:
            if limit is not None and len(names) >= limit:
                break
            parts = split_compound_key(name)
            if parts is not None and parts[0] not in names and self._live(name, now):
                names[parts[0]] = None
        return list(names)

    async def destroy(self) -> bool:
        """Remove every entry; ``True`` if any was live."""
        now = time.time()
        had = any(self._live(name, now) for name in self._documents)
        self._documents.clear()
        self._expiries.clear()
        self._schedule.clear()
        return had

    async def destroy_collection(self, collection: str) -> bool:
        """Remove every entry of ``collection``; ``True`` if any was live."""
        prefix = collection_prefix(collection)
        now = time.time()
        doomed = [name for name in self._documents if name.startswith(prefix)]
        had = any(self._live(name, now) for name in doomed)
        for name in doomed:
            self._remove(name)
        return had

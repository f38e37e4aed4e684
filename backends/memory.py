"""An in-process store: bounded per collection, expired entries out first, then the least recently used."""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Sequence

from kvrt.backends.base import Backend, Capabilities

_Item = tuple[bytes, float | None]
"""A stored document and its expiry (epoch seconds, or ``None``)."""


class _Collection:
    """One collection's entries in recency order, and a heap of their expiries for culling.

    The heap keeps a record per write with a TTL; records of entries since overwritten, deleted or
    evicted are skipped when popped, and the heap is rebuilt once they outnumber the entries.
    """

    __slots__ = ("entries", "expiries")

    def __init__(self) -> None:
        self.entries: OrderedDict[str, _Item] = OrderedDict()
        self.expiries: list[tuple[float, str]] = []

    def expire_at(self, expiry: float, key: str) -> None:
        heapq.heappush(self.expiries, (expiry, key))
        if len(self.expiries) > 2 * len(self.entries) + 64:
            self.expiries = [(item[1], name) for name, item in self.entries.items() if item[1] is not None]
            heapq.heapify(self.expiries)

    def drop_expired(self, now: float, budget: int) -> tuple[int, int]:
        """Pop at most ``budget`` expired records; return (entries removed, records popped)."""
        heap, entries = self.expiries, self.entries
        removed = popped = 0
        while heap and heap[0][0] <= now and popped < budget:
            expiry, key = heapq.heappop(heap)
            popped += 1
            item = entries.get(key)
            if item is not None and item[1] == expiry:
                del entries[key]
                removed += 1
        return removed, popped

    def has_expired(self, now: float) -> bool:
        return bool(self.expiries) and self.expiries[0][0] <= now

    def has_live(self, now: float) -> bool:
        return any(item[1] is None or item[1] > now for item in self.entries.values())


class MemoryBackend(Backend):
    """Keeps documents in process memory, at most ``max_entries_per_collection`` per collection.

    Reads, writes and deletes are O(1). Past the bound, a write first drops the collection's expired
    entries, then evicts the least recently used (a read or a write makes an entry recent). A cull
    step costs O(log n) per record it pops, however many entries never expire.
    """

    name = "memory"
    capabilities = Capabilities(
        native_ttl=False,
        max_batch=4096,
        keys=True,
        collections=True,
        destroy=True,
        destroy_collection=True,
        cull=True,
    )

    def __init__(self, max_entries_per_collection: int = 10_000) -> None:
        if type(max_entries_per_collection) is not int or max_entries_per_collection < 1:
            raise ValueError("max_entries_per_collection must be a positive int")
        self.max_entries_per_collection = max_entries_per_collection
        self._collections: dict[str, _Collection] = {}

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | None]:
        """Return each key's document, refreshing its recency; expired entries read as missing."""
        stored = self._collections.get(collection)
        if stored is None:
            return [None] * len(keys)
        entries = stored.entries
        now = time.time()
        found: list[bytes | None] = []
        for key in keys:
            item = entries.get(key)
            if item is None:
                found.append(None)
            elif item[1] is not None and item[1] <= now:
                del entries[key]
                found.append(None)
            else:
                entries.move_to_end(key)
                found.append(item[0])
        return found

    async def put_many(
        self,
        collection: str,
        keys: Sequence[str],
        entries: Sequence[bytes],
        expires_at: Sequence[float | None],
    ) -> None:
        """Store each document as the most recently used entry of its collection."""
        stored = self._collections.get(collection)
        if stored is None:
            stored = self._collections[collection] = _Collection()
        items = stored.entries
        for key, entry, expiry in zip(keys, entries, expires_at, strict=True):
            items[key] = (entry, expiry)
            items.move_to_end(key)
            if expiry is not None:
                stored.expire_at(expiry, key)
        overflow = len(items) - self.max_entries_per_collection
        if overflow > 0:
            stored.drop_expired(time.time(), overflow + 64)
            while len(items) > self.max_entries_per_collection:
                items.popitem(last=False)

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Remove each key; an entry that had already expired does not count as removed."""
        stored = self._collections.get(collection)
        if stored is None:
            return [False] * len(keys)
        entries = stored.entries
        now = time.time()
        removed: list[bool] = []
        for key in keys:
            item = entries.pop(key, None)
            removed.append(item is not None and (item[1] is None or item[1] > now))
        if not entries:
            del self._collections[collection]
        return removed

    async def cull(self, budget: int) -> tuple[int, bool]:
        """Pop at most ``budget`` expiry records across collections, removing the expired entries."""
        now = time.time()
        removed = popped = 0
        for name in list(self._collections):
            stored = self._collections[name]
            if popped >= budget:
                return removed, False
            gone, work = stored.drop_expired(now, budget - popped)
            removed += gone
            popped += work
            if not stored.entries:
                del self._collections[name]
            elif stored.has_expired(now):
                return removed, False
        return removed, True

    async def keys(self, collection: str, limit: int | None) -> list[str]:
        """Return the live keys of ``collection``, least recently used first."""
        stored = self._collections.get(collection)
        if stored is None:
            return []
        now = time.time()
        live = [key for key, item in stored.entries.items() if item[1] is None or item[1] > now]
        return live if limit is None else live[:limit]

    async def collections(self, limit: int | None) -> list[str]:
        """Return the collections that hold live entries."""
        now = time.time()
        names = [name for name, stored in self._collections.items() if stored.has_live(now)]
        return names if limit is None else names[:limit]

    async def destroy(self) -> bool:
        """Remove every collection; ``True`` if any held a live entry."""
        now = time.time()
        had = any(stored.has_live(now) for stored in self._collections.values())
        self._collections.clear()
        return had

    async def destroy_collection(self, collection: str) -> bool:
        """Remove one collection; ``True`` if it held a live entry."""
        stored = self._collections.pop(collection, None)
        return stored is not None and stored.has_live(time.time())

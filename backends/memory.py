"""An in-process store: bounded per collection, least recently used first out, culled in budgeted steps."""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Sequence

from kvrt.backends.base import Backend, Capabilities

_Item = tuple[bytes, float | None]
"""A stored document and its expiry (epoch seconds, or ``None``)."""


class MemoryBackend(Backend):
    """Keeps documents in one dictionary per collection, each holding ``max_entries_per_collection`` at most.

    Reads, writes and eviction are O(1). Expiring entries are also indexed in a heap by expiry, so a
    cull step costs O(log n) per entry it removes, however many entries never expire.
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
        self._collections: dict[str, OrderedDict[str, _Item]] = {}
        self._expiries: list[tuple[float, str, str]] = []

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | None]:
        """Return each key's document, refreshing its recency; expired entries read as missing."""
        entries = self._collections.get(collection)
        if entries is None:
            return [None] * len(keys)
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
        """Store each document as the most recently used; evict the least recently used past the bound."""
        stored = self._collections.get(collection)
        if stored is None:
            stored = self._collections[collection] = OrderedDict()
        for key, entry, expiry in zip(keys, entries, expires_at, strict=True):
            stored[key] = (entry, expiry)
            stored.move_to_end(key)
            if expiry is not None:
                heapq.heappush(self._expiries, (expiry, collection, key))
        while len(stored) > self.max_entries_per_collection:
            stored.popitem(last=False)

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Remove each key; an entry that had already expired does not count as removed."""
        entries = self._collections.get(collection)
        if entries is None:
            return [False] * len(keys)
        now = time.time()
        removed: list[bool] = []
        for key in keys:
            item = entries.pop(key, None)
            removed.append(item is not None and (item[1] is None or item[1] > now))
        if not entries:
            del self._collections[collection]
        return removed

    async def cull(self, budget: int) -> int:
        """Remove up to ``budget`` expired entries, soonest-expired first."""
        heap = self._expiries
        now = time.time()
        removed = 0
        while heap and heap[0][0] <= now and removed < budget:
            expiry, collection, key = heapq.heappop(heap)
            entries = self._collections.get(collection)
            if entries is None:
                continue
            item = entries.get(key)
            if item is not None and item[1] == expiry:
                del entries[key]
                removed += 1
                if not entries:
                    del self._collections[collection]
        if removed < budget:
            self._compact_expiries()
        return removed

    def _compact_expiries(self) -> None:
        """Drop heap records of entries overwritten, deleted or evicted since they were pushed."""
        live = sum(len(entries) for entries in self._collections.values())
        if len(self._expiries) <= 2 * live + 1024:
            return
        self._expiries = [
            (item[1], collection, key)
            for collection, entries in self._collections.items()
            for key, item in entries.items()
            if item[1] is not None
        ]
        heapq.heapify(self._expiries)

    async def keys(self, collection: str, limit: int | None) -> list[str]:
        """Return the live keys of ``collection``, least recently used first."""
        entries = self._collections.get(collection)
        if not entries:
            return []
        now = time.time()
        live = [key for key, item in entries.items() if item[1] is None or item[1] > now]
        return live if limit is None else live[:limit]

    async def collections(self, limit: int | None) -> list[str]:
        """Return the collections that hold entries."""
        names = [name for name, entries in self._collections.items() if entries]
        return names if limit is None else names[:limit]

    async def destroy(self) -> bool:
        """Remove every collection."""
        had = any(self._collections.values())
        self._collections.clear()
        self._expiries.clear()
        return had

    async def destroy_collection(self, collection: str) -> bool:
        """Remove one collection."""
        return bool(self._collections.pop(collection, None))

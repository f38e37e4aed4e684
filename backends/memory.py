"""An in-process store: bounded per collection, expired entries out first, then the least recently used.

Everything it holds per entry is a ``str``, ``bytes`` or ``float`` in a plain ``dict``. CPython's
garbage collector never tracks such dicts, so a store of a million entries adds nothing to the
collector's pauses (an ``OrderedDict`` of tuples adds tens of milliseconds to each full collection,
stalling the event loop with it).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Sequence
from itertools import islice

from kvrt.backends.base import Backend, Capabilities

_BUCKET_SECONDS = 1.0
"""Width of the expiry buckets culling walks: an entry is culled within this long of expiring."""


class _Collection:
    """One collection: documents in recency order, their expiries, and expiry buckets for culling.

    A key with a TTL sits in the bucket of its expiry second; overwriting, deleting or evicting it
    takes it out again, so a bucket holds only current entries and culling does no wasted work.
    """

    __slots__ = ("bucket_ids", "buckets", "documents", "expiries")

    def __init__(self) -> None:
        self.documents: dict[str, bytes] = {}
        self.expiries: dict[str, float] = {}
        self.buckets: dict[int, dict[str, None]] = {}
        self.bucket_ids: list[int] = []

    def store(self, key: str, document: bytes, expiry: float | None) -> None:
        documents = self.documents
        if key in documents:
            del documents[key]  # re-inserted below: most recently used
            if key in self.expiries:
                self._unschedule(key)
        documents[key] = document
        if expiry is not None:
            self.expiries[key] = expiry
            bucket_id = int(expiry // _BUCKET_SECONDS)
            bucket = self.buckets.get(bucket_id)
            if bucket is None:
                bucket = self.buckets[bucket_id] = {}
                self._schedule_bucket(bucket_id)
            bucket[key] = None

    def _schedule_bucket(self, bucket_id: int) -> None:
        """Put a new bucket's id in the heap, rebuilding it when ids of emptied buckets make up half.

        An emptied bucket leaves its id behind (taking one out of a heap is O(n)), and a key that is
        overwritten again and again empties its bucket each time; rebuilding at half keeps the heap
        within twice the live buckets, at O(1) amortised per write.
        """
        ids = self.bucket_ids
        if len(ids) >= 2 * len(self.buckets):
            ids[:] = self.buckets  # the new bucket is in there already
            heapq.heapify(ids)
        else:
            heapq.heappush(ids, bucket_id)

    def remove(self, key: str) -> None:
        del self.documents[key]
        if key in self.expiries:
            self._unschedule(key)

    def _unschedule(self, key: str) -> None:
        bucket_id = int(self.expiries.pop(key) // _BUCKET_SECONDS)
        bucket = self.buckets[bucket_id]
        del bucket[key]
        if not bucket:
            del self.buckets[bucket_id]  # its id stays in the heap until popped or rebuilt away

    def is_live(self, key: str, now: float) -> bool:
        expiry = self.expiries.get(key)
        return expiry is None or expiry > now

    def cull(self, now: float, budget: int) -> tuple[int, bool]:
        """Remove up to ``budget`` entries of buckets wholly in the past; return (removed, done)."""
        removed = 0
        ids = self.bucket_ids
        while ids and (ids[0] + 1) * _BUCKET_SECONDS <= now:
            bucket = self.buckets.get(ids[0])
            if bucket is None:
                heapq.heappop(ids)
                continue
            if removed >= budget:
                return removed, False
            for key in list(islice(bucket, budget - removed)):
                self.remove(key)
                removed += 1
            if ids[0] not in self.buckets:
                heapq.heappop(ids)
        return removed, True

    def drop_expired(self, now: float, budget: int) -> None:
        """Remove expired entries, including those of the bucket still filling, up to ``budget``."""
        removed, _ = self.cull(now, budget)
        current = self.buckets.get(int(now // _BUCKET_SECONDS), {})
        for key in [key for key in islice(current, budget - removed) if self.expiries[key] <= now]:
            self.remove(key)

    def has_live(self, now: float) -> bool:
        return len(self.documents) > len(self.expiries) or any(expiry > now for expiry in self.expiries.values())


class MemoryBackend(Backend):
    """Keeps documents in process memory, at most ``max_entries_per_collection`` per collection.

    Reads, writes and deletes are O(1). Past the bound, a write first drops the collection's expired
    entries, then evicts the least recently used (a read or a write makes an entry recent). A cull
    step costs O(1) per entry it removes, however many entries never expire.
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

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        """Return each key's document, refreshing its recency; expired entries read as missing."""
        stored = self._collections.get(collection)
        if stored is None:
            return [None] * len(keys)
        documents, expiries = stored.documents, stored.expiries
        now = time.time()
        found: list[bytes | str | None] = []
        for key in keys:
            document = documents.get(key)
            if document is None:
                found.append(None)
            elif expiries and not stored.is_live(key, now):
                stored.remove(key)
                found.append(None)
            else:
                del documents[key]
                documents[key] = document
                found.append(document)
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
        for key, entry, expiry in zip(keys, entries, expires_at, strict=True):
            stored.store(key, entry, expiry)
        documents = stored.documents
        overflow = len(documents) - self.max_entries_per_collection
        if overflow > 0:
            stored.drop_expired(time.time(), overflow + 64)
            while len(documents) > self.max_entries_per_collection:
                stored.remove(next(iter(documents)))

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Remove each key; an entry that had already expired does not count as removed."""
        stored = self._collections.get(collection)
        if stored is None:
            return [False] * len(keys)
        now = time.time()
        removed: list[bool] = []
        for key in keys:
            if key in stored.documents:
                removed.append(stored.is_live(key, now))
                stored.remove(key)
            else:
                removed.append(False)
        if not stored.documents:
            del self._collections[collection]
        return removed

    async def cull(self, budget: int) -> tuple[int, bool]:
        """Remove up to ``budget`` expired entries across collections."""
        now = time.time()
        removed = 0
        for name in list(self._collections):
            stored = self._collections[name]
            gone, done = stored.cull(now, budget - removed)
            removed += gone
            if not stored.documents:
                del self._collections[name]
            if not done:
                return removed, False
        return removed, True

    async def keys(self, collection: str, limit: int | None) -> list[str]:
        """Return the live keys of ``collection``, least recently used first."""
        stored = self._collections.get(collection)
        if stored is None:
            return []
        now = time.time()
        live = [key for key in stored.documents if stored.is_live(key, now)]
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

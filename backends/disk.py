"""A store in one directory, on diskcache (SQLite in WAL mode): the persistent embedded default.

diskcache blocks, so every call runs in a thread, one at a time (a capacity limiter of one), and
the app's event loop never waits on the disk. A batch is one hop: the reads of a merged ``get`` in
one call, the writes of a merged ``put`` or ``delete`` in one transaction, so an acknowledged write
is committed and survives the process being killed.

The layout is py-key-value's ``DiskStore``'s, so either library reads the other's directory: the
diskcache key ``"{collection}::{key}"`` (see :mod:`kvrt.backends.layout`) holds the JSON document
as a ``str``, with diskcache's own expiry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import diskcache

from kvrt.backends.base import Backend, Capabilities
from kvrt.backends.layout import collection_prefix, past_prefix, split_compound_key
from kvrt.lanes import ThreadLane

_T = TypeVar("_T")
_MISSING: Any = object()

# diskcache's ``set`` looks each key up before writing it (a replaced value may have left a file
# to remove) and culls after it. A batch of small documents needs neither: one UPSERT, run for
# every row by sqlite3 in C, writes the rows ``set`` would (raw str key, value inline as MODE_RAW,
# size 0, no tag, access count reset); eviction follows the commit.
_UPSERT = (
    "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag, size, mode, filename, value)"
    " VALUES (?, 1, ?, ?, ?, 0, NULL, 0, 1, NULL, ?)"
    " ON CONFLICT(key, raw) DO UPDATE SET store_time = excluded.store_time, expire_time = excluded.expire_time,"
    " access_time = excluded.access_time, access_count = 0, tag = NULL, size = 0, mode = 1, filename = NULL,"
    " value = excluded.value"
)
# diskcache's ``get`` reads one key per query (and, under the LRU and LFU policies, counts the
# access). Where nothing is counted, one query reads a batch's live rows.
_SELECT_LIVE = (
    "SELECT key, mode, value FROM Cache WHERE raw = 1 AND key IN ({}) AND (expire_time IS NULL OR expire_time > ?)"
)
_MODE_RAW = 1  # diskcache's mode of a value stored inline as it is
_FILES_SIZE = "SELECT value FROM Settings WHERE key = 'size'"  # diskcache's running total of its files' bytes
_IN_FILES = "SELECT 1 FROM Cache WHERE raw = 1 AND filename IS NOT NULL AND key IN ({}) LIMIT 1"

_LIVE_NAMES = (
    "SELECT key FROM Cache WHERE raw = 1 AND typeof(key) = 'text' AND (expire_time IS NULL OR expire_time > ?)"
)
"""The live str keys of a cache (diskcache keeps a str key as it is): one query, where ``iterkeys`` makes one a key."""
_LIVE_KEYS = f"{_LIVE_NAMES} AND key >= ? AND key < ?"
"""The same, of one collection's prefix: a range on diskcache's key index."""


EvictionPolicy = Literal["least-recently-stored", "least-recently-used", "least-frequently-used", "none"]


_CHUNK = 900
"""Keys per ``IN (...)`` query: within SQLite's oldest bound on bound variables (999), so a bulk call of
any size is a series of queries inside its one transaction."""


def _placeholders(count: int) -> str:
    return ",".join("?" * count)


def _chunks(names: list[str]) -> list[list[str]]:
    return [names[start : start + _CHUNK] for start in range(0, len(names), _CHUNK)]


def _document(stored: object) -> bytes | str | None:
    return stored if isinstance(stored, str | bytes) else None


class DiskBackend(Backend):
    """Entries in a diskcache ``Cache`` in ``directory`` (created if missing).

    ``size_limit`` (bytes) bounds the directory: past it, diskcache evicts by ``eviction_policy``,
    ``least-recently-stored`` first by default (the oldest writes go first; reads do not refresh
    them). Without a ``size_limit`` nothing is evicted. Or pass an open ``cache`` you own; kvrt
    then never closes it. Expired entries are never returned, and are culled in the background.
    """

    name = "disk"
    capabilities = Capabilities(
        native_ttl=False,  # diskcache removes expired entries only when asked: the runtime culls
        max_batch=1024,
        keys=True,
        collections=True,
        destroy=True,
        destroy_collection=True,
        cull=True,
    )

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        size_limit: int | None = None,
        eviction_policy: EvictionPolicy = "least-recently-stored",
        cache: diskcache.Cache | None = None,
    ) -> None:
        if (directory is None) == (cache is None):
            raise ValueError("give DiskBackend a directory or an open diskcache.Cache, not both")
        if size_limit is not None and (type(size_limit) is not int or size_limit < 1):
            raise ValueError("size_limit must be a positive number of bytes")
        self.directory = Path(cache.directory if cache is not None else directory)  # type: ignore[arg-type]
        self._size_limit = size_limit
        self._eviction_policy = eviction_policy if size_limit is not None else "none"
        self._cache = cache
        self._owns_cache = cache is None
        self._lane = ThreadLane(f"kvrt {self.name} lane")
        self._cull_cursor: float | None = None
        self._cull_stride = 1.0

    async def _run(self, call: Callable[..., _T], *args: Any) -> _T:
        """Run a blocking call on this backend's thread lane, in order, off the event loop."""
        return await self._lane.run(call, *args)

    @property
    def cache(self) -> diskcache.Cache:
        """The open diskcache (only between :meth:`open` and :meth:`close`)."""
        return self.opened(self._cache)

    async def open(self) -> None:
        """Open (and create) the cache directory."""
        if self._cache is None:
            self._cache = await self._run(self._open_cache)

    def _open_cache(self, directory: Path | None = None) -> diskcache.Cache:
        directory = directory or self.directory
        directory.mkdir(parents=True, exist_ok=True)
        # No culling on every write: the runtime culls expired entries in the background, and
        # eviction runs once after each batch.
        settings: dict[str, Any] = {"eviction_policy": self._eviction_policy, "cull_limit": 0}
        if self._size_limit is not None:
            settings["size_limit"] = self._size_limit
        return diskcache.Cache(str(directory), **settings)

    def _place(self, collection: str) -> tuple[diskcache.Cache, str]:
        """Return the cache that holds ``collection`` and the prefix of its keys there."""
        return self.cache, collection_prefix(collection)

    def _find(self, collection: str) -> tuple[diskcache.Cache, str] | None:
        """Like :meth:`_place` for reading: ``None`` where the collection has no place yet."""
        return self._place(collection)

    def _every_cache(self) -> list[diskcache.Cache]:
        """Every cache this backend's entries live in."""
        return [self.cache]

    async def close(self) -> None:
        """Close the cache, if kvrt opened it, and end the thread lane."""
        try:
            if self._owns_cache and self._cache is not None:
                cache, self._cache = self._cache, None
                await self._run(cache.close)
        finally:
            await self._lane.aclose()

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        """Read every key in one hop to the disk thread."""
        return await self._run(self._get_many, collection, keys)

    def _get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        place = self._find(collection)
        if place is None:
            return [None] * len(keys)
        cache, prefix = place
        names = [prefix + key for key in keys]
        with cache.transact(retry=True):  # one transaction for the batch
            if cache.eviction_policy in ("none", "least-recently-stored"):
                now = time.time()
                rows: list[Any] = []
                for chunk in _chunks(names):
                    query = _SELECT_LIVE.format(_placeholders(len(chunk)))
                    rows += cache._con.execute(query, [*chunk, now]).fetchall()
                inline = {name: value for name, mode, value in rows if mode == _MODE_RAW}
                if len(inline) == len(rows):
                    return [_document(inline.get(name)) for name in names]
            return [_document(cache.get(name, retry=True)) for name in names]

    async def put_many(
        self,
        collection: str,
        keys: Sequence[str],
        entries: Sequence[bytes],
        expires_at: Sequence[float | None],
    ) -> None:
        """Write every entry in one transaction."""
        await self._run(self._put_many, collection, keys, entries, expires_at)

    def _put_many(
        self, collection: str, keys: Sequence[str], entries: Sequence[bytes], expires_at: Sequence[float | None]
    ) -> None:
        cache, prefix = self._place(collection)
        names = [prefix + key for key in keys]
        documents = [entry.decode() for entry in entries]
        with cache.transact(retry=True):
            now = time.time()
            if self._all_inline(cache, names, documents):
                rows = zip(names, documents, expires_at, strict=True)
                cache._con.executemany(_UPSERT, [(name, now, expiry, now, document) for name, document, expiry in rows])
            else:
                for name, document, expiry in zip(names, documents, expires_at, strict=True):
                    # diskcache expiry is relative; a document already past its expiry is still
                    # written (it replaces the old one) and reads as missing.
                    expire = None if expiry is None else max(expiry - now, 1e-6)
                    cache.set(name, document, expire=expire, retry=True)
        # Evict after the commit: inside a transaction the file has not shrunk yet, and culling
        # there goes on until the cache is empty.
        if cache.eviction_policy != "none" and cache.volume() > cache.size_limit:
            cache.cull(retry=True)

    @staticmethod
    def _all_inline(cache: diskcache.Cache, names: list[str], documents: list[str]) -> bool:
        """Say whether every document is stored inline, now and before (no file to write or remove)."""
        if max(map(len, documents)) >= cache.disk_min_file_size:
            return False
        con = cache._con
        if con.execute(_FILES_SIZE).fetchone() == (0,):  # no file in the whole cache
            return True
        return all(
            con.execute(_IN_FILES.format(_placeholders(len(chunk))), chunk).fetchone() is None
            for chunk in _chunks(names)
        )

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Delete every key in one transaction; an expired entry does not count as removed."""
        return await self._run(self._delete_many, collection, keys)

    def _delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        place = self._find(collection)
        if place is None:
            return [False] * len(keys)
        cache, prefix = place
        with cache.transact(retry=True):
            return [cache.pop(prefix + key, _MISSING, retry=True) is not _MISSING for key in keys]

    async def cull(self, budget: int) -> tuple[int, bool]:
        """Remove expired entries, about ``budget`` of them per step."""
        return await self._run(self._cull, budget)

    def _cull(self, budget: int) -> tuple[int, bool]:
        # diskcache's public expire(now) removes everything that expired before ``now``. Advance
        # that cutoff through expiry time from step to step, stretching or shrinking the stride so
        # a step removes about ``budget`` entries.
        now = time.time()
        cursor = self._cull_cursor if self._cull_cursor is not None else now - 3600.0
        cutoff = min(now, cursor + self._cull_stride)
        removed = sum(int(cache.expire(now=cutoff, retry=True)) for cache in self._every_cache())
        if removed > budget:
            self._cull_stride = max(self._cull_stride / 2, 0.001)
        elif removed < budget // 2:
            self._cull_stride = min(self._cull_stride * 2, 3600.0)
        done = cutoff >= now
        self._cull_cursor = None if done else cutoff
        return removed, done

    async def keys(self, collection: str, limit: int | None) -> list[str]:
        """Return the live keys of ``collection``: one query on the key index of the cache that holds it."""
        return await self._run(self._keys, collection, limit)

    def _keys(self, collection: str, limit: int | None) -> list[str]:
        place = self._find(collection)
        if place is None:
            return []
        cache, prefix = place
        query, arguments = (
            (_LIVE_KEYS, [time.time(), prefix, past_prefix(prefix)]) if prefix else (_LIVE_NAMES, [time.time()])
        )
        if limit is not None:
            query, arguments = f"{query} LIMIT ?", [*arguments, limit]
        start = len(prefix)
        return [stored[start:] for (stored,) in cache._con.execute(query, arguments)]

    async def collections(self, limit: int | None) -> list[str]:
        """Return the collections that hold live entries (one query over the whole cache's keys)."""
        return await self._run(self._collections, limit)

    def _collections(self, limit: int | None) -> list[str]:
        names: dict[str, None] = {}
        for (stored,) in self.cache._con.execute(_LIVE_NAMES, (time.time(),)):
            parts = split_compound_key(stored)
            if parts is not None and parts[0] not in names:
                names[parts[0]] = None
                if limit is not None and len(names) >= limit:
                    break
        return list(names)

    async def destroy(self) -> bool:
        """Remove every kvrt entry (keys in kvrt's layout only, never other data)."""
        return await self._run(self._destroy, None)

    async def destroy_collection(self, collection: str) -> bool:
        """Remove every entry of ``collection``."""
        return await self._run(self._destroy, collection)

    def _destroy(self, collection: str | None) -> bool:
        if collection is None:
            places = [(cache, "") for cache in self._every_cache()]
        else:
            place = self._find(collection)
            places = [] if place is None else [place]
        live = False
        for cache, prefix in places:
            doomed = [
                stored
                for stored in cache.iterkeys()
                if isinstance(stored, str) and stored.startswith(prefix) and self._is_entry(stored)
            ]
            with cache.transact(retry=True):
                for stored in doomed:
                    live = cache.pop(stored, _MISSING, retry=True) is not _MISSING or live
        return live

    @staticmethod
    def _is_entry(stored: str) -> bool:
        """Say whether a diskcache key is one of kvrt's entries (and not other data in the cache)."""
        return split_compound_key(stored) is not None

    def is_transient(self, error: BaseException) -> bool:
        """Call a database timeout (another process holding the lock) transient: worth a retry."""
        return isinstance(error, diskcache.Timeout)

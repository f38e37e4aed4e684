"""One diskcache directory per collection under a base directory: py-key-value's ``MultiDiskStore`` layout.

A collection's cache holds its keys as they are (no ``collection::`` prefix), so its size limit,
eviction and removal are its own. Its directory is its name with every character but ASCII
letters, digits, ``_`` and ``-`` percent-encoded (as UTF-8): a name never escapes the base
directory (it cannot hold ``/`` or be ``.`` or ``..``), no two names share a directory, and simple
names are the reference's directory names as they are. A name whose encoding would pass 200
characters gets ``%%`` and its SHA-256 instead, with the name itself in a file there.
"""

from __future__ import annotations

import string
from pathlib import Path
from urllib.parse import unquote

import diskcache

from kvrt.backends.disk import DiskBackend, EvictionPolicy
from kvrt.backends.names import hashed, is_hashed

_SAFE = frozenset(string.ascii_letters + string.digits + "_-")
_LONGEST = 200
_NAME_FILE = "kvrt-collection"


def collection_directory(collection: str) -> str:
    """Return the directory name of ``collection``, inside the base directory."""
    encoded = "".join(
        char if char in _SAFE else "".join(f"%{byte:02X}" for byte in char.encode()) for char in collection
    )
    if len(encoded) <= _LONGEST:
        return encoded
    return hashed(collection)


def directory_collection(directory: Path) -> str | None:
    """Return the collection ``directory`` holds, or ``None`` if it is not a collection's directory."""
    if is_hashed(directory.name):
        try:
            collection = (directory / _NAME_FILE).read_text(encoding="utf-8")
        except OSError:
            return None
    else:
        try:
            collection = unquote(directory.name, errors="strict")
        except UnicodeDecodeError:
            return None
    # Only names that encode back to this directory: another tool's "a.b" is not kvrt's "a.b".
    return collection if collection and collection_directory(collection) == directory.name else None


class MultiDiskBackend(DiskBackend):
    """One diskcache ``Cache`` per collection, in directories under ``base_directory``.

    ``size_limit`` and ``eviction_policy`` apply to each collection's directory on its own.
    Collections are opened as they are first used, and all of them for culling, ``collections``
    and ``destroy``.
    """

    name = "multi-disk"

    def __init__(
        self,
        base_directory: str | Path,
        *,
        size_limit: int | None = None,
        eviction_policy: EvictionPolicy = "least-recently-stored",
    ) -> None:
        super().__init__(base_directory, size_limit=size_limit, eviction_policy=eviction_policy)
        self._caches: dict[str, diskcache.Cache] = {}

    async def open(self) -> None:
        """Create the base directory; collections open as they are used."""
        await self._run(self._open_base)

    def _open_base(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        """Close every collection's cache and end the thread lane."""
        caches, self._caches = self._caches, {}
        try:
            for cache in caches.values():
                await self._run(cache.close)
        finally:
            await self._lane.aclose()

    def _place(self, collection: str) -> tuple[diskcache.Cache, str]:
        cache = self._caches.get(collection)
        if cache is None:
            name = collection_directory(collection)
            cache = self._open_cache(self.directory / name)
            if is_hashed(name):
                (self.directory / name / _NAME_FILE).write_text(collection, encoding="utf-8")
            self._caches[collection] = cache
        return cache, ""

    def _find(self, collection: str) -> tuple[diskcache.Cache, str] | None:
        if collection in self._caches or (self.directory / collection_directory(collection) / "cache.db").exists():
            return self._place(collection)
        return None

    def _every_cache(self) -> list[diskcache.Cache]:
        for directory in self.directory.iterdir():
            collection = directory_collection(directory)
            if collection is not None and (directory / "cache.db").exists():
                self._place(collection)
        return list(self._caches.values())

    def _collections(self, limit: int | None) -> list[str]:
        self._every_cache()
        names = [
            collection
            for collection, cache in self._caches.items()
            if any(stored in cache for stored in cache.iterkeys())  # stops at the first live key
        ]
        return names if limit is None else names[:limit]

    @staticmethod
    def _is_entry(stored: str) -> bool:
        return True  # a collection's cache holds nothing but its entries

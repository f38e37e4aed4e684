"""The ``AsyncKeyValue`` protocol and its optional segments (SPEC.md section 1).

These mirror py-key-value's protocol classes name for name, so a kvrt handle fits wherever that
project's stores are expected. Segments are separate protocols: a handle offers one only when its
backend can do it, so ``isinstance(handle, AsyncEnumerateKeysProtocol)`` answers truthfully.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, SupportsFloat, cast, runtime_checkable


@runtime_checkable
class AsyncKeyValueProtocol(Protocol):
    """Get, put, delete and TTL of JSON-able mappings, single and bulk, grouped into collections."""

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        """Return the value stored under ``key``, or ``None`` when missing or expired."""
        ...

    async def ttl(self, key: str, *, collection: str | None = None) -> tuple[dict[str, Any] | None, float | None]:
        """Return ``(value, seconds_left)``; ``seconds_left`` is ``None`` for entries without expiry."""
        ...

    async def put(
        self,
        key: str,
        value: Mapping[str, Any],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        """Store ``value`` under ``key``, replacing what was there; ``ttl`` seconds until it expires."""
        ...

    async def delete(self, key: str, *, collection: str | None = None) -> bool:
        """Remove ``key``; ``True`` if something was removed."""
        ...

    async def get_many(self, keys: Sequence[str], *, collection: str | None = None) -> list[dict[str, Any] | None]:
        """Return the values of ``keys``, in order, ``None`` for each miss."""
        ...

    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[tuple[dict[str, Any] | None, float | None]]:
        """Return ``(value, seconds_left)`` for each of ``keys``, in order."""
        ...

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        """Store each value under its key, with one TTL for all of them."""
        ...

    async def delete_many(self, keys: Sequence[str], *, collection: str | None = None) -> int:
        """Remove ``keys``; return how many were actually removed."""
        ...


@runtime_checkable
class AsyncKeyValue(AsyncKeyValueProtocol, Protocol):
    """The protocol framework authors code against: the eight methods of :class:`AsyncKeyValueProtocol`."""


@runtime_checkable
class AsyncCullProtocol(Protocol):
    """Segment: remove expired entries on demand."""

    async def cull(self) -> None:
        """Remove every expired entry now."""
        ...


@runtime_checkable
class AsyncEnumerateKeysProtocol(Protocol):
    """Segment: list the keys of a collection."""

    async def keys(self, collection: str | None = None, *, limit: int | None = None) -> list[str]:
        """Return the live keys of ``collection``, all of them unless ``limit`` is given."""
        ...


@runtime_checkable
class AsyncEnumerateCollectionsProtocol(Protocol):
    """Segment: list collection names."""

    async def collections(self, *, limit: int | None = None) -> list[str]:
        """Return the names of the collections that hold entries."""
        ...


@runtime_checkable
class AsyncDestroyStoreProtocol(Protocol):
    """Segment: remove everything the backend holds for kvrt."""

    async def destroy(self) -> bool:
        """Remove every entry of every collection; ``True`` if anything was removed."""
        ...


@runtime_checkable
class AsyncDestroyCollectionProtocol(Protocol):
    """Segment: remove one collection."""

    async def destroy_collection(self, collection: str) -> bool:
        """Remove every entry of ``collection``; ``True`` if anything was removed."""
        ...


SEGMENT_PROTOCOLS: dict[str, type] = {
    "collections": AsyncEnumerateCollectionsProtocol,
    "cull": AsyncCullProtocol,
    "destroy": AsyncDestroyStoreProtocol,
    "destroy_collection": AsyncDestroyCollectionProtocol,
    "keys": AsyncEnumerateKeysProtocol,
}


def segments_of(store: object) -> frozenset[str]:
    """Return the optional segments ``store`` offers (a kvrt handle or wrapper, or any store of the reference)."""
    return frozenset(name for name, protocol in SEGMENT_PROTOCOLS.items() if isinstance(store, protocol))


def keys_of(store: object) -> AsyncEnumerateKeysProtocol:
    """Return ``store`` typed as offering ``keys`` (as :func:`segments_of` found it)."""
    return cast("AsyncEnumerateKeysProtocol", store)


def collections_of(store: object) -> AsyncEnumerateCollectionsProtocol:
    """Return ``store`` typed as offering ``collections`` (as :func:`segments_of` found it)."""
    return cast("AsyncEnumerateCollectionsProtocol", store)


def destroy_of(store: object) -> AsyncDestroyStoreProtocol:
    """Return ``store`` typed as offering ``destroy`` (as :func:`segments_of` found it)."""
    return cast("AsyncDestroyStoreProtocol", store)


def destroy_collection_of(store: object) -> AsyncDestroyCollectionProtocol:
    """Return ``store`` typed as offering ``destroy_collection`` (as :func:`segments_of` found it)."""
    return cast("AsyncDestroyCollectionProtocol", store)


def cull_of(store: object) -> AsyncCullProtocol:
    """Return ``store`` typed as offering ``cull`` (as :func:`segments_of` found it)."""
    return cast("AsyncCullProtocol", store)

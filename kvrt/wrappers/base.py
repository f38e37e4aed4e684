"""The wrapper base: every call passed through, and the optional segments offered exactly as the wrapped store does.

The reference's wrappers offer only the eight protocol methods, so a wrapped store can no longer
list or clear what it holds. A kvrt wrapper offers each optional segment (``keys``,
``collections``, ``destroy``, ``destroy_collection``, ``cull``) when it can translate it onto what
it wraps: its class is composed, at construction, from the segment classes below, so
``isinstance(wrapper, AsyncEnumerateKeysProtocol)`` answers truthfully. A segment's method calls
the wrapper's hook (``_keys``, ``_collections``, ...), which a wrapper that renames keys or
collections overrides; the base hooks pass straight through.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, SupportsFloat

from kvrt.protocol import (
    AsyncKeyValue,
    collections_of,
    cull_of,
    destroy_collection_of,
    destroy_of,
    keys_of,
    segments_of,
)


def first(names: Iterable[str], limit: int | None) -> list[str]:
    """Return the first ``limit`` of ``names`` (all of them for ``None``), for hooks that filter what they list."""
    listed = list(names)
    return listed if limit is None else listed[:limit]


class _Hooks:
    """What a segment class calls; :class:`BaseWrapper` gives each a pass-through body."""

    async def _keys(self, collection: str | None, limit: int | None) -> list[str]:
        raise NotImplementedError

    async def _collections(self, limit: int | None) -> list[str]:
        raise NotImplementedError

    async def _destroy(self) -> bool:
        raise NotImplementedError

    async def _destroy_collection(self, collection: str) -> bool:
        raise NotImplementedError

    async def _cull(self) -> None:
        raise NotImplementedError


class BaseWrapper(_Hooks):
    """Wraps ``key_value`` and passes every call through unchanged; subclasses change what they need.

    A subclass sets its attributes and then calls ``super().__init__()``, which offers the segments
    :meth:`_segments` names. One that does not call it, or has no ``key_value`` yet, offers none.
    """

    key_value: AsyncKeyValue

    def __init__(self, key_value: AsyncKeyValue | None = None) -> None:
        if key_value is not None:
            self.key_value = key_value
        if not hasattr(self, "key_value"):
            return
        segments = self._segments()
        if segments:
            self.__class__ = _composed(type(self), segments)

    def _segments(self) -> frozenset[str]:
        """Return the segments this wrapper can offer: by default exactly those of what it wraps."""
        return segments_of(self.key_value)

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        return await self.key_value.get(key, collection=collection)

    async def get_many(self, keys: Sequence[str], *, collection: str | None = None) -> list[dict[str, Any] | None]:
        return await self.key_value.get_many(keys, collection=collection)

    async def ttl(self, key: str, *, collection: str | None = None) -> tuple[dict[str, Any] | None, float | None]:
        return await self.key_value.ttl(key, collection=collection)

    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[tuple[dict[str, Any] | None, float | None]]:
        return await self.key_value.ttl_many(keys, collection=collection)

    async def put(
        self, key: str, value: Mapping[str, Any], *, collection: str | None = None, ttl: SupportsFloat | None = None
    ) -> None:
        await self.key_value.put(key, value, collection=collection, ttl=ttl)

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        await self.key_value.put_many(keys, values, collection=collection, ttl=ttl)

    async def delete(self, key: str, *, collection: str | None = None) -> bool:
        return await self.key_value.delete(key, collection=collection)

    async def delete_many(self, keys: Sequence[str], *, collection: str | None = None) -> int:
        return await self.key_value.delete_many(keys, collection=collection)

    # The segment hooks: called only through a segment this wrapper offers.

    async def _keys(self, collection: str | None, limit: int | None) -> list[str]:
        return await keys_of(self.key_value).keys(collection, limit=limit)

    async def _collections(self, limit: int | None) -> list[str]:
        return await collections_of(self.key_value).collections(limit=limit)

    async def _destroy(self) -> bool:
        return await destroy_of(self.key_value).destroy()

    async def _destroy_collection(self, collection: str) -> bool:
        return await destroy_collection_of(self.key_value).destroy_collection(collection)

    async def _cull(self) -> None:
        await cull_of(self.key_value).cull()


class ValueWrapper(BaseWrapper):
    """A wrapper that changes values on their way in and out (an envelope), and nothing else.

    A subclass gives :meth:`_store` (the stored form of a value) and :meth:`_load` (the value of a
    stored form, ``None`` for one that reads as missing).
    """

    def _store(self, value: Mapping[str, Any]) -> Mapping[str, Any]:
        raise NotImplementedError

    def _load(self, stored: dict[str, Any] | None) -> dict[str, Any] | None:
        raise NotImplementedError

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        return self._load(await self.key_value.get(key, collection=collection))

    async def get_many(self, keys: Sequence[str], *, collection: str | None = None) -> list[dict[str, Any] | None]:
        return [self._load(value) for value in await self.key_value.get_many(keys, collection=collection)]

    async def ttl(self, key: str, *, collection: str | None = None) -> tuple[dict[str, Any] | None, float | None]:
        stored, seconds = await self.key_value.ttl(key, collection=collection)
        value = self._load(stored)
        return (value, seconds) if value is not None else (None, None)

    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[tuple[dict[str, Any] | None, float | None]]:
        found = await self.key_value.ttl_many(keys, collection=collection)
        loaded = [(self._load(stored), seconds) for stored, seconds in found]
        return [(value, seconds) if value is not None else (None, None) for value, seconds in loaded]

    async def put(
        self, key: str, value: Mapping[str, Any], *, collection: str | None = None, ttl: SupportsFloat | None = None
    ) -> None:
        await self.key_value.put(key, self._store(value), collection=collection, ttl=ttl)

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        await self.key_value.put_many(keys, [self._store(value) for value in values], collection=collection, ttl=ttl)


class KeysSegment(_Hooks):
    """The ``keys`` segment, mixed into a wrapper whose store offers it."""

    async def keys(self, collection: str | None = None, *, limit: int | None = None) -> list[str]:
        """Return the live keys of ``collection``, as this wrapper's callers name them."""
        return await self._keys(collection, limit)


class CollectionsSegment(_Hooks):
    """The ``collections`` segment, mixed into a wrapper whose store offers it."""

    async def collections(self, *, limit: int | None = None) -> list[str]:
        """Return the names of the collections that hold entries, as this wrapper's callers name them."""
        return await self._collections(limit)


class DestroySegment(_Hooks):
    """The ``destroy`` segment, mixed into a wrapper whose store offers it."""

    async def destroy(self) -> bool:
        """Remove everything this wrapper holds; ``True`` if anything was removed."""
        return await self._destroy()


class DestroyCollectionSegment(_Hooks):
    """The ``destroy_collection`` segment, mixed into a wrapper whose store offers it."""

    async def destroy_collection(self, collection: str) -> bool:
        """Remove every entry of ``collection``; ``True`` if anything was removed."""
        return await self._destroy_collection(collection)


class CullSegment(_Hooks):
    """The ``cull`` segment, mixed into a wrapper whose store offers it."""

    async def cull(self) -> None:
        """Remove every expired entry now."""
        await self._cull()


_SEGMENT_CLASSES: dict[str, type[_Hooks]] = {
    "collections": CollectionsSegment,
    "cull": CullSegment,
    "destroy": DestroySegment,
    "destroy_collection": DestroyCollectionSegment,
    "keys": KeysSegment,
}

_COMPOSED: dict[tuple[type[BaseWrapper], frozenset[str]], type[BaseWrapper]] = {}


def _composed(wrapper: type[BaseWrapper], segments: frozenset[str]) -> type[BaseWrapper]:
    composed = _COMPOSED.get((wrapper, segments))
    if composed is None:
        bases = (wrapper, *(_SEGMENT_CLASSES[name] for name in sorted(segments)))
        composed = type(wrapper.__name__, bases, {"__doc__": wrapper.__doc__, "__module__": wrapper.__module__})
        _COMPOSED[wrapper, segments] = composed
    return composed

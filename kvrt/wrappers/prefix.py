"""Prefixed keys or collections: one store shared by several users, each seeing only its own names.

The stored names are the reference's (``f"{prefix}__{name}"``), and the segments translate both
ways: ``keys()`` and ``collections()`` list only this prefix's names, with the prefix stripped, and
``destroy()`` removes only this prefix's entries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, SupportsFloat

from kvrt.entry import DEFAULT_COLLECTION, check_key, check_keys, check_limit, collection_name
from kvrt.protocol import AsyncKeyValue, collections_of, destroy_collection_of, keys_of, segments_of
from kvrt.wrappers.base import BaseWrapper, first

SEPARATOR: Final = "__"
"""The reference's separator between a prefix and the name it prefixes."""


class PrefixKeysWrapper(BaseWrapper):
    """Stores each key as ``f"{prefix}__{key}"``, in the collection the caller names."""

    def __init__(self, key_value: AsyncKeyValue, prefix: str) -> None:
        self.key_value = key_value
        self.prefix = prefix
        self._head = prefix + SEPARATOR
        super().__init__()

    def _segments(self) -> frozenset[str]:
        inner = segments_of(self.key_value)
        offered = {"cull"} & inner
        if "keys" in inner:
            offered |= {"keys", "destroy_collection"}
            if "collections" in inner:
                offered |= {"collections", "destroy"}
        return frozenset(offered)

    def _key(self, key: str) -> str:
        return self._head + (key if type(key) is str and key else check_key(key))

    def _keys_of(self, keys: Sequence[str]) -> list[str]:
        head = self._head
        return [head + key for key in check_keys(keys)]

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        return await self.key_value.get(self._key(key), collection=collection)

    async def get_many(self, keys: Sequence[str], *, collection: str | None = None) -> list[dict[str, Any] | None]:
        return await self.key_value.get_many(self._keys_of(keys), collection=collection)

    async def ttl(self, key: str, *, collection: str | None = None) -> tuple[dict[str, Any] | None, float | None]:
        return await self.key_value.ttl(self._key(key), collection=collection)

    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[tuple[dict[str, Any] | None, float | None]]:
        return await self.key_value.ttl_many(self._keys_of(keys), collection=collection)

    async def put(
        self, key: str, value: Mapping[str, Any], *, collection: str | None = None, ttl: SupportsFloat | None = None
    ) -> None:
        await self.key_value.put(self._key(key), value, collection=collection, ttl=ttl)

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        await self.key_value.put_many(self._keys_of(keys), values, collection=collection, ttl=ttl)

    async def delete(self, key: str, *, collection: str | None = None) -> bool:
        return await self.key_value.delete(self._key(key), collection=collection)

    async def delete_many(self, keys: Sequence[str], *, collection: str | None = None) -> int:
        return await self.key_value.delete_many(self._keys_of(keys), collection=collection)

    async def _own_keys(self, collection: str | None) -> list[str]:
        """Return the keys of ``collection`` under this prefix, as stored."""
        head = self._head
        return [key for key in await keys_of(self.key_value).keys(collection) if key.startswith(head)]

    async def _keys(self, collection: str | None, limit: int | None) -> list[str]:
        limit = check_limit(limit)
        start = len(self._head)
        return first((key[start:] for key in await self._own_keys(collection)), limit)

    async def _collections(self, limit: int | None) -> list[str]:
        limit = check_limit(limit)
        held = [name for name in await collections_of(self.key_value).collections() if await self._own_keys(name)]
        return first(held, limit)

    async def _destroy_collection(self, collection: str) -> bool:
        own = await self._own_keys(collection)
        return bool(own) and await self.key_value.delete_many(own, collection=collection) > 0

    async def _destroy(self) -> bool:
        removed = False
        for name in await collections_of(self.key_value).collections():
            removed = await self._destroy_collection(name) or removed
        return removed


class PrefixCollectionsWrapper(BaseWrapper):
    """Stores each collection as ``f"{prefix}__{collection}"`` (the default collection too)."""

    def __init__(self, key_value: AsyncKeyValue, prefix: str, default_collection: str | None = None) -> None:
        self.key_value = key_value
        self.prefix = prefix
        self.default_collection = default_collection or DEFAULT_COLLECTION
        self._head = prefix + SEPARATOR
        super().__init__()

    def _segments(self) -> frozenset[str]:
        inner = segments_of(self.key_value)
        offered = {"cull", "keys", "collections", "destroy_collection"} & inner
        if {"collections", "destroy_collection"} <= inner:
            offered.add("destroy")
        return frozenset(offered)

    def _collection(self, collection: str | None) -> str:
        return self._head + collection_name(collection, self.default_collection)

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        return await self.key_value.get(key, collection=self._collection(collection))

    async def get_many(self, keys: Sequence[str], *, collection: str | None = None) -> list[dict[str, Any] | None]:
        return await self.key_value.get_many(keys, collection=self._collection(collection))

    async def ttl(self, key: str, *, collection: str | None = None) -> tuple[dict[str, Any] | None, float | None]:
        return await self.key_value.ttl(key, collection=self._collection(collection))

    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[tuple[dict[str, Any] | None, float | None]]:
        return await self.key_value.ttl_many(keys, collection=self._collection(collection))

    async def put(
        self, key: str, value: Mapping[str, Any], *, collection: str | None = None, ttl: SupportsFloat | None = None
    ) -> None:
        await self.key_value.put(key, value, collection=self._collection(collection), ttl=ttl)

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        await self.key_value.put_many(keys, values, collection=self._collection(collection), ttl=ttl)

    async def delete(self, key: str, *, collection: str | None = None) -> bool:
        return await self.key_value.delete(key, collection=self._collection(collection))

    async def delete_many(self, keys: Sequence[str], *, collection: str | None = None) -> int:
        return await self.key_value.delete_many(keys, collection=self._collection(collection))

    async def _own_collections(self) -> list[str]:
        head = self._head
        return [name for name in await collections_of(self.key_value).collections() if name.startswith(head)]

    async def _keys(self, collection: str | None, limit: int | None) -> list[str]:
        return await keys_of(self.key_value).keys(self._collection(collection), limit=limit)

    async def _collections(self, limit: int | None) -> list[str]:
        limit = check_limit(limit)
        start = len(self._head)
        return first((name[start:] for name in await self._own_collections()), limit)

    async def _destroy_collection(self, collection: str) -> bool:
        return await destroy_collection_of(self.key_value).destroy_collection(self._collection(collection))

    async def _destroy(self) -> bool:
        removed = False
        for name in await self._own_collections():
            removed = await destroy_collection_of(self.key_value).destroy_collection(name) or removed
        return removed

"""Every collection kept in one collection of the wrapped store, each key stored as ``f"{collection}__{key}"``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, SupportsFloat

from kvrt.entry import DEFAULT_COLLECTION, check_key, check_keys, check_limit, collection_name
from kvrt.protocol import AsyncKeyValue, destroy_collection_of, keys_of, segments_of
from kvrt.wrappers.base import BaseWrapper, first
from kvrt.wrappers.prefix import SEPARATOR


class SingleCollectionWrapper(BaseWrapper):
    """Keeps all collections in ``single_collection``, each key prefixed with its collection (the reference's form).

    For stores where collections are costly or fixed (one table, one bucket). The stored key is
    ``f"{collection}{separator}{key}"``, as the reference stores it, so ``collections()`` reads a
    collection's name as what comes before the first separator: a collection whose own name holds
    the separator is listed by its first part (its entries are still found by name).
    """

    def __init__(
        self,
        key_value: AsyncKeyValue,
        single_collection: str,
        default_collection: str | None = None,
        separator: str | None = None,
    ) -> None:
        self.key_value = key_value
        self.single_collection = single_collection
        self.default_collection = default_collection or DEFAULT_COLLECTION
        self.separator = separator or SEPARATOR
        super().__init__()

    def _segments(self) -> frozenset[str]:
        inner = segments_of(self.key_value)
        offered = {"cull"} & inner
        if "keys" in inner:
            offered |= {"keys", "collections", "destroy_collection"}
        if "destroy_collection" in inner:
            offered.add("destroy")
        return frozenset(offered)

    def _key(self, key: str, collection: str | None) -> str:
        return f"{collection_name(collection, self.default_collection)}{self.separator}{check_key(key)}"

    def _keys_of(self, keys: Sequence[str], collection: str | None) -> list[str]:
        head = collection_name(collection, self.default_collection) + self.separator
        return [head + key for key in check_keys(keys)]

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        return await self.key_value.get(self._key(key, collection), collection=self.single_collection)

    async def get_many(self, keys: Sequence[str], *, collection: str | None = None) -> list[dict[str, Any] | None]:
        return await self.key_value.get_many(self._keys_of(keys, collection), collection=self.single_collection)

    async def ttl(self, key: str, *, collection: str | None = None) -> tuple[dict[str, Any] | None, float | None]:
        return await self.key_value.ttl(self._key(key, collection), collection=self.single_collection)

    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[tuple[dict[str, Any] | None, float | None]]:
        return await self.key_value.ttl_many(self._keys_of(keys, collection), collection=self.single_collection)

    async def put(
        self, key: str, value: Mapping[str, Any], *, collection: str | None = None, ttl: SupportsFloat | None = None
    ) -> None:
        await self.key_value.put(self._key(key, collection), value, collection=self.single_collection, ttl=ttl)

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        stored = self._keys_of(keys, collection)
        await self.key_value.put_many(stored, values, collection=self.single_collection, ttl=ttl)

    async def delete(self, key: str, *, collection: str | None = None) -> bool:
        return await self.key_value.delete(self._key(key, collection), collection=self.single_collection)

    async def delete_many(self, keys: Sequence[str], *, collection: str | None = None) -> int:
        return await self.key_value.delete_many(self._keys_of(keys, collection), collection=self.single_collection)

    async def _stored_keys(self, collection: str | None) -> list[str]:
        """Return the stored keys of ``collection``: those of the single collection that begin with its name."""
        head = collection_name(collection, self.default_collection) + self.separator
        return [key for key in await keys_of(self.key_value).keys(self.single_collection) if key.startswith(head)]

    async def _keys(self, collection: str | None, limit: int | None) -> list[str]:
        limit = check_limit(limit)
        start = len(collection_name(collection, self.default_collection) + self.separator)
        return first((key[start:] for key in await self._stored_keys(collection)), limit)

    async def _collections(self, limit: int | None) -> list[str]:
        limit = check_limit(limit)
        separator = self.separator
        stored = await keys_of(self.key_value).keys(self.single_collection)
        names = dict.fromkeys(key.split(separator, 1)[0] for key in stored if separator in key)
        return first(names, limit)

    async def _destroy_collection(self, collection: str) -> bool:
        stored = await self._stored_keys(collection)
        return bool(stored) and await self.key_value.delete_many(stored, collection=self.single_collection) > 0

    async def _destroy(self) -> bool:
        return await destroy_collection_of(self.key_value).destroy_collection(self.single_collection)

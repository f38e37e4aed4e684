"""Each collection's calls sent to the store chosen for it: kvrt handles and foreign stores alike."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, SupportsFloat

from kvrt.entry import DEFAULT_COLLECTION, check_limit
from kvrt.protocol import AsyncKeyValue, collections_of, cull_of, destroy_collection_of, keys_of, segments_of
from kvrt.wrappers.base import BaseWrapper, first

RoutingFunction = Callable[[str | None], AsyncKeyValue | None]
"""Given a call's collection (``None`` for the default), the store to serve it, or ``None`` for the default store."""


class RoutingWrapper(BaseWrapper):
    """Sends every call to ``routing_function(collection)``, or to ``default_store`` where that returns ``None``.

    The collection-scoped segments (``keys``, ``destroy_collection``) are offered where the default
    store offers them; one routed to a store without that segment raises ``TypeError`` naming it.
    Segments over every collection (``collections``, ``destroy``, ``cull``) need to know every store:
    :class:`CollectionRoutingWrapper` offers them.
    """

    def __init__(self, routing_function: RoutingFunction, default_store: AsyncKeyValue) -> None:
        self._routing_function = routing_function
        self._default_store = default_store
        self.key_value = default_store
        super().__init__()

    def _segments(self) -> frozenset[str]:
        return segments_of(self._default_store) & {"keys", "destroy_collection"}

    def _store(self, collection: str | None) -> AsyncKeyValue:
        store = self._routing_function(collection)
        return self._default_store if store is None else store

    def _segment_store(self, collection: str | None, segment: str) -> AsyncKeyValue:
        store = self._store(collection)
        if segment not in segments_of(store):
            raise TypeError(f"the store routed for collection {collection!r} has no {segment}()")
        return store

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        return await self._store(collection).get(key, collection=collection)

    async def get_many(self, keys: Sequence[str], *, collection: str | None = None) -> list[dict[str, Any] | None]:
        return await self._store(collection).get_many(keys, collection=collection)

    async def ttl(self, key: str, *, collection: str | None = None) -> tuple[dict[str, Any] | None, float | None]:
        return await self._store(collection).ttl(key, collection=collection)

    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[tuple[dict[str, Any] | None, float | None]]:
        return await self._store(collection).ttl_many(keys, collection=collection)

    async def put(
        self, key: str, value: Mapping[str, Any], *, collection: str | None = None, ttl: SupportsFloat | None = None
    ) -> None:
        await self._store(collection).put(key, value, collection=collection, ttl=ttl)

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        await self._store(collection).put_many(keys, values, collection=collection, ttl=ttl)

    async def delete(self, key: str, *, collection: str | None = None) -> bool:
        return await self._store(collection).delete(key, collection=collection)

    async def delete_many(self, keys: Sequence[str], *, collection: str | None = None) -> int:
        return await self._store(collection).delete_many(keys, collection=collection)

    async def _keys(self, collection: str | None, limit: int | None) -> list[str]:
        return await keys_of(self._segment_store(collection, "keys")).keys(collection, limit=limit)

    async def _destroy_collection(self, collection: str) -> bool:
        store = self._segment_store(collection, "destroy_collection")
        return await destroy_collection_of(store).destroy_collection(collection)


class CollectionRoutingWrapper(RoutingWrapper):
    """Routes by name: collections in ``collection_map`` to their store, all others to ``default_store``.

    It knows every store, so it offers each segment that all of them offer: ``collections()`` lists
    from each store the collections routed to it, ``destroy()`` removes those collections (and
    nothing else a shared store holds), ``cull()`` reaches every store.
    """

    def __init__(self, collection_map: Mapping[str, AsyncKeyValue], default_store: AsyncKeyValue) -> None:
        self._collection_map = MappingProxyType(dict(collection_map))
        self._stores = list({id(store): store for store in (default_store, *collection_map.values())}.values())
        routes = self._collection_map
        super().__init__(lambda collection: routes.get(collection or DEFAULT_COLLECTION), default_store)

    def _segments(self) -> frozenset[str]:
        offered = frozenset.intersection(*(segments_of(store) for store in self._stores)) - {"destroy"}
        if {"collections", "destroy_collection"} <= offered:
            offered |= {"destroy"}
        return offered

    async def _collections(self, limit: int | None) -> list[str]:
        limit = check_limit(limit)
        names: dict[str, None] = {}
        for store in self._stores:
            for name in await collections_of(store).collections():
                if self._store(name) is store:
                    names[name] = None
        return first(names, limit)

    async def _destroy(self) -> bool:
        removed = False
        for name in await self._collections(None):
            removed = await destroy_collection_of(self._store(name)).destroy_collection(name) or removed
        return removed

    async def _cull(self) -> None:
        for store in self._stores:
            await cull_of(store).cull()

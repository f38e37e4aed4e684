"""A near cache in front of a far store: reads fill it, writes and deletes keep the two consistent."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, SupportsFloat

from kvrt.entry import DEFAULT_COLLECTION
from kvrt.protocol import AsyncKeyValue, cull_of, destroy_collection_of, destroy_of, segments_of
from kvrt.wrappers.base import BaseWrapper
from kvrt.wrappers.ttl_clamp import TTLClampWrapper

DEFAULT_MAX_TTL = 30.0 * 60.0
DEFAULT_MISSING_TTL = 30.0 * 60.0

_Name = tuple[str, str]


class _Writes:
    """For each key being read or written, how many writes began and how many are under way.

    A read fills the cache only if no write to its key was under way when it began and none began
    while it read the far store: otherwise it may hold the old value, and putting that into the
    cache after the writer cleared it would serve the old value until the near TTL ran out. An
    entry lives only while someone uses its key, so the table stays as small as the calls in flight.
    """

    def __init__(self) -> None:
        self._keys: dict[_Name, list[int]] = {}  # [users, writes begun, writes under way]

    def _enter(self, name: _Name) -> list[int]:
        state = self._keys.get(name)
        if state is None:
            state = self._keys[name] = [0, 0, 0]
        state[0] += 1
        return state

    def _leave(self, name: _Name, state: list[int]) -> None:
        state[0] -= 1
        if not state[0]:
            del self._keys[name]

    @contextmanager
    def reading(self, names: Sequence[_Name]) -> Iterator[Callable[[int], bool]]:
        """Yield ``clean(i)``: whether the i-th name saw no write while this read was under way."""
        states = [self._enter(name) for name in names]
        begun = [state[1] if not state[2] else -1 for state in states]
        try:
            yield lambda index: begun[index] == states[index][1]
        finally:
            for name, state in zip(names, states, strict=True):
                self._leave(name, state)

    @contextmanager
    def writing(self, names: Sequence[_Name]) -> Iterator[None]:
        states = [self._enter(name) for name in names]
        for state in states:
            state[1] += 1
            state[2] += 1
        try:
            yield
        finally:
            for name, state in zip(names, states, strict=True):
                state[2] -= 1
                self._leave(name, state)


class PassthroughCacheWrapper(BaseWrapper):
    """Reads the near ``cache_key_value`` first; on a miss reads the far ``primary_key_value`` and fills the cache.

    A filled entry keeps the far entry's TTL, clamped to ``maximum_ttl`` (30 minutes by default);
    one without a TTL gets ``missing_ttl`` (30 minutes). Writes and deletes clear the cached key
    before and after changing the far store, and a read that raced a write does not fill the cache,
    so a reader never sees a value older than the last write it could have seen. Listings come from
    the far store; ``destroy`` and ``destroy_collection`` clear both and are offered where both
    stores offer them.
    """

    def __init__(
        self,
        primary_key_value: AsyncKeyValue,
        cache_key_value: AsyncKeyValue,
        maximum_ttl: SupportsFloat | None = None,
        missing_ttl: SupportsFloat | None = None,
    ) -> None:
        self.primary_key_value = primary_key_value
        self.unwrapped_cache_key_value = cache_key_value
        self.cache_key_value = TTLClampWrapper(
            cache_key_value,
            min_ttl=0,
            max_ttl=maximum_ttl or DEFAULT_MAX_TTL,
            missing_ttl=missing_ttl or DEFAULT_MISSING_TTL,
        )
        self.key_value = primary_key_value
        self._writes = _Writes()
        super().__init__()

    def _segments(self) -> frozenset[str]:
        primary, cache = segments_of(self.primary_key_value), segments_of(self.unwrapped_cache_key_value)
        offered = primary & {"keys", "collections", "cull"}
        return frozenset(offered | (primary & cache & {"destroy", "destroy_collection"}))

    @staticmethod
    def _names(keys: Sequence[str], collection: str | None) -> list[_Name]:
        collection = collection or DEFAULT_COLLECTION
        return [(collection, key) for key in keys]

    async def _fill(
        self, keys: Sequence[str], collection: str | None
    ) -> list[tuple[dict[str, Any] | None, float | None]]:
        """Read ``keys`` from the far store, and cache each one found that no write raced."""
        with self._writes.reading(self._names(keys, collection)) as clean:
            found = await self.primary_key_value.ttl_many(keys, collection=collection)
            for index, (key, (value, seconds)) in enumerate(zip(keys, found, strict=True)):
                if value is not None and (seconds is None or seconds > 0) and clean(index):
                    await self.cache_key_value.put(key, value, collection=collection, ttl=seconds)
        return found

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        cached = await self.cache_key_value.get(key, collection=collection)
        if cached is not None:
            return cached
        return (await self._fill([key], collection))[0][0]

    async def get_many(self, keys: Sequence[str], *, collection: str | None = None) -> list[dict[str, Any] | None]:
        return [value for value, _ in await self.ttl_many(keys, collection=collection)]

    async def ttl(self, key: str, *, collection: str | None = None) -> tuple[dict[str, Any] | None, float | None]:
        cached = await self.cache_key_value.ttl(key, collection=collection)
        if cached[0] is not None:
            return cached
        return (await self._fill([key], collection))[0]

    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[tuple[dict[str, Any] | None, float | None]]:
        found = await self.cache_key_value.ttl_many(keys, collection=collection)
        missing = [index for index, (value, _) in enumerate(found) if value is None]
        if missing:
            filled = await self._fill([keys[index] for index in missing], collection)
            for index, entry in zip(missing, filled, strict=True):
                found[index] = entry
        return found

    async def put(
        self, key: str, value: Mapping[str, Any], *, collection: str | None = None, ttl: SupportsFloat | None = None
    ) -> None:
        with self._writes.writing(self._names([key], collection)):
            await self.cache_key_value.delete(key, collection=collection)
            try:
                await self.primary_key_value.put(key, value, collection=collection, ttl=ttl)
            finally:
                await self.cache_key_value.delete(key, collection=collection)

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        with self._writes.writing(self._names(keys, collection)):
            await self.cache_key_value.delete_many(keys, collection=collection)
            try:
                await self.primary_key_value.put_many(keys, values, collection=collection, ttl=ttl)
            finally:
                await self.cache_key_value.delete_many(keys, collection=collection)

    async def delete(self, key: str, *, collection: str | None = None) -> bool:
        with self._writes.writing(self._names([key], collection)):
            await self.cache_key_value.delete(key, collection=collection)
            try:
                return await self.primary_key_value.delete(key, collection=collection)
            finally:
                await self.cache_key_value.delete(key, collection=collection)

    async def delete_many(self, keys: Sequence[str], *, collection: str | None = None) -> int:
        with self._writes.writing(self._names(keys, collection)):
            await self.cache_key_value.delete_many(keys, collection=collection)
            try:
                return await self.primary_key_value.delete_many(keys, collection=collection)
            finally:
                await self.cache_key_value.delete_many(keys, collection=collection)

    async def _destroy(self) -> bool:
        removed = await destroy_of(self.primary_key_value).destroy()
        await destroy_of(self.unwrapped_cache_key_value).destroy()
        return removed

    async def _destroy_collection(self, collection: str) -> bool:
        removed = await destroy_collection_of(self.primary_key_value).destroy_collection(collection)
        await destroy_collection_of(self.unwrapped_cache_key_value).destroy_collection(collection)
        return removed

    async def _cull(self) -> None:
        await cull_of(self.primary_key_value).cull()
        if "cull" in segments_of(self.unwrapped_cache_key_value):
            await cull_of(self.unwrapped_cache_key_value).cull()

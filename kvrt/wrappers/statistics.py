"""Counts of calls, hits and misses per collection, in the reference's statistics classes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, SupportsFloat

from kvrt.entry import DEFAULT_COLLECTION
from kvrt.protocol import AsyncKeyValue
from kvrt.wrappers.base import BaseWrapper


@dataclass
class BaseStatistics:
    """A count of operations."""

    count: int = 0
    """Operations counted (for bulk calls, one per key)."""

    def increment(self, *, increment: int = 1) -> None:
        """Count ``increment`` more operations."""
        self.count += increment


@dataclass
class BaseHitMissStatistics(BaseStatistics):
    """A count of operations, split into those that found something and those that did not."""

    hit: int = 0
    miss: int = 0

    def increment_hit(self, *, increment: int = 1) -> None:
        """Count ``increment`` more operations that found something."""
        self.count += increment
        self.hit += increment

    def increment_miss(self, *, increment: int = 1) -> None:
        """Count ``increment`` more operations that found nothing."""
        self.count += increment
        self.miss += increment


@dataclass
class GetStatistics(BaseHitMissStatistics):
    """Counts of ``get`` and ``get_many`` keys."""


@dataclass
class TTLStatistics(BaseHitMissStatistics):
    """Counts of ``ttl`` and ``ttl_many`` keys."""


@dataclass
class PutStatistics(BaseStatistics):
    """Counts of keys written."""


@dataclass
class DeleteStatistics(BaseHitMissStatistics):
    """Counts of keys deleted (hit) or already absent (miss)."""


@dataclass
class ExistsStatistics(BaseHitMissStatistics):
    """Kept for the reference's shape; no call of the protocol counts here."""


@dataclass
class KVStoreCollectionStatistics(BaseStatistics):
    """One collection's counts, by operation."""

    get: GetStatistics = field(default_factory=GetStatistics)
    ttl: TTLStatistics = field(default_factory=TTLStatistics)
    put: PutStatistics = field(default_factory=PutStatistics)
    delete: DeleteStatistics = field(default_factory=DeleteStatistics)
    exists: ExistsStatistics = field(default_factory=ExistsStatistics)


@dataclass
class KVStoreStatistics:
    """Every collection's counts, made as each collection is first used."""

    collections: dict[str, KVStoreCollectionStatistics] = field(default_factory=dict)

    def get_collection(self, collection: str) -> KVStoreCollectionStatistics:
        """Return ``collection``'s counts, made empty if it has none yet."""
        found = self.collections.get(collection)
        if found is None:
            found = self.collections[collection] = KVStoreCollectionStatistics()
        return found


class StatisticsWrapper(BaseWrapper):
    """Counts each call's hits and misses under its collection (``None`` and ``""`` count as the default).

    Counted after the call returns, so a call that raises is not counted. Listing and destroying
    pass through uncounted, as in the reference.
    """

    def __init__(self, key_value: AsyncKeyValue) -> None:
        self.key_value = key_value
        self._statistics = KVStoreStatistics()
        self._by_argument: dict[str | None, KVStoreCollectionStatistics] = {}
        """Each ``collection`` argument seen, to its counts: one dict lookup a call."""
        super().__init__()

    @property
    def statistics(self) -> KVStoreStatistics:
        """The counts so far, live: they change as calls return."""
        return self._statistics

    def _of(self, collection: str | None) -> KVStoreCollectionStatistics:
        counts = self._by_argument.get(collection)
        if counts is None:
            counts = self._by_argument[collection] = self._statistics.get_collection(collection or DEFAULT_COLLECTION)
        return counts

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        value = await self.key_value.get(key, collection=collection)
        counts = (self._by_argument.get(collection) or self._of(collection)).get
        counts.count += 1
        if value is None:
            counts.miss += 1
        else:
            counts.hit += 1
        return value

    async def get_many(self, keys: Sequence[str], *, collection: str | None = None) -> list[dict[str, Any] | None]:
        values = await self.key_value.get_many(keys, collection=collection)
        misses = values.count(None)
        counts = self._of(collection).get
        counts.increment_hit(increment=len(values) - misses)
        counts.increment_miss(increment=misses)
        return values

    async def ttl(self, key: str, *, collection: str | None = None) -> tuple[dict[str, Any] | None, float | None]:
        found = await self.key_value.ttl(key, collection=collection)
        counts = self._of(collection).ttl
        if found[0] is None:
            counts.increment_miss()
        else:
            counts.increment_hit()
        return found

    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[tuple[dict[str, Any] | None, float | None]]:
        found = await self.key_value.ttl_many(keys, collection=collection)
        misses = sum(1 for value, _ in found if value is None)
        counts = self._of(collection).ttl
        counts.increment_hit(increment=len(found) - misses)
        counts.increment_miss(increment=misses)
        return found

    async def put(
        self, key: str, value: Mapping[str, Any], *, collection: str | None = None, ttl: SupportsFloat | None = None
    ) -> None:
        await self.key_value.put(key, value, collection=collection, ttl=ttl)
        (self._by_argument.get(collection) or self._of(collection)).put.count += 1

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        await self.key_value.put_many(keys, values, collection=collection, ttl=ttl)
        self._of(collection).put.increment(increment=len(keys))

    async def delete(self, key: str, *, collection: str | None = None) -> bool:
        removed = await self.key_value.delete(key, collection=collection)
        counts = self._of(collection).delete
        if removed:
            counts.increment_hit()
        else:
            counts.increment_miss()
        return removed

    async def delete_many(self, keys: Sequence[str], *, collection: str | None = None) -> int:
        removed = await self.key_value.delete_many(keys, collection=collection)
        counts = self._of(collection).delete
        counts.increment_hit(increment=removed)
        counts.increment_miss(increment=len(keys) - removed)
        return removed

"""Refuses (or silently skips) writes of values whose JSON is outside a size range."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, SupportsFloat

from kvrt.entry import encode_value
from kvrt.errors import EntryTooLargeError, EntryTooSmallError
from kvrt.protocol import AsyncKeyValue
from kvrt.wrappers.base import BaseWrapper


class LimitSizeWrapper(BaseWrapper):
    """Writes only values whose JSON is between ``min_size`` and ``max_size`` bytes; reads are unchanged.

    A value out of range raises :class:`~kvrt.errors.EntryTooLargeError` (by default) or
    :class:`~kvrt.errors.EntryTooSmallError` (when ``raise_on_too_small``), or is skipped without a
    word; a bulk put stores the values in range and raises for the first one out of it, before
    anything is written. The size is the value's compact UTF-8 JSON, as kvrt stores it (the
    reference measures ``json.dumps`` text, a few bytes more for the spaces it adds).
    """

    def __init__(
        self,
        key_value: AsyncKeyValue,
        *,
        min_size: int | None = None,
        max_size: int | None = None,
        raise_on_too_small: bool = False,
        raise_on_too_large: bool = True,
    ) -> None:
        if min_size is not None and max_size is not None and min_size > max_size:
            raise ValueError(f"min_size ({min_size}) is above max_size ({max_size})")
        self.key_value = key_value
        self.min_size = min_size
        self.max_size = max_size
        self.raise_on_too_small = raise_on_too_small
        self.raise_on_too_large = raise_on_too_large
        super().__init__()

    def _fits(self, value: Mapping[str, Any], collection: str | None, key: str) -> bool:
        size = len(encode_value(value))
        if self.max_size is not None and size > self.max_size:
            if self.raise_on_too_large:
                raise EntryTooLargeError(
                    "The entry is larger than the limit.",
                    {"size": size, "max_size": self.max_size},
                    collection=collection,
                    key=key,
                )
            return False
        if self.min_size is not None and size < self.min_size:
            if self.raise_on_too_small:
                raise EntryTooSmallError(
                    "The entry is smaller than the limit.",
                    {"size": size, "min_size": self.min_size},
                    collection=collection,
                    key=key,
                )
            return False
        return True

    async def put(
        self, key: str, value: Mapping[str, Any], *, collection: str | None = None, ttl: SupportsFloat | None = None
    ) -> None:
        if self._fits(value, collection, key):
            await self.key_value.put(key, value, collection=collection, ttl=ttl)

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        if len(keys) != len(values):
            raise ValueError(f"put_many got {len(keys)} keys and {len(values)} values")
        kept = [(key, value) for key, value in zip(keys, values, strict=True) if self._fits(value, collection, key)]
        if kept:
            await self.key_value.put_many(
                [key for key, _ in kept], [value for _, value in kept], collection=collection, ttl=ttl
            )

"""Reads that find nothing return a default value instead of ``None``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, SupportsFloat

from kvrt.entry import check_ttl, decode_value, encode_value
from kvrt.protocol import AsyncKeyValue
from kvrt.wrappers.base import BaseWrapper


class DefaultValueWrapper(BaseWrapper):
    """Returns a fresh copy of ``default_value`` (and ``default_ttl`` from ``ttl()``) where the store has nothing.

    The default is never written to the store; writes, deletes and listings are unchanged.
    """

    def __init__(
        self, key_value: AsyncKeyValue, default_value: Mapping[str, Any], default_ttl: SupportsFloat | None = None
    ) -> None:
        self.key_value = key_value
        self._default = encode_value(default_value)
        self._default_ttl = check_ttl(default_ttl)
        super().__init__()

    def _or_default(self, value: dict[str, Any] | None) -> dict[str, Any]:
        return value if value is not None else decode_value(self._default)

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        return self._or_default(await self.key_value.get(key, collection=collection))

    async def get_many(self, keys: Sequence[str], *, collection: str | None = None) -> list[dict[str, Any] | None]:
        return [self._or_default(value) for value in await self.key_value.get_many(keys, collection=collection)]

    async def ttl(self, key: str, *, collection: str | None = None) -> tuple[dict[str, Any] | None, float | None]:
        value, seconds = await self.key_value.ttl(key, collection=collection)
        return (value, seconds) if value is not None else (decode_value(self._default), self._default_ttl)

    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[tuple[dict[str, Any] | None, float | None]]:
        found = await self.key_value.ttl_many(keys, collection=collection)
        default_ttl = self._default_ttl
        return [
            (value, seconds) if value is not None else (decode_value(self._default), default_ttl)
            for value, seconds in found
        ]

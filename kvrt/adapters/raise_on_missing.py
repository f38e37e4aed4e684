"""Reads that can raise :class:`~kvrt.errors.MissingKeyError` instead of returning ``None``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, overload

from kvrt.errors import MissingKeyError
from kvrt.protocol import AsyncKeyValue
from kvrt.wrappers.base import BaseWrapper


def _missing(operation: str, collection: str | None, key: str) -> MissingKeyError:
    return MissingKeyError(
        "A key was requested that was required but not found in the store.",
        {"operation": operation},
        collection=collection,
        key=key,
    )


class RaiseOnMissingAdapter(BaseWrapper):
    """Passes every call to ``key_value``; reads given ``raise_on_missing=True`` raise for a missing key.

    Writes, deletes and the optional segments pass through unchanged.
    """

    def __init__(self, key_value: AsyncKeyValue) -> None:
        super().__init__(key_value)

    @overload
    async def get(
        self, key: str, *, collection: str | None = None, raise_on_missing: Literal[False] = False
    ) -> dict[str, Any] | None: ...

    @overload
    async def get(
        self, key: str, *, collection: str | None = None, raise_on_missing: Literal[True]
    ) -> dict[str, Any]: ...

    async def get(
        self, key: str, *, collection: str | None = None, raise_on_missing: bool = False
    ) -> dict[str, Any] | None:
        """Return the value under ``key``; if missing, ``None`` or, with ``raise_on_missing``, raise."""
        value = await self.key_value.get(key, collection=collection)
        if value is None and raise_on_missing:
            raise _missing("get", collection, key)
        return value

    @overload
    async def get_many(
        self, keys: Sequence[str], *, collection: str | None = None, raise_on_missing: Literal[False] = False
    ) -> list[dict[str, Any] | None]: ...

    @overload
    async def get_many(
        self, keys: Sequence[str], *, collection: str | None = None, raise_on_missing: Literal[True]
    ) -> list[dict[str, Any]]: ...

    async def get_many(
        self, keys: Sequence[str], *, collection: str | None = None, raise_on_missing: bool = False
    ) -> list[dict[str, Any]] | list[dict[str, Any] | None]:
        """Return the values of ``keys``; with ``raise_on_missing``, raise for the first one missing."""
        values = await self.key_value.get_many(keys, collection=collection)
        if raise_on_missing:
            for key, value in zip(keys, values, strict=True):
                if value is None:
                    raise _missing("get_many", collection, key)
        return values

    @overload
    async def ttl(
        self, key: str, *, collection: str | None = None, raise_on_missing: Literal[False] = False
    ) -> tuple[dict[str, Any] | None, float | None]: ...

    @overload
    async def ttl(
        self, key: str, *, collection: str | None = None, raise_on_missing: Literal[True]
    ) -> tuple[dict[str, Any], float | None]: ...

    async def ttl(
        self, key: str, *, collection: str | None = None, raise_on_missing: bool = False
    ) -> tuple[dict[str, Any] | None, float | None]:
        """Return ``(value, seconds_left)``; if missing, ``(None, None)`` or, with ``raise_on_missing``, raise."""
        found = await self.key_value.ttl(key, collection=collection)
        if found[0] is None and raise_on_missing:
            raise _missing("ttl", collection, key)
        return found

    @overload
    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None, raise_on_missing: Literal[False] = False
    ) -> list[tuple[dict[str, Any] | None, float | None]]: ...

    @overload
    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None, raise_on_missing: Literal[True]
    ) -> list[tuple[dict[str, Any], float | None]]: ...

    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None, raise_on_missing: bool = False
    ) -> list[tuple[dict[str, Any], float | None]] | list[tuple[dict[str, Any] | None, float | None]]:
        """Return ``(value, seconds_left)`` for each of ``keys``; with ``raise_on_missing``, raise for a miss."""
        found = await self.key_value.ttl_many(keys, collection=collection)
        if raise_on_missing:
            for key, (value, _) in zip(keys, found, strict=True):
                if value is None:
                    raise _missing("ttl_many", collection, key)
        return found

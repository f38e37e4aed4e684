"""Clamps every write's TTL into a range, and gives entries written without one a TTL of its own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, SupportsFloat

from kvrt.entry import check_ttl
from kvrt.protocol import AsyncKeyValue
from kvrt.wrappers.base import BaseWrapper


def _bound(name: str, seconds: SupportsFloat) -> float:
    bound = float(seconds)
    if not 0.0 <= bound < float("inf"):
        raise ValueError(f"{name} must be a finite number of seconds, not {seconds!r}")
    return bound


class TTLClampWrapper(BaseWrapper):
    """Writes with a TTL between ``min_ttl`` and ``max_ttl``; ``missing_ttl`` for writes without one.

    ``missing_ttl=None`` (the default) keeps entries written without a TTL free of expiry. Reads
    are unchanged. A TTL the protocol refuses is still refused (``InvalidTTLError``), not clamped.
    """

    def __init__(
        self,
        key_value: AsyncKeyValue,
        min_ttl: SupportsFloat,
        max_ttl: SupportsFloat,
        missing_ttl: SupportsFloat | None = None,
    ) -> None:
        self.key_value = key_value
        self.min_ttl = _bound("min_ttl", min_ttl)
        self.max_ttl = _bound("max_ttl", max_ttl)
        if self.max_ttl <= 0 or self.min_ttl > self.max_ttl:
            raise ValueError(f"max_ttl ({max_ttl}) must be positive and at least min_ttl ({min_ttl})")
        self.missing_ttl = None if missing_ttl is None else check_ttl(missing_ttl)
        super().__init__()

    def clamp(self, ttl: SupportsFloat | None) -> float | None:
        """Return the TTL a write given ``ttl`` is made with."""
        seconds = check_ttl(ttl) if ttl is not None else self.missing_ttl
        if seconds is None:
            return None
        return max(self.min_ttl, min(seconds, self.max_ttl))

    async def put(
        self, key: str, value: Mapping[str, Any], *, collection: str | None = None, ttl: SupportsFloat | None = None
    ) -> None:
        if ttl is not None or self.missing_ttl is not None:
            ttl = self.clamp(ttl)
        await self.key_value.put(key, value, collection=collection, ttl=ttl)

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        await self.key_value.put_many(keys, values, collection=collection, ttl=self.clamp(ttl))

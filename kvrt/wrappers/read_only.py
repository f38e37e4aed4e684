"""Reads pass; every write, delete, destroy and cull is refused (or silently dropped)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, SupportsFloat

from kvrt.errors import ReadOnlyError
from kvrt.protocol import AsyncKeyValue
from kvrt.wrappers.base import BaseWrapper


class ReadOnlyWrapper(BaseWrapper):
    """Lets reads and listings through and refuses everything that changes the store.

    A refused call raises :class:`~kvrt.errors.ReadOnlyError` or, with ``raise_on_write=False``,
    does nothing (``delete`` returns ``False``, ``delete_many`` 0, ``destroy`` ``False``). The
    ``destroy``, ``destroy_collection`` and ``cull`` segments are offered where the wrapped store
    offers them, and refused the same way.
    """

    def __init__(self, key_value: AsyncKeyValue, raise_on_write: bool = True) -> None:
        self.key_value = key_value
        self.raise_on_write = raise_on_write
        super().__init__()

    def _refuse(self, operation: str, collection: str | None = None, key: str | None = None) -> None:
        if self.raise_on_write:
            raise ReadOnlyError(
                "Write operation not allowed on read-only store.",
                {"operation": operation},
                collection=collection,
                key=key,
            )

    async def put(
        self, key: str, value: Mapping[str, Any], *, collection: str | None = None, ttl: SupportsFloat | None = None
    ) -> None:
        self._refuse("put", collection, key)

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        self._refuse("put_many", collection)

    async def delete(self, key: str, *, collection: str | None = None) -> bool:
        self._refuse("delete", collection, key)
        return False

    async def delete_many(self, keys: Sequence[str], *, collection: str | None = None) -> int:
        self._refuse("delete_many", collection)
        return 0

    async def _destroy(self) -> bool:
        self._refuse("destroy")
        return False

    async def _destroy_collection(self, collection: str) -> bool:
        self._refuse("destroy_collection", collection)
        return False

    async def _cull(self) -> None:
        self._refuse("cull")

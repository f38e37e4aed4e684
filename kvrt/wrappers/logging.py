"""A structlog event before and after every call: operation, collection, keys, hits; values only when asked."""

from __future__ import annotations

import logging as stdlib_logging
from collections.abc import Mapping, Sequence
from typing import Any, SupportsFloat

import structlog

from kvrt.entry import DEFAULT_COLLECTION
from kvrt.protocol import AsyncKeyValue
from kvrt.wrappers.base import BaseWrapper


class LoggingWrapper(BaseWrapper):
    """Logs each call as a ``start`` and a ``finish`` event, at ``log_level``, through structlog.

    Events name the action (``GET``, ``PUT_MANY``, ...), the collection, the keys and, on finish,
    hits and misses or the TTL. Values are never logged unless ``log_values=True``. ``logger`` may be
    a standard library logger (wrapped for structlog) or a structlog logger; by default events go to
    the standard library's ``kvrt.wrappers`` logger. ``structured_logs`` is accepted for the
    reference's signature: structlog events are always structured.
    """

    def __init__(
        self,
        key_value: AsyncKeyValue,
        logger: Any | None = None,
        log_level: int = stdlib_logging.INFO,
        log_values: bool = False,
        structured_logs: bool = False,
    ) -> None:
        self.key_value = key_value
        if logger is None:
            logger = stdlib_logging.getLogger("kvrt.wrappers")
        if isinstance(logger, stdlib_logging.Logger):
            logger = structlog.wrap_logger(logger)
        self.logger: Any = logger
        self.log_level = log_level
        self.log_values = log_values
        self.structured_logs = structured_logs
        super().__init__()

    def _log(self, state: str, action: str, keys: str | Sequence[str], collection: str | None, **facts: Any) -> None:
        if not self.log_values:
            facts.pop("value", None)
        self.logger.log(
            self.log_level,
            f"{state} {action}",
            action=action,
            collection=collection or DEFAULT_COLLECTION,
            keys=keys,
            **facts,
        )

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        self._log("start", "GET", key, collection)
        value = await self.key_value.get(key, collection=collection)
        self._log("finish", "GET", key, collection, hit=value is not None, value=value)
        return value

    async def get_many(self, keys: Sequence[str], *, collection: str | None = None) -> list[dict[str, Any] | None]:
        self._log("start", "GET_MANY", keys, collection)
        values = await self.key_value.get_many(keys, collection=collection)
        misses = values.count(None)
        self._log("finish", "GET_MANY", keys, collection, hits=len(values) - misses, misses=misses, value=values)
        return values

    async def ttl(self, key: str, *, collection: str | None = None) -> tuple[dict[str, Any] | None, float | None]:
        self._log("start", "TTL", key, collection)
        value, seconds = await self.key_value.ttl(key, collection=collection)
        self._log("finish", "TTL", key, collection, hit=value is not None, ttl=seconds, value=value)
        return value, seconds

    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[tuple[dict[str, Any] | None, float | None]]:
        self._log("start", "TTL_MANY", keys, collection)
        found = await self.key_value.ttl_many(keys, collection=collection)
        misses = sum(1 for value, _ in found if value is None)
        self._log("finish", "TTL_MANY", keys, collection, hits=len(found) - misses, misses=misses, value=found)
        return found

    async def put(
        self, key: str, value: Mapping[str, Any], *, collection: str | None = None, ttl: SupportsFloat | None = None
    ) -> None:
        self._log("start", "PUT", key, collection, ttl=ttl, value=value)
        await self.key_value.put(key, value, collection=collection, ttl=ttl)
        self._log("finish", "PUT", key, collection, ttl=ttl)

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        self._log("start", "PUT_MANY", keys, collection, ttl=ttl, value=values)
        await self.key_value.put_many(keys, values, collection=collection, ttl=ttl)
        self._log("finish", "PUT_MANY", keys, collection, ttl=ttl)

    async def delete(self, key: str, *, collection: str | None = None) -> bool:
        self._log("start", "DELETE", key, collection)
        removed = await self.key_value.delete(key, collection=collection)
        self._log("finish", "DELETE", key, collection, deleted=removed)
        return removed

    async def delete_many(self, keys: Sequence[str], *, collection: str | None = None) -> int:
        self._log("start", "DELETE_MANY", keys, collection)
        removed = await self.key_value.delete_many(keys, collection=collection)
        self._log("finish", "DELETE_MANY", keys, collection, deleted=removed)
        return removed

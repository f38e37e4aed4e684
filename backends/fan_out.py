"""The calls of one batch sent concurrently within a connection pool, for backends whose service has no batch call.

S3 has no multi-object get, Azure Tables takes a transaction per partition and a query per few
keys: a round becomes several calls, sent at once up to the pool's width. The drivers that need it
are asyncio's (aiobotocore, the Azure SDK), so this is asyncio's own task group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")


async def fan_out(call: Callable[[_T], Awaitable[_R]], items: Sequence[_T], width: int) -> list[_R]:
    """Return ``[await call(item) for item in items]``, at most ``width`` calls at once, results in order.

    The calls of one batch share the worker's connection pool; an error cancels the rest and is
    raised as it is (as a lone call would raise it, for the supervisor).
    """
    if len(items) == 1:
        return [await call(items[0])]
    results: list[Any] = [None] * len(items)
    limit = asyncio.Semaphore(width)

    async def one(index: int, item: _T) -> None:
        async with limit:
            results[index] = await call(item)

    try:
        async with asyncio.TaskGroup() as group:
            for index, item in enumerate(items):
                group.create_task(one(index, item))
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return results


def chunks(items: Sequence[_T], size: int) -> Iterable[Sequence[_T]]:
    """``items`` in consecutive slices of at most ``size``."""
    return (items[start : start + size] for start in range(0, len(items), size))

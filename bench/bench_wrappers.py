"""Wrappers over a memory handle against the bare handle, same process (see harness.py for the method).

The subjects, each fresh per round, on one memory worker:

- ``3 wrappers``: statistics over prefixed keys over a TTL clamp, the kind of stack a framework
  builds; each adds one coroutine frame per call and a little work.
- ``bare handle``: the handle itself.
- ``FastMCP stack``: FastMCP's response cache, limit size under statistics under a pydantic adapter
  (of plain dicts, so the workload is the same): a baseline that shows what validation adds.

    python bench/bench_wrappers.py                  # asyncio
    python bench/bench_wrappers.py --loop trio
    python bench/bench_wrappers.py --write          # also rewrite its section of bench/RESULTS.md
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from harness import main

import kvrt
from kvrt.adapters import PydanticAdapter
from kvrt.backends.memory import MemoryBackend
from kvrt.protocol import AsyncKeyValue
from kvrt.wrappers import LimitSizeWrapper, PrefixKeysWrapper, StatisticsWrapper, TTLClampWrapper


def over_memory(wrap: Callable[[AsyncKeyValue], Any]) -> Callable[[], Any]:
    @asynccontextmanager
    async def subject() -> AsyncIterator[Any]:
        async with kvrt.Runtime() as runtime:
            yield wrap(await runtime.spawn(MemoryBackend(max_entries_per_collection=1_000_000)))

    return subject


def three_wrappers(store: AsyncKeyValue) -> AsyncKeyValue:
    clamped = TTLClampWrapper(key_value=store, min_ttl=1, max_ttl=3600)
    return StatisticsWrapper(key_value=PrefixKeysWrapper(key_value=clamped, prefix="app"))


def fastmcp_stack(store: AsyncKeyValue) -> Any:
    limited = LimitSizeWrapper(key_value=store, max_size=1_000_000, raise_on_too_large=False)
    return PydanticAdapter[dict[str, Any]](
        key_value=StatisticsWrapper(key_value=limited), pydantic_model=dict[str, Any]
    )


if __name__ == "__main__":
    main(
        "Wrappers: a stack of three over a memory handle, against the bare handle",
        {
            "3 wrappers": over_memory(three_wrappers),
            "bare handle": over_memory(lambda store: store),
            "FastMCP stack": over_memory(fastmcp_stack),
        },
        "wrappers",
    )

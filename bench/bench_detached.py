"""A detached handle (``kvrt.open``) against an attached one (``Runtime.spawn``), same backend, same process.

The detached handle's worker runs on the detached runtime's own thread and loop: each request
crosses to it and each reply back, a batch per wake-up. This measures what that costs against a
worker in the caller's own task group (see harness.py for the method).

    python bench/bench_detached.py                        # memory, asyncio
    python bench/bench_detached.py --loop trio            # memory, trio
    python bench/bench_detached.py --backend redis        # Redis (a redis-server it starts itself)
    python bench/bench_detached.py --write                # also rewrite its section of bench/RESULTS.md
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, nullcontext
from typing import Any

import anyio
from harness import main

import kvrt
from kvrt.backends.base import Backend
from kvrt.backends.memory import MemoryBackend
from kvrt.backends.redis import RedisBackend
from kvrt.handle import Handle
from kvrt.testing.servers import RedisTarget, redis_binary, redis_server

make_backend: Callable[[], Backend]
flush: Callable[[], Any] = lambda: None  # noqa: E731


@asynccontextmanager
async def detached() -> AsyncIterator[Handle]:
    await anyio.to_thread.run_sync(flush)
    runtime = kvrt.Runtime.detached()
    try:
        yield runtime.open(make_backend())
    finally:
        await runtime.aclose()


@asynccontextmanager
async def attached() -> AsyncIterator[Handle]:
    await anyio.to_thread.run_sync(flush)
    async with kvrt.Runtime() as runtime:
        yield await runtime.spawn(make_backend())


if __name__ == "__main__":
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--backend", choices=["memory", "redis"], default="memory")
    chosen, rest = own.parse_known_args()
    with redis_server(redis_binary()) if chosen.backend == "redis" else nullcontext() as process:
        if process is None:
            make_backend = lambda: MemoryBackend(max_entries_per_collection=1_000_000)  # noqa: E731
        else:
            server = RedisTarget([("127.0.0.1", process.port)])
            flush = server.flush
            make_backend = lambda: RedisBackend(server.url)  # noqa: E731
        main(
            f"Detached vs attached, {chosen.backend}",
            {"detached": detached, "attached": attached},
            f"detached {chosen.backend}",
            argv=rest,
        )

"""kvrt's Redis handle against py-key-value-aio's RedisStore, same process and same server (see harness.py).

Starts its own redis-server (or valkey-server standing in for it) on a free loopback port, with
no persistence, and empties it before every run.

    python bench/bench_redis.py                  # print the table
    python bench/bench_redis.py --write          # also rewrite bench/RESULTS.md's redis section
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from harness import main
from key_value.aio.stores.redis import RedisStore

import kvrt
from kvrt.backends.redis import RedisBackend
from kvrt.handle import Handle
from kvrt.testing.servers import RedisTarget, redis_binary, redis_server

server: RedisTarget


@asynccontextmanager
async def kvrt_redis() -> AsyncIterator[Handle]:
    await anyio.to_thread.run_sync(server.flush)
    async with kvrt.Runtime() as runtime:
        yield await runtime.spawn(RedisBackend(server.url))


@asynccontextmanager
async def reference_redis() -> AsyncIterator[RedisStore]:
    await anyio.to_thread.run_sync(server.flush)
    store = RedisStore(url=server.url)
    try:
        yield store
    finally:
        await store.close()


if __name__ == "__main__":
    if "trio" in sys.argv:
        sys.exit("the reference RedisStore runs on asyncio only: this comparison has no trio form")
    with redis_server(redis_binary()) as process:
        server = RedisTarget([("127.0.0.1", process.port)])
        main("Redis: kvrt vs py-key-value-aio RedisStore", {"kvrt": kvrt_redis, "reference": reference_redis}, "redis")

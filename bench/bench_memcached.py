"""kvrt's memcached handle against py-key-value-aio's MemcachedStore, on one memcached server.

python bench/bench_memcached.py            # print the table
python bench/bench_memcached.py --write    # also rewrite the Memcached section of bench/RESULTS.md

Both subjects talk to the same local memcached (started here, on a free loopback port), flushed
before each subject's round.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from harness import main
from key_value.aio.stores.memcached import MemcachedStore

import kvrt
from kvrt.backends.memcached import MemcachedBackend
from kvrt.handle import Handle
from kvrt.testing.memcached import MemcachedServer, MemcachedTarget

warnings.filterwarnings("ignore", "A configured store is unstable", UserWarning)
SERVER = MemcachedServer(megabytes=256)


@asynccontextmanager
async def kvrt_memcached() -> AsyncIterator[Handle]:
    MemcachedTarget("127.0.0.1", SERVER.port).flush()
    async with kvrt.Runtime() as runtime:
        yield await runtime.spawn(MemcachedBackend(port=SERVER.port))


@asynccontextmanager
async def reference_memcached() -> AsyncIterator[Any]:
    MemcachedTarget("127.0.0.1", SERVER.port).flush()
    async with MemcachedStore(port=SERVER.port) as store:
        yield store


if __name__ == "__main__":
    SERVER.start()
    try:
        main(
            "Memcached: kvrt vs py-key-value-aio MemcachedStore",
            {"kvrt": kvrt_memcached, "reference": reference_memcached},
            "memcached",
            argv=sys.argv[1:],
        )
    finally:
        SERVER.stop()
        sys.stdout.flush()

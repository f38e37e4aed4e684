"""kvrt's PostgreSQL handle against py-key-value-aio's PostgreSQLStore, same process and same server (see harness.py).

python bench/bench_postgresql.py            # print the table
python bench/bench_postgresql.py --write    # also rewrite the PostgreSQL section of bench/RESULTS.md

Both subjects talk to one PostgreSQL server started here (the machine's binaries, a fresh cluster
on a free loopback port, ``fsync=off``: the disk's flushes would cost both the same and say
nothing of either library), each round with a fresh table, dropped after it. Set
KVRT_POSTGRESQL_URL to run against a server of yours instead.
"""

from __future__ import annotations

import os
import sys
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from typing import Any

import anyio
import harness
from harness import main
from key_value.aio.stores.postgresql import PostgreSQLStore

import kvrt
from kvrt.backends.postgresql import PostgreSQLBackend
from kvrt.handle import Handle
from kvrt.testing.postgres import local_postgres, run_sql

warnings.filterwarnings("ignore", "A configured store is unstable", UserWarning)
harness.KEYS_PER_CALLER = {1: 5_000, 64: 200}
URL = os.environ.get("KVRT_POSTGRESQL_URL", "")


async def _drop(table: str) -> None:
    await anyio.to_thread.run_sync(run_sql, URL, f'DROP TABLE IF EXISTS "{table}"')


@asynccontextmanager
async def kvrt_postgresql() -> AsyncIterator[Handle]:
    table = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        async with kvrt.Runtime() as runtime:
            yield await runtime.spawn(PostgreSQLBackend(URL, table=table))
    finally:
        await _drop(table)


@asynccontextmanager
async def reference_postgresql() -> AsyncIterator[Any]:
    table = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        async with PostgreSQLStore(url=URL, table_name=table) as store:
            yield store
    finally:
        await _drop(table)


if __name__ == "__main__":
    if "trio" in sys.argv:
        sys.exit("the reference PostgreSQLStore runs on asyncio only: this comparison has no trio form")
    with ExitStack() as stack:
        where = "a server of yours"
        if not URL:
            URL = stack.enter_context(local_postgres()).url
            where = "a local PostgreSQL, fsync=off"
        main(
            f"PostgreSQL: kvrt vs py-key-value-aio PostgreSQLStore ({where})",
            {"kvrt": kvrt_postgresql, "reference": reference_postgresql},
            "postgresql",
            argv=sys.argv[1:],
        )
        sys.stdout.flush()

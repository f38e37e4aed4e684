"""kvrt's MongoDB handle against py-key-value-aio's MongoDBStore, on one SecantusDB (MongoDB-compatible, not mongod).

python bench/bench_mongodb.py            # print the table
python bench/bench_mongodb.py --write    # also rewrite the MongoDB section of bench/RESULTS.md

Both subjects talk to the same local SecantusDB (started here, on a free loopback port), each
round in a fresh database. SecantusDB is a Python server, so every command costs it far more than
it would cost mongod: the ratios say how many commands each library sends, more than how fast it is.
Set KVRT_MONGODB_URL to run against a mongod of yours instead.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import harness
from harness import main
from key_value.aio.stores.mongodb import MongoDBStore

import kvrt
from kvrt.backends.mongodb import MongoDBBackend
from kvrt.handle import Handle
from kvrt.testing.servers import SecantusServer

warnings.filterwarnings("ignore", "A configured store is unstable", UserWarning)
harness.KEYS_PER_CALLER = {1: 1_000, 64: 40}
URL = os.environ.get("KVRT_MONGODB_URL")


def _database() -> str:
    return f"bench_{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def kvrt_mongodb() -> AsyncIterator[Handle]:
    async with kvrt.Runtime() as runtime:
        yield await runtime.spawn(MongoDBBackend(URL, database=_database()))


@asynccontextmanager
async def reference_mongodb() -> AsyncIterator[Any]:
    async with MongoDBStore(url=URL or "mongodb://127.0.0.1:27017", db_name=_database()) as store:
        yield store


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="kvrt-bench-secantus-") as directory:
        server = None
        if URL is None:
            server = SecantusServer(Path(directory))
            server.start()
            URL = server.url
        try:
            where = "a mongod of yours" if server is None else "SecantusDB"
            main(
                f"MongoDB: kvrt vs py-key-value-aio MongoDBStore ({where})",
                {"kvrt": kvrt_mongodb, "reference": reference_mongodb},
                "mongodb",
                argv=sys.argv[1:],
            )
        finally:
            if server is not None:
                server.stop()
            sys.stdout.flush()

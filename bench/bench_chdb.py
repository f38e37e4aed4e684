"""kvrt's chDB handle against py-key-value-aio's ChDBStore, each on a fresh directory (see harness.py).

python bench/bench_chdb.py                   # print the table
python bench/bench_chdb.py --write           # also rewrite bench/RESULTS.md's chdb section

chDB runs one engine per process, on one directory at a time: the subjects run in turn, each
closing its session (and so the engine) before the next opens its own directory. Fewer keys per
caller than the other benches: every statement costs the engine a few milliseconds, and the
reference runs one statement per call.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import harness
from harness import Subject, kvrt_memory, main
from key_value.aio.stores.chdb import ChDBStore

import kvrt
from kvrt.backends.chdb import ChDBBackend
from kvrt.handle import Handle

harness.KEYS_PER_CALLER = {1: 2_000, 64: 100}


@asynccontextmanager
async def kvrt_chdb() -> AsyncIterator[Handle]:
    with tempfile.TemporaryDirectory() as directory:
        async with kvrt.Runtime() as runtime:
            yield await runtime.spawn(ChDBBackend(directory))


@asynccontextmanager
async def reference_chdb() -> AsyncIterator[ChDBStore]:
    with tempfile.TemporaryDirectory() as directory:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "A configured store is unstable")
            store = ChDBStore(database_path=directory)
        try:
            yield store
        finally:
            await store.close()


if __name__ == "__main__":
    subjects: dict[str, Subject] = {
        "kvrt": kvrt_chdb,
        "reference": reference_chdb,
        "kvrt's memory backend": kvrt_memory,
    }
    main("chDB: kvrt vs py-key-value-aio ChDBStore", subjects, "chdb")

"""kvrt's RocksDB handle against py-key-value-aio's RocksDBStore, each on a fresh directory (see harness.py).

python bench/bench_rocksdb.py                # print the table
python bench/bench_rocksdb.py --write        # also rewrite bench/RESULTS.md's rocksdb section
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from harness import Subject, kvrt_memory, main

import kvrt
from kvrt.backends.rocksdb import RocksDBBackend
from kvrt.handle import Handle

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from key_value.aio.stores.rocksdb import RocksDBStore


@asynccontextmanager
async def kvrt_rocksdb() -> AsyncIterator[Handle]:
    with tempfile.TemporaryDirectory() as directory:
        async with kvrt.Runtime() as runtime:
            yield await runtime.spawn(RocksDBBackend(directory))


@asynccontextmanager
async def reference_rocksdb() -> AsyncIterator[RocksDBStore]:
    with tempfile.TemporaryDirectory() as directory:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "A configured store is unstable"
            store = RocksDBStore(path=directory)
        try:
            yield store
        finally:
            await store.close()


if __name__ == "__main__":
    subjects: dict[str, Subject] = {
        "kvrt": kvrt_rocksdb,
        "reference": reference_rocksdb,
        "kvrt's memory backend": kvrt_memory,
    }
    main("RocksDB: kvrt vs py-key-value-aio RocksDBStore", subjects, "rocksdb")

"""kvrt's disk handle against py-key-value-aio's DiskStore, each on a fresh directory (see harness.py).

python bench/bench_disk.py                   # print the table
python bench/bench_disk.py --write           # also rewrite bench/RESULTS.md's disk section
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from harness import Subject, kvrt_memory, main
from key_value.aio.stores.disk import DiskStore

import kvrt
from kvrt.backends.disk import DiskBackend
from kvrt.handle import Handle


@asynccontextmanager
async def kvrt_disk() -> AsyncIterator[Handle]:
    with tempfile.TemporaryDirectory() as directory:
        async with kvrt.Runtime() as runtime:
            yield await runtime.spawn(DiskBackend(directory))


@asynccontextmanager
async def reference_disk() -> AsyncIterator[DiskStore]:
    with tempfile.TemporaryDirectory() as directory:
        store = DiskStore(directory=directory)
        try:
            yield store
        finally:
            await store.close()


if __name__ == "__main__":
    subjects: dict[str, Subject] = {
        "kvrt": kvrt_disk,
        "reference": reference_disk,
        "kvrt's memory backend": kvrt_memory,
    }
    main("Disk: kvrt vs py-key-value-aio DiskStore", subjects, "disk")

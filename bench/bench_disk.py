"""kvrt's disk handle against py-key-value-aio's DiskStore, each on a fresh directory (see harness.py).

python bench/bench_disk.py                   # print the table
python bench/bench_disk.py --write           # also rewrite bench/RESULTS.md's disk section
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from harness import Subject, compare, report, write_section
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--write", action="store_true", help="rewrite the disk section of bench/RESULTS.md")
    args = parser.parse_args()
    subjects: dict[str, Subject] = {"kvrt": kvrt_disk, "reference": reference_disk}
    table = anyio.run(compare, subjects, args.rounds, backend=args.loop)
    section = report("Disk: kvrt vs py-key-value-aio DiskStore", table, args.rounds, args.loop)
    print(section)
    if args.write:
        write_section(section)

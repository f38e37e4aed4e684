"""kvrt's file-tree handle against py-key-value-aio's FileTreeStore, each on a fresh directory (see harness.py).

Both fsync every file they write (the reference fsyncs each file but not its directory; kvrt also
fsyncs the directory, once per batch).

python bench/bench_filetree.py                   # print the table
python bench/bench_filetree.py --write           # also rewrite bench/RESULTS.md's filetree section
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from harness import Subject, kvrt_memory, main
from key_value.aio.stores.filetree import FileTreeStore

import kvrt
from kvrt.backends.filetree import FileTreeBackend
from kvrt.handle import Handle


@asynccontextmanager
async def kvrt_filetree() -> AsyncIterator[Handle]:
    with tempfile.TemporaryDirectory() as directory:
        async with kvrt.Runtime() as runtime:
            yield await runtime.spawn(FileTreeBackend(directory))


@asynccontextmanager
async def reference_filetree() -> AsyncIterator[FileTreeStore]:
    with tempfile.TemporaryDirectory() as directory:
        yield FileTreeStore(data_directory=directory)  # nothing to close: it holds no handle between calls


if __name__ == "__main__":
    subjects: dict[str, Subject] = {
        "kvrt": kvrt_filetree,
        "reference": reference_filetree,
        "kvrt's memory backend": kvrt_memory,
    }
    main("File tree: kvrt vs py-key-value-aio FileTreeStore", subjects, "filetree")

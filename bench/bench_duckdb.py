"""kvrt's DuckDB handle against py-key-value-aio's DuckDBStore, each on a fresh database file (see harness.py).

python bench/bench_duckdb.py                 # print the table
python bench/bench_duckdb.py --write         # also rewrite bench/RESULTS.md's DuckDB section

Both subjects write a file in a fresh temporary directory, so each pays DuckDB's commit (a write
and flush of its WAL) for every statement. Fewer keys per caller than the in-memory benches: the
reference's single-row upsert costs milliseconds.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import harness
from harness import Subject, kvrt_memory, main
from key_value.aio.stores.duckdb import DuckDBStore

import kvrt
from kvrt.backends.duckdb import DuckDBBackend
from kvrt.handle import Handle

warnings.filterwarnings("ignore", "A configured store is unstable", UserWarning)
harness.KEYS_PER_CALLER = {1: 2_000, 64: 50}


@asynccontextmanager
async def kvrt_duckdb() -> AsyncIterator[Handle]:
    with tempfile.TemporaryDirectory() as directory:
        async with kvrt.Runtime() as runtime:
            yield await runtime.spawn(DuckDBBackend(Path(directory) / "kv.duckdb"))


@asynccontextmanager
async def reference_duckdb() -> AsyncIterator[Any]:
    with tempfile.TemporaryDirectory() as directory:
        async with DuckDBStore(database_path=Path(directory) / "kv.duckdb") as store:
            yield store


if __name__ == "__main__":
    subjects: dict[str, Subject] = {
        "kvrt": kvrt_duckdb,
        "reference": reference_duckdb,
        "kvrt's memory backend": kvrt_memory,
    }
    main("DuckDB: kvrt vs py-key-value-aio DuckDBStore", subjects, "duckdb")

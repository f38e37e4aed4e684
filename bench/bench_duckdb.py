"""kvrt's DuckDB handle against py-key-value-aio's DuckDBStore, each on a fresh database file (see harness.py).

python bench/bench_duckdb.py                 # print the table
python bench/bench_duckdb.py --write         # also rewrite bench/RESULTS.md's DuckDB section

Both subjects write a file in a fresh temporary directory, so each pays DuckDB's commit (a write
and flush of its WAL) for every statement. Fewer keys per caller than the in-memory benches: the
reference's single-row upsert costs milliseconds.
"""

from __future__ import annotations

import warnings
from functools import partial

import harness
from harness import kvrt_in_directory, main_against_reference, reference_in_directory
from key_value.aio.stores.duckdb import DuckDBStore

from kvrt.backends.duckdb import DuckDBBackend

warnings.filterwarnings("ignore", "A configured store is unstable", UserWarning)
harness.KEYS_PER_CALLER = {1: 2_000, 64: 50}


if __name__ == "__main__":
    main_against_reference(
        "DuckDB: kvrt vs py-key-value-aio DuckDBStore",
        partial(kvrt_in_directory, lambda directory: DuckDBBackend(directory / "kv.duckdb")),
        partial(reference_in_directory, lambda directory: DuckDBStore(database_path=directory / "kv.duckdb")),
        "duckdb",
    )

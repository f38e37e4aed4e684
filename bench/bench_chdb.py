"""kvrt's chDB handle against py-key-value-aio's ChDBStore, each on a fresh directory (see harness.py).

python bench/bench_chdb.py                   # print the table
python bench/bench_chdb.py --write           # also rewrite bench/RESULTS.md's chdb section

chDB runs one engine per process, on one directory at a time: the subjects run in turn, each
closing its session (and so the engine) before the next opens its own directory. Fewer keys per
caller than the other benches: every statement costs the engine a few milliseconds, and the
reference runs one statement per call.
"""

from __future__ import annotations

from functools import partial

import harness
from harness import kvrt_in_directory, main_against_reference, reference_in_directory
from key_value.aio.stores.chdb import ChDBStore

from kvrt.backends.chdb import ChDBBackend

harness.KEYS_PER_CALLER = {1: 2_000, 64: 100}


if __name__ == "__main__":
    main_against_reference(
        "chDB: kvrt vs py-key-value-aio ChDBStore",
        partial(kvrt_in_directory, ChDBBackend),
        partial(reference_in_directory, lambda directory: ChDBStore(database_path=directory)),
        "chdb",
    )

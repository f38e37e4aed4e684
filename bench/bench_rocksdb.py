"""kvrt's RocksDB handle against py-key-value-aio's RocksDBStore, each on a fresh directory (see harness.py).

python bench/bench_rocksdb.py                # print the table
python bench/bench_rocksdb.py --write        # also rewrite bench/RESULTS.md's rocksdb section
"""

from __future__ import annotations

import warnings
from functools import partial

from harness import kvrt_in_directory, main_against_reference, reference_in_directory

from kvrt.backends.rocksdb import RocksDBBackend

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from key_value.aio.stores.rocksdb import RocksDBStore


if __name__ == "__main__":
    main_against_reference(
        "RocksDB: kvrt vs py-key-value-aio RocksDBStore",
        partial(kvrt_in_directory, RocksDBBackend),
        partial(reference_in_directory, lambda directory: RocksDBStore(path=directory)),
        "rocksdb",
    )

"""kvrt's disk handle against py-key-value-aio's DiskStore, each on a fresh directory (see harness.py).

python bench/bench_disk.py                   # print the table
python bench/bench_disk.py --write           # also rewrite bench/RESULTS.md's disk section
"""

from __future__ import annotations

from functools import partial

from harness import kvrt_in_directory, main_against_reference, reference_in_directory
from key_value.aio.stores.disk import DiskStore

from kvrt.backends.disk import DiskBackend

if __name__ == "__main__":
    main_against_reference(
        "Disk: kvrt vs py-key-value-aio DiskStore",
        partial(kvrt_in_directory, DiskBackend),
        partial(reference_in_directory, lambda directory: DiskStore(directory=directory)),
        "disk",
    )

"""kvrt's file-tree handle against py-key-value-aio's FileTreeStore, each on a fresh directory (see harness.py).

Both fsync every file they write (the reference fsyncs each file but not its directory; kvrt also
fsyncs the directory, once per batch).

python bench/bench_filetree.py                   # print the table
python bench/bench_filetree.py --write           # also rewrite bench/RESULTS.md's filetree section
"""

from __future__ import annotations

from functools import partial

from harness import kvrt_in_directory, main_against_reference, reference_in_directory
from key_value.aio.stores.filetree import FileTreeStore

from kvrt.backends.filetree import FileTreeBackend

if __name__ == "__main__":
    main_against_reference(
        "File tree: kvrt vs py-key-value-aio FileTreeStore",
        partial(kvrt_in_directory, FileTreeBackend),
        partial(reference_in_directory, lambda directory: FileTreeStore(data_directory=directory)),
        "filetree",
    )

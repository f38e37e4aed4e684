"""Crash safety: a process killed with SIGKILL mid-load leaves every acknowledged put intact in RocksDB.

Without ``sync`` a write is acknowledged once it is in RocksDB's write-ahead log, in the operating
system's hands: a killed process loses none of it (and its LOCK is released with it).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from kvrt import Runtime
from kvrt.backends.rocksdb import RocksDBBackend
from kvrt.testing.conformance import LOOPS
from kvrt.testing.crash import assert_intact, kill_mid_load


@pytest.mark.parametrize("loop", LOOPS)
def test_every_acknowledged_put_survives_sigkill(tmp_path: Path, loop: str) -> None:
    directory = tmp_path / "db"
    acknowledged = kill_mid_load(
        "from kvrt.backends.rocksdb import RocksDBBackend", "RocksDBBackend(directory)", directory, loop
    )

    async def verify() -> None:
        async with Runtime() as runtime:
            await assert_intact(await runtime.spawn(RocksDBBackend(directory)), acknowledged)

    anyio.run(verify, backend=loop)

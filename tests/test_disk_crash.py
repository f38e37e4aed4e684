"""Crash safety: a process killed with SIGKILL mid-load leaves every acknowledged put intact."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from kvrt import Runtime
from kvrt.backends.disk import DiskBackend
from kvrt.testing.conformance import LOOPS
from kvrt.testing.crash import assert_intact, kill_mid_load


@pytest.mark.parametrize("loop", LOOPS)
def test_every_acknowledged_put_survives_sigkill(tmp_path: Path, loop: str) -> None:
    directory = tmp_path / "cache"
    acknowledged = kill_mid_load(
        "from kvrt.backends.disk import DiskBackend", "DiskBackend(directory)", directory, loop
    )

    async def verify() -> None:
        async with Runtime() as runtime:
            await assert_intact(await runtime.spawn(DiskBackend(directory)), acknowledged)

    anyio.run(verify, backend=loop)

"""Crash safety: a process killed with SIGKILL mid-load leaves every acknowledged put intact, and no half file."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from kvrt import Runtime
from kvrt.backends.filetree import FileTreeBackend
from kvrt.handle import AttachedFullHandle
from kvrt.testing.conformance import LOOPS
from kvrt.testing.crash import COLLECTION, assert_intact, expected, kill_mid_load


@pytest.mark.parametrize("loop", LOOPS)
def test_every_acknowledged_put_survives_sigkill(tmp_path: Path, loop: str) -> None:
    directory = tmp_path / "tree"
    acknowledged = kill_mid_load(
        "from kvrt.backends.filetree import FileTreeBackend", "FileTreeBackend(directory)", directory, loop
    )

    for path in (directory / COLLECTION).iterdir():  # every entry file is whole, whether acknowledged or not
        if path.suffix == ".json":
            assert json.loads(path.read_bytes())["value"] == expected(path.stem), f"{path.name} is damaged"

    async def verify() -> None:
        async with Runtime() as runtime:
            store = await runtime.spawn(FileTreeBackend(directory))
            assert isinstance(store, AttachedFullHandle)  # every segment
            await assert_intact(store, acknowledged)
            listed = await store.keys(COLLECTION)
            assert set(acknowledged) <= set(listed)
            assert all(key.startswith("w") for key in listed), "a temporary file listed as an entry"
            await store.cull()
        left = [path.name for path in directory.rglob(".kvrt-*.tmp")]
        assert left == [], f"the killed writer's temporary files were not removed: {left[:5]}"

    anyio.run(verify, backend=loop)

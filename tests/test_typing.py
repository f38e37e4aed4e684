"""A handle's type says which segments it has, where the backend's type is known; isinstance agrees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import kvrt
from kvrt.backends.memory import MemoryBackend
from kvrt.backends.null import NullBackend
from kvrt.detached import DetachedFullHandle, DetachedHandle
from kvrt.handle import AttachedFullHandle, KeysSegment

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).parent.parent


async def test_a_memory_handle_is_typed_and_built_with_every_segment() -> None:
    with kvrt.Runtime.detached() as runtime:
        handle = runtime.open(MemoryBackend())
        await handle.put("k", {"v": 1})
        assert await handle.keys() == ["k"]  # type-checked: mypy --strict runs over this file
        await handle.cull()
        assert isinstance(handle, DetachedFullHandle)
        plain = runtime.open(NullBackend())
        assert isinstance(plain, DetachedHandle)
        assert not isinstance(plain, KeysSegment)
    async with kvrt.Runtime() as attached:
        spawned = await attached.spawn(MemoryBackend())
        assert await spawned.collections() == []
        assert isinstance(spawned, AttachedFullHandle)


def test_a_segment_the_backend_lacks_is_a_type_error(tmp_path: Path) -> None:
    snippet = tmp_path / "uses_keys.py"
    snippet.write_text(
        "import kvrt\nfrom kvrt.backends.null import NullBackend\n\n"
        "async def main() -> None:\n    await kvrt.open(NullBackend()).keys()\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(snippet)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stdout
    assert '"DetachedHandle" has no attribute "keys"' in result.stdout

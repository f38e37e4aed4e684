from __future__ import annotations

from pathlib import Path

import pytest

from kvrt import Runtime
from kvrt.backends.disk import DiskBackend
from kvrt.testing import ConformanceSuite


class TestDiskConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> DiskBackend:
        return DiskBackend(tmp_path / "cache")


@pytest.mark.anyio
async def test_a_size_limit_evicts_the_oldest_writes_first(tmp_path: Path) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(DiskBackend(tmp_path, size_limit=300_000))
        for start in range(0, 3000, 100):
            names = [f"k{i:04}" for i in range(start, start + 100)]
            await store.put_many(names, [{"pad": "x" * 1000}] * 100)
        kept = await store.keys()  # type: ignore[attr-defined]
        assert 0 < len(kept) < 3000
        assert "k2999" in kept, "the newest write stays"
        assert "k0000" not in kept, "the oldest write went first"
        assert await store.get("k2999") == {"pad": "x" * 1000}


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        DiskBackend()
    with pytest.raises(ValueError, match="positive"):
        DiskBackend(tmp_path, size_limit=0)

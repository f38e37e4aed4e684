from __future__ import annotations

from pathlib import Path

import pytest

from kvrt.backends.disk import DiskBackend
from kvrt.testing import ConformanceSuite


class TestDiskConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> DiskBackend:
        return DiskBackend(tmp_path / "cache")

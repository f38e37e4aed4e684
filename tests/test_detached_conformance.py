"""The conformance suite through a detached handle (``kvrt.open``) and through ``kvrt.sync``'s transport."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvrt.backends.disk import DiskBackend
from kvrt.backends.memory import MemoryBackend
from kvrt.backends.redis import RedisBackend
from kvrt.testing import BlockingConformanceSuite, DetachedConformanceSuite
from kvrt.testing.servers import RedisTarget


class TestDetachedMemory(DetachedConformanceSuite):
    @pytest.fixture
    def backend(self) -> MemoryBackend:
        return MemoryBackend()


class TestDetachedDisk(DetachedConformanceSuite):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> DiskBackend:
        return DiskBackend(tmp_path / "cache")


class TestDetachedRedis(DetachedConformanceSuite):
    @pytest.fixture
    def backend(self, redis_server: RedisTarget) -> RedisBackend:
        redis_server.flush()
        return RedisBackend(redis_server.url)


class TestBlockingMemory(BlockingConformanceSuite):
    @pytest.fixture
    def backend(self) -> MemoryBackend:
        return MemoryBackend()


class TestBlockingDisk(BlockingConformanceSuite):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> DiskBackend:
        return DiskBackend(tmp_path / "cache")

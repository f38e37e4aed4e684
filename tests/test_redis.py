"""The Redis backend against real servers: Redis 7, Valkey 9 and a 3-master Redis Cluster."""

from __future__ import annotations

import pytest

from kvrt.backends.redis import RedisBackend
from kvrt.testing import ConformanceSuite
from kvrt.testing.servers import RedisTarget


def fresh_backend(target: RedisTarget) -> RedisBackend:
    target.flush()
    return RedisBackend(target.url, cluster=target.cluster)


class TestRedisConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, redis_server: RedisTarget) -> RedisBackend:
        return fresh_backend(redis_server)


class TestValkeyConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, valkey_server: RedisTarget) -> RedisBackend:
        return fresh_backend(valkey_server)


class TestRedisClusterConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, redis_cluster_server: RedisTarget) -> RedisBackend:
        return fresh_backend(redis_cluster_server)

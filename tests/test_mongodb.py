"""The MongoDB backend against SecantusDB (MongoDB-compatible, not mongod), or mongod where one is given."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest

from kvrt.backends.mongodb import MongoDBBackend
from kvrt.testing import ConformanceSuite
from kvrt.testing.servers import MongoTarget

pytestmark = pytest.mark.anyio


@pytest.fixture
def database(mongodb: MongoTarget) -> Iterator[str]:
    """A fresh database name, dropped after the test."""
    name = f"kvrt_{uuid.uuid4().hex[:12]}"
    yield name
    client: pymongo.MongoClient[dict[str, Any]]
    with pymongo.MongoClient(mongodb.url) as client:
        client.drop_database(name)


class TestMongoDBConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, mongodb: MongoTarget, database: str) -> MongoDBBackend:
        return MongoDBBackend(mongodb.url, database=database)


class TestMongoDBConformanceWithAMotorClient(ConformanceSuite):
    """The same contract through a user's Motor client, which kvrt uses and leaves open."""

    @pytest.fixture
    def backend(self, mongodb: MongoTarget, database: str) -> Iterator[MongoDBBackend]:
        from motor.motor_asyncio import AsyncIOMotorClient

        client: Any = AsyncIOMotorClient(mongodb.url)
        yield MongoDBBackend(client=client, database=database)
        client.close()

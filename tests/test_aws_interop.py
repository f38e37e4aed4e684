"""The same bucket and table, written by one library and read by the other (SPEC.md section 5), on moto's server.

The reference's S3Store and DynamoDBStore run only on asyncio, so these tests do too; kvrt's side
runs on both loops in tests/test_s3.py and tests/test_dynamodb.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from kvrt import Runtime
from kvrt.backends.base import Backend
from kvrt.backends.dynamodb import DynamoDBBackend
from kvrt.backends.s3 import S3Backend
from kvrt.protocol import AsyncEnumerateKeysProtocol
from kvrt.testing.conformance import assert_ttl, sleep_past
from kvrt.testing.servers import AWS_TEST_OPTIONS, AwsTarget, reference_module

s3_store = reference_module("key_value.aio.stores.s3")
dynamodb_store = reference_module("key_value.aio.stores.dynamodb")

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:A configured store is unstable:UserWarning"),  # the reference marks these two
]

VALUES: dict[str, dict[str, Any]] = {
    "user-1": {"name": "Alice", "age": 30, "tags": ["a", "b"], "active": True},
    "user:2": {"nested": {"list": [1, 2.5, None]}, "unicode": "héllo 🎉"},
    "a b/c": {"path": "like"},
    "empty": {},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _s3(aws: AwsTarget, name: str) -> tuple[Backend, Any]:
    kvrt_side = S3Backend(name, endpoint_url=aws.endpoint_url, create_bucket=True, **AWS_TEST_OPTIONS)
    reference = s3_store.S3Store(bucket_name=name, endpoint_url=aws.endpoint_url, **AWS_TEST_OPTIONS)
    return kvrt_side, reference


def _dynamodb(aws: AwsTarget, name: str) -> tuple[Backend, Any]:
    kvrt_side = DynamoDBBackend(name, endpoint_url=aws.endpoint_url, create_table=True, **AWS_TEST_OPTIONS)
    reference = dynamodb_store.DynamoDBStore(table_name=name, endpoint_url=aws.endpoint_url, **AWS_TEST_OPTIONS)
    return kvrt_side, reference


@pytest.fixture(params=[_s3, _dynamodb], ids=["s3", "dynamodb"])
def pair(request: pytest.FixtureRequest, aws: AwsTarget) -> tuple[Backend, Any]:
    """A kvrt backend and the reference's store, on one fresh bucket or table."""
    make: Callable[[AwsTarget, str], tuple[Backend, Any]] = request.param
    return make(aws, f"interop-{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def reference_store(pair: tuple[Backend, Any]) -> AsyncIterator[Any]:
    reference = pair[1]
    async with reference:
        yield reference


async def test_kvrt_reads_what_the_reference_wrote(pair: tuple[Backend, Any], reference_store: Any) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(pair[0])  # first: it makes the bucket or table the reference writes to
        await reference_store.put_many(list(VALUES), list(VALUES.values()), collection="users")
        await reference_store.put("gone", {"v": 2}, collection="users", ttl=1)
        await sleep_past(time.time() + 1)
        await reference_store.put("brief", {"v": 1}, collection="users", ttl=100)
        assert await store.get_many(list(VALUES), collection="users") == list(VALUES.values())
        assert_ttl(await store.ttl("brief", collection="users"), {"v": 1}, 100)
        assert await store.get("gone", collection="users") is None
        assert isinstance(store, AsyncEnumerateKeysProtocol)
        assert sorted(await store.keys("users")) == sorted([*VALUES, "brief"])
        assert await store.delete("user-1", collection="users") is True
    assert await reference_store.get("user-1", collection="users") is None


async def test_the_reference_reads_what_kvrt_wrote(pair: tuple[Backend, Any], reference_store: Any) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(pair[0])
        await store.put_many(list(VALUES), list(VALUES.values()), collection="users")
        await store.put("brief", {"v": 1}, collection="users", ttl=100)
        for key, value in VALUES.items():
            assert await reference_store.get(key, collection="users") == value
        # DynamoDBStore reads the whole-second ``ttl``, up to 1 s short, and a slow machine adds the calls' time
        assert_ttl(await reference_store.ttl("brief", collection="users"), {"v": 1}, 100, slack=2.5)
        assert await reference_store.get("missing", collection="users") is None
        assert await reference_store.delete("brief", collection="users") is True
        assert await store.get("brief", collection="users") is None

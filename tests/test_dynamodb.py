"""The DynamoDB backend against moto's real server (or LocalStack where Docker runs)."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest
import structlog.testing

from kvrt import Runtime
from kvrt.backends.dynamodb import DynamoDBBackend, UnprocessedError
from kvrt.errors import EntryTooLargeError, KeyValueError, StoreSetupError
from kvrt.policies import RestartPolicy
from kvrt.protocol import AsyncEnumerateKeysProtocol
from kvrt.testing import ConformanceSuite
from kvrt.testing.conformance import get_concurrently
from kvrt.testing.servers import AWS_TEST_OPTIONS, AwsTarget, SentRequests


def fresh_table(aws: AwsTarget, **options: Any) -> DynamoDBBackend:
    table = f"kvrt-{uuid.uuid4().hex[:12]}"
    return DynamoDBBackend(table, endpoint_url=aws.endpoint_url, create_table=True, **AWS_TEST_OPTIONS, **options)


pytestmark = pytest.mark.anyio


class TestDynamoDBConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, aws: AwsTarget) -> DynamoDBBackend:
        return fresh_table(aws)


async def test_64_concurrent_gets_are_one_batch_get_item(runtime: Runtime, aws: AwsTarget) -> None:
    backend = fresh_table(aws)
    store = await runtime.spawn(backend)
    names = [f"k{i}" for i in range(64)]
    await store.put_many(names, [{"i": i} for i in range(64)])
    calls = SentRequests(backend.client, "dynamodb")
    found = await get_concurrently(store, names)
    assert found == {name: {"i": i} for i, name in enumerate(names)}
    # 64 keys fit one request; under trio the first caller may cross to the asyncio host alone
    assert calls.counts["BatchGetItem"] <= 2, calls.counts
    assert calls.counts.keys() == {"BatchGetItem"}


async def test_300_puts_are_at_most_12_batch_write_items(runtime: Runtime, aws: AwsTarget) -> None:
    backend = fresh_table(aws)
    store = await runtime.spawn(backend)
    calls = SentRequests(backend.client, "dynamodb")
    names = [f"k{i}" for i in range(300)]
    await store.put_many(names, [{"i": i} for i in range(300)])
    assert calls.counts == {"BatchWriteItem": 12}
    assert await store.get_many(names) == [{"i": i} for i in range(300)]
    assert calls.counts["BatchGetItem"] == 3


class Unprocessed:
    """A fault injector: the first ``times`` batches leave their last 7 items out, and say so, as throttling does."""

    def __init__(self, client: Any, operation: str, table: str, times: int, *, always: bool = False) -> None:
        self.table, self.times, self.withheld, self.always = table, times, 0, always
        self.field = "UnprocessedItems" if operation == "BatchWriteItem" else "UnprocessedKeys"
        client.meta.events.register(f"provide-client-params.dynamodb.{operation}", self._withhold)
        client.meta.events.register(f"after-call.dynamodb.{operation}", self._report)

    def _withhold(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        requests = params["RequestItems"][self.table]
        listed = requests["Keys"] if isinstance(requests, dict) else requests  # BatchGetItem: {"Keys": [...]}
        if self.always:  # every item sent, and every item said to be left over: a batch that never goes through
            context["withheld"] = requests
        elif self.times and len(listed) > 7:
            self.times -= 1
            self.withheld += 7
            held = listed[-7:]
            del listed[-7:]
            context["withheld"] = {**requests, "Keys": held} if isinstance(requests, dict) else held

    def _report(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if "withheld" in context:
            parsed[self.field] = {self.table: context.pop("withheld")}


async def test_unprocessed_items_are_sent_again_and_never_lost(runtime: Runtime, aws: AwsTarget) -> None:
    backend = fresh_table(aws)
    store = await runtime.spawn(backend)
    writes = Unprocessed(backend.client, "BatchWriteItem", backend.table, times=3)
    names = [f"k{i}" for i in range(60)]
    await store.put_many(names, [{"i": i} for i in range(60)])
    assert writes.withheld == 21, "the injector held back items three times"
    reads = Unprocessed(backend.client, "BatchGetItem", backend.table, times=1)
    assert await store.get_many(names) == [{"i": i} for i in range(60)]
    assert reads.withheld == 7
    assert isinstance(store, AsyncEnumerateKeysProtocol)
    assert sorted(await store.keys()) == sorted(names)


async def test_a_batch_left_unprocessed_every_time_fails_as_transient(runtime: Runtime, aws: AwsTarget) -> None:
    backend = fresh_table(aws)
    store = await runtime.spawn(backend, restart=RestartPolicy(attempts=1))
    Unprocessed(backend.client, "BatchWriteItem", backend.table, times=0, always=True)
    with pytest.raises(KeyValueError):
        await store.put_many([f"k{i}" for i in range(10)], [{"i": 0}] * 10)
    assert backend.is_transient(UnprocessedError("left"))


async def test_a_missing_table_is_a_setup_error_that_names_it(runtime: Runtime, aws: AwsTarget) -> None:
    secret = "never-show-this-secret-0123456789"
    backend = DynamoDBBackend(
        "no-such-table",
        endpoint_url=aws.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key=secret,
    )
    with structlog.testing.capture_logs() as logs, pytest.raises(StoreSetupError, match="no-such-table") as raised:
        await runtime.spawn(backend)
    assert "create_table=True" in str(raised.value)
    shown = [repr(backend), str(raised.value), repr(raised.value.__cause__), *map(str, logs)]
    assert all(secret not in text for text in shown)


async def test_an_item_past_dynamodbs_size_is_entry_too_large_and_its_neighbours_land(
    runtime: Runtime, aws: AwsTarget
) -> None:
    store = await runtime.spawn(fresh_table(aws))
    errors: dict[str, KeyValueError] = {}

    async def put(key: str, size: int) -> None:
        try:
            await store.put(key, {"pad": "x" * size})
        except KeyValueError as exc:
            errors[key] = exc

    async with anyio.create_task_group() as group:  # one round, most likely: the worker finds the bad one
        group.start_soon(put, "small", 10)
        group.start_soon(put, "huge", 500_000)
    assert list(errors) == ["huge"]
    assert isinstance(errors["huge"], EntryTooLargeError)
    assert "400 KB" in str(errors["huge"])
    assert await store.get("small") == {"pad": "x" * 10}
    assert await store.get("huge") is None

"""The S3 backend against moto's real server (or LocalStack where Docker runs)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import structlog.testing

from kvrt import Runtime
from kvrt.backends.s3 import S3Backend, decode_name, encode_name
from kvrt.entry import DEFAULT_COLLECTION
from kvrt.errors import StoreSetupError
from kvrt.policies import CullPolicy
from kvrt.protocol import AsyncCullProtocol
from kvrt.testing import ConformanceSuite
from kvrt.testing.conformance import NAMES, get_concurrently, listing, raw_get, sleep_past
from kvrt.testing.servers import AWS_TEST_OPTIONS, AwsTarget, SentRequests


def fresh_bucket(aws: AwsTarget, **options: Any) -> S3Backend:
    bucket = f"kvrt-{uuid.uuid4().hex[:12]}"
    return S3Backend(bucket, endpoint_url=aws.endpoint_url, create_bucket=True, **AWS_TEST_OPTIONS, **options)


class TestS3Conformance(ConformanceSuite):
    listed_keys = 1100  # two of S3's 1000-key pages; each put is a request to the server

    @pytest.fixture
    def backend(self, aws: AwsTarget) -> S3Backend:
        return fresh_bucket(aws)


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_names_round_trip_and_stay_in_their_folder(name: str) -> None:
    for collection in (True, False):
        encoded = encode_name(name, collection=collection)
        assert decode_name(encoded) == name
        segments = encoded.split("/")
        assert "." not in segments
        assert ".." not in segments
        if collection:
            assert "/" not in encoded


def test_plain_names_are_the_references_object_keys() -> None:
    for name in ("users", "user:123", "a b", "ünï", "a/b"):
        assert encode_name(name, collection=False) == name


async def test_a_round_of_gets_goes_out_at_once_within_the_pool(runtime: Runtime, aws: AwsTarget) -> None:
    backend = fresh_bucket(aws, pool_size=8)
    store = await runtime.spawn(backend)
    names = [f"k{i}" for i in range(64)]
    await store.put_many(names, [{"i": i} for i in range(64)])
    calls = SentRequests(backend.client, "s3")
    found = await get_concurrently(store, names)
    assert found == {name: {"i": i} for i, name in enumerate(names)}
    assert calls.counts["GetObject"] == 64
    assert 1 < calls.most_out <= 8, "concurrent, and never past the pool"


async def test_deletes_find_what_is_there_and_go_out_as_one_delete_objects(runtime: Runtime, aws: AwsTarget) -> None:
    backend = fresh_bucket(aws)
    # no cull pass meanwhile: its first one reads every object (for entries other writers made)
    store = listing(await runtime.spawn(backend, cull=CullPolicy(interval=3600)))
    names = [f"k{i}" for i in range(300)]
    await store.put_many(names[:200], [{"i": i} for i in range(200)])
    calls = SentRequests(backend.client, "s3")
    assert await store.delete_many(names) == 200
    assert (calls.counts["HeadObject"], calls.counts["DeleteObjects"]) == (300, 1)
    assert await store.keys() == []


async def test_a_prefix_keeps_the_backend_to_its_folder(runtime: Runtime, aws: AwsTarget) -> None:
    outside = fresh_bucket(aws)
    inside = S3Backend(outside.bucket, prefix="app/cache", endpoint_url=aws.endpoint_url, **AWS_TEST_OPTIONS)
    bare = listing(await runtime.spawn(outside, name="bare"))
    kept = listing(await runtime.spawn(inside, name="kept"))
    await bare.put("k", {"where": "bare"}, collection="users")
    await kept.put("k", {"where": "kept"}, collection="users")
    await kept.put("j", {"where": "kept"}, collection="other")
    assert await bare.get("k", collection="users") == {"where": "bare"}
    assert await kept.get("k", collection="users") == {"where": "kept"}
    assert sorted(await kept.collections()) == ["other", "users"]
    assert await kept.destroy() is True
    assert await kept.collections() == []
    assert await bare.get("k", collection="users") == {"where": "bare"}, "destroy stays under the prefix"
    assert await bare.collections() == ["users"], "nothing is left under the prefix"
    assert await bare.keys("users") == ["k"]


@pytest.mark.parametrize("prefix", ["../up", "a//b", "./here", "50%"])
def test_a_prefix_that_could_escape_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        S3Backend("bucket", prefix=prefix)


async def test_a_missing_bucket_is_a_setup_error_that_names_it(runtime: Runtime, aws: AwsTarget) -> None:
    secret = "never-show-this-secret-0123456789"
    backend = S3Backend(
        "no-such-bucket-here",
        endpoint_url=aws.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key=secret,
    )
    with (
        structlog.testing.capture_logs() as logs,
        pytest.raises(StoreSetupError, match="no-such-bucket-here") as raised,
    ):
        await runtime.spawn(backend)
    assert "create_bucket=True" in str(raised.value)
    shown = [repr(backend), str(raised.value), repr(raised.value.__cause__), *map(str, logs)]
    assert all(secret not in text for text in shown)


async def test_a_cull_sends_nothing_until_an_expiry_is_due(runtime: Runtime, aws: AwsTarget) -> None:
    backend = fresh_bucket(aws)
    store = await runtime.spawn(backend)
    assert isinstance(store, AsyncCullProtocol)
    names = [f"k{i}" for i in range(50)]
    await store.put_many(names, [{"i": i} for i in range(50)])
    await store.put("later", {"v": 1}, ttl=100)
    await store.cull()  # the first pass since open reads every object once
    calls = SentRequests(backend.client, "s3")
    await store.cull()
    assert calls.counts["ListObjectsV2"] + calls.counts["HeadObject"] == 0, "nothing due: no request"
    await store.put("brief", {"v": 2}, ttl=0.2)
    await sleep_past(time.time() + 0.2)
    await store.cull()
    assert calls.counts["HeadObject"] >= 52, "a write's expiry made the next pass due"
    assert sorted(await listing(store).keys()) == sorted([*names, "later"])
    assert await raw_get(store, DEFAULT_COLLECTION, "brief") is None

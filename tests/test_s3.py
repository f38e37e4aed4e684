"""The S3 backend against moto's real server (or LocalStack where Docker runs)."""

from __future__ import annotations

import uuid

import pytest

from kvrt.backends.s3 import S3Backend, decode_name, encode_name
from kvrt.testing import ConformanceSuite
from kvrt.testing.conformance import NAMES
from kvrt.testing.servers import AWS_TEST_OPTIONS, AwsTarget


def fresh_bucket(aws: AwsTarget, **options: object) -> S3Backend:
    bucket = f"kvrt-{uuid.uuid4().hex[:12]}"
    return S3Backend(bucket, endpoint_url=aws.endpoint_url, create_bucket=True, **AWS_TEST_OPTIONS, **options)  # type: ignore[arg-type]


class TestS3Conformance(ConformanceSuite):
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

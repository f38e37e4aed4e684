"""The DynamoDB backend against moto's real server (or LocalStack where Docker runs)."""

from __future__ import annotations

import uuid

import pytest

from kvrt.backends.dynamodb import DynamoDBBackend
from kvrt.testing import ConformanceSuite
from kvrt.testing.servers import AWS_TEST_OPTIONS, AwsTarget


def fresh_table(aws: AwsTarget, **options: object) -> DynamoDBBackend:
    table = f"kvrt-{uuid.uuid4().hex[:12]}"
    return DynamoDBBackend(table, endpoint_url=aws.endpoint_url, create_table=True, **AWS_TEST_OPTIONS, **options)  # type: ignore[arg-type]


class TestDynamoDBConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, aws: AwsTarget) -> DynamoDBBackend:
        return fresh_table(aws)

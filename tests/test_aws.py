"""What the S3 and DynamoDB backends share: which errors are transient, and the bounded fan-out of a batch."""

from __future__ import annotations

import asyncio
from typing import Any

import botocore.exceptions
import pytest

from kvrt.backends.aws import is_transient
from kvrt.backends.dynamodb import DynamoDBBackend, UnprocessedError
from kvrt.backends.fan_out import fan_out


def client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    response: Any = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return botocore.exceptions.ClientError(response, "PutObject")


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (client_error("SlowDown", 503), True),
        (client_error("ProvisionedThroughputExceededException", 400), True),
        (client_error("ThrottlingException", 400), True),
        (client_error("InternalError", 500), True),
        (client_error("SomethingNew", 502), True),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
        (botocore.exceptions.ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"), True),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), True),
        (botocore.exceptions.ConnectionClosedError(endpoint_url="http://127.0.0.1:1"), True),
        (client_error("AccessDenied", 403), False),
        (client_error("NoSuchBucket", 404), False),
        (client_error("ResourceNotFoundException", 400), False),
        (client_error("ValidationException", 400), False),
        (botocore.exceptions.NoCredentialsError(), False),
        (ValueError("a bug"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_throttling_5xx_and_lost_connections_are_transient_refusals_are_not(
    error: BaseException, transient: bool
) -> None:
    assert is_transient(error) is transient


def test_a_batch_left_unprocessed_is_transient_for_dynamodb() -> None:
    assert DynamoDBBackend("t").is_transient(UnprocessedError("left"))


def test_fan_out_keeps_order_bounds_width_and_raises_the_first_error() -> None:
    out = most = 0

    async def call(item: int) -> int:
        nonlocal out, most
        out += 1
        most = max(most, out)
        await asyncio.sleep(0.001 * (item % 3))
        out -= 1
        if item == 13:
            raise KeyError(item)
        return item * 2

    assert asyncio.run(fan_out(call, list(range(12)), 4)) == [item * 2 for item in range(12)]
    assert most == 4
    with pytest.raises(KeyError):  # the error itself, not an exception group: the supervisor classifies it
        asyncio.run(fan_out(call, list(range(20)), 4))

"""kvrt's S3 and DynamoDB handles against py-key-value-aio's S3Store and DynamoDBStore, on one moto server.

python bench/bench_aws.py --service s3             # print the table
python bench/bench_aws.py --service dynamodb --write   # also rewrite that section of bench/RESULTS.md

Both subjects talk to the same local moto_server (started here, on a free loopback port), each
round on a fresh bucket or table. Fewer keys per caller than the other benches (see harness.py):
every request is an HTTP round trip to a Python server.
"""

from __future__ import annotations

import argparse
import sys
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import harness
from harness import Subject, main
from key_value.aio.stores.dynamodb import DynamoDBStore
from key_value.aio.stores.s3 import S3Store

import kvrt
from kvrt.backends.dynamodb import DynamoDBBackend
from kvrt.backends.s3 import S3Backend
from kvrt.handle import Handle
from kvrt.testing.servers import AWS_TEST_OPTIONS, MotoServer

warnings.filterwarnings("ignore", "A configured store is unstable", UserWarning)
harness.KEYS_PER_CALLER = {1: 1_000, 64: 40}
SERVER = MotoServer()


def _name() -> str:
    return f"bench-{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def kvrt_s3() -> AsyncIterator[Handle]:
    async with kvrt.Runtime() as runtime:
        yield await runtime.spawn(
            S3Backend(_name(), endpoint_url=SERVER.endpoint_url, create_bucket=True, **AWS_TEST_OPTIONS)
        )


@asynccontextmanager
async def kvrt_dynamodb() -> AsyncIterator[Handle]:
    async with kvrt.Runtime() as runtime:
        yield await runtime.spawn(
            DynamoDBBackend(_name(), endpoint_url=SERVER.endpoint_url, create_table=True, **AWS_TEST_OPTIONS)
        )


@asynccontextmanager
async def reference_s3() -> AsyncIterator[Any]:
    async with S3Store(bucket_name=_name(), endpoint_url=SERVER.endpoint_url, **AWS_TEST_OPTIONS) as store:
        yield store


@asynccontextmanager
async def reference_dynamodb() -> AsyncIterator[Any]:
    async with DynamoDBStore(table_name=_name(), endpoint_url=SERVER.endpoint_url, **AWS_TEST_OPTIONS) as store:
        yield store


if __name__ == "__main__":
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--service", choices=["s3", "dynamodb"], default="s3")
    known, rest = parser.parse_known_args()
    subjects: dict[str, Subject] = (
        {"kvrt": kvrt_s3, "reference": reference_s3}
        if known.service == "s3"
        else {"kvrt": kvrt_dynamodb, "reference": reference_dynamodb}
    )
    title = "S3: kvrt vs py-key-value-aio S3Store" if known.service == "s3" else "DynamoDB: kvrt vs DynamoDBStore"
    SERVER.start()
    try:
        main(f"{title} (moto_server)", subjects, known.service, argv=rest)
    finally:
        SERVER.stop()
        sys.stdout.flush()

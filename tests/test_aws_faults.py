"""moto's server killed under a 64-caller load and restarted 3 s later on the same port, for S3 and DynamoDB.

moto keeps its state in memory, so what was stored before the kill is gone with it (the backends
create their bucket or table again as they reopen): only what is acknowledged after the restart is
checked. The servers are the tests' own, not the session's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from kvrt import Runtime
from kvrt.backends.base import Backend
from kvrt.backends.dynamodb import DynamoDBBackend
from kvrt.backends.s3 import S3Backend
from kvrt.testing.outages import Load, write_through_outage
from kvrt.testing.servers import AWS_TEST_OPTIONS, MotoServer

pytestmark = pytest.mark.anyio

CALLERS = 64
DEADLINE = 1.0
OUTAGE = 3.0
SLACK = 0.5  # scheduling on a shared 2-core machine, on top of the deadline


def _s3(endpoint: str) -> Backend:
    return S3Backend(f"faults-{uuid.uuid4().hex[:8]}", endpoint_url=endpoint, create_bucket=True, **AWS_TEST_OPTIONS)


def _dynamodb(endpoint: str) -> Backend:
    return DynamoDBBackend(
        f"faults-{uuid.uuid4().hex[:8]}", endpoint_url=endpoint, create_table=True, **AWS_TEST_OPTIONS
    )


@pytest.mark.parametrize("make", [_s3, _dynamodb], ids=["s3", "dynamodb"])
async def test_a_killed_server_heals_with_default_policies(make: Callable[[str], Backend]) -> None:
    server = MotoServer()
    server.start()
    load = Load(warm_up_at=300)
    try:
        async with Runtime() as runtime:  # default policies
            store = await runtime.spawn(make(server.endpoint_url), name="aws", request_timeout=DEADLINE)
            await write_through_outage(store, server, load, callers=CALLERS, outage=OUTAGE, after_restart=200)

            load.check_healed(DEADLINE, SLACK)
            assert runtime.stats()["aws"].state == "running"
            keys = list(load.after_restart)
            every = store.with_timeout(30.0)  # hundreds of objects, one request each: a read-back, not a deadline test
            assert await every.get_many(keys) == [load.after_restart[key] for key in keys], "no put lost"
    finally:
        server.stop()

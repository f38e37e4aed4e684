"""moto's server killed under a 64-caller load and restarted 3 s later on the same port, for S3 and DynamoDB.

moto keeps its state in memory, so what was stored before the kill is gone with it (the backends
create their bucket or table again as they reopen): only what is acknowledged after the restart is
checked. The servers are the tests' own, not the session's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from kvrt import Runtime
from kvrt.backends.base import Backend
from kvrt.backends.dynamodb import DynamoDBBackend
from kvrt.backends.s3 import S3Backend
from kvrt.errors import KeyValueError
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


class Load:
    """What the writers saw."""

    def __init__(self) -> None:
        self.after_restart: dict[str, dict[str, Any]] = {}
        self.acknowledged = 0
        self.errors: list[BaseException] = []
        self.longest_call = 0.0
        self.restarted_at: float | None = None
        self.first_put_after_restart: float | None = None
        self.warmed_up = anyio.Event()
        self.back = anyio.Event()
        self.stop = anyio.Event()


async def _writer(store: Any, number: int, load: Load) -> None:
    index = 0
    while not load.stop.is_set():
        key, value = f"w{number}-{index}", {"writer": number, "index": index}
        index += 1
        restarted = load.restarted_at is not None  # before the call: a put sent in the outage may land after
        started = anyio.current_time()
        try:
            await store.put(key, value)
        except Exception as exc:  # every error is checked below
            load.errors.append(exc)
            await anyio.sleep(0.01)  # pacing: a failing call returns at once while the circuit is open
        else:
            load.acknowledged += 1
            if load.acknowledged >= 300:
                load.warmed_up.set()
            if restarted:
                load.after_restart[key] = value
                if load.first_put_after_restart is None:
                    load.first_put_after_restart = anyio.current_time()
                    load.back.set()
        finally:
            load.longest_call = max(load.longest_call, anyio.current_time() - started)


@pytest.mark.parametrize("make", [_s3, _dynamodb], ids=["s3", "dynamodb"])
async def test_a_killed_server_heals_with_default_policies(make: Callable[[str], Backend]) -> None:
    server = MotoServer()
    server.start()
    load = Load()
    try:
        async with Runtime() as runtime:  # default policies
            store = await runtime.spawn(make(server.endpoint_url), name="aws", request_timeout=DEADLINE)
            async with anyio.create_task_group() as group:
                for number in range(CALLERS):
                    group.start_soon(_writer, store, number, load)
                with anyio.fail_after(60):
                    await load.warmed_up.wait()
                await anyio.to_thread.run_sync(server.kill)
                await anyio.sleep(OUTAGE)  # the outage the scenario asks for, not a wait for a condition
                await anyio.to_thread.run_sync(server.start)
                load.restarted_at = anyio.current_time()
                with anyio.fail_after(10):
                    await load.back.wait()
                with anyio.fail_after(10):
                    while len(load.after_restart) < 200:  # noqa: ASYNC110 - a count of puts, nothing signals it
                        await anyio.sleep(0.05)
                load.stop.set()

            assert load.first_put_after_restart is not None
            assert load.restarted_at is not None
            assert load.first_put_after_restart - load.restarted_at <= 2.0, "puts succeed within 2 s of the restart"
            assert load.longest_call <= DEADLINE + SLACK, "no call outlives its deadline"
            assert load.errors, "the outage was seen"
            strangers = [error for error in load.errors if not isinstance(error, KeyValueError)]
            assert strangers == [], "every error a caller sees is a kvrt error"
            assert runtime.stats()["aws"].state == "running"
            keys = list(load.after_restart)
            every = store.with_timeout(30.0)  # hundreds of objects, one request each: a read-back, not a deadline test
            assert await every.get_many(keys) == [load.after_restart[key] for key in keys], "no put lost"
    finally:
        server.stop()

"""SecantusDB (MongoDB-compatible, not mongod) killed under 64 callers and restarted 3 s later, same port and data.

The server is the test's own, not the session's. It commits durably (as a journaled mongod
acknowledges with ``j: true``), so every put acknowledged before the kill must still be there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pymongo
import pytest

from kvrt import Runtime
from kvrt.backends.mongodb import MongoDBBackend, is_transient
from kvrt.testing.outages import Load, write_through_outage
from kvrt.testing.servers import MongoTarget, SecantusServer, free_port

pytestmark = pytest.mark.anyio

CALLERS = 64
DEADLINE = 1.0
OUTAGE = 3.0
SLACK = 0.5  # scheduling on a shared 2-core machine, on top of the deadline


async def test_a_killed_server_loses_no_acknowledged_put_and_puts_resume(tmp_path: Path) -> None:
    server = SecantusServer(tmp_path / "secantus", sync_on_commit=True)
    server.start()
    load = Load(warm_up_at=500)
    try:
        async with Runtime() as runtime:  # default policies
            store = await runtime.spawn(MongoDBBackend(server.url), name="mongodb", request_timeout=DEADLINE)
            await write_through_outage(store, server, load, callers=CALLERS, outage=OUTAGE, after_restart=200)

            load.check_healed(DEADLINE, SLACK)
            assert runtime.stats()["mongodb"].state == "running"
            keys = list(load.acknowledged)
            every = store.with_timeout(30.0)  # a read-back of thousands of keys, not a deadline test
            for start in range(0, len(keys), 1000):
                chunk = keys[start : start + 1000]
                assert await every.get_many(chunk) == [load.acknowledged[key] for key in chunk], "no put lost"
    finally:
        server.stop()


async def test_a_put_made_while_the_server_is_down_lands_once_it_is_back(tmp_path: Path) -> None:
    server = SecantusServer(tmp_path / "secantus", sync_on_commit=True)
    server.start()
    try:
        async with Runtime() as runtime:
            store = await runtime.spawn(MongoDBBackend(server.url), name="mongodb", request_timeout=20.0)
            await store.put("before", {"v": 1})
            await anyio.to_thread.run_sync(server.kill)
            async with anyio.create_task_group() as group:
                group.start_soon(store.put, "during", {"v": 2})  # lost connections are transient: retried, not failed
                await anyio.sleep(1.0)  # the outage the scenario asks for
                await anyio.to_thread.run_sync(server.start)
            assert await store.get_many(["before", "during"]) == [{"v": 1}, {"v": 2}]
    finally:
        server.stop()


def test_lost_connections_are_transient_and_refusals_are_not(mongodb: MongoTarget, database: str) -> None:
    client: pymongo.MongoClient[dict[str, Any]]
    nowhere = f"mongodb://127.0.0.1:{free_port()}"
    with (
        pymongo.MongoClient(nowhere, serverSelectionTimeoutMS=100) as client,
        pytest.raises(pymongo.errors.PyMongoError) as unreachable,
    ):
        client.admin.command("ping")
    assert is_transient(unreachable.value)
    with pymongo.MongoClient(mongodb.url) as client:
        target: Any = client[database]["c"]
        target.create_index("key", unique=True)
        target.insert_one({"key": "k"})
        with pytest.raises(pymongo.errors.PyMongoError) as duplicate:
            target.insert_one({"key": "k"})
        with pytest.raises(pymongo.errors.PyMongoError) as bulk_duplicate:
            target.bulk_write([pymongo.InsertOne({"key": "k"})], ordered=False)
        with pytest.raises(pymongo.errors.PyMongoError) as bad_command:
            client[database].command("noSuchCommand")
    assert not is_transient(duplicate.value)
    assert not is_transient(bulk_duplicate.value)
    assert not is_transient(bad_command.value)

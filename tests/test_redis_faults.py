"""Real Redis servers failing under load: a server killed and restarted 3 s later on the same port,
a cluster primary killed (its replica takes over), a cluster slot resharded to another primary,
and a cluster node frozen while it is introduced.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from redis.crc import key_slot

from kvrt import Runtime
from kvrt.backends.layout import compound_key
from kvrt.backends.memory import MemoryBackend
from kvrt.backends.redis import RedisBackend
from kvrt.errors import KeyValueError
from kvrt.testing.outages import Load, write_through_outage
from kvrt.testing.servers import RedisProcess, redis_binary, redis_cluster

pytestmark = pytest.mark.anyio

CALLERS = 64
DEADLINE = 1.0
OUTAGE = 3.0
SLACK = 0.5  # scheduling on a shared 2-core machine, on top of the deadline


async def test_a_killed_server_loses_no_acknowledged_put_and_puts_resume(tmp_path: Path) -> None:
    server = RedisProcess(redis_binary(), tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    load = Load()
    try:
        async with Runtime() as runtime:  # default policies
            fallback = await runtime.spawn(MemoryBackend(), name="fallback")
            store = await runtime.spawn(
                RedisBackend(server.url), name="redis", request_timeout=DEADLINE, fallback=fallback
            )
            await write_through_outage(store, server, load, callers=CALLERS, outage=OUTAGE, read=True)

            load.check_healed(DEADLINE, SLACK)
            assert load.reads_in_outage > 0, "the memory fallback serves reads while redis is down"

            checker = await runtime.spawn(RedisBackend(server.url), name="checker")  # no fallback: redis itself
            keys = list(load.acknowledged)
            for start in range(0, len(keys), 1000):
                chunk = keys[start : start + 1000]
                assert await checker.get_many(chunk) == [load.acknowledged[key] for key in chunk]
    finally:
        server.stop()


@pytest.mark.parametrize("outage", [0.5, 3.0, 10.0, 30.0], ids=lambda seconds: f"{seconds:g}s")
async def test_an_outage_of_any_length_heals_with_default_policies(tmp_path: Path, outage: float) -> None:
    """SIGKILL the server under a light write load, restart it on the same port ``outage`` seconds later."""
    server = RedisProcess(redis_binary(), tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    load = Load(warm_up_at=200)
    try:
        async with Runtime() as runtime:  # default policies: nothing tuned for the outage
            store = await runtime.spawn(RedisBackend(server.url), name="redis", request_timeout=DEADLINE)
            await write_through_outage(store, server, load, callers=4, outage=outage)
            stats = runtime.stats()["redis"]
            assert stats.state == "running"
            load.check_healed(DEADLINE, SLACK, outage_seen=outage > DEADLINE)  # a short one may go unseen
            assert stats.restarts == 1, "one outage, one restart, however many reconnects it took"
            assert stats.holds == 0
            keys = list(load.acknowledged)
            for start in range(0, len(keys), 1000):
                chunk = keys[start : start + 1000]
                assert await store.get_many(chunk) == [load.acknowledged[key] for key in chunk], "no put lost"
    finally:
        server.stop()


async def test_four_client_kills_within_5s_leave_the_handle_working(tmp_path: Path) -> None:
    server = RedisProcess(redis_binary(), tmp_path / "redis")
    server.start()
    admin = redis.Redis(port=server.port)
    try:
        async with Runtime() as runtime:  # default policies
            store = await runtime.spawn(RedisBackend(server.url), name="redis", request_timeout=DEADLINE)
            started = anyio.current_time()
            for kill in range(4):
                await store.put(f"before-{kill}", {"kill": kill})  # the worker holds live connections
                assert await anyio.to_thread.run_sync(lambda: admin.client_kill_filter(_type="normal", skipme=True))
                with contextlib.suppress(KeyValueError):  # the call after a kill may be the one that fails
                    await store.put(f"after-{kill}", {"kill": kill})
            assert anyio.current_time() - started < 5.0
            killed_at = anyio.current_time()
            while True:
                try:
                    await store.put("working", {"v": 1})
                    break
                except KeyValueError:
                    assert anyio.current_time() - killed_at < 2.0, "serving again within 2 s"
                    await anyio.sleep(0.01)  # pacing: a held-down worker answers at once
            assert await store.get("working") == {"v": 1}
            assert await store.get_many([f"before-{kill}" for kill in range(4)]) == [
                {"kill": kill} for kill in range(4)
            ]
            stats = runtime.stats()["redis"]
            assert stats.state == "running"
            assert stats.restarts == 4
    finally:
        admin.close()
        server.stop()


def _served_by_first_primary(key: str) -> bool:
    """Say whether ``key`` lives in the slots of primary 0 (slots 0-5460 of three)."""
    return bool(key_slot(compound_key("default_collection", key).encode()) < 16384 // 3)


async def test_a_cluster_primary_killed_fails_over_and_puts_resume() -> None:
    """Kill one of three primaries: its replica takes over, and kvrt follows the new topology."""
    failures: list[BaseException] = []
    longest = 0.0
    after_kill: dict[str, dict[str, int]] = {}
    killed_at: float | None = None
    loaded = anyio.Event()
    resumed = anyio.Event()
    stop = anyio.Event()
    acknowledged = 0

    async def writer(store: Any, number: int) -> None:
        nonlocal longest, acknowledged
        index = 0
        while not stop.is_set():
            key, value = f"c{number}-{index}", {"n": index}
            index += 1
            started = anyio.current_time()
            try:
                await store.put(key, value)
            except Exception as exc:  # every error is checked below
                failures.append(exc)
                await anyio.sleep(0.01)  # pacing while the slot's primary is gone
            else:
                acknowledged += 1
                if acknowledged >= 500:
                    loaded.set()
                if killed_at is not None:
                    after_kill[key] = value
                    if sum(1 for name in after_kill if _served_by_first_primary(name)) >= 100:
                        resumed.set()  # keys of the dead primary's slots: its replica took over
            finally:
                longest = max(longest, anyio.current_time() - started)

    with redis_cluster(redis_binary(), replicas=1, node_timeout_ms=1000) as nodes:
        async with Runtime() as runtime:  # default policies
            store = await runtime.spawn(RedisBackend(nodes[0].url, cluster=True), request_timeout=DEADLINE)
            async with anyio.create_task_group() as group:
                for number in range(16):
                    group.start_soon(writer, store, number)
                with anyio.fail_after(20):
                    await loaded.wait()  # writes acknowledged before the kill
                await anyio.to_thread.run_sync(nodes[0].kill)  # the primary the URL names
                killed_at = anyio.current_time()
                with anyio.fail_after(20):
                    await resumed.wait()
                stop.set()
            assert longest <= DEADLINE + SLACK, "no call outlives its deadline"
            strangers = [error for error in failures if not isinstance(error, KeyValueError)]
            assert strangers == [], "every error a caller sees is a kvrt error"
            keys = list(after_kill)
            assert await store.get_many(keys) == [after_kill[key] for key in keys], "writes after the kill read back"


def test_a_cluster_forms_though_a_node_stalls_through_its_handshake(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node frozen for longer than the node timeout while it is introduced is introduced again.

    Its first introduction times out and is forgotten; unless it is sent again the cluster never forms.
    """
    started: list[RedisProcess] = []
    start = RedisProcess.start

    def start_and_freeze_the_last(node: RedisProcess) -> None:
        start(node)
        started.append(node)
        if len(started) == 6:
            assert node.process is not None
            os.kill(node.process.pid, signal.SIGSTOP)
            threading.Timer(1.5, os.kill, (node.process.pid, signal.SIGCONT)).start()

    monkeypatch.setattr(RedisProcess, "start", start_and_freeze_the_last)
    with redis_cluster(redis_binary(), replicas=1, node_timeout_ms=1000) as nodes:
        client: Any = redis.Redis(port=nodes[0].port)
        try:
            assert len(client.execute_command("CLUSTER NODES")) == 6
        finally:
            client.close()


async def test_a_slot_moved_between_primaries_under_load_loses_nothing() -> None:
    """Reshard one slot from its primary to another while kvrt reads and writes keys in it.

    Redis answers ASK for keys already moved while the slot migrates, then MOVED once it has; kvrt
    follows both, without an error, and every caller reads back its own last write.
    """
    keys = [f"{{moving}}k{index}" for index in range(64)]  # one hash tag: every key in one slot
    slot = key_slot(compound_key("default_collection", keys[0]).encode())
    latest: dict[str, dict[str, int]] = {}
    failures: list[BaseException] = []
    mismatches: list[str] = []
    done = 0
    progressed = anyio.Condition()
    stop = anyio.Event()

    async def caller(store: Any, mine: list[str]) -> None:
        nonlocal done
        index = 0
        while not stop.is_set():
            for key in mine:
                index += 1
                try:
                    await store.put(key, {"n": index})
                    latest[key] = {"n": index}
                    if (found := await store.get(key)) != {"n": index}:
                        mismatches.append(f"{key}: wrote {index}, read {found}")
                except Exception as exc:  # every error is checked below
                    failures.append(exc)
                done += 1
                async with progressed:
                    progressed.notify_all()

    async def progress(calls: int) -> None:
        """Wait until the callers have made ``calls`` more round trips: the load overlaps each step."""
        target = done + calls
        async with progressed:
            while done < target:
                await progressed.wait()

    with redis_cluster(redis_binary()) as nodes, contextlib.ExitStack() as closing:
        clients: list[Any] = [closing.enter_context(redis.Redis(host="127.0.0.1", port=node.port)) for node in nodes]
        with redis.RedisCluster(host="127.0.0.1", port=nodes[0].port) as cluster:
            serving = cluster.get_node_from_key(compound_key("default_collection", keys[0])).port
        owner = next(index for index, node in enumerate(nodes) if node.port == serving)
        moved_to = (owner + 1) % len(nodes)
        source, target = clients[owner], clients[moved_to]
        source_id, target_id = source.execute_command("CLUSTER MYID"), target.execute_command("CLUSTER MYID")
        async with Runtime() as runtime:  # default policies
            store = await runtime.spawn(RedisBackend(nodes[0].url, cluster=True), request_timeout=DEADLINE)
            async with anyio.create_task_group() as group:
                for number in range(8):
                    group.start_soon(caller, store, keys[number::8])
                with anyio.fail_after(30):
                    await progress(200)
                    await anyio.to_thread.run_sync(
                        target.execute_command, "CLUSTER SETSLOT", slot, "IMPORTING", source_id
                    )
                    await anyio.to_thread.run_sync(
                        source.execute_command, "CLUSTER SETSLOT", slot, "MIGRATING", target_id
                    )
                    migrating_from = done
                    while names := await anyio.to_thread.run_sync(
                        source.execute_command, "CLUSTER GETKEYSINSLOT", slot, 4
                    ):
                        migrate = ("MIGRATE", "127.0.0.1", nodes[moved_to].port, "", 0, 5000, "KEYS", *names)
                        await anyio.to_thread.run_sync(source.execute_command, *migrate)
                        await progress(20)
                    during = done - migrating_from
                    for client in [target, source] + [c for c in clients if c not in (source, target)]:
                        await anyio.to_thread.run_sync(
                            client.execute_command, "CLUSTER SETSLOT", slot, "NODE", target_id
                        )
                    await progress(200)
                stop.set()
            assert failures == [], "the redirections are followed: callers never see the move"
            assert mismatches == [], "every caller reads back its own last write"
            assert during >= 20 * (len(keys) // 4), "the load went on while the slot migrated"
            assert await store.get_many(list(latest)) == list(latest.values()), "the last writes read back"
        assert source.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 0
        assert target.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == len(keys)

"""The Redis backend's own promises: URLs (TLS, ACL, db), batching, millisecond TTLs, names, interop."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio
import redis.exceptions
import structlog.testing

import kvrt
from kvrt import RestartPolicy, Runtime
from kvrt.backends.layout import compound_key
from kvrt.backends.redis import RedisBackend
from kvrt.backends.redis_connections import HeldConnections
from kvrt.errors import KeyValueStoreError, StoreSetupError
from kvrt.testing.conformance import assert_ttl, eventually, sleep_past
from kvrt.testing.servers import RedisProcess, RedisTarget, free_port, redis_binary, reference_module

redis_store = reference_module("key_value.aio.stores.redis")

pytestmark = pytest.mark.anyio


def raw(target: RedisTarget, db: int = 0) -> redis.Redis:
    host, port = target.nodes[0]
    return redis.Redis(host=host, port=port, db=db)


@pytest.fixture
def server(redis_server: RedisTarget) -> RedisTarget:
    redis_server.flush()
    return redis_server


async def test_ttls_are_kept_to_the_millisecond(server: RedisTarget) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(RedisBackend(server.url))
        await store.put("brief", {"v": 1}, ttl=0.75)
        with raw(server) as client:
            left = client.pttl(compound_key("default_collection", "brief"))
        assert 0 < left <= 750, "PX in milliseconds, not rounded up to a whole second"
        await sleep_past(time.time() + 0.76)
        assert await store.get("brief") is None


async def test_concurrent_callers_become_one_command(server: RedisTarget) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(RedisBackend(server.url))
        keys = [f"k{index}" for index in range(64)]
        with raw(server) as client:
            client.config_resetstat()

        async def put(key: str) -> None:
            await store.put(key, {"key": key})

        async with anyio.create_task_group() as group:
            for key in keys:
                group.start_soon(put, key)
        found: dict[str, Any] = {}

        async def get(key: str) -> None:
            found[key] = await store.get(key)

        async with anyio.create_task_group() as group:
            for key in keys:
                group.start_soon(get, key)
        assert found == {key: {"key": key} for key in keys}
        with raw(server) as client:
            stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}
    assert calls.get("get", 0) + calls.get("mget", 0) <= 4, calls
    assert calls.get("set", 0) + calls.get("mset", 0) <= 4, calls


async def test_keys_are_complete_and_names_are_not_patterns(server: RedisTarget) -> None:
    async with Runtime() as runtime:
        store: Any = await runtime.spawn(RedisBackend(server.url))
        many = [f"k{index}" for index in range(2500)]  # past one SCAN page
        await store.put_many(many, [{"v": 1}] * len(many), collection="a*")
        await store.put("other", {"v": 2}, collection="ab")
        await store.put("x", {"v": 3}, collection="[a]")
        assert sorted(await store.keys("a*")) == sorted(many)
        assert await store.keys("[a]") == ["x"]
        assert await store.keys("a?") == []
        assert await store.destroy_collection("a*") is True
        assert await store.keys("ab") == ["other"], "destroying 'a*' removed only that collection"


async def test_destroy_removes_only_kvrts_keys(server: RedisTarget) -> None:
    with raw(server) as client:
        client.set("foreign", "keep me")
    async with Runtime() as runtime:
        store: Any = await runtime.spawn(RedisBackend(server.url))
        await store.put("k", {"v": 1}, collection="mine")
        assert await store.destroy() is True
        assert await store.get("k", collection="mine") is None
    with raw(server) as client:
        assert client.get("foreign") == b"keep me"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the test uses the client itself: asyncio only
async def test_a_client_passed_in_is_used_and_never_closed(server: RedisTarget) -> None:
    client = redis.asyncio.Redis.from_url(server.url)
    try:
        async with Runtime() as runtime:
            store = await runtime.spawn(RedisBackend(client=client))
            await store.put("k", {"v": 1})
        assert await client.get(compound_key("default_collection", "k")) is not None, "still open after the runtime"
    finally:
        await client.aclose()


async def test_the_url_picks_the_database(server: RedisTarget) -> None:
    host, port = server.nodes[0]
    async with Runtime() as runtime:
        store = await runtime.spawn(RedisBackend(f"redis://{host}:{port}/3"))
        await store.put("k", {"v": 1})
    with raw(server, db=3) as in_three, raw(server, db=0) as in_zero:
        assert in_three.exists(compound_key("default_collection", "k")) == 1
        assert in_zero.exists(compound_key("default_collection", "k")) == 0


async def test_acl_users_log_in_and_a_wrong_password_is_a_setup_error(server: RedisTarget) -> None:
    host, port = server.nodes[0]
    with raw(server) as client:
        client.acl_setuser("kvrt-user", enabled=True, passwords=["+s3cret-pw"], keys=["*"], commands=["+@all"])
    try:
        async with Runtime() as runtime:
            store = await runtime.spawn(RedisBackend(f"redis://kvrt-user:s3cret-pw@{host}:{port}/0"))
            await store.put("k", {"v": 1})
            assert await store.get("k") == {"v": 1}
            with pytest.raises(StoreSetupError) as refused:
                await runtime.spawn(RedisBackend(f"redis://kvrt-user:wrong-pw@{host}:{port}/0"), name="wrong")
            assert "wrong-pw" not in str(refused.value), "credentials never appear in errors"
    finally:
        with raw(server) as client:
            client.acl_deluser("kvrt-user")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisProcess, int, Path]]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)],
            *["-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        ],
        check=True,
        capture_output=True,
    )
    tls_port = free_port()
    server = RedisProcess(
        redis_binary(),
        directory / "data",
        *["--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)],
        *["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"],
    )
    server.start()
    try:
        yield server, tls_port, cert
    finally:
        server.stop()


async def test_rediss_urls_use_tls_and_check_the_certificate(tls_server: tuple[RedisProcess, int, Path]) -> None:
    _, tls_port, cert = tls_server
    url = f"rediss://127.0.0.1:{tls_port}/0"
    async with Runtime() as runtime:
        store = await runtime.spawn(RedisBackend(url, ssl_ca_certs=str(cert)))
        await store.put("k", {"v": 1})
        assert await store.get("k") == {"v": 1}
        with pytest.raises(StoreSetupError):  # the server's certificate is not signed by a CA we trust
            await runtime.spawn(RedisBackend(url), name="untrusted")


async def test_rediss_urls_open_through_kvrt_open(tls_server: tuple[RedisProcess, int, Path]) -> None:
    _, tls_port, cert = tls_server
    with kvrt.Runtime.detached() as runtime:
        store = runtime.open(f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}")
        await store.put("k", {"v": "over tls"})
        assert await store.get("k") == {"v": "over tls"}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the reference's RedisStore runs on asyncio only
@pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")  # the reference's call
async def test_kvrt_and_the_reference_read_each_others_data(server: RedisTarget) -> None:
    reference = redis_store.RedisStore(url=server.url)
    await reference.put("from-reference", {"v": 1}, collection="users")
    await reference.put("brief", {"v": 2}, collection="users", ttl=100)
    async with Runtime() as runtime:
        store: Any = await runtime.spawn(RedisBackend(server.url))
        assert await store.get("from-reference", collection="users") == {"v": 1}
        assert_ttl(await store.ttl("brief", collection="users"), {"v": 2}, 100)
        await store.put_many(["from-kvrt", "plain"], [{"v": 3}, {"v": 4}], collection="users", ttl=100)
        assert sorted(await store.keys("users")) == ["brief", "from-kvrt", "from-reference", "plain"]
    try:
        assert await reference.get("from-kvrt", collection="users") == {"v": 3}
        assert_ttl(await reference.ttl("plain", collection="users"), {"v": 4}, 100, slack=2)
    finally:
        await reference.close()


async def test_a_server_error_reaches_the_caller_as_a_kvrt_error(server: RedisTarget) -> None:
    with raw(server) as client:
        client.config_set("maxmemory", 1)  # with noeviction, every write is refused: OOM
    try:
        async with Runtime() as runtime:
            store = await runtime.spawn(RedisBackend(server.url))
            with pytest.raises(KeyValueStoreError, match="OutOfMemoryError") as refused:
                await store.put("k", {"v": 1})
            assert isinstance(refused.value.__cause__, redis.exceptions.ResponseError)
            with pytest.raises(KeyValueStoreError, match="OutOfMemoryError"):
                await store.put_many(["a", "b", "c"], [{"v": 1}] * 3, ttl=60.0)  # a pipeline of three SET PX
            with raw(server) as client:
                client.config_set("maxmemory", 0)
            await store.put("k", {"v": 2})  # refused writes did not break the worker or put replies out of step
            assert await store.get("k") == {"v": 2}
            assert await store.get_many(["a", "b", "c", "k"]) == [None, None, None, {"v": 2}]
    finally:
        with raw(server) as client:
            client.config_set("maxmemory", 0)


def test_lost_connections_and_failovers_are_transient_and_a_refused_login_is_not() -> None:
    backend = RedisBackend("redis://127.0.0.1:1/0")
    exceptions = redis.exceptions
    for transient in [
        exceptions.ConnectionError("reset"),
        exceptions.TimeoutError("timed out"),
        exceptions.BusyLoadingError("loading"),
        exceptions.ClusterDownError("CLUSTERDOWN"),
        exceptions.TryAgainError("TRYAGAIN"),
        exceptions.ReadOnlyError("READONLY"),
        exceptions.MovedError("3999 127.0.0.1:6381"),
        exceptions.SlotNotCoveredError("slot 3999"),
    ]:
        assert backend.is_transient(transient), transient
    for permanent in [
        exceptions.AuthenticationError("WRONGPASS"),
        exceptions.ResponseError("WRONGTYPE"),
        exceptions.DataError("bad"),
    ]:
        assert not backend.is_transient(permanent), permanent


async def test_a_key_of_another_redis_type_reads_as_missing(server: RedisTarget) -> None:
    with raw(server) as client:
        client.rpush(compound_key("default_collection", "listy"), "x")
    async with Runtime() as runtime:
        store = await runtime.spawn(RedisBackend(server.url))
        await store.put("fine", {"v": 1})
        assert await store.get("listy") is None
        assert await store.get_many(["listy", "fine"]) == [None, {"v": 1}]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the test drives redis-py's connections itself
async def test_a_held_connection_cancelled_midway_is_never_out_of_step(server: RedisTarget) -> None:
    client = redis.asyncio.Redis.from_url(server.url)
    held = HeldConnections(client.connection_pool)
    try:
        with anyio.move_on_after(0.2) as waited:
            await held.execute("BLPOP", "nothing", 5)  # cancelled while reading the reply
        assert waited.cancelled_caught
        await held.execute("RPUSH", "nothing", "late")
        assert await held.execute("PING") in (b"PONG", True), "the next command reads its own reply"
        assert await held.pipeline([("LPOP", "nothing"), ("PING",)]) == [b"late", b"PONG"]
    finally:
        await held.release()
        await client.aclose()


async def test_listing_and_destroying_need_no_connection_beyond_the_pool(server: RedisTarget) -> None:
    async with Runtime() as runtime:
        store: Any = await runtime.spawn(RedisBackend(server.url, pool_size=1))
        await store.put_many(["a", "b"], [{"v": 1}, {"v": 2}], collection="one")
        assert sorted(await store.keys("one")) == ["a", "b"]
        assert await store.collections() == ["one"]
        assert await store.destroy_collection("one") is True
        assert await store.get("a", collection="one") is None
        assert runtime.stats()["redis"].restarts == 0, "a scan took no connection the worker did not hold"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the test drives redis-py's connections itself
async def test_a_held_connection_goes_back_only_when_its_call_ends(server: RedisTarget) -> None:
    client = redis.asyncio.Redis.from_url(server.url)
    held = HeldConnections(client.connection_pool)
    replies: list[Any] = []
    try:
        async with anyio.create_task_group() as group:

            async def blocked_pop() -> None:
                replies.append(await held.execute("BLPOP", "queue", 5))

            group.start_soon(blocked_pop)
            with raw(server) as watcher:
                await eventually(lambda: watcher.info("clients")["blocked_clients"] == 1)
            await held.release()  # the owner closes while the call is out
            assert await client.ping() is True, "the owner's client never gets the connection in use"
            await client.rpush("queue", "item")
        assert replies == [[b"queue", b"item"]]
        assert await client.ping() is True
    finally:
        await client.aclose()


async def _restart_by_client_kill(store: Any, server: RedisTarget, times: int) -> None:
    """Restart the worker ``times`` times: kill its connections, then make a call that needs new ones."""
    with raw(server) as admin:
        for kill in range(times):
            await store.put(f"k{kill}", {"kill": kill})
            assert await anyio.to_thread.run_sync(lambda: admin.client_kill_filter(_type="normal", skipme=True))
            await store.put(f"k{kill}", {"kill": kill})  # crashes, and is retried after the reconnect


@pytest.mark.parametrize("owned", [True, False], ids=["owned client", "passed-in client"])
async def test_20_restarts_close_cleanly_and_keep_the_owners_pool_as_it_was(
    server: RedisTarget, owned: bool, anyio_backend: str
) -> None:
    """Under trio the backend lives on an asyncio thread: its close must still work there, every time."""
    client = None if owned else redis.asyncio.Redis.from_url(server.url, max_connections=8)
    backend = RedisBackend(server.url) if owned else RedisBackend(client=client)
    with structlog.testing.capture_logs() as logs:
        async with Runtime(restart=RestartPolicy(max_restarts=100, backoff_initial=0.001, backoff_max=0.01)) as runtime:
            store = await runtime.spawn(backend, name="redis")
            await _restart_by_client_kill(store, server, 20)
            assert runtime.stats()["redis"].restarts == 20
            assert await store.get("k19") == {"kill": 19}
    failures = [entry for entry in logs if entry["event"] in ("worker.close_failed", "worker.close_timed_out")]
    assert failures == []
    if client is not None:
        pool = client.connection_pool
        assert len(pool._in_use_connections) == 0, "every connection kvrt took went back"
        assert len(pool._available_connections) <= 8
        if anyio_backend == "asyncio":
            await client.aclose()

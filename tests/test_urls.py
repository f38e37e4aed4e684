"""One URL parser for every entry point: each scheme opens the backend it names, on a real server."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog.testing

import kvrt
from kvrt.backends.disk import DiskBackend
from kvrt.backends.dynamodb import DynamoDBBackend
from kvrt.backends.memory import MemoryBackend
from kvrt.backends.mongodb import MongoDBBackend
from kvrt.backends.multi_disk import MultiDiskBackend
from kvrt.backends.null import NullBackend
from kvrt.backends.redis import RedisBackend
from kvrt.backends.s3 import S3Backend
from kvrt.errors import KeyValueError
from kvrt.testing.servers import AwsTarget, MongoTarget, RedisTarget
from kvrt.urls import SCHEMES, parse_url, redacted

pytestmark = pytest.mark.anyio


async def _round_trip(url: str, **options: Any) -> kvrt.detached.DetachedHandle:
    """Open ``url`` on a detached runtime of its own, put and get one entry, and close it."""
    with kvrt.Runtime.detached() as runtime:
        handle = runtime.open(url, **options)
        await handle.put("k", {"from": url.split(":")[0]})
        assert await handle.get("k") == {"from": url.split(":")[0]}
        return handle


async def test_memory_urls_take_the_bound() -> None:
    backend, spawn = parse_url("memory://?max_entries_per_collection=2&request_timeout=1.5&name=sessions")
    assert isinstance(backend, MemoryBackend)
    assert backend.max_entries_per_collection == 2
    assert spawn == {"request_timeout": 1.5, "name": "sessions"}
    with kvrt.Runtime.detached() as runtime:
        handle = runtime.open("memory://?max_entries_per_collection=2")
        await handle.put_many(["a", "b", "c"], [{"v": 1}, {"v": 2}, {"v": 3}])
        assert await handle.get_many(["a", "b", "c"]) == [None, {"v": 2}, {"v": 3}]


async def test_disk_urls_name_absolute_and_relative_directories(tmp_path: Path) -> None:
    backend, _ = parse_url(f"disk://{tmp_path}/cache?size_limit=1000000")
    assert isinstance(backend, DiskBackend)
    assert backend.directory == tmp_path / "cache"
    await _round_trip(f"disk://{tmp_path}/cache")
    assert (tmp_path / "cache" / "cache.db").exists()
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        relative, _ = parse_url("disk://relative/dir")
        assert isinstance(relative, DiskBackend)
        assert relative.directory == Path("relative/dir")
        await _round_trip("disk://relative/dir")
        assert (tmp_path / "relative" / "dir" / "cache.db").exists()
    finally:
        os.chdir(previous)


async def test_multidisk_urls_keep_a_directory_per_collection(tmp_path: Path) -> None:
    backend, _ = parse_url(f"multidisk://{tmp_path}/base")
    assert isinstance(backend, MultiDiskBackend)
    await _round_trip(f"multidisk://{tmp_path}/base")
    assert (tmp_path / "base" / "default_collection").is_dir()


async def test_null_urls_store_nothing() -> None:
    backend, _ = parse_url("null://")
    assert isinstance(backend, NullBackend)
    with kvrt.Runtime.detached() as runtime:
        handle = runtime.open("null://")
        await handle.put("k", {"v": 1})
        assert await handle.get("k") is None


async def test_redis_urls(redis_server: RedisTarget) -> None:
    redis_server.flush()
    backend, _ = parse_url(redis_server.url + "?pool_size=2&request_timeout=2")
    assert isinstance(backend, RedisBackend)
    await _round_trip(redis_server.url)
    with redis.Redis.from_url(redis_server.url) as raw:
        assert raw.exists("default_collection::k")


async def test_valkey_urls(valkey_server: RedisTarget) -> None:
    valkey_server.flush()
    url = valkey_server.url.replace("redis://", "valkey://")
    backend, _ = parse_url(url)
    assert isinstance(backend, RedisBackend)
    assert backend.url is not None
    assert backend.url.startswith("redis://")
    await _round_trip(url)
    with redis.Redis.from_url(valkey_server.url) as raw:
        assert raw.exists("default_collection::k")


async def test_redis_cluster_urls(redis_cluster_server: RedisTarget) -> None:
    redis_cluster_server.flush()
    url = redis_cluster_server.url.replace("redis://", "redis+cluster://")
    backend, _ = parse_url(url)
    assert isinstance(backend, RedisBackend)
    assert backend._cluster
    await _round_trip(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://host/db", "cannot open mysql:// URLs; known schemes: memory://, disk://"),
        ("no-scheme-here", "no scheme"),
        ("memory://?max_entries_per_collection=lots", "'max_entries_per_collection' must be a positive whole number"),
        ("memory://?colour=blue", "memory:// URLs take no parameter colour"),
        ("disk://", "disk:// URLs name a directory"),
        ("disk:///tmp/x?eviction_policy=random", "'eviction_policy' must be a diskcache eviction policy"),
        ("memory://?request_timeout=-1", "'request_timeout' must be a positive number of seconds"),
        ("redis://localhost?pool_size=0", "'pool_size' must be a positive whole number"),
    ],
)
def test_bad_urls_are_value_errors_that_say_why(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        kvrt.open(url, runtime=kvrt.Runtime.detached())


def test_every_scheme_is_listed_when_one_is_unknown() -> None:
    with pytest.raises(ValueError, match="known schemes") as raised:
        parse_url("nosuch://x")
    for scheme in ("memory", "disk", "multidisk", "redis", "rediss", "redis+cluster", "valkey", "null"):
        assert f"{scheme}://" in str(raised.value)
    assert set(SCHEMES) >= {
        "memory",
        "disk",
        "multidisk",
        "redis",
        "rediss",
        "redis+cluster",
        "valkey",
        "null",
        "s3",
        "dynamodb",
        "mongodb",
        "mongodb+srv",
    }


def test_redacted_hides_the_password_only() -> None:
    assert redacted("redis://user:hunter2@host:6379/0") == "redis://user:***@host:6379/0"
    assert redacted("redis://host:6379/0") == "redis://host:6379/0"
    assert redacted("disk:///var/cache/app") == "disk:///var/cache/app"  # as typed: no empty // dropped
    assert redacted("memory://") == "memory://"
    assert redacted("mongodb://app:hunter2@h1:1,h2:2/admin?tls=true") == "mongodb://app:***@h1:1,h2:2/admin?tls=true"
    assert (
        redacted("postgresql://u@h/db?password=hunter2&sslmode=require")
        == "postgresql://u@h/db?password=***&sslmode=require"
    )


async def test_mongodb_urls_name_the_database_and_pass_the_rest_to_pymongo(mongodb: MongoTarget, database: str) -> None:
    backend, spawn = parse_url("mongodb://h1:1,h2:2/admin?database=app&replicaSet=rs0&name=sessions")
    assert isinstance(backend, MongoDBBackend)
    assert (backend.database, backend._url) == ("app", "mongodb://h1:1,h2:2/admin?replicaSet=rs0")
    assert spawn == {"name": "sessions"}
    separator = "&" if "?" in mongodb.url else "?"
    await _round_trip(f"{mongodb.url}{separator}database={database}")


async def test_a_password_in_a_url_appears_nowhere(redis_server: RedisTarget) -> None:
    host, port = redis_server.nodes[0]
    with redis.Redis(host=host, port=port) as admin:
        admin.acl_setuser("kvrt-url", enabled=True, passwords=["+pw-s3cr3t-1"], keys=["*"], commands=["+@all"])
    shown: list[str] = []
    try:
        with structlog.testing.capture_logs() as logs, kvrt.Runtime.detached() as runtime:
            good = runtime.open(f"redis://kvrt-url:pw-s3cr3t-1@{host}:{port}/0", name="good")
            await good.put("k", {"v": 1})
            bad = runtime.open(f"redis://kvrt-url:pw-wrong-2@{host}:{port}/0", name="bad")
            for _ in range(2):
                with pytest.raises(KeyValueError) as refused:
                    await bad.get("k")
                error: BaseException | None = refused.value
                while error is not None:
                    shown += [str(error), repr(error)]
                    error = error.__cause__ or error.__context__
            shown += [repr(good), repr(bad), repr(good._remote.backend), repr(runtime.stats())]
        shown += [repr(entry) for entry in logs]
    finally:
        with redis.Redis(host=host, port=port) as admin:
            admin.acl_deluser("kvrt-url")
    text = "\n".join(shown)
    assert "StoreSetupError" in text, "the refused login was seen"
    assert "pw-s3cr3t-1" not in text
    assert "pw-wrong-2" not in text


async def test_s3_and_dynamodb_urls_name_the_bucket_prefix_table_and_endpoint(
    aws: AwsTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # botocore's standard chain
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    endpoint = aws.endpoint_url
    s3, _ = parse_url(f"s3://urls-bucket/app/cache?endpoint_url={endpoint}&region=eu-west-1&pool_size=4")
    assert isinstance(s3, S3Backend)
    assert (s3.bucket, s3.prefix) == ("urls-bucket", "app/cache/")
    assert (s3._aws.endpoint_url, s3._aws.region_name, s3._aws.pool_size) == (endpoint, "eu-west-1", 4)
    dynamodb, spawn = parse_url(f"dynamodb://UrlsTable?endpoint_url={endpoint}&create_table=true&name=sessions")
    assert isinstance(dynamodb, DynamoDBBackend)
    assert (dynamodb.table, dynamodb._create_table, spawn) == ("UrlsTable", True, {"name": "sessions"})
    await _round_trip(f"s3://urls-bucket/app?endpoint_url={endpoint}&region=us-east-1&create_bucket=1")
    await _round_trip(f"dynamodb://UrlsTable?endpoint_url={endpoint}&region=us-east-1&create_table=yes")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://", "name a bucket"),
        ("dynamodb://table/more", "name a table"),
        ("s3://AKIA:topsecret@bucket", "take no credentials"),
        ("dynamodb://table?create_table=maybe", "must be true or false"),
        ("s3://bucket?colour=red", "take no parameter colour"),
    ],
)
def test_bad_aws_urls_are_refused_without_showing_secrets(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        parse_url(url)
    assert "topsecret" not in str(raised.value)


async def test_embedded_store_urls(tmp_path: Path) -> None:
    from kvrt.backends.chdb import ChDBBackend
    from kvrt.backends.duckdb import DuckDBBackend
    from kvrt.backends.filetree import FileTreeBackend
    from kvrt.backends.rocksdb import RocksDBBackend
    from kvrt.backends.simple import SimpleBackend

    backend, _ = parse_url("simple://?max_entries=2")
    assert isinstance(backend, SimpleBackend)
    assert backend.max_entries == 2
    await _round_trip("simple://")
    rocksdb, _ = parse_url(f"rocksdb://{tmp_path}/rocks?sync=true")
    assert isinstance(rocksdb, RocksDBBackend)
    await _round_trip(f"rocksdb://{tmp_path}/rocks?sync=true")
    assert (tmp_path / "rocks" / "CURRENT").exists()
    chdb, _ = parse_url(f"chdb://{tmp_path}/clickhouse?table=entries")
    assert isinstance(chdb, ChDBBackend)
    await _round_trip(f"chdb://{tmp_path}/clickhouse?table=entries")
    assert (tmp_path / "clickhouse").is_dir()
    duckdb, _ = parse_url(f"duckdb://{tmp_path}/kv.duckdb?table=entries")
    assert isinstance(duckdb, DuckDBBackend)
    await _round_trip(f"duckdb://{tmp_path}/kv.duckdb?table=entries")
    assert (tmp_path / "kv.duckdb").is_file()
    await _round_trip("duckdb://")
    tree, _ = parse_url(f"filetree://{tmp_path}/tree")
    assert isinstance(tree, FileTreeBackend)
    await _round_trip(f"filetree://{tmp_path}/tree")
    assert (tmp_path / "tree" / "default_collection" / "k.json").is_file()
    with pytest.raises(ValueError, match="sync"):
        parse_url(f"rocksdb://{tmp_path}/rocks?sync=maybe")
    with pytest.raises(ValueError, match="max_entries"):
        parse_url("simple://?max_entries=0")


async def test_keyring_urls_name_the_service(tmp_path: Path) -> None:
    import keyring
    from keyrings.alt.file import PlaintextKeyring

    from kvrt.backends.keyring import KeyringBackend

    backend, _ = parse_url("keyring://my%20app")
    assert isinstance(backend, KeyringBackend)
    ring = PlaintextKeyring()
    ring.file_path = str(tmp_path / "keyring.cfg")
    previous = keyring.get_keyring()
    keyring.set_keyring(ring)
    try:
        await _round_trip("keyring://my%20app")
        assert ring.get_password("my app", "default_collection::k") is not None
        await _round_trip("keyring://")
        assert ring.get_password("py-key-value", "default_collection::k") is not None
    finally:
        keyring.set_keyring(previous)

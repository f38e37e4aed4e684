"""The store commands over URLs: JSON on stdout, one line on stderr, exit statuses, and no password ever shown."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import diskcache
import pytest
import redis

from kvrt.cli.target import opened
from kvrt.testing.servers import RedisTarget, free_port

SECRET = "s3cret-pw"


def command(args: tuple[str, ...], prelude: str | None) -> list[str]:
    if prelude is None:
        return [sys.executable, "-m", "kvrt", *args]
    return [sys.executable, "-c", f"{prelude}\nimport sys\nfrom kvrt.cli import main\nsys.exit(main({list(args)!r}))"]


def kvrt(*args: str, stdin: str | None = None, prelude: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``kvrt args`` (after ``prelude``, in the same interpreter, if given); stdin is never a terminal."""
    return subprocess.run(
        command(args, prelude),
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


def kvrt_at_once(*calls: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Run independent ``kvrt`` commands side by side (each costs its interpreter's start); return them in order."""
    running = [
        subprocess.Popen(
            command(args, None),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
        )
        for args in calls
    ]
    results = []
    for process in running:
        with process:
            stdout, stderr = process.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def documents(result: subprocess.CompletedProcess[str], status: int = 0) -> list[Any]:
    """Return the JSON documents ``result`` printed, one a line, after checking its status and its silence."""
    assert (result.returncode, result.stderr) == (status, ""), result
    return [json.loads(line) for line in result.stdout.splitlines()]


def error(result: subprocess.CompletedProcess[str], status: int, name: str) -> str:
    """Return the one stderr line of a failed command, after checking its status, the error's name, no stdout."""
    assert result.returncode == status, result
    assert result.stdout == "", result
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"kvrt: {name}: "), line
    return line


def seed(url: str, collection: str, values: dict[str, dict[str, Any]]) -> None:
    async def put() -> None:
        async with opened(url) as handle:
            for key, value in values.items():
                await handle.put(key, value, collection=collection)

    anyio.run(put)


@pytest.fixture
def disk_url(tmp_path: Path) -> str:
    return f"disk://{tmp_path / 'store'}"


@pytest.fixture
def closed_port() -> int:
    return free_port()


def test_memory_commands_whose_result_shows_within_one_call() -> None:
    """A memory store lives in one process: each command here sees only what it did itself."""
    *pings, missing, no_ttl, listed, put = kvrt_at_once(
        ("ping", "memory://", "--loop", "asyncio"),
        ("ping", "memory://", "--loop", "trio"),
        ("get", "memory://", "nobody", "-c", "users"),
        ("ttl", "memory://", "nobody", "--loop", "trio"),
        ("keys", "memory://"),
        ("put", "memory://", "k", '{"n": 1}', "--ttl", "5"),
    )
    for ping in pings:
        (answer,) = documents(ping)
        assert answer.keys() == {"reached", "url", "seconds"}
        assert answer["reached"] is True
        assert answer["url"] == "memory://"
        assert 0 <= answer["seconds"] < 5
    line = error(missing, 1, "MissingKeyError")
    assert "collection: users" in line
    assert "key: nobody" in line
    error(no_ttl, 1, "MissingKeyError")
    assert documents(listed) == []
    assert documents(put) == [{"stored": True, "key": "k", "ttl": 5.0}]


@pytest.fixture(params=["disk-trio", "redis-asyncio"])
def store(request: pytest.FixtureRequest, disk_url: str) -> tuple[str, str]:
    """A store URL with data only this test put there, and the loop to run its commands on."""
    if request.param == "disk-trio":
        return disk_url, "trio"
    server: RedisTarget = request.getfixturevalue("redis_server")
    server.flush()
    return server.url, "asyncio"


def test_round_trip(store: tuple[str, str]) -> None:
    url, loop = store

    def on_store(*args: str) -> tuple[str, ...]:
        return (args[0], url, *args[1:], "--loop", loop)

    alice = {"name": "Alice", "city": "Zürich", "tags": ["a", 1, None, 2.5, True]}
    assert documents(kvrt(*on_store("put", "alice", json.dumps(alice), "-c", "users"))) == [
        {"stored": True, "key": "alice", "ttl": None}
    ]
    started = time.monotonic()
    put = kvrt(*on_store("put", "zoë", "-", "-c", "users", "--ttl", "60"), stdin='{"name": "Zoë"}\n')
    assert documents(put) == [{"stored": True, "key": "zoë", "ttl": 60.0}]
    assert documents(kvrt(*on_store("put", "k1", '{"n": 1}'))) == [{"stored": True, "key": "k1", "ttl": None}]

    got, remaining, lasting, listed, limited, collections = kvrt_at_once(
        on_store("get", "alice", "-c", "users"),
        on_store("ttl", "zoë", "-c", "users"),
        on_store("ttl", "alice", "-c", "users"),
        on_store("keys", "-c", "users"),
        on_store("keys", "-c", "users", "--limit", "1"),
        on_store("collections"),
    )
    assert documents(got) == [alice]
    assert "Zürich" in got.stdout  # non-ASCII kept as it is, not escaped
    (value_and_ttl,) = documents(remaining)
    assert value_and_ttl["value"] == {"name": "Zoë"}
    assert 60 - (time.monotonic() - started) <= value_and_ttl["ttl"] <= 60
    assert documents(lasting) == [{"value": alice, "ttl": None}]
    assert sorted(documents(listed)) == ["alice", "zoë"]
    assert listed.stdout.count("\n") == 2
    assert len(documents(limited)) == 1
    assert sorted(documents(collections)) == ["default_collection", "users"]

    assert documents(kvrt(*on_store("delete", "alice", "-c", "users"))) == [{"deleted": True, "key": "alice"}]
    error(kvrt(*on_store("delete", "alice", "-c", "users")), 1, "MissingKeyError")

    destroyed = kvrt(*on_store("destroy-collection", "users", "--yes"))
    assert documents(destroyed) == [{"destroyed": True, "collection": "users"}]
    assert documents(kvrt(*on_store("collections"))) == ["default_collection"]


def test_cull_removes_expired_entries_from_disk(disk_url: str) -> None:
    documents(kvrt("put", disk_url, "brief", '{"n": 1}', "--ttl", "0.2"))
    expired = time.monotonic() + 0.2
    directory = disk_url.removeprefix("disk://")
    with diskcache.Cache(directory) as cache:
        assert len(cache) == 1  # stored, and expired entries stay until culled
    time.sleep(max(expired - time.monotonic(), 0))  # the TTL itself must pass
    assert documents(kvrt("cull", disk_url, "--loop", "trio")) == [{"culled": True}]
    with diskcache.Cache(directory) as cache:
        assert len(cache) == 0


def test_redis_has_no_cull(redis_server: RedisTarget) -> None:
    line = error(kvrt("cull", redis_server.url), 2, "UnsupportedCommandError")
    assert "redis backend cannot cull" in line
    assert "expires entries itself" in line


def test_listing_a_backend_that_cannot_list_is_bad_usage() -> None:
    line = error(kvrt("keys", "null://"), 2, "UnsupportedCommandError")
    assert line == "kvrt: UnsupportedCommandError: the null backend cannot list keys"


def terminal(*args: str, answer: str) -> subprocess.CompletedProcess[str]:
    """Run ``kvrt args`` with a terminal as stdin, answering its prompt with ``answer``."""
    leader, follower = pty.openpty()
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "kvrt", *args],
            stdin=follower,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
        ) as process:
            os.close(follower)
            follower = -1
            os.write(leader, f"{answer}\n".encode())
            stdout, stderr = process.communicate(timeout=60)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)


def test_destroy_collection_asks_on_the_terminal(disk_url: str) -> None:
    seed(disk_url, "users", {"alice": {"name": "Alice"}})
    line = error(kvrt("destroy-collection", disk_url, "users"), 2, "NotConfirmedError")
    assert line == "kvrt: NotConfirmedError: Nothing destroyed: confirm with --yes (stdin is not a terminal to ask on)."
    declined = terminal("destroy-collection", disk_url, "users", answer="n")
    assert (declined.returncode, declined.stdout) == (2, ""), declined
    question, refusal = declined.stderr.split("[y/N] ")
    assert question == f"Destroy every entry of collection 'users' in {disk_url}? "
    assert refusal == "kvrt: NotConfirmedError: Nothing destroyed: not confirmed.\n"

    confirmed = terminal("destroy-collection", disk_url, "users", answer="y")
    assert confirmed.returncode == 0, confirmed
    assert json.loads(confirmed.stdout) == {"destroyed": True, "collection": "users"}


def test_a_value_must_be_a_json_object(closed_port: int) -> None:
    unreachable = f"redis://127.0.0.1:{closed_port}/0"  # refused before the store is opened
    line = error(kvrt("put", unreachable, "k", "[1, 2]"), 2, "SerializationError")
    assert "must be a JSON object" in line
    assert "not an array" in line
    line = error(kvrt("put", unreachable, "k", "-", stdin="{'single': 'quotes'}"), 2, "SerializationError")
    assert "The value is not JSON" in line


def test_a_bad_url_is_bad_usage() -> None:
    line = error(kvrt("get", f"nosuch://user:{SECRET}@host/", "k"), 2, "ValueError")
    assert "kvrt cannot open nosuch:// URLs; known schemes: memory://" in line
    assert SECRET not in line


def test_a_missing_driver_names_its_extra(redis_server: RedisTarget) -> None:
    result = kvrt("ping", redis_server.url, prelude="import sys; sys.modules['redis'] = None")
    line = error(result, 2, "MissingExtraError")
    assert "needs the 'redis' extra" in line
    assert "pip install 'kvrt[redis]'" in line


def test_an_unreachable_server_never_shows_a_password(closed_port: int) -> None:
    plain = f"redis://127.0.0.1:{closed_port}/0"
    in_userinfo = f"redis://:{SECRET}@127.0.0.1:{closed_port}/0"
    in_query = f"{plain}?password={SECRET}"
    for result in kvrt_at_once(("get", plain, "k"), ("get", in_userinfo, "k", "--loop", "trio"), ("ping", in_query)):
        line = error(result, 3, "StoreSetupError")
        assert "Could not open the backend" in line
        assert SECRET not in result.stdout + result.stderr


@pytest.fixture
def redis_user(redis_server: RedisTarget) -> Iterator[tuple[str, int]]:
    """A user with the password ``SECRET`` on the test server, for URLs that log in; host and port."""
    host, port = redis_server.nodes[0]
    with redis.Redis(host=host, port=port) as client:
        client.acl_setuser("kvrt-cli", enabled=True, passwords=[f"+{SECRET}"], keys=["*"], commands=["+@all"])
        yield host, port
        client.acl_deluser("kvrt-cli")


def test_a_password_that_logs_in_is_never_shown(redis_user: tuple[str, int]) -> None:
    host, port = redis_user
    in_userinfo = f"redis://kvrt-cli:{SECRET}@{host}:{port}/0"
    in_query = f"redis://kvrt-cli@{host}:{port}/0?password={SECRET}"
    assert documents(kvrt("put", in_query, "k", '{"n": 1}')) == [{"stored": True, "key": "k", "ttl": None}]
    *results, wrong = kvrt_at_once(
        ("ping", in_userinfo), ("get", in_userinfo, "k"), ("ping", in_query.replace(SECRET, SECRET[::-1]))
    )
    for result in [*results, wrong]:
        assert SECRET not in result.stdout + result.stderr
        assert SECRET[::-1] not in result.stdout + result.stderr
    (ping,), (value,) = (documents(result) for result in results)
    assert ping["url"] == f"redis://kvrt-cli:***@{host}:{port}/0"
    assert value == {"n": 1}
    error(wrong, 3, "StoreSetupError")

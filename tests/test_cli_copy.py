"""``kvrt copy`` as a user runs it: 100,000 entries each way between disk and Redis, TTLs kept, memory bounded,
Ctrl-C stopping after a batch and a re-run completing the copy; refusals and failures as exit statuses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from kvrt import Runtime
from kvrt.protocol import AsyncKeyValue, collections_of, keys_of
from kvrt.testing.servers import RedisTarget, free_port
from kvrt.urls import parse_url

ENTRIES = 100_000
COLLECTIONS = {"users": (60_000, None), "sessions": (25_000, 3_000.0), "tokens": (15_000, 600.0)}
"""Each collection's entry count and TTL: together 100,000 entries, 40% of them with a TTL."""
MEMORY_BOUND = 100 * 2**20


def kvrt(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvrt", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def redis_db(server: RedisTarget, db: int) -> str:
    host, port = server.nodes[0]
    with redis.Redis(host=host, port=port, db=db) as client:
        client.flushdb()
    return f"redis://{host}:{port}/{db}"


def dbsize(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        return int(client.dbsize())


def value(collection: str, index: int) -> dict[str, Any]:
    return {"collection": collection, "i": index, "text": f"value {index} of {collection}", "tags": ["a", "b"]}


Written = dict[str, list[tuple[float, float]]]
"""For each collection, the wall-clock window each chunk of 1,000 was written in (its entries' expiry follows)."""


async def _fill(url: str) -> Written:
    backend, options = parse_url(url)
    written: Written = {}
    async with Runtime() as runtime:
        store = await runtime.spawn(backend, **options)
        for collection, (count, ttl) in COLLECTIONS.items():
            windows = written[collection] = []
            for start in range(0, count, 1_000):
                keys = [f"{collection}:{index}" for index in range(start, min(start + 1_000, count))]
                values = [value(collection, index) for index in range(start, start + len(keys))]
                before = time.time()
                await store.put_many(keys, values, collection=collection, ttl=ttl)
                windows.append((before, time.time()))
    return written


async def _check_copied(url: str, written: Written, *, listed: bool) -> int:
    """Check every entry written is at ``url`` with its value and its expiry, within 1 s, never later.

    ``listed``: also check the store lists exactly the keys written (Redis lists 100,000 keys in a blink).
    """
    backend, _ = parse_url(url)
    checked = 0
    async with Runtime() as runtime:
        store: AsyncKeyValue = await runtime.spawn(backend, name="copy")
        if listed:
            assert sorted(await collections_of(store).collections()) == sorted(COLLECTIONS)
        for collection, (count, ttl) in COLLECTIONS.items():
            keys = [f"{collection}:{index}" for index in range(count)]
            if listed:
                assert sorted(await keys_of(store).keys(collection)) == sorted(keys)
            for start in range(0, count, 1_000):
                before = time.time()
                found = await store.ttl_many(keys[start : start + 1_000], collection=collection)
                after = time.time()
                for index, (copied, left) in enumerate(found, start):
                    assert copied == value(collection, index), index
                    if ttl is None:
                        assert left is None, index
                        continue
                    assert left is not None, index
                    written_from, written_until = written[collection][index // 1_000]
                    # the copy expires in [before, after] + left, the source in [written_from, written_until] + ttl
                    assert before + left > written_until + ttl - 1, (collection, index, left)
                    assert after + left < written_from + ttl + 1, (collection, index, left)
                    assert before + left < written_until + ttl + 0.01, (collection, index, left)  # not later, either
                checked += len(found)
    return checked


def summary_of(result: subprocess.CompletedProcess[str] | tuple[str, str]) -> dict[str, Any]:
    stdout = result[0] if isinstance(result, tuple) else result.stdout
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    summary: dict[str, Any] = json.loads(lines[0])
    return summary


def assert_memory_bounded(summary: dict[str, Any]) -> None:
    process = summary["process"]
    grew = process["peak_rss"] - process["rss_at_start"]
    assert grew < MEMORY_BOUND, f"the copy's peak resident memory grew by {grew / 2**20:.1f} MB"


def test_disk_to_redis_interrupted_by_ctrl_c_then_completed_by_a_rerun(
    tmp_path: Path, redis_server: RedisTarget
) -> None:
    source = f"disk://{tmp_path / 'source'}"
    destination = redis_db(redis_server, 5)
    written = anyio.run(_fill, source)

    copying = subprocess.Popen(
        [sys.executable, "-m", "kvrt", "copy", source, destination, "--verbose"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while dbsize(destination) == 0:  # poll until a first batch has landed
            assert copying.poll() is None, "the copy ended before it could be interrupted"
            time.sleep(0.002)
        copying.send_signal(signal.SIGINT)
        out, err = copying.communicate(timeout=60)
    finally:
        copying.kill()
    assert copying.returncode == 130, err
    interrupted = summary_of((out, err))
    assert interrupted["interrupted"] is True
    assert 0 < interrupted["copied"] < ENTRIES
    assert dbsize(destination) == interrupted["copied"]  # it stopped after the batch in flight, all of it written
    assert "interrupted: run it again to complete the copy" in err

    rerun = kvrt("copy", source, destination, "--verbose")
    assert rerun.returncode == 0, rerun.stderr
    summary = summary_of(rerun)
    assert summary["source"] == source
    assert summary["destination"] == destination
    assert sorted(summary["collections"]) == sorted(COLLECTIONS)
    assert (summary["listed"], summary["copied"], summary["expired"], summary["failed"]) == (ENTRIES, ENTRIES, 0, 0)
    assert summary["interrupted"] is False
    assert summary["failures"] == []
    assert f"kvrt copy: {ENTRIES:,} of {ENTRIES:,} listed entries copied from {source} to {destination}" in rerun.stderr
    assert "entries/s" in rerun.stderr  # the progress bar's last state, as a pipe shows it
    assert_memory_bounded(summary)
    assert dbsize(destination) == ENTRIES
    assert anyio.run(partial(_check_copied, destination, written, listed=True)) == ENTRIES


def test_redis_to_disk_under_trio(tmp_path: Path, redis_server: RedisTarget) -> None:
    source = redis_db(redis_server, 6)
    destination = f"disk://{tmp_path / 'copy'}"
    written = anyio.run(_fill, source)
    result = kvrt("copy", source, destination, "--loop", "trio", "--verbose")
    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert (summary["listed"], summary["copied"], summary["expired"], summary["failed"]) == (ENTRIES, ENTRIES, 0, 0)
    assert_memory_bounded(summary)
    assert anyio.run(partial(_check_copied, destination, written, listed=False)) == ENTRIES


def test_only_the_collections_named(tmp_path: Path) -> None:
    source = f"disk://{tmp_path / 'source'}"
    destination = f"disk://{tmp_path / 'copy'}"

    async def fill() -> None:
        async with Runtime() as runtime:
            store = await runtime.spawn(parse_url(source)[0])
            for collection in ("a", "b", "c"):
                await store.put_many(["x", "y"], [{"v": 1}, {"v": 2}], collection=collection, ttl=100)

    anyio.run(fill)
    result = kvrt("copy", source, destination, "-c", "c", "a", "-c", "absent")
    assert result.returncode == 0, result.stderr
    summary = summary_of(result)
    assert summary["collections"] == ["c", "a", "absent"]
    assert summary["copied"] == 4
    assert "process" not in summary  # only with --verbose


@pytest.mark.parametrize(
    ("source", "destination", "error"),
    [
        ("null://", "memory://", "UnlistableSourceError: the source (null) cannot list its keys"),
        ("nosuch://here", "memory://", "ValueError: kvrt cannot open nosuch:// URLs"),
        ("memory://", "memory://", "ValueError: the source and the destination are the same URL"),
    ],
)
def test_what_cannot_be_copied_is_bad_usage(source: str, destination: str, error: str) -> None:
    result = kvrt("copy", source, destination)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(f"kvrt: {error}"), result.stderr


def test_an_unreachable_store_exits_3_and_its_password_never_shows() -> None:
    source = f"redis://:s3cret-word@127.0.0.1:{free_port()}/0?socket_connect_timeout=0.5"
    result = kvrt("copy", source, "memory://")
    assert result.returncode == 3, result.stderr
    assert "s3cret-word" not in result.stdout + result.stderr
    summary = summary_of(result)
    assert summary["source"].startswith("redis://:***@127.0.0.1:")
    assert summary["copied"] == 0
    assert result.stderr.splitlines()[-1].startswith("kvrt: "), result.stderr

"""Envelopes both ways: what the reference's wrappers wrote, kvrt's read, and the other way round, on disk and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from kvrt import Runtime
from kvrt.backends.disk import DiskBackend
from kvrt.backends.redis import RedisBackend
from kvrt.protocol import AsyncKeyValue
from kvrt.testing.conformance import assert_ttl
from kvrt.testing.servers import RedisTarget, reference_module
from kvrt.wrappers import (
    CompressionWrapper,
    FernetEncryptionWrapper,
    PrefixCollectionsWrapper,
    PrefixKeysWrapper,
    SingleCollectionWrapper,
)

disk_store = reference_module("key_value.aio.stores.disk")
redis_store = reference_module("key_value.aio.stores.redis")
theirs = {
    name: reference_module(f"key_value.aio.wrappers.{name}")
    for name in ("compression", "encryption", "prefix_keys", "prefix_collections", "single_collection")
}

pytestmark = pytest.mark.anyio

KEY = Fernet.generate_key()
VALUES: dict[str, dict[str, Any]] = {
    "small": {"name": "Alice", "tags": ["a", "b"]},
    "large": {"text": "kvrt and the reference " * 100, "n": 1.5},
    "unicode": {"greeting": "héllo 🎉", "none": None},
}

Wrap = Callable[[Any], Any]
PAIRS: dict[str, tuple[Wrap, Wrap]] = {
    "compression": (
        lambda store: theirs["compression"].CompressionWrapper(key_value=store, min_size_to_compress=100),
        lambda store: CompressionWrapper(key_value=store, min_size_to_compress=100),
    ),
    "fernet": (
        lambda store: theirs["encryption"].FernetEncryptionWrapper(key_value=store, fernet=Fernet(KEY)),
        lambda store: FernetEncryptionWrapper(key_value=store, fernet=Fernet(KEY)),
    ),
    "prefix keys": (
        lambda store: theirs["prefix_keys"].PrefixKeysWrapper(key_value=store, prefix="app"),
        lambda store: PrefixKeysWrapper(key_value=store, prefix="app"),
    ),
    "prefix collections": (
        lambda store: theirs["prefix_collections"].PrefixCollectionsWrapper(key_value=store, prefix="app"),
        lambda store: PrefixCollectionsWrapper(key_value=store, prefix="app"),
    ),
    "single collection": (
        lambda store: theirs["single_collection"].SingleCollectionWrapper(key_value=store, single_collection="one"),
        lambda store: SingleCollectionWrapper(key_value=store, single_collection="one"),
    ),
}


MEETINGS = pytest.mark.parametrize(
    ("anyio_backend", "kind"),
    [("asyncio", "disk"), ("trio", "disk"), ("asyncio", "redis")],  # the reference's RedisStore runs on asyncio only
    ids=["asyncio-disk", "trio-disk", "asyncio-redis"],
)


@pytest.fixture
def place(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> tuple[str, str]:
    """Where both libraries meet: a directory, or a flushed Redis server."""
    if kind == "disk":
        return "disk", str(tmp_path)
    server: RedisTarget = request.getfixturevalue("redis_server")
    server.flush()
    return "redis", server.url


@asynccontextmanager
async def reference_store(place: tuple[str, str]) -> AsyncIterator[AsyncKeyValue]:
    kind, where = place
    store = disk_store.DiskStore(directory=where) if kind == "disk" else redis_store.RedisStore(url=where)
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def kvrt_store(place: tuple[str, str]) -> AsyncIterator[AsyncKeyValue]:
    kind, where = place
    async with Runtime() as runtime:
        yield await runtime.spawn(DiskBackend(Path(where)) if kind == "disk" else RedisBackend(where))


@MEETINGS
@pytest.mark.parametrize("pair", PAIRS.values(), ids=PAIRS.keys())
@pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")  # the reference's own call
async def test_kvrt_reads_what_the_reference_wrapper_wrote(place: tuple[str, str], pair: tuple[Wrap, Wrap]) -> None:
    reference_wrap, kvrt_wrap = pair
    async with reference_store(place) as store:
        wrapped = reference_wrap(store)
        await wrapped.put_many(list(VALUES), list(VALUES.values()), collection="users")
        await wrapped.put("brief", {"v": 1}, collection="users", ttl=100)
    async with kvrt_store(place) as handle:
        ours = kvrt_wrap(handle)
        assert await ours.get_many(list(VALUES), collection="users") == list(VALUES.values())
        assert_ttl(await ours.ttl("brief", collection="users"), {"v": 1}, 100, slack=2)


@MEETINGS
@pytest.mark.parametrize("pair", PAIRS.values(), ids=PAIRS.keys())
@pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")
async def test_the_reference_wrapper_reads_what_kvrt_wrote(place: tuple[str, str], pair: tuple[Wrap, Wrap]) -> None:
    reference_wrap, kvrt_wrap = pair
    async with kvrt_store(place) as handle:
        ours = kvrt_wrap(handle)
        await ours.put_many(list(VALUES), list(VALUES.values()), collection="users")
        raw = await handle.get("large", collection="users")
    async with reference_store(place) as store:
        wrapped = reference_wrap(store)
        assert await wrapped.get_many(list(VALUES), collection="users") == list(VALUES.values())
    if pair is PAIRS["compression"] or pair is PAIRS["fernet"]:
        assert raw != VALUES["large"], "the envelope, not the value, is what is stored"


async def test_a_key_derived_from_material_and_salt_is_the_references(tmp_path: Path) -> None:
    place = ("disk", str(tmp_path))
    async with reference_store(place) as store:
        wrapper = theirs["encryption"].FernetEncryptionWrapper(key_value=store, source_material="s3cret", salt="pepper")
        await wrapper.put("k", {"v": "sealed"})
    async with kvrt_store(place) as handle:
        ours = FernetEncryptionWrapper(key_value=handle, source_material="s3cret", salt="pepper")
        assert await ours.get("k") == {"v": "sealed"}

"""Every wrapper over a memory handle and a Redis handle (real server), asyncio and trio, segments included."""

from __future__ import annotations

import base64
import gzip
import json
import logging
from typing import Any

import anyio
import pytest
import structlog
from cryptography.fernet import Fernet

import kvrt.wrappers
from kvrt import Runtime
from kvrt.backends.memory import MemoryBackend
from kvrt.errors import (
    CorruptedDataError,
    DecryptionError,
    DeserializationError,
    EntryTooLargeError,
    EntryTooSmallError,
    InvalidKeyError,
    InvalidTTLError,
    ReadOnlyError,
    SerializationError,
)
from kvrt.protocol import AsyncKeyValue, segments_of
from kvrt.testing.conformance import ListingStore, assert_ttl, listing
from kvrt.wrappers import (
    BaseWrapper,
    CollectionRoutingWrapper,
    CompressionWrapper,
    DefaultValueWrapper,
    FernetEncryptionWrapper,
    LimitSizeWrapper,
    LoggingWrapper,
    PassthroughCacheWrapper,
    PrefixCollectionsWrapper,
    PrefixKeysWrapper,
    ReadOnlyWrapper,
    RoutingWrapper,
    SingleCollectionWrapper,
    StatisticsWrapper,
    TTLClampWrapper,
)

pytestmark = pytest.mark.anyio

BIG = {"text": "kvrt " * 400}


@pytest.fixture
async def other(runtime: Runtime) -> ListingStore:
    """A second, separate memory handle (a near cache, another route)."""
    return listing(await runtime.spawn(MemoryBackend(), name="other"))


def keys_only(store: AsyncKeyValue) -> AsyncKeyValue:
    """``store`` seen through a wrapper that offers only ``keys`` and ``destroy_collection``."""
    return RoutingWrapper(lambda _: None, default_store=store)


def listed(store: Any) -> Any:
    """``store`` as something whose segments a test calls (the test checked they are offered)."""
    return store


# --- segments offered -------------------------------------------------------------------------


async def test_each_wrapper_offers_the_segments_it_can_translate(store: ListingStore, other: ListingStore) -> None:
    inner = segments_of(store)
    assert inner >= {"keys", "collections", "destroy", "destroy_collection"}
    passthrough: list[AsyncKeyValue] = [
        CompressionWrapper(key_value=store),
        FernetEncryptionWrapper(key_value=store, fernet=Fernet(Fernet.generate_key())),
        StatisticsWrapper(key_value=store),
        LoggingWrapper(key_value=store),
        LimitSizeWrapper(key_value=store, max_size=100),
        TTLClampWrapper(key_value=store, min_ttl=1, max_ttl=10),
        DefaultValueWrapper(key_value=store, default_value={}),
        ReadOnlyWrapper(key_value=store),
        PrefixKeysWrapper(key_value=store, prefix="p"),
        PrefixCollectionsWrapper(key_value=store, prefix="p"),
        SingleCollectionWrapper(key_value=store, single_collection="one"),
        CollectionRoutingWrapper(collection_map={"a": other}, default_store=store),
    ]
    for wrapper in passthrough:
        assert segments_of(wrapper) == inner, type(wrapper).__name__
    assert segments_of(RoutingWrapper(lambda _: other, default_store=store)) == {"keys", "destroy_collection"}
    cache = PassthroughCacheWrapper(primary_key_value=store, cache_key_value=keys_only(other))
    assert segments_of(cache) == inner - {"destroy"}  # a cache it could not clear would serve destroyed data


async def test_over_a_store_with_fewer_segments_a_wrapper_offers_fewer(store: ListingStore) -> None:
    narrow = keys_only(store)
    assert segments_of(narrow) == {"keys", "destroy_collection"}
    assert segments_of(CompressionWrapper(key_value=narrow)) == {"keys", "destroy_collection"}
    assert segments_of(PrefixKeysWrapper(key_value=narrow, prefix="p")) == {"keys", "destroy_collection"}
    assert segments_of(PrefixCollectionsWrapper(key_value=narrow, prefix="p")) == {"keys", "destroy_collection"}
    assert segments_of(SingleCollectionWrapper(key_value=narrow, single_collection="s")) == {
        "keys",
        "collections",
        "destroy",
        "destroy_collection",
    }
    assert segments_of(BaseWrapper(key_value=narrow)) == {"keys", "destroy_collection"}
    late = BaseWrapper()  # the reference's way: set key_value after; it then offers no segments
    late.key_value = store
    assert segments_of(late) == frozenset()
    assert not hasattr(late, "keys")
    assert await late.get("k") is None


async def test_wrappers_stack_and_keep_their_class(store: ListingStore) -> None:
    stack = StatisticsWrapper(
        key_value=PrefixCollectionsWrapper(key_value=CompressionWrapper(key_value=store), prefix="t")
    )
    assert isinstance(stack, StatisticsWrapper)
    assert type(stack).__name__ == "StatisticsWrapper"
    await stack.put("k", BIG, collection="c")
    assert await stack.get("k", collection="c") == BIG
    assert await listed(stack).keys("c") == ["k"]
    assert await listed(stack).collections() == ["c"]
    assert await store.get("k", collection="t__c") != BIG  # compressed under the prefixed name


# --- compression ------------------------------------------------------------------------------


async def test_compression_stores_the_reference_envelope_for_large_values_only(store: ListingStore) -> None:
    wrapper = CompressionWrapper(key_value=store, min_size_to_compress=1024)
    await wrapper.put_many(["big", "small"], [BIG, {"v": 1}])
    stored = await store.get("big")
    assert stored is not None
    assert stored["__compression_algorithm__"] == "gzip"
    assert stored["__compression_version__"] == 1
    assert json.loads(gzip.decompress(base64.b64decode(stored["__compressed_data__"]))) == BIG
    assert await store.get("small") == {"v": 1}
    assert await wrapper.get_many(["big", "small", "none"]) == [BIG, {"v": 1}, None]
    value, seconds = await wrapper.ttl("big")
    assert (value, seconds) == (BIG, None)
    assert sorted(await listed(wrapper).keys()) == ["big", "small"]


async def test_compression_refuses_bad_values_before_writing_and_corrupt_envelopes_on_read(
    store: ListingStore,
) -> None:
    wrapper = CompressionWrapper(key_value=store, min_size_to_compress=1)
    await wrapper.put("k", {"v": 1})
    with pytest.raises(SerializationError):
        await wrapper.put("k", {"v": float("nan")})
    assert await wrapper.get("k") == {"v": 1}
    await store.put("bad", {"__compressed_data__": "not base64!", "__compression_version__": 1})
    with pytest.raises(DeserializationError):
        await wrapper.get("bad")


# --- encryption -------------------------------------------------------------------------------


async def test_encryption_stores_only_ciphertext_and_rotates_keys(store: ListingStore) -> None:
    old, new = Fernet(Fernet.generate_key()), Fernet(Fernet.generate_key())
    before = FernetEncryptionWrapper(key_value=store, fernet=old)
    await before.put("secret", {"password": "hunter2"}, ttl=100)
    stored = await store.get("secret")
    assert stored is not None
    assert set(stored) == {"__encrypted_data__", "__encryption_version__"}
    assert "hunter2" not in json.dumps(stored)

    rotated = FernetEncryptionWrapper(key_value=store, fernet=[new, old])
    assert await rotated.get("secret") == {"password": "hunter2"}
    assert_ttl(await rotated.ttl("secret"), {"password": "hunter2"}, 100)
    await rotated.put("fresh", {"v": 1})
    assert await FernetEncryptionWrapper(key_value=store, fernet=new).get("fresh") == {"v": 1}
    with pytest.raises(DecryptionError):
        await before.get("fresh")
    quiet = FernetEncryptionWrapper(key_value=store, fernet=old, raise_on_decryption_error=False)
    assert await quiet.get("fresh") is None
    assert await quiet.ttl("fresh") == (None, None)


async def test_encryption_reads_plain_values_and_refuses_a_malformed_envelope(store: ListingStore) -> None:
    wrapper = FernetEncryptionWrapper(key_value=store, fernet=Fernet(Fernet.generate_key()))
    await store.put("plain", {"v": 1})
    assert await wrapper.get("plain") == {"v": 1}
    await store.put("bad", {"__encrypted_data__": "x", "__encryption_version__": "one"})
    with pytest.raises(CorruptedDataError):
        await wrapper.get("bad")


def test_encryption_needs_a_key_or_its_material() -> None:
    store: Any = object()
    with pytest.raises(ValueError, match="fernet"):
        FernetEncryptionWrapper(key_value=store)
    with pytest.raises(ValueError, match="salt"):
        FernetEncryptionWrapper(key_value=store, source_material="secret")
    with pytest.raises(ValueError, match="not both"):
        FernetEncryptionWrapper(key_value=store, fernet=Fernet(Fernet.generate_key()), salt="s")


# --- statistics and logging -------------------------------------------------------------------


async def test_statistics_count_hits_and_misses_per_collection(store: ListingStore) -> None:
    wrapper = StatisticsWrapper(key_value=store)
    await wrapper.put_many(["a", "b"], [{"v": 1}, {"v": 2}], collection="c")
    await wrapper.get("a", collection="c")
    await wrapper.get("zz")
    assert await wrapper.get_many(["a", "b", "x"], collection="c") == [{"v": 1}, {"v": 2}, None]
    assert await wrapper.delete_many(["a", "x"], collection="c") == 1
    counts = wrapper.statistics.get_collection("c")
    assert (counts.put.count, counts.get.hit, counts.get.miss) == (2, 3, 1)
    assert (counts.delete.hit, counts.delete.miss) == (1, 1)
    assert wrapper.statistics.collections["default_collection"].get.miss == 1


async def test_logging_names_operations_and_never_values_unless_asked(store: ListingStore) -> None:
    quiet = LoggingWrapper(key_value=store, logger=structlog.get_logger("test"))
    loud = LoggingWrapper(key_value=store, logger=structlog.get_logger("test"), log_values=True)
    with structlog.testing.capture_logs() as events:
        await quiet.put("k", {"password": "hunter2"}, collection="c")
        assert await quiet.get("k", collection="c") == {"password": "hunter2"}
    events = [event for event in events if "action" in event]  # not the runtime's own events
    assert [event["event"] for event in events] == ["start PUT", "finish PUT", "start GET", "finish GET"]
    assert events[3]["hit"] is True
    assert events[3]["collection"] == "c"
    assert "hunter2" not in repr(events)
    with structlog.testing.capture_logs() as events:
        await loud.get("k", collection="c")
    assert "hunter2" in repr(events)


async def test_logging_to_a_standard_library_logger(store: ListingStore, caplog: pytest.LogCaptureFixture) -> None:
    wrapper = LoggingWrapper(key_value=store, logger=logging.getLogger("kvrt.test"), log_level=logging.WARNING)
    with caplog.at_level(logging.WARNING, logger="kvrt.test"):
        await wrapper.delete("k")
    assert any("DELETE" in record.getMessage() for record in caplog.records)


# --- limits, clamps and defaults --------------------------------------------------------------


async def test_limit_size_refuses_or_skips_and_stores_nothing_out_of_range(store: ListingStore) -> None:
    strict = LimitSizeWrapper(key_value=store, min_size=10, max_size=100, raise_on_too_small=True)
    with pytest.raises(EntryTooLargeError) as large:
        await strict.put("big", BIG)
    assert "max_size" in str(large.value)
    with pytest.raises(EntryTooSmallError):
        await strict.put("tiny", {})
    with pytest.raises(EntryTooLargeError):
        await strict.put_many(["ok", "big"], [{"v": "fits"}, BIG])
    assert await store.get_many(["big", "tiny", "ok"]) == [None, None, None]
    lenient = LimitSizeWrapper(key_value=store, max_size=100, raise_on_too_large=False)
    await lenient.put_many(["ok", "big"], [{"v": "fits"}, BIG])
    assert await store.get_many(["ok", "big"]) == [{"v": "fits"}, None]
    with pytest.raises(ValueError, match="min_size"):
        LimitSizeWrapper(key_value=store, min_size=10, max_size=1)


async def test_ttl_clamp_bounds_every_write(store: ListingStore) -> None:
    wrapper = TTLClampWrapper(key_value=store, min_ttl=50, max_ttl=100, missing_ttl=80)
    await wrapper.put("short", {"v": 1}, ttl=1)
    await wrapper.put("long", {"v": 2}, ttl=10_000)
    await wrapper.put_many(["none"], [{"v": 3}])
    assert_ttl(await store.ttl("short"), {"v": 1}, 50)
    assert_ttl(await store.ttl("long"), {"v": 2}, 100)
    assert_ttl(await store.ttl("none"), {"v": 3}, 80)
    with pytest.raises(InvalidTTLError):
        await wrapper.put("bad", {"v": 4}, ttl=-1)
    await TTLClampWrapper(key_value=store, min_ttl=1, max_ttl=10).put("free", {"v": 5})
    assert await store.ttl("free") == ({"v": 5}, None)


async def test_default_value_fills_misses_with_a_fresh_copy(store: ListingStore) -> None:
    wrapper = DefaultValueWrapper(key_value=store, default_value={"items": []}, default_ttl=60)
    await store.put("real", {"items": [1]})
    first = await wrapper.get("missing")
    assert first == {"items": []}
    first["items"].append("mutated")
    assert await wrapper.get_many(["real", "missing"]) == [{"items": [1]}, {"items": []}]
    assert await wrapper.ttl("missing") == ({"items": []}, 60)
    assert await store.get("missing") is None


async def test_read_only_refuses_every_change_and_changes_nothing(store: ListingStore) -> None:
    await store.put("k", {"v": 1})
    wrapper = ReadOnlyWrapper(key_value=store)
    assert await wrapper.get("k") == {"v": 1}
    for call in (
        lambda: wrapper.put("k", {"v": 2}),
        lambda: wrapper.put_many(["k"], [{"v": 2}]),
        lambda: wrapper.delete("k"),
        lambda: wrapper.delete_many(["k"]),
        lambda: listed(wrapper).destroy(),
        lambda: listed(wrapper).destroy_collection("default_collection"),
    ):
        with pytest.raises(ReadOnlyError):
            await call()
    assert await listed(wrapper).keys() == ["k"]
    silent = ReadOnlyWrapper(key_value=store, raise_on_write=False)
    await silent.put("k", {"v": 3})
    assert await silent.delete("k") is False
    assert await listed(silent).destroy() is False
    assert await store.get("k") == {"v": 1}


# --- names: prefixes and a single collection ----------------------------------------------------


async def test_prefix_keys_lists_and_destroys_only_its_own(store: ListingStore) -> None:
    mine = listed(PrefixKeysWrapper(key_value=store, prefix="me"))
    await mine.put_many(["a", "b"], [{"v": 1}, {"v": 2}], collection="c")
    await store.put("theirs", {"v": 3}, collection="c")
    await store.put("lone", {"v": 4}, collection="elsewhere")
    assert sorted(await store.keys("c")) == ["me__a", "me__b", "theirs"]
    assert sorted(await mine.keys("c")) == ["a", "b"]
    assert len(await mine.keys("c", limit=1)) == 1
    assert await mine.collections() == ["c"]
    with pytest.raises(InvalidKeyError):
        await mine.get("")
    assert await mine.destroy() is True
    assert await store.keys("c") == ["theirs"]
    assert await store.get("lone", collection="elsewhere") == {"v": 4}


async def test_prefix_collections_lists_and_destroys_only_its_own(store: ListingStore) -> None:
    mine = listed(PrefixCollectionsWrapper(key_value=store, prefix="me"))
    await mine.put("k", {"v": 1})
    await mine.put("k", {"v": 2}, collection="c")
    await store.put("k", {"v": 3}, collection="c")
    assert await store.get("k", collection="me__default_collection") == {"v": 1}
    assert sorted(await mine.collections()) == ["c", "default_collection"]
    assert await mine.keys("c") == ["k"]
    assert await mine.destroy_collection("c") is True
    assert await store.get("k", collection="c") == {"v": 3}
    assert await mine.destroy() is True
    assert await store.collections() == ["c"]


async def test_single_collection_keeps_every_collection_in_one(store: ListingStore) -> None:
    wrapper = listed(SingleCollectionWrapper(key_value=store, single_collection="all"))
    await wrapper.put("k", {"v": 1}, collection="users")
    await wrapper.put_many(["k", "j"], [{"v": 2}, {"v": 3}], collection="posts")
    await wrapper.put("d", {"v": 4})
    assert await store.collections() == ["all"]
    assert sorted(await store.keys("all")) == ["default_collection__d", "posts__j", "posts__k", "users__k"]
    assert sorted(await wrapper.collections()) == ["default_collection", "posts", "users"]
    assert sorted(await wrapper.keys("posts")) == ["j", "k"]
    assert await wrapper.get("k", collection="users") == {"v": 1}
    assert await wrapper.destroy_collection("posts") is True
    assert sorted(await wrapper.collections()) == ["default_collection", "users"]
    assert await wrapper.destroy() is True
    assert await store.collections() == []


# --- routing ----------------------------------------------------------------------------------


async def test_collection_routing_lists_and_destroys_what_is_routed(store: ListingStore, other: ListingStore) -> None:
    router = listed(CollectionRoutingWrapper(collection_map={"sessions": other}, default_store=store))
    await router.put("s1", {"v": 1}, collection="sessions")
    await router.put("u1", {"v": 2}, collection="users")
    await store.put("stray", {"v": 3}, collection="sessions")  # not routed here: not the router's
    assert await other.get("s1", collection="sessions") == {"v": 1}
    assert await store.get("u1", collection="users") == {"v": 2}
    assert sorted(await router.collections()) == ["sessions", "users"]
    assert await router.keys("sessions") == ["s1"]
    assert await router.destroy() is True
    assert await other.collections() == []
    assert await store.collections() == ["sessions"]


async def test_routing_to_a_store_without_a_segment_is_a_type_error(store: ListingStore, other: ListingStore) -> None:
    narrow = CompressionWrapper(key_value=keys_only(other))
    router = listed(RoutingWrapper(lambda c: narrow if c == "n" else None, default_store=store))
    await router.put("k", {"v": 1}, collection="n")
    assert await router.keys("n") == ["k"]
    assert await other.get("k", collection="n") == {"v": 1}
    assert not hasattr(router, "collections")


# --- the passthrough cache --------------------------------------------------------------------


async def test_passthrough_cache_fills_on_read_with_a_clamped_ttl(store: ListingStore, other: ListingStore) -> None:
    cache = PassthroughCacheWrapper(primary_key_value=store, cache_key_value=other, maximum_ttl=60)
    await store.put("long", {"v": 1}, ttl=10_000)
    await store.put("forever", {"v": 2})
    assert await cache.get_many(["long", "forever", "none"]) == [{"v": 1}, {"v": 2}, None]
    assert_ttl(await other.ttl("long"), {"v": 1}, 60)
    assert_ttl(await other.ttl("forever"), {"v": 2}, 60)
    assert await other.get("none") is None
    await store.put("long", {"v": "behind the cache's back"})
    assert await cache.get("long") == {"v": 1}  # served near, as a cache does
    await cache.put("long", {"v": 3})
    assert await other.get("long") is None
    assert await cache.get("long") == {"v": 3}
    assert await cache.delete("long") is True
    assert await cache.get("long") is None


class _HeldReads(BaseWrapper):
    """A fault injector: the far store's ``ttl_many`` waits until the test lets it return."""

    def __init__(self, key_value: AsyncKeyValue) -> None:
        self.key_value = key_value
        self.reading = anyio.Event()
        self.release = anyio.Event()
        super().__init__()

    async def ttl_many(self, keys: Any, *, collection: str | None = None) -> Any:
        found = await self.key_value.ttl_many(keys, collection=collection)
        self.reading.set()
        await self.release.wait()
        return found


async def test_passthrough_cache_never_caches_what_a_write_overtook(store: ListingStore, other: ListingStore) -> None:
    far = _HeldReads(store)
    cache = PassthroughCacheWrapper(primary_key_value=far, cache_key_value=other)
    await store.put("k", {"v": "old"})
    seen: list[Any] = []

    async def read() -> None:
        seen.append(await cache.get("k"))

    async with anyio.create_task_group() as group:
        group.start_soon(read)
        await far.reading.wait()  # the reader has the old value in hand
        await cache.put("k", {"v": "new"})
        far.release.set()
    assert seen == [{"v": "old"}]  # it began before the write: the old value is a fair answer
    assert await other.get("k") is None  # but it must not outlive the write in the cache
    assert await cache.get("k") == {"v": "new"}


async def test_passthrough_cache_destroy_clears_both(store: ListingStore, other: ListingStore) -> None:
    cache = listed(PassthroughCacheWrapper(primary_key_value=store, cache_key_value=other))
    await cache.put("k", {"v": 1}, collection="c")
    await cache.get("k", collection="c")
    assert await other.get("k", collection="c") == {"v": 1}
    assert await cache.destroy_collection("c") is True
    assert await other.get("k", collection="c") is None
    assert await cache.get("k", collection="c") is None


@pytest.mark.parametrize(
    ("name", "policy"),
    [("RetryWrapper", "restart="), ("TimeoutWrapper", "request_timeout="), ("FallbackWrapper", "fallback=")],
)
def test_the_references_policy_wrappers_say_which_policy_replaces_them(name: str, policy: str) -> None:
    with pytest.raises(ImportError, match=policy):
        exec(f"from kvrt.wrappers import {name}")
    with pytest.raises(AttributeError):
        kvrt.wrappers.NoSuchWrapper  # noqa: B018

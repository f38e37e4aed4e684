"""The behavioural contract of a kvrt handle (SPEC.md), clause by clause, as pytest test classes."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime
from datetime import time as time_of_day
from decimal import Decimal
from fractions import Fraction
from typing import Any, ClassVar, Protocol, runtime_checkable

import anyio
import pytest

from kvrt import frames
from kvrt import sync as kvrt_sync
from kvrt.backends.base import Backend
from kvrt.detached import DetachedRuntime
from kvrt.entry import DEFAULT_COLLECTION
from kvrt.errors import (
    DeserializationError,
    InvalidKeyError,
    InvalidTTLError,
    RuntimeClosedError,
    SerializationError,
)
from kvrt.handle import Handle
from kvrt.protocol import (
    AsyncCullProtocol,
    AsyncDestroyCollectionProtocol,
    AsyncDestroyStoreProtocol,
    AsyncEnumerateCollectionsProtocol,
    AsyncEnumerateKeysProtocol,
    AsyncKeyValue,
)
from kvrt.runtime import Runtime
from kvrt.testing.servers import reference_module

LOOPS = ("asyncio", "trio")

ROUND_TRIPS: dict[str, dict[str, Any]] = {
    "none": {"v": None, "list": [None, None]},
    "bools": {"t": True, "f": False},
    "ints": {"one": 1, "negative": -42, "large": 10**18},
    "floats": {"one": 1.0, "precise": 1.23456789012345e10, "small": 1e-7, "negative": -0.5},
    "keys that look like other types": {
        "null": 1,
        "true": 2,
        "1": 3,
        "1.0": 4,
        "123e4567-e89b-12d3-a456-426614174000": 5,
    },
    "1 KB string": {"s": "x" * 1024},
    "10 KB string": {"s": "y" * 10240},
    "unicode and emoji": {"s": "héllo wörld ✓ 日本語 🎉🚀", "ключ": "значение"},
    "newline and tab": {"n": "\n", "t": "\t", "mixed": "a\nb\tc\r\n"},
    "1000 ints": {"numbers": list(range(1000))},
    "nested": {"a": {"b": {"c": [1, {"d": [2, 3.5, None]}, []]}, "e": {}}, "f": [[[]]]},
    "empty": {},
}

UNSERIALIZABLE: dict[str, Any] = {
    "datetime": datetime(2025, 1, 1, 12, 0),
    "date": date(2025, 1, 1),
    "time": time_of_day(12, 30),
    "uuid": uuid.UUID("123e4567-e89b-12d3-a456-426614174000"),
    "bytes": b"raw",
    "bytearray": bytearray(b"raw"),
    "set": {1, 2},
    "frozenset": frozenset({1}),
    "decimal": Decimal("1.5"),
    "object": object(),
    "nan": math.nan,
    "infinity": math.inf,
    "negative infinity": -math.inf,
    "nan in a list": [1.0, math.nan],
    "datetime deep inside": {"a": [{"b": datetime(2025, 1, 1)}]},
}

SECRET = "hunter2-do-not-show"


class _Secretive:
    def __repr__(self) -> str:
        return SECRET


SECRET_LEAVES: dict[str, Any] = {
    "lone surrogate": SECRET + "\udc80",
    "bytes": SECRET.encode(),
    "set": {SECRET},
    "object with a telling repr": _Secretive(),
    "surrogate key in the value": {SECRET + "\udc80": 1},
    "nan beside a secret": [SECRET, math.nan],
}
"""Bad leaves whose text must show up in no error (message, cause or context)."""


class _Broken:
    """A TTL whose ``__float__`` raises."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __float__(self) -> float:
        raise self.error


NOT_MAPPINGS: dict[str, Any] = {
    "list": [1, 2],
    "str": "text",
    "none": None,
    "int": 1,
    "tuple of pairs": (("a", 1),),
}

NON_STR_KEYS: dict[str, Any] = {
    "int key": {1: "a"},
    "none key": {None: "a"},
    "tuple key": {("a",): 1},
    "nested int key": {"a": {2: "b"}},
}

INVALID_TTLS: dict[str, Any] = {
    "zero": 0,
    "zero float": 0.0,
    "negative": -1,
    "negative float": -0.001,
    "true": True,
    "false": False,
    "nan": math.nan,
    "infinity": math.inf,
    "negative infinity": -math.inf,
    "beyond any date": 1e300,
    "huge int": 10**30,
    "string": "100",
    "list": [1],
    "dict": {},
    "datetime": datetime(2030, 1, 1),
    "bytes": b"10",
}


class _Seconds:
    def __float__(self) -> float:
        return 30.0


VALID_TTLS: dict[str, Any] = {
    "int": 30,
    "float": 30.5,
    "decimal": Decimal("30.25"),
    "fraction": Fraction(61, 2),
    "has __float__": _Seconds(),
}

NAMES: dict[str, str] = {
    "long": "n" * 1200,
    "punctuation": "!@#$%^&*()",
    "slash": "/",
    "dot dot": "..",
    "double colon": "::",
    "unicode": "ünïcødé-名前-🎉",
    "star": "*",
    "question mark": "?",
    "dollar": "$",
    "traversal": "../../etc/passwd",
    "glob class": "[a-z]",
    "braces": "{}",
    "percent": "%s%n",
    "backslash": "\\",
    "spaces": " spaced out ",
    "newline": "line\nbreak",
    "dot": ".",
    "mongo operator": "$gt",
}


@runtime_checkable
class ListingStore(
    AsyncKeyValue,
    AsyncEnumerateKeysProtocol,
    AsyncEnumerateCollectionsProtocol,
    AsyncDestroyStoreProtocol,
    AsyncDestroyCollectionProtocol,
    Protocol,
):
    """A store that can list and clear what it holds: what a wrapper test wraps."""


def listing(store: object) -> ListingStore:
    """Return ``store`` typed as a :class:`ListingStore`, after checking that it is one."""
    assert isinstance(store, ListingStore), f"{store!r} cannot list and clear what it holds"
    return store


def same(expected: Any, actual: Any) -> bool:
    """Equal and of the same types all the way down (tuples compare as the lists they become)."""
    if isinstance(expected, tuple):
        expected = list(expected)
    if type(expected) is not type(actual):
        return False
    if isinstance(expected, dict):
        return expected.keys() == actual.keys() and all(same(expected[k], actual[k]) for k in expected)
    if isinstance(expected, list):
        return len(expected) == len(actual) and all(same(e, a) for e, a in zip(expected, actual, strict=True))
    return bool(expected == actual)


def assert_ttl(found: tuple[Any, float | None], value: Any, ttl: float, slack: float = 1.0) -> None:
    """Assert that a ``ttl()`` answer holds ``value`` with between ``ttl - slack`` and ``ttl`` seconds left."""
    assert found[0] == value
    assert found[1] is not None, "an entry written with a TTL reads back with one"
    assert ttl - slack < found[1] <= ttl


async def raw_put(store: Handle, collection: str, key: str, document: bytes, expires_at: float | None = None) -> None:
    """Store ``document`` as it is, through the worker, bypassing every check (to plant bad data)."""
    await store._call(frames.Put(None, collection, [key], [document], expires_at))


async def raw_get(store: Handle, collection: str, key: str) -> bytes | str | None:
    """Return the stored document of ``key`` as the backend holds it."""
    (found,) = await store._call(frames.Get(None, collection, [key]))
    return found  # type: ignore[no-any-return]


async def sleep_past(epoch_seconds: float) -> None:
    """Wait until the wall clock has passed ``epoch_seconds`` (entries expire by the wall clock)."""
    while (left := epoch_seconds - time.time()) >= 0:  # noqa: ASYNC110 - the condition is the time itself
        await anyio.sleep(left + 0.005)


async def get_concurrently(store: AsyncKeyValue, keys: list[str]) -> dict[str, Any]:
    """Get every key at once, a caller each (what a worker merges into one batch); return what each read."""
    found: dict[str, Any] = {}

    async def get(key: str) -> None:
        found[key] = await store.get(key)

    async with anyio.create_task_group() as group:
        for key in keys:
            group.start_soon(get, key)
    return found


async def eventually(condition: Callable[[], bool], within: float = 5.0, poll: float = 0.01) -> None:
    """Wait until ``condition()`` holds, failing the test after ``within`` seconds.

    For conditions nothing signals, such as a counter in ``Runtime.stats()``.
    """
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - stats are counters, not events
            await anyio.sleep(poll)


class _Fixtures:
    """The fixtures every suite needs; a subclass provides ``backend``."""

    pytestmark = pytest.mark.anyio

    deviations: ClassVar[dict[str, str]] = {}
    """Tests this backend is known to fail, by name (``"test_x"``, or ``"test_x[param]"`` for one
    parameter), each with why. They run as strict expected failures: a fix makes them fail loudly."""

    listed_keys: ClassVar[int] = 2500
    """How many keys the listing test writes: more than one page of the backend's listing."""

    @pytest.fixture(autouse=True)
    def _known_deviation(self, request: pytest.FixtureRequest) -> None:
        """Mark this test an expected failure if :attr:`deviations` names it."""
        node: Any = request.node
        name: str = node.originalname
        params = node.name[len(name) :].strip("[]").split("-", 1)  # the loop comes first
        reason = self.deviations.get(f"{name}[{params[1]}]" if len(params) == 2 else name) or self.deviations.get(name)
        if reason:
            request.applymarker(pytest.mark.xfail(strict=True, reason=reason))

    @pytest.fixture(params=LOOPS)
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        """Run every test under asyncio and under trio."""
        return str(request.param)

    @pytest.fixture
    def backend(self) -> Backend:
        """Return a fresh backend for one test; override this in your suite."""
        raise NotImplementedError("give the suite a `backend` fixture that returns a fresh backend")

    @pytest.fixture
    async def runtime(self, anyio_backend: str) -> AsyncIterator[Runtime]:
        """Run a runtime for one test."""
        async with Runtime() as runtime:
            yield runtime

    @pytest.fixture
    async def store(self, runtime: Runtime, backend: Backend) -> Handle:
        """Spawn the backend under test and return its handle."""
        return await runtime.spawn(backend, name="conformance")


class ValidationSuite(_Fixtures):
    """SPEC.md sections 1-4: bad input is refused at the call, with the error the contract names."""

    async def test_handle_is_an_async_key_value(self, store: Handle) -> None:
        assert isinstance(store, AsyncKeyValue)
        reference = reference_module("key_value.aio.protocols.key_value")
        assert isinstance(store, reference.AsyncKeyValue)

    async def test_segments_offered_match_the_backend(self, store: Handle, backend: Backend) -> None:
        offered = backend.capabilities
        assert isinstance(store, AsyncEnumerateKeysProtocol) == offered.keys
        assert isinstance(store, AsyncEnumerateCollectionsProtocol) == offered.collections
        assert isinstance(store, AsyncDestroyStoreProtocol) == offered.destroy
        assert isinstance(store, AsyncDestroyCollectionProtocol) == offered.destroy_collection
        assert isinstance(store, AsyncCullProtocol) == offered.cull

    async def test_empty_key_is_refused_by_every_method(self, store: Handle) -> None:
        for call in _calls_with_key(store, ""):
            with pytest.raises(InvalidKeyError) as raised:
                await call()
            assert raised.value.backend == "conformance"

    async def test_a_lone_surrogate_in_a_name_is_an_invalid_key_on_every_method(self, store: Handle) -> None:
        calls = _calls_with_key(store, "bad\udc80") + _calls_with_key(store, "k", collection="bad\udc80")
        if isinstance(store, AsyncEnumerateKeysProtocol):
            calls.append(lambda: store.keys("bad\udc80"))
        if isinstance(store, AsyncDestroyCollectionProtocol):
            calls.append(lambda: store.destroy_collection("bad\udc80"))
        for call in calls:
            with pytest.raises(InvalidKeyError, match="lone surrogate") as raised:
                await call()
            assert raised.value.backend == "conformance"
            assert "\\udc80" in str(raised.value) or raised.value.key is None, "the name is shown escaped"
            str(raised.value).encode()  # printable: the surrogate is escaped in the message

    async def test_a_value_nested_too_deeply_is_a_serialization_error(self, store: Handle) -> None:
        value: dict[str, Any] = {}
        inner = value
        for _ in range(10_000):
            inner["a"] = {}
            inner = inner["a"]
        with pytest.raises(SerializationError, match="nested too deeply"):
            await store.put("k", value)
        with pytest.raises(SerializationError, match="nested too deeply"):
            await store.put_many(["ok", "k"], [{"a": 1}, value])

    async def test_a_ttl_whose_float_raises_is_an_invalid_ttl(self, store: Handle) -> None:
        for ttl in (_Broken(RuntimeError("boom")), _Broken(ZeroDivisionError()), _Broken(KeyError("x"))):
            with pytest.raises(InvalidTTLError):
                await store.put("k", {"a": 1}, ttl=ttl)
            with pytest.raises(InvalidTTLError):
                await store.put_many(["k"], [{"a": 1}], ttl=ttl)

    @pytest.mark.parametrize("leaf", SECRET_LEAVES.values(), ids=SECRET_LEAVES.keys())
    async def test_no_error_for_a_bad_value_carries_its_text(self, store: Handle, leaf: Any) -> None:
        calls: list[Callable[[], Awaitable[None]]] = [
            lambda: store.put("k", {"field": leaf}),
            lambda: store.put_many(["k"], [{"field": leaf}]),
        ]
        for call in calls:
            with pytest.raises((SerializationError, TypeError)) as raised:
                await call()
            chain: list[BaseException] = []
            error: BaseException | None = raised.value
            while error is not None and len(chain) < 10:
                chain.append(error)
                error = error.__cause__ or error.__context__
            for link in chain:
                shown = f"{link!s} {link!r} {link.args!r}"
                assert SECRET not in shown, f"{type(link).__name__} shows the value: {shown[:200]}"

    @pytest.mark.parametrize("key", [1, None, b"key", 1.5, ["k"]], ids=repr)
    async def test_non_str_key_is_a_type_error(self, store: Handle, key: Any) -> None:
        for call in _calls_with_key(store, key):
            with pytest.raises(TypeError):
                await call()

    @pytest.mark.parametrize("collection", [1, b"c", ["c"], 0.5], ids=repr)
    async def test_non_str_collection_is_a_type_error(self, store: Handle, collection: Any) -> None:
        for call in _calls_with_key(store, "k", collection=collection):
            with pytest.raises(TypeError):
                await call()

    async def test_bulk_keys_must_be_a_sequence_of_str(self, store: Handle) -> None:
        with pytest.raises(TypeError):
            await store.get_many("abc")
        with pytest.raises(TypeError):
            await store.delete_many(b"abc")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await store.get_many(["a", 2])  # type: ignore[list-item]
        with pytest.raises(InvalidKeyError):
            await store.ttl_many(["a", ""])

    @pytest.mark.parametrize("value", NOT_MAPPINGS.values(), ids=NOT_MAPPINGS.keys())
    async def test_value_that_is_not_a_mapping_is_a_type_error(self, store: Handle, value: Any) -> None:
        with pytest.raises(TypeError):
            await store.put("k", value)
        with pytest.raises(TypeError):
            await store.put_many(["k"], [value])

    @pytest.mark.parametrize("value", NON_STR_KEYS.values(), ids=NON_STR_KEYS.keys())
    async def test_value_with_a_non_str_key_is_a_type_error(self, store: Handle, value: Any) -> None:
        with pytest.raises(TypeError):
            await store.put("k", value)

    @pytest.mark.parametrize("leaf", UNSERIALIZABLE.values(), ids=UNSERIALIZABLE.keys())
    async def test_leaf_json_cannot_hold_is_a_serialization_error(self, store: Handle, leaf: Any) -> None:
        with pytest.raises(SerializationError) as raised:
            await store.put("k", {"field": leaf}, collection="values")
        assert (raised.value.backend, raised.value.collection, raised.value.key) == ("conformance", "values", "k")
        with pytest.raises(SerializationError) as raised:
            await store.put_many(["ok", "bad"], [{"a": 1}, {"field": leaf}])
        assert raised.value.key == "bad"

    async def test_pydantic_url_is_a_serialization_error(self, store: Handle) -> None:
        pydantic = pytest.importorskip("pydantic")
        url = pydantic.TypeAdapter(pydantic.AnyHttpUrl).validate_python("https://example.com/x")
        with pytest.raises(SerializationError):
            await store.put("k", {"url": url})

    @pytest.mark.parametrize("ttl", INVALID_TTLS.values(), ids=INVALID_TTLS.keys())
    async def test_invalid_ttl_is_refused_by_every_method_that_takes_one(self, store: Handle, ttl: Any) -> None:
        with pytest.raises(InvalidTTLError) as raised:
            await store.put("k", {"a": 1}, ttl=ttl)
        assert raised.value.backend == "conformance"
        with pytest.raises(InvalidTTLError):
            await store.put_many(["k1", "k2"], [{"a": 1}, {"b": 2}], ttl=ttl)

    @pytest.mark.parametrize("ttl", VALID_TTLS.values(), ids=VALID_TTLS.keys())
    async def test_numbers_of_any_kind_are_valid_ttls(self, store: Handle, ttl: Any) -> None:
        await store.put("k", {"a": 1}, ttl=ttl)
        await store.put_many(["k1"], [{"a": 1}], ttl=ttl)

    async def test_put_many_with_unequal_lengths_is_a_value_error(self, store: Handle) -> None:
        with pytest.raises(ValueError, match="2 keys and 1 values"):
            await store.put_many(["a", "b"], [{"a": 1}])
        with pytest.raises(ValueError, match="1 keys and 2 values"):
            await store.put_many(["a"], [{"a": 1}, {"b": 2}])

    async def test_empty_bulk_calls_do_nothing(self, store: Handle) -> None:
        assert await store.get_many([]) == []
        assert await store.ttl_many([]) == []
        assert await store.delete_many([]) == 0
        await store.put_many([], [])

    async def test_closed_runtime_refuses_calls_at_once(self, anyio_backend: str, backend: Backend) -> None:
        async with Runtime() as runtime:
            handle = await runtime.spawn(backend, name="closing")
            await handle.put("k", {"a": 1})
        with anyio.fail_after(3):  # at once, where a closed runtime's calls would otherwise wait for ever
            with pytest.raises(RuntimeClosedError):
                await handle.get("k")
            with pytest.raises(RuntimeClosedError):
                await handle.put("k", {"a": 1})
            with pytest.raises(RuntimeClosedError):
                await runtime.spawn(backend, name="again")


def _calls_with_key(store: Handle, key: Any, collection: Any = None) -> list[Callable[[], Any]]:
    """Every method that takes a key (bulk ones with it among good keys), ready to call."""
    value = {"a": 1}
    return [
        lambda: store.get(key, collection=collection),
        lambda: store.ttl(key, collection=collection),
        lambda: store.put(key, value, collection=collection),
        lambda: store.delete(key, collection=collection),
        lambda: store.get_many(["ok", key], collection=collection),
        lambda: store.ttl_many(["ok", key], collection=collection),
        lambda: store.put_many(["ok", key], [value, value], collection=collection),
        lambda: store.delete_many(["ok", key], collection=collection),
    ]


class BehaviourSuite(ValidationSuite):
    """Every clause of SPEC.md sections 1-4 and the optional segments: what a caller sees, whatever is stored.

    A backend that keeps its store's own format (the bridge to py-key-value's stores) runs this;
    one that stores kvrt's documents runs :class:`ConformanceSuite`, which adds section 5.
    """

    # Section 1: the protocol.

    async def test_missing_key_reads_as_none(self, store: Handle) -> None:
        assert await store.get("missing") is None
        assert await store.ttl("missing") == (None, None)
        assert await store.get_many(["missing", "absent"]) == [None, None]
        assert await store.ttl_many(["missing"]) == [(None, None)]

    async def test_put_then_get(self, store: Handle) -> None:
        await store.put("k", {"name": "Alice", "age": 30})
        assert await store.get("k") == {"name": "Alice", "age": 30}

    async def test_put_overwrites(self, store: Handle) -> None:
        await store.put("k", {"v": 1}, ttl=100)
        await store.put("k", {"v": 2})
        assert await store.ttl("k") == ({"v": 2}, None)

    async def test_delete_says_whether_something_was_deleted(self, store: Handle) -> None:
        await store.put("k", {"v": 1})
        assert await store.delete("k") is True
        assert await store.delete("k") is False
        assert await store.get("k") is None

    async def test_bulk_results_align_with_keys(self, store: Handle) -> None:
        await store.put_many(["a", "c"], [{"v": "a"}, {"v": "c"}], ttl=100)
        assert await store.get_many(["a", "b", "c", "a"]) == [{"v": "a"}, None, {"v": "c"}, {"v": "a"}]
        pairs = await store.ttl_many(["c", "b"])
        assert pairs[0][0] == {"v": "c"}
        assert pairs[0][1] is not None and 99 < pairs[0][1] <= 100
        assert pairs[1] == (None, None)

    async def test_delete_many_counts_what_was_deleted(self, store: Handle) -> None:
        await store.put_many(["a", "b", "c"], [{"v": 1}, {"v": 2}, {"v": 3}])
        assert await store.delete_many(["a", "b", "missing", "a"]) == 2
        assert await store.get_many(["a", "b", "c"]) == [None, None, {"v": 3}]

    async def test_ttl_is_none_without_expiry(self, store: Handle) -> None:
        await store.put("k", {"v": 1})
        assert await store.ttl("k") == ({"v": 1}, None)

    async def test_ttl_reads_back_and_decreases(self, store: Handle) -> None:
        await store.put("k", {"v": 1}, ttl=100)
        value, first = await store.ttl("k")
        assert value == {"v": 1}
        assert first is not None and 99.0 <= first <= 100.0
        assert isinstance(first, float)
        _, second = await store.ttl("k")
        assert second is not None and second < first

    async def test_concurrent_callers_each_see_their_own_writes(self, store: Handle) -> None:
        async def caller(number: int) -> None:
            key = f"caller-{number}"
            for step in range(20):
                await store.put(key, {"caller": number, "step": step})
                assert await store.get(key) == {"caller": number, "step": step}
                assert await store.get_many([key, "nobody"]) == [{"caller": number, "step": step}, None]
            assert await store.delete(f"caller-{number}") is True
            assert await store.get(f"caller-{number}") is None

        async with anyio.create_task_group() as group:
            for number in range(32):
                group.start_soon(caller, number)

    # Section 2: collections and keys.

    async def test_none_and_empty_collection_mean_the_default(self, store: Handle) -> None:
        await store.put("k", {"v": 1})
        assert await store.get("k", collection="") == {"v": 1}
        assert await store.get("k", collection=DEFAULT_COLLECTION) == {"v": 1}
        await store.put("j", {"v": 2}, collection="")
        assert await store.get("j") == {"v": 2}

    async def test_collections_are_separate(self, store: Handle) -> None:
        await store.put("k", {"in": "a"}, collection="a")
        await store.put("k", {"in": "b"}, collection="b")
        assert await store.get("k", collection="a") == {"in": "a"}
        assert await store.get("k", collection="b") == {"in": "b"}
        assert await store.get("k") is None
        assert await store.delete("k", collection="a") is True
        assert await store.get("k", collection="b") == {"in": "b"}

    @pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
    async def test_any_name_works_and_stays_in_its_collection(self, store: Handle, name: str) -> None:
        await store.put(name, {"as": "key"}, collection="plain")
        await store.put("plain", {"as": "collection"}, collection=name)
        await store.put(name, {"as": "both"}, collection=name)
        assert await store.get(name, collection="plain") == {"as": "key"}
        assert await store.get("plain", collection=name) == {"as": "collection"}
        assert await store.get(name, collection=name) == {"as": "both"}
        assert await store.get("plain", collection="plain") is None
        assert await store.get(name) is None
        if isinstance(store, AsyncEnumerateKeysProtocol):
            assert sorted(await store.keys(name)) == sorted({name, "plain"})
            assert await store.keys("plain") == [name]
        assert await store.delete(name, collection=name) is True
        assert await store.get("plain", collection=name) == {"as": "collection"}

    async def test_separators_cannot_make_two_entries_collide(self, store: Handle) -> None:
        await store.put("c", {"which": 1}, collection="a::b")
        await store.put("b::c", {"which": 2}, collection="a")
        await store.put("b/c", {"which": 3}, collection="a")
        await store.put("c", {"which": 4}, collection="a/b")
        assert await store.get("c", collection="a::b") == {"which": 1}
        assert await store.get("b::c", collection="a") == {"which": 2}
        assert await store.get("b/c", collection="a") == {"which": 3}
        assert await store.get("c", collection="a/b") == {"which": 4}

    # Section 3: values.

    @pytest.mark.parametrize("value", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
    async def test_values_round_trip_exactly(self, store: Handle, value: dict[str, Any]) -> None:
        await store.put("k", value)
        assert same(value, await store.get("k"))
        await store.put_many(["m1", "m2"], [value, value])
        for got in await store.get_many(["m1", "m2"]):
            assert same(value, got)

    async def test_tuples_come_back_as_lists(self, store: Handle) -> None:
        await store.put("k", {"t": (1, (2, "x")), "l": [(None,)]})
        assert same({"t": [1, [2, "x"]], "l": [[None]]}, await store.get("k"))

    async def test_other_mappings_are_stored_as_dicts(self, store: Handle) -> None:
        from types import MappingProxyType

        await store.put("k", MappingProxyType({"a": MappingProxyType({"b": 1})}))
        assert same({"a": {"b": 1}}, await store.get("k"))

    async def test_no_live_objects(self, store: Handle) -> None:
        value: dict[str, Any] = {"list": [1, 2], "nested": {"n": 1}}
        await store.put("k", value)
        value["list"].append(3)
        value["nested"]["n"] = 2
        got = await store.get("k")
        assert got == {"list": [1, 2], "nested": {"n": 1}}
        assert got is not None
        got["list"].append(99)
        again = await store.get("k")
        assert again == {"list": [1, 2], "nested": {"n": 1}}
        assert again is not got

    async def test_refused_input_leaves_stored_data_intact(self, store: Handle) -> None:
        await store.put("k", {"v": "original"}, ttl=100)
        with pytest.raises(SerializationError):
            await store.put("k", {"v": math.nan})
        with pytest.raises(InvalidTTLError):
            await store.put("k", {"v": "new"}, ttl=-1)
        with pytest.raises(TypeError):
            await store.put("k", {1: "new"})  # type: ignore[dict-item]
        with pytest.raises(SerializationError):
            await store.put_many(["k", "other"], [{"v": "new"}, {"v": datetime(2025, 1, 1)}])
        value, left = await store.ttl("k")
        assert value == {"v": "original"}
        assert left is not None and left > 99
        assert await store.get("other") is None

    # Section 4: TTL.

    async def test_expired_entries_are_invisible_at_once(self, store: Handle) -> None:
        await store.put("long", {"v": 2}, ttl=100)
        await store.put("short", {"v": 1}, ttl=0.5)
        assert await store.get("short") == {"v": 1}, "a sub-second TTL expired too early"
        await store.put_many(["s1", "s2"], [{"v": 1}, {"v": 2}], ttl=0.5)
        expiry = time.time() + 0.5
        await sleep_past(expiry)
        assert await store.get("short") is None
        assert await store.ttl("short") == (None, None)
        assert await store.get_many(["s1", "long", "s2"]) == [None, {"v": 2}, None]
        assert (await store.ttl_many(["s1", "long"]))[0] == (None, None)
        if isinstance(store, AsyncEnumerateKeysProtocol):
            assert await store.keys() == ["long"]
        assert await store.delete("short") is False

    async def test_cull_removes_expired_entries(self, store: Handle) -> None:
        if not isinstance(store, AsyncCullProtocol):
            pytest.skip("this backend offers no cull()")
        await store.put_many([f"e{i}" for i in range(50)], [{"i": i} for i in range(50)], ttl=0.2)
        await store.put("keep", {"v": 1})
        expiry = time.time() + 0.2
        await sleep_past(expiry)
        await store.cull()
        if isinstance(store, AsyncEnumerateKeysProtocol):
            assert await store.keys() == ["keep"]
        for i in range(50):
            assert await raw_get(store, DEFAULT_COLLECTION, f"e{i}") is None
        assert await store.get("keep") == {"v": 1}

    # Optional segments.

    async def test_keys_are_complete_and_limited_on_request(self, store: Handle) -> None:
        if not isinstance(store, AsyncEnumerateKeysProtocol):
            pytest.skip("this backend offers no keys()")
        names = [f"key-{i:05}" for i in range(self.listed_keys)]
        await store.put_many(names, [{"i": i} for i in range(self.listed_keys)], collection="many")
        assert sorted(await store.keys("many")) == names
        limited = await store.keys("many", limit=10)
        assert len(limited) == 10 and set(limited) <= set(names)
        assert await store.keys("empty") == []

    async def test_collections_lists_names(self, store: Handle) -> None:
        if not isinstance(store, AsyncEnumerateCollectionsProtocol):
            pytest.skip("this backend offers no collections()")
        for name in ("alpha", "beta", "gamma::x"):
            await store.put("k", {"v": 1}, collection=name)
        assert sorted(await store.collections()) == ["alpha", "beta", "gamma::x"]
        assert len(await store.collections(limit=2)) == 2

    async def test_destroy_collection_removes_only_that_collection(self, store: Handle) -> None:
        if not isinstance(store, AsyncDestroyCollectionProtocol):
            pytest.skip("this backend offers no destroy_collection()")
        await store.put_many(["a", "b"], [{"v": 1}, {"v": 2}], collection="doomed")
        await store.put("a", {"v": 3}, collection="doomed-not")
        await store.put("a", {"v": 4}, collection="doo")
        assert await store.destroy_collection("doomed") is True
        assert await store.get_many(["a", "b"], collection="doomed") == [None, None]
        assert await store.get("a", collection="doomed-not") == {"v": 3}
        assert await store.get("a", collection="doo") == {"v": 4}
        assert await store.destroy_collection("doomed") is False

    async def test_destroy_removes_everything(self, store: Handle) -> None:
        if not isinstance(store, AsyncDestroyStoreProtocol):
            pytest.skip("this backend offers no destroy()")
        await store.put("a", {"v": 1}, collection="one")
        await store.put("b", {"v": 2}, collection="two")
        assert await store.destroy() is True
        assert await store.get("a", collection="one") is None
        assert await store.get("b", collection="two") is None
        assert await store.destroy() is False


class ConformanceSuite(BehaviourSuite):
    """Every clause of SPEC.md sections 1-5, for a backend that stores kvrt's documents."""

    async def test_expired_document_is_invisible_whatever_the_backend_holds(self, store: Handle) -> None:
        past = '{"created_at": "2020-01-01T00:00:00+00:00", "expires_at": "2020-01-01T00:00:01+00:00", "value": {}}'
        await raw_put(store, DEFAULT_COLLECTION, "stale", past.encode())
        assert await store.get("stale") is None
        assert await store.ttl("stale") == (None, None)

    # Section 5: stored format.

    async def test_stored_document_is_the_reference_format(self, store: Handle) -> None:
        await store.put("u1", {"name": "Alice", "age": 30}, collection="users", ttl=10)
        raw = await raw_get(store, "users", "u1")
        assert raw is not None
        text = raw.decode() if isinstance(raw, bytes) else raw
        document = json.loads(text)
        assert text == json.dumps(document, sort_keys=True), "keys sorted, reference separators"
        assert set(document) == {"collection", "created_at", "expires_at", "key", "value", "version"}
        assert (document["collection"], document["key"], document["version"]) == ("users", "u1", 1)
        assert document["value"] == {"age": 30, "name": "Alice"}
        created = datetime.fromisoformat(document["created_at"])
        expires = datetime.fromisoformat(document["expires_at"])
        assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
        assert created.isoformat() == document["created_at"]
        assert abs((expires - created).total_seconds() - 10) < 0.001
        await store.put("u2", {"a": 1}, collection="users")
        raw = await raw_get(store, "users", "u2")
        assert raw is not None and "expires_at" not in json.loads(raw)

    async def test_reads_documents_with_only_a_value(self, store: Handle) -> None:
        await raw_put(store, "c", "bare", b'{"value": {"a": 1}}')
        await raw_put(store, "c", "as string", b'{"value": "{\\"a\\": 2}", "version": 1}')
        assert await store.get("bare", collection="c") == {"a": 1}
        assert await store.get("as string", collection="c") == {"a": 2}

    @pytest.mark.parametrize(
        "document",
        [
            b"not json",
            b'{"created_at": "2025-01-01T00:00:00+00:00"}',
            b'{"value": 5}',
            b'{"value": {"a": 1}, "expires_at": "not a date"}',
            b"[1, 2]",
        ],
        ids=["not json", "no value", "value not a mapping", "bad date", "not an object"],
    )
    async def test_bad_document_is_a_deserialization_error_for_that_key(self, store: Handle, document: bytes) -> None:
        await store.put("good", {"v": 1}, collection="c")
        await raw_put(store, "c", "bad", document)
        with pytest.raises(DeserializationError) as raised:
            await store.get("bad", collection="c")
        assert (raised.value.backend, raised.value.collection, raised.value.key) == ("conformance", "c", "bad")
        with pytest.raises(DeserializationError):
            await store.get_many(["good", "bad"], collection="c")
        assert await store.get("good", collection="c") == {"v": 1}, "the worker keeps serving"


class DetachedConformanceSuite(ConformanceSuite):
    """The whole suite again, through a handle of a detached runtime (``kvrt.open``)."""

    @pytest.fixture
    async def store(self, backend: Backend) -> AsyncIterator[Handle]:
        """Open the backend under test on a detached runtime of the test's own."""
        runtime = DetachedRuntime()
        try:
            yield runtime.open(backend, name="conformance")
        finally:
            await runtime.aclose()


class BlockingConformanceSuite(ConformanceSuite):
    """The whole suite again, through the blocking transport ``kvrt.sync`` handles run on.

    Each call blocks the test's loop until the detached runtime's thread answers it.
    """

    @pytest.fixture
    async def store(self, backend: Backend) -> AsyncIterator[Handle]:
        """Open the backend under test as a ``kvrt.sync`` handle, and test the handle it drives."""
        runtime = DetachedRuntime()
        try:
            yield kvrt_sync.open(backend, runtime=runtime, name="conformance")._handle
        finally:
            await runtime.aclose()

"""Unit tests of kvrt.entry: the stored document, and the checks a value, a TTL and a name pass."""

from __future__ import annotations

import json
import math
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from key_value.aio._utils.managed_entry import ManagedEntry
from key_value.aio._utils.serialization import BasicSerializationAdapter
from pydantic import AnyHttpUrl, TypeAdapter

from kvrt.entry import (
    DEFAULT_COLLECTION,
    Stamp,
    check_key,
    check_keys,
    check_ttl,
    collection_name,
    decode_entry,
    encode_entry,
    encode_value,
    stamp,
)
from kvrt.errors import DeserializationError, InvalidKeyError, InvalidTTLError, SerializationError

CREATED = datetime(2025, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
EXPIRES = CREATED + timedelta(seconds=10)


def _stamp_of(created: datetime, expires: datetime | None) -> Stamp:
    """The kvrt stamp for the same instants the reference is given."""
    return Stamp(
        created.isoformat(),
        expires.isoformat() if expires is not None else None,
        expires.timestamp() if expires is not None else None,
    )


def _kvrt_document(
    value: Mapping[str, Any], expires: datetime | None, *, key: str = "k1", collection: str = "users"
) -> str:
    return encode_entry(key, collection, encode_value(value), _stamp_of(CREATED, expires)).decode()


def _reference_document(
    value: Mapping[str, Any],
    expires: datetime | None,
    *,
    key: str = "k1",
    collection: str = "users",
    value_format: str = "dict",
) -> str:
    adapter = BasicSerializationAdapter(value_format="string" if value_format == "string" else "dict")
    entry = ManagedEntry(value=value, created_at=CREATED, expires_at=expires)
    return adapter.dump_json(entry=entry, key=key, collection=collection)


def _assert_same_types(left: Any, right: Any) -> None:
    """``left`` and ``right`` are equal and of the same type at every level (``1.0`` is not ``1``)."""
    assert type(left) is type(right), (left, right)
    if isinstance(left, dict):
        assert left.keys() == right.keys()
        for name in left:
            _assert_same_types(left[name], right[name])
    elif isinstance(left, list):
        assert len(left) == len(right)
        for a, b in zip(left, right, strict=True):
            _assert_same_types(a, b)
    else:
        assert left == right


# ---------------------------------------------------------------------------------------------------------------------
# Byte compatibility with the reference (py-key-value-aio 0.4.6 to 0.5.x, whichever is installed)
# ---------------------------------------------------------------------------------------------------------------------

ASCII_VALUES: list[Any] = [
    pytest.param({"age": 30, "name": "Alice"}, id="simple"),
    pytest.param({}, id="empty"),
    pytest.param({"z": 1, "a": 2, "m": {"y": 1, "b": 2}}, id="unsorted-keys"),
    pytest.param({"a": {"b": {"c": [1, 2, {"d": None, "c": []}]}}, "e": {}, "f": []}, id="nested"),
    pytest.param({"l": [[], [[]], [{}], [1, [2, [3]]]]}, id="nested-lists"),
    pytest.param({"n": None, "ns": [None, None], "t": True, "f": False}, id="none-and-bools"),
    pytest.param(
        {"a": 1.0, "b": 0.1, "c": -2.5, "d": 1.23456789012345e10, "e": 123456.789, "f": -0.0, "g": 1e15},
        id="floats",
    ),
    pytest.param({"a": 0.0001, "b": 3.141592653589793, "c": 0.5}, id="small-floats"),
    pytest.param({"a": 1, "b": -42, "c": 10**18, "d": 2**63, "e": 2**64, "f": -(2**63) - 1}, id="ints"),
    pytest.param({"huge": 10**30, "neg": -(10**40)}, id="big-ints"),
    pytest.param({"null": 1, "true": 2, "1": 3, "1.0": 4, str(uuid.UUID(int=7)): 5}, id="keys-like-other-types"),
    pytest.param({"s": 'quote " backslash \\ slash / nl \n tab \t cr \r ctl \x01 \x1f'}, id="escapes"),
    pytest.param({"s": "x" * 10_000}, id="10kb-string"),
    pytest.param({"l": list(range(1000))}, id="1000-ints"),
    pytest.param({"": "empty key", " ": "space key"}, id="odd-keys"),
]


@pytest.mark.parametrize("value", ASCII_VALUES)
@pytest.mark.parametrize("expires", [EXPIRES, None], ids=["ttl", "no-ttl"])
def test_document_is_byte_identical_to_reference(value: dict[str, Any], expires: datetime | None) -> None:
    assert _kvrt_document(value, expires) == _reference_document(value, expires)


@pytest.mark.parametrize(
    ("key", "collection"),
    [("u1", "users"), ("a::b", "c"), ("x/y/../z", "col-1_2"), ("!@#$%^&*()", "*?$"), ("k" * 1000, "c" * 300)],
)
def test_key_and_collection_are_written_like_reference(key: str, collection: str) -> None:
    value = {"v": 1}
    kvrt = _kvrt_document(value, EXPIRES, key=key, collection=collection)
    assert kvrt == _reference_document(value, EXPIRES, key=key, collection=collection)


def test_document_layout_matches_spec_example() -> None:
    created = datetime(2025, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    expires = datetime(2025, 1, 1, 0, 0, 10, 123456, tzinfo=UTC)
    document = encode_entry("u1", "users", encode_value({"name": "Alice", "age": 30}), _stamp_of(created, expires))
    assert document == (
        b'{"collection": "users", "created_at": "2025-01-01T00:00:00.123456+00:00", '
        b'"expires_at": "2025-01-01T00:00:10.123456+00:00", "key": "u1", '
        b'"value": {"age": 30, "name": "Alice"}, "version": 1}'
    )


def test_no_expiry_leaves_expires_at_out() -> None:
    document = json.loads(_kvrt_document({"a": 1}, None))
    assert "expires_at" not in document
    assert document["created_at"] == CREATED.isoformat()


@pytest.mark.parametrize(
    "number",
    [1e16, 1e22, 1.234e20, 1.7976931348623157e308, 1e-05, 1.5e-05, 1e-07, 5e-324],
    ids=lambda number: repr(number),
)
def test_exponent_floats_parse_to_the_same_document_as_the_reference(number: float) -> None:
    # The one documented spelling difference: msgspec writes 1e16 and 1e-7 where Python's json writes
    # 1e+16 and 1e-07. Both are the same JSON number; everything else is byte-identical.
    value = {"x": number}
    ours, theirs = _kvrt_document(value, EXPIRES), _reference_document(value, EXPIRES)
    assert json.loads(ours) == json.loads(theirs)
    spelled = msgspec.json.encode(number).decode()
    assert ours.replace(f'"x": {spelled}', f'"x": {number!r}') == theirs


def test_control_characters_parse_to_the_same_document_as_the_reference() -> None:
    # U+007F is written raw by msgspec and escaped by Python's json: the same JSON string.
    value = {"s": "a\x7fb"}
    ours, theirs = _kvrt_document(value, None), _reference_document(value, None)
    assert json.loads(ours) == json.loads(theirs)
    assert ours.replace("\x7f", "\\u007f") == theirs


# ---------------------------------------------------------------------------------------------------------------------
# Reading each other's documents
# ---------------------------------------------------------------------------------------------------------------------

READABLE_VALUES: list[Any] = [
    pytest.param({"age": 30, "name": "Alice"}, id="simple"),
    pytest.param({}, id="empty"),
    pytest.param({"a": {"b": [1, 2.0, None, True, False, {"c": "d"}]}}, id="nested"),
    pytest.param({"f": 1.0, "g": 1.23456789012345e10, "h": 1e16, "i": 1e-07}, id="floats"),
    pytest.param({"i": 10**18, "j": 2**64, "k": -(10**30)}, id="big-ints"),
    pytest.param({"s": "héllo 😀 中文 \u2028 \x7f", "ключ": ["é"]}, id="non-ascii"),
    pytest.param({"null": None, "true": "true", "1": "1"}, id="keys-like-other-types"),
]


@pytest.mark.parametrize("value", READABLE_VALUES)
@pytest.mark.parametrize("expires", [EXPIRES, None], ids=["ttl", "no-ttl"])
@pytest.mark.parametrize("value_format", ["dict", "string"])
def test_reads_reference_documents(value: dict[str, Any], expires: datetime | None, value_format: str) -> None:
    document = _reference_document(value, expires, value_format=value_format)
    if value_format == "string":
        assert isinstance(json.loads(document)["value"], str), "the reference stores the value as a JSON string"
    decoded, expires_epoch = decode_entry(document, backend="memory", collection="users", key="k1")
    _assert_same_types(decoded, value)
    assert expires_epoch == (expires.timestamp() if expires is not None else None)


def test_reads_reference_documents_given_as_bytes() -> None:
    document = _reference_document({"a": 1}, EXPIRES).encode()
    assert decode_entry(document, backend="b", collection="c", key="k") == ({"a": 1}, EXPIRES.timestamp())


@pytest.mark.parametrize("value", READABLE_VALUES)
@pytest.mark.parametrize("expires", [EXPIRES, None], ids=["ttl", "no-ttl"])
def test_reference_reads_kvrt_documents(value: dict[str, Any], expires: datetime | None) -> None:
    entry = BasicSerializationAdapter().load_json(_kvrt_document(value, expires))
    _assert_same_types(dict(entry.value), value)
    assert entry.expires_at == expires
    assert entry.created_at == CREATED


@pytest.mark.parametrize("value", READABLE_VALUES)
@pytest.mark.parametrize("expires", [EXPIRES, None], ids=["ttl", "no-ttl"])
def test_kvrt_reads_its_own_documents(value: dict[str, Any], expires: datetime | None) -> None:
    document = encode_entry("k1", "users", encode_value(value), _stamp_of(CREATED, expires))
    decoded, expires_epoch = decode_entry(document, backend="memory", collection="users", key="k1")
    _assert_same_types(decoded, value)
    assert expires_epoch == (expires.timestamp() if expires is not None else None)


@pytest.mark.parametrize(
    "value",
    [
        {"s": "héllo"},
        {"emoji": "😀🎉", "cjk": "中文字符"},
        {"ключ": "значение"},
        {"nested": {"é": ["ü", {"ß": "ø"}]}},
        {"sep": "\u2028\u2029", "nbsp": "\xa0"},
    ],
    ids=["latin", "emoji-cjk", "cyrillic-key", "nested", "separators"],
)
def test_non_ascii_documents_parse_to_the_same_object(value: dict[str, Any]) -> None:
    kvrt = _kvrt_document(value, EXPIRES, key="clé", collection="收藏")
    reference = _reference_document(value, EXPIRES, key="clé", collection="收藏")
    assert json.loads(kvrt) == json.loads(reference)
    assert json.loads(kvrt)["value"] == value


# ---------------------------------------------------------------------------------------------------------------------
# check_ttl
# ---------------------------------------------------------------------------------------------------------------------


class _HasFloat:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __float__(self) -> float:
        return self.seconds


@pytest.mark.parametrize(
    ("ttl", "seconds"),
    [
        (1, 1.0),
        (100, 100.0),
        (0.5, 0.5),
        (0.001, 0.001),
        (86_400 * 365 * 100, 86_400.0 * 365 * 100),
        (Decimal("2.5"), 2.5),
        (Fraction(1, 4), 0.25),
        (_HasFloat(7.0), 7.0),
    ],
    ids=["int-1", "int-100", "float", "sub-ms", "century", "decimal", "fraction", "dunder-float"],
)
def test_check_ttl_accepts_positive_numbers_as_float(ttl: Any, seconds: float) -> None:
    result = check_ttl(ttl)
    assert type(result) is float
    assert result == seconds


def test_check_ttl_none_means_no_expiry() -> None:
    assert check_ttl(None) is None


@pytest.mark.parametrize(
    "ttl",
    [
        0,
        0.0,
        -1,
        -0.5,
        True,
        False,
        math.nan,
        math.inf,
        -math.inf,
        1e300,
        "100",
        b"100",
        [1],
        {},
        datetime(2030, 1, 1, tzinfo=UTC),
        timedelta(seconds=10),
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("-3"),
        Decimal("1e400"),
        _HasFloat(-1.0),
        _HasFloat(math.nan),
        object(),
    ],
    ids=lambda ttl: f"{type(ttl).__name__}:{ttl!r}"[:40],
)
def test_check_ttl_refuses(ttl: Any) -> None:
    with pytest.raises(InvalidTTLError):
        check_ttl(ttl)


@pytest.mark.parametrize("ttl", [10**400, -(10**400), 2**1024], ids=["1e400", "-1e400", "2**1024"])
def test_check_ttl_refuses_an_int_too_large_for_a_float(ttl: int) -> None:
    # SPEC 4: a TTL too large to represent as a date is an InvalidTTLError, not an OverflowError.
    with pytest.raises(InvalidTTLError):
        check_ttl(ttl)


def test_check_ttl_error_names_the_ttl() -> None:
    with pytest.raises(InvalidTTLError) as caught:
        check_ttl("100")  # type: ignore[arg-type]
    assert "'100'" in str(caught.value)
    assert "str" in str(caught.value)


# ---------------------------------------------------------------------------------------------------------------------
# stamp
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [100.0, 0.25, 1.5, 86_400.0 * 365])
def test_stamp_with_ttl(ttl: float) -> None:
    before = datetime.now(UTC)
    result = stamp(ttl)
    after = datetime.now(UTC)
    assert result.expires_at is not None
    assert result.expires_epoch is not None
    created = datetime.fromisoformat(result.created_at)
    expires = datetime.fromisoformat(result.expires_at)
    for moment, text in ((created, result.created_at), (expires, result.expires_at)):
        assert moment.utcoffset() == timedelta(0)
        assert text.endswith("+00:00")
        assert moment.isoformat() == text
    assert before <= created <= after
    assert expires - created == timedelta(seconds=ttl)
    assert result.expires_epoch == expires.timestamp()


def test_stamp_without_ttl() -> None:
    before = datetime.now(UTC)
    result = stamp(None)
    created = datetime.fromisoformat(result.created_at)
    assert result.expires_at is None
    assert result.expires_epoch is None
    assert created.utcoffset() == timedelta(0)
    assert before <= created <= datetime.now(UTC)


def test_stamp_with_a_checked_ttl_is_readable_back() -> None:
    seconds = check_ttl(30)
    result = stamp(seconds)
    document = encode_entry("k", "c", encode_value({"a": 1}), result)
    assert decode_entry(document, backend="b", collection="c", key="k") == ({"a": 1}, result.expires_epoch)


# ---------------------------------------------------------------------------------------------------------------------
# encode_value
# ---------------------------------------------------------------------------------------------------------------------


def test_encode_value_sorts_keys_at_every_level() -> None:
    encoded = encode_value({"b": 1, "a": {"z": 1, "c": [{"y": 1, "x": 2}]}})
    assert encoded == b'{"a":{"c":[{"x":2,"y":1}],"z":1},"b":1}'


def test_encode_value_turns_tuples_into_lists() -> None:
    assert msgspec.json.decode(encode_value({"t": (1, (2, 3), ({"a": ()},))})) == {"t": [1, [2, 3], [{"a": []}]]}


@pytest.mark.parametrize(
    "value",
    [
        MappingProxyType({"b": 2, "a": [1]}),
        OrderedDict([("b", 2), ("a", [1])]),
        {"b": 2, "a": [1]},
    ],
    ids=["mappingproxy", "ordereddict", "dict"],
)
def test_encode_value_accepts_mappings(value: Mapping[str, Any]) -> None:
    assert encode_value(value) == b'{"a":[1],"b":2}'


def test_encode_value_accepts_nested_mapping_proxy() -> None:
    assert msgspec.json.decode(encode_value({"m": MappingProxyType({"a": 1})})) == {"m": {"a": 1}}


class _StrDict(dict[str, Any]):
    pass


def test_encode_value_accepts_a_str_keyed_dict_subclass() -> None:
    assert encode_value(_StrDict(b=1, a={"c": 2})) == b'{"a":{"c":2},"b":1}'
    assert msgspec.json.decode(encode_value({"inner": _StrDict(x=1.0)})) == {"inner": {"x": 1.0}}


@pytest.mark.parametrize(
    "value",
    [None, [("a", 1)], "abc", b"abc", 1, 1.5, {"a", "b"}, ("a",)],
    ids=["none", "pairs", "str", "bytes", "int", "float", "set", "tuple"],
)
def test_encode_value_refuses_a_non_mapping(value: Any) -> None:
    with pytest.raises(TypeError):
        encode_value(value)


@pytest.mark.parametrize(
    "value",
    [
        {1: "a"},
        {None: "a"},
        {("a",): 1},
        {b"a": 1},
        {"ok": {2: "b"}},
        {"ok": [{"x": {3.5: 1}}]},
        {"ok": ({True: 1},)},
        MappingProxyType({1: 2}),
    ],
    ids=["int", "none", "tuple", "bytes", "nested", "in-list", "in-tuple", "mappingproxy"],
)
def test_encode_value_refuses_non_str_keys_with_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        encode_value(value)


def _url() -> Any:
    return TypeAdapter(AnyHttpUrl).validate_python("https://example.com/x")


class _Opaque:
    pass


@pytest.mark.parametrize(
    "leaf",
    [
        math.nan,
        math.inf,
        -math.inf,
        datetime(2025, 1, 1, tzinfo=UTC),
        datetime(2025, 1, 1),
        date(2025, 1, 1),
        time(12, 0),
        timedelta(seconds=1),
        uuid.UUID(int=1),
        b"bytes",
        bytearray(b"x"),
        {1, 2},
        set(),
        frozenset({"a"}),
        Decimal("1.5"),
        Fraction(1, 3),
        1 + 2j,
        object(),
        _Opaque(),
        _url(),
    ],
    ids=lambda leaf: type(leaf).__name__ + (f":{leaf!r}" if isinstance(leaf, float) else ""),
)
@pytest.mark.parametrize("where", ["top", "nested-dict", "in-list", "in-tuple"])
def test_encode_value_refuses_leaves_json_cannot_hold(leaf: Any, where: str) -> None:
    value: dict[str, Any] = {
        "top": {"x": leaf},
        "nested-dict": {"a": {"b": {"x": leaf}}},
        "in-list": {"a": [1, "two", leaf]},
        "in-tuple": {"a": (1, (leaf,))},
    }[where]
    with pytest.raises(SerializationError):
        encode_value(value)


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb"], ids=["high", "low"])
def test_encode_value_refuses_lone_surrogates_with_serialization_error(text: str) -> None:
    # A lone surrogate cannot be written as UTF-8: it must be refused as a kvrt error, not a UnicodeEncodeError.
    with pytest.raises(SerializationError):
        encode_value({"s": text})
    with pytest.raises(SerializationError):
        encode_value({text: 1})


def test_encode_value_keeps_float_and_int_apart() -> None:
    decoded = msgspec.json.decode(encode_value({"f": 1.0, "i": 1, "b": True, "z": 0.0, "n": None}))
    _assert_same_types(decoded, {"f": 1.0, "i": 1, "b": True, "z": 0.0, "n": None})


_json_leaves = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
)
_json_values = st.recursive(
    _json_leaves,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=25,
)
_json_objects = st.dictionaries(st.text(max_size=10), _json_values, max_size=6)


@settings(max_examples=200, deadline=None)
@given(_json_objects)
def test_encode_value_round_trips_exactly(value: dict[str, Any]) -> None:
    _assert_same_types(msgspec.json.decode(encode_value(value)), value)


@settings(max_examples=100, deadline=None)
@given(_json_objects)
def test_documents_parse_like_the_references(value: dict[str, Any]) -> None:
    assert json.loads(_kvrt_document(value, EXPIRES)) == json.loads(_reference_document(value, EXPIRES))
    decoded, _ = decode_entry(_reference_document(value, None), backend="b", collection="c", key="k")
    _assert_same_types(decoded, value)


# ---------------------------------------------------------------------------------------------------------------------
# decode_entry
# ---------------------------------------------------------------------------------------------------------------------

BAD_DOCUMENTS: list[Any] = [
    pytest.param(b"{not json", id="invalid-json"),
    pytest.param(b"", id="empty"),
    pytest.param(b'{"value": {"a": 1}', id="truncated"),
    pytest.param(b"\xff\xfe", id="not-utf8"),
    pytest.param(b"[1, 2]", id="not-an-object"),
    pytest.param(b"null", id="null"),
    pytest.param(b'{"version": 1, "key": "k", "collection": "c"}', id="missing-value"),
    pytest.param(b'{"value": [1, 2]}', id="value-list"),
    pytest.param(b'{"value": 5}', id="value-int"),
    pytest.param(b'{"value": null}', id="value-null"),
    pytest.param(b'{"value": "[1, 2]"}', id="value-string-of-list"),
    pytest.param(b'{"value": "{not json"}', id="value-string-invalid"),
    pytest.param(b'{"value": {}, "expires_at": "not a date"}', id="bad-expires-at"),
    pytest.param(b'{"value": {}, "expires_at": "2025-13-45T99:00:00+00:00"}', id="impossible-expires-at"),
    pytest.param(b'{"value": {}, "expires_at": 12345}', id="numeric-expires-at"),
]


@pytest.mark.parametrize("document", BAD_DOCUMENTS)
def test_decode_entry_refuses_bad_documents(document: bytes) -> None:
    with pytest.raises(DeserializationError) as caught:
        decode_entry(document, backend="redis-main", collection="users", key="user-17")
    error = caught.value
    assert (error.backend, error.collection, error.key) == ("redis-main", "users", "user-17")
    for fact in ("redis-main", "users", "user-17"):
        assert fact in str(error)


def test_decode_entry_refuses_a_bad_created_at() -> None:
    # SPEC 5: a document with unparsable dates raises DeserializationError (the reference does for created_at).
    document = b'{"created_at": "not a date", "value": {"a": 1}, "version": 1}'
    with pytest.raises(DeserializationError):
        decode_entry(document, backend="b", collection="c", key="k")


def test_decode_entry_needs_only_value() -> None:
    assert decode_entry(b'{"value": {"a": [1, 2.5]}}', backend="b", collection="c", key="k") == ({"a": [1, 2.5]}, None)


def test_decode_entry_ignores_unknown_fields() -> None:
    document = b'{"value": {"a": 1}, "extra": [1, {"x": 2}], "version": 7}'
    assert decode_entry(document, backend="b", collection="c", key="k") == ({"a": 1}, None)


def test_decode_entry_null_expires_at_means_no_expiry() -> None:
    assert decode_entry(b'{"value": {}, "expires_at": null}', backend="b", collection="c", key="k") == ({}, None)


@pytest.mark.parametrize(
    "text",
    ["2025-01-01T05:30:00+05:30", "2024-12-31T19:00:00-05:00", "2025-01-01T00:00:00Z", "2025-01-01T00:00:00"],
    ids=["plus-offset", "minus-offset", "zulu", "naive-is-utc"],
)
def test_decode_entry_expiry_epoch_respects_offsets(text: str) -> None:
    document = json.dumps({"value": {}, "expires_at": text})
    _, expires_epoch = decode_entry(document, backend="b", collection="c", key="k")
    assert expires_epoch == datetime(2025, 1, 1, tzinfo=UTC).timestamp()


# ---------------------------------------------------------------------------------------------------------------------
# collection_name, check_key, check_keys
# ---------------------------------------------------------------------------------------------------------------------


def test_collection_name_defaults() -> None:
    assert DEFAULT_COLLECTION == "default_collection"
    assert collection_name(None) == "default_collection"
    assert collection_name("") == "default_collection"
    assert collection_name(None, "mine") == "mine"
    assert collection_name("", default="mine") == "mine"


@pytest.mark.parametrize("name", ["users", " ", "a::b", "../x", "é😀", "c" * 1000])
def test_collection_name_keeps_given_names(name: str) -> None:
    assert collection_name(name) == name
    assert collection_name(name, "other") == name


@pytest.mark.parametrize("name", [1, 0, b"users", b"", ["users"], object(), 1.5, False])
def test_collection_name_refuses_non_str(name: object) -> None:
    with pytest.raises(TypeError):
        collection_name(name)


@pytest.mark.parametrize("key", ["k", " ", "a::b", "../../etc/passwd", "*", "?", "$", "😀", "k" * 1000])
def test_check_key_accepts_non_empty_str(key: str) -> None:
    assert check_key(key) == key


class _Str(str):
    __slots__ = ()


def test_check_key_returns_a_plain_str_for_a_str_subclass() -> None:
    result = check_key(_Str("abc"))
    assert result == "abc"
    assert type(result) is str


def test_check_key_refuses_empty() -> None:
    with pytest.raises(InvalidKeyError):
        check_key("")
    with pytest.raises(InvalidKeyError):
        check_key(_Str(""))


@pytest.mark.parametrize("key", [None, 1, b"k", ["k"], ("k",), 1.0, object()])
def test_check_key_refuses_non_str(key: object) -> None:
    with pytest.raises(TypeError):
        check_key(key)


@pytest.mark.parametrize(
    "keys",
    [["a", "b"], ("a", "b"), ["a", "a"], []],
    ids=["list", "tuple", "duplicates", "empty"],
)
def test_check_keys_accepts_sequences(keys: list[str] | tuple[str, ...]) -> None:
    result = check_keys(keys)
    assert result == list(keys)
    assert type(result) is list


@pytest.mark.parametrize(
    "keys", ["abc", "", b"abc", None, 5, iter(["a"])], ids=["str", "empty-str", "bytes", "none", "int", "iterator"]
)
def test_check_keys_refuses_non_sequences(keys: Any) -> None:
    with pytest.raises(TypeError):
        check_keys(keys)


def test_check_keys_checks_every_key() -> None:
    with pytest.raises(TypeError):
        check_keys(["a", 1])  # type: ignore[list-item]
    with pytest.raises(InvalidKeyError):
        check_keys(["a", ""])

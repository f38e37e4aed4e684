"""The stored entry: its JSON document, and the checks a value, a TTL and a name pass before storing.

The document is the reference's (sorted keys, ``", "`` and ``": "`` separators, ``isoformat()``
timestamps), byte for byte for printable ASCII content except one spelling: floats in exponent form
are written ``1e16`` and ``1e-7`` where Python's ``json`` writes ``1e+16`` and ``1e-07`` (and
non-ASCII text is written as UTF-8 rather than escaped). Both parse to the same document, so
stores written by either library read in the other::

    {"collection": "users", "created_at": "...+00:00", "expires_at": "...+00:00", "key": "u1",
     "value": {"age": 30, "name": "Alice"}, "version": 1}

A value is encoded once, at the caller, where a bad value can be reported; everything downstream
moves the encoded bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, SupportsFloat

import msgspec

from kvrt.errors import DeserializationError, InvalidKeyError, InvalidTTLError, SerializationError

DEFAULT_COLLECTION: Final = "default_collection"
"""The collection used when a call names none (or names ``""``)."""

_MAX_TTL: Final = (datetime.max.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds() - 86_400.0


class _Document(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The document as written: fields in sorted order, ``expires_at`` left out when there is none."""

    collection: str
    created_at: str
    expires_at: str | None = None
    key: str
    value: msgspec.Raw
    version: int


class _ReadDocument(msgspec.Struct):
    """The document as read: only ``value`` is required (the reference may store it as a JSON string)."""

    value: dict[str, Any] | str
    created_at: datetime | None = None
    expires_at: datetime | None = None


Entry = tuple[dict[str, Any], float | None]
"""A stored value and when it expires (epoch seconds, or ``None``)."""


_encoder: Final = msgspec.json.Encoder(order="sorted")
_value_decoder: Final = msgspec.json.Decoder(dict[str, Any])
_entry_decoder: Final = msgspec.json.Decoder(_ReadDocument)


def collection_name(collection: object, default: str = DEFAULT_COLLECTION) -> str:
    """Return the collection a call means: ``default`` for ``None`` or ``""``, else the name itself."""
    if collection is None or collection == "":
        return default
    if type(collection) is not str and not isinstance(collection, str):
        raise TypeError(f"a collection name must be a str, not {type(collection).__name__}")
    return collection


def check_key(key: object) -> str:
    """Return ``key`` if it is a non-empty ``str``; raise ``TypeError`` or :class:`InvalidKeyError`."""
    if type(key) is not str:
        if not isinstance(key, str):
            raise TypeError(f"a key must be a str, not {type(key).__name__}")
        key = str(key)
    if not key:
        raise InvalidKeyError("A key must not be empty.")
    return key


def check_keys(keys: Sequence[str]) -> list[str]:
    """Check every key of a bulk call; a bare ``str`` is refused rather than split into characters."""
    if isinstance(keys, str | bytes) or not isinstance(keys, Sequence | Mapping | set | frozenset):
        raise TypeError(f"keys must be a sequence of str, not {type(keys).__name__}")
    return [check_key(key) for key in keys]


def check_limit(limit: int | None) -> int | None:
    """Return a listing's ``limit``, ``None`` or a non-negative ``int``; else raise ``TypeError`` or ``ValueError``."""
    if limit is None:
        return None
    if type(limit) is not int:
        raise TypeError(f"limit must be an int or None, not {type(limit).__name__}")
    if limit < 0:
        raise ValueError("limit must not be negative")
    return limit


def check_seed(seed: Mapping[str, Mapping[str, Mapping[str, Any]]] | None) -> list[tuple[str, list[str], list[Any]]]:
    """Check a ``seed=`` mapping (``{collection: {key: value}}``) as its puts would; return it by collection."""
    if seed is None:
        return []
    if not isinstance(seed, Mapping):
        raise TypeError(f"seed must map collections to {{key: value}} mappings, not {type(seed).__name__}")
    checked: list[tuple[str, list[str], list[Any]]] = []
    for collection, entries in seed.items():
        if not isinstance(entries, Mapping):
            raise TypeError(f"seed[{collection!r}] must map keys to values, not {type(entries).__name__}")
        keys = check_keys(list(entries))
        values = list(entries.values())
        for value in values:
            encode_value(value)
        checked.append((collection_name(collection), keys, values))
    return checked


def check_ttl(ttl: SupportsFloat | None) -> float | None:
    """Return ``ttl`` as seconds (``None`` for no expiry), or raise :class:`InvalidTTLError`.

    Accepted: a positive, finite number a date can hold, or anything with ``__float__`` except
    ``bool``. Refused: zero, negatives, NaN, infinities, booleans, strings and other non-numbers.
    """
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not hasattr(type(ttl), "__float__"):
        raise InvalidTTLError(ttl)
    try:
        seconds = float(ttl)
    except Exception:  # whatever a ``__float__`` raises, the TTL is refused the same way
        seconds = math.nan
    if not 0.0 < seconds <= _MAX_TTL:  # also false for NaN
        raise InvalidTTLError(ttl)
    return seconds


class Stamp(msgspec.Struct, frozen=True):
    """When a write happens and when what it writes expires: the same for every entry of one call."""

    created_at: str
    expires_at: str | None
    expires_epoch: float | None
    """``expires_at`` as seconds since the epoch, which is what backends are given."""


def stamp(ttl: float | None) -> Stamp:
    """Return the timestamps of a write made now with ``ttl`` seconds to live (already checked)."""
    now = datetime.now(UTC)
    if ttl is None:
        return Stamp(now.isoformat(), None, None)
    try:
        expires = now + timedelta(seconds=ttl)
    except OverflowError:
        raise InvalidTTLError(ttl) from None
    return Stamp(now.isoformat(), expires.isoformat(), expires.timestamp())


def encode_value(value: Mapping[str, Any]) -> bytes:
    """Return ``value`` as sorted-key JSON, refusing what JSON cannot hold exactly (SPEC.md section 3).

    The fast path encodes with msgspec and checks that decoding gives back an equal mapping: msgspec
    also encodes datetimes, UUIDs, bytes, sets and NaN (as ``null``), and a round trip is the cheapest
    way to catch each of them. Only a mismatch walks the value to name the exact problem.
    """
    if type(value) is not dict:
        if not isinstance(value, Mapping):
            raise TypeError(f"a value must be a mapping with str keys, not {type(value).__name__}")
        value = _normalized(value, "value")
    refused: str | None = None  # raised outside the ``except``: the driver's error holds the text
    try:
        encoded = _encoder.encode(value)
        if _value_decoder.decode(encoded) == value:
            return encoded
    except UnicodeEncodeError:
        refused = "The value holds a lone surrogate, which UTF-8 cannot encode."
    except RecursionError:
        refused = "The value is nested too deeply to store."
    except (TypeError, ValueError, OverflowError, msgspec.MsgspecError):
        pass
    if refused is not None:
        raise SerializationError(refused)
    try:
        plain = _normalized(value, "value")
    except RecursionError:
        refused = "The value is nested too deeply to store."
    if refused is not None:
        raise SerializationError(refused)
    return _encoder.encode(plain)


def decode_value(data: bytes | str) -> dict[str, Any]:
    """Return the mapping JSON ``data`` holds; raise :class:`DeserializationError` for anything else."""
    try:
        return _value_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DeserializationError(f"The stored data is not a JSON object: {exc}") from None


def _normalized(obj: Any, path: str) -> Any:
    """Return ``obj`` as plain JSON types (tuples become lists), or raise the error that fits."""
    kind = type(obj)
    if kind is str or kind is int or kind is bool or obj is None:
        return obj
    if kind is float or isinstance(obj, float):
        if not math.isfinite(obj):
            raise SerializationError(f"{path} is not a finite number; JSON has no NaN or infinity")
        return float(obj)
    if isinstance(obj, Mapping):
        plain: dict[str, Any] = {}
        for name, item in obj.items():
            if not isinstance(name, str):
                raise TypeError(f"{path} has a key of type {type(name).__name__}; keys must be str")
            plain[str(name)] = _normalized(item, f"{path}[{name!r}]")
        return plain
    if isinstance(obj, list | tuple):
        return [_normalized(item, f"{path}[{index}]") for index, item in enumerate(obj)]
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, int):
        return int(obj)
    raise SerializationError(f"{path} is a {kind.__name__}, which JSON cannot hold")


def encode_entry(key: str, collection: str, value: bytes, stamp: Stamp) -> bytes:
    """Return the stored document for an encoded ``value`` (see :func:`encode_value`)."""
    document = _Document(
        collection=collection,
        created_at=stamp.created_at,
        expires_at=stamp.expires_at,
        key=key,
        value=msgspec.Raw(value),
        version=1,
    )
    try:
        return msgspec.json.format(_encoder.encode(document), indent=0)
    except UnicodeEncodeError:
        pass
    raise InvalidKeyError(SURROGATE_NAME)


SURROGATE_NAME: Final = "The key or collection name holds a lone surrogate, which UTF-8 cannot encode."


def decode_entry(data: bytes | str, *, backend: str, collection: str, key: str) -> Entry:
    """Parse a stored document; raise :class:`DeserializationError` naming the entry if it is not one."""
    problem: str | None = None
    try:
        document = _entry_decoder.decode(data)
        value = document.value
        if type(value) is str:
            value = _value_decoder.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        problem = str(exc)
    if problem is not None:  # raised outside the ``except``, so no chained error carries the document
        raise DeserializationError(
            f"Stored entry is not a valid document: {problem}", backend=backend, collection=collection, key=key
        )
    expires_at = document.expires_at
    if expires_at is None:
        return value, None  # type: ignore[return-value]
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    return value, expires_at.timestamp()  # type: ignore[return-value]

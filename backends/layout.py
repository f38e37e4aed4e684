"""The reference's key layout for stores with one flat key space: ``{collection}::{key}``.

py-key-value writes a key of ``collection`` as ``"{collection}::{key}"`` (diskcache, Redis), so
kvrt does too, and either library reads the other's data. Left as it is, ``("a::b", "c")`` and
``("a", "b::c")`` would share a key; so a collection name holding ``%`` or ``:`` has those two
characters percent-encoded (the first ``::`` of a stored key then always ends the collection).
Other names are stored as they are.
"""

from __future__ import annotations

SEPARATOR = "::"


def collection_prefix(collection: str) -> str:
    """Return what every stored key of ``collection`` starts with."""
    if "%" in collection or ":" in collection:
        collection = collection.replace("%", "%25").replace(":", "%3A")
    return collection + SEPARATOR


def past_prefix(prefix: str) -> str:
    """Return the first string after every string that starts with ``prefix`` (a collection's end, for a range scan).

    Code point order is UTF-8 byte order, so this holds for SQLite's text and RocksDB's bytes alike.
    """
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def compound_key(collection: str, key: str) -> str:
    """Return the stored key of ``key`` in ``collection``."""
    return collection_prefix(collection) + key


def split_compound_key(stored: object) -> tuple[str, str] | None:
    """Return the (collection, key) a stored key stands for, or ``None`` if it is not in kvrt's layout."""
    if not isinstance(stored, str) or SEPARATOR not in stored:
        return None
    collection, key = stored.split(SEPARATOR, 1)
    if "%" in collection:
        collection = collection.replace("%3A", ":").replace("%25", "%")
    return collection, key

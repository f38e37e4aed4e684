"""What a backend reads of a stored document without decoding its value: whose entry it is, when it expires.

The worker decodes every document it returns and hides expired ones. A backend reads these fields
only where it judges entries itself: a delete (removing an expired entry removes nothing live), a
listing, a cull, and a store that folds names together (the document says which entry it holds).
A document that does not parse is not the backend's to judge: it says nothing of itself, never
expires, and the worker reports it when it is read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import msgspec


class Header(msgspec.Struct):
    """The fields of a document a backend may need; the value is skipped, not built."""

    collection: str | None = None
    key: str | None = None
    expires_at: datetime | None = None


UNREADABLE: Final = Header()
"""What a document that does not parse says of itself: nothing."""

_decode: Final = msgspec.json.Decoder(Header).decode


def header(document: bytes | str) -> Header:
    """Return what ``document`` says of itself (:data:`UNREADABLE` if it does not parse)."""
    try:
        return _decode(document)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return UNREADABLE


def expiry_of(found: Header) -> float | None:
    """Return when the document ``found`` was read from expires (epoch seconds; ``None``: never)."""
    expires = found.expires_at
    if expires is None:
        return None
    if expires.tzinfo is None:  # the reference writes UTC; a naive time is read as UTC too
        expires = expires.replace(tzinfo=UTC)
    return expires.timestamp()


def expiry(document: object) -> float | None:
    """Return when ``document`` expires (epoch seconds); ``None`` if never, or if it is no document."""
    if type(document) is bytes:
        if b'"expires_at"' not in document:  # most documents never expire: no parse for them
            return None
    elif type(document) is str:
        if '"expires_at"' not in document:
            return None
    else:
        return None
    return expiry_of(header(document))


def is_live(document: object, now: float) -> bool:
    """Say whether ``document`` has not expired by ``now`` (epoch seconds)."""
    expires = expiry(document)
    return expires is None or expires > now

"""Names a store cannot hold as they are: a collision-proof stand-in, the SHA-256 of the name.

Where a store bounds a name's length (S3's 1,024-byte object keys, DynamoDB's key attributes, a
file system's names), a name past the bound is stored as ``%%`` and its SHA-256, and the name itself
is kept in the entry. ``%%`` starts no name kvrt stores otherwise (its encodings write ``%`` as
``%25``, and where names go unencoded a name that starts with ``%%`` is hashed too), so a hashed
stand-in never meets a real name.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote

HASHED = "%%"


def hashed(name: str) -> str:
    """Return the stand-in stored for ``name``."""
    return HASHED + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()


def is_hashed(stored: str) -> bool:
    """Whether ``stored`` is a stand-in (the real name is then in the entry)."""
    return stored.startswith(HASHED)


def _escaped(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode())


def percent_encode(unsafe: re.Pattern[str], name: str) -> str:
    """Return ``name`` with what ``unsafe`` matches percent-encoded (``unsafe`` must match ``%``)."""
    return unsafe.sub(_escaped, name)


def percent_decode(stored: str) -> str:
    """Return the name a percent-encoded name stands for."""
    return unquote(stored) if "%" in stored else stored

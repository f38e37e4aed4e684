"""What backends read of a stored document without its value (backends/documents.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from kvrt.backends.documents import UNREADABLE, expiry, header, is_live

AT = datetime(2030, 1, 2, 3, 4, 5, 250_000, tzinfo=UTC)


@pytest.fixture(autouse=True)
def away_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run where local time is not UTC, so a naive time read as local would be hours off."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(
    "document",
    [
        f'{{"collection": "c", "expires_at": "{AT.isoformat()}", "key": "k", "value": {{"a": 1}}}}',
        f'{{"expires_at": "{AT.isoformat().replace("+00:00", "")}", "value": {{}}}}',  # naive: read as UTC
        f'{{"expires_at": "{AT.astimezone().isoformat()}", "value": {{}}}}',  # the same moment, local offset
    ],
)
def test_the_expiry_is_the_documents_moment(document: str) -> None:
    assert expiry(document) == AT.timestamp()
    assert expiry(document.encode()) == AT.timestamp()
    assert is_live(document, AT.timestamp() - 0.001)
    assert not is_live(document, AT.timestamp())


def test_the_header_names_the_entry() -> None:
    found = header(b'{"collection": "c", "key": "k", "value": {"a": [1, 2]}}')
    assert (found.collection, found.key, found.expires_at) == ("c", "k", None)


@pytest.mark.parametrize("document", [b"not json", b"[1, 2]", b'{"expires_at": "not a date"}', b"[" * 100_000])
def test_what_does_not_parse_says_nothing_and_never_expires(document: bytes) -> None:
    assert header(document) is UNREADABLE
    assert is_live(document, AT.timestamp())


@pytest.mark.parametrize("stored", [None, 42, b'{"value": {}}', '{"value": {}}'])
def test_what_holds_no_expiry_never_expires(stored: object) -> None:
    assert expiry(stored) is None
    assert is_live(stored, AT.timestamp())

"""The same keyring file, written by one library and read by the other (SPEC.md section 5).

The reference's ``KeyringStore`` uses the keyring ``keyring`` selects, so each test selects a
keyrings.alt file keyring under its ``tmp_path`` (``keyring.set_keyring``) and restores the one
selected before; kvrt's backend is left to find the same one. Nothing is written to the real
keyring in the home directory.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring
import pytest
from keyrings.alt.file import PlaintextKeyring

from kvrt import Runtime
from kvrt.backends.keyring import KeyringBackend
from kvrt.testing.conformance import assert_ttl, sleep_past
from kvrt.testing.servers import reference_module

keyring_store = reference_module("key_value.aio.stores.keyring")

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore:A configured store is unstable")]

VALUES: dict[str, dict[str, Any]] = {
    "user-1": {"name": "Alice", "age": 30, "tags": ["a", "b"], "active": True},
    "..": {"nested": {"list": [1, 2.5, None]}, "unicode": "héllo 🎉"},
    "a/b c": {},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def ring(tmp_path: Path) -> Iterator[PlaintextKeyring]:
    home = Path(PlaintextKeyring().file_path)
    before = home.stat().st_mtime_ns if home.exists() else None
    selected = PlaintextKeyring()
    selected.file_path = str(tmp_path / "keyring.cfg")
    previous = keyring.get_keyring()
    keyring.set_keyring(selected)
    try:
        yield selected
    finally:
        keyring.set_keyring(previous)
    assert (home.stat().st_mtime_ns if home.exists() else None) == before, "the real keyring file was written"


async def test_kvrt_reads_what_the_reference_wrote(ring: PlaintextKeyring) -> None:
    reference = keyring_store.KeyringStore()
    for key, value in VALUES.items():
        await reference.put(key, value, collection="users")
    await reference.put("brief", {"v": 1}, collection="users", ttl=100)
    await reference.put("gone", {"v": 2}, collection="users", ttl=0.2)
    expiry = time.time() + 0.2
    await sleep_past(expiry)

    async with Runtime() as runtime:
        store = await runtime.spawn(KeyringBackend())
        assert await store.get_many(list(VALUES), collection="users") == list(VALUES.values())
        assert_ttl(await store.ttl("brief", collection="users"), {"v": 1}, 100)
        assert await store.get("gone", collection="users") is None
        assert await store.delete("user-1", collection="users") is True
    assert await reference.get("user-1", collection="users") is None


async def test_the_reference_reads_what_kvrt_wrote(ring: PlaintextKeyring) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(KeyringBackend())
        await store.put_many(list(VALUES), list(VALUES.values()), collection="users")
        await store.put("brief", {"v": 1}, collection="users", ttl=100)
        await store.put("gone", {"v": 2}, collection="users", ttl=0.2)
        expiry = time.time() + 0.2

    reference = keyring_store.KeyringStore()
    for key, value in VALUES.items():
        assert await reference.get(key, collection="users") == value
    assert_ttl(await reference.ttl("brief", collection="users"), {"v": 1}, 100)
    await sleep_past(expiry)
    assert await reference.get("gone", collection="users") is None
    assert await reference.get("missing", collection="users") is None
    assert await reference.delete("brief", collection="users") is True


async def test_a_named_service_is_shared_too(ring: PlaintextKeyring) -> None:
    reference = keyring_store.KeyringStore(service_name="my-app")
    await reference.put("k", {"from": "reference"})
    async with Runtime() as runtime:
        store = await runtime.spawn(KeyringBackend("my-app"))
        default = await runtime.spawn(KeyringBackend(), name="default service")
        assert await store.get("k") == {"from": "reference"}
        assert await default.get("k") is None
        await store.put("j", {"from": "kvrt"})
    assert await reference.get("j") == {"from": "kvrt"}

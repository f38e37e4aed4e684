"""The keyring backend on keyrings.alt's file keyring (``PlaintextKeyring``), the one keyring that runs here.

Every keyring in these tests keeps its file under the test's ``tmp_path``, or is the dict keyring
below; the autouse fixture checks that the real keyring file in the home directory is never written.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import keyring
import keyring.backend
import keyring.backends.chainer
import keyring.backends.fail
import keyring.backends.null
import keyring.errors
import pytest
from keyrings.alt.file import PlaintextKeyring

from kvrt import Runtime
from kvrt.backends.keyring import DEFAULT_SERVICE, KeyringBackend, blob_limit, folds_case, username
from kvrt.backends.names import hashed
from kvrt.errors import EntryTooLargeError, InvalidKeyError, StoreSetupError
from kvrt.testing import ConformanceSuite, raw_put
from kvrt.testing.conformance import sleep_past

pytestmark = pytest.mark.anyio


def file_keyring(path: Path) -> PlaintextKeyring:
    ring = PlaintextKeyring()
    ring.file_path = str(path)
    return ring


class DictKeyring(keyring.backend.KeyringBackend):
    """A keyring that tells names apart by case (as Secret Service and the macOS Keychain do)."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.secrets: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.secrets.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.secrets[service, username] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.secrets.pop((service, username), None) is None:
            raise keyring.errors.PasswordDeleteError("not found")


class WindowsLikeKeyring(PlaintextKeyring):  # type: ignore[misc]
    """A file keyring that the backend takes for the Windows Credential Manager (by its module)."""

    __module__ = "keyring.backends.Windows"


@pytest.fixture(autouse=True)
def home_keyring_untouched() -> Iterator[None]:
    home = Path(PlaintextKeyring().file_path)
    before = home.stat().st_mtime_ns if home.exists() else None
    yield
    after = home.stat().st_mtime_ns if home.exists() else None
    assert before == after, f"a test wrote to the real keyring file {home}"


class TestKeyringConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> KeyringBackend:
        return KeyringBackend(keyring=file_keyring(tmp_path / "keyring.cfg"))


HOSTILE = {"dot dot": "..", "slash": "/", "nul": "a\0b", "long": "x" * 1000, "traversal": "../../etc/passwd"}


@pytest.mark.parametrize("name", HOSTILE.values(), ids=HOSTILE.keys())
async def test_hostile_names_round_trip(tmp_path: Path, name: str) -> None:
    ring = file_keyring(tmp_path / "keyring.cfg")
    async with Runtime() as runtime:
        store = await runtime.spawn(KeyringBackend(keyring=ring))
        await store.put(name, {"as": "key"}, collection="c")
        await store.put("k", {"as": "collection"}, collection=name)
        assert await store.get(name, collection="c") == {"as": "key"}
        assert await store.get("k", collection=name) == {"as": "collection"}
        assert await store.get(name, collection="d") is None
        assert await store.delete(name, collection="c") is True
        assert await store.get(name, collection="c") is None
        assert await store.get("k", collection=name) == {"as": "collection"}


def test_user_names_are_the_references_unless_no_keyring_could_hold_them() -> None:
    assert username("users", "u1") == "users::u1"
    assert username("c", "..") == "c::.."
    assert username("/", "k") == "/::k"
    assert username("a::b", "c") != username("a", "b::c")
    assert username("c", "a\0b") == hashed("c::a\0b")
    assert username("c", "x" * 509) == "c::" + "x" * 509, "512 characters stay as they are"
    assert username("c", "x" * 510) == hashed("c::" + "x" * 510)
    assert username("c", "🎉" * 254) == "c::" + "🎉" * 254, "counted in UTF-16 units, as Windows counts"
    assert username("c", "🎉" * 255) == hashed("c::" + "🎉" * 255)


async def test_secrets_are_filed_under_the_service_and_the_users_name(tmp_path: Path) -> None:
    ring = file_keyring(tmp_path / "keyring.cfg")
    async with Runtime() as runtime:
        store = await runtime.spawn(KeyringBackend(keyring=ring))
        other = await runtime.spawn(KeyringBackend("another-app", keyring=ring), name="other")
        await store.put("u1", {"v": 1}, collection="users")
        await store.put("x" * 1000, {"v": 2}, collection="users")
        assert await other.get("u1", collection="users") is None, "services are separate"
    document = ring.get_password(DEFAULT_SERVICE, "users::u1")
    assert document is not None
    assert '"value": {"v": 1}' in document
    assert ring.get_password(DEFAULT_SERVICE, hashed("users::" + "x" * 1000)) is not None


async def test_case_twins_never_replace_each_other_on_a_keyring_that_folds_case(tmp_path: Path) -> None:
    ring = file_keyring(tmp_path / "keyring.cfg")
    assert folds_case(ring)
    async with Runtime() as runtime:
        store = await runtime.spawn(KeyringBackend(keyring=ring))
        await store.put("Key", {"v": "upper"})
        with pytest.raises(InvalidKeyError, match="does not tell names apart by case") as raised:
            await store.put("key", {"v": "lower"})
        assert (raised.value.backend, raised.value.key) == ("keyring", "key")
        assert await store.get("key") is None, "the secret found belongs to another entry"
        assert await store.delete("key") is False
        assert await store.get("Key") == {"v": "upper"}, "nothing already stored is lost"
        with pytest.raises(InvalidKeyError):
            await store.put_many(["fresh", "Pair", "pair"], [{"v": 1}, {"v": 2}, {"v": 3}])
        assert await store.get_many(["fresh", "Pair", "pair"]) == [None, None, None], "the batch is refused whole"
        with pytest.raises(InvalidKeyError):
            await store.put_many(["fresh", "KEY"], [{"v": 1}, {"v": 2}])
        assert await store.get("fresh") is None
        await store.put_many(["same", "same"], [{"v": 1}, {"v": 2}])
        assert await store.get("same") == {"v": 2}, "a key given twice is no twin: the later put wins"


async def test_case_twins_are_two_entries_on_a_keyring_that_tells_case_apart() -> None:
    ring = DictKeyring()
    assert not folds_case(ring)
    async with Runtime() as runtime:
        store = await runtime.spawn(KeyringBackend(keyring=ring))
        await store.put_many(["Key", "key"], [{"v": "upper"}, {"v": "lower"}])
        await store.put("KEY", {"v": "shout"})
        assert await store.get_many(["Key", "key", "KEY"]) == [{"v": "upper"}, {"v": "lower"}, {"v": "shout"}]


def test_a_chain_folds_case_if_a_keyring_in_it_does(tmp_path: Path) -> None:
    class Chain(keyring.backends.chainer.ChainerBackend):
        backends: ClassVar[list[keyring.backend.KeyringBackend]] = []

        def __init__(self, *backends: keyring.backend.KeyringBackend) -> None:
            type(self).backends = list(backends)

    assert not folds_case(Chain(DictKeyring()))
    assert folds_case(Chain(DictKeyring(), file_keyring(tmp_path / "keyring.cfg")))


async def test_an_expired_entry_is_removed_when_read_and_its_delete_reports_false(tmp_path: Path) -> None:
    ring = file_keyring(tmp_path / "keyring.cfg")
    async with Runtime() as runtime:
        store = await runtime.spawn(KeyringBackend(keyring=ring))
        await store.put_many(["read", "deleted", "live"], [{"v": 1}, {"v": 2}, {"v": 3}], ttl=0.3)
        await store.put("live", {"v": 3}, ttl=100)
        expiry = time.time() + 0.3
        await sleep_past(expiry)
        assert await store.get("read") is None
        assert ring.get_password(DEFAULT_SERVICE, "default_collection::read") is None, "removed by the read"
        assert ring.get_password(DEFAULT_SERVICE, "default_collection::deleted") is not None
        assert await store.delete("deleted") is False, "an expired entry does not count as deleted"
        assert ring.get_password(DEFAULT_SERVICE, "default_collection::deleted") is None, "but it is gone"
        assert await store.delete("live") is True


async def test_a_document_without_names_is_read_as_the_entry_asked_for(tmp_path: Path) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(KeyringBackend(keyring=file_keyring(tmp_path / "keyring.cfg")))
        await raw_put(store, "c", "bare", b'{"value": {"a": 1}}')
        assert await store.get("bare", collection="c") == {"a": 1}
        assert await store.delete("bare", collection="c") is True


async def test_the_default_is_the_keyring_keyring_selects(tmp_path: Path) -> None:
    selected = file_keyring(tmp_path / "selected.cfg")
    previous = keyring.get_keyring()
    keyring.set_keyring(selected)
    try:
        async with Runtime() as runtime:
            store = await runtime.spawn(KeyringBackend())
            await store.put("u1", {"v": 1}, collection="users")
            assert await store.get("u1", collection="users") == {"v": 1}
    finally:
        keyring.set_keyring(previous)
    assert selected.get_password(DEFAULT_SERVICE, "users::u1") is not None


async def test_the_selected_keyring_is_read_at_open_not_at_construction(tmp_path: Path) -> None:
    backend = KeyringBackend()
    selected = file_keyring(tmp_path / "selected.cfg")
    previous = keyring.get_keyring()
    keyring.set_keyring(selected)
    try:
        async with Runtime() as runtime:
            await (await runtime.spawn(backend)).put("k", {"v": 1})
    finally:
        keyring.set_keyring(previous)
    assert selected.get_password(DEFAULT_SERVICE, "default_collection::k") is not None


@pytest.mark.parametrize("kind", [keyring.backends.fail.Keyring, keyring.backends.null.Keyring], ids=["fail", "null"])
async def test_no_usable_keyring_is_a_setup_error_at_spawn(kind: type[keyring.backend.KeyringBackend]) -> None:
    ring = kind()
    previous = keyring.get_keyring()
    keyring.set_keyring(ring)
    try:
        async with Runtime() as runtime:
            with pytest.raises(StoreSetupError, match="no usable keyring"):
                await runtime.spawn(KeyringBackend())
            with pytest.raises(StoreSetupError, match="no usable keyring"):
                await runtime.spawn(KeyringBackend(keyring=ring), name="given")
    finally:
        keyring.set_keyring(previous)


async def test_a_secret_past_windows_bound_is_refused_at_the_call(tmp_path: Path) -> None:
    ring = WindowsLikeKeyring()
    ring.file_path = str(tmp_path / "keyring.cfg")
    assert blob_limit(ring) == 2560
    assert blob_limit(file_keyring(tmp_path / "x.cfg")) is None
    async with Runtime() as runtime:
        store = await runtime.spawn(KeyringBackend(keyring=ring))
        await store.put("kept", {"v": "original"})
        with pytest.raises(EntryTooLargeError, match="at most 2,560 bytes") as raised:
            await store.put_many(["kept", "big"], [{"v": "new"}, {"s": "x" * 1200}])
        assert (raised.value.backend, raised.value.key) == ("keyring", "big")
        assert await store.get_many(["kept", "big"]) == [{"v": "original"}, None], "nothing of the batch is written"
        await store.put("small", {"s": "x" * 1000})
        assert await store.get("small") == {"s": "x" * 1000}


def test_bad_arguments_are_refused() -> None:
    for service in ("", "a\0b", 5):
        with pytest.raises(ValueError, match="service_name"):
            KeyringBackend(service)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keyring must be"):
        KeyringBackend(keyring="file")  # type: ignore[arg-type]

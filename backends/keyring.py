"""Entries as secrets in the OS keyring (macOS Keychain, Secret Service, Windows Credential Manager), via ``keyring``.

The layout is py-key-value's ``KeyringStore``'s (with its default, pass-through names), so either
library reads the other's secrets: each entry is the password of service ``service_name`` (by
default ``"py-key-value"``) and user name ``"{collection}::{key}"`` (:mod:`kvrt.backends.layout`),
and the password is the JSON document itself, expiry and all. A user name no keyring holds as it
is (one with a NUL, which Secret Service cannot carry and C APIs cut short, or one past 512
characters, Windows' bound) is stored as ``%%`` and its SHA-256 (:mod:`kvrt.backends.names`);
the document keeps the real names.

Keyring calls block, so they run on a thread of the backend's own, one hop per batch. The keyring
API cannot list secrets, so this backend offers no ``keys``, ``collections``, ``destroy`` or
``cull``: an expired entry stays until it is read (a read that finds one removes it), deleted or
overwritten.

Some keyrings fold case (keyrings.alt's file and registry keyrings, the Windows Credential
Manager): there ``"Key"`` and ``"key"`` are one secret. Every read checks that the secret it found
names the entry asked for, and on those keyrings a write that would replace another entry's secret
is refused with :class:`~kvrt.errors.InvalidKeyError`, before anything of its batch is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from kvrt.backends.base import Backend, Capabilities
from kvrt.backends.documents import Header, expiry_of, header
from kvrt.backends.layout import compound_key
from kvrt.backends.names import hashed
from kvrt.errors import EntryTooLargeError, InvalidKeyError, StoreSetupError
from kvrt.extras import needs_extra
from kvrt.lanes import ThreadLane
from kvrt.log import logger

with needs_extra("keyring", "KeyringBackend"):
    import keyring
    import keyring.backend
    import keyring.backends.chainer
    import keyring.backends.fail
    import keyring.backends.null
    import keyring.errors
    from keyring.backend import KeyringBackend as Keyring

_T = TypeVar("_T")
_log = logger.bind(backend="keyring")

DEFAULT_SERVICE = "py-key-value"
"""The reference's service name."""

_LONGEST_USERNAME = 512
"""UTF-16 units of the longest user name stored as it is (Windows holds 513)."""

_WINDOWS_BLOB = 2560
"""Bytes of the largest secret the Windows Credential Manager holds (it stores the text as UTF-16)."""

_CASE_FOLDING = frozenset({"keyrings.alt.file_base", "keyrings.alt.Windows", "keyring.backends.Windows"})
"""Modules whose keyrings match user names without regard to case (an INI file's options, the registry,
Windows credential targets)."""


def _names_other(found: Header, collection: str, key: str) -> bool:
    """Whether a found document belongs to another entry (a case twin on a keyring that folds case)."""
    return (found.collection is not None and found.collection != collection) or (
        found.key is not None and found.key != key
    )


def _expired(found: Header, now: float) -> bool:
    expires = expiry_of(found)
    return expires is not None and expires <= now


def username(collection: str, key: str) -> str:
    """Return the keyring user name of ``key`` in ``collection``."""
    name = compound_key(collection, key)
    if "\0" in name or len(name.encode("utf-16-le", "surrogatepass")) > 2 * _LONGEST_USERNAME:
        return hashed(name)
    return name


def _modules(ring: Keyring) -> set[str]:
    """Return the modules of ``ring``'s classes, and of the keyrings it chains."""
    modules = {cls.__module__ for cls in type(ring).__mro__}
    if isinstance(ring, keyring.backends.chainer.ChainerBackend):
        for inner in ring.backends:
            modules |= _modules(inner)
    return modules


def folds_case(ring: Keyring) -> bool:
    """Whether ``ring`` is known to take ``"Key"`` and ``"key"`` for one user name."""
    return not _CASE_FOLDING.isdisjoint(_modules(ring))


def blob_limit(ring: Keyring) -> int | None:
    """Return the most UTF-16 bytes a secret of ``ring`` may hold, ``None`` where it sets no bound."""
    return _WINDOWS_BLOB if "keyring.backends.Windows" in _modules(ring) else None


class KeyringBackend(Backend):
    """Entries in the keyring ``keyring`` selects (``keyring.get_keyring()``, read at open), or in ``keyring``.

    ``service_name`` is the service every entry is filed under: the reference's by default, so its
    ``KeyringStore`` and this backend share secrets.
    """

    name = "keyring"
    capabilities = Capabilities(
        native_ttl=False,
        # Every secret is its own keyring call (a file keyring rewrites its file for each): a small
        # batch keeps one hop short, so other callers' requests are not held behind a long merge.
        max_batch=64,
    )

    def __init__(
        self,
        service_name: str = DEFAULT_SERVICE,
        *,
        keyring: Keyring | None = None,
    ) -> None:
        if type(service_name) is not str or not service_name or "\0" in service_name:
            raise ValueError("service_name must be a non-empty str without NUL")
        if keyring is not None and not isinstance(keyring, Keyring):
            raise TypeError(f"keyring must be a keyring.backend.KeyringBackend, not {type(keyring).__name__}")
        self.service_name = service_name
        self._given = keyring
        self._ring: Keyring | None = None
        self._folds_case = False
        self._blob_limit: int | None = None
        self._lane = ThreadLane(f"kvrt {self.name} lane")

    @property
    def keyring(self) -> Keyring:
        """The keyring in use (only between :meth:`open` and :meth:`close`)."""
        return self.opened(self._ring)

    async def _run(self, call: Callable[..., _T], *args: Any) -> _T:
        """Run a blocking call on this backend's thread lane, in order, off the event loop."""
        return await self._lane.run(call, *args)

    async def open(self) -> None:
        """Select the keyring and learn its bounds (which may probe the system's keyrings: on the lane)."""
        try:
            self._ring, self._folds_case, self._blob_limit = await self._run(self._select)
        except BaseException:
            await self._lane.aclose()  # the runtime closes only backends that opened
            raise
        _log.debug("keyring.selected", keyring=type(self._ring).__name__, folds_case=self._folds_case)

    def _select(self) -> tuple[Keyring, bool, int | None]:
        ring = self._given if self._given is not None else keyring.get_keyring()
        if isinstance(ring, keyring.backends.fail.Keyring | keyring.backends.null.Keyring):
            raise StoreSetupError(
                f"keyring has no usable keyring here ({type(ring).__module__}.{type(ring).__name__}): "
                "install one (keyrings.alt has file keyrings) or pass keyring=",
                backend=self.name,
            )
        return ring, folds_case(ring), blob_limit(ring)

    async def close(self) -> None:
        """End the thread lane; the keyring itself needs no closing."""
        self._ring = None
        await self._lane.aclose()

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        """Read every secret in one hop; remove those found expired."""
        return await self._run(self._get_many, self.keyring, collection, keys)

    def _get_many(self, ring: Keyring, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        now = time.time()
        found: list[bytes | str | None] = []
        for key in keys:
            user = username(collection, key)
            document = ring.get_password(self.service_name, user)
            if document is None or _names_other(found_header := header(document), collection, key):
                found.append(None)
            elif _expired(found_header, now):
                self._remove(ring, user)
                found.append(None)
            else:
                found.append(document)
        return found

    async def put_many(
        self,
        collection: str,
        keys: Sequence[str],
        entries: Sequence[bytes],
        expires_at: Sequence[float | None],
    ) -> None:
        """Check the whole batch, then write each secret (the expiry is in the document)."""
        documents = [entry.decode() for entry in entries]
        self._check_sizes(collection, keys, documents)
        await self._run(self._put_many, self.keyring, collection, keys, documents)

    def _check_sizes(self, collection: str, keys: Sequence[str], documents: list[str]) -> None:
        limit = self._blob_limit
        if limit is None:
            return
        for key, document in zip(keys, documents, strict=True):
            size = len(document.encode("utf-16-le"))
            if size > limit:
                raise EntryTooLargeError(
                    f"this keyring holds secrets of at most {limit:,} bytes; this entry needs {size:,}",
                    backend=self.name,
                    collection=collection,
                    key=key,
                )

    def _put_many(self, ring: Keyring, collection: str, keys: Sequence[str], documents: list[str]) -> None:
        users = [username(collection, key) for key in keys]
        if self._folds_case:
            self._refuse_case_twins(ring, collection, keys, users)
        for user, document in zip(users, documents, strict=True):
            ring.set_password(self.service_name, user, document)

    def _refuse_case_twins(self, ring: Keyring, collection: str, keys: Sequence[str], users: list[str]) -> None:
        """Raise if a write would replace the secret of another entry, on a keyring that folds case."""
        folded: dict[str, str] = {}
        for key, user in zip(keys, users, strict=True):
            if folded.setdefault(user.casefold(), key) != key:
                raise self._twin(collection, key)
        for key, user in zip(keys, users, strict=True):
            document = ring.get_password(self.service_name, user)
            if document is not None and _names_other(header(document), collection, key):
                raise self._twin(collection, key)

    def _twin(self, collection: str, key: str) -> InvalidKeyError:
        return InvalidKeyError(
            "this keyring does not tell names apart by case, and another entry already holds this key's secret",
            backend=self.name,
            collection=collection,
            key=key,
        )

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Delete every secret in one hop; an expired entry is removed but does not count."""
        return await self._run(self._delete_many, self.keyring, collection, keys)

    def _delete_many(self, ring: Keyring, collection: str, keys: Sequence[str]) -> list[bool]:
        now = time.time()
        removed: list[bool] = []
        for key in keys:
            user = username(collection, key)
            document = ring.get_password(self.service_name, user)
            if document is None or _names_other(found_header := header(document), collection, key):
                removed.append(False)
            else:
                removed.append(self._remove(ring, user) and not _expired(found_header, now))
        return removed

    def _remove(self, ring: Keyring, user: str) -> bool:
        """Delete one secret; ``False`` if it had gone already (another process deleted it first)."""
        try:
            ring.delete_password(self.service_name, user)
        except keyring.errors.PasswordDeleteError:
            return False
        return True

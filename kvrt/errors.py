"""The error tree every kvrt handle raises (SPEC.md section 6).

The names and the shape follow py-key-value's, so code that catches the reference's errors by name
keeps working. kvrt's runtime adds its own errors under the same base. An error names the backend,
collection and key it concerns; it never carries a value or a credential.
"""

from __future__ import annotations

from typing import Any

ExtraInfo = dict[str, str | int | float | bool | None]


class _Root(Exception):
    """A plain base under every kvrt error, so the reference's classes can become their bases too.

    (A class's bases can be changed only between bases of one layout; ``Exception`` itself is not one.)
    """


class KeyValueError(_Root):
    """Base of every error kvrt raises on purpose.

    ``backend``, ``collection`` and ``key`` say where it happened, when known; ``extra_info``
    holds further plain facts (sizes, operation names), never values.
    """

    reason: str
    """What went wrong, without the facts of where."""
    message: str
    """``reason`` followed by the facts: backend, collection, key and ``extra_info``."""
    extra_info: ExtraInfo | None
    backend: str | None
    collection: str | None
    key: str | None

    def __init__(
        self,
        message: str | None = None,
        extra_info: ExtraInfo | None = None,
        *,
        backend: str | None = None,
        collection: str | None = None,
        key: str | None = None,
    ) -> None:
        self.reason = message or ""
        self.extra_info = extra_info
        self.backend = backend
        self.collection = collection
        self.key = key
        self.message = self._compose()
        Exception.__init__(self, self.message)  # not super(): the reference's __init__ may follow in the MRO

    def _compose(self) -> str:
        facts: ExtraInfo = {}
        if self.backend is not None:
            facts["backend"] = self.backend
        if self.collection is not None:
            facts["collection"] = _clip(self.collection)
        if self.key is not None:
            facts["key"] = _clip(self.key)
        if self.extra_info:
            facts.update(self.extra_info)
        detail = "; ".join(f"{name}: {fact}" for name, fact in facts.items())
        if not detail:
            return self.reason
        return f"{self.reason} ({detail})" if self.reason else detail

    def locate(self, *, backend: str | None, collection: str | None = None, key: str | None = None) -> None:
        """Fill in where this error happened, for errors raised before that was known."""
        self.backend = self.backend or backend
        self.collection = self.collection or collection
        self.key = self.key or key
        self.message = self._compose()
        self.args = (self.message,)


BaseKeyValueError = KeyValueError
"""The reference project's name for :class:`KeyValueError`."""


def _clip(name: str, limit: int = 120) -> str:
    """``name`` for a message: cut short if long, with any lone surrogate escaped so it can be printed."""
    if not name.isascii():
        name = name.encode("utf-8", "backslashreplace").decode("utf-8")
    return name if len(name) <= limit else f"{name[:limit]}…({len(name)} chars)"


class KeyValueOperationError(KeyValueError):
    """An operation was refused or failed because of what was asked, not because of the store."""


class SerializationError(KeyValueOperationError):
    """A value cannot be stored as JSON (a leaf JSON cannot hold, or a non-finite float)."""


class DeserializationError(KeyValueOperationError):
    """A stored entry cannot be read back: unparsable JSON or dates, or no ``value`` field."""


class MissingKeyError(KeyValueOperationError):
    """A key that was required is not in the store."""


class InvalidTTLError(KeyValueOperationError):
    """A TTL is not a positive, finite number of seconds that a date can hold."""

    def __init__(
        self,
        ttl: Any,
        extra_info: ExtraInfo | None = None,
        *,
        backend: str | None = None,
        collection: str | None = None,
        key: str | None = None,
    ) -> None:
        try:
            shown = _clip(repr(ttl), 60)
        except Exception:  # a TTL object whose repr fails is still named by its type
            shown = "?"
        facts: ExtraInfo = {"ttl": shown, "type": type(ttl).__name__}
        super().__init__(
            "A TTL is invalid.",
            {**facts, **(extra_info or {})},
            backend=backend,
            collection=collection,
            key=key,
        )


class InvalidKeyError(KeyValueOperationError):
    """A key or collection name is not allowed (the empty string)."""


class ValueTooLargeError(KeyValueOperationError):
    """A value is larger than the backend accepts."""


class EncryptionError(KeyValueOperationError):
    """Encrypting or decrypting a value failed."""


class DecryptionError(EncryptionError):
    """Decrypting a stored value failed."""


class CorruptedDataError(DecryptionError):
    """Encrypted data was altered or damaged."""


class EncryptionVersionError(EncryptionError):
    """Encrypted data uses a format version this code does not know."""


class ReadOnlyError(KeyValueOperationError):
    """A write was attempted through a read-only handle."""


class EntryTooLargeError(KeyValueOperationError):
    """An entry is above a configured size limit."""


class EntryTooSmallError(KeyValueOperationError):
    """An entry is below a configured size limit."""


class KeyValueStoreError(KeyValueError):
    """The store itself failed: setup, connection, or a driver error."""


class StoreSetupError(KeyValueStoreError):
    """A backend could not be opened or prepared."""


class StoreConnectionError(KeyValueStoreError):
    """A backend's server could not be reached or stopped answering."""


class PathSecurityError(KeyValueStoreError):
    """A name would have escaped the directory or prefix it belongs to."""


class DeadlineExceededError(KeyValueError, TimeoutError):
    """A request's deadline passed before it was answered; it was not sent to the backend if still queued."""


class BackendUnavailableError(KeyValueStoreError):
    """The backend cannot take requests: its supervisor gave up on it, or its circuit is open."""


class OverloadedError(KeyValueError):
    """A backend's mailbox was full and the backpressure policy says to fail rather than wait."""


class RuntimeClosedError(KeyValueError):
    """The runtime that owns this handle has shut down, or is shutting down."""


class MissingExtraError(ImportError):
    """An optional driver is not installed; the message names the kvrt extra that installs it.

    An ``ImportError`` (not a :class:`KeyValueError`): it is raised when a backend module is
    imported, before any store exists.
    """


def _join_the_reference() -> None:
    from kvrt import reference_errors

    reference_errors.join_when_imported(globals())


_join_the_reference()

"""Unit tests of kvrt.errors: the tree of SPEC.md section 6, the runtime's additions, and the messages."""

from __future__ import annotations

import subprocess
import sys

import pytest

import kvrt.errors as errors
from kvrt.errors import (
    BackendUnavailableError,
    BaseKeyValueError,
    CorruptedDataError,
    DeadlineExceededError,
    DecryptionError,
    DeserializationError,
    EncryptionError,
    EncryptionVersionError,
    EntryTooLargeError,
    EntryTooSmallError,
    InvalidKeyError,
    InvalidTTLError,
    KeyValueError,
    KeyValueOperationError,
    KeyValueStoreError,
    MissingKeyError,
    OverloadedError,
    PathSecurityError,
    ReadOnlyError,
    RuntimeClosedError,
    SerializationError,
    StoreConnectionError,
    StoreSetupError,
    ValueTooLargeError,
)
from kvrt.testing.servers import reference_module

# (class, its parent in the tree of SPEC.md section 6)
TREE: list[tuple[type[Exception], type[Exception]]] = [
    (KeyValueError, Exception),
    (KeyValueOperationError, KeyValueError),
    (SerializationError, KeyValueOperationError),
    (DeserializationError, KeyValueOperationError),
    (MissingKeyError, KeyValueOperationError),
    (InvalidTTLError, KeyValueOperationError),
    (InvalidKeyError, KeyValueOperationError),
    (ValueTooLargeError, KeyValueOperationError),
    (EncryptionError, KeyValueOperationError),
    (DecryptionError, EncryptionError),
    (CorruptedDataError, DecryptionError),
    (EncryptionVersionError, EncryptionError),
    (ReadOnlyError, KeyValueOperationError),
    (EntryTooLargeError, KeyValueOperationError),
    (EntryTooSmallError, KeyValueOperationError),
    (KeyValueStoreError, KeyValueError),
    (StoreSetupError, KeyValueStoreError),
    (StoreConnectionError, KeyValueStoreError),
    (PathSecurityError, KeyValueStoreError),
]

TREE_CLASSES = [cls for cls, _ in TREE]
RUNTIME_CLASSES: list[type[Exception]] = [
    DeadlineExceededError,
    BackendUnavailableError,
    OverloadedError,
    RuntimeClosedError,
]
OPERATION_CLASSES = [
    cls for cls in TREE_CLASSES if cls is not KeyValueOperationError and issubclass(cls, KeyValueOperationError)
]
STORE_CLASSES = [cls for cls in TREE_CLASSES if cls is not KeyValueStoreError and issubclass(cls, KeyValueStoreError)]


@pytest.mark.parametrize(("cls", "parent"), TREE, ids=[cls.__name__ for cls, _ in TREE])
def test_tree_parent(cls: type[Exception], parent: type[Exception]) -> None:
    assert issubclass(cls, parent)
    kvrt_bases = [base for base in cls.__bases__ if not base.__module__.startswith("key_value.")]
    if cls is KeyValueError:  # under a plain base of its own, which lets the reference's tree be joined in
        assert [base.__name__ for base in kvrt_bases] == ["_Root"]
        assert kvrt_bases[0].__bases__ == (parent,)
    else:
        assert kvrt_bases == [parent], "the direct parent is the one SPEC.md section 6 names"
    others = [base for base in cls.__bases__ if base not in kvrt_bases]
    assert [base.__name__ for base in others] in ([], [_reference_name(cls)]), "only the reference's namesake joins"
    assert getattr(errors, cls.__name__) is cls, "importable from kvrt.errors under its own name"


def test_operation_and_store_branches_are_separate() -> None:
    assert len(OPERATION_CLASSES) == 13
    assert len(STORE_CLASSES) == 3
    for operation in OPERATION_CLASSES:
        assert not issubclass(operation, KeyValueStoreError), operation
    for store in STORE_CLASSES:
        assert not issubclass(store, KeyValueOperationError), store
    assert not issubclass(EncryptionVersionError, DecryptionError)
    assert not issubclass(DeserializationError, SerializationError)
    assert not issubclass(SerializationError, DeserializationError)


def test_base_alias() -> None:
    assert BaseKeyValueError is KeyValueError
    assert errors.BaseKeyValueError is errors.KeyValueError


@pytest.mark.parametrize("cls", TREE_CLASSES + RUNTIME_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_is_caught_by_the_base(cls: type[Exception]) -> None:
    error = InvalidTTLError(0) if cls is InvalidTTLError else cls("boom")
    with pytest.raises(BaseKeyValueError):
        raise error


def test_deadline_exceeded_is_a_timeout() -> None:
    assert issubclass(DeadlineExceededError, KeyValueError)
    assert issubclass(DeadlineExceededError, TimeoutError)
    assert not issubclass(DeadlineExceededError, KeyValueStoreError)
    with pytest.raises(TimeoutError):
        raise DeadlineExceededError("late", backend="redis", key="k")


def test_backend_unavailable_is_a_store_error() -> None:
    assert issubclass(BackendUnavailableError, KeyValueStoreError)
    assert not issubclass(BackendUnavailableError, KeyValueOperationError)


@pytest.mark.parametrize("cls", [OverloadedError, RuntimeClosedError], ids=lambda cls: cls.__name__)
def test_runtime_errors_are_key_value_errors(cls: type[Exception]) -> None:
    assert issubclass(cls, KeyValueError)
    assert not issubclass(cls, TimeoutError)


# ---------------------------------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------------------------------


def test_message_mentions_every_fact() -> None:
    error = SerializationError(
        "Cannot store this value.",
        {"operation": "put", "size": 12345, "strict": True},
        backend="redis-main",
        collection="users",
        key="user-17",
    )
    text = str(error)
    for fact in ("Cannot store this value.", "redis-main", "users", "user-17", "operation", "put", "size", "12345"):
        assert fact in text, fact
    assert (error.backend, error.collection, error.key) == ("redis-main", "users", "user-17")
    assert error.extra_info == {"operation": "put", "size": 12345, "strict": True}
    assert error.reason == "Cannot store this value."
    assert error.message == text
    assert error.args == (text,)


def test_message_without_facts_is_the_reason() -> None:
    assert str(KeyValueError("Just this.")) == "Just this."
    assert str(KeyValueError()) == ""


def test_facts_without_a_reason_still_show() -> None:
    text = str(StoreConnectionError(backend="redis", key="k9"))
    assert "redis" in text
    assert "k9" in text


def test_locate_fills_in_missing_facts() -> None:
    error = SerializationError("bad value")
    assert "mem" not in str(error)
    error.locate(backend="mem", collection="users", key="u1")
    text = str(error)
    for fact in ("bad value", "mem", "users", "u1"):
        assert fact in text, fact
    assert (error.backend, error.collection, error.key) == ("mem", "users", "u1")
    assert error.args == (error.message,)
    assert error.message == text


def test_locate_keeps_known_facts() -> None:
    error = DeserializationError("unreadable", {"bytes": 9}, backend="disk", key="original")
    error.locate(backend="memory", collection="c2", key="other")
    assert (error.backend, error.collection, error.key) == ("disk", "c2", "original")
    text = str(error)
    assert "disk" in text
    assert "memory" not in text
    assert "original" in text
    assert "other" not in text
    assert "c2" in text
    assert "bytes" in text, "extra_info survives locate()"


def _located_empty_key() -> None:
    try:
        raise InvalidKeyError("A key must not be empty.")
    except InvalidKeyError as error:
        error.locate(backend="s3-archive", collection="c")
        raise


def test_locate_reaches_the_raised_error() -> None:
    with pytest.raises(InvalidKeyError, match=r"A key must not be empty\..*s3-archive") as caught:
        _located_empty_key()
    assert caught.value.collection == "c"
    assert caught.value.args == (str(caught.value),)


def test_a_very_long_key_is_clipped() -> None:
    key = "k" * 5000
    error = MissingKeyError("missing", backend="mem", collection="c", key=key)
    text = str(error)
    assert key not in text
    assert len(text) < 500
    assert "k" * 50 in text, "the start of the key is still shown"
    assert error.key == key, "the attribute keeps the whole key"


def test_a_long_key_set_by_locate_is_clipped() -> None:
    key = "x" * 3000
    error = KeyValueError("oops")
    error.locate(backend="mem", key=key)
    assert key not in str(error)
    assert len(str(error)) < 500


def test_a_short_key_is_shown_whole() -> None:
    key = "k" * 100
    assert key in str(KeyValueError("x", key=key))


@pytest.mark.parametrize(
    ("ttl", "shown", "type_name"),
    [(-5, "-5", "int"), (0.0, "0.0", "float"), ("100", "'100'", "str"), (True, "True", "bool"), ([1], "[1]", "list")],
)
def test_invalid_ttl_mentions_ttl_and_type(ttl: object, shown: str, type_name: str) -> None:
    error = InvalidTTLError(ttl, backend="mem", collection="c", key="k")
    text = str(error)
    assert shown in text
    assert type_name in text
    assert "mem" in text
    assert "k" in text
    assert error.extra_info is not None
    assert error.extra_info["type"] == type_name


def test_invalid_ttl_clips_a_huge_repr() -> None:
    ttl = "9" * 10_000
    text = str(InvalidTTLError(ttl))
    assert ttl not in text
    assert len(text) < 300


def test_invalid_ttl_keeps_extra_info() -> None:
    text = str(InvalidTTLError(-1, {"operation": "put_many"}))
    assert "put_many" in text
    assert "-1" in text


# ---------------------------------------------------------------------------------------------------------------------
# Same names as the reference
# ---------------------------------------------------------------------------------------------------------------------

RUNTIME_NAMES = {"DeadlineExceededError", "BackendUnavailableError", "OverloadedError", "RuntimeClosedError"}
INSTALL_NAMES = {"MissingExtraError"}
"""kvrt's own error for a driver that is not installed (an ImportError, raised before any store exists)."""


def _error_names(module: object) -> set[str]:
    return {
        name
        for name, obj in vars(module).items()
        if isinstance(obj, type) and issubclass(obj, BaseException) and not name.startswith("_")
    }


def test_kvrt_error_names_exist_in_the_reference() -> None:
    reference = reference_module("key_value.aio.errors")
    kvrt_names = _error_names(errors)
    assert kvrt_names >= RUNTIME_NAMES
    # KeyValueError is kvrt's name for the reference's BaseKeyValueError, which kvrt keeps as an alias.
    missing = kvrt_names - RUNTIME_NAMES - INSTALL_NAMES - {"KeyValueError"} - _error_names(reference)
    assert not missing, f"kvrt errors the reference does not name: {sorted(missing)}"


def test_reference_error_names_exist_in_kvrt() -> None:
    reference = reference_module("key_value.aio.errors")
    missing = _error_names(reference) - _error_names(errors)
    assert not missing, f"reference errors kvrt does not name: {sorted(missing)}"


def _ancestor_names(cls: type) -> set[str]:
    renamed = {"BaseKeyValueError": "KeyValueError"}
    return {renamed.get(base.__name__, base.__name__) for base in cls.__mro__} - {"_Root"}


def _reference_name(cls: type) -> str:
    return "BaseKeyValueError" if cls.__name__ == "KeyValueError" else cls.__name__


def test_reference_tree_matches_by_name() -> None:
    reference = reference_module("key_value.aio.errors")
    for name in _error_names(reference):
        if name == "BaseKeyValueError":
            continue
        ours = _ancestor_names(getattr(errors, name))
        theirs = _ancestor_names(getattr(reference, name))
        assert ours == theirs, name


def test_missing_extra_is_an_import_error() -> None:
    assert issubclass(errors.MissingExtraError, ImportError)
    assert not issubclass(errors.MissingExtraError, errors.KeyValueError)


def _raise(name: str) -> None:
    cls = getattr(errors, "KeyValueError" if name == "BaseKeyValueError" else name)
    raise cls(30) if cls is errors.InvalidTTLError else cls("refused", backend="b", key="k")


def test_every_reference_error_catches_kvrts_of_the_same_name() -> None:
    reference = reference_module("key_value.aio.errors")
    names = sorted(_error_names(reference))
    assert "SerializationError" in names
    for name in names:
        with pytest.raises(getattr(reference, name)) as raised:
            _raise(name)
        assert isinstance(raised.value, errors.KeyValueError)
        assert raised.value.backend == "b" or name == "InvalidTTLError"
        assert raised.value.message == str(raised.value)  # kvrt's message, not the reference's re-made one


def test_runtime_errors_are_caught_as_the_references_base() -> None:
    reference = reference_module("key_value.aio.errors")
    for cls in (errors.DeadlineExceededError, errors.BackendUnavailableError, errors.RuntimeClosedError):
        with pytest.raises(reference.BaseKeyValueError):
            raise cls("no", backend="b")
    with pytest.raises(reference.KeyValueStoreError):
        raise errors.BackendUnavailableError("down")
    with pytest.raises(TimeoutError):
        raise errors.DeadlineExceededError("late")


@pytest.mark.parametrize("first", ["kvrt", "the reference"])
def test_the_reference_catches_kvrts_errors_whichever_is_imported_first(first: str) -> None:
    reference_module("key_value.aio.errors")  # installed (or, under CI, a failure)
    imports = ["import kvrt.errors as kvrt_errors", "import key_value.aio.errors as reference"]
    if first == "the reference":
        imports.reverse()
    script = "\n".join(
        [
            *imports,
            "for name in ('SerializationError', 'InvalidTTLError', 'StoreSetupError', 'BaseKeyValueError'):",
            "    ours = getattr(kvrt_errors, 'KeyValueError' if name == 'BaseKeyValueError' else name)",
            "    try:",
            "        raise ours(5) if ours is kvrt_errors.InvalidTTLError else ours('x')",
            "    except getattr(reference, name):",
            "        pass",
            "print('caught')",
        ]
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.stdout.strip() == "caught", result.stderr

"""Encryption of every value, in the reference's envelope, so either project reads what the other wrote."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from kvrt.entry import decode_value, encode_value
from kvrt.errors import CorruptedDataError, DecryptionError, EncryptionError, EncryptionVersionError
from kvrt.extras import needs_extra
from kvrt.protocol import AsyncKeyValue
from kvrt.wrappers.base import ValueWrapper

if TYPE_CHECKING:
    from cryptography.fernet import Fernet, MultiFernet

DATA: Final = "__encrypted_data__"
VERSION: Final = "__encryption_version__"
FERNET_VERSION: Final = 1
KDF_ITERATIONS: Final = 1_200_000
"""PBKDF2-SHA256 rounds deriving a Fernet key from ``source_material`` and ``salt``: the reference's figure."""

EncryptionFn = Callable[[bytes], bytes]
DecryptionFn = Callable[[bytes, int], bytes]


class BaseEncryptionWrapper(ValueWrapper):
    """Stores each value as ``{"__encrypted_data__": <base64 of the ciphertext>, "__encryption_version__": n}``.

    ``encryption_fn`` encrypts the value's JSON; ``decryption_fn`` is given the ciphertext and the
    stored version. A stored value without the envelope is returned as it is (data written before
    encryption was turned on). A failed decryption raises :class:`~kvrt.errors.DecryptionError`
    (:class:`~kvrt.errors.CorruptedDataError` for a malformed envelope), or reads as missing when
    ``raise_on_decryption_error`` is false.
    """

    def __init__(
        self,
        key_value: AsyncKeyValue,
        encryption_fn: EncryptionFn,
        decryption_fn: DecryptionFn,
        encryption_version: int,
        raise_on_decryption_error: bool = True,
    ) -> None:
        self.key_value = key_value
        self.encryption_version = encryption_version
        self.raise_on_decryption_error = raise_on_decryption_error
        self._encrypt = encryption_fn
        self._decrypt = decryption_fn
        super().__init__()

    def _store(self, value: Mapping[str, Any]) -> dict[str, Any]:
        plain = encode_value(value)
        try:
            sealed = base64.b64encode(self._encrypt(plain)).decode("ascii")
        except Exception as exc:
            raise EncryptionError(f"Encrypting a value failed: {type(exc).__name__}") from exc
        return {DATA: sealed, VERSION: self.encryption_version}

    def _load(self, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None or DATA not in value:
            return value
        try:
            version, data = value.get(VERSION), value[DATA]
            if type(version) is not int or not isinstance(data, str):
                raise CorruptedDataError("An encrypted entry's version or data is not of the envelope's types.")
            try:
                sealed = base64.b64decode(data, validate=True)
            except binascii.Error:
                raise CorruptedDataError("An encrypted entry's data is not base64.") from None
            try:
                plain = self._decrypt(sealed, version)
            except (DecryptionError, EncryptionVersionError):
                raise
            except Exception as exc:
                raise DecryptionError(f"Decrypting a value failed: {type(exc).__name__}") from exc
            return decode_value(plain)
        except EncryptionError:
            if self.raise_on_decryption_error:
                raise
            return None


class FernetEncryptionWrapper(BaseEncryptionWrapper):
    """Fernet (AES-128-CBC with HMAC-SHA256) encryption, as the reference's wrapper of the same name.

    Give ``fernet``, a ``Fernet`` or, for key rotation, a ``MultiFernet`` or a list of ``Fernet``
    keys, newest first: the newest encrypts, any of them decrypts. Or give ``source_material`` and
    ``salt``, from which a key is derived with PBKDF2 exactly as the reference derives it.
    """

    def __init__(
        self,
        key_value: AsyncKeyValue,
        *,
        fernet: Fernet | MultiFernet | Sequence[Fernet] | None = None,
        source_material: str | None = None,
        salt: str | None = None,
        raise_on_decryption_error: bool = True,
    ) -> None:
        with needs_extra("encryption", "FernetEncryptionWrapper"):
            from cryptography.fernet import Fernet, InvalidToken, MultiFernet
        if fernet is not None and (source_material or salt):
            raise ValueError("Give fernet, or source_material and salt, not both.")
        if fernet is None:
            if not source_material or not source_material.strip():
                raise ValueError("Give fernet, or source_material and salt.")
            if not salt or not salt.strip():
                raise ValueError("A salt must go with source_material.")
            fernet = Fernet(derive_key(source_material, salt))
        elif isinstance(fernet, Sequence):
            fernet = MultiFernet(list(fernet))
        cipher = fernet

        def decrypt(data: bytes, version: int) -> bytes:
            if version > FERNET_VERSION:
                raise EncryptionVersionError(f"Encryption version {version} is newer than this code knows.")
            try:
                return cipher.decrypt(data)
            except InvalidToken:
                raise DecryptionError("The value was not encrypted with any of these keys, or was altered.") from None

        super().__init__(key_value, cipher.encrypt, decrypt, FERNET_VERSION, raise_on_decryption_error)


def derive_key(source_material: str, salt: str) -> bytes:
    """Return the Fernet key derived from ``source_material`` and ``salt`` by PBKDF2, as the reference derives it."""
    with needs_extra("encryption", "FernetEncryptionWrapper"):
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt.encode(), iterations=KDF_ITERATIONS)
    return base64.urlsafe_b64encode(kdf.derive(source_material.encode()))

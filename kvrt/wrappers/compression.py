"""Gzip compression of large values, in the reference's envelope, so either project reads what the other wrote."""

from __future__ import annotations

import base64
import binascii
import gzip
import zlib
from collections.abc import Mapping
from typing import Any, Final

from kvrt.entry import decode_value, encode_value
from kvrt.errors import DeserializationError
from kvrt.protocol import AsyncKeyValue
from kvrt.wrappers.base import ValueWrapper

DATA: Final = "__compressed_data__"
VERSION: Final = "__compression_version__"
ALGORITHM: Final = "__compression_algorithm__"


class CompressionWrapper(ValueWrapper):
    """Stores values whose JSON is at least ``min_size_to_compress`` bytes gzipped, as the reference does.

    The stored form is ``{"__compressed_data__": <base64 of gzip of the JSON>,
    "__compression_algorithm__": "gzip", "__compression_version__": 1}``; smaller values are stored as
    they are. Reads accept both. **Stricter** than the reference: an envelope whose data does not
    decompress is a :class:`~kvrt.errors.DeserializationError`, not returned as if it were the value.
    """

    def __init__(self, key_value: AsyncKeyValue, min_size_to_compress: int = 1024) -> None:
        self.key_value = key_value
        self.min_size_to_compress = min_size_to_compress
        super().__init__()

    def _store(self, value: Mapping[str, Any]) -> Mapping[str, Any]:
        if DATA in value:
            return value
        encoded = encode_value(value)
        if len(encoded) < self.min_size_to_compress:
            return value
        data = base64.b64encode(gzip.compress(encoded, compresslevel=1)).decode("ascii")
        return {DATA: data, VERSION: 1, ALGORITHM: "gzip"}

    def _load(self, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None or DATA not in value:
            return value
        data = value[DATA]
        try:
            if not isinstance(data, str):
                raise TypeError(f"the data is a {type(data).__name__}")
            return decode_value(gzip.decompress(base64.b64decode(data, validate=True)))
        except (TypeError, binascii.Error, OSError, EOFError, zlib.error, DeserializationError) as exc:
            raise DeserializationError(f"A compressed entry does not decompress: {exc}") from None

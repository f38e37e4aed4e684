"""Gzip compression of large values, in the reference's envelope, so either project reads what the other wrote."""

from __future__ import annotations

import base64
import binascii
import gzip
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Final, SupportsFloat

from kvrt.entry import decode_value, encode_value
from kvrt.errors import DeserializationError
from kvrt.protocol import AsyncKeyValue
from kvrt.wrappers.base import BaseWrapper

DATA: Final = "__compressed_data__"
VERSION: Final = "__compression_version__"
ALGORITHM: Final = "__compression_algorithm__"


class CompressionWrapper(BaseWrapper):
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

    def _pack(self, value: Mapping[str, Any]) -> Mapping[str, Any]:
        if DATA in value:
            return value
        encoded = encode_value(value)
        if len(encoded) < self.min_size_to_compress:
            return value
        data = base64.b64encode(gzip.compress(encoded, compresslevel=1)).decode("ascii")
        return {DATA: data, VERSION: 1, ALGORITHM: "gzip"}

    def _unpack(self, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None or DATA not in value:
            return value
        data = value[DATA]
        try:
            if not isinstance(data, str):
                raise TypeError(f"the data is a {type(data).__name__}")
            return decode_value(gzip.decompress(base64.b64decode(data, validate=True)))
        except (TypeError, binascii.Error, OSError, EOFError, zlib.error, DeserializationError) as exc:
            raise DeserializationError(f"A compressed entry does not decompress: {exc}") from None

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        return self._unpack(await self.key_value.get(key, collection=collection))

    async def get_many(self, keys: Sequence[str], *, collection: str | None = None) -> list[dict[str, Any] | None]:
        return [self._unpack(value) for value in await self.key_value.get_many(keys, collection=collection)]

    async def ttl(self, key: str, *, collection: str | None = None) -> tuple[dict[str, Any] | None, float | None]:
        value, seconds = await self.key_value.ttl(key, collection=collection)
        return self._unpack(value), seconds

    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[tuple[dict[str, Any] | None, float | None]]:
        found = await self.key_value.ttl_many(keys, collection=collection)
        return [(self._unpack(value), seconds) for value, seconds in found]

    async def put(
        self, key: str, value: Mapping[str, Any], *, collection: str | None = None, ttl: SupportsFloat | None = None
    ) -> None:
        await self.key_value.put(key, self._pack(value), collection=collection, ttl=ttl)

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        await self.key_value.put_many(keys, [self._pack(value) for value in values], collection=collection, ttl=ttl)

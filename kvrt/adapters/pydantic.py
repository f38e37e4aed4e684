"""Typed values over any ``AsyncKeyValue``: pydantic models, dataclasses and any type pydantic can validate.

Stored as the reference stores them: a type that serializes to a JSON object is stored as that
object; any other (a list, an int) is wrapped as ``{"items": <value>}``. So data written through
the reference's adapters reads back through these, and the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import is_dataclass
from typing import TYPE_CHECKING, Any, Generic, SupportsFloat, TypeVar, get_args, get_origin, overload

from kvrt.errors import DeserializationError, SerializationError
from kvrt.extras import needs_extra
from kvrt.log import logger
from kvrt.protocol import AsyncKeyValue

if TYPE_CHECKING:
    from pydantic import TypeAdapter

T = TypeVar("T")

_ITEMS = "items"


def _type_adapter(model: Any, adapter: str) -> TypeAdapter[Any]:
    with needs_extra("pydantic", adapter):
        from pydantic import TypeAdapter
    return TypeAdapter(model)


def _serializes_to_object(type_adapter: TypeAdapter[Any]) -> bool:
    """Whether values of the type dump to a JSON object, judged by its serialization schema."""
    from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
    from pydantic_core import PydanticOmit, core_schema

    class _SkipUnrepresentable(GenerateJsonSchema):
        def handle_invalid_for_json_schema(self, schema: core_schema.CoreSchema, error_info: str) -> JsonSchemaValue:
            raise PydanticOmit

    schema = type_adapter.json_schema(mode="serialization", schema_generator=_SkipUnrepresentable)
    return schema.get("type") == "object"


class BasePydanticAdapter(Generic[T]):
    """Validates what it reads into ``T`` and dumps what it writes from ``T``, through a pydantic ``TypeAdapter``.

    A stored value that no longer validates reads as ``default`` (``None`` unless given), or raises
    :class:`~kvrt.errors.DeserializationError` when ``raise_on_validation_error`` is true. A value
    pydantic cannot dump to JSON raises :class:`~kvrt.errors.SerializationError` at the put.
    """

    _key_value: AsyncKeyValue
    _type_adapter: TypeAdapter[T]
    _needs_wrapping: bool
    _default_collection: str | None
    _raise_on_validation_error: bool
    _type_name: str = "value"

    def _setup(
        self,
        key_value: AsyncKeyValue,
        type_adapter: TypeAdapter[T],
        needs_wrapping: bool,
        default_collection: str | None,
        raise_on_validation_error: bool,
    ) -> None:
        self._key_value = key_value
        self._type_adapter = type_adapter
        self._needs_wrapping = needs_wrapping
        self._default_collection = default_collection
        self._raise_on_validation_error = raise_on_validation_error

    def _load(self, value: dict[str, Any]) -> T | None:
        from pydantic import ValidationError

        if self._needs_wrapping and _ITEMS not in value:
            self._invalid(f"The stored {self._type_name} has no 'items' wrapper.", 1)
            return None
        try:
            return self._type_adapter.validate_python(value[_ITEMS] if self._needs_wrapping else value)
        except ValidationError as exc:
            details = exc.errors(include_input=False, include_url=False)
            self._invalid(f"The stored {self._type_name} does not validate: {details}", len(details))
            return None

    def _invalid(self, reason: str, errors: int) -> None:
        if self._raise_on_validation_error:
            raise DeserializationError(reason)
        logger.warning("stored value does not validate", model=self._type_name, errors=errors)

    def _dump(self, value: T) -> dict[str, Any]:
        from pydantic_core import PydanticSerializationError

        try:
            dumped = self._type_adapter.dump_python(value, mode="json")
        except PydanticSerializationError as exc:
            raise SerializationError(f"The {self._type_name} cannot be dumped to JSON: {exc}") from None
        if self._needs_wrapping:
            return {_ITEMS: dumped}
        if not isinstance(dumped, dict):
            raise SerializationError(f"The {self._type_name} does not dump to a JSON object.")
        return dumped

    def _collection(self, collection: str | None) -> str | None:
        return collection or self._default_collection

    @overload
    async def get(self, key: str, *, collection: str | None = None, default: T) -> T: ...

    @overload
    async def get(self, key: str, *, collection: str | None = None, default: None = None) -> T | None: ...

    async def get(self, key: str, *, collection: str | None = None, default: T | None = None) -> T | None:
        """Return the ``T`` stored under ``key``, or ``default`` when missing (or invalid, unless raising)."""
        value = await self._key_value.get(key, collection=self._collection(collection))
        if value is None:
            return default
        loaded = self._load(value)
        return default if loaded is None else loaded

    @overload
    async def get_many(self, keys: Sequence[str], *, collection: str | None = None, default: T) -> list[T]: ...

    @overload
    async def get_many(
        self, keys: Sequence[str], *, collection: str | None = None, default: None = None
    ) -> list[T | None]: ...

    async def get_many(
        self, keys: Sequence[str], *, collection: str | None = None, default: T | None = None
    ) -> list[T] | list[T | None]:
        """Return the ``T`` of each of ``keys``, in order, ``default`` for each miss."""
        values = await self._key_value.get_many(keys, collection=self._collection(collection))
        loaded = [None if value is None else self._load(value) for value in values]
        return [default if item is None else item for item in loaded]

    async def ttl(self, key: str, *, collection: str | None = None) -> tuple[T | None, float | None]:
        """Return ``(T, seconds_left)``; ``(None, None)`` when missing or invalid."""
        value, seconds = await self._key_value.ttl(key, collection=self._collection(collection))
        loaded = None if value is None else self._load(value)
        return (None, None) if loaded is None else (loaded, seconds)

    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[tuple[T | None, float | None]]:
        """Return ``(T, seconds_left)`` for each of ``keys``, in order."""
        found = await self._key_value.ttl_many(keys, collection=self._collection(collection))
        loaded = [(None if value is None else self._load(value), seconds) for value, seconds in found]
        return [(None, None) if item is None else (item, seconds) for item, seconds in loaded]

    async def put(self, key: str, value: T, *, collection: str | None = None, ttl: SupportsFloat | None = None) -> None:
        """Store ``value`` under ``key``."""
        await self._key_value.put(key, self._dump(value), collection=self._collection(collection), ttl=ttl)

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[T],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        """Store each value under its key, with one TTL for all."""
        dumped = [self._dump(value) for value in values]
        await self._key_value.put_many(keys, dumped, collection=self._collection(collection), ttl=ttl)

    async def delete(self, key: str, *, collection: str | None = None) -> bool:
        """Remove ``key``; ``True`` if something was removed."""
        return await self._key_value.delete(key, collection=self._collection(collection))

    async def delete_many(self, keys: Sequence[str], *, collection: str | None = None) -> int:
        """Remove ``keys``; return how many were removed."""
        return await self._key_value.delete_many(keys, collection=self._collection(collection))


class PydanticAdapter(BasePydanticAdapter[T]):
    """Stores any type pydantic can validate: models, dataclasses, TypedDicts, lists, scalars."""

    _type_name = "pydantic-serializable value"

    def __init__(
        self,
        key_value: AsyncKeyValue,
        pydantic_model: type[T],
        default_collection: str | None = None,
        raise_on_validation_error: bool = False,
    ) -> None:
        type_adapter = _type_adapter(pydantic_model, "PydanticAdapter")
        wraps = not _serializes_to_object(type_adapter)
        self._setup(key_value, type_adapter, wraps, default_collection, raise_on_validation_error)


class BaseModelAdapter(BasePydanticAdapter[T]):
    """Stores a pydantic ``BaseModel`` subclass, or a ``list`` of one; ``TypeError`` for anything else."""

    _type_name = "BaseModel"

    def __init__(
        self,
        key_value: AsyncKeyValue,
        pydantic_model: type[T],
        default_collection: str | None = None,
        raise_on_validation_error: bool = False,
    ) -> None:
        with needs_extra("pydantic", "BaseModelAdapter"):
            from pydantic import BaseModel
        origin = get_origin(pydantic_model)
        if origin is not None and origin is not list:
            raise TypeError(f"only list[BaseModel] is supported of sequence types, not {pydantic_model}")
        inner = get_args(pydantic_model)[0] if origin is list and get_args(pydantic_model) else pydantic_model
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            raise TypeError(f"pydantic_model must be a BaseModel subclass or a list of one, not {pydantic_model}")
        type_adapter = _type_adapter(pydantic_model, "BaseModelAdapter")
        self._setup(key_value, type_adapter, origin is list, default_collection, raise_on_validation_error)


class DataclassAdapter(BasePydanticAdapter[T]):
    """Stores a dataclass (standard or pydantic), or a sequence of one; ``TypeError`` for anything else."""

    _type_name = "dataclass"

    def __init__(
        self,
        key_value: AsyncKeyValue,
        dataclass_type: type[T],
        default_collection: str | None = None,
        raise_on_validation_error: bool = False,
    ) -> None:
        origin = get_origin(dataclass_type)
        sequence = isinstance(origin, type) and issubclass(origin, Sequence)
        if sequence and not get_args(dataclass_type):
            raise TypeError(f"{dataclass_type} must name its element type")
        inner = get_args(dataclass_type)[0] if sequence else dataclass_type
        if not is_dataclass(inner):
            raise TypeError(f"{inner} is not a dataclass")
        type_adapter = _type_adapter(dataclass_type, "DataclassAdapter")
        self._setup(key_value, type_adapter, sequence, default_collection, raise_on_validation_error)

"""Amazon DynamoDB on aiobotocore: one item per entry in one table, py-key-value's ``DynamoDBStore`` layout.

The table's hash key is ``collection`` and its range key ``key``; ``value`` holds the stored JSON
document as a string, and an entry that expires has ``ttl``, its expiry in whole epoch seconds for
the table's native TTL, rounded down as the reference rounds it (the reference reads ``ttl`` before
the document's expiry: rounded up, it would serve an entry past its time). kvrt adds
``expires_at``, the expiry to the millisecond, and reads by it, so that reads and listings leave
out what has expired even before DynamoDB removes it (which it does up to days late; moto never);
the reference ignores it, and reads and writes the same items. A name past DynamoDB's bound (2,048
bytes for a collection, 1,024 for a key) is stored as a hashed stand-in
(:mod:`kvrt.backends.names`), with the name itself in ``collection_name`` or ``key_name``.

A batch of gets is one ``BatchGetItem`` per 100 keys and a batch of puts one ``BatchWriteItem`` per
25 items, concurrent within the worker's connection pool; deletes read which items are there in the
same way, then remove them together. A batch of one key (a lone caller) is one plain ``GetItem``,
``PutItem`` or ``DeleteItem``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from kvrt.backends.base import Backend, Capabilities
from kvrt.backends.fan_out import chunks, fan_out
from kvrt.backends.names import hashed, is_hashed
from kvrt.errors import EntryTooLargeError, StoreSetupError
from kvrt.extras import needs_extra

with needs_extra("dynamodb", "DynamoDBBackend"):
    from kvrt.backends.aws import AwsClient, error_code, is_transient

_GET_CHUNK = 100  # BatchGetItem's bound
_WRITE_CHUNK = 25  # BatchWriteItem's bound
_MAX_COLLECTION = 2048  # bytes of a hash key
_MAX_KEY = 1024  # bytes of a range key
_UNPROCESSED_ATTEMPTS = 8
_FIRST_BACKOFF = 0.05
_LONGEST_BACKOFF = 1.0
_NAMES = {"#c": "collection", "#k": "key", "#v": "value", "#t": "ttl", "#e": "expires_at", "#kn": "key_name"}


class UnprocessedError(Exception):
    """DynamoDB left part of a batch unprocessed through every retry (it was throttled): transient."""


def _stored(name: str, bound: int) -> str:
    """Return the attribute value ``name`` is stored as."""
    return hashed(name) if len(name.encode()) > bound or is_hashed(name) else name


def _expiry(item: dict[str, Any]) -> float | None:
    """Return an item's expiry in epoch seconds: kvrt's to the millisecond, else the whole-second ``ttl``."""
    for attribute in ("expires_at", "ttl"):
        if attribute in item:
            return float(item[attribute]["N"])
    return None


@contextmanager
def _size_refused(backend: str) -> Iterator[None]:
    """Turn DynamoDB's refusal of an item past its size bound into :class:`~kvrt.errors.EntryTooLargeError`."""
    try:
        yield
    except Exception as exc:
        if error_code(exc) == "ValidationException" and "size" in str(exc).lower():
            raise EntryTooLargeError("DynamoDB holds items of at most 400 KB", backend=backend) from exc
        raise


def _names(*placeholders: str) -> dict[str, str]:
    return {placeholder: _NAMES[placeholder] for placeholder in placeholders}


class DynamoDBBackend(Backend):
    """Entries as items of the DynamoDB table ``table``.

    ``endpoint_url`` points at a DynamoDB-compatible server (moto, LocalStack, DynamoDB Local);
    ``client_options`` go to aiobotocore's ``create_client`` (``aws_access_key_id``,
    ``aws_secret_access_key``, ``aws_session_token``, ``config``, ...); without credentials
    botocore's standard chain finds them. Or pass an open ``client`` (an aiobotocore DynamoDB
    client): kvrt uses it and never closes it. ``create_table=True`` creates a missing table at
    spawn (on-demand billing, the reference's keys), waits until it is active and turns on its
    native TTL; otherwise a missing table is a :class:`~kvrt.errors.StoreSetupError` there, and the
    table is used as it is.

    Reads are strongly consistent (a caller reads its own writes), which costs DynamoDB twice the
    read capacity of an eventually consistent read.
    """

    name = "dynamodb"
    asyncio_only = True

    def __init__(
        self,
        table: str,
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        create_table: bool = False,
        client: Any = None,
        pool_size: int = 32,
        **client_options: Any,
    ) -> None:
        if not isinstance(table, str) or not table:
            raise ValueError("DynamoDBBackend needs a table name")
        self.table = table
        self._aws = AwsClient(
            "dynamodb",
            endpoint_url=endpoint_url,
            region_name=region_name,
            client=client,
            pool_size=pool_size,
            options=client_options,
        )
        self._create_table = create_table
        self._width = pool_size
        self.capabilities = Capabilities(
            native_ttl=True,
            max_batch=1024,
            concurrency=min(pool_size, 4),
            keys=True,
            collections=True,
            destroy_collection=True,
        )

    def __repr__(self) -> str:
        return f"<DynamoDBBackend table={self.table!r}{self._aws.describe()}>"

    @property
    def client(self) -> Any:
        """The aiobotocore client (the user's, or kvrt's between :meth:`open` and :meth:`close`)."""
        return self._aws.client

    async def open(self) -> None:
        """Make the client (unless one was given) and check the table is there (or create it, if asked)."""
        client = await self._aws.open()
        try:
            await self._check_table(client)
        except BaseException:
            await self._aws.close()
            raise

    async def _check_table(self, client: Any) -> None:
        try:
            await client.describe_table(TableName=self.table)
        except Exception as exc:
            code = error_code(exc)
            if code in ("AccessDeniedException", "UnrecognizedClientException"):
                raise StoreSetupError(
                    f"access to the DynamoDB table {self.table!r} is denied", backend=self.name
                ) from exc
            if code != "ResourceNotFoundException":
                raise
            if not self._create_table:
                raise StoreSetupError(
                    f"the DynamoDB table {self.table!r} does not exist (create it, or pass create_table=True)",
                    backend=self.name,
                ) from None
            await self._make_table(client)
        if self._create_table:
            described = await client.describe_time_to_live(TableName=self.table)
            if described.get("TimeToLiveDescription", {}).get("TimeToLiveStatus") == "DISABLED":
                await client.update_time_to_live(
                    TableName=self.table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"}
                )

    async def _make_table(self, client: Any) -> None:
        try:
            await client.create_table(
                TableName=self.table,
                KeySchema=[
                    {"AttributeName": "collection", "KeyType": "HASH"},
                    {"AttributeName": "key", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": "collection", "AttributeType": "S"},
                    {"AttributeName": "key", "AttributeType": "S"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        except Exception as exc:
            if error_code(exc) != "ResourceInUseException":  # another worker made it first
                raise
        await client.get_waiter("table_exists").wait(
            TableName=self.table, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
        )

    async def close(self) -> None:
        """Close the client, if kvrt made it."""
        await self._aws.close()

    def _item_key(self, collection: str, key: str) -> dict[str, Any]:
        return {"collection": {"S": _stored(collection, _MAX_COLLECTION)}, "key": {"S": _stored(key, _MAX_KEY)}}

    async def _until_processed(
        self, call: Callable[..., Awaitable[dict[str, Any]]], requests: dict[str, Any], left_field: str
    ) -> list[dict[str, Any]]:
        """Call ``call(RequestItems=requests)`` until nothing is left unprocessed; return every response.

        The one place a backend retries: DynamoDB answers a throttled batch with what it did not
        do, and asks for that to be sent again with backoff. A round that stays unprocessed through
        every attempt fails as transient, and the supervisor takes over.
        """
        responses = []
        delay = _FIRST_BACKOFF
        for _ in range(_UNPROCESSED_ATTEMPTS):
            response = await call(RequestItems=requests)
            responses.append(response)
            requests = response.get(left_field) or {}
            if not requests:
                return responses
            await asyncio.sleep(delay)
            delay = min(delay * 2, _LONGEST_BACKOFF)
        raise UnprocessedError(f"DynamoDB left part of a batch unprocessed {_UNPROCESSED_ATTEMPTS} times")

    async def _read(self, collection: str, keys: Sequence[str], projection: str) -> dict[str, dict[str, Any]]:
        """Return the items of ``keys`` (unique) that are there, by stored key, each with ``projection``."""
        stored = {"collection": {"S": _stored(collection, _MAX_COLLECTION)}}
        placeholders = [part.strip() for part in projection.split(",")]

        async def read(chunk: Sequence[str]) -> list[dict[str, Any]]:
            request = {
                self.table: {
                    "Keys": [{**stored, "key": {"S": _stored(key, _MAX_KEY)}} for key in chunk],
                    "ConsistentRead": True,
                    "ProjectionExpression": projection,
                    "ExpressionAttributeNames": _names(*placeholders),
                }
            }
            responses = await self._until_processed(self.client.batch_get_item, request, "UnprocessedKeys")
            return [item for response in responses for item in response.get("Responses", {}).get(self.table, [])]

        found: dict[str, dict[str, Any]] = {}
        for items in await fan_out(read, list(chunks(keys, _GET_CHUNK)), self._width):
            for item in items:
                found[item["key"]["S"]] = item
        return found

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        """Read the batch with one ``BatchGetItem`` per 100 keys, at once; a lone key with ``GetItem``."""
        if len(keys) == 1:
            response = await self.client.get_item(
                TableName=self.table,
                Key=self._item_key(collection, keys[0]),
                ConsistentRead=True,
                ProjectionExpression="#v",
                ExpressionAttributeNames=_names("#v"),
            )
            item = response.get("Item")
            return [None if item is None else item["value"]["S"]]
        unique = list(dict.fromkeys(keys))
        found = await self._read(collection, unique, "#k, #v")
        results: list[bytes | str | None] = []
        for key in keys:
            item = found.get(_stored(key, _MAX_KEY))
            results.append(None if item is None else item["value"]["S"])
        return results

    async def put_many(
        self,
        collection: str,
        keys: Sequence[str],
        entries: Sequence[bytes],
        expires_at: Sequence[float | None],
    ) -> None:
        """Write the batch with one ``BatchWriteItem`` per 25 items, at once (a key given twice: its last entry)."""
        stored_collection = _stored(collection, _MAX_COLLECTION)
        items: dict[str, dict[str, Any]] = {}
        for key, entry, expiry in zip(keys, entries, expires_at, strict=True):
            stored_key = _stored(key, _MAX_KEY)
            item: dict[str, Any] = {
                "collection": {"S": stored_collection},
                "key": {"S": stored_key},
                "value": {"S": entry.decode()},
            }
            if expiry is not None:
                item["ttl"] = {"N": str(math.floor(expiry))}
                item["expires_at"] = {"N": f"{expiry:.3f}"}
            if stored_key != key:
                item["key_name"] = {"S": key}
            if stored_collection != collection:
                item["collection_name"] = {"S": collection}
            items[stored_key] = item
        if len(items) == 1:  # a lone caller's put: one plain request costs the service less than a batch
            (item,) = items.values()
            with _size_refused(self.name):
                await self.client.put_item(TableName=self.table, Item=item)
            return
        await self._write([{"PutRequest": {"Item": item}} for item in items.values()])

    async def _write(self, requests: Sequence[dict[str, Any]]) -> None:
        async def write(chunk: Sequence[dict[str, Any]]) -> None:
            with _size_refused(self.name):
                await self._until_processed(self.client.batch_write_item, {self.table: list(chunk)}, "UnprocessedItems")

        await fan_out(write, list(chunks(requests, _WRITE_CHUNK)), self._width)

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Find which items are there (``BatchGetItem``), then delete them with ``BatchWriteItem``.

        A lone key is one ``DeleteItem`` that returns what it removed.
        """
        if len(keys) == 1:
            response = await self.client.delete_item(
                TableName=self.table, Key=self._item_key(collection, keys[0]), ReturnValues="ALL_OLD"
            )
            old = response.get("Attributes")
            return [old is not None and ((expiry := _expiry(old)) is None or expiry > time.time())]
        unique = list(dict.fromkeys(keys))
        found = await self._read(collection, unique, "#k, #t, #e")
        await self._write(
            [
                {"DeleteRequest": {"Key": self._item_key(collection, key)}}
                for key in unique
                if _stored(key, _MAX_KEY) in found
            ]
        )
        now = time.time()
        live = {stored for stored, item in found.items() if (expiry := _expiry(item)) is None or expiry > now}
        results = []
        for key in keys:  # a key given twice is deleted once: the first says so
            stored = _stored(key, _MAX_KEY)
            results.append(stored in live)
            live.discard(stored)
        return results

    async def _query(self, collection: str, projection: str) -> Any:
        """Every item of ``collection``, a page at a time (each item with ``projection``)."""
        placeholders = [part.strip() for part in projection.split(",")]
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "#c = :c",
            "ExpressionAttributeValues": {":c": {"S": _stored(collection, _MAX_COLLECTION)}},
            "ExpressionAttributeNames": _names("#c", *placeholders),
            "ProjectionExpression": projection,
            "ConsistentRead": True,
        }
        while True:
            page = await self.client.query(**request)
            yield page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def keys(self, collection: str, limit: int | None) -> list[str]:
        """Return the live keys of ``collection`` (a paginated ``Query``)."""
        names: list[str] = []
        now = time.time()
        async for items in self._query(collection, "#k, #kn, #t, #e"):
            for item in items:
                expiry = _expiry(item)
                if expiry is not None and expiry <= now:
                    continue
                names.append(item["key_name"]["S"] if "key_name" in item else item["key"]["S"])
                if limit is not None and len(names) >= limit:
                    return names
        return names

    async def collections(self, limit: int | None) -> list[str]:
        """Return the collections that hold items (a paginated ``Scan`` of the keys: DynamoDB has no cheaper way)."""
        names: dict[str, None] = {}
        request: dict[str, Any] = {
            "TableName": self.table,
            "ProjectionExpression": "#c, #cn",
            "ExpressionAttributeNames": {"#c": "collection", "#cn": "collection_name"},
        }
        while True:
            page = await self.client.scan(**request)
            for item in page.get("Items", []):
                names[item["collection_name"]["S"] if "collection_name" in item else item["collection"]["S"]] = None
                if limit is not None and len(names) >= limit:
                    return list(names)
            if "LastEvaluatedKey" not in page:
                return list(names)
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def destroy_collection(self, collection: str) -> bool:
        """Delete every item of ``collection``, 25 to a ``BatchWriteItem``."""
        stored = _stored(collection, _MAX_COLLECTION)
        removed = 0
        async for items in self._query(collection, "#k"):
            await self._write(
                [{"DeleteRequest": {"Key": {"collection": {"S": stored}, "key": item["key"]}}} for item in items]
            )
            removed += len(items)
        return removed > 0

    def is_transient(self, error: BaseException) -> bool:
        """Throttling, a batch left unprocessed, 5xx replies, lost connections and timeouts are transient."""
        return isinstance(error, UnprocessedError) or is_transient(error)

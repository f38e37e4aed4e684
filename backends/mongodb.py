"""MongoDB on PyMongo's async client (or a Motor client): a document per entry, py-key-value's ``MongoDBStore`` layout.

Each kvrt collection is a MongoDB collection of the backend's database, and an entry is the
document ``{key, collection, version, value: {object: <value>}, created_at, expires_at}``, the
value as native BSON and the times as BSON dates, as the reference writes it, so either library
reads the other's entries. A unique index on ``key`` keeps one document per key whoever writes, and
a TTL index on ``expires_at`` lets the server remove what has expired; its TTL monitor runs once a
minute, so reads and listings leave expired documents out themselves. A value BSON cannot hold as
it is (an integer past 64 bits, a NUL in a field name, a field name the server refuses) is stored
as its JSON text in ``value.object``, which the reference reads as well. Unlike the reference, a
put replaces the whole document, so a put without a TTL clears an earlier one's expiry.

Collection names are kept as they are where MongoDB allows them (the reference's names), and
otherwise percent-encoded (``%``, ``$``, NUL, a ``.`` that leads, ends or doubles, a ``system.`` prefix); a
name whose namespace would pass 235 bytes (the bound on a sharded cluster) gets a hashed stand-in
(:mod:`kvrt.backends.names`), its real name being in every document's ``collection``.

A round of gets is one ``find`` (``key`` ``$in`` the batch), of puts one unordered bulk of upserts
(one ``update`` command), of deletes one ``find`` of what is there and one ``delete_many``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from kvrt.backends.base import Backend, Capabilities
from kvrt.backends.names import hashed, is_hashed, percent_decode, percent_encode
from kvrt.errors import EntryTooLargeError, StoreSetupError
from kvrt.extras import needs_extra
from kvrt.log import logger

with needs_extra("mongodb", "MongoDBBackend"):
    import bson
    from bson.codec_options import CodecOptions
    from bson.errors import InvalidDocument
    from pymongo import AsyncMongoClient, IndexModel, ReplaceOne
    from pymongo.errors import (
        BulkWriteError,
        ConnectionFailure,
        DocumentTooLarge,
        ExecutionTimeout,
        OperationFailure,
        PyMongoError,
    )

_log = logger.bind(backend="mongodb")

_KEPT_COLLECTIONS = 1024  # driver collection objects kept, by kvrt name
_NAMESPACE = 235  # bytes of "database.collection": 255 on a replica set, 235 on a sharded cluster
_UNSAFE = re.compile(r"[%$\x00]")
_DOTS = re.compile(r"\.(?=\.)")  # of two dots in a row, the first: MongoDB refuses an empty part of a name
_BAD_DATABASE = re.compile(r'[/\\. "$*<>:|?\x00]')
_CODEC: Any = CodecOptions(document_class=dict, tz_aware=True, tzinfo=UTC)
_RAW = "kvrt_unreadable"  # a document kvrt could not read, kept as its text (only tests and foreign writers make one)
_TRANSIENT_CODES = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        50,  # MaxTimeMSExpired
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        189,  # PrimarySteppedDown
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
        16500,  # Cosmos DB's request rate too large
    }
)
_FIELD_NAMES_REFUSED = frozenset({2, 52, 56, 57})  # BadValue, DollarPrefixedFieldName, EmptyFieldName, DottedFieldName
_TOO_LARGE_CODES = frozenset({10334, 17419, 17420})  # BSONObjectTooLarge and its kin
_INDEX_CONFLICTS = frozenset({85, 86})  # IndexOptionsConflict, IndexKeySpecsConflict: another index of that name
_LOGIN_REFUSED = frozenset({13, 18})  # Unauthorized, AuthenticationFailed
_DEFAULTS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 5000,
    "connectTimeoutMS": 5000,  # no socketTimeoutMS: it costs every read a timer, and the worker bounds hung calls
    "retryWrites": False,  # the supervisor retries, with its backoff and the callers' deadlines
    "retryReads": False,
}


class _Incoming(msgspec.Struct):
    """The parts of a stored JSON document that a MongoDB document holds."""

    value: dict[str, Any] | str
    created_at: datetime | None = None
    expires_at: datetime | None = None


class _Outgoing(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A MongoDB document as kvrt's stored JSON document (fields in sorted order)."""

    collection: str
    created_at: str | None = None
    expires_at: str | None = None
    key: str
    value: Any
    version: int


def _plain(obj: Any) -> Any:
    """Return a BSON type's JSON equivalent: BSON's 64-bit integers read back as ``bson.Int64``."""
    if isinstance(obj, int):
        return int(obj)
    raise TypeError(f"JSON cannot hold a {type(obj).__name__}")


_incoming = msgspec.json.Decoder(_Incoming)
_encoder = msgspec.json.Encoder(order="sorted", enc_hook=_plain)
_UNREADABLE = b"{}"  # no value: the caller gets a DeserializationError naming the key


def encode_collection(name: str) -> str:
    """Return the MongoDB collection name ``name`` is stored under, before any hashing (plain names unchanged)."""
    encoded = _DOTS.sub("%2E", percent_encode(_UNSAFE, name))
    if encoded.startswith("."):
        encoded = "%2E" + encoded[1:]
    if encoded.endswith("."):
        encoded = encoded[:-1] + "%2E"
    if encoded.startswith("system."):
        encoded = "%73" + encoded[1:]
    return encoded


def _live(now: datetime) -> dict[str, Any]:
    """Return the filter of documents that have not expired at ``now``."""
    return {"$or": [{"expires_at": None}, {"expires_at": {"$gt": now}}]}


def _to_document(collection: str, key: str, entry: bytes) -> dict[str, Any]:
    """Return the MongoDB document of a stored JSON document."""
    try:
        incoming = _incoming.decode(entry)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return {"key": key, "collection": collection, _RAW: entry.decode("utf-8", "replace")}
    document: dict[str, Any] = {"key": key, "collection": collection, "version": 1, "value": {"object": incoming.value}}
    if incoming.created_at is not None:
        document["created_at"] = incoming.created_at
    if incoming.expires_at is not None:
        document["expires_at"] = incoming.expires_at
    return document


def _as_text(document: dict[str, Any]) -> dict[str, Any]:
    """Return ``document`` with its value as JSON text: for a value BSON (or the server) cannot hold as it is."""
    value = document.get("value")
    if value is None or isinstance(value["object"], str):
        return document
    return {**document, "value": {"object": _encoder.encode(value["object"]).decode()}}


def _bson_holds(document: dict[str, Any]) -> bool:
    try:
        bson.encode(document)
    except (InvalidDocument, OverflowError):
        return False
    return True


def _from_document(found: dict[str, Any]) -> bytes | str:
    """Return the stored JSON document of a MongoDB document (one kvrt cannot read: a document without a value)."""
    raw = found.get(_RAW)
    if isinstance(raw, str):
        return raw
    value = found.get("value")
    if not isinstance(value, dict) or "object" not in value:
        return _UNREADABLE
    created = found.get("created_at")
    expires = found.get("expires_at")
    try:
        return msgspec.json.format(
            _encoder.encode(
                _Outgoing(
                    collection=str(found.get("collection", "")),
                    created_at=created.isoformat() if isinstance(created, datetime) else None,
                    expires_at=expires.isoformat() if isinstance(expires, datetime) else None,
                    key=found["key"],
                    value=value["object"],
                    version=int(found.get("version", 1)),
                )
            ),
            indent=0,
        )
    except (TypeError, ValueError, msgspec.EncodeError):  # a BSON type JSON has no word for, from another writer
        return _UNREADABLE


def _expired(found: dict[str, Any], now: float) -> bool:
    expires = found.get("expires_at")
    return isinstance(expires, datetime) and expires.timestamp() <= now


def is_transient(error: BaseException) -> bool:
    """Lost connections, timeouts, server selection and a primary stepping down are transient; refusals are not."""
    if isinstance(error, ConnectionFailure | ExecutionTimeout):  # AutoReconnect, NotPrimaryError, NetworkTimeout, ...
        return True
    if isinstance(error, PyMongoError) and error.has_error_label("RetryableWriteError"):
        return True
    if isinstance(error, BulkWriteError):
        details = error.details or {}
        codes = [failure.get("code") for failure in details.get("writeErrors", [])]
        codes += [failure.get("code") for failure in details.get("writeConcernErrors", [])]
        return bool(codes) and all(code in _TRANSIENT_CODES for code in codes)
    if isinstance(error, OperationFailure):
        return error.code in _TRANSIENT_CODES
    return isinstance(error, OSError | asyncio.TimeoutError)


def _shown(url: str | None) -> str:
    """Where ``url`` goes, without its credentials: what a repr shows."""
    if url is None:
        return "mongodb://127.0.0.1:27017"
    scheme, _, rest = url.partition("://")
    hosts = rest.rpartition("@")[2].split("/", 1)[0].split("?", 1)[0]
    return f"{scheme}://{hosts}"


class MongoDBBackend(Backend):
    """Entries as documents of the MongoDB database ``database``, a MongoDB collection per kvrt collection.

    ``url`` is a ``mongodb://`` or ``mongodb+srv://`` connection string (default: a server on
    ``127.0.0.1:27017``), and ``client_options`` go to ``AsyncMongoClient`` (``tls``,
    ``maxPoolSize``, ``username``, ``password``, ``event_listeners``, ...); kvrt's defaults turn the
    driver's own retries off (the supervisor retries) and bound server selection and connecting to
    5 s. Or pass an open ``client``, PyMongo's ``AsyncMongoClient`` or Motor's
    ``AsyncIOMotorClient``: kvrt uses it and never closes it.

    The database is the backend's namespace: ``collections()`` lists the collections of it that
    hold live entries, and ``destroy()`` drops the collections laid out as kvrt's (a ``key``
    index), the whole database where nothing else is in it.
    """

    name = "mongodb"
    asyncio_only = True

    def __init__(
        self,
        url: str | None = None,
        *,
        database: str = "kvrt",
        client: Any = None,
        **client_options: Any,
    ) -> None:
        if url is not None and client is not None:
            raise ValueError("give MongoDBBackend a url or a client, not both")
        if url is not None and (not isinstance(url, str) or not url.startswith(("mongodb://", "mongodb+srv://"))):
            raise ValueError("a MongoDB URL starts with mongodb:// or mongodb+srv://")
        if not isinstance(database, str) or not database or _BAD_DATABASE.search(database) or len(database) > 63:
            raise ValueError('database must be a MongoDB database name: 1-63 characters, none of /\\. "$*<>:|? or NUL')
        self.database = database
        self._url = url
        self._given = client
        self._options = {**_DEFAULTS, **client_options}
        self._client: Any = client
        self._db: Any = None
        self._ready: set[str] = set()  # collections whose indexes this worker has made sure of
        self._collections: dict[str, Any] = {}
        self.capabilities = Capabilities(
            native_ttl=True,
            max_batch=1024,
            concurrency=4,  # runs of different collections in one round overlap
            keys=True,
            collections=True,
            destroy=True,
            destroy_collection=True,
        )

    def __repr__(self) -> str:
        where = "a client of yours" if self._given is not None else _shown(self._url)
        return f"<MongoDBBackend {where} database={self.database!r}>"

    @property
    def client(self) -> Any:
        """The client: the user's, or kvrt's between :meth:`open` and :meth:`close`."""
        return self.opened(self._client)

    async def open(self) -> None:
        """Make the client (unless one was given) and check that the server answers and lets kvrt in."""
        if self._client is None:
            self._client = AsyncMongoClient(self._url or "mongodb://127.0.0.1:27017", **self._options)
        self._db = self._client.get_database(self.database, codec_options=_CODEC)
        self._ready.clear()
        self._collections.clear()
        try:
            await self._db.command("ping")
        except OperationFailure as exc:
            await self.close()
            if exc.code in _LOGIN_REFUSED:
                raise StoreSetupError("MongoDB refused kvrt's login", backend=self.name) from None
            raise
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the client and its pool, if kvrt made it; a client the user gave is left open."""
        client, self._db = self._client, None
        if self._given is None and client is not None:
            self._client = None
            await client.close()

    def _name(self, collection: str) -> str:
        encoded = encode_collection(collection)
        if is_hashed(encoded) or len(f"{self.database}.{encoded}".encode()) > _NAMESPACE:
            return hashed(collection)
        return encoded

    def _collection(self, collection: str) -> Any:
        """Return the driver's collection object for ``collection`` (kept: making one costs more than a lookup)."""
        found = self._collections.get(collection)
        if found is None:
            if len(self._collections) >= _KEPT_COLLECTIONS:
                self._collections.clear()
            found = self._collections[collection] = self._db[self._name(collection)]
        return found

    async def _prepared(self, collection: str) -> Any:
        """Return the collection, its unique ``key`` index and its TTL index made sure of (once per worker)."""
        target = self._collection(collection)
        stored: str = target.name
        if stored in self._ready:
            return target
        try:
            await target.create_indexes(
                [IndexModel("key", unique=True), IndexModel("expires_at", expireAfterSeconds=0)]
            )
        except OperationFailure as exc:
            if exc.code not in _INDEX_CONFLICTS:
                raise
            # Made by py-key-value: its key index is not unique. Kept: a rebuild would need the collection to itself.
            _log.warning("mongodb.key_index_not_unique", collection_hash=hashed(collection)[2:14])
            await target.create_indexes([IndexModel("expires_at", expireAfterSeconds=0)])
        self._ready.add(stored)
        return target

    async def _find(self, collection: str, keys: Sequence[str], projection: dict[str, int]) -> dict[str, Any]:
        """Return the documents of ``keys`` that are there, by key (one ``find``)."""
        unique = list(dict.fromkeys(keys))
        query = {"key": unique[0]} if len(unique) == 1 else {"key": {"$in": unique}}
        # One more than there can be, so the first reply ends the cursor and no getMore follows
        cursor = self._collection(collection).find(query, projection, batch_size=len(unique) + 1)
        return {found["key"]: found for found in await cursor.to_list(None)}

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        """Read the batch with one ``find``."""
        found = await self._find(collection, keys, {"_id": 0})
        return [None if (document := found.get(key)) is None else _from_document(document) for key in keys]

    async def put_many(
        self,
        collection: str,
        keys: Sequence[str],
        entries: Sequence[bytes],
        expires_at: Sequence[float | None],
    ) -> None:
        """Write the batch as one unordered bulk of upserts (a key given twice: its last entry).

        The expiry is the document's own ``expires_at``, which ``expires_at`` repeats.
        """
        target = await self._prepared(collection)
        documents = {key: _to_document(collection, key, entry) for key, entry in zip(keys, entries, strict=True)}
        batch = list(documents.values())
        try:
            await self._upsert(target, batch)
            return
        except DocumentTooLarge:
            raise EntryTooLargeError("MongoDB holds documents of at most 16 MB", backend=self.name) from None
        except (InvalidDocument, OverflowError):
            batch = [document if _bson_holds(document) else _as_text(document) for document in batch]
        except BulkWriteError as exc:
            refused = self._refused_names(exc)
            batch = [_as_text(document) if index in refused else document for index, document in enumerate(batch)]
        await self._upsert(target, batch)

    async def _upsert(self, target: Any, documents: list[dict[str, Any]]) -> None:
        try:
            await target.bulk_write(
                [ReplaceOne({"key": document["key"]}, document, upsert=True) for document in documents], ordered=False
            )
        except BulkWriteError as exc:
            codes = {failure.get("code") for failure in (exc.details or {}).get("writeErrors", [])}
            if codes & _TOO_LARGE_CODES:
                raise EntryTooLargeError("MongoDB holds documents of at most 16 MB", backend=self.name) from None
            raise

    @staticmethod
    def _refused_names(error: BulkWriteError) -> set[int]:
        """Return which writes the server refused for their field names; re-raise ``error`` if any failed otherwise."""
        failures = (error.details or {}).get("writeErrors", [])
        if not failures or any(failure.get("code") not in _FIELD_NAMES_REFUSED for failure in failures):
            raise error
        return {int(failure["index"]) for failure in failures}

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Find which documents are there (one ``find``), then remove them with one ``delete_many``.

        A lone key is one ``findAndModify`` that removes it and says what it was.
        """
        now = time.time()
        target = self._collection(collection)
        if len(keys) == 1:
            removed = await target.find_one_and_delete({"key": keys[0]}, {"_id": 0, "expires_at": 1})
            return [removed is not None and not _expired(removed, now)]
        found = await self._find(collection, keys, {"_id": 0, "key": 1, "expires_at": 1})
        if found:
            await target.delete_many({"key": {"$in": list(found)}})
        live = {key for key, document in found.items() if not _expired(document, now)}
        results = []
        for key in keys:  # a key given twice is deleted once: the first says so
            results.append(key in live)
            live.discard(key)
        return results

    async def keys(self, collection: str, limit: int | None) -> list[str]:
        """Return the live keys of ``collection``."""
        if limit == 0:
            return []
        cursor = self._collection(collection).find(_live(datetime.now(UTC)), {"_id": 0, "key": 1})
        if limit is not None:
            cursor = cursor.limit(limit)
        return [found["key"] for found in await cursor.to_list(None)]

    async def _stored_names(self) -> list[str]:
        names: list[str] = await self._db.list_collection_names()
        return [name for name in names if not name.startswith("system.")]

    async def collections(self, limit: int | None) -> list[str]:
        """Return the collections that hold a live entry (a ``find_one`` each, which also names a hashed one)."""
        names: list[str] = []
        live = {**_live(datetime.now(UTC)), "value.object": {"$exists": True}}
        for stored in await self._stored_names():
            if limit is not None and len(names) >= limit:
                break
            found = await self._db[stored].find_one(live, {"_id": 0, "collection": 1})
            if found is not None:
                names.append(str(found.get("collection")) if is_hashed(stored) else percent_decode(stored))
        return names

    async def destroy(self) -> bool:
        """Drop the collections laid out as kvrt's; the database itself where it holds nothing else."""
        stored = await self._stored_names()
        ours = [name for name in stored if await self._has_key_index(name)]
        if ours and len(ours) == len(stored):
            await self._client.drop_database(self.database)
        else:
            for name in ours:
                await self._db.drop_collection(name)
        self._ready.clear()
        return bool(ours)

    async def _has_key_index(self, stored: str) -> bool:
        indexes = await self._db[stored].index_information()
        return any(index.get("key") == [("key", 1)] for index in indexes.values())

    async def destroy_collection(self, collection: str) -> bool:
        """Drop the collection; ``True`` if it held a document."""
        target = self._collection(collection)
        held = await target.find_one({}, {"_id": 1}) is not None
        await target.drop()
        self._ready.discard(target.name)
        return held

    def is_transient(self, error: BaseException) -> bool:
        """Lost connections, timeouts, server selection and a primary stepping down are transient."""
        return is_transient(error)

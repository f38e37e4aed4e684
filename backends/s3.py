"""Amazon S3 (and S3-compatible servers) on aiobotocore: one object per entry, py-key-value's ``S3Store`` layout.

An entry of ``key`` in ``collection`` is the object ``{prefix}{collection}/{key}``, its body the
stored JSON document, with the expiry also in the object's metadata (``expires-at``, ISO 8601), as
the reference writes it; plain names are the reference's object keys as they are, so either
library reads the other's objects. Names are encoded so that nothing leaves its collection or the
prefix: ``%`` and control characters are percent-encoded, and so are a collection's ``/`` and the
dots of a ``.`` or ``..`` path segment (which HTTP clients would resolve away). An object key past
S3's 1,024 bytes gets a hashed stand-in for its key (and a collection past 512 bytes for its name,
see :mod:`kvrt.backends.names`); the real names are in the document.

A batch of gets or puts is one request per object, concurrent within the worker's connection pool;
deletes find which objects are there (``HeadObject``) and remove them with one ``DeleteObjects``
per 1,000. S3 does not expire objects by itself, so the runtime culls: pages of the listing, each
object's expiry read from its metadata, the expired ones deleted together, a pass only once an
expiry it knows of is due.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from kvrt.backends.base import Backend, Capabilities
from kvrt.backends.fan_out import chunks, fan_out
from kvrt.backends.names import hashed, is_hashed, percent_decode, percent_encode
from kvrt.errors import StoreSetupError
from kvrt.extras import needs_extra

with needs_extra("s3", "S3Backend"):
    from kvrt.backends.aws import AwsClient, error_code, is_transient

_MAX_OBJECT_KEY = 1024  # bytes of UTF-8
_MAX_COLLECTION = 512  # bytes of an encoded collection, so that a key always has room
_MAX_PREFIX = 256
_DELETE_CHUNK = 1000  # DeleteObjects' bound
_LIST_PAGE = 1000
_EXPIRES = "expires-at"
_QUIET_CULL = 3600.0  # the longest a cull waits once a pass found nothing due: for entries other writers made
_ESCAPE_IN_KEY = re.compile(r"[%\x00-\x1f\x7f]")
_ESCAPE_IN_COLLECTION = re.compile(r"[%/\x00-\x1f\x7f]")
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_NO_BUCKET = frozenset({"404", "NoSuchBucket", "NotFound"})


class _Names(msgspec.Struct):
    """The names a document carries (kvrt writes both), read for a hashed stand-in."""

    collection: str | None = None
    key: str | None = None


_names_decoder = msgspec.json.Decoder(_Names)


def encode_name(name: str, *, collection: bool) -> str:
    """Return ``name`` as it appears in an object key (plain names unchanged)."""
    encoded = percent_encode(_ESCAPE_IN_COLLECTION if collection else _ESCAPE_IN_KEY, name)
    if "." in encoded:
        segments = encoded.split("/")
        if ".." in segments or "." in segments:
            encoded = "/".join(part.replace(".", "%2E") if part in (".", "..") else part for part in segments)
    return encoded


def decode_name(stored: str) -> str:
    """Return the name an encoded part of an object key stands for."""
    return percent_decode(stored)


def _expiry(metadata: dict[str, str]) -> float | None:
    """Return the expiry in an object's metadata, in epoch seconds (``None``: it never expires, or is unreadable)."""
    text = metadata.get(_EXPIRES)
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


class S3Backend(Backend):
    """Entries as objects in an S3 bucket, under ``prefix`` if given (``"app"`` keeps them under ``app/``).

    ``endpoint_url`` points at an S3-compatible server (moto, LocalStack, MinIO); ``client_options``
    go to aiobotocore's ``create_client`` (``aws_access_key_id``, ``aws_secret_access_key``,
    ``aws_session_token``, ``config``, ``verify``, ...); without credentials botocore's standard
    chain finds them. Or pass an open ``client`` (an aiobotocore S3 client): kvrt uses it and never
    closes it. ``pool_size`` bounds the connections, and so the requests in flight at once.
    ``create_bucket=True`` creates a missing bucket at spawn; otherwise a missing bucket is a
    :class:`~kvrt.errors.StoreSetupError` there.
    """

    name = "s3"
    asyncio_only = True

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str | None = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        client: Any = None,
        pool_size: int = 32,
        create_bucket: bool = False,
        **client_options: Any,
    ) -> None:
        if not isinstance(bucket, str) or not bucket:
            raise ValueError("S3Backend needs a bucket name")
        self.bucket = bucket
        self.prefix = self._check_prefix(prefix)
        self._aws = AwsClient(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region_name,
            client=client,
            pool_size=pool_size,
            options=client_options,
        )
        self._create_bucket = create_bucket
        self._width = pool_size
        self._cull_after: str | None = None
        self._next_cull = 0.0  # before it, nothing this backend knows of has expired: a cull sends nothing
        self._due_by_writes = math.inf  # the soonest expiry written since the current pass began
        self._pass_soonest = math.inf  # the soonest expiry of a live object the current pass has seen
        self.capabilities = Capabilities(
            native_ttl=False,
            max_batch=1024,
            concurrency=min(pool_size, 4),
            keys=True,
            collections=True,
            destroy=True,
            destroy_collection=True,
            cull=True,
        )

    @staticmethod
    def _check_prefix(prefix: str | None) -> str:
        if prefix is None or prefix.strip("/") == "":
            return ""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        folder = prefix.strip("/")
        if any(part in ("", ".", "..") for part in folder.split("/")) or _ESCAPE_IN_KEY.search(folder):
            raise ValueError("prefix must be a plain folder path: no empty, '.' or '..' parts, no '%' or control codes")
        if len(folder.encode()) > _MAX_PREFIX:
            raise ValueError(f"prefix must be at most {_MAX_PREFIX} bytes")
        return folder + "/"

    def __repr__(self) -> str:
        return f"<S3Backend bucket={self.bucket!r} prefix={self.prefix!r}{self._aws.describe()}>"

    @property
    def client(self) -> Any:
        """The aiobotocore client (the user's, or kvrt's between :meth:`open` and :meth:`close`)."""
        return self._aws.client

    async def open(self) -> None:
        """Make the client (unless one was given) and check the bucket is there (or create it, if asked)."""
        client = await self._aws.open()
        try:
            await self._check_bucket(client)
        except BaseException:
            await self._aws.close()
            raise

    async def _check_bucket(self, client: Any) -> None:
        try:
            await client.head_bucket(Bucket=self.bucket)
            return
        except Exception as exc:
            code = error_code(exc)
            if code in ("403", "AccessDenied"):
                raise StoreSetupError(f"access to the S3 bucket {self.bucket!r} is denied", backend=self.name) from exc
            if code not in _NO_BUCKET:
                raise
        if not self._create_bucket:
            raise StoreSetupError(
                f"the S3 bucket {self.bucket!r} does not exist (create it, or pass create_bucket=True)",
                backend=self.name,
            )
        settings: dict[str, Any] = {"Bucket": self.bucket}
        region = client.meta.region_name
        if region and region != "us-east-1":
            settings["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            await client.create_bucket(**settings)
        except Exception as exc:
            if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    async def close(self) -> None:
        """Close the client, if kvrt made it."""
        await self._aws.close()

    # Layout.

    def _folder(self, collection: str) -> str:
        """Return what every object key of ``collection`` starts with."""
        encoded = encode_name(collection, collection=True)
        if len(encoded.encode()) > _MAX_COLLECTION:
            encoded = hashed(collection)
        return f"{self.prefix}{encoded}/"

    def _object_key(self, folder: str, key: str) -> str:
        name = folder + encode_name(key, collection=False)
        if len(name.encode()) > _MAX_OBJECT_KEY:
            return folder + hashed(key)
        return name

    # The batch calls.

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        """Get every object at once, within the pool; a hashed stand-in counts only if its document names the key."""
        folder = self._folder(collection)
        names = [self._object_key(folder, key) for key in keys]
        found: list[bytes | str | None] = list(await fan_out(self._get_object, names, self._width))
        for index, (name, body) in enumerate(zip(names, found, strict=True)):
            if body is not None and (is_hashed(name[len(folder) :]) or is_hashed(folder[len(self.prefix) :])):
                names_in = _document_names(body)
                if names_in.key not in (None, keys[index]) or names_in.collection not in (None, collection):
                    found[index] = None
        return found

    async def _get_object(self, name: str) -> bytes | None:
        try:
            response = await self.client.get_object(Bucket=self.bucket, Key=name)
        except Exception as exc:
            if error_code(exc) in _NOT_FOUND:
                return None
            raise
        async with response["Body"] as stream:
            body: bytes = await stream.read()
        return body

    async def put_many(
        self,
        collection: str,
        keys: Sequence[str],
        entries: Sequence[bytes],
        expires_at: Sequence[float | None],
    ) -> None:
        """Put every object at once, within the pool (a key given twice is written once, its last entry)."""
        folder = self._folder(collection)
        latest = {
            self._object_key(folder, key): (entry, expiry)
            for key, entry, expiry in zip(keys, entries, expires_at, strict=True)
        }
        soonest = min((expiry for _, expiry in latest.values() if expiry is not None), default=math.inf)
        self._next_cull = min(self._next_cull, soonest)
        self._due_by_writes = min(self._due_by_writes, soonest)
        await fan_out(self._put_object, list(latest.items()), self._width)

    async def _put_object(self, item: tuple[str, tuple[bytes, float | None]]) -> None:
        name, (entry, expiry) = item
        metadata = {} if expiry is None else {_EXPIRES: datetime.fromtimestamp(expiry, UTC).isoformat()}
        await self.client.put_object(
            Bucket=self.bucket, Key=name, Body=entry, ContentType="application/json", Metadata=metadata
        )

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Find which objects are there and live (``HeadObject``, at once), then delete them together."""
        folder = self._folder(collection)
        names = [self._object_key(folder, key) for key in keys]
        unique = list(dict.fromkeys(names))
        states = await fan_out(self._head, unique, self._width)
        now = time.time()
        present = [name for name, state in zip(unique, states, strict=True) if state is not None]
        await self._delete_objects(present)
        live = {name for name, state in zip(unique, states, strict=True) if state is not None and _live(state, now)}
        results = []
        for name in names:  # a key given twice is deleted once: the first says so
            results.append(name in live)
            live.discard(name)
        return results

    async def _head(self, name: str) -> dict[str, str] | None:
        """Return an object's metadata, or ``None`` if there is no such object."""
        try:
            response = await self.client.head_object(Bucket=self.bucket, Key=name)
        except Exception as exc:
            if error_code(exc) in _NOT_FOUND:
                return None
            raise
        metadata: dict[str, str] = response.get("Metadata", {})
        return metadata

    async def _delete_objects(self, names: Sequence[str]) -> int:
        """Delete ``names``, 1,000 to a ``DeleteObjects``; return how many."""
        for chunk in chunks(names, _DELETE_CHUNK):
            response = await self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": name} for name in chunk], "Quiet": True}
            )
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise RuntimeError(f"S3 refused to delete {len(errors)} objects: {first.get('Code')}")
        return len(names)

    # Listing.

    async def _pages(self, prefix: str, **options: Any) -> AsyncIterator[dict[str, Any]]:
        """Every page of the listing under ``prefix``."""
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": _LIST_PAGE, **options}
        while True:
            page: dict[str, Any] = await self.client.list_objects_v2(**request)
            yield page
            if not page.get("IsTruncated"):
                return
            request["ContinuationToken"] = page["NextContinuationToken"]

    async def keys(self, collection: str, limit: int | None) -> list[str]:
        """Return the live keys of ``collection``: the whole listing, each object's expiry read from its metadata."""
        folder = self._folder(collection)
        names: list[str] = []
        async for page in self._pages(folder):
            objects = [item["Key"] for item in page.get("Contents", [])]
            states = await fan_out(self._head, objects, self._width)
            now = time.time()
            for name, state in zip(objects, states, strict=True):
                if state is None or not _live(state, now):
                    continue
                key = await self._real_name(name, name[len(folder) :], "key")
                if key is not None:
                    names.append(key)
                    if limit is not None and len(names) >= limit:
                        return names
        return names

    async def _real_name(self, name: str, part: str, field: str) -> str | None:
        """Return the name ``part`` of object ``name`` stands for (a hashed stand-in's is in the document)."""
        if not is_hashed(part):
            return decode_name(part)
        body = await self._get_object(name)
        return None if body is None else getattr(_document_names(body), field)

    async def collections(self, limit: int | None) -> list[str]:
        """Return the collections that hold objects: the folders under the prefix."""
        names: list[str] = []
        async for page in self._pages(self.prefix, Delimiter="/"):
            for folder in (item["Prefix"] for item in page.get("CommonPrefixes", [])):
                part = folder[len(self.prefix) : -1]
                name = decode_name(part) if not is_hashed(part) else await self._collection_of(folder)
                if name is not None:
                    names.append(name)
                    if limit is not None and len(names) >= limit:
                        return names
        return names

    async def _collection_of(self, folder: str) -> str | None:
        async for page in self._pages(folder, MaxKeys=1):
            for item in page.get("Contents", []):
                return await self._real_name(item["Key"], folder[len(self.prefix) : -1], "collection")
            break
        return None

    async def destroy_collection(self, collection: str) -> bool:
        """Delete every object of ``collection``."""
        return await self._delete_listed(self._folder(collection)) > 0

    async def destroy(self) -> bool:
        """Delete every object under the prefix (with none, every object in kvrt's ``collection/key`` layout)."""
        return await self._delete_listed(self.prefix) > 0

    async def _delete_listed(self, prefix: str) -> int:
        removed = 0
        async for page in self._pages(prefix):
            names = [item["Key"] for item in page.get("Contents", []) if "/" in item["Key"][len(self.prefix) :]]
            removed += await self._delete_objects(names)
        return removed

    async def cull(self, budget: int) -> tuple[int, bool]:
        """Read the expiry of up to ``budget`` objects, from where the last step stopped, and delete the expired.

        S3 lists no metadata, so a pass costs a ``HeadObject`` per object: a pass runs only once
        something is due (the soonest expiry the last pass saw, or one written since), and at least
        hourly for what other writers stored.
        """
        if self._cull_after is None:
            if time.time() < self._next_cull:
                return 0, True
            self._due_by_writes = self._pass_soonest = math.inf
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix, "MaxKeys": min(budget, _LIST_PAGE)}
        if self._cull_after is not None:
            request["StartAfter"] = self._cull_after
        page = await self.client.list_objects_v2(**request)
        objects = [item["Key"] for item in page.get("Contents", [])]
        states = await fan_out(self._head, objects, self._width)
        now = time.time()
        expired = [name for name, state in zip(objects, states, strict=True) if state and not _live(state, now)]
        removed = await self._delete_objects(expired)
        for state in states:
            expiry = None if state is None else _expiry(state)
            if expiry is not None and expiry > now:
                self._pass_soonest = min(self._pass_soonest, expiry)
        if page.get("IsTruncated") and objects:
            self._cull_after = objects[-1]
            return removed, False
        self._cull_after = None
        self._next_cull = min(self._pass_soonest, self._due_by_writes, now + _QUIET_CULL)
        return removed, True

    def is_transient(self, error: BaseException) -> bool:
        """Throttling (``SlowDown``), 5xx replies, lost connections and timeouts are transient."""
        return is_transient(error)


def _live(metadata: dict[str, str], now: float) -> bool:
    expiry = _expiry(metadata)
    return expiry is None or expiry > now


def _document_names(body: bytes | str) -> _Names:
    try:
        return _names_decoder.decode(body)
    except msgspec.DecodeError:
        return _Names()

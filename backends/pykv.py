"""Any py-key-value store (Elasticsearch, Firestore, Vault, Aerospike, ...) as a supervised kvrt worker.

The store is called through its own protocol, a batch at a time: a round of gets becomes one
``ttl_many``, a round of puts one ``put_many`` per expiry, a round of deletes one ``delete_many``.
kvrt's entry documents are translated at the boundary: what the store returns is re-encoded with
its remaining TTL as an absolute expiry, and what kvrt writes is given to the store as a value and a
TTL, so the store keeps its own stored format. Its errors become kvrt's errors of the same name,
and its connection failures and timeouts are transient: the worker reconnects and retries them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from kvrt import errors as kvrt_errors
from kvrt.backends.base import Backend, Capabilities
from kvrt.entry import decode_entry, encode_entry, encode_value, stamp
from kvrt.protocol import (
    AsyncKeyValue,
    collections_of,
    cull_of,
    destroy_collection_of,
    destroy_of,
    keys_of,
    segments_of,
)

_TRANSIENT_NAMES: Final = frozenset(
    {
        "ConnectionError",
        "TimeoutError",
        "StoreConnectionError",
        "ConnectionTimeout",
        "AutoReconnect",
        "NetworkTimeout",
        "ServerSelectionTimeoutError",
        "ServiceUnavailable",
        "EndpointConnectionError",
        "ReadTimeoutError",
    }
)
"""Exception class names that mean the store could not be reached, whatever driver raised them."""


class PyKeyValueBackend(Backend):
    """Runs ``store``, any object with py-key-value's ``AsyncKeyValue`` methods, behind a kvrt worker.

    Every policy applies to it: deadlines, restart with backoff, the circuit breaker, fallback. The
    handle offers the optional segments ``store`` offers. ``store.setup()`` (if it has one) runs at
    each open, so a store that cannot connect fails the open and is retried; ``store.close()`` runs
    once, when the worker ends for good (a restart keeps the store: its client reconnects itself).
    ``asyncio_only`` (the default) runs the store on an asyncio loop under trio, as most
    py-key-value drivers need; pass ``False`` for a store that runs on any loop.
    """

    name = "pykv"

    def __init__(self, store: AsyncKeyValue, *, asyncio_only: bool = True, max_batch: int = 1024) -> None:
        self.store = store
        self.asyncio_only = asyncio_only
        offered = segments_of(store)
        self.capabilities = Capabilities(
            native_ttl=True,
            max_batch=max_batch,
            keys="keys" in offered,
            collections="collections" in offered,
            destroy="destroy" in offered,
            destroy_collection="destroy_collection" in offered,
            cull="cull" in offered,
        )

    @property
    def kind(self) -> str:
        """The store's class name, for logs and errors."""
        return f"PyKeyValueBackend({type(self.store).__name__})"

    async def open(self) -> None:
        """Let the store set itself up (connect, create tables), as it would on its first call."""
        setup = getattr(self.store, "setup", None)
        if setup is not None:
            with _translated():
                await setup()

    async def shutdown(self) -> None:
        """Close the store, once, when its worker ends for good (a closed reference store cannot be reopened)."""
        close = getattr(self.store, "close", None)
        if close is not None:
            with _translated():
                await close()

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        """Read every key with its TTL in one ``ttl_many`` and give each back as a kvrt document."""
        with _translated():
            found = await self.store.ttl_many(list(keys), collection=collection)
        documents: list[bytes | str | None] = []
        for key, (value, seconds) in zip(keys, found, strict=True):
            if value is None or (seconds is not None and seconds <= 0):
                documents.append(None)
            else:
                documents.append(encode_entry(key, collection, encode_value(value), stamp(seconds)))
        return documents

    async def put_many(
        self,
        collection: str,
        keys: Sequence[str],
        entries: Sequence[bytes],
        expires_at: Sequence[float | None],
    ) -> None:
        """Write the entries with one ``put_many`` per expiry; an entry already expired is deleted instead."""
        groups: dict[float | None, dict[str, dict[str, Any]]] = {}
        for key, entry, expiry in zip(keys, entries, expires_at, strict=True):
            value, _ = decode_entry(entry, backend=self.name, collection=collection, key=key)
            for group in groups.values():
                group.pop(key, None)  # a later put of the same key wins
            groups.setdefault(expiry, {})[key] = value
        now = time.time()
        with _translated():
            for expiry, group in groups.items():
                if not group:
                    continue
                if expiry is not None and expiry <= now:
                    await self.store.delete_many(list(group), collection=collection)
                    continue
                ttl = None if expiry is None else expiry - now
                await self.store.put_many(list(group), list(group.values()), collection=collection, ttl=ttl)

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Delete the keys, reading first which ones hold a live entry.

        The store's ``delete_many`` only counts, and some of the reference's stores count an expired
        entry as deleted, where kvrt's contract says a delete finds nothing an expired entry left.
        """
        with _translated():
            unique = list(dict.fromkeys(keys))
            found = await self.store.get_many(unique, collection=collection)
            present = {key for key, value in zip(unique, found, strict=True) if value is not None}
            if present:
                await self.store.delete_many(list(present), collection=collection)
        removed: list[bool] = []
        for key in keys:
            removed.append(key in present)
            present.discard(key)  # a repeated key finds nothing the second time
        return removed

    async def keys(self, collection: str, limit: int | None) -> list[str]:
        """List the live keys of ``collection`` (py-key-value stores cap one listing at their page size).

        Some of the reference's stores list keys whose entries have expired; each listed key is read
        back, and only those still there are kept.
        """
        with _translated():
            listed = await keys_of(self.store).keys(collection)
            found = await self.store.get_many(listed, collection=collection) if listed else []
        live = [key for key, value in zip(listed, found, strict=True) if value is not None]
        return live if limit is None else live[:limit]

    async def collections(self, limit: int | None) -> list[str]:
        """List the store's collections."""
        with _translated():
            return await collections_of(self.store).collections(limit=limit)

    async def destroy(self) -> bool:
        """Destroy the store, as its own ``destroy`` means it."""
        with _translated():
            return await destroy_of(self.store).destroy()

    async def destroy_collection(self, collection: str) -> bool:
        """Destroy one collection of the store."""
        with _translated():
            return await destroy_collection_of(self.store).destroy_collection(collection)

    async def cull(self, budget: int) -> tuple[int, bool]:
        """Ask the store to cull; it does the whole pass and does not say how many it removed."""
        with _translated():
            await cull_of(self.store).cull()
        return 0, True

    def is_transient(self, error: BaseException) -> bool:
        """Call connection failures and timeouts transient, by any driver's name for them (and OS-level ones)."""
        if isinstance(error, OSError | TimeoutError):
            return True
        return any(cls.__name__ in _TRANSIENT_NAMES for cls in type(error).__mro__)


@contextmanager
def _translated() -> Iterator[None]:
    """Raise the store's py-key-value errors as kvrt's errors of the same name (the cause kept)."""
    try:
        yield
    except kvrt_errors.KeyValueError:
        raise
    except Exception as exc:
        ours = _kvrt_error_for(exc)
        if ours is None:
            raise
        raise ours from exc


def _kvrt_error_for(exc: Exception) -> kvrt_errors.KeyValueError | None:
    if not type(exc).__module__.startswith("key_value."):
        return None
    for cls in type(exc).__mro__:
        name = "KeyValueError" if cls.__name__ == "BaseKeyValueError" else cls.__name__
        ours = getattr(kvrt_errors, name, None)
        if isinstance(ours, type) and issubclass(ours, kvrt_errors.KeyValueError):
            return ours(getattr(exc, "message", None) or str(exc))
    return None

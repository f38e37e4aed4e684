"""A store in one RocksDB directory, on rocksdict: py-key-value's ``RocksDBStore`` layout.

Either library reads the other's directory. Both open it as rocksdict does by default (not in raw
mode): a key is the ``str`` ``"{collection}::{key}"`` (see :mod:`kvrt.backends.layout`), a value
the JSON document as ``bytes``, and rocksdict prefixes each with its type byte on disk. RocksDB
holds any bytes in a key, so every name is stored as it is, however long, with ``/``, ``..`` or a
NUL in it; only ``%`` and ``:`` in a collection are percent-encoded, so that no two entries share a key.

RocksDB expires nothing here (the reference keeps the expiry in the document too): the worker
hides expired documents, listings and deletes read the expiry from the document, and culling
walks the keys a budget at a time, resuming where its last step stopped. In a database kvrt opened
itself it knows the soonest expiry after a pass, and skips passes until then.

Where calls run follows from how rocksdict calls RocksDB: it holds the GIL for the whole of each
call, so whatever thread makes it, the event loop waits until it returns (an fsync, a read from
disk). A hop to a thread would add two thread wake-ups to every batch and keep nothing off the
loop. So a batch runs at once, on the event loop: a ``get`` is one multi-get, a ``put`` or
``delete`` one ``WriteBatch``. What would wait runs on the backend's thread lane, where the GIL is
released between calls: walks of many keys (listings, culling, ``destroy``), and a write in a
write stall, which RocksDB refuses at once (``no_slowdown``) and the lane retries after sleeps,
where RocksDB would have waited inside the call with the GIL held. While a call is out on the
lane, later batches follow it there, in order.

A write is acknowledged once RocksDB has written it to its write-ahead log, which reaches the
operating system before the ack, so it survives the process being killed; ``sync=True`` also
waits for the log to reach the disk (an fsync per batch, during which the event loop waits too),
so it survives power loss.

RocksDB lets one process open a directory at a time (its ``LOCK`` file), and so does rocksdict
within a process; the operating system releases the lock of a killed process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from kvrt.backends.base import Backend, Capabilities
from kvrt.backends.documents import expiry, is_live
from kvrt.backends.layout import SEPARATOR, collection_prefix, past_prefix, split_compound_key
from kvrt.errors import StoreSetupError
from kvrt.extras import needs_extra
from kvrt.lanes import ThreadLane
from kvrt.log import logger

with needs_extra("rocksdb", "RocksDBBackend"):
    from rocksdict import Options, Rdict, WriteBatch, WriteOptions

_T = TypeVar("_T")
_log = logger.bind(backend="rocksdb")

_DELETE_CHUNK = 4096
"""Deletes per ``WriteBatch`` when a whole collection (or everything) goes: bounded memory, whatever its size."""
_STALLED = "Result incomplete"
"""How rocksdict words RocksDB's ``Incomplete`` status: what a write with ``no_slowdown`` gets in a write stall."""
_STALL_WAIT = (0.001, 0.05)
"""The first and the longest wait before a stalled write is tried again (seconds)."""
_FOREIGN = b""
"""What a value that is no document (an int, a pickled object another writer stored) reads as: an
unreadable document, which the worker reports as a deserialization error for that key."""


def _document(stored: object) -> bytes | str | None:
    if stored is None or isinstance(stored, bytes | str):
        return stored
    return _FOREIGN


def _multi_get(db: Rdict, names: list[str]) -> list[Any]:
    """Read ``names`` with one RocksDB multi-get (rocksdict's ``get`` of a list), ``None`` where absent."""
    return cast("list[Any]", db.get(cast("list[Any]", names)))


def _refuse_pickles(data: bytes) -> object:
    """Stand in for rocksdict's ``pickle.loads``: a directory is data, never code to run."""
    return _FOREIGN


class RocksDBBackend(Backend):
    """Entries in the RocksDB database in directory ``path`` (created if missing).

    Or pass an open ``db`` (a ``rocksdict.Rdict`` not in raw mode, as the reference opens one);
    kvrt then never closes it. ``sync=True`` fsyncs the write-ahead log before each write is
    acknowledged (power-loss safe, at a disk flush per batch, which the event loop waits for);
    by default an acknowledged write is in the operating system's hands, which survives the
    process being killed. Expired entries are never returned, and are culled in the background.
    """

    name = "rocksdb"
    capabilities = Capabilities(
        native_ttl=False,  # expiry lives in the document: the runtime culls
        max_batch=1024,
        keys=True,
        collections=True,
        destroy=True,
        destroy_collection=True,
        cull=True,
    )

    def __init__(self, path: str | Path | None = None, *, db: Rdict | None = None, sync: bool = False) -> None:
        if (path is None) == (db is None):
            raise ValueError("give RocksDBBackend a path or an open rocksdict.Rdict, not both")
        if type(sync) is not bool:
            raise TypeError("sync must be True or False")
        self.path = Path(db.path() if db is not None else path)  # type: ignore[arg-type]
        self._db = db
        self._owns_db = db is None
        self._sync = sync
        self._write_options: WriteOptions | None = None
        self._lane = ThreadLane(f"kvrt {self.name} lane")
        self._cull_cursor: str | None = None
        self._soonest = -math.inf
        """No entry expires before this (epoch seconds): what lets a cull skip a pass with nothing due.
        Known only for a database kvrt opened itself (no one else can write to it)."""
        self._pass_soonest = math.inf
        self._calls_out = 0

    async def _run(self, call: Callable[..., _T], *args: Any) -> _T:
        """Run ``call`` on this backend's thread lane, in order; while it is out, later batches follow it there."""
        self._calls_out += 1
        try:
            return await self._lane.run(call, *args)
        finally:
            self._calls_out -= 1

    @property
    def db(self) -> Rdict:
        """The open database (only between :meth:`open` and :meth:`close`)."""
        return self.opened(self._db)

    async def open(self) -> None:
        """Open (and create) the database, or check the one given."""
        self._write_options = WriteOptions()
        self._write_options.sync = self._sync
        # rocksdict holds the GIL through every RocksDB call, so a write RocksDB stalls (its
        # memtables or level 0 are full) would freeze the event loop too: it is refused at once
        # instead, and the lane waits with the GIL released (see _write).
        self._write_options.no_slowdown = True
        self._cull_cursor = None
        self._soonest = -math.inf  # another process may have written while it was closed
        if self._db is None:
            self._db = await self._run(self._open_db)
        else:
            await self._run(self._check_db, self._db)

    def _open_db(self) -> Rdict:
        self.path.mkdir(parents=True, exist_ok=True)
        options = Options()  # the reference's: rocksdict's defaults, created if missing
        options.create_if_missing(True)
        try:
            db = Rdict(str(self.path), options=options)
        except Exception as exc:
            raise StoreSetupError(_open_failure(str(exc)), extra_info={"path": str(self.path)}) from None
        db.set_loads(_refuse_pickles)
        return db

    @staticmethod
    def _check_db(db: Rdict) -> None:
        try:
            db.get("")  # a str key: refused by a database in raw mode
        except KeyError:
            raise StoreSetupError(
                "the Rdict given is in raw mode; open it without raw_mode, as py-key-value does"
            ) from None
        except Exception as exc:
            raise StoreSetupError(f"the Rdict given cannot be read: {exc}") from None

    async def close(self) -> None:
        """Close the database, if kvrt opened it, and end the thread lane."""
        try:
            if self._owns_db and self._db is not None:
                db, self._db = self._db, None
                await self._run(db.close)
        finally:
            await self._lane.aclose()

    def _write(self, puts: list[tuple[str, bytes]], deletes: list[str], *, wait: bool = True) -> bool:
        """Apply ``puts`` and ``deletes`` in one ``WriteBatch``; say whether it was written.

        In a write stall RocksDB refuses it at once (``no_slowdown``): with ``wait`` this thread
        tries again after a sleep, with the GIL released; without it, the caller is told to move
        the write to the lane, which waits so.
        """
        db = self.db
        pause, longest = _STALL_WAIT
        stalled_since: float | None = None
        while True:
            batch = WriteBatch()  # a batch is consumed by the write, even a refused one
            for name, entry in puts:
                batch.put(name, entry)
            for name in deletes:
                batch.delete(name)
            try:
                db.write(batch, self._write_options)
            except Exception as exc:
                if _STALLED not in str(exc):
                    raise
                if not wait:
                    return False
                if stalled_since is None:
                    stalled_since = time.monotonic()
                    _log.warning("rocksdb.write_stalled", path=str(self.path))
                time.sleep(pause)  # on the lane, with the GIL released: the event loop runs on
                pause = min(pause * 2, longest)
                continue
            if stalled_since is not None:
                waited = round(time.monotonic() - stalled_since, 3)
                _log.info("rocksdb.write_resumed", path=str(self.path), seconds=waited)
            return True

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        """Read every key with one multi-get, at once unless a call on the lane is still out."""
        prefix = collection_prefix(collection)
        names = [prefix + key for key in keys]
        if self._calls_out:  # a write may be waiting on the lane: read behind it
            return await self._run(self._get_many, names)
        return self._get_many(names)

    def _get_many(self, names: list[str]) -> list[bytes | str | None]:
        return [_document(stored) for stored in _multi_get(self.db, names)]

    async def put_many(
        self,
        collection: str,
        keys: Sequence[str],
        entries: Sequence[bytes],
        expires_at: Sequence[float | None],
    ) -> None:
        """Write every entry in one ``WriteBatch``: at once, or on the lane behind a call still out or a stall."""
        prefix = collection_prefix(collection)
        puts = [(prefix + key, entry) for key, entry in zip(keys, entries, strict=True)]
        if self._calls_out or not self._write(puts, [], wait=False):
            await self._run(self._write, puts, [])
        soonest = min((expiry for expiry in expires_at if expiry is not None), default=math.inf)
        self._soonest = min(self._soonest, soonest)
        self._pass_soonest = min(self._pass_soonest, soonest)  # it may land where a pass under way has been

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Read the keys with one multi-get and delete them in one ``WriteBatch``; an expired entry is not counted."""
        prefix = collection_prefix(collection)
        names = [prefix + key for key in keys]
        if self._calls_out:
            return await self._run(self._delete_many, names)
        removed, doomed = self._delete_plan(names)
        if doomed and not self._write([], doomed, wait=False):
            await self._run(self._write, [], doomed)
        return removed

    def _delete_many(self, names: list[str]) -> list[bool]:
        removed, doomed = self._delete_plan(names)
        if doomed:
            self._write([], doomed)
        return removed

    def _delete_plan(self, names: list[str]) -> tuple[list[bool], list[str]]:
        """Return, for each name, whether a live entry goes; and the names to delete (once each)."""
        now = time.time()
        removed: list[bool] = []
        doomed: dict[str, None] = {}
        for name, stored in zip(names, _multi_get(self.db, names), strict=True):
            found = stored is not None and name not in doomed  # a key given twice: the second finds nothing
            removed.append(found and is_live(stored, now))
            if found:
                doomed[name] = None
        return removed, list(doomed)

    async def cull(self, budget: int) -> tuple[int, bool]:
        """Remove expired entries, looking at up to ``budget`` keys per step (none while nothing can have expired)."""
        if not self._calls_out and self._nothing_due(time.time()):
            return 0, True  # said without a hop to the lane
        return await self._run(self._cull, budget)

    def _nothing_due(self, now: float) -> bool:
        """Say whether a new pass would find nothing expired: before the soonest expiry of a database kvrt owns."""
        return self._cull_cursor is None and self._owns_db and now < self._soonest

    def _cull(self, budget: int) -> tuple[int, bool]:
        now = time.time()
        cursor = self._cull_cursor
        if cursor is None:  # a new pass over every key
            if self._nothing_due(now):
                return 0, True
            self._pass_soonest = math.inf
        db = self.db
        doomed: list[str] = []
        seen = 0
        iterator = db.iter()
        try:
            iterator.seek(cursor or "")  # str keys (all of kvrt's) sort together, from ""
            if cursor is not None and iterator.valid() and iterator.key() == cursor:
                iterator.next()
            while seen < budget and iterator.valid():
                name = iterator.key()
                if type(name) is not str:
                    break  # past the str keys
                cursor = name
                seen += 1
                if SEPARATOR in name:
                    expires = expiry(iterator.value())
                    if expires is not None:
                        if expires <= now:
                            doomed.append(name)
                        elif expires < self._pass_soonest:
                            self._pass_soonest = expires
                iterator.next()
            done = not iterator.valid() or type(iterator.key()) is not str
        finally:
            del iterator  # a live iterator keeps the database open
        if doomed:
            self._write([], doomed)
        if done:
            self._cull_cursor = None
            self._soonest = self._pass_soonest
        else:
            self._cull_cursor = cursor
        return len(doomed), done

    async def keys(self, collection: str, limit: int | None) -> list[str]:
        """Return the live keys of ``collection`` (a walk of its keys, which sort together)."""
        return await self._run(self._keys, collection, limit)

    def _keys(self, collection: str, limit: int | None) -> list[str]:
        prefix = collection_prefix(collection)
        start = len(prefix)
        now = time.time()
        names: list[str] = []
        if limit == 0:
            return names
        iterator = self.db.iter()
        try:
            iterator.seek(prefix)
            while iterator.valid():
                name = iterator.key()
                if type(name) is not str or not name.startswith(prefix):
                    break
                if is_live(iterator.value(), now):
                    names.append(name[start:])
                    if limit is not None and len(names) >= limit:
                        break
                iterator.next()
        finally:
            del iterator
        return names

    async def collections(self, limit: int | None) -> list[str]:
        """Return the collections that hold live entries (a walk that skips each collection once it is found)."""
        return await self._run(self._collections, limit)

    def _collections(self, limit: int | None) -> list[str]:
        now = time.time()
        names: list[str] = []
        if limit == 0:
            return names
        iterator = self.db.iter()
        try:
            iterator.seek("")
            while iterator.valid():
                name = iterator.key()
                if type(name) is not str:
                    break
                parts = split_compound_key(name)
                if parts is None or not is_live(iterator.value(), now):
                    iterator.next()
                    continue
                names.append(parts[0])
                if limit is not None and len(names) >= limit:
                    break
                stored = name[: name.index(SEPARATOR) + len(SEPARATOR)]
                iterator.seek(past_prefix(stored))  # the first key after this collection's
        finally:
            del iterator
        return names

    async def destroy(self) -> bool:
        """Remove every kvrt entry (keys in kvrt's layout only, never other data)."""
        return await self._run(self._destroy, None)

    async def destroy_collection(self, collection: str) -> bool:
        """Remove every entry of ``collection``."""
        return await self._run(self._destroy, collection)

    def _destroy(self, collection: str | None) -> bool:
        db = self.db
        prefix = "" if collection is None else collection_prefix(collection)
        now = time.time()
        live = False
        doomed: list[str] = []
        iterator = db.iter()
        try:
            iterator.seek(prefix)
            while iterator.valid():
                name = iterator.key()
                if type(name) is not str or not name.startswith(prefix):
                    break
                if collection is not None or split_compound_key(name) is not None:
                    live = live or is_live(iterator.value(), now)
                    doomed.append(name)
                    if len(doomed) >= _DELETE_CHUNK:
                        self._write([], doomed)
                        doomed = []
                iterator.next()
        finally:
            del iterator
        if doomed:
            self._write([], doomed)
        return live


def _open_failure(detail: str) -> str:
    """Say why RocksDB would not open a directory, naming the usual cause in plain words."""
    if "lock" in detail.lower():
        return (
            "the RocksDB directory is open elsewhere (another process, or another Rdict in this one, holds its"
            f" LOCK; RocksDB lets one open it at a time): {detail}"
        )
    return f"RocksDB could not open the directory: {detail}"

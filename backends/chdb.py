"""chDB (embedded ClickHouse): a row per write in one ``ReplacingMergeTree`` table, py-key-value's ``ChDBStore`` layout.

The table (``kv_entries`` unless ``table=`` says otherwise, in the session's current database) has
the reference's columns: ``collection``, ``key``, ``value`` (the value's JSON text), ``created_at``
and ``expires_at`` (ISO 8601 text, ``''`` for none), ``version`` and ``inserted_at`` (the
``DateTime64`` the engine stamps each row with, and its version column), ordered by
``(collection, key)``. A put inserts a row and never updates one: reads take the newest row of a key
through ``FINAL``, and background merges drop the older ones. A delete is a lightweight ``DELETE``
of every row of the key. kvrt creates the table as the reference does, plus two table settings
(``enable_block_number_column`` and ``enable_block_offset_column``) that let a delete write a patch
part at once instead of waiting for a background mutation; columns, engine and key are the
reference's, so either library reads and writes the other's data directory.

ClickHouse expires nothing here (the reference's TTL is a text column), so reads leave out rows
whose newest version has expired, and the runtime culls them in budgeted steps. A round of gets is
one ``SELECT … FINAL`` with ``key IN (…)``, of puts one multi-row ``INSERT`` (a key given twice: its
last entry), of deletes a ``SELECT`` of what is there and one ``DELETE``. Names go into statements
as ClickHouse string literals, escaped byte for byte (:func:`quote`); rows go in as
``JSONCompactEachRow`` data, which the engine parses as data, never as SQL.

chDB's engine is one per process: sessions on the same directory share it (and ``:memory:``
sessions share one in-memory database while any is open), but a session on another directory
cannot open until every session on the first has closed, and another process cannot open a
directory this one holds. A session may be used from any thread; this backend makes, uses and
closes its own on its thread lane, and a ``session=`` you pass is used there and never closed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec

from kvrt.backends.base import Backend, Capabilities
from kvrt.errors import KeyValueStoreError, StoreSetupError
from kvrt.extras import needs_extra
from kvrt.lanes import ThreadLane
from kvrt.log import logger

with needs_extra("chdb", "ChDBBackend"):
    from chdb.session import Session

_new_session: Callable[[str], Any] = Session  # chdb's functions carry no annotations: its session is Any here

_T = TypeVar("_T")
_log = logger.bind(backend="chdb")

_TABLE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")  # the reference's rule, and a file name's bound
_COLUMNS: Final = {
    "collection": "String",
    "key": "String",
    "value": "String",
    "created_at": "String",
    "expires_at": "String",
    "version": "Int32",
    "inserted_at": "DateTime64(9, 'UTC')",
}
_ENGINE: Final = "ReplacingMergeTree"
_SORTING_KEY: Final = "collection, key"

_ESCAPES: Final = {code: f"\\x{code:02X}" for code in (*range(0x20), 0x7F)} | {ord("\\"): "\\\\", ord("'"): "\\'"}
_LITERALS_BOUND: Final = 64 * 1024
"""Characters of quoted names a statement holds in its text; past it, a set of names goes as a query
parameter (ClickHouse parses at most 256 KiB of a statement's text, parameters aside)."""

# Expired: the row has an expiry, and it has passed. A text that is no date counts as no expiry, so
# the entry is read (and its document refused, naming the key) rather than silently dropped.
_EXPIRED: Final = (
    "(expires_at != '' AND ifNull(parseDateTime64BestEffortOrNull(expires_at, 6, 'UTC') <= now64(6, 'UTC'), false))"
)
_LIVE: Final = f"NOT {_EXPIRED}"
_TEXT: Final = " SETTINGS output_format_json_validate_utf8 = 1"  # bytes another writer stored that UTF-8 cannot hold
_FORMAT: Final = "JSONCompactEachRow"
_RAW: Final = "kvrt-unreadable:"
"""Starts a ``value`` holding a whole document kvrt could not split (no JSON text starts so)."""

# A lightweight DELETE is by default a mutation, which the engine's background pool picks up when
# it next wakes (measured here: 15 ms to over a second). On a table that numbers its rows' blocks
# it can instead write a patch part at once, as an INSERT does (about 10 ms, every time), which
# reads apply and merges fold in. kvrt creates its tables so; a table the reference made is
# deleted from its way.
_PATCHABLE: Final = ("enable_block_number_column = 1", "enable_block_offset_column = 1")
_PATCHABLE_TABLE: Final = " SETTINGS " + ", ".join(_PATCHABLE)
_PATCH_DELETE: Final = " SETTINGS lightweight_delete_mode = 'lightweight_update_force'"

_CODE: Final = re.compile(r"Code: (\d+)")
_NAME: Final = re.compile(r"\(([A-Z][A-Z0-9_]+)\)\s*$")
_OTHER_PATH: Final = re.compile(r"already initialized with path '(.*)', cannot connect")


def quote(text: str) -> str:
    """Return ``text`` as a ClickHouse string literal: quotes, backslashes and control characters escaped.

    Every other character goes as its UTF-8, which a quoted literal holds as it is.
    """
    return "'" + text.translate(_ESCAPES) + "'"


def _name_set(names: Sequence[str]) -> tuple[str, dict[str, str]]:
    """Return the right side of ``IN`` for ``names``, and the query parameters it needs."""
    listed = ",".join(map(quote, names))
    if len(listed) <= _LITERALS_BOUND:
        return f"({listed})", {}
    return "(SELECT arrayJoin({names:Array(String)}))", {"names": f"[{listed}]"}


class _Incoming(msgspec.Struct):
    """The parts of a stored JSON document that a row holds."""

    value: msgspec.Raw
    created_at: str | None = None
    expires_at: str | None = None
    version: int = 1


_incoming: Final = msgspec.json.Decoder(_Incoming)
_encode: Final = msgspec.json.Encoder().encode
_found: Final = msgspec.json.Decoder(list[tuple[str, str, str, str, int]])
_names: Final = msgspec.json.Decoder(list[tuple[str]])
_pairs: Final = msgspec.json.Decoder(list[tuple[str, str]])
_layouts: Final = msgspec.json.Decoder(list[tuple[str, str, str, list[tuple[str, str]]]])


def _rows(output: bytes, decoder: msgspec.json.Decoder[list[_T]]) -> list[_T]:
    """Decode ``JSONCompactEachRow`` output: one JSON array a line (no raw newline inside one)."""
    output = output.rstrip(b"\n")
    return decoder.decode(b"[" + output.replace(b"\n", b",") + b"]") if output else []


def _expired(expires: str, now: float) -> bool:
    """Say whether a row's ``expires_at`` has passed (as :data:`_EXPIRED` says in SQL, without the engine's time).

    Checked here rather than in the statement: the engine's parse of every row costs more than this.
    """
    if not expires:
        return False
    try:
        moment = datetime.fromisoformat(expires)
    except ValueError:
        return False  # no date: read, and refused as a document
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() <= now


def _iso(epoch: float | None) -> str:
    return "" if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def _row(collection: str, key: str, entry: bytes, expiry: float | None) -> bytes:
    """Return the ``JSONCompactEachRow`` row that stores ``entry``, kvrt's document."""
    try:
        parts = _incoming.decode(entry)
        if -(2**31) <= parts.version < 2**31:
            expires = parts.expires_at if parts.expires_at is not None else _iso(expiry)
            return _encode(
                [collection, key, bytes(parts.value).decode(), parts.created_at or "", expires, parts.version]
            )
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        pass
    return _encode([collection, key, _RAW + entry.decode("utf-8", "replace"), "", _iso(expiry), 1])


def _document(collection: bytes, key: str, value: str, created: str, expires: str, version: int) -> bytes | str:
    """Return kvrt's stored JSON document for a row (keys sorted, the reference's separators)."""
    if value.startswith(_RAW):
        return value[len(_RAW) :]
    parts = [b'{"collection": ', collection]
    if created:
        parts += (b', "created_at": ', _encode(created))
    if expires:
        parts += (b', "expires_at": ', _encode(expires))
    parts += (b', "key": ', _encode(key), b', "value": ', value.encode(), b', "version": %d}' % version)
    return b"".join(parts)


def _refusal(error: BaseException, what: str) -> KeyValueStoreError:
    """Return the error for a statement chDB refused: its code and name, never its text (which may quote data)."""
    text = str(error)
    code, name = _CODE.search(text), _NAME.search(text)
    said = f"{name.group(1) if name else type(error).__name__}" + (f" (code {code.group(1)})" if code else "")
    return KeyValueStoreError(f"chDB refused kvrt's {what}: {said}", backend="chdb")


class ChDBBackend(Backend):
    """Entries as rows of the chDB table ``table``, in the database directory ``path``.

    Without a ``path`` (or with ``":memory:"``), the data lives in memory, shared with every other
    in-memory chDB session of the process, and goes when the last of them closes. Or pass an open
    ``chdb.session.Session``: kvrt uses it and never closes it. The table is created, the
    reference's way, where it is missing. chDB holds one directory per process at a time: opening a
    backend on another while a session on the first is open is a :class:`~kvrt.errors.StoreSetupError`.
    """

    name = "chdb"
    capabilities = Capabilities(
        native_ttl=False,  # expiry is a text column: reads filter, the runtime culls
        max_batch=1024,
        keys=True,
        collections=True,
        destroy=True,
        destroy_collection=True,
        cull=True,
    )

    def __init__(
        self, path: str | Path | None = None, *, session: Session | None = None, table: str = "kv_entries"
    ) -> None:
        if path is not None and session is not None:
            raise ValueError("give ChDBBackend a path or an open chdb Session, not both")
        if session is not None and not isinstance(session, Session):
            raise TypeError(f"session must be a chdb.session.Session, not {type(session).__name__}")
        if path is not None and not isinstance(path, str | Path):
            raise TypeError(f"path must be a str or a Path, not {type(path).__name__}")
        if path is not None and "?" in str(path):
            raise ValueError("a chDB path holds no '?': chDB reads what follows it as engine settings")
        if not isinstance(table, str) or not _TABLE.fullmatch(table):
            raise ValueError(
                "table must be an identifier: letters, digits and underscores, not starting with a digit, "
                "at most 200 characters"
            )
        self.path = ":memory:" if path is None else str(path)
        self.table = table
        self._given: Any = session
        self._session: Any = session
        self._lane = ThreadLane(f"kvrt {self.name} lane")
        self._sql = _statements(f"`{table}`", quote(table))
        self.patches = False
        """Whether the table lets a delete write a patch part (kvrt's tables; not the reference's)."""
        self._deleting = ""

    def __repr__(self) -> str:
        where = "a session of yours" if self._given is not None else repr(self.path)
        return f"<ChDBBackend {where} table={self.table!r}>"

    @property
    def session(self) -> Any:
        """The chDB session: the user's, or kvrt's between :meth:`open` and :meth:`close`."""
        return self.opened(self._session)

    async def _run(self, call: Callable[..., _T], *args: Any) -> _T:
        """Run a blocking call on this backend's thread lane, in order, off the event loop."""
        return await self._lane.run(call, *args)

    async def open(self) -> None:
        """Open the session (unless one was given) and check the table (creating it where missing)."""
        self._session = await self._run(self._open)

    def _open(self) -> Any:
        session: Any = self._given
        if session is None:
            refused: StoreSetupError | None = None
            try:
                session = _new_session(self.path)
            except RuntimeError as exc:
                refused = self._open_refusal(exc)
            if refused is not None:
                raise refused
        try:
            self._prepare_table(session)
        except BaseException:
            if self._given is None:
                session.close()
            raise
        return session

    def _open_refusal(self, error: RuntimeError) -> StoreSetupError:
        text = str(error)
        other = _OTHER_PATH.search(text)
        if other is not None:
            reason = (
                f"chDB holds one database directory per process, and {other.group(1)!r} is open here: "
                f"close every chDB session on it before opening {self.path!r}"
            )
        elif "Cannot lock file" in text:
            reason = f"another process has the chDB directory {self.path!r} open"
        else:
            reason = f"chDB could not open {self.path!r}: {_refusal(error, 'open').reason}"
        return StoreSetupError(reason, backend=self.name)

    def _prepare_table(self, session: Any) -> None:
        layout = self._layout(session)
        if layout is None:
            self._create_table(session)
            layout = self._layout(session)
        engine, sorting_key, settings, columns = layout or ("", "", "", [])
        held = dict(columns)
        wrong = sorted(name for name, kind in _COLUMNS.items() if held.get(name) != kind)
        if engine != _ENGINE or sorting_key != _SORTING_KEY or wrong:
            found = f"{engine or 'no'} engine ordered by ({sorting_key})" + (
                f", no column {', '.join(f'{name} {_COLUMNS[name]}' for name in wrong)}" if wrong else ""
            )
            raise StoreSetupError(
                f"the chDB table {self.table!r} is not laid out as kvrt's ({_ENGINE} ordered by "
                f"({_SORTING_KEY}), the reference's columns): it has {found}",
                backend=self.name,
            )
        self.patches = all(setting in settings for setting in _PATCHABLE)
        self._deleting = _PATCH_DELETE if self.patches else ""

    def _create_table(self, session: Any) -> None:
        """Create the reference's table, with the settings that let a delete write a patch part, where chDB has them."""
        try:
            self._query(session, self._sql["create"] + _PATCHABLE_TABLE, "creation of the table")
        except KeyValueStoreError:  # an engine older than patch parts: the reference's table as it is
            self._query(session, self._sql["create"], "creation of the table")
        _log.info("chdb.table_created", table=self.table)

    def _layout(self, session: Any) -> tuple[str, str, str, list[tuple[str, str]]] | None:
        """Return the table's engine, sorting key, engine clause and columns; ``None`` if there is no such table."""
        found = _rows(self._query(session, self._sql["layout"], "check of the table"), _layouts)
        return found[0] if found else None

    async def close(self) -> None:
        """Close the session, if kvrt opened it, and end the thread lane."""
        try:
            if self._given is None and self._session is not None:
                session, self._session = self._session, None
                await self._run(session.close)
        finally:
            await self._lane.aclose()

    def _query(self, session: Any, sql: str, what: str, params: dict[str, str] | None = None) -> bytes:
        """Run one statement; return its output (``JSONCompactEachRow``)."""
        refused: KeyValueStoreError | None = None
        try:
            output: bytes = session.query(sql, _FORMAT, params=params or {}).bytes()
            return output
        except RuntimeError as exc:
            refused = _refusal(exc, what)
        except AttributeError:  # what a closed session raises
            refused = StoreSetupError("the chDB session is closed", backend=self.name)
        raise refused  # here, outside the except: no chained error carries the engine's words

    def _do(self, sql: str, what: str, params: dict[str, str] | None = None) -> bytes:
        return self._query(self.session, sql, what, params)

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        """Read the batch with one ``SELECT … FINAL``, leaving out what has expired."""
        return await self._run(self._get_many, collection, keys)

    def _get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        names, params = _name_set(list(dict.fromkeys(keys)))
        sql = self._sql["get"].format(collection=quote(collection), names=names)
        rows = _rows(self._do(sql, "read", params), _found)
        encoded = _encode(collection)
        now = time.time()
        found = {row[0]: _document(encoded, *row) for row in rows if not _expired(row[3], now)}
        return [found.get(key) for key in keys]

    async def put_many(
        self,
        collection: str,
        keys: Sequence[str],
        entries: Sequence[bytes],
        expires_at: Sequence[float | None],
    ) -> None:
        """Write the batch with one multi-row ``INSERT`` (a key given twice: its last entry)."""
        await self._run(self._put_many, collection, keys, entries, expires_at)

    def _put_many(
        self, collection: str, keys: Sequence[str], entries: Sequence[bytes], expires_at: Sequence[float | None]
    ) -> None:
        latest = {key: (entry, expiry) for key, entry, expiry in zip(keys, entries, expires_at, strict=True)}
        data = b"\n".join(_row(collection, key, entry, expiry) for key, (entry, expiry) in latest.items())
        self._do(self._sql["put"] + data.decode(), "write")

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Find what the batch holds with one ``SELECT``, then remove it with one ``DELETE``; ``True`` where live."""
        return await self._run(self._delete_many, collection, keys)

    def _delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        names, params = _name_set(list(dict.fromkeys(keys)))
        quoted = quote(collection)
        present = _rows(self._do(self._sql["present"].format(collection=quoted, names=names), "read", params), _pairs)
        if not present:
            return [False] * len(keys)
        now = time.time()
        live = {key for key, expires in present if not _expired(expires, now)}
        doomed, params = _name_set([key for key, _ in present])
        self._do(self._sql["delete"].format(collection=quoted, names=doomed) + self._deleting, "delete", params)
        results = []
        for key in keys:  # a key given twice is deleted once: the first says so
            results.append(key in live)
            live.discard(key)
        return results

    async def cull(self, budget: int) -> tuple[int, bool]:
        """Delete the rows of at most ``budget`` entries whose newest version has expired (one ``DELETE``)."""
        return await self._run(self._cull, budget)

    def _cull(self, budget: int) -> tuple[int, bool]:
        cutoff = time.time_ns()  # a row written after the SELECT below is newer than this: it stays
        due = _rows(self._do(self._sql["expired"].format(limit=max(budget, 1)), "cull"), _pairs)
        if not due:
            return 0, True
        pairs: list[str] = []
        size = 0
        for collection, key in due:
            pair = f"({quote(collection)},{quote(key)})"
            size += len(pair) + 1
            if pairs and size > _LITERALS_BOUND:
                break
            pairs.append(pair)
        self._do(self._sql["cull"].format(pairs=",".join(pairs), cutoff=cutoff) + self._deleting, "cull")
        return len(pairs), len(pairs) == len(due) and len(due) < budget

    async def keys(self, collection: str, limit: int | None) -> list[str]:
        """Return the live keys of ``collection``."""
        return await self._run(self._keys, collection, limit)

    def _keys(self, collection: str, limit: int | None) -> list[str]:
        if limit == 0:
            return []
        sql = self._sql["keys"].format(collection=quote(collection), limit=_limit(limit))
        return [row[0] for row in _rows(self._do(sql, "listing of keys"), _names)]

    async def collections(self, limit: int | None) -> list[str]:
        """Return the collections that hold a live entry."""
        return await self._run(self._collections, limit)

    def _collections(self, limit: int | None) -> list[str]:
        if limit == 0:
            return []
        sql = self._sql["collections"].format(limit=_limit(limit))
        return [row[0] for row in _rows(self._do(sql, "listing of collections"), _names)]

    async def destroy(self) -> bool:
        """Empty the table (which stays); ``True`` if it held anything."""
        return await self._run(self._destroy, None)

    async def destroy_collection(self, collection: str) -> bool:
        """Delete the rows of ``collection``; ``True`` if there were any."""
        return await self._run(self._destroy, collection)

    def _destroy(self, collection: str | None) -> bool:
        if collection is None:
            if not self._do(self._sql["any"], "read").strip():
                return False
            self._do(self._sql["truncate"], "destroy")
            return True
        quoted = quote(collection)
        if not self._do(self._sql["any_in"].format(collection=quoted), "read").strip():
            return False
        self._do(self._sql["destroy_collection"].format(collection=quoted) + self._deleting, "destroy")
        return True


def _limit(limit: int | None) -> str:
    return "" if limit is None else f" LIMIT {int(limit)}"


def _statements(table: str, name: str) -> dict[str, str]:
    """Return the backend's SQL for ``table`` (backquoted; ``name`` is it as a literal), ``{}`` marking the blanks."""
    return {
        "layout": (
            "SELECT engine, sorting_key, engine_full, (SELECT groupArray((name, type)) FROM system.columns "
            f"WHERE database = currentDatabase() AND table = {name}) "
            f"FROM system.tables WHERE database = currentDatabase() AND name = {name}"
        ),
        "create": (  # the reference's table, column for column
            f"CREATE TABLE IF NOT EXISTS {table} (collection String, key String, value String, created_at String, "
            "expires_at String, version Int32, inserted_at DateTime64(9, 'UTC') DEFAULT now64(9)) "
            "ENGINE = ReplacingMergeTree(inserted_at) ORDER BY (collection, key)"
        ),
        "get": (
            f"SELECT key, value, created_at, expires_at, version FROM {table} FINAL "
            f"WHERE collection = {{collection}} AND key IN {{names}}{_TEXT}"
        ),
        "put": (f"INSERT INTO {table} (collection, key, value, created_at, expires_at, version) FORMAT {_FORMAT}\n"),
        "present": (
            f"SELECT key, expires_at FROM {table} FINAL WHERE collection = {{collection}} AND key IN {{names}}{_TEXT}"
        ),
        "delete": f"DELETE FROM {table} WHERE collection = {{collection}} AND key IN {{names}}",
        "expired": (  # rows that expired, then the entries whose newest row is one of them
            f"SELECT collection, key FROM {table} FINAL WHERE (collection, key) IN "
            f"(SELECT collection, key FROM {table} WHERE {_EXPIRED}) AND {_EXPIRED} LIMIT {{limit}}{_TEXT}"
        ),
        "cull": (  # every row of each entry: an older row left behind would come back
            f"DELETE FROM {table} WHERE (collection, key) IN ({{pairs}}) "
            "AND inserted_at <= fromUnixTimestamp64Nano(toInt64({cutoff}))"
        ),
        "keys": f"SELECT key FROM {table} FINAL WHERE collection = {{collection}} AND {_LIVE}{{limit}}{_TEXT}",
        "collections": f"SELECT DISTINCT collection FROM {table} FINAL WHERE {_LIVE}{{limit}}{_TEXT}",
        "any": f"SELECT 1 FROM {table} LIMIT 1",
        "any_in": f"SELECT 1 FROM {table} WHERE collection = {{collection}} LIMIT 1",
        "truncate": f"TRUNCATE TABLE {table}",
        "destroy_collection": f"DELETE FROM {table} WHERE collection = {{collection}}",
    }

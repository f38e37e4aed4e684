"""DuckDB, in a file or in memory: a row per entry in one table, py-key-value's ``DuckDBStore`` layout.

The table (``kv_entries`` unless ``table=`` says otherwise) has the reference's columns and key:
``collection`` and ``key`` (VARCHAR, the primary key), ``value`` (JSON: the entry's value, its text
as kvrt wrote it), ``created_at`` and ``expires_at`` (TIMESTAMPTZ) and ``version``, with the
reference's indexes on ``collection`` and ``expires_at``; kvrt creates a missing table as the
reference does, so either library reads and writes the other's rows. DuckDB expires nothing by
itself, so reads leave out what has expired and the runtime culls, a budget of rows per step.

The driver blocks, so every call runs on the backend's own thread lane, one hop per batch, and the
event loop never waits on the database. A batch is one statement per run: a round of gets one
``SELECT … key = ANY(?)``, of puts one multi-row upsert, ``MERGE INTO … USING (SELECT unnest(…))`` (a key
given twice: its last entry), of deletes one ``DELETE … RETURNING``, each in bounded chunks of keys, and a
call of several chunks runs in one transaction. Every name and value is a bound parameter; only the
table's name, checked to be an identifier, is part of the SQL text.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from kvrt.backends.base import Backend, Capabilities
from kvrt.errors import StoreSetupError
from kvrt.extras import needs_extra
from kvrt.lanes import ThreadLane
from kvrt.log import logger

with needs_extra("duckdb", "DuckDBBackend"):
    import duckdb

_T = TypeVar("_T")
_log = logger.bind(backend="duckdb")

_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # the reference's rule: an identifier needing no quotes
_COLUMNS = frozenset({"collection", "key", "value", "created_at", "expires_at", "version"})
_MEMORY = ":memory:"
_CONFLICT = re.compile(r"\bconflict\b", re.IGNORECASE)  # DuckDB's "Conflict on update!", "write-write conflict"
_CHUNK = 4096
"""Keys per statement: a bulk call past it is a series of statements in one transaction."""
_RAW = "kvrt-unreadable:"  # starts a JSON string holding a document kvrt could not read (tests and foreign writers)
_UNREADABLE = b"{}"  # no value: the caller gets a DeserializationError naming the key
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class _Incoming(msgspec.Struct):
    """The parts of a stored JSON document that a row holds."""

    value: msgspec.Raw
    created_at: datetime | None = None
    expires_at: datetime | None = None


class _Outgoing(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A row as kvrt's stored JSON document (fields in sorted order)."""

    collection: str
    created_at: str | None = None
    expires_at: str | None = None
    key: str
    value: msgspec.Raw
    version: int


_incoming = msgspec.json.Decoder(_Incoming)
_text = msgspec.json.Decoder(str)
_encoder = msgspec.json.Encoder()

Row = tuple[str, int | None, int | None]
"""A document's ``value`` text, and its ``created_at`` and ``expires_at`` in microseconds since the epoch."""


def _micros(moment: datetime) -> int:
    """Return ``moment`` exactly, in microseconds since the epoch (a naive time is UTC, as kvrt reads it)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND


def _at_micros(moment: datetime | None) -> int | None:
    return None if moment is None else _micros(moment)


def _iso(micros: int | None) -> str | None:
    return None if micros is None else (_EPOCH + timedelta(microseconds=micros)).isoformat()


def row_of(entry: bytes, expiry: float | None) -> Row:
    """Return the columns a stored document is written as.

    A document kvrt cannot read (planted by a test, or a foreign writer's) is kept whole, as a JSON
    string in ``value``, and reads back as it was, for the worker to refuse.
    """
    try:
        incoming = _incoming.decode(entry)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        raw = _RAW + entry.decode("utf-8", "replace")
        return _encoder.encode(raw).decode(), None, None if expiry is None else round(expiry * 1_000_000)
    created = None if incoming.created_at is None else _micros(incoming.created_at)
    expires: int | None = None
    if incoming.expires_at is not None:
        expires = _micros(incoming.expires_at)
    elif expiry is not None:
        expires = round(expiry * 1_000_000)
    return bytes(incoming.value).decode(), created, expires


def document_of(collection: str, key: str, value: str, created: int | None, expires: int | None) -> bytes | str:
    """Return kvrt's stored JSON document for a row (keys sorted, whoever wrote it; both write version 1)."""
    if value.startswith('"' + _RAW):
        return _text.decode(value)[len(_RAW) :]
    try:
        outgoing = _Outgoing(
            collection=collection,
            created_at=_iso(created),
            expires_at=_iso(expires),
            key=key,
            value=msgspec.Raw(value),
            version=1,
        )
        return msgspec.json.format(_encoder.encode(outgoing), indent=0)
    except (msgspec.MsgspecError, RecursionError, OverflowError):  # another writer's: too deep, or past year 9999
        return _UNREADABLE


def _chunks(names: list[str]) -> list[list[str]]:
    return [names[start : start + _CHUNK] for start in range(0, len(names), _CHUNK)]


def _now() -> int:
    return time.time_ns() // 1000


class DuckDBBackend(Backend):
    """Entries as rows of the DuckDB table ``table``, every collection in it.

    ``path`` is the database file (created if missing); ``None`` or ``":memory:"`` is a database
    in memory, which lives as long as the backend (a restart of its worker keeps it). Or pass an
    open ``connection`` (``duckdb.connect(...)``): kvrt uses it and never closes it. DuckDB lets one
    process at a time open a file for writing, so close the other side (the reference's store, a
    ``duckdb`` shell) before this one opens.
    """

    name = "duckdb"
    capabilities = Capabilities(
        native_ttl=False,  # DuckDB has no expiry of its own: reads filter, the runtime culls
        max_batch=1024,
        keys=True,
        collections=True,
        destroy=True,
        destroy_collection=True,
        cull=True,
    )

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        connection: duckdb.DuckDBPyConnection | None = None,
        table: str = "kv_entries",
    ) -> None:
        if path is not None and connection is not None:
            raise ValueError("give DuckDBBackend a path or an open connection, not both")
        if path is not None and not isinstance(path, str | Path):
            raise TypeError(f"path must be a str or a Path, not {type(path).__name__}")
        if connection is not None and not callable(getattr(connection, "execute", None)):
            raise TypeError("connection must be an open DuckDB connection (duckdb.connect)")
        if not isinstance(table, str) or not _TABLE.fullmatch(table):
            raise ValueError(
                f"table must be an identifier (letters, digits and underscores, not starting with a digit), "
                f"not {table!r}"
            )
        self.table = table
        self.path = _MEMORY if path is None or path == "" else str(path)
        self._given = connection
        self._connection: Any = connection
        self._lane = ThreadLane(f"kvrt {self.name} lane")
        self._sql = _statements(f'"{table}"', table)

    def __repr__(self) -> str:
        where = "a connection of yours" if self._given is not None else f"path={self.path!r}"
        return f"<DuckDBBackend {where} table={self.table!r}>"

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection: the user's, or kvrt's between :meth:`open` and :meth:`close`."""
        return self.opened(self._connection)  # type: ignore[no-any-return]

    @property
    def _kept_in_memory(self) -> bool:
        """Whether kvrt's own connection holds the only copy of the data: an in-memory database."""
        return self._given is None and self.path == _MEMORY

    async def _run(self, call: Callable[..., _T], *args: Any) -> _T:
        """Run a blocking call on this backend's thread lane, in order, off the event loop."""
        return await self._lane.run(call, *args)

    async def open(self) -> None:
        """Connect (unless given a connection, or holding an in-memory database) and check the table."""
        try:
            await self._run(self._open)
        except BaseException:
            await self.close()
            raise

    def _open(self) -> None:
        if self._connection is None:
            try:
                self._connection = duckdb.connect(self.path)
            except duckdb.Error as exc:
                refused = f"could not open the DuckDB database {self.path!r}: {exc}"
            else:
                refused = ""
            if refused:  # raised outside the except: no chained driver error
                raise StoreSetupError(refused, backend=self.name)
        try:
            self._prepare_table()
        except BaseException:
            if self._given is None and self._connection is not None:
                connection, self._connection = self._connection, None
                connection.close()
            raise

    def _prepare_table(self) -> None:
        connection = self._connection
        columns = connection.execute(self._sql["columns"], [self.table]).fetchall()
        if not columns:
            self._in_transaction(
                lambda: [connection.execute(self._sql[name]) for name in ("create_table", "collection", "expires_at")]
            )
            _log.info("duckdb.table_created", table=self.table)
            return
        missing = _COLUMNS - {column[0].lower() for column in columns}
        if missing:
            raise StoreSetupError(
                f"the DuckDB table {self.table!r} is not laid out as kvrt's: no column {', '.join(sorted(missing))}",
                backend=self.name,
            )

    async def close(self) -> None:
        """Close kvrt's own connection to a file, and end the thread lane (a user's connection stays open)."""
        try:
            if self._given is None and not self._kept_in_memory and self._connection is not None:
                connection, self._connection = self._connection, None
                await self._run(connection.close)
        finally:
            await self._lane.aclose()

    async def shutdown(self) -> None:
        """Close kvrt's own in-memory database, which restarts kept; no :meth:`open` follows."""
        if self._kept_in_memory and self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()

    def _chunked(self, names: list[str], statement: Callable[[list[str]], list[_T]]) -> list[_T]:
        """Run ``statement`` on each chunk of ``names``; several chunks run in one transaction."""
        chunks = _chunks(names)
        if len(chunks) <= 1:
            return statement(chunks[0]) if chunks else []
        return self._in_transaction(lambda: [item for chunk in chunks for item in statement(chunk)])

    def _in_transaction(self, work: Callable[[], _T]) -> _T:
        """Run ``work``'s statements as one transaction: all of them or none."""
        connection = self.connection
        connection.execute("BEGIN TRANSACTION")
        try:
            done = work()
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return done

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        """Read the batch in one hop, one ``SELECT`` per chunk of keys, leaving out what has expired."""
        return await self._run(self._get_many, collection, keys)

    def _get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        connection = self.connection
        sql = self._sql

        def select(chunk: list[str]) -> list[Any]:
            if len(chunk) == 1:  # times as datetimes: for one row, cheaper than DuckDB binding epoch_us()
                rows = connection.execute(sql["get_one"], [collection, chunk[0]]).fetchall()
                return [(chunk[0], value, _at_micros(created), _at_micros(expires)) for value, created, expires in rows]
            return connection.execute(sql["get"], [collection, chunk]).fetchall()

        rows = self._chunked(list(dict.fromkeys(keys)), select)
        now = _now()
        found = {
            key: document_of(collection, key, value, created, expires)
            for key, value, created, expires in rows
            if expires is None or expires > now
        }
        return [found.get(key) for key in keys]

    async def put_many(
        self,
        collection: str,
        keys: Sequence[str],
        entries: Sequence[bytes],
        expires_at: Sequence[float | None],
    ) -> None:
        """Write the batch in one hop, one multi-row upsert per chunk (a key given twice: its last entry)."""
        await self._run(self._put_many, collection, keys, entries, expires_at)

    def _put_many(
        self, collection: str, keys: Sequence[str], entries: Sequence[bytes], expires_at: Sequence[float | None]
    ) -> None:
        connection = self.connection
        sql = self._sql
        rows = {key: (entry, expiry) for key, entry, expiry in zip(keys, entries, expires_at, strict=True)}
        columns = {key: row_of(*rows[key]) for key in rows}

        def upsert(chunk: list[str]) -> list[None]:
            if len(chunk) == 1:
                connection.execute(sql["put_one"], [collection, chunk[0], *columns[chunk[0]]])
                return []
            values, created, expires = zip(*(columns[key] for key in chunk), strict=True)
            connection.execute(sql["put"], [collection, chunk, list(values), list(created), list(expires)])
            return []

        self._chunked(list(rows), upsert)

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Remove the batch in one hop, one ``DELETE … RETURNING`` per chunk; ``True`` where a live row went."""
        return await self._run(self._delete_many, collection, keys)

    def _delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        connection = self.connection
        sql = self._sql

        def delete(chunk: list[str]) -> list[Any]:
            if len(chunk) == 1:
                return connection.execute(sql["delete_one"], [collection, chunk[0]]).fetchall()
            return connection.execute(sql["delete"], [collection, chunk]).fetchall()

        rows = self._chunked(list(dict.fromkeys(keys)), delete)
        now = _now()
        live = {key for key, expires in rows if expires is None or expires > now}
        results = []
        for key in keys:  # a key given twice is deleted once: the first says so
            results.append(key in live)
            live.discard(key)
        return results

    async def cull(self, budget: int) -> tuple[int, bool]:
        """Delete at most ``budget`` expired rows in one ``DELETE``; done once fewer than that were left."""
        removed = await self._run(self._count, self._sql["cull"], [_now(), budget])
        return removed, removed < budget

    def _count(self, sql: str, parameters: list[Any]) -> int:
        """Run a ``DELETE`` and return how many rows it removed."""
        row = self.connection.execute(sql, parameters).fetchone()
        return int(row[0]) if row else 0

    async def keys(self, collection: str, limit: int | None) -> list[str]:
        """Return the live keys of ``collection``."""
        return await self._run(self._names, self._sql["keys"], [collection, _now(), limit])

    async def collections(self, limit: int | None) -> list[str]:
        """Return the collections that hold a live row."""
        return await self._run(self._names, self._sql["collections"], [_now(), limit])

    def _names(self, sql: str, parameters: list[Any]) -> list[str]:
        return [row[0] for row in self.connection.execute(sql, parameters).fetchall()]

    async def destroy(self) -> bool:
        """Delete every row of the table (which stays, with its indexes); never anything else."""
        return await self._run(self._count, self._sql["destroy"], []) > 0

    async def destroy_collection(self, collection: str) -> bool:
        """Delete the rows of ``collection``; ``True`` if there were any."""
        return await self._run(self._count, self._sql["destroy_collection"], [collection]) > 0

    def is_transient(self, error: BaseException) -> bool:
        """Call a write conflict (another connection of this process holds the same rows) transient: worth a retry."""
        return isinstance(error, duckdb.TransactionException) and _CONFLICT.search(str(error)) is not None


def _statements(table: str, name: str) -> dict[str, str]:
    """Return the backend's SQL for ``table`` (quoted; ``name`` as the reference names its indexes)."""
    where = f"FROM {table} WHERE collection = ?"
    live = "(expires_at IS NULL OR expires_at > make_timestamptz(?::BIGINT))"
    return {
        "columns": (
            "SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database() "
            "AND table_schema = current_schema() AND lower(table_name) = lower(?)"
        ),
        "create_table": (  # the reference's table, column for column
            f"CREATE TABLE IF NOT EXISTS {table} (collection VARCHAR NOT NULL, key VARCHAR NOT NULL, "
            "value JSON NOT NULL, created_at TIMESTAMPTZ, expires_at TIMESTAMPTZ, version INT NOT NULL, "
            "PRIMARY KEY (collection, key))"
        ),
        "collection": f'CREATE INDEX IF NOT EXISTS "idx_{name}_collection" ON {table}(collection)',
        "expires_at": f'CREATE INDEX IF NOT EXISTS "idx_{name}_expires_at" ON {table}(expires_at)',
        "get_one": f"SELECT value, created_at, expires_at {where} AND key = ?",
        "get": f"SELECT key, value, epoch_us(created_at), epoch_us(expires_at) {where} AND key = ANY(?::VARCHAR[])",
        "put_one": _merge(
            table,
            "SELECT ? AS collection, ? AS key, ?::JSON AS value, make_timestamptz(?::BIGINT) AS created_at, "
            "make_timestamptz(?::BIGINT) AS expires_at",
        ),
        "put": _merge(
            table,
            "SELECT ? AS collection, unnest(?::VARCHAR[]) AS key, unnest(?::VARCHAR[])::JSON AS value, "
            "make_timestamptz(unnest(?::BIGINT[])) AS created_at, make_timestamptz(unnest(?::BIGINT[])) AS expires_at",
        ),
        "delete_one": f"DELETE FROM {table} WHERE collection = ? AND key = ? RETURNING key, epoch_us(expires_at)",
        "delete": (
            f"DELETE FROM {table} WHERE collection = ? AND key = ANY(?::VARCHAR[]) RETURNING key, epoch_us(expires_at)"
        ),
        "cull": (
            f"DELETE FROM {table} WHERE rowid IN "
            f"(SELECT rowid FROM {table} WHERE expires_at <= make_timestamptz(?::BIGINT) LIMIT ?)"
        ),
        "keys": f"SELECT key FROM {table} WHERE collection = ? AND {live} LIMIT ?",
        "collections": f"SELECT DISTINCT collection FROM {table} WHERE {live} LIMIT ?",
        "destroy": f"DELETE FROM {table}",
        "destroy_collection": f"DELETE FROM {table} WHERE collection = ?",
    }


def _merge(table: str, rows: str) -> str:
    """Return an upsert of ``rows`` (keys already unique) into ``table``.

    ``INSERT OR REPLACE`` would do the same, but DuckDB plans it as this ``MERGE`` behind a
    grouping that keeps one row per key, which costs a millisecond a statement and is not needed here.
    """
    return (
        f"MERGE INTO {table} AS t USING ({rows}) AS s ON t.collection = s.collection AND t.key = s.key "
        "WHEN MATCHED THEN UPDATE SET value = s.value, created_at = s.created_at, expires_at = s.expires_at, "
        "version = 1 "
        "WHEN NOT MATCHED THEN INSERT (collection, key, value, created_at, expires_at, version) "
        "VALUES (s.collection, s.key, s.value, s.created_at, s.expires_at, 1)"
    )

"""PostgreSQL on asyncpg: a row per entry in one table, py-key-value's ``PostgreSQLStore`` layout.

The table (``kvrt`` unless ``table=`` says otherwise) has the reference's columns and key:
``collection`` and ``key`` (the primary key), ``value`` (JSONB: the entry's value), ``ttl``
(seconds to live, as written: neither library reads it back), ``created_at`` and ``expires_at`` (TIMESTAMPTZ), and a
partial index on ``expires_at``; kvrt creates it as the reference does, so either library reads and
writes the other's rows. PostgreSQL expires nothing by itself, so reads leave out what has expired
and the runtime culls: a step is one ``DELETE`` of at most its budget of expired rows, found
through that index.

JSONB keeps a value's meaning but not always its text: it refuses a NUL in a string, and keeps
numbers as decimals, so a float written with an exponent (``1e16``) would come back an int and
``-0.0`` as ``0.0``. kvrt writes such floats out in full (``10000000000000000.0``: JSONB keeps the
point, and the reference reads a float as well), and stores a value with a NUL or a negative zero
as its JSON text in a JSONB string, which kvrt reads back exactly and the reference refuses as
unreadable (it cannot store such a value itself). Reads rebuild kvrt's document, keys sorted. A
collection or key with a NUL (TEXT cannot hold one), or that starts with ``%%``, is stored as ``%%``
and its percent-encoding; a collection and key together past the primary key's B-tree bound (2,704
bytes, compressed) are an :class:`~kvrt.errors.InvalidKeyError`. Unlike the reference, a put
replaces the whole row, ``created_at`` too.

A round of gets is one ``SELECT … WHERE key = ANY($2)``, of puts one ``INSERT … SELECT … FROM
unnest(…) ON CONFLICT DO UPDATE`` (a key given twice: its last entry), of deletes one ``DELETE …
RETURNING``: one statement each whatever the batch's size, so each is prepared once per connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msgspec

from kvrt.backends.base import Backend, Capabilities
from kvrt.backends.names import percent_decode, percent_encode
from kvrt.errors import EntryTooLargeError, InvalidKeyError, StoreSetupError
from kvrt.extras import needs_extra
from kvrt.log import logger

with needs_extra("postgresql", "PostgreSQLBackend"):
    import asyncpg

_log = logger.bind(backend="postgresql")

_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")  # the reference's rule, in ASCII: an identifier needing no quotes
_IDENTIFIER = 63  # PostgreSQL's bound on a name, in bytes
_COLUMNS = frozenset({"collection", "key", "value", "ttl", "created_at", "expires_at"})
_ENCODED = "%%"  # starts a name stored percent-encoded
_UNSAFE_NAME = re.compile(r"[%\x00]")
_RAW = "kvrt-unreadable:"  # starts a JSONB string holding a document kvrt could not read (tests and foreign writers)
_TRANSIENT_CLASSES = frozenset({"08", "40", "53"})  # connection exception, transaction rollback, insufficient resources
_TRANSIENT_STATES = frozenset(
    {
        "57P01",  # admin_shutdown: the server is stopping, or the connection was terminated
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: starting up, or in recovery
        "57014",  # query_canceled: a statement_timeout
        "55P03",  # lock_not_available: a lock_timeout
        "25006",  # read_only_sql_transaction: a standby, until a failover ends
    }
)
_LOGIN_REFUSED = frozenset({"28000", "28P01"})  # invalid_authorization_specification, invalid_password
_CLOSED = re.compile(r"connection is closed|pool is clos|released back to the pool")  # asyncpg's words for one gone
_DEFAULTS: dict[str, Any] = {
    "min_size": 1,
    "max_size": 4,  # a worker's rounds need few connections: each is one statement
    "timeout": 5.0,  # to connect; no command_timeout: the worker bounds hung calls
}

# Where JSONB would change a value's text: a digit before an exponent, a negative zero, a NUL.
# A string that only looks so (a UUID, a date) costs one exact pass over the value.
_SUSPECT = re.compile(rb"[0-9][eE]|-0|\\u0000")
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|(-?[0-9]+(?:\.[0-9]+)?[eE][-+]?[0-9]+)|(-0\.0+)(?![0-9eE])')
_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")  # an escaped NUL, not an escaped backslash before "u0000"


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
    value: Any
    version: int


_incoming = msgspec.json.Decoder(_Incoming)
_any = msgspec.json.Decoder()
_text = msgspec.json.Decoder(str)
_object = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder(order="sorted")
_UNREADABLE = b"{}"  # no value: the caller gets a DeserializationError naming the key


def stored_name(name: str) -> str:
    """Return the TEXT a collection or key is stored as: itself, unless it holds a NUL or starts with ``%%``."""
    if "\x00" in name or name.startswith(_ENCODED):
        return _ENCODED + percent_encode(_UNSAFE_NAME, name)
    return name


def _name(stored: str) -> str:
    return percent_decode(stored[2:]) if stored.startswith(_ENCODED) else stored


def _spelled(number: bytes) -> tuple[bytes, bool]:
    """Return a JSON number with an exponent written out, so that JSONB keeps it a float (``1e2``: ``100.0``).

    Also say whether it is a negative zero, which JSONB cannot hold at all.
    """
    exact = Decimal(number.decode())
    text = format(exact, "f")
    return (text if "." in text else text + ".0").encode(), exact.is_zero() and exact.is_signed()


def jsonb_text(value: bytes) -> str:
    """Return what the ``value`` column gets for a value's JSON text: the text JSONB keeps exactly.

    Floats with an exponent are written out in full; a value with a NUL or a negative zero, which
    JSONB cannot hold as it is, becomes a JSON string of its text.
    """
    if _SUSPECT.search(value) is None:
        return value.decode()
    if _NUL.search(value) is None:
        negative_zero = False

        def respell(match: re.Match[bytes]) -> bytes:
            nonlocal negative_zero
            exponent = match.group(1)
            if exponent is not None:
                spelled, zero = _spelled(exponent)
                negative_zero = negative_zero or zero
                return spelled
            negative_zero = negative_zero or match.group(2) is not None
            return match.group(0)

        respelled = _TOKENS.sub(respell, value)
        if not negative_zero:
            return respelled.decode()
    return _encoder.encode(value.decode()).decode()


def _document(collection: str, key: str, text: str, created: datetime | None, expires: datetime | None) -> bytes | str:
    """Return kvrt's stored JSON document for a row (keys sorted, whoever wrote it)."""
    try:
        value: Any
        if text.startswith('"'):
            held = _text.decode(text)
            if held.startswith(_RAW):
                return held[len(_RAW) :]
            try:
                value = _object.decode(held)  # a value JSONB could not hold, as its text
            except (msgspec.DecodeError, msgspec.ValidationError):
                value = held  # not kvrt's: reads as the string it is (and fails as one)
        else:
            value = _any.decode(text)
        return msgspec.json.format(
            _encoder.encode(
                _Outgoing(
                    collection=collection,
                    created_at=None if created is None else created.isoformat(),
                    expires_at=None if expires is None else expires.isoformat(),
                    key=key,
                    value=value,
                    version=1,
                )
            ),
            indent=0,
        )
    except (msgspec.MsgspecError, RecursionError):  # nested past what msgspec reads, from another writer
        return _UNREADABLE


def _aware(moment: datetime | None) -> datetime | None:
    """Return ``moment`` with a time zone: a document's naive time is UTC, as kvrt reads it."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _row(entry: bytes, expiry: float | None) -> tuple[str, float | None, datetime | None, datetime | None]:
    """Return a document's ``value``, ``ttl``, ``created_at`` and ``expires_at`` columns."""
    try:
        incoming = _incoming.decode(entry)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        raw = _RAW + entry.decode("utf-8", "replace").replace("\x00", "\ufffd")
        return _encoder.encode(raw).decode(), None, None, _at(expiry)
    created = _aware(incoming.created_at)
    expires = _aware(incoming.expires_at) or _at(expiry)
    ttl = None if created is None or expires is None else (expires - created).total_seconds()
    return jsonb_text(bytes(incoming.value)), ttl, created, expires


def _at(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _count(status: str) -> int:
    """Return the rows a command's status (``DELETE 3``) says it touched."""
    return int(status.rpartition(" ")[2] or 0)


def is_transient(error: BaseException) -> bool:
    """Lost connections, serialization failures, a server shutting down or starting up are transient."""
    if isinstance(error, asyncpg.PostgresError):
        state = str(error.sqlstate or "")
        return state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES
    if isinstance(error, asyncpg.InterfaceError):
        return _CLOSED.search(str(error)) is not None
    if isinstance(error, asyncpg.exceptions.InternalClientError):
        return True  # a connection out of step (the server ended it mid-reply), or no primary among the hosts yet
    return isinstance(error, OSError)  # refused, reset, timed out


def _shown(url: str | None) -> str:
    """Where ``url`` goes, without its credentials or query: what a repr shows."""
    if url is None:
        return "asyncpg's defaults (PG* variables)"
    scheme, _, rest = url.partition("://")
    where = rest.rpartition("@")[2].split("?", 1)[0]
    return f"{scheme}://{where}"


class PostgreSQLBackend(Backend):
    """Entries as rows of the PostgreSQL table ``table``, every collection in it.

    ``url`` is a ``postgresql://`` or ``postgres://`` URL (user, password, hosts, database and
    asyncpg's parameters such as ``sslmode``); without one, asyncpg's defaults and the ``PG*``
    environment variables say where to go. ``pool_options`` go to ``asyncpg.create_pool``
    (``min_size``, ``max_size``, ``ssl``, ``server_settings``, ``statement_cache_size=0`` behind
    PgBouncer, ...); kvrt's defaults are 1 to 4 connections and 5 s to connect. Or pass an open
    asyncpg ``pool``, made on the loop the worker runs on: kvrt uses it and never closes it.

    ``create_table=True`` creates a missing table at spawn, the reference's layout and index;
    otherwise a missing table is a :class:`~kvrt.errors.StoreSetupError` there. ``destroy()``
    empties the table; it never drops it.
    """

    name = "postgresql"
    asyncio_only = True

    def __init__(
        self,
        url: str | None = None,
        *,
        table: str = "kvrt",
        pool: Any = None,
        create_table: bool = True,
        **pool_options: Any,
    ) -> None:
        if url is not None and pool is not None:
            raise ValueError("give PostgreSQLBackend a url or a pool, not both")
        if pool is not None and pool_options:
            raise ValueError("pool options are for a pool kvrt makes; yours is used as it is")
        if pool is not None and not callable(getattr(pool, "get_max_size", None)):
            raise ValueError("pool must be an asyncpg pool (asyncpg.create_pool)")
        if url is not None and (not isinstance(url, str) or urlsplit(url).scheme not in ("postgresql", "postgres")):
            raise ValueError("a PostgreSQL URL starts with postgresql:// or postgres://")
        if not isinstance(table, str) or not _TABLE.fullmatch(table):
            raise ValueError(
                "table must be a PostgreSQL identifier: letters, digits and underscores, "
                f"not starting with a digit, at most {_IDENTIFIER} characters"
            )
        self.table = table
        self._url = url
        self._given = pool
        self._pool: Any = pool
        self._idle: list[Any] = []  # connections taken from the pool and kept: see _query
        self._options = {**_DEFAULTS, **pool_options}
        self._create_table = create_table
        self._secrets = _passwords(url)
        # Unquoted, the reference's name folds to lower case: quoted here, the same table (and any name works).
        quoted = f'"{table.lower()}"'
        index = f"idx_{table}_expires_at"
        if len(index) > _IDENTIFIER:  # as the reference shortens it
            index = "idx_" + hashlib.sha256(table.encode()).hexdigest()[:16] + "_exp"
        self._sql = _statements(quoted, f'"{index.lower()}"')
        self._quoted = quoted
        size = pool.get_max_size() if pool is not None else self._options["max_size"]
        self.capabilities = Capabilities(
            native_ttl=False,
            max_batch=1024,
            concurrency=max(1, min(int(size), 4)),  # runs of different collections in one round overlap
            keys=True,
            collections=True,
            destroy=True,
            destroy_collection=True,
            cull=True,
        )

    def __repr__(self) -> str:
        where = "a pool of yours" if self._given is not None else _shown(self._url)
        return f"<PostgreSQLBackend {where} table={self.table!r}>"

    @property
    def pool(self) -> Any:
        """The asyncpg pool: the user's, or kvrt's between :meth:`open` and :meth:`close`."""
        return self.opened(self._pool)

    async def open(self) -> None:
        """Make the pool (unless one was given) and check the table is there (or create it, if asked)."""
        refused: StoreSetupError | None = None
        try:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(self._url, **self._options)
            await self._prepare_table()
        except BaseException as exc:
            await self.close()
            refused = self._refusal(exc)
            if refused is None:
                raise
        if refused is not None:  # raised here, outside the except: no chained error carries the driver's words
            raise refused

    def _refusal(self, error: BaseException) -> StoreSetupError | None:
        """Return the setup error ``error`` means at open, if it is one; never one that shows the password."""
        state = getattr(error, "sqlstate", None) if isinstance(error, asyncpg.PostgresError) else None
        if state in _LOGIN_REFUSED:
            return StoreSetupError("PostgreSQL refused kvrt's login", backend=self.name)
        if state == "3D000":
            return StoreSetupError("the PostgreSQL database does not exist", backend=self.name)
        if state == "42501":
            return StoreSetupError(f"PostgreSQL denied kvrt the table {self.table!r}: {error}", backend=self.name)
        if any(secret in str(link) for secret in self._secrets for link in _chain(error)):
            return StoreSetupError(f"could not connect to PostgreSQL: {type(error).__name__}", backend=self.name)
        return None

    async def _prepare_table(self) -> None:
        columns = await self._query(True, self._sql["columns"], self._quoted)
        if not columns:
            if not self._create_table:
                raise StoreSetupError(
                    f"the PostgreSQL table {self.table!r} does not exist (create it, or pass create_table=True)",
                    backend=self.name,
                )
            async with self._pool.acquire() as connection, connection.transaction():  # one creator at a time
                await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"kvrt:{self._quoted}")
                await connection.execute(self._sql["create_table"])
                await connection.execute(self._sql["create_index"])
            _log.info("postgresql.table_created", table=self.table)
            columns = await self._query(True, self._sql["columns"], self._quoted)
        missing = _COLUMNS - {column[0] for column in columns}
        if missing:
            raise StoreSetupError(
                f"the PostgreSQL table {self.table!r} is not laid out as kvrt's: "
                f"no column {', '.join(sorted(missing))}",
                backend=self.name,
            )

    async def _query(self, fetch: bool, sql: str, *args: Any) -> Any:
        """Run one statement on a connection the backend keeps (``fetch``: return its rows, else its status).

        The backend takes connections from the pool as its calls need them and keeps them until
        :meth:`close`: a connection given back to an asyncpg pool is reset there, a round trip of
        its own, which would double what a lone caller waits. One that fails other than by the
        server's refusal of the statement (a lost connection, a call cut off) is terminated, and the
        pool makes a new one. A connection its server ended means the server ended the others too (a
        restart, terminated sessions): all are replaced, or the next call would take one on its way out.
        """
        idle = self._idle
        while idle:
            connection = idle.pop()
            if _alive(connection):
                break
            _discard(connection)
            await self._replace_connections()
        else:
            connection = await self._pool.acquire()
        try:
            result = await (connection.fetch(sql, *args) if fetch else connection.execute(sql, *args))
        except Exception as exc:
            if isinstance(exc, asyncpg.PostgresError) and not is_transient(exc):
                idle.append(connection)  # the statement was refused; the connection is as good as before
                raise
            _discard(connection)
            if is_transient(exc) and _lost(exc):
                await self._replace_connections()
            raise
        except BaseException:  # cut off mid-call: that connection is out of step
            _discard(connection)
            raise
        idle.append(connection)
        return result

    async def _replace_connections(self) -> None:
        """Terminate the connections kept, and have the pool replace the ones it holds on their next use."""
        kept = self._idle[:]
        self._idle.clear()
        for connection in kept:
            _discard(connection)
        await self._pool.expire_connections()

    async def close(self) -> None:
        """Give back the connections kept, and close the pool if kvrt made it (a pool the user gave stays open)."""
        pool, held, self._idle = self._pool, self._idle, []
        for connection in held:
            try:
                await pool.release(connection)
            except Exception:  # a reset that failed (the server went away): the pool has terminated it
                _log.debug("postgresql.release_failed")
        if self._given is None and pool is not None:
            self._pool = None
            await pool.close()

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        """Read the batch with one ``SELECT``, leaving out what has expired."""
        stored = {key: stored_name(key) for key in keys}
        rows = await self._query(True, self._sql["get"], stored_name(collection), list(set(stored.values())))
        now = time.time()
        found: dict[str, bytes | str] = {}
        for row in rows:
            expires = row[3]
            if expires is None or expires.timestamp() > now:
                found[row[0]] = _document(collection, _name(row[0]), row[1], row[2], expires)
        return [found.get(stored[key]) for key in keys]

    async def put_many(
        self,
        collection: str,
        keys: Sequence[str],
        entries: Sequence[bytes],
        expires_at: Sequence[float | None],
    ) -> None:
        """Write the batch with one ``INSERT … ON CONFLICT DO UPDATE`` (a key given twice: its last entry).

        Rows go in key order, so that two batches writing the same keys lock them in the same order.
        """
        rows = {stored_name(key): (entry, expiry) for key, entry, expiry in zip(keys, entries, expires_at, strict=True)}
        names = sorted(rows)
        values: list[str] = []
        ttls: list[float | None] = []
        created: list[datetime | None] = []
        expires: list[datetime | None] = []
        for name in names:
            value, ttl, made, ends = _row(*rows[name])
            values.append(value)
            ttls.append(ttl)
            created.append(made)
            expires.append(ends)
        try:
            await self._query(False, self._sql["put"], stored_name(collection), names, values, ttls, created, expires)
        except asyncpg.exceptions.ProgramLimitExceededError as exc:
            if "index row" in str(exc):
                raise InvalidKeyError(
                    "The collection and key together are past PostgreSQL's bound for its primary key index "
                    "(2,704 bytes once compressed).",
                    backend=self.name,
                ) from None
            raise EntryTooLargeError("PostgreSQL holds JSONB values of at most 255 MB", backend=self.name) from None

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Remove the batch with one ``DELETE … RETURNING``; ``True`` where a live row went."""
        stored = [stored_name(key) for key in keys]
        rows = await self._query(True, self._sql["delete"], stored_name(collection), list(set(stored)))
        now = time.time()
        live = {row[0] for row in rows if row[1] is None or row[1].timestamp() > now}
        results = []
        for name in stored:  # a key given twice is deleted once: the first says so
            results.append(name in live)
            live.discard(name)
        return results

    async def cull(self, budget: int) -> tuple[int, bool]:
        """Delete at most ``budget`` expired rows (one ``DELETE``, through the ``expires_at`` index)."""
        removed = _count(await self._query(False, self._sql["cull"], datetime.now(UTC), budget))
        return removed, removed < budget

    async def keys(self, collection: str, limit: int | None) -> list[str]:
        """Return the live keys of ``collection``."""
        if limit == 0:
            return []
        rows = await self._query(True, self._sql["keys"], stored_name(collection), datetime.now(UTC), limit)
        return [_name(row[0]) for row in rows]

    async def collections(self, limit: int | None) -> list[str]:
        """Return the collections that hold a live row, walking the primary key a collection at a time."""
        if limit == 0:
            return []
        rows = await self._query(True, self._sql["collections"], datetime.now(UTC), limit)
        return [_name(row[0]) for row in rows]

    async def destroy(self) -> bool:
        """Delete every row of the table (which stays, with its index)."""
        return _count(await self._query(False, self._sql["destroy"])) > 0

    async def destroy_collection(self, collection: str) -> bool:
        """Delete the rows of ``collection``; ``True`` if there were any."""
        return _count(await self._query(False, self._sql["destroy_collection"], stored_name(collection))) > 0

    def is_transient(self, error: BaseException) -> bool:
        """Lost connections, serialization failures, a server shutting down or starting up are transient."""
        return is_transient(error)


def _passwords(url: str | None) -> list[str]:
    """Return the passwords ``url`` holds (in its user part, or asyncpg's ``password`` parameter)."""
    if url is None:
        return []
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    return found + [value for name, value in parse_qsl(parts.query) if name == "password" and value]


def _lost(error: BaseException) -> bool:
    """Whether a transient ``error`` means the connection is gone, not that the server refused a transaction."""
    if isinstance(error, asyncpg.PostgresError):
        return str(error.sqlstate or "")[:2] in ("08", "57")
    return True


def _alive(connection: Any) -> bool:
    """Whether a kept connection still works: one its server ended has gone back to the pool by itself."""
    try:
        return not connection.is_closed()
    except asyncpg.InterfaceError:  # released: the pool took it back when it closed
        return False


def _discard(connection: Any) -> None:
    """Close a connection at once; its pool makes a new one in its place."""
    with contextlib.suppress(asyncpg.InterfaceError):  # already back in the pool
        connection.terminate()


def _chain(error: BaseException) -> list[BaseException]:
    links: list[BaseException] = []
    link: BaseException | None = error
    while link is not None and len(links) < 10:
        links.append(link)
        link = link.__cause__ or link.__context__
    return links


def _statements(table: str, index: str) -> dict[str, str]:
    """Return the backend's SQL for ``table`` (quoted): each a fixed text, prepared once per connection."""
    live = "(expires_at IS NULL OR expires_at > $1)"
    return {
        "columns": (
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped"
        ),
        "create_table": (  # the reference's table, column for column
            f"CREATE TABLE IF NOT EXISTS {table} (collection TEXT NOT NULL, key TEXT NOT NULL, value JSONB NOT NULL, "
            "ttl DOUBLE PRECISION, created_at TIMESTAMPTZ, expires_at TIMESTAMPTZ, PRIMARY KEY (collection, key))"
        ),
        "create_index": f"CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at) WHERE expires_at IS NOT NULL",
        "get": (
            f"SELECT key, value::text, created_at, expires_at FROM {table} "
            "WHERE collection = $1 AND key = ANY($2::text[])"
        ),
        "put": (
            f"INSERT INTO {table} (collection, key, value, ttl, created_at, expires_at) "
            "SELECT $1, u.key, u.value::jsonb, u.ttl, u.created_at, u.expires_at "
            "FROM unnest($2::text[], $3::text[], $4::float8[], $5::timestamptz[], $6::timestamptz[]) "
            "AS u(key, value, ttl, created_at, expires_at) "
            "ON CONFLICT (collection, key) DO UPDATE SET value = EXCLUDED.value, ttl = EXCLUDED.ttl, "
            "created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at"
        ),
        "delete": f"DELETE FROM {table} WHERE collection = $1 AND key = ANY($2::text[]) RETURNING key, expires_at",
        "cull": (  # rechecked in the DELETE: a row written again since the SELECT read it is kept
            f"DELETE FROM {table} AS t "
            f"USING (SELECT collection, key FROM {table} WHERE expires_at <= $1 LIMIT $2) AS due "
            "WHERE t.collection = due.collection AND t.key = due.key AND t.expires_at <= $1"
        ),
        "keys": f"SELECT key FROM {table} WHERE collection = $1 AND (expires_at IS NULL OR expires_at > $2) LIMIT $3",
        "collections": (  # a loose index scan: the next collection with a live row, one index probe each
            "WITH RECURSIVE found(collection) AS ("
            f"(SELECT collection FROM {table} WHERE {live} ORDER BY collection LIMIT 1) "
            f"UNION ALL SELECT (SELECT t.collection FROM {table} AS t WHERE t.collection > found.collection "
            "AND (t.expires_at IS NULL OR t.expires_at > $1) ORDER BY t.collection LIMIT 1) "
            "FROM found WHERE found.collection IS NOT NULL) "
            "SELECT collection FROM found WHERE collection IS NOT NULL LIMIT $2"
        ),
        "destroy": f"DELETE FROM {table}",
        "destroy_collection": f"DELETE FROM {table} WHERE collection = $1",
    }

r"""Azure Table Storage on azure-data-tables' async client: an entity per entry, py-key-value's AzureTablesStore layout.

An entry of ``key`` in ``collection`` is the entity whose ``PartitionKey`` is the collection and
whose ``RowKey`` is the key; ``Value`` holds the stored JSON document as a string and, for an entry
that expires, ``ExpiresAt`` its expiry in whole epoch seconds (Edm.Int64, rounded down as the
reference writes it: it reads ``ExpiresAt`` before the document's own expiry). Either library
reads and writes the other's entities. kvrt adds ``KvrtExpiresAt``, the exact expiry (Edm.Double),
and reads by it where it is there, so that listings leave out what has expired to the moment; the
reference ignores it. Azure stores no expiry itself: reads leave out expired entities, and the
runtime culls them (a query ``ExpiresAt le now`` over the table, deleted in transactions per
partition, a budget at a time, a pass only once an expiry this backend wrote is due, and hourly for
what other writers left).

Names are stored as they are wherever Azure holds them, as the reference stores them: anything but
``/ \ # ?`` and control characters, within Azure's bound of 1 KiB (512 UTF-16 code units), and not
starting with ``%``. Another name is stored as ``%_`` and its percent-encoding (``%``, the forbidden
characters and control characters escaped), and one still past the bound as a hashed stand-in
(:mod:`kvrt.backends.names`) with the name itself kept in ``KeyName`` or ``CollectionName``; so no
two names meet, and listings return the caller's names.

A string property holds at most 32 Ki UTF-16 code units (64 KiB); a longer document goes on in
``Value_1``, ``Value_2``, ... up to Azure's 1 MiB per entity, past which a put is refused with
:class:`~kvrt.errors.EntryTooLargeError` before anything is sent. The reference reads ``Value``
alone, so it cannot read an entry split this way (nor store one: the service refuses it).

A batch of puts (or deletes) is one entity group transaction per 100 entities of the partition
(and at most 4 MiB), concurrent within the connection pool. A batch of gets is one query per 14
keys, ``PartitionKey eq … and (RowKey eq … or …)``, at once: Azure allows at most 15 comparisons
in a filter, and one query of a partition's keys costs one request where point reads cost one a
key (the service bills, and throttles, by requests), at the price of a scan of that partition on
the service's side, which Azure's design guide warns of for large partitions. A batch of one key
is one point request. kvrt writes its requests itself (the transactions' multipart bodies, the
queries, the point requests) and sends them through the client's pipeline, with its credential,
headers and hooks: the SDK's multipart code and its per-entity conversions cost several times
what the service takes for the request. The table is made, and checked, with the SDK's own calls.
"""

from __future__ import annotations

import asyncio
import bisect
import io
import json
import math
import re
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from contextlib import aclosing, contextmanager, suppress
from typing import Any
from urllib.parse import quote, urlsplit

import msgspec

from kvrt.backends.base import Backend, Capabilities
from kvrt.backends.fan_out import chunks, fan_out
from kvrt.backends.names import hashed, is_hashed, percent_decode, percent_encode
from kvrt.errors import EntryTooLargeError, StoreSetupError
from kvrt.extras import needs_extra

with needs_extra("azure-tables", "AzureTablesBackend"):
    import aiohttp
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        IncompleteReadError,
        ResourceExistsError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )
    from azure.core.pipeline.transport import AioHttpTransport
    from azure.core.rest import HttpRequest
    from azure.data.tables import EntityProperty
    from azure.data.tables.aio import TableClient


_MAX_NAME = 512  # UTF-16 code units of a PartitionKey or RowKey: Azure's 1 KiB (Azurite counts 512 characters)
_PART = 32 * 1024  # UTF-16 code units of one string property: Azure's 64 KiB
_MAX_ENTITY = 1024 * 1024  # bytes of an entity, as Azure counts them
_MAX_OPERATIONS = 100  # of a transaction
_MAX_BODY = 4 * 1024 * 1024 - 64 * 1024  # bytes of a transaction's body: 4 MiB, less room for its framing
_KEYS_PER_QUERY = 14  # RowKey comparisons beside the PartitionKey's: Azure allows 15 comparisons in a filter
_PAGE = 1000  # entities of a query page: the service's own bound
_COLLECTIONS_PAGE = 100  # entities read per step of the listing of collections
_MARKS_PER_SECOND = 10  # an expiry written is remembered to the 100 ms at or below it
_MAX_MARKS = 4096  # distinct expiries remembered; past them the farthest are left to the hourly pass
_QUIET_CULL = 3600.0  # the longest between passes, for what other writers stored
_ENCODED = "%_"  # starts every percent-encoded name (a name kept as it is never starts with "%")
_FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
_ESCAPED = re.compile(r"[%/\\#?\x00-\x1f\x7f-\x9f]")
_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{2,62}")
_STATUS = re.compile(rb"^HTTP/1\.1 (\d{3})", re.MULTILINE)
_XML_CODE = re.compile(r"<Code>([^<]*)</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")
_VALUE = "Value"
_EXPIRES = "ExpiresAt"
_EXACT = "KvrtExpiresAt"
_KEY_NAME = "KeyName"
_COLLECTION_NAME = "CollectionName"
_TRANSIENT_CODES = frozenset({"ServerBusy", "OperationTimedOut", "InternalError", "TableBeingDeleted"})
_TOO_LARGE_CODES = frozenset({"EntityTooLarge", "PropertyValueTooLarge", "RequestBodyTooLarge"})
_DENIED = frozenset({401, 403})
_JSON = "application/json"
_ACCEPT = "application/json;odata=minimalmetadata"
_NO_METADATA = "application/json;odata=nometadata"  # reads: the entities as plain JSON, an Int64 as its string
_CONTINUATION = ("NextPartitionKey", "NextRowKey")
_decoder = msgspec.json.Decoder()


class AzureTablesRequestError(Exception):
    """The service refused a request kvrt wrote itself (a transaction, a query, a point request): none of it was done.

    ``index`` is the operation of a transaction the service names, where it names one.
    """

    def __init__(self, status: int, code: str, message: str, index: int | None = None) -> None:
        super().__init__(f"{status} {code}: {message}"[:400])
        self.status_code = status
        self.error_code = code
        self.index = index


def stored_name(name: str) -> str:
    """Return what ``name`` is stored as in a ``PartitionKey`` or ``RowKey`` (plain names unchanged)."""
    if not name.startswith("%") and not _FORBIDDEN.search(name):
        return name if _utf16_units(name) <= _MAX_NAME else hashed(name)
    encoded = _ENCODED + percent_encode(_ESCAPED, name)
    return encoded if _utf16_units(encoded) <= _MAX_NAME else hashed(name)


def name_of(stored: str) -> str | None:
    """Return the name a stored key stands for; ``None`` for a hashed stand-in (its name is in the entity)."""
    if not stored.startswith("%"):
        return stored
    if is_hashed(stored):
        return None
    return percent_decode(stored[len(_ENCODED) :])


def _utf16_units(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-16-le")) // 2


def split_value(text: str) -> list[str]:
    """Cut ``text`` into parts a string property holds (at most 32 Ki UTF-16 units, never inside a surrogate pair)."""
    if len(text) <= _PART // 2 or (text.isascii() and len(text) <= _PART):
        return [text]
    if text.isascii():
        return [text[start : start + _PART] for start in range(0, len(text), _PART)]
    units = text.encode("utf-16-le")
    parts = []
    start = 0
    while start < len(units):
        end = min(start + 2 * _PART, len(units))
        if end < len(units) and 0xD8 <= units[end - 1] <= 0xDB:  # the part would end on a high surrogate
            end -= 2
        parts.append(units[start:end].decode("utf-16-le"))
        start = end
    return parts


def _string_size(name: str, value: str) -> int:
    """Return what a string property costs of an entity's 1 MiB, as Azure counts it."""
    return 8 + 2 * len(name) + 4 + 2 * _utf16_units(value)


def _literal(text: str) -> str:
    """Return ``text`` as an OData string literal."""
    return "'" + text.replace("'", "''") + "'"


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, EntityProperty) else value


def expiry_of(entity: dict[str, Any]) -> float | None:
    """Return an entity's expiry in epoch seconds: kvrt's exact one, else the reference's whole-second ``ExpiresAt``.

    Read without metadata, an Int64 comes as its decimal string.
    """
    exact = _plain(entity.get(_EXACT))
    if isinstance(exact, int | float) and not isinstance(exact, bool):
        return float(exact)
    whole = _plain(entity.get(_EXPIRES))
    if type(whole) is int:
        return float(whole)
    if isinstance(whole, str) and whole.lstrip("-").isdigit():
        return float(int(whole))
    return None


def _value_of(entity: dict[str, Any]) -> str | None:
    """Return the document an entity holds, its parts joined; ``None`` for an entity without one."""
    value = entity.get(_VALUE)
    if not isinstance(value, str) or not value:
        return None
    if f"{_VALUE}_1" not in entity:
        return value
    parts = [value]
    index = 1
    while isinstance(part := entity.get(f"{_VALUE}_{index}"), str):
        parts.append(part)
        index += 1
    return "".join(parts)


def _code(error: BaseException) -> str:
    """Return the service's error code of an SDK error or of :class:`AzureTablesRequestError` (``""`` if none)."""
    code = getattr(error, "error_code", None)
    if code is None:
        return ""
    return str(getattr(code, "value", code))


def _status(error: BaseException) -> int:
    status = getattr(error, "status_code", None)
    return status if isinstance(status, int) else 0


@contextmanager
def _size_refused(backend: str) -> Iterator[None]:
    """Turn the service's refusal of an entity past its size bound into :class:`~kvrt.errors.EntryTooLargeError`."""
    try:
        yield
    except (HttpResponseError, AzureTablesRequestError) as exc:
        if _code(exc) in _TOO_LARGE_CODES:
            raise EntryTooLargeError(
                "Azure Table Storage holds entities of at most 1 MiB and requests of at most 4 MiB", backend=backend
            ) from exc
        raise


def _parse_connection_string(text: str) -> dict[str, str]:
    """Return a connection string's settings by lower-cased name; a ``ValueError`` that never shows the string."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("connection_string must be an Azure Storage connection string")
    if text.strip().lower() == "usedevelopmentstorage=true":
        return {"accountname": "devstoreaccount1", "tableendpoint": "http://127.0.0.1:10002/devstoreaccount1"}
    settings = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, equals, value = part.partition("=")
        if not equals:
            raise ValueError("connection_string must be `Name=value` settings separated by `;`")
        settings[name.strip().lower()] = value.strip()
    if not (("accountname" in settings and "accountkey" in settings) or "sharedaccesssignature" in settings):
        raise ValueError("connection_string needs AccountName and AccountKey, or SharedAccessSignature")
    return settings


def _endpoint_shown(settings: dict[str, str]) -> str:
    """Return the table endpoint a connection string names, for a repr (never its key or signature)."""
    endpoint = settings.get("tableendpoint")
    if endpoint:
        return _without_query(endpoint)
    account = settings.get("accountname", "?")
    suffix = settings.get("endpointsuffix", "core.windows.net")
    return f"{settings.get('defaultendpointsprotocol', 'https')}://{account}.table.{suffix}"


def _without_query(url: str) -> str:
    split = urlsplit(url)
    return f"{split.scheme}://{split.netloc}{split.path}" if split.netloc else url.split("?", 1)[0]


class _CullPass:
    """Where a cull pass is: the time it reads expiries against, and the query's continuation."""

    def __init__(self, cutoff: float) -> None:
        self.cutoff = cutoff
        self.token: Any = None
        self.not_yet: list[float] = []
        """Expiries of entities the pass saw that had not expired yet (due within the second)."""
        self.written: list[int] = []
        """Marks of expiries written while the pass went on: it may not have seen their entities."""


class AzureTablesBackend(Backend):
    """Entries as entities of the Azure Table Storage table ``table`` (by default ``kvrt``).

    Give an Azure Storage ``connection_string`` (the portal's, or Azurite's), or an ``endpoint``
    (``https://ACCOUNT.table.core.windows.net``, or a URL holding a SAS) or ``account_name``, with
    a ``credential`` (an ``AzureNamedKeyCredential``, ``AzureSasCredential``, or an async token
    credential of azure-identity). Or pass an open ``client`` (an ``azure.data.tables.aio.TableClient``):
    kvrt uses it, and its table, and never closes it. ``client_options`` go to the ``TableClient``
    (``api_version``, ``raw_request_hook``, ``proxies``, ...). kvrt's own client sends through a
    pool of ``pool_size`` connections, with the SDK's retries off (the supervisor retries).
    ``create_table=True`` creates the table at spawn (an existing one is used as it is); otherwise a
    missing table is a :class:`~kvrt.errors.StoreSetupError` there. Credentials appear in no repr,
    log line or error.
    """

    name = "azure_tables"
    asyncio_only = True

    def __init__(
        self,
        connection_string: str | None = None,
        *,
        table: str = "kvrt",
        endpoint: str | None = None,
        account_name: str | None = None,
        credential: Any = None,
        client: Any = None,
        create_table: bool = True,
        pool_size: int = 32,
        **client_options: Any,
    ) -> None:
        given = [option for option in (connection_string, endpoint, account_name, client) if option is not None]
        if len(given) != 1:
            raise ValueError(
                "AzureTablesBackend needs one of connection_string, endpoint (with a credential), "
                "account_name (with a credential) or client"
            )
        if type(pool_size) is not int or pool_size < 1:
            raise ValueError("pool_size must be a positive number of connections")
        if connection_string is not None:
            self._shown = _endpoint_shown(_parse_connection_string(connection_string))
        elif account_name is not None:
            if not isinstance(account_name, str) or not re.fullmatch(r"[a-z0-9]{3,24}", account_name):
                raise ValueError("account_name must be a storage account's name: 3-24 lower-case letters and digits")
            endpoint = f"https://{account_name}.table.core.windows.net"
        if endpoint is not None:
            if not isinstance(endpoint, str) or not endpoint.lower().startswith(("http://", "https://")):
                raise ValueError("endpoint must be an http:// or https:// URL")
            if credential is None and "sig=" not in endpoint:
                raise ValueError("endpoint needs a credential, or a SAS in its URL")
            self._shown = _without_query(endpoint)
        if client is not None:
            table = client.table_name
            self._shown = _without_query(str(getattr(client, "url", "")))
        if not isinstance(table, str) or not _TABLE_NAME.fullmatch(table) or table.lower() == "tables":
            raise ValueError(
                "table must be an Azure table name: 3-63 letters and digits, not starting with a digit, not 'tables'"
            )
        self.table = table
        self._connection_string = connection_string
        self._endpoint = endpoint
        self._credential = credential
        self._create_table = create_table
        self._options = client_options
        self._width = pool_size
        self._client: Any = client
        self._session: aiohttp.ClientSession | None = None
        self._made: Any = None
        self._marks: list[int] = []
        """Expiries written, each as the 100 ms at or below it, in order, without repeats: when a cull is due."""
        self._quiet_until = 0.0
        self._cull: _CullPass | None = None
        self._account_url = self._table_url = self._sas = ""
        self.clock: Callable[[], float] = time.time
        """The wall clock expiries are read against (epoch seconds)."""
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

    def __repr__(self) -> str:
        return f"<AzureTablesBackend table={self.table!r} endpoint={self._shown!r}>"

    @property
    def client(self) -> Any:
        """The ``TableClient`` (the user's, or kvrt's between :meth:`open` and :meth:`close`)."""
        return self.opened(self._client)

    # Opening and closing.

    async def open(self) -> None:
        """Make the client (unless one was given) and check the table is there (or create it)."""
        try:
            if self._client is None:
                self._client = self._make_client()
            await self._check_table()
        except BaseException:
            await self.close()
            raise
        split = urlsplit(self._client.url)
        self._account_url = f"{split.scheme}://{split.netloc}{split.path.rstrip('/')}"
        self._sas = f"?{split.query}" if split.query else ""  # a SAS in the endpoint's URL
        self._table_url = f"{self._account_url}/{self.table}"

    def _make_client(self) -> Any:
        options = dict(self._options)
        if "transport" not in options:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._width),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,  # azure-core decodes what the service compressed
            )
            options["transport"] = AioHttpTransport(
                session=self._session, session_owner=False, connection_timeout=5, read_timeout=30
            )
        options.setdefault("retry_total", 0)  # the supervisor retries, with its backoff and the callers' deadlines
        if self._connection_string is not None:
            made = TableClient.from_connection_string(self._connection_string, table_name=self.table, **options)
        else:
            assert self._endpoint is not None
            made = TableClient(self._endpoint, table_name=self.table, credential=self._credential, **options)
        self._made = made
        return made

    async def _check_table(self) -> None:
        client = self._client
        try:
            if self._create_table:
                with suppress(ResourceExistsError):  # made already, by another worker or another application
                    await client.create_table()
            else:
                async for _ in client.list_entities(results_per_page=1, select=["PartitionKey"]):
                    break
        except ResourceNotFoundError:
            raise StoreSetupError(
                f"the Azure table {self.table!r} does not exist (create it, or pass create_table=True)",
                backend=self.name,
            ) from None
        except HttpResponseError as exc:
            if isinstance(exc, ClientAuthenticationError) or _status(exc) in _DENIED:
                raise StoreSetupError(
                    f"access to the Azure table {self.table!r} is denied (the account key, SAS or token was refused"
                    + (", or may not create tables: pass create_table=False)" if self._create_table else ")"),
                    backend=self.name,
                ) from exc
            raise

    async def close(self) -> None:
        """Close the client and its connection pool, if kvrt made them; a client the user gave is left open."""
        made, self._made = self._made, None
        session, self._session = self._session, None
        try:
            if made is not None:
                self._client = None
                await made.close()
        finally:
            if session is not None:
                await session.close()

    # Requests kvrt writes itself.

    def _entity_url(self, partition: str, row: str) -> str:
        quoted = quote(partition.replace("'", "''"), safe=""), quote(row.replace("'", "''"), safe="")
        return f"{self._table_url}(PartitionKey='{quoted[0]}',RowKey='{quoted[1]}')"

    async def _send(self, request: HttpRequest) -> Any:
        """Send ``request`` through the client's pipeline (its credential, headers, hooks), the body read."""
        response = await self.client._client.send_request(request, stream=True)
        await response.read()
        return response

    async def _put_one(self, partition: str, row: str, body: bytes) -> None:
        request = HttpRequest(
            "PUT",
            self._entity_url(partition, row) + self._sas,
            headers=self._headers({"Content-Type": _JSON, "Content-Length": str(len(body))}),
            content=_content(body),
        )
        response = await self._send(request)
        if not 200 <= response.status_code < 300:
            raise _refusal(response.status_code, response.content)

    async def _read(self, url: str, select: list[str] | None, params: str = "") -> tuple[Any, Any]:
        """GET ``url`` (``params`` already encoded); return the response and its JSON (``None`` for a refusal)."""
        if select is not None:
            params = "&".join(part for part in (params, f"$select={quote(','.join(select), safe=',')}") if part)
        query = "&".join(part for part in (params, self._sas[1:]) if part)
        request = HttpRequest(
            "GET", f"{url}?{query}" if query else url, headers=self._headers({"Accept": _NO_METADATA})
        )
        response = await self._send(request)
        if response.status_code != 200:
            return response, None
        return response, _decoder.decode(response.content)

    async def _point(self, partition: str, row: str, select: list[str] | None = None) -> dict[str, Any] | None:
        """Return the entity of ``row`` in ``partition``, or ``None`` if there is none."""
        response, entity = await self._read(self._entity_url(partition, row), select)
        if entity is None:
            refusal = _refusal(response.status_code, response.content)
            if refusal.status_code == 404 and refusal.error_code != "TableNotFound":
                return None
            raise refusal
        found: dict[str, Any] = entity
        return found

    async def _page(
        self, query_filter: str | None, select: list[str] | None, top: int, token: dict[str, str] | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
        """Return one page of a query (of the whole table, without ``query_filter``), and where the next begins."""
        params = f"$top={top}"
        if query_filter is not None:
            params += f"&$filter={quote(query_filter, safe='')}"
        for name, value in (token or {}).items():
            params += f"&{name}={quote(value, safe='')}"
        response, page = await self._read(f"{self._table_url}()", select, params)
        if page is None:
            raise _refusal(response.status_code, response.content)
        after = {name: value for name in _CONTINUATION if (value := response.headers.get(f"x-ms-continuation-{name}"))}
        return page.get("value", []), after or None

    async def _query(
        self, query_filter: str | None, select: list[str] | None, top: int = _PAGE
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Every page of a query (empty ones too: the service may answer one before the rest)."""
        token = None
        while True:
            entities, token = await self._page(query_filter, select, top, token)
            yield entities
            if token is None:
                return

    async def _remove(self, partition: str, row: str) -> None:
        """Delete one entity; one that is not there is no error."""
        request = HttpRequest(
            "DELETE", self._entity_url(partition, row) + self._sas, headers=self._headers({"If-Match": "*"})
        )
        response = await self._send(request)
        if not 200 <= response.status_code < 300:
            refusal = _refusal(response.status_code, response.content)
            if refusal.status_code != 404 or refusal.error_code == "TableNotFound":
                raise refusal

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        return {
            "x-ms-version": self.client.api_version,
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            "Accept": _ACCEPT,
            **extra,
        }

    def _upsert(self, partition: str, row: str, body: bytes) -> bytes:
        """Return a transaction's part that puts ``body`` in place of the entity of ``row``, whatever it held."""
        head = (
            f"PUT {self._entity_url(partition, row)} HTTP/1.1\r\nContent-Type: {_JSON}\r\nAccept: {_ACCEPT}\r\n"
            f"DataServiceVersion: 3.0\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body + b"\r\n"

    def _deletion(self, partition: str, row: str) -> bytes:
        """Return a transaction's part that deletes the entity of ``row``."""
        head = (
            f"DELETE {self._entity_url(partition, row)} HTTP/1.1\r\nAccept: {_ACCEPT}\r\nIf-Match: *\r\n"
            "DataServiceVersion: 3.0\r\n\r\n"
        )
        return head.encode()

    async def _transact(self, operations: Sequence[bytes]) -> None:
        """Commit ``operations`` (of one partition, at most 100, distinct rows) as one entity group transaction."""
        changeset = f"changeset_{uuid.uuid4()}"
        batch = f"batch_{uuid.uuid4()}"
        pieces = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode()]
        for index, operation in enumerate(operations):
            pieces.append(
                f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
                f"Content-ID: {index}\r\n\r\n".encode()
            )
            pieces.append(operation)
        pieces.append(f"--{changeset}--\r\n\r\n--{batch}--\r\n".encode())
        body = b"".join(pieces)
        request = HttpRequest(
            "POST",
            f"{self._account_url}/$batch{self._sas}",
            headers=self._headers(
                {
                    "Content-Type": f"multipart/mixed; boundary={batch}",
                    "Content-Length": str(len(body)),
                    "Accept": _JSON,
                }
            ),
            content=_content(body),
        )
        response = await self._send(request)
        if response.status_code != 202:
            raise _refusal(response.status_code, response.content)
        answer: bytes = response.content
        for match in _STATUS.finditer(answer):
            status = int(match.group(1))
            if not 200 <= status < 300:
                start = answer.find(b"{", match.end())
                end = answer.find(b"\r\n--", start)
                raise _refusal(status, answer[start : end if end >= 0 else len(answer)] if start >= 0 else b"")

    async def _commit(self, operations: Sequence[bytes]) -> None:
        """Commit ``operations`` of one partition: transactions of at most 100 and 4 MiB each, at once."""
        groups: list[list[bytes]] = [[]]
        size = 0
        for operation in operations:
            if len(groups[-1]) >= _MAX_OPERATIONS or (groups[-1] and size + len(operation) > _MAX_BODY):
                groups.append([])
                size = 0
            groups[-1].append(operation)
            size += len(operation)
        await fan_out(self._transact, groups, self._width)

    # The batch calls.

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        """Read a lone key with a point read, more with a query per 14 keys at once; expired entities are missing."""
        partition = stored_name(collection)
        rows = [stored_name(key) for key in keys]
        if len(set(rows)) == 1:
            found = await self._point(partition, rows[0])
            entities = {} if found is None else {rows[0]: found}
        else:
            entities = await self._find(partition, list(dict.fromkeys(rows)))
        now = self.clock()
        results: list[bytes | str | None] = []
        for row in rows:
            entity = entities.get(row)
            if entity is None or ((expiry := expiry_of(entity)) is not None and expiry <= now):
                results.append(None)
            else:
                results.append(_value_of(entity))
        return results

    async def _find(self, partition: str, rows: Sequence[str], select: list[str] | None = None) -> dict[str, Any]:
        """Return the entities of ``rows`` (distinct) that are there, by RowKey: a query per 14, at once."""
        where = f"PartitionKey eq {_literal(partition)} and "

        async def query(chunk: Sequence[str]) -> list[dict[str, Any]]:
            rows_filter = " or ".join(f"RowKey eq {_literal(row)}" for row in chunk)
            return [entity async for page in self._query(f"{where}({rows_filter})", select) for entity in page]

        found: dict[str, Any] = {}
        for entities in await fan_out(query, list(chunks(rows, _KEYS_PER_QUERY)), self._width):
            for entity in entities:
                found[entity["RowKey"]] = entity
        return found

    async def put_many(
        self,
        collection: str,
        keys: Sequence[str],
        entries: Sequence[bytes],
        expires_at: Sequence[float | None],
    ) -> None:
        """Write a lone entity with one upsert; more with transactions of 100 (a key given twice: its last entry).

        Every entity is checked against Azure's 1 MiB before anything is sent, so a refused entry
        takes nothing else with it.
        """
        partition = stored_name(collection)
        bodies: dict[str, bytes] = {}
        mark = None
        for key, entry, expiry in zip(keys, entries, expires_at, strict=True):
            row = stored_name(key)
            bodies[row] = self._entity_body(collection, partition, key, row, entry, expiry)
            if expiry is not None and (moment := math.floor(expiry * _MARKS_PER_SECOND)) != mark:
                self._mark(moment)
                mark = moment
        with _size_refused(self.name):
            if len(bodies) == 1:  # a lone caller's put: one plain request costs the service less than a transaction
                ((row, body),) = bodies.items()
                await self._put_one(partition, row, body)
                return
            await self._commit([self._upsert(partition, row, body) for row, body in bodies.items()])

    def _entity_body(
        self, collection: str, partition: str, key: str, row: str, entry: bytes, expiry: float | None
    ) -> bytes:
        """Return the JSON body of an entity, refusing one past Azure's 1 MiB."""
        text = entry.decode()
        parts = split_value(text)
        entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": row, _VALUE: parts[0]}
        size = 4 + 2 * (_utf16_units(partition) + _utf16_units(row)) + _string_size(_VALUE, parts[0])
        for index, part in enumerate(parts[1:], 1):
            name = f"{_VALUE}_{index}"
            entity[name] = part
            size += _string_size(name, part)
        if expiry is not None:
            entity[_EXPIRES] = str(math.floor(expiry))
            entity[f"{_EXPIRES}@odata.type"] = "Edm.Int64"
            entity[_EXACT] = float(expiry)
            entity[f"{_EXACT}@odata.type"] = "Edm.Double"
            size += 2 * (16 + len(_EXPIRES) + len(_EXACT))
        if row != key and is_hashed(row):
            entity[_KEY_NAME] = key
            size += _string_size(_KEY_NAME, key)
        if partition != collection and is_hashed(partition):
            entity[_COLLECTION_NAME] = collection
            size += _string_size(_COLLECTION_NAME, collection)
        if size > _MAX_ENTITY:
            raise EntryTooLargeError(
                f"Azure Table Storage holds entities of at most 1 MiB; this entry needs {size:,} bytes",
                backend=self.name,
                collection=collection,
                key=key,
            )
        return json.dumps(entity).encode()  # ASCII: non-ASCII characters escaped, as the SDK writes them

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Find which entities are there (as a get does), then delete them in transactions of 100."""
        partition = stored_name(collection)
        rows = [stored_name(key) for key in keys]
        select = ["RowKey", _EXPIRES, _EXACT]
        unique = list(dict.fromkeys(rows))
        if len(unique) == 1:
            entity = await self._point(partition, unique[0], select)
            found = {} if entity is None else {unique[0]: entity}
        else:
            found = await self._find(partition, unique, select)
        await self._delete(partition, list(found))
        now = self.clock()
        live = {row for row, entity in found.items() if (expiry := expiry_of(entity)) is None or expiry > now}
        results = []
        for row in rows:  # a key given twice is deleted once: the first says so
            results.append(row in live)
            live.discard(row)
        return results

    async def _delete(self, partition: str, rows: Sequence[str]) -> None:
        """Delete the entities of ``rows`` (distinct), one of which someone else may have deleted meanwhile."""
        if not rows:
            return
        if len(rows) == 1:
            await self._remove(partition, rows[0])
            return
        try:
            await self._commit([self._deletion(partition, row) for row in rows])
        except AzureTablesRequestError as exc:
            if _status(exc) != 404 or _code(exc) == "TableNotFound":
                raise
            # Another writer deleted one first, so its transaction did nothing: one at a time instead.
            await fan_out(lambda row: self._remove(partition, row), rows, self._width)

    # Listing.

    async def keys(self, collection: str, limit: int | None) -> list[str]:
        """Return the live keys of ``collection`` (a paginated query of its partition)."""
        names: list[str] = []
        now = self.clock()
        where = f"PartitionKey eq {_literal(stored_name(collection))}"
        select = ["RowKey", _KEY_NAME, _EXPIRES, _EXACT]
        async with aclosing(self._query(where, select, _PAGE if limit is None else min(_PAGE, limit))) as pages:
            async for page in pages:
                for entity in page:
                    expiry = expiry_of(entity)
                    if expiry is not None and expiry <= now:
                        continue
                    name = name_of(entity["RowKey"])
                    if name is None:
                        name = entity.get(_KEY_NAME)
                        if not isinstance(name, str):
                            continue
                    names.append(name)
                    if limit is not None and len(names) >= limit:
                        return names
        return names

    async def collections(self, limit: int | None) -> list[str]:
        """Return the collections that hold entities: a skip scan of the partitions, in key order.

        Azure has no ``distinct``: each step reads up to 100 entities from past the last partition
        seen (``PartitionKey gt …``), so a large collection costs one request, not a scan of it.
        """
        names: list[str] = []
        last: str | None = None
        while True:
            page: list[dict[str, Any]] = []
            where = None if last is None else f"PartitionKey gt {_literal(last)}"
            async with aclosing(self._query(where, ["PartitionKey", _COLLECTION_NAME], _COLLECTIONS_PAGE)) as pages:
                async for page in pages:
                    if page:
                        break
            if not page:
                return names
            for entity in page:
                partition = entity["PartitionKey"]
                if partition == last:
                    continue
                last = partition
                name = name_of(partition)
                if name is None:
                    name = entity.get(_COLLECTION_NAME)
                    if not isinstance(name, str):
                        continue
                names.append(name)
                if limit is not None and len(names) >= limit:
                    return names

    async def destroy_collection(self, collection: str) -> bool:
        """Delete every entity of ``collection``, a page at a time, 100 to a transaction."""
        partition = stored_name(collection)
        removed = 0
        async with aclosing(self._query(f"PartitionKey eq {_literal(partition)}", ["RowKey"])) as pages:
            async for page in pages:
                await self._delete(partition, [entity["RowKey"] for entity in page])
                removed += len(page)
        return removed > 0

    async def destroy(self) -> bool:
        """Delete every entity of the table (the table stays: Azure keeps a deleted table's name for a while)."""
        removed = 0
        async with aclosing(self._query(None, ["PartitionKey", "RowKey"])) as pages:
            async for page in pages:
                await self._delete_grouped(page)
                removed += len(page)
        self._marks.clear()
        return removed > 0

    async def _delete_grouped(self, entities: Iterable[dict[str, Any]]) -> None:
        """Delete ``entities``, in transactions per partition, the partitions at once."""
        by_partition: dict[str, list[str]] = {}
        for entity in entities:
            by_partition.setdefault(entity["PartitionKey"], []).append(entity["RowKey"])
        await fan_out(lambda item: self._delete(*item), list(by_partition.items()), self._width)

    # Culling.

    def _mark(self, moment: int) -> None:
        """Remember that an expiry falls at ``moment`` (in tenths of a second), so a cull is due then."""
        if self._cull is not None:
            self._cull.written.append(moment)
        marks = self._marks
        index = bisect.bisect_left(marks, moment)
        if index < len(marks) and marks[index] == moment:
            return
        if len(marks) >= _MAX_MARKS:
            if index >= len(marks):
                return  # the farthest: the hourly pass finds it
            marks.pop()
        marks.insert(index, moment)

    async def cull(self, budget: int) -> tuple[int, bool]:
        """Delete expired entities: a page of up to ``budget`` read (``ExpiresAt le now``), the expired deleted.

        A pass starts only once an expiry this backend wrote is due, or an hour after the last pass
        (for what other writers stored); before that a cull sends nothing.
        """
        now = self.clock()
        if self._cull is None:
            due = self._marks[0] / _MARKS_PER_SECOND if self._marks else math.inf
            if now < min(due, self._quiet_until):
                return 0, True
            self._cull = _CullPass(now)
        step = self._cull
        try:
            removed = await self._cull_step(step, budget)
        except BaseException:
            self._cull = None  # start the pass again: a continuation may not outlive a restarted server
            raise
        if step.token is not None:
            return removed, False
        self._cull = None
        # The pass saw every entity that was there when it began whose expiry falls in a tenth of a
        # second up to the cutoff's (a tenth never straddles a whole second, the filter's unit); it
        # deleted them, or noted those not yet expired. Marks written meanwhile stay.
        del self._marks[: bisect.bisect_right(self._marks, math.floor(step.cutoff * _MARKS_PER_SECOND))]
        for moment in [*step.written, *(math.floor(expiry * _MARKS_PER_SECOND) for expiry in step.not_yet)]:
            self._mark(moment)
        self._quiet_until = self.clock() + _QUIET_CULL
        return removed, True

    async def _cull_step(self, step: _CullPass, budget: int) -> int:
        entities, step.token = await self._page(
            f"{_EXPIRES} le {math.floor(step.cutoff)}L",
            ["PartitionKey", "RowKey", _EXPIRES, _EXACT],
            max(1, min(budget, _PAGE)),
            step.token,
        )
        now = self.clock()
        expired = []
        for entity in entities:
            expiry = expiry_of(entity)
            if expiry is None:
                continue
            if expiry <= now:
                expired.append(entity)
            else:
                step.not_yet.append(expiry)
        await self._delete_grouped(expired)
        return len(expired)

    def is_transient(self, error: BaseException) -> bool:
        """Lost connections, timeouts, 5xx, throttling (429, ``ServerBusy``) are transient; refusals are not.

        With ``create_table``, a table gone missing is transient too: reopening makes it again (an
        emulator restarted without its data, a table deleted under the backend).
        """
        if isinstance(error, ServiceRequestError | ServiceResponseError | IncompleteReadError):
            return True
        if isinstance(error, HttpResponseError | AzureTablesRequestError):
            status, code = _status(error), _code(error)
            if status >= 500 or status in (408, 429) or code in _TRANSIENT_CODES:
                return True
            return self._create_table and code == "TableNotFound"
        return isinstance(error, aiohttp.ClientError | asyncio.TimeoutError | OSError)


def _content(body: bytes) -> bytes | io.BytesIO:
    """Return a request's body as aiohttp should take it: past 1 MiB as a stream, which it sends in chunks."""
    return io.BytesIO(body) if len(body) > 1024 * 1024 else body


def _refusal(status: int, body: bytes) -> AzureTablesRequestError:
    """Return the error of a refused request, from the service's JSON error (its code, message, operation)."""
    code, message, index = "", "", None
    try:
        error = json.loads(body)["odata.error"]
        code = str(error.get("code", ""))
        message = str(error.get("message", {}).get("value", ""))
    except (ValueError, KeyError, TypeError, AttributeError):  # not JSON: the XML some refusals come in
        text = body[:2000].decode("utf-8", "replace")
        found_code, found_message = _XML_CODE.search(text), _XML_MESSAGE.search(text)
        code = found_code.group(1) if found_code else ""
        message = found_message.group(1) if found_message else text[:200]
    head, colon, rest = message.partition(":")
    if colon and head.isdigit():
        index, message = int(head), rest
    return AzureTablesRequestError(status, code, message.split("\n", 1)[0], index)

"""The Azure Tables backend against Azurite's table service, or the account of KVRT_AZURE_TABLES_CONNECTION_STRING."""

from __future__ import annotations

import io
import json
import math
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import anyio
import pytest
import structlog.testing
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import EdmType, EntityProperty, ResourceTypes, generate_account_sas
from azure.data.tables.aio import TableClient

from kvrt import Runtime
from kvrt.backends.azure_tables import (
    AzureTablesBackend,
    AzureTablesRequestError,
    expiry_of,
    name_of,
    split_value,
    stored_name,
)
from kvrt.backends.names import hashed
from kvrt.errors import EntryTooLargeError, KeyValueError, StoreSetupError
from kvrt.testing import ConformanceSuite
from kvrt.testing.azurite import ACCOUNT, ACCOUNT_KEY, AzureTablesTarget, AzuriteServer
from kvrt.testing.conformance import get_concurrently, listing, sleep_past
from kvrt.testing.servers import free_port

pytestmark = pytest.mark.anyio


class TestAzureTablesConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self, azure_tables: AzureTablesTarget, azure_table: str) -> AzureTablesBackend:
        return AzureTablesBackend(azure_tables.connection_string, table=azure_table)


class SentRequests:
    """What a client sent, seen by a pipeline hook (``raw_request_hook``): every request, as it left."""

    def __init__(self) -> None:
        self.transactions: list[tuple[int, set[bytes]]] = []
        """Each ``$batch``: its operations, and the partitions they name."""
        self.queries: list[str] = []
        """Each query's ``$filter``."""
        self.others: Counter[str] = Counter()
        """Every other request, by method."""

    def __call__(self, pipeline_request: Any) -> None:
        request = pipeline_request.http_request
        url = urlsplit(request.url)
        if url.path.endswith("/$batch"):
            content = request.content
            body: bytes = content.getvalue() if isinstance(content, io.BytesIO) else content
            partitions = set(re.findall(rb"PartitionKey='([^']*)'", body))
            self.transactions.append((body.count(b"\r\nContent-ID: "), partitions))
        elif request.method == "GET" and "$filter" in parse_qs(url.query):
            self.queries.append(parse_qs(url.query)["$filter"][0])
        else:
            self.others[request.method] += 1

    def clear(self) -> None:
        self.transactions.clear()
        self.queries.clear()
        self.others.clear()

    @property
    def total(self) -> int:
        return len(self.transactions) + len(self.queries) + sum(self.others.values())


@pytest.fixture
def sent() -> SentRequests:
    return SentRequests()


@pytest.fixture
def make(azure_tables: AzureTablesTarget, azure_table: str, sent: SentRequests) -> Any:
    """Make a backend on the test's fresh table, its requests counted by ``sent``."""

    def make(**options: Any) -> AzureTablesBackend:
        return AzureTablesBackend(azure_tables.connection_string, table=azure_table, raw_request_hook=sent, **options)

    return make


def raw_entity(target: AzureTablesTarget, table: str, partition: str, row: str) -> dict[str, Any] | None:
    """Return the entity the service holds (read with a blocking client of the SDK's), or ``None``."""
    with target.service() as service:
        try:
            entity: dict[str, Any] = service.get_table_client(table).get_entity(partition, row)
        except ResourceNotFoundError:
            return None
        return entity


def raw_entities(target: AzureTablesTarget, table: str) -> list[dict[str, Any]]:
    with target.service() as service:
        return list(service.get_table_client(table).list_entities())


# Batching, counted as the requests leave the client.


async def test_64_concurrent_puts_are_one_transaction_and_64_gets_five_queries(
    runtime: Runtime, make: Any, sent: SentRequests
) -> None:
    store = await runtime.spawn(make())
    names = [f"k{i}" for i in range(64)]
    sent.clear()
    async with anyio.create_task_group() as group:
        for i, name in enumerate(names):
            group.start_soon(store.put, name, {"i": i})
    # under trio the first caller may cross to the asyncio host alone: then a lone upsert, and 63 in one transaction
    lone = sent.others["PUT"]
    assert lone <= 1, sent.others
    assert len(sent.transactions) == 1, sent.transactions
    assert sent.transactions[0] == (64 - lone, {b"default_collection"})
    assert sent.queries == []
    sent.clear()
    found = await get_concurrently(store, names)
    assert found == {name: {"i": i} for i, name in enumerate(names)}
    lone = sent.others["GET"]  # a lone caller's point read
    assert lone <= 1, sent.others
    assert len(sent.queries) == math.ceil((64 - lone) / 14), sent.queries  # 15 comparisons a filter, at most
    for query in sent.queries:
        assert query.startswith("PartitionKey eq 'default_collection' and (RowKey eq ")
        assert query.count(" eq ") <= 15
    assert sent.transactions == []


@pytest.fixture(scope="module")
def logging_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """An Azurite of this module's own that logs every request it receives."""
    server = AzuriteServer(debug_log=tmp_path_factory.mktemp("azurite") / "debug.log")
    server.start()
    yield server
    server.stop()


async def test_the_server_receives_one_transaction_for_64_puts_and_five_queries_for_64_gets(
    runtime: Runtime, logging_server: AzuriteServer
) -> None:
    store = await runtime.spawn(AzureTablesBackend(logging_server.connection_string, table=f"t{uuid.uuid4().hex}"))
    names = [f"k{i}" for i in range(64)]
    first = await anyio.to_thread.run_sync(logging_server.mark)
    before = len(await anyio.to_thread.run_sync(logging_server.received_before, first)) + 1  # and the mark itself
    async with anyio.create_task_group() as group:
        for i, name in enumerate(names):
            group.start_soon(store.put, name, {"i": i})
    found = await get_concurrently(store, names)
    assert found == {name: {"i": i} for i, name in enumerate(names)}
    marker = await anyio.to_thread.run_sync(logging_server.mark)
    requests = (await anyio.to_thread.run_sync(logging_server.received_before, marker))[before:]
    received = Counter(
        "transaction" if url.endswith("/$batch") else "query" if "$filter=" in url else method
        for method, url in requests
    )
    # under trio the first caller of each may cross to the asyncio host alone: a lone PUT, a lone GET
    assert received["transaction"] == 1, received
    assert received["PUT"] <= 1, received
    assert received["GET"] <= 1, received
    assert received["query"] == math.ceil((64 - received["GET"]) / 14), received
    assert received.keys() <= {"transaction", "PUT", "query", "GET"}, received
    for _, url in requests:
        assert unquote(url).count(" eq ") <= 15, "Azure allows 15 comparisons in a filter"


async def test_300_puts_are_three_transactions_and_deletes_find_then_remove(
    runtime: Runtime, make: Any, sent: SentRequests
) -> None:
    store = await runtime.spawn(make())
    names = [f"k{i:03}" for i in range(300)]
    sent.clear()
    await store.put_many(names, [{"i": i} for i in range(300)], collection="many")
    assert sent.transactions == [(100, {b"many"})] * 3
    assert sent.total == 3
    sent.clear()
    assert await store.get_many(names, collection="many") == [{"i": i} for i in range(300)]
    assert len(sent.queries) == math.ceil(300 / 14)
    assert sent.total == len(sent.queries)
    sent.clear()
    assert await store.delete_many([*names, "absent"], collection="many") == 300
    assert len(sent.queries) == math.ceil(301 / 14)
    assert sent.transactions == [(100, {b"many"})] * 3
    assert await store.get_many(names[:3], collection="many") == [None] * 3


async def test_a_lone_key_is_one_point_request(runtime: Runtime, make: Any, sent: SentRequests) -> None:
    store = await runtime.spawn(make())
    sent.clear()
    await store.put("k", {"v": 1})
    assert await store.get("k") == {"v": 1}
    assert await store.get_many(["k", "k"]) == [{"v": 1}, {"v": 1}]  # one key twice: one read
    assert dict(sent.others) == {"PUT": 1, "GET": 2}
    assert sent.total == 3
    sent.clear()
    assert await store.delete("k") is True
    assert dict(sent.others) == {"GET": 1, "DELETE": 1}  # what is there, then its deletion


async def test_a_transaction_stays_within_4_mib(runtime: Runtime, make: Any, sent: SentRequests) -> None:
    store = await runtime.spawn(make())
    values = [{"s": chr(ord("a") + i) * 450_000} for i in range(10)]
    sent.clear()
    await store.put_many([f"big{i}" for i in range(10)], values)
    assert len(sent.transactions) >= 2, "4.5 MB of entities do not fit one transaction"
    assert sum(operations for operations, _ in sent.transactions) == 10
    assert await store.get_many([f"big{i}" for i in range(10)]) == values


# Layout.


async def test_entities_are_the_references_layout(
    runtime: Runtime, make: Any, azure_tables: AzureTablesTarget, azure_table: str
) -> None:
    store = await runtime.spawn(make())
    before = time.time()
    await store.put("u1", {"name": "Alice", "n": [1, 2.5, None]}, collection="users", ttl=100)
    await store.put_many(["u2", "u3"], [{"a": 1}, {"b": 2}], collection="users")
    entity = await anyio.to_thread.run_sync(raw_entity, azure_tables, azure_table, "users", "u1")
    assert entity is not None
    assert set(entity) == {"PartitionKey", "RowKey", "Value", "ExpiresAt", "KvrtExpiresAt"}
    document = json.loads(entity["Value"])
    assert document["value"] == {"name": "Alice", "n": [1, 2.5, None]}
    assert (document["collection"], document["key"], document["version"]) == ("users", "u1", 1)
    expires = datetime.fromisoformat(document["expires_at"]).timestamp()
    assert before + 100 <= expires <= time.time() + 100
    assert entity["ExpiresAt"].edm_type == EdmType.INT64
    assert entity["ExpiresAt"].value == math.floor(expires), "whole seconds, rounded down, as the reference writes"
    assert entity["KvrtExpiresAt"] == pytest.approx(expires, abs=1e-6)
    assert expiry_of(entity) == entity["KvrtExpiresAt"]
    for key in ("u2", "u3"):  # written by one transaction
        plain = await anyio.to_thread.run_sync(raw_entity, azure_tables, azure_table, "users", key)
        assert plain is not None
        assert set(plain) == {"PartitionKey", "RowKey", "Value"}
        assert "expires_at" not in json.loads(plain["Value"])
    await store.put("u1", {"name": "Bob"}, collection="users")  # replaced whole: no expiry left behind
    entity = await anyio.to_thread.run_sync(raw_entity, azure_tables, azure_table, "users", "u1")
    assert entity is not None
    assert set(entity) == {"PartitionKey", "RowKey", "Value"}


# Names.


def test_names_azure_holds_are_kept_as_they_are() -> None:
    for plain in ("users", "a b", "a.b", "50%", "it's", "ünï 名前 🎉", "::", "$gt", "*", "..", "~", "é" * 512):
        assert stored_name(plain) == plain
        assert name_of(plain) == plain
    for odd, stored in {
        "/": "%_%2F",
        "a/b": "%_a%2Fb",
        "\\": "%_%5C",
        "#?": "%_%23%3F",
        "line\nbreak": "%_line%0Abreak",
        "\x7f\x85": "%_%7F%C2%85",
        "%s%n": "%_%25s%25n",
        "%%looks hashed": "%_%25%25looks hashed",
        "%_looks encoded": "%_%25_looks encoded",
    }.items():
        assert stored_name(odd) == stored
        assert name_of(stored) == odd
    for long in ("n" * 513, "🎉" * 257, "/" * 200):  # past 512 UTF-16 units, as they are or encoded
        assert stored_name(long) == hashed(long)
        assert name_of(stored_name(long)) is None, "the name is in the entity"


def test_a_long_value_is_cut_between_characters() -> None:
    for text in ("x" * 100_000, "é" * 70_000, "a" + "🎉" * 40_000, "🎉" * 16_384 + "z", "y" * 32_768):
        parts = split_value(text)
        assert "".join(parts) == text
        assert all(len(part.encode("utf-16-le")) <= 65_536 for part in parts)
        assert all(not 0xDC00 <= ord(part[0]) <= 0xDFFF for part in parts), "no part starts inside a pair"
    assert split_value("y" * 32_768) == ["y" * 32_768]
    assert len(split_value("y" * 32_769)) == 2


async def test_long_and_odd_names_list_as_themselves(
    runtime: Runtime, make: Any, azure_tables: AzureTablesTarget, azure_table: str
) -> None:
    store = listing(await runtime.spawn(make()))
    names = ["n" * 1200, "é" * 600, "%%looks hashed", "a/b", "back\\slash", "q?#", "tab\there", "plain"]
    for name in names:
        await store.put_many(names, [{"in": name}] * len(names), collection=name)
    assert sorted(await store.collections()) == sorted(names)
    for name in names:
        assert sorted(await store.keys(name)) == sorted(names)
        assert await store.get_many(names, collection=name) == [{"in": name}] * len(names)
    stored = await anyio.to_thread.run_sync(raw_entities, azure_tables, azure_table)
    assert len(stored) == len(names) ** 2
    for entity in stored:
        assert len(entity["PartitionKey"].encode("utf-16-le")) <= 1024
        assert len(entity["RowKey"].encode("utf-16-le")) <= 1024
    assert {entity["PartitionKey"] for entity in stored} >= {"plain", "%_a%2Fb", hashed("n" * 1200)}


# Sizes.


async def test_a_value_past_64_kib_is_split_and_reads_back(
    runtime: Runtime, make: Any, azure_tables: AzureTablesTarget, azure_table: str
) -> None:
    store = await runtime.spawn(make())
    values = {"ascii": {"s": "x" * 200_000}, "bmp": {"s": "名" * 150_000}, "pairs": {"s": "🎉" * 60_000 + "é"}}
    await store.put_many(list(values), list(values.values()))  # one transaction
    await store.put("lone", values["pairs"])  # one upsert
    assert await store.get_many([*values, "lone"]) == [*values.values(), values["pairs"]]
    assert await store.get("ascii") == values["ascii"]
    entity = await anyio.to_thread.run_sync(raw_entity, azure_tables, azure_table, "default_collection", "ascii")
    assert entity is not None
    assert {"Value", "Value_1", "Value_6"} <= set(entity)
    await store.put("ascii", {"s": "short"})
    entity = await anyio.to_thread.run_sync(raw_entity, azure_tables, azure_table, "default_collection", "ascii")
    assert entity is not None
    assert "Value_1" not in entity, "a replaced entity keeps no old parts"


async def test_an_entity_past_1_mib_is_refused_before_it_is_sent_and_its_neighbours_land(
    runtime: Runtime, make: Any, sent: SentRequests
) -> None:
    store = await runtime.spawn(make())
    errors: dict[str, KeyValueError] = {}

    async def put(key: str, value: dict[str, Any]) -> None:
        try:
            await store.put(key, value)
        except KeyValueError as exc:
            errors[key] = exc

    sent.clear()
    async with anyio.create_task_group() as group:  # one round, most likely: the worker finds the bad one
        group.start_soon(put, "small", {"v": 1})
        group.start_soon(put, "huge", {"s": "x" * 600_000})
    assert list(errors) == ["huge"]
    assert isinstance(errors["huge"], EntryTooLargeError)
    assert "1 MiB" in str(errors["huge"])
    assert errors["huge"].key == "huge"
    assert await store.get("small") == {"v": 1}
    assert await store.get("huge") is None
    with pytest.raises(EntryTooLargeError):
        await store.put_many(["a", "b"], [{"v": 1}, {"s": "x" * 600_000}])
    assert sent.total == 3, "the huge entity never left: a lone put of 'small', then two reads"


async def test_a_size_the_server_refuses_is_entry_too_large(
    runtime: Runtime, make: Any, azure_tables: AzureTablesTarget
) -> None:
    if azure_tables.kind != "Azurite":
        pytest.skip("Azurite measures an entity by its JSON; Azure takes this one")
    store = await runtime.spawn(make())
    value = {"s": "名" * 400_000}  # 800 KB as Azure counts it, 2.4 MB of escaped JSON as Azurite does
    with pytest.raises(EntryTooLargeError, match="1 MiB"):
        await store.put("cjk", value)
    with pytest.raises(EntryTooLargeError):
        await store.put_many(["small", "cjk"], [{"v": 1}, value])
    await store.put("after", {"v": 2})
    assert await store.get("after") == {"v": 2}


# Listing and destroying.


async def test_collections_skip_over_large_partitions(runtime: Runtime, make: Any, sent: SentRequests) -> None:
    store = listing(await runtime.spawn(make()))
    for name in ("gamma", "alpha", "beta"):
        await store.put_many([f"k{i}" for i in range(250)], [{"n": 1}] * 250, collection=name)
    sent.clear()
    assert await store.collections() == ["alpha", "beta", "gamma"]
    assert sent.total == 4, "a step per collection and one that finds no more, not a scan of 750 entities"
    sent.clear()
    assert await store.collections(limit=2) == ["alpha", "beta"]
    assert sent.total == 2


async def test_destroy_empties_the_table_and_keeps_it(
    runtime: Runtime, make: Any, azure_tables: AzureTablesTarget, azure_table: str
) -> None:
    store = listing(await runtime.spawn(make()))
    for name in ("one", "two", "three"):
        await store.put_many([f"k{i}" for i in range(1200)], [{"n": 1}] * 1200, collection=name)
    assert await store.destroy() is True
    assert await anyio.to_thread.run_sync(raw_entities, azure_tables, azure_table) == []
    assert await store.collections() == []
    await store.put("again", {"v": 1})  # the table is still there
    assert await store.get("again") == {"v": 1}


# Culling.


@pytest.fixture
async def opened(make: Any) -> AsyncIterator[AzureTablesBackend]:
    """A backend opened by the test itself, to call one step at a time (asyncio: the SDK's client is asyncio's)."""
    backend: AzureTablesBackend = make()
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


def _entries(count: int) -> list[bytes]:
    return [b'{"value": {"i": %d}}' % i for i in range(count)]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_cull_goes_a_budget_at_a_time_and_only_when_something_is_due(
    anyio_backend: str, opened: AzureTablesBackend, sent: SentRequests
) -> None:
    assert await opened.cull(50) == (0, True), "a first pass, for what others left: none here"
    expiry = time.time() + 0.3
    for collection in ("a", "b", "c"):
        keys = [f"{collection}{i}" for i in range(100)]
        await opened.put_many(collection, keys, _entries(100), [expiry] * 100)
    await opened.put_many("a", ["kept", "later"], _entries(2), [None, time.time() + 60])
    sent.clear()
    assert await opened.cull(50) == (0, True), "nothing is due yet"
    assert sent.total == 0, "so nothing is sent"
    await sleep_past(expiry)
    steps = []
    while True:
        removed, done = await opened.cull(50)
        steps.append(removed)
        if done:
            break
    assert sum(steps) == 300
    assert max(steps) <= 50
    assert len(steps) >= 6
    assert await opened.keys("a", None) == ["kept", "later"]
    assert await opened.get_many("a", ["kept", "later", "a1"]) == ['{"value": {"i": 0}}', '{"value": {"i": 1}}', None]
    sent.clear()
    assert await opened.cull(512) == (0, True)
    assert sent.total == 0, "the next expiry written is a minute away"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_entity_a_pass_finds_not_yet_expired_is_culled_by_the_next(
    anyio_backend: str, opened: AzureTablesBackend
) -> None:
    # Expiries in 1970, read against a clock of the test's: both in the tenth of a second the pass starts in.
    await opened.put_many("c", ["soon", "sooner"], _entries(2), [1000.08, 1000.05])
    opened.clock = lambda: 1000.06
    assert await opened.cull(512) == (1, True), "a pass: 'sooner' has expired, 'soon' has not"
    assert await opened.get_many("c", ["soon", "sooner"]) == ['{"value": {"i": 0}}', None]
    opened.clock = lambda: 1000.09
    assert await opened.cull(512) == (1, True), "the pass noted 'soon': the next one is due at once"
    assert await opened.get_many("c", ["soon"]) == [None]
    opened.clock = lambda: 1000.5
    assert await opened.cull(512) == (0, True), "nothing else is due: no pass, for an hour"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_first_cull_finds_what_others_left_expired(
    anyio_backend: str, azure_tables: AzureTablesTarget, azure_table: str, opened: AzureTablesBackend
) -> None:
    with azure_tables.service() as service:  # another writer's entities, the reference's way: only ExpiresAt
        table = service.get_table_client(azure_table)
        for row in ("old1", "old2"):
            table.upsert_entity(
                {"PartitionKey": "theirs", "RowKey": row, "Value": "{}", "ExpiresAt": EntityProperty(10, EdmType.INT64)}
            )
        table.upsert_entity({"PartitionKey": "theirs", "RowKey": "live", "Value": "{}"})
    assert await opened.get_many("theirs", ["old1", "live"]) == [None, "{}"]
    assert await opened.keys("theirs", None) == ["live"]
    assert await opened.cull(512) == (2, True)
    assert [entity["RowKey"] for entity in await anyio.to_thread.run_sync(raw_entities, azure_tables, azure_table)] == [
        "live"
    ]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_deletion_someone_else_made_first_is_no_error(anyio_backend: str, opened: AzureTablesBackend) -> None:
    await opened.put_many("c", ["a", "b", "c"], _entries(3), [None] * 3)
    await opened.client.delete_entity("c", "b")  # another writer, between kvrt's read and its transaction
    await opened._delete("c", ["a", "b", "c"])
    assert await opened.get_many("c", ["a", "b", "c"]) == [None, None, None]


# Setup, credentials, arguments.


async def test_a_missing_table_is_a_setup_error_that_names_it(
    runtime: Runtime, azure_tables: AzureTablesTarget, azure_table: str
) -> None:
    backend = AzureTablesBackend(azure_tables.connection_string, table=azure_table, create_table=False)
    with pytest.raises(StoreSetupError, match=azure_table) as raised:
        await runtime.spawn(backend)
    assert "create_table=True" in str(raised.value)


def _shown(error: BaseException | None) -> list[str]:
    shown = []
    while error is not None:
        shown += [str(error), repr(error), repr(error.args)]
        error = error.__cause__ or error.__context__
    return shown


async def test_a_refused_key_is_a_setup_error_and_no_key_is_shown(
    runtime: Runtime, azure_tables: AzureTablesTarget, azure_table: str
) -> None:
    if azure_tables.kind != "Azurite":
        pytest.skip("the emulator's account only")
    wrong = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk="
    bad = AzureTablesBackend(azure_tables.connection_string.replace(ACCOUNT_KEY, wrong), table=azure_table)
    with structlog.testing.capture_logs() as logs, pytest.raises(StoreSetupError, match="denied") as raised:
        await runtime.spawn(bad, name="bad")
    shown = [*_shown(raised.value), repr(bad), repr(runtime.stats()), *map(repr, logs)]
    assert not [text for text in shown if wrong in text or ACCOUNT_KEY in text]


async def test_a_sas_works_for_every_request_and_is_shown_nowhere(
    runtime: Runtime, azure_tables: AzureTablesTarget, azure_table: str
) -> None:
    if azure_tables.kind != "Azurite":
        pytest.skip("the emulator's account only")
    credential = AzureNamedKeyCredential(ACCOUNT, ACCOUNT_KEY)
    expiry = datetime.now(UTC) + timedelta(hours=1)
    everything = generate_account_sas(
        credential, ResourceTypes(service=True, container=True, object=True), "rwdlacu", expiry
    )
    read_only = generate_account_sas(credential, ResourceTypes(service=True, container=True, object=True), "rl", expiry)
    endpoint = re.search(r"TableEndpoint=([^;]+)", azure_tables.connection_string)
    assert endpoint is not None

    def with_sas(sas: str) -> str:
        return f"SharedAccessSignature={sas};TableEndpoint={endpoint.group(1)};"

    secrets = [unquote(parse_qs(sas)["sig"][0]) for sas in (everything, read_only)]
    with structlog.testing.capture_logs() as logs:
        store = await runtime.spawn(AzureTablesBackend(with_sas(everything), table=azure_table), name="sas")
        await store.put("one", {"v": 1})  # a lone upsert
        await store.put_many(["a", "b"], [{"v": 2}, {"v": 3}])  # a transaction
        assert await store.get_many(["one", "a", "b"]) == [{"v": 1}, {"v": 2}, {"v": 3}]
        assert await store.delete_many(["a", "b"]) == 2
        reader = AzureTablesBackend(with_sas(read_only), table=azure_table, create_table=False)
        limited = await runtime.spawn(reader, name="read-only")
        assert await limited.get("one") == {"v": 1}
        with pytest.raises(KeyValueError) as refused:  # (Azurite checks no permission inside a transaction)
            await limited.put("c", {"v": 4})
        in_url = AzureTablesBackend(endpoint=f"{endpoint.group(1)}?{everything}", table=azure_table)
        in_store = listing(await runtime.spawn(in_url, name="sas-in-url"))  # the SAS is the URL's, not a credential's
        await in_store.put("one", {"v": 6})
        await in_store.put_many(["a", "b"], [{"v": 7}, {"v": 8}])
        assert await in_store.get_many(["one", "a", "b"]) == [{"v": 6}, {"v": 7}, {"v": 8}]
        assert await in_store.keys() == ["a", "b", "one"]
        assert await in_store.delete_many(["a", "b"]) == 2
    shown = [*_shown(refused.value), repr(reader), repr(in_url), repr(runtime.stats()), *map(repr, logs)]
    assert "403 AuthorizationPermissionMismatch" in str(refused.value)
    assert not [text for text in shown if any(secret in text or quote(secret, safe="") in text for secret in secrets)]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # a TableClient is asyncio's, closed on its loop
async def test_a_client_of_yours_is_used_and_left_open(
    anyio_backend: str, azure_tables: AzureTablesTarget, azure_table: str, sent: SentRequests
) -> None:
    client = TableClient.from_connection_string(azure_tables.connection_string, azure_table, raw_request_hook=sent)
    async with client:
        async with Runtime() as runtime:
            store = await runtime.spawn(AzureTablesBackend(client=client))
            await store.put_many(["a", "b"], [{"v": 1}, {"v": 2}])
            assert await store.get("a") == {"v": 1}
        assert len(sent.transactions) == 1, "kvrt used the client given"
        entity = await client.get_entity("default_collection", "b")  # still open
        assert json.loads(entity["Value"])["value"] == {"v": 2}


def test_bad_arguments_are_refused_where_the_backend_is_made() -> None:
    good = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={ACCOUNT_KEY};EndpointSuffix=core.windows.net"
    with pytest.raises(ValueError, match="one of connection_string"):
        AzureTablesBackend()
    with pytest.raises(ValueError, match="one of connection_string"):
        AzureTablesBackend(good, endpoint="https://acct.table.core.windows.net")
    for table in ("", "ab", "1abc", "a-b", "x" * 64, "tables", "Tables"):
        with pytest.raises(ValueError, match="table must be"):
            AzureTablesBackend(good, table=table)
    with pytest.raises(ValueError, match="AccountKey") as raised:
        AzureTablesBackend("AccountName=acct;TopSecret=hunter2-not-a-key")
    assert "hunter2" not in str(raised.value)
    with pytest.raises(ValueError, match="pool_size"):
        AzureTablesBackend(good, pool_size=0)
    with pytest.raises(ValueError, match="credential"):
        AzureTablesBackend(endpoint="https://acct.table.core.windows.net")
    with pytest.raises(ValueError, match="account_name"):
        AzureTablesBackend(account_name="Not An Account")
    assert repr(AzureTablesBackend(good, table="Users1")) == (
        "<AzureTablesBackend table='Users1' endpoint='https://acct.table.core.windows.net'>"
    )
    sas = AzureTablesBackend(endpoint="https://acct.table.core.windows.net/?sv=2019&sig=s3cr3t%3D")
    assert "s3cr3t" not in repr(sas)
    named = AzureTablesBackend(account_name="acct", credential=AzureNamedKeyCredential("acct", ACCOUNT_KEY))
    assert repr(named) == "<AzureTablesBackend table='kvrt' endpoint='https://acct.table.core.windows.net'>"


# Which errors pass.


def _http_error(status: int, code: str | None = None, kind: type[HttpResponseError] = HttpResponseError) -> Any:
    error: Any = kind(message=f"status {status}")
    error.status_code = status
    error.error_code = code  # as the SDK sets it on the errors it raises
    return error


def test_lost_connections_throttling_and_5xx_are_transient_refusals_are_not() -> None:
    backend = AzureTablesBackend(f"AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY}")
    fixed = AzureTablesBackend(f"AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY}", create_table=False)
    for transient in (
        ServiceRequestError("refused"),
        ServiceResponseError("reset"),
        _http_error(500),
        _http_error(503, "ServerBusy"),
        _http_error(429),
        _http_error(408),
        _http_error(409, "TableBeingDeleted"),
        AzureTablesRequestError(503, "ServerBusy", "busy"),
        AzureTablesRequestError(500, "InternalError", "oops", 3),
        TimeoutError(),
        ConnectionResetError(),
    ):
        assert backend.is_transient(transient), transient
        assert fixed.is_transient(transient), transient
    for refusal in (
        _http_error(400, "InvalidInput"),
        _http_error(404, "ResourceNotFound", ResourceNotFoundError),
        _http_error(403, "AuthenticationFailed", ClientAuthenticationError),
        _http_error(409, "EntityAlreadyExists"),
        AzureTablesRequestError(400, "InvalidDuplicateRow", "twice"),
        AzureTablesRequestError(413, "RequestBodyTooLarge", "too large"),
        ValueError("a bug"),
    ):
        assert not backend.is_transient(refusal), refusal
    missing_table = _http_error(404, "TableNotFound", ResourceNotFoundError)
    assert backend.is_transient(missing_table), "reopening makes the table again"
    assert not fixed.is_transient(missing_table), "without create_table, nothing would make it"
    assert backend.is_transient(AzureTablesRequestError(404, "TableNotFound", "gone", 0))


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_server_nobody_runs_is_transient(anyio_backend: str) -> None:
    nowhere = f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
    backend = AzureTablesBackend(f"{nowhere}TableEndpoint=http://127.0.0.1:{free_port()}/{ACCOUNT};")
    with pytest.raises(Exception) as failed:  # noqa: PT011 - which exception is what the test looks at
        await backend.open()
    assert backend.is_transient(failed.value), repr(failed.value)
    assert backend._made is None, "a failed open closes what it made"

"""kvrt's Azure Tables handle against py-key-value-aio's AzureTablesStore, on one Azurite table service.

python bench/bench_azure_tables.py            # print the table
python bench/bench_azure_tables.py --write    # also rewrite the Azure Tables section of bench/RESULTS.md

Both subjects talk to the same local Azurite (started here, on a free loopback port, in memory,
telemetry off), each round on a fresh table. Azurite is a node server on the same machine, and the
azure-data-tables SDK spends a millisecond or more of Python per request: the ratios say how many
requests each library sends, more than how fast the service is. Set
KVRT_AZURE_TABLES_CONNECTION_STRING to run against an account of yours instead (tables are made
and deleted per round).
"""

from __future__ import annotations

import os
import sys
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import harness
from azure.data.tables.aio import TableServiceClient
from harness import main
from key_value.aio.stores.azure_tables import AzureTablesStore

import kvrt
from kvrt.backends.azure_tables import AzureTablesBackend
from kvrt.handle import Handle
from kvrt.testing.azurite import CONNECTION_STRING_VARIABLE, AzuriteServer

warnings.filterwarnings("ignore", "A configured store is unstable", UserWarning)
harness.KEYS_PER_CALLER = {1: 1_000, 64: 40}
CONNECTION_STRING = os.environ.get(CONNECTION_STRING_VARIABLE)


def _table() -> str:
    return f"bench{uuid.uuid4().hex[:12]}"


async def _drop(table: str) -> None:
    assert CONNECTION_STRING is not None
    async with TableServiceClient.from_connection_string(CONNECTION_STRING) as service:
        await service.delete_table(table)


@asynccontextmanager
async def kvrt_azure_tables() -> AsyncIterator[Handle]:
    assert CONNECTION_STRING is not None
    table = _table()
    try:
        async with kvrt.Runtime() as runtime:
            yield await runtime.spawn(AzureTablesBackend(CONNECTION_STRING, table=table))
    finally:
        await _drop(table)


@asynccontextmanager
async def reference_azure_tables() -> AsyncIterator[Any]:
    assert CONNECTION_STRING is not None
    table = _table()
    try:
        async with AzureTablesStore(connection_string=CONNECTION_STRING, table_name=table) as store:
            yield store
    finally:
        await _drop(table)


if __name__ == "__main__":
    server = None
    if CONNECTION_STRING is None:
        server = AzuriteServer()
        server.start()
        CONNECTION_STRING = server.connection_string
    try:
        where = "an account of yours" if server is None else "Azurite"
        main(
            f"Azure Tables: kvrt vs py-key-value-aio AzureTablesStore ({where})",
            {"kvrt": kvrt_azure_tables, "reference": reference_azure_tables},
            "azure-tables",
            argv=sys.argv[1:],
        )
    finally:
        if server is not None:
            server.stop()
        sys.stdout.flush()

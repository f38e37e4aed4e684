"""Azurite killed under 64 callers and restarted 3 s later on its port (the test's own server, not the session's).

Azurite runs in memory, so its restart loses every table and entity: the backend makes its table
again as it reopens. What must hold is that the handle heals with default policies: only kvrt
errors, within the callers' deadlines, puts acknowledged again within 2 s of the restart, and what
was acknowledged after it readable.
"""

from __future__ import annotations

import pytest

from kvrt import Runtime
from kvrt.backends.azure_tables import AzureTablesBackend
from kvrt.testing.azurite import AzuriteServer
from kvrt.testing.outages import Load, write_through_outage

pytestmark = pytest.mark.anyio

CALLERS = 64
DEADLINE = 1.0
OUTAGE = 3.0
SLACK = 0.5  # scheduling on a shared 2-core machine, on top of the deadline


async def test_a_killed_server_heals_with_default_policies() -> None:
    server = AzuriteServer()
    server.start()
    load = Load(warm_up_at=500)
    try:
        async with Runtime() as runtime:  # default policies
            backend = AzureTablesBackend(server.connection_string, table="faults")
            store = await runtime.spawn(backend, name="azure_tables", request_timeout=DEADLINE)
            await write_through_outage(
                store, server, load, callers=CALLERS, outage=OUTAGE, after_restart=200, read=True
            )

            load.check_healed(DEADLINE, SLACK)
            assert runtime.stats()["azure_tables"].state == "running"
            keys = list(load.after_restart)
            every = store.with_timeout(30.0)  # a read-back of hundreds of keys, not a deadline test
            assert await every.get_many(keys) == [load.after_restart[key] for key in keys], "no put lost"
    finally:
        server.stop()

"""memcached killed under 64 callers and restarted 3 s later on its port (the test's own server, not the session's).

memcached keeps nothing across a restart, so what must hold is that the handle heals: only kvrt
errors within the deadlines, puts acknowledged again within 2 s of the restart, and what was
acknowledged after it readable.
"""

from __future__ import annotations

import pytest

from kvrt import Runtime
from kvrt.backends.memcached import MemcachedBackend
from kvrt.testing.memcached import MemcachedServer
from kvrt.testing.outages import Load, write_through_outage

pytestmark = pytest.mark.anyio

CALLERS = 64
DEADLINE = 1.0
OUTAGE = 3.0
SLACK = 0.5  # scheduling on a shared 2-core machine, on top of the deadline


async def test_a_killed_server_heals_and_puts_resume() -> None:
    server = MemcachedServer()
    server.start()
    load = Load(warm_up_at=500)
    try:
        async with Runtime() as runtime:  # default policies
            store = await runtime.spawn(MemcachedBackend(port=server.port), name="memcached", request_timeout=DEADLINE)
            await write_through_outage(
                store, server, load, callers=CALLERS, outage=OUTAGE, after_restart=200, read=True
            )

            load.check_healed(DEADLINE, SLACK)
            assert runtime.stats()["memcached"].state == "running"
            keys = list(load.after_restart)
            assert await store.with_timeout(30.0).get_many(keys) == [load.after_restart[key] for key in keys]
    finally:
        server.stop()

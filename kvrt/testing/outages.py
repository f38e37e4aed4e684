"""A load of writers and a reader through a server outage, and the checks that say the handle healed.

The fault tests of every networked backend kill their own server under this load, restart it, and
check the same things: puts acknowledged again within 2 s of the restart, no call past its
deadline, only kvrt errors, and (where the server keeps its data) no acknowledged put lost.
"""

from __future__ import annotations

from typing import Any

import anyio

from kvrt.errors import KeyValueError
from kvrt.testing.servers import ServerProcess


class Load:
    """What the writers and the reader saw; the load is warm once ``warm_up_at`` puts were acknowledged."""

    def __init__(self, warm_up_at: int = 2000) -> None:
        self.acknowledged: dict[str, dict[str, Any]] = {}
        self.after_restart: dict[str, dict[str, Any]] = {}
        self.warm_up_at = warm_up_at
        self.errors: list[BaseException] = []
        self.longest_call = 0.0
        self.reads_in_outage = 0
        self.down = False
        self.restarted_at: float | None = None
        self.first_put_after_restart: float | None = None
        self.warmed_up = anyio.Event()
        self.back = anyio.Event()
        self.stop = anyio.Event()

    def check_healed(self, deadline: float, slack: float, *, outage_seen: bool = True) -> None:
        """Assert what every outage must leave true, ``slack`` being the scheduling allowed past ``deadline``."""
        assert self.first_put_after_restart is not None
        assert self.restarted_at is not None
        assert self.first_put_after_restart - self.restarted_at <= 2.0, "puts succeed within 2 s of the restart"
        assert self.longest_call <= deadline + slack, "no call outlives its deadline"
        if outage_seen:
            assert self.errors, "the outage was seen"
        strangers = [error for error in self.errors if not isinstance(error, KeyValueError)]
        assert strangers == [], "every error a caller sees is a kvrt error"


async def writer(store: Any, number: int, load: Load) -> None:
    """Put ``w{number}-0``, ``w{number}-1``, ... until the load stops, noting what was acknowledged."""
    index = 0
    while not load.stop.is_set():
        key, value = f"w{number}-{index}", {"writer": number, "index": index}
        index += 1
        restarted = load.restarted_at is not None  # before the call: a put sent in the outage may land after
        started = anyio.current_time()
        try:
            await store.put(key, value)
        except Exception as exc:  # every error is checked by check_healed
            load.errors.append(exc)
            await anyio.sleep(0.01)  # pacing: a failing call returns at once while the circuit is open
        else:
            load.acknowledged[key] = value
            if len(load.acknowledged) >= load.warm_up_at:
                load.warmed_up.set()
            if restarted:
                load.after_restart[key] = value
                if load.first_put_after_restart is None:
                    load.first_put_after_restart = anyio.current_time()
                    load.back.set()
        finally:
            load.longest_call = max(load.longest_call, anyio.current_time() - started)


async def reader(store: Any, load: Load) -> None:
    """Read ``w0-0`` every 10 ms until the load stops, counting the reads answered while the server is down."""
    while not load.stop.is_set():
        try:
            await store.get("w0-0")
        except Exception as exc:
            load.errors.append(exc)
        else:
            if load.down:
                load.reads_in_outage += 1
        await anyio.sleep(0.01)


async def kill_and_restart(server: ServerProcess, load: Load, outage: float, *, after_restart: int = 1) -> None:
    """Once the load is warm, SIGKILL ``server``, restart it ``outage`` seconds later, and stop the load.

    The load stops once ``after_restart`` puts were acknowledged after the restart.
    """
    with anyio.fail_after(60):
        await load.warmed_up.wait()
    await anyio.to_thread.run_sync(server.kill)
    load.down = True
    await anyio.sleep(outage)  # the outage the scenario asks for, not a wait for a condition
    await anyio.to_thread.run_sync(server.start)
    load.down = False
    load.restarted_at = anyio.current_time()
    with anyio.fail_after(10):
        await load.back.wait()
    with anyio.fail_after(10):
        while len(load.after_restart) < after_restart:  # noqa: ASYNC110 - a count of puts, nothing signals it
            await anyio.sleep(0.05)
    load.stop.set()


async def write_through_outage(
    store: Any,
    server: ServerProcess,
    load: Load,
    *,
    callers: int,
    outage: float,
    after_restart: int = 1,
    read: bool = False,
) -> None:
    """Run ``callers`` writers (and a reader, if ``read``) on ``store`` through a :func:`kill_and_restart`."""
    async with anyio.create_task_group() as group:
        for number in range(callers):
            group.start_soon(writer, store, number, load)
        if read:
            group.start_soon(reader, store, load)
        await kill_and_restart(server, load, outage, after_restart=after_restart)

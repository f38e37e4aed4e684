"""The worker and its supervisor under injected faults: merging, restarts, give-up, deadlines, shutdown."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import structlog.testing

from kvrt import CircuitPolicy, CullPolicy, MailboxPolicy, RestartPolicy, Runtime
from kvrt.backends.memory import MemoryBackend
from kvrt.errors import (
    BackendUnavailableError,
    DeadlineExceededError,
    KeyValueStoreError,
    RuntimeClosedError,
    StoreConnectionError,
    StoreSetupError,
)
from kvrt.testing.conformance import eventually
from kvrt.testing.faults import FaultyBackend, PermanentFault, TransientFault

pytestmark = pytest.mark.anyio

FAST_RESTARTS = RestartPolicy(max_restarts=3, within=5.0, backoff_initial=0.001, backoff_max=0.01)


async def test_concurrent_like_requests_merge_into_one_backend_call() -> None:
    backend = FaultyBackend()
    async with Runtime() as runtime:
        store = await runtime.spawn(backend)
        await store.put_many([f"k{i}" for i in range(64)], [{"i": i} for i in range(64)])
        backend.calls.clear()
        results: dict[int, Any] = {}

        async def get(i: int) -> None:
            results[i] = await store.get(f"k{i}")

        async with anyio.create_task_group() as group:
            for i in range(64):
                group.start_soon(get, i)
        assert results == {i: {"i": i} for i in range(64)}
        assert len(backend.calls) < 8, f"64 gets took {len(backend.calls)} backend calls"
        assert sorted(backend.keys_seen("get")) == sorted(f"k{i}" for i in range(64))
        assert runtime.stats()["faulty"].max_batch > 8


async def test_runs_of_different_kinds_keep_each_callers_order() -> None:
    backend = FaultyBackend()
    async with Runtime() as runtime:
        store = await runtime.spawn(backend)

        async def caller(i: int) -> None:
            key = f"k{i}"
            await store.put(key, {"v": 1})
            assert await store.delete(key) is True
            await store.put(key, {"v": 2})
            assert await store.get(key) == {"v": 2}

        async with anyio.create_task_group() as group:
            for i in range(16):
                group.start_soon(caller, i)
        operations = [op for op, _, keys in backend.calls for key in keys if key == "k3"]
        assert operations == ["put", "delete", "put", "get"]


async def test_transient_failure_restarts_the_worker_and_retries_the_request() -> None:
    backend = FaultyBackend()
    async with Runtime(restart=FAST_RESTARTS) as runtime:
        store = await runtime.spawn(backend)
        backend.fail_next(TransientFault("connection reset"))
        with structlog.testing.capture_logs() as logs:
            await store.put("k", {"secret": "hunter2"})
        assert await store.get("k") == {"secret": "hunter2"}
        stats = runtime.stats()["faulty"]
        assert stats.restarts == 1
        assert stats.state == "running"
        assert backend.opens == 2
        assert backend.keys_seen("put") == ["k", "k"], "the failed put was tried again"
    events = [entry["event"] for entry in logs if entry["event"] != "worker.started"]
    assert events[:3] == ["worker.crashed", "worker.backoff", "worker.restarted"]
    assert "hunter2" not in repr(logs), "values never reach the logs"


async def test_with_give_up_the_supervisor_stops_for_good_past_the_restart_intensity() -> None:
    backend = FaultyBackend()
    policy = RestartPolicy(
        max_restarts=2, within=5.0, backoff_initial=0.001, backoff_max=0.01, attempts=3, give_up=True
    )
    async with Runtime(restart=policy) as runtime:
        store = await runtime.spawn(backend)
        backend.fail_next(*(TransientFault(f"reset {n}") for n in range(10)))
        with structlog.testing.capture_logs() as logs:
            with pytest.raises(StoreConnectionError) as raised:
                await store.put("k", {"v": 1})
            assert isinstance(raised.value.__cause__, TransientFault)
            assert backend.keys_seen("put") == ["k", "k", "k"], "three attempts, then the caller is told"
            await eventually(lambda: runtime.stats()["faulty"].state == "unavailable")
        with anyio.fail_after(3):  # at once, not after a wait for a backend that is not coming back
            with pytest.raises(BackendUnavailableError, match="for good") as unavailable:
                await store.get("k")
        assert unavailable.value.backend == "faulty"
        assert backend.keys_seen("get") == []
    gave_up = [entry for entry in logs if entry["event"] == "worker.gave_up"]
    assert [(entry["cause"], entry["for_good"]) for entry in gave_up] == [("TransientFault", True)]


async def test_past_the_intensity_a_worker_is_held_down_longer_each_time_then_serves_again() -> None:
    backend = FaultyBackend()
    policy = RestartPolicy(
        max_restarts=2, within=30.0, backoff_initial=0.001, backoff_max=0.01, hold_initial=0.2, attempts=1
    )
    async with Runtime(restart=policy) as runtime:
        store = await runtime.spawn(backend)
        with structlog.testing.capture_logs() as logs:
            for crash in range(4):  # crashes 3 and 4 are past the intensity: held 0.2 s, then 0.4 s
                backend.fail_next(TransientFault(f"reset {crash}"))
                with pytest.raises(StoreConnectionError):
                    await store.put("k", {"v": 1})
                await eventually(lambda: runtime.stats()["faulty"].state != "running")
                if crash >= 2:
                    assert runtime.stats()["faulty"].state == "held_down"
                    calls = len(backend.calls)
                    with pytest.raises(BackendUnavailableError, match="holds it down"):
                        await store.get("k")  # at once: nothing reaches a worker that is held down
                    assert len(backend.calls) == calls
                await eventually(lambda: runtime.stats()["faulty"].state == "running")
                await eventually(lambda: runtime.stats()["faulty"].circuit != "open")
        await store.put("k", {"v": 2})
        assert await store.get("k") == {"v": 2}
        stats = runtime.stats()["faulty"]
        assert (stats.holds, stats.restarts, stats.last_crash) == (2, 4, "TransientFault")
    holds = [entry for entry in logs if entry["event"] == "worker.gave_up"]
    assert [(entry["cause"], entry["holding_for"]) for entry in holds] == [
        ("TransientFault", 0.2),
        ("TransientFault", 0.4),
    ]


async def test_an_outage_is_one_restart_however_many_reconnects_it_takes() -> None:
    backend = FaultyBackend()
    async with Runtime(restart=FAST_RESTARTS, circuit=CircuitPolicy(failures=3, reset_after=60.0)) as runtime:
        store = await runtime.spawn(backend)
        backend.failing_opens = 20  # four times the intensity's worth of failed reconnects
        backend.fail_next(TransientFault("down"))
        with pytest.raises(BackendUnavailableError, match="keeps reconnecting"):
            await store.put("k", {"v": 1})  # held while the worker reconnects, failed once the circuit opened
        with pytest.raises(BackendUnavailableError):
            await store.get("k")  # the circuit is open: at once
        await eventually(lambda: runtime.stats()["faulty"].state == "running")
        await store.put("k", {"v": 2})  # the probe: the reconnect half-opened the circuit
        assert await store.get("k") == {"v": 2}
        stats = runtime.stats()["faulty"]
        assert (stats.restarts, stats.reconnects_failed, stats.holds, stats.circuit) == (1, 20, 0, "closed")


async def test_a_non_transient_error_goes_only_to_its_caller() -> None:
    backend = FaultyBackend()
    backend.poison("bad", PermanentFault("no such thing"))
    async with Runtime() as runtime:
        store = await runtime.spawn(backend)
        outcomes: dict[str, Any] = {}

        async def get(key: str) -> None:
            try:
                outcomes[key] = await store.get(key, collection="c")
            except KeyValueStoreError as exc:
                outcomes[key] = exc

        backend.hang()  # queue the four gets behind a held request, so one round takes them all
        async with anyio.create_task_group() as group:
            group.start_soon(store.put, "held", {"v": 0})
            await eventually(lambda: backend.entered == 1)
            for key in ("a", "b", "bad", "c"):
                group.start_soon(get, key)
            await eventually(lambda: runtime.stats()["faulty"].mailbox_depth == 4)
            backend.release()
        error = outcomes.pop("bad")
        assert outcomes == {"a": None, "b": None, "c": None}
        assert isinstance(error, KeyValueStoreError)
        assert isinstance(error.__cause__, PermanentFault)
        assert (error.backend, error.collection, error.key) == ("faulty", "c", "bad")
        assert "PermanentFault" in str(error)
        merged = backend.calls[1]
        assert (merged[0], merged[1], sorted(merged[2])) == ("get", "c", ["a", "b", "bad", "c"]), "merged first"
        assert runtime.stats()["faulty"].restarts == 0
        assert runtime.stats()["faulty"].errors == {"KeyValueStoreError": 1}


async def test_a_request_past_its_deadline_never_reaches_the_backend() -> None:
    backend = FaultyBackend()
    async with Runtime() as runtime:
        store = await runtime.spawn(backend, request_timeout=0.2)
        backend.hang()
        first_outcome: list[BaseException] = []

        async def first() -> None:
            with pytest.raises(DeadlineExceededError) as raised:
                await store.get("first")
            first_outcome.append(raised.value)

        async with anyio.create_task_group() as group:
            group.start_soon(first)
            await eventually(lambda: backend.entered == 1)
            started = anyio.current_time()
            with pytest.raises(DeadlineExceededError):
                await store.get("queued")
            elapsed = anyio.current_time() - started
        assert elapsed < 0.2 + 1.0, "the caller heard by its deadline, not when the backend came back"
        assert len(first_outcome) == 1, "an in-flight request times out too"
        backend.release()
        await store.put("after", {"v": 1})
        assert "queued" not in backend.keys_seen("get")
        stats = runtime.stats()["faulty"]
        assert stats.restarts == 0, "a call that merely outlived its callers is no backend failure"
        assert stats.circuit == "closed"
        assert await store.get("after") == {"v": 1}


async def test_a_call_that_hangs_past_its_callers_deadlines_is_abandoned_and_reconnected() -> None:
    backend = FaultyBackend()
    async with Runtime(restart=RestartPolicy(hung_call=0.3, backoff_initial=0.001)) as runtime:
        store = await runtime.spawn(backend, request_timeout=0.2)
        backend.hang()
        with pytest.raises(DeadlineExceededError):
            await store.get("first")
        await eventually(lambda: runtime.stats()["faulty"].restarts == 1)
        assert runtime.stats()["faulty"].last_crash == "DeadlineExceededError"
        backend.release()
        await store.put("after", {"v": 1})
        assert await store.get("after") == {"v": 1}


async def test_a_run_whose_deadline_passes_while_an_earlier_run_is_out_is_never_sent() -> None:
    backend = FaultyBackend()
    async with Runtime() as runtime:
        store = await runtime.spawn(backend)
        short = store.with_timeout(0.3)
        timed_out = anyio.Event()

        async def short_delete() -> None:
            with pytest.raises(DeadlineExceededError):
                await short.delete("short")
            timed_out.set()

        backend.hang()
        async with anyio.create_task_group() as group:
            group.start_soon(store.put, "held", {"v": 0})
            await eventually(lambda: backend.entered == 1)
            group.start_soon(store.get, "slow")  # the next round: a get run, then a delete run
            await eventually(lambda: runtime.stats()["faulty"].mailbox_depth == 1)
            group.start_soon(short_delete)
            await eventually(lambda: runtime.stats()["faulty"].mailbox_depth == 2)
            backend.release()  # the held put ends and the round starts, both requests still in time...
            backend.hang()  # ...but its get run is held until the delete's deadline has passed
            await timed_out.wait()
            backend.release()
        assert backend.keys_seen("get") == ["slow"]
        assert "short" not in backend.keys_seen("delete"), "checked when its run started, not only at the round's"
        assert runtime.stats()["faulty"].restarts == 0


async def test_a_cancelled_caller_withdraws_its_request() -> None:
    backend = FaultyBackend()
    async with Runtime() as runtime:
        store = await runtime.spawn(backend)
        backend.hang()
        async with anyio.create_task_group() as group:
            group.start_soon(store.put, "first", {"v": 1})
            await eventually(lambda: backend.entered == 1)
            with anyio.move_on_after(0.05) as scope:
                await store.put("withdrawn", {"v": 2})
            assert scope.cancelled_caught
            backend.release()
        assert await store.get("withdrawn") is None
        assert backend.keys_seen("put") == ["first"]


async def test_a_full_mailbox_makes_callers_wait() -> None:
    backend = FaultyBackend()
    async with Runtime(mailbox=MailboxPolicy(size=4, drain=4)) as runtime:
        store = await runtime.spawn(backend)
        backend.hang()
        async with anyio.create_task_group() as group:
            for i in range(20):
                group.start_soon(store.put, f"k{i}", {"i": i})
            await eventually(lambda: runtime.stats()["faulty"].mailbox_depth == 4)
            assert backend.entered == 1
            backend.release()
        assert runtime.stats()["faulty"].mailbox_depth == 0
        assert await store.get_many([f"k{i}" for i in range(20)]) == [{"i": i} for i in range(20)]


async def test_callers_past_a_full_mailbox_are_served_in_the_order_they_came() -> None:
    """Callers queued behind a full mailbox reach the backend in the order they came, a round's worth at a time."""
    backend = FaultyBackend()
    async with Runtime(mailbox=MailboxPolicy(size=2, drain=2)) as runtime:
        store = await runtime.spawn(backend)
        backend.hang()
        async with anyio.create_task_group() as group:
            group.start_soon(store.put, "k0", {"n": 0})
            await eventually(lambda: backend.entered == 1)
            for number in range(1, 40):
                group.start_soon(store.put, f"k{number}", {"n": number})
                await anyio.lowlevel.checkpoint()  # each caller queues before the next comes
            await eventually(lambda: runtime.stats()["faulty"].waiting_for_room == 37)
            assert runtime.stats()["faulty"].mailbox_depth == 2
            backend.release()
        assert backend.keys_seen("put") == [f"k{number}" for number in range(40)]
        assert runtime.stats()["faulty"].max_batch == 2
        assert await store.get_many([f"k{number}" for number in range(40)]) == [{"n": n} for n in range(40)]


async def test_callers_who_leave_the_line_leave_nothing_behind() -> None:
    """Callers who give up waiting for room are swept out of the line: an overload with timeouts does not grow it."""
    backend = FaultyBackend()
    async with Runtime(mailbox=MailboxPolicy(size=2, drain=2)) as runtime:
        store = await runtime.spawn(backend)
        backend.hang()
        async with anyio.create_task_group() as group:
            group.start_soon(store.put, "held", {"v": 0})
            await eventually(lambda: backend.entered == 1)
            hurried = store.with_timeout(0.05)

            async def give_up(number: int) -> None:
                with pytest.raises(DeadlineExceededError):
                    await hurried.put(f"k{number}", {"n": number})

            async with anyio.create_task_group() as hurrying:
                for number in range(1_000):
                    hurrying.start_soon(give_up, number)
            assert runtime.stats()["faulty"].waiting_for_room == 0
            backend.release()
        assert backend.keys_seen("put") == ["held"], "nobody who left was served"


async def test_shutdown_drains_queued_writes() -> None:
    inner = MemoryBackend()
    backend = FaultyBackend(inner)
    acknowledged: list[str] = []
    async with Runtime() as runtime:
        store = await runtime.spawn(backend)

        async def put(i: int) -> None:
            await store.put(f"k{i}", {"i": i})
            acknowledged.append(f"k{i}")

        async with anyio.create_task_group() as group:
            for i in range(200):
                group.start_soon(put, i)
            backend.hang()
            await eventually(lambda: backend.entered >= 1)
            backend.release()
    assert len(acknowledged) == 200
    found = await inner.get_many("default_collection", acknowledged)
    assert None not in found
    assert backend.closes == 1


async def test_shutdown_past_the_grace_period_fails_what_is_left() -> None:
    backend = FaultyBackend()
    outcomes: list[BaseException | None] = []

    async def put(store: Any, i: int) -> None:
        try:
            await store.put(f"k{i}", {"i": i})
            outcomes.append(None)
        except RuntimeClosedError as exc:
            outcomes.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as callers, Runtime(shutdown_grace=0.1) as runtime:
            store = await runtime.spawn(backend)
            backend.hang()
            for i in range(5):
                callers.start_soon(put, store, i)
            await eventually(lambda: backend.entered == 1)
    assert len(outcomes) == 5
    assert all(isinstance(outcome, RuntimeClosedError) for outcome in outcomes)
    assert backend.closes == 1


async def test_shutdown_does_not_wait_out_a_backoff_with_nothing_to_serve() -> None:
    backend = FaultyBackend()
    slow_restarts = RestartPolicy(backoff_initial=30.0, backoff_max=30.0)
    with anyio.fail_after(10):
        async with Runtime(restart=slow_restarts, shutdown_grace=30.0) as runtime:
            store = await runtime.spawn(backend, request_timeout=0.2)
            backend.fail_next(TransientFault("down"))
            with pytest.raises(DeadlineExceededError):
                await store.put("k", {"v": 1})
            assert runtime.stats()["faulty"].state == "restarting"
    assert backend.opens == 1, "nothing was left to serve, so the backend was not reopened"
    assert backend.closes == 1


async def test_shutdown_reopens_a_backend_in_backoff_to_serve_what_is_queued() -> None:
    inner = MemoryBackend()
    backend = FaultyBackend(inner)
    restarts = RestartPolicy(backoff_initial=1.0, backoff_max=1.0)
    async with anyio.create_task_group() as callers, Runtime(restart=restarts) as runtime:
        store = await runtime.spawn(backend)
        backend.fail_next(TransientFault("down"))
        callers.start_soon(store.put, "k", {"v": 1})
        await eventually(lambda: runtime.stats()["faulty"].state == "restarting")
        closing = anyio.current_time()
    assert anyio.current_time() - closing >= 0.2, "the backoff was waited out before the reopen"
    assert backend.opens == 2
    assert await inner.get_many("default_collection", ["k"]) != [None]


async def test_shutdown_stops_a_backoff_once_the_held_requests_callers_give_up() -> None:
    backend = FaultyBackend()
    slow_restarts = RestartPolicy(backoff_initial=30.0, backoff_max=30.0)
    outcomes: list[str] = []

    async def put(store: Any) -> None:
        with pytest.raises(DeadlineExceededError):
            await store.put("k", {"v": 1})
        outcomes.append("gave up")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as callers, Runtime(restart=slow_restarts, shutdown_grace=30.0) as runtime:
            store = await runtime.spawn(backend, request_timeout=0.5)
            backend.fail_next(TransientFault("down"))
            callers.start_soon(put, store)
            await eventually(lambda: runtime.stats()["faulty"].state == "restarting")
    assert outcomes == ["gave up"]
    assert backend.opens == 1, "its caller gave up during the backoff: nobody was left to reopen for"


async def test_requests_held_over_a_restart_go_out_a_drain_at_a_time() -> None:
    backend = FaultyBackend()
    restarts = RestartPolicy(backoff_initial=0.3, backoff_max=0.3)
    mailbox = MailboxPolicy(size=64, drain=4)
    async with anyio.create_task_group() as callers, Runtime(mailbox=mailbox, restart=restarts) as runtime:
        store = await runtime.spawn(backend)
        backend.fail_next(TransientFault("down"))
        for i in range(12):
            callers.start_soon(store.put, f"k{i}", {"i": i})
        await eventually(lambda: runtime.stats()["faulty"].state == "restarting")
        # leaving the runtime moves what is queued into the held requests: 12 of them
    sizes = [len(keys) for op, _, keys in backend.calls if op == "put"]
    assert sum(sizes[1:]) == 12, "every held put was served after the restart"
    assert max(sizes) <= 4, f"rounds of at most the drain bound, not {sizes}"


class _CullFailsOnce(FaultyBackend):
    """Culls without the data-call gate, and fails the first cull after :attr:`armed` is set."""

    armed = False

    async def cull(self, budget: int) -> tuple[int, bool]:
        if self.armed:
            self.armed = False
            raise TransientFault("connection dropped while culling")
        return await self.inner.cull(budget)


async def test_a_crash_between_rounds_keeps_the_requests_of_rounds_in_flight() -> None:
    inner = MemoryBackend()
    backend = _CullFailsOnce(inner, concurrency=2, rounds_in_flight=2)
    async with Runtime(restart=FAST_RESTARTS, cull=CullPolicy(interval=0.02)) as runtime:
        store = await runtime.spawn(backend)
        backend.hang()
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(store.put, "k", {"v": 1})
                await eventually(lambda: backend.entered == 1)  # the put's round is in flight, held
                backend.armed = True  # the next cull, between rounds, crashes the worker
                await eventually(lambda: runtime.stats()["faulty"].restarts == 1)
                backend.release()
        assert await inner.get_many("default_collection", ["k"]) != [None], "the held put was tried again"


async def test_spawn_reports_a_backend_that_cannot_open() -> None:
    backend = FaultyBackend()
    backend.failing_opens = 1
    async with Runtime() as runtime:
        with pytest.raises(StoreSetupError) as raised:
            await runtime.spawn(backend, name="broken")
        assert raised.value.backend == "broken"
        assert "broken" not in runtime.stats()


async def test_workers_are_named_and_found_by_name() -> None:
    async with Runtime() as runtime:
        first = await runtime.spawn(MemoryBackend(), name="cache")
        assert runtime.handle("cache") is first
        with pytest.raises(ValueError, match="already has a worker named 'cache'"):
            await runtime.spawn(MemoryBackend(), name="cache")
        with pytest.raises(LookupError):
            runtime.handle("missing")
        second = await runtime.spawn(MemoryBackend(), name="sessions")
        await first.put("k", {"in": "cache"})
        assert await second.get("k") is None
        assert set(runtime.stats()) == {"cache", "sessions"}


async def test_stats_count_what_each_worker_did() -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(MemoryBackend(), name="m")
        await store.put_many(["a", "b"], [{"v": 1}, {"v": 2}])
        await store.get("a")
        await store.get_many(["a", "b", "c"])
        await store.delete("a")
        stats = runtime.stats()["m"]
        assert stats.ops == {"put": 1, "get": 2, "delete": 1}
        assert stats.batches == 4
        assert stats.mean_batch == 1.0
        assert (stats.mailbox_depth, stats.in_flight, stats.errors) == (0, 0, {})
        assert stats.state == "running"
    assert runtime.stats()["m"].state == "stopped"

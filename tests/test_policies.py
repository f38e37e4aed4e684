"""Each supervision and scheduling policy doing what it says, under injected faults, on both loops."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import structlog.testing

from kvrt import CircuitPolicy, CullPolicy, FallbackPolicy, MailboxPolicy, RestartPolicy, Runtime
from kvrt.backends.memory import MemoryBackend
from kvrt.errors import (
    BackendUnavailableError,
    DeadlineExceededError,
    KeyValueStoreError,
    OverloadedError,
    StoreConnectionError,
)
from kvrt.handle import Handle
from kvrt.testing.conformance import eventually, raw_get
from kvrt.testing.faults import FaultyBackend, TransientFault

pytestmark = pytest.mark.anyio

FAST = RestartPolicy(max_restarts=50, within=5.0, backoff_initial=0.001, backoff_max=0.005)


# Restart types.


async def test_a_temporary_worker_is_not_restarted() -> None:
    backend = FaultyBackend()
    async with Runtime(restart=RestartPolicy(restart_type="temporary", backoff_initial=0.001)) as runtime:
        store = await runtime.spawn(backend)
        backend.fail_next(TransientFault("reset"))
        with pytest.raises(BackendUnavailableError):
            await store.put("k", {"v": 1})
        assert runtime.stats()["faulty"].state == "unavailable"
        assert backend.opens == 1


async def test_a_transient_worker_restarts_after_transient_errors_only() -> None:
    backend = FaultyBackend()
    async with Runtime(restart=FAST.__replace__(restart_type="transient")) as runtime:
        store = await runtime.spawn(backend)
        backend.fail_next(TransientFault("reset"))
        await store.put("k", {"v": 1})
        assert runtime.stats()["faulty"].restarts == 1
        backend.short_next()  # a broken answer: an unexpected exception in the worker
        with pytest.raises(BackendUnavailableError):
            await store.get("k")
        assert runtime.stats()["faulty"].state == "unavailable"


async def test_a_permanent_worker_restarts_after_an_unexpected_exception() -> None:
    backend = FaultyBackend()
    async with Runtime(restart=FAST) as runtime:
        store = await runtime.spawn(backend)
        await store.put("k", {"v": 1})
        backend.short_next()
        assert await store.get("k") == {"v": 1}, "the request was kept and served after the restart"
        assert runtime.stats()["faulty"].restarts == 1
        assert runtime.stats()["faulty"].state == "running"


async def test_restarts_back_off_exponentially_with_jitter_up_to_the_cap() -> None:
    backend = FaultyBackend()
    policy = RestartPolicy(max_restarts=5, within=60.0, backoff_initial=0.01, backoff_max=0.05, attempts=1)
    async with Runtime(restart=policy) as runtime:
        store = await runtime.spawn(backend)
        with structlog.testing.capture_logs() as logs:
            for _ in range(5):
                backend.fail_next(TransientFault("reset"))
                with pytest.raises(StoreConnectionError):
                    await store.put("k", {"v": 1})
                await eventually(lambda: runtime.stats()["faulty"].state == "running")
        delays = [entry["seconds"] for entry in logs if entry["event"] == "worker.backoff"]
        ceilings = [0.01, 0.02, 0.04, 0.05, 0.05]
        assert len(delays) == 5
        for delay, ceiling in zip(delays, ceilings, strict=True):
            assert ceiling * 0.5 - 0.001 <= delay <= ceiling + 0.001


# Strategies.


@pytest.mark.parametrize(
    ("strategy", "reopened"),
    [("one_for_one", ["b"]), ("one_for_all", ["a", "b", "c"]), ("rest_for_one", ["b", "c"])],
)
async def test_a_groups_strategy_decides_who_restarts(strategy: Any, reopened: list[str]) -> None:
    backends = {name: FaultyBackend() for name in "abc"}
    async with Runtime(restart=FAST) as runtime:
        handles = await runtime.spawn_group(backends, strategy=strategy)
        backends["b"].fail_next(TransientFault("reset"))
        await handles["b"].put("k", {"v": 1})
        await eventually(lambda: all(stats.state == "running" for stats in runtime.stats().values()))
        for name in "abc":
            assert await handles[name].get("k") == ({"v": 1} if name == "b" else None)
        assert [name for name in "abc" if backends[name].opens == 2] == reopened
        assert [name for name in "abc" if runtime.stats()[name].restarts == 1] == reopened


async def test_a_group_shares_one_restart_intensity() -> None:
    backends = {name: FaultyBackend() for name in "ab"}
    policy = RestartPolicy(
        max_restarts=2, within=5.0, backoff_initial=0.001, backoff_max=0.002, attempts=1, give_up=True
    )
    async with Runtime(restart=policy) as runtime:
        handles = await runtime.spawn_group(backends)
        for name in ("a", "b", "a"):
            backends[name].fail_next(TransientFault("reset"))
            with pytest.raises((StoreConnectionError, BackendUnavailableError)):
                await handles[name].put("k", {"v": 1})
        await eventually(lambda: {stats.state for stats in runtime.stats().values()} == {"unavailable"})
        with pytest.raises(BackendUnavailableError):
            await handles["b"].get("k")


async def test_a_critical_backend_that_gives_up_fails_the_runtime() -> None:
    backend = FaultyBackend()
    policy = RestartPolicy(
        max_restarts=1, within=5.0, backoff_initial=0.001, backoff_max=0.002, attempts=5, give_up=True
    )

    async def body() -> None:
        async with Runtime(restart=policy) as runtime:
            store = await runtime.spawn(backend, critical=True)
            backend.fail_next(*(TransientFault("down") for _ in range(5)))
            with pytest.raises(BackendUnavailableError):
                await store.put("k", {"v": 1})
            await anyio.sleep_forever()  # the runtime's failure cancels this

    with anyio.fail_after(5), pytest.raises(BackendUnavailableError, match="Critical backends gave up"):
        await body()


# Retry.


async def test_a_retry_that_succeeds_once_answers_the_caller_once() -> None:
    backend = FaultyBackend()
    async with Runtime(restart=FAST) as runtime:
        store = await runtime.spawn(backend)
        await store.put_many(["a", "b"], [{"v": 1}, {"v": 2}])
        backend.fail_next(TransientFault("reset"), TransientFault("reset again"))
        assert await store.delete_many(["a", "b"]) == 2
        assert backend.keys_seen("delete") == ["a", "b"] * 3
        assert runtime.stats()["faulty"].retries == 2


async def test_a_delete_retried_after_it_took_effect_reports_the_retry(anyio_backend: str) -> None:
    """Documented: a transient failure after the backend applied a delete is not knowable here."""

    class AppliedThenFailed(FaultyBackend):
        armed = False

        async def delete_many(self, collection: str, keys: Any) -> list[bool]:
            removed = await super().delete_many(collection, keys)
            if self.armed:
                self.armed = False
                raise TransientFault("connection lost after the server applied it")
            return removed

    backend = AppliedThenFailed()
    async with Runtime(restart=FAST) as runtime:
        store = await runtime.spawn(backend)
        await store.put("k", {"v": 1})
        backend.armed = True
        assert await store.delete("k") is False
        assert await store.get("k") is None


# Deadlines and cancellation.


async def test_a_per_call_timeout_overrides_the_handles() -> None:
    backend = FaultyBackend()
    async with Runtime() as runtime:
        store = await runtime.spawn(backend, request_timeout=10.0)
        backend.slow(5.0)
        started = anyio.current_time()
        with pytest.raises(DeadlineExceededError):
            await store.with_timeout(0.05).get("k")
        assert anyio.current_time() - started < 0.05 + 1.0, "the call waited for the slow backend"
        backend.slow(0)
        assert await store.get("k") is None, "the original handle keeps its own timeout"
        with pytest.raises(ValueError, match="positive number"):
            store.with_timeout(0)


async def test_a_slow_backend_times_callers_out_by_their_deadline() -> None:
    backend = FaultyBackend()
    async with Runtime(restart=FAST) as runtime:
        store = await runtime.spawn(backend, request_timeout=0.1)
        backend.slow(5.0)
        results: list[float] = []

        async def call() -> None:
            started = anyio.current_time()
            with pytest.raises(DeadlineExceededError):
                await store.get("k")
            results.append(anyio.current_time() - started)

        async with anyio.create_task_group() as group:
            for _ in range(10):
                group.start_soon(call)
        assert max(results) < 0.1 + 1.0, "a caller waited for the slow backend"


# Circuit breaker and fallback.


async def _take_down(store: Handle, backend: FaultyBackend) -> None:
    """The backend goes away: a call fails, and so does every reconnect until :func:`_bring_back`."""
    backend.failing_opens = 1_000_000
    backend.fail_next(TransientFault("down"))
    with pytest.raises(KeyValueStoreError):
        await store.put("k", {"v": 0})


def _bring_back(backend: FaultyBackend) -> None:
    backend.failing_opens = 0


async def test_the_circuit_opens_half_opens_and_closes() -> None:
    backend = FaultyBackend()
    circuit = CircuitPolicy(failures=3, reset_after=0.3, reset_max=5.0)
    async with Runtime(restart=FAST.__replace__(attempts=1), circuit=circuit) as runtime:
        store = await runtime.spawn(backend)
        with structlog.testing.capture_logs() as logs:
            await _take_down(store, backend)
            await eventually(lambda: runtime.stats()["faulty"].circuit == "open")
        assert [entry["event"] for entry in logs if entry["event"].startswith("circuit.")] == ["circuit.opened"]
        calls = len(backend.calls)
        with pytest.raises(BackendUnavailableError, match="circuit is open"):
            await store.get("k")
        assert len(backend.calls) == calls, "an open circuit sends nothing to the backend"
        await anyio.sleep(0.32)  # the reset time is the condition
        with pytest.raises(BackendUnavailableError, match="keeps reconnecting"):
            await store.get("k")  # the probe waits for a reconnect that fails: open again, for 0.6 s
        assert runtime.stats()["faulty"].circuit == "open"
        with pytest.raises(BackendUnavailableError, match="circuit is open"):
            await store.get("k")
        with structlog.testing.capture_logs() as logs:
            _bring_back(backend)
            await eventually(lambda: runtime.stats()["faulty"].state == "running")
            assert await store.get("k") is None  # the reconnect half-opened it; this probe closes it
        assert [entry["event"] for entry in logs if entry["event"].startswith("circuit.")][-2:] == [
            "circuit.half_open",
            "circuit.closed",
        ]
        stats = runtime.stats()["faulty"]
        assert stats.circuit == "closed"
        assert stats.circuit_trips >= 2


async def test_the_circuit_opens_on_a_failure_rate() -> None:
    backend = FaultyBackend()
    circuit = CircuitPolicy(failures=100, failure_rate=0.5, window=10, reset_after=5)
    async with Runtime(restart=FAST.__replace__(attempts=1), circuit=circuit) as runtime:
        store = await runtime.spawn(backend)
        for _ in range(5):
            await store.put("k", {"v": 1})
            backend.fail_next(TransientFault("down"))
            with pytest.raises(StoreConnectionError):
                await store.put("k", {"v": 0})
            await eventually(lambda: runtime.stats()["faulty"].state == "running")
        stats = runtime.stats()["faulty"]
        assert stats.circuit_trips == 1  # the fifth failure in ten calls; each reconnect then half-opened it
        assert stats.circuit == "half_open"


async def test_a_fallback_serves_reads_while_the_circuit_is_open() -> None:
    primary = FaultyBackend()
    async with Runtime(restart=FAST.__replace__(attempts=1), circuit=CircuitPolicy(failures=2, reset_after=60)) as rt:
        spare = await rt.spawn(MemoryBackend(), name="spare")
        await spare.put("k", {"from": "spare"})
        store = await rt.spawn(primary, fallback=spare)
        await store.put("k", {"from": "primary"})
        assert await store.get("k") == {"from": "primary"}
        await _take_down(store, primary)
        await eventually(lambda: rt.stats()["faulty"].circuit == "open")
        assert await store.get("k") == {"from": "spare"}
        assert await store.get_many(["k", "x"]) == [{"from": "spare"}, None]
        with pytest.raises(BackendUnavailableError):
            await store.put("k", {"from": "caller"})
        _bring_back(primary)
        await eventually(lambda: rt.stats()["faulty"].state == "running")
        assert await store.get("k") == {"from": "primary"}, "served by the primary again once it is back"


async def test_a_fallback_takes_writes_when_asked() -> None:
    primary = FaultyBackend()
    async with Runtime(restart=FAST.__replace__(attempts=1), circuit=CircuitPolicy(failures=1, reset_after=60)) as rt:
        spare = await rt.spawn(MemoryBackend(), name="spare")
        store = await rt.spawn(primary, fallback=FallbackPolicy(spare, writes=True))
        await _take_down(store, primary)
        await eventually(lambda: rt.stats()["faulty"].circuit == "open")
        await store.put("k", {"v": 1}, ttl=60)
        assert await spare.get("k") == {"v": 1}
        assert await store.delete("k") is True


async def test_a_fallback_serves_reads_after_the_supervisor_gives_up() -> None:
    primary = FaultyBackend()
    policy = RestartPolicy(max_restarts=1, within=5.0, backoff_initial=0.001, attempts=5, give_up=True)
    async with Runtime(restart=policy) as rt:
        spare = await rt.spawn(MemoryBackend(), name="spare")
        await spare.put("k", {"from": "spare"})
        store = await rt.spawn(primary, fallback=spare)
        primary.fail_next(*(TransientFault("down") for _ in range(5)))
        with pytest.raises(BackendUnavailableError):
            await store.put("k", {"v": 1})
        assert await store.get("k") == {"from": "spare"}


# Backpressure.


async def test_a_full_mailbox_fails_fast_when_asked() -> None:
    backend = FaultyBackend()
    async with Runtime(mailbox=MailboxPolicy(size=2, drain=2, when_full="fail")) as runtime:
        store = await runtime.spawn(backend)
        backend.hang()
        outcomes: list[BaseException | None] = []

        async def put(i: int) -> None:
            try:
                await store.put(f"k{i}", {"i": i})
                outcomes.append(None)
            except OverloadedError as exc:
                outcomes.append(exc)

        async with anyio.create_task_group() as group:
            group.start_soon(put, 0)
            await eventually(lambda: backend.entered == 1)
            for i in range(1, 6):
                group.start_soon(put, i)
            await eventually(lambda: len(outcomes) == 3)
            backend.release()
        assert sum(isinstance(outcome, OverloadedError) for outcome in outcomes) == 3
        assert runtime.stats()["faulty"].overloaded == 3


async def test_a_full_mailbox_waits_up_to_max_wait() -> None:
    backend = FaultyBackend()
    async with Runtime(mailbox=MailboxPolicy(size=1, drain=1, max_wait=0.05)) as runtime:
        store = await runtime.spawn(backend)
        backend.hang()
        async with anyio.create_task_group() as group:
            group.start_soon(store.put, "held", {"v": 0})
            await eventually(lambda: backend.entered == 1)
            group.start_soon(store.put, "queued", {"v": 1})
            await eventually(lambda: runtime.stats()["faulty"].mailbox_depth == 1)
            started = anyio.current_time()
            with pytest.raises(OverloadedError, match="stayed full"):
                await store.put("refused", {"v": 2})
            assert 0.05 <= anyio.current_time() - started < 0.05 + 1.0
            backend.release()
        assert await store.get("queued") == {"v": 1}
        assert await store.get("refused") is None


async def test_the_runtime_wide_cap_is_never_exceeded() -> None:
    backends = [FaultyBackend(), FaultyBackend()]
    async with Runtime(max_in_flight=8) as runtime:
        handles = [await runtime.spawn(backend, name=f"w{i}") for i, backend in enumerate(backends)]
        for backend in backends:
            backend.hang()
        async with anyio.create_task_group() as group:
            for i in range(100):
                group.start_soon(handles[i % 2].put, f"k{i}", {"i": i})
            await eventually(lambda: runtime.runtime_stats().in_flight == 8)
            assert sum(stats.mailbox_depth + stats.in_flight for stats in runtime.stats().values()) <= 8
            for backend in backends:
                backend.release()
        load = runtime.runtime_stats()
        assert (load.in_flight, load.peak_in_flight, load.max_in_flight) == (0, 8, 8)
        assert sum(stats.ops.get("put", 0) for stats in runtime.stats().values()) == 100


# Culling and latency.


async def test_100k_expired_entries_are_culled_in_the_background_under_load() -> None:
    async with Runtime(cull=CullPolicy(interval=0.05, budget=2048)) as runtime:
        store = await runtime.spawn(MemoryBackend(max_entries_per_collection=200_000), name="m")
        served_while_culling = 0

        async def foreground(caller: int) -> None:
            nonlocal served_while_culling
            step = 0
            while runtime.stats()["m"].culled < 100_000:
                await store.put(f"live{caller}", {"n": step})
                assert await store.get(f"live{caller}") == {"n": step}
                step += 1
                if runtime.stats()["m"].culled:
                    served_while_culling += 1

        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                for caller in range(4):
                    group.start_soon(foreground, caller)
                names = [f"e{i}" for i in range(100_000)]
                for start in range(0, len(names), 10_000):
                    chunk = names[start : start + 10_000]
                    await store.put_many(chunk, [{"i": 1}] * len(chunk), ttl=0.2, collection="old")
        assert served_while_culling > 0, "foreground requests were served while culling ran"
        assert runtime.stats()["m"].culled == 100_000
        assert await raw_get(store, "old", "e99999") is None


async def test_latency_percentiles_are_reported() -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(MemoryBackend(), name="m")
        for i in range(200):
            await store.put(f"k{i}", {"i": i})
        latency = runtime.stats()["m"].latency_ms
        assert set(latency) == {"p50", "p90", "p99", "max"}
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"] < 1000


# Per-worker concurrency.


async def _each_in_its_own_collection(store: Handle, callers: int) -> None:
    """Have ``callers`` tasks put then get in their own collections, so no two requests merge."""
    results: dict[int, Any] = {}

    async def caller(number: int) -> None:
        await store.put("k", {"n": number}, collection=f"c{number}")
        results[number] = await store.get("k", collection=f"c{number}")

    async with anyio.create_task_group() as group:
        for number in range(callers):
            group.start_soon(caller, number)
    assert results == {number: {"n": number} for number in range(callers)}


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_backend_calls_in_flight_never_exceed_the_backends_concurrency(concurrency: int) -> None:
    backend = FaultyBackend(concurrency=concurrency)
    async with Runtime() as runtime:
        store = await runtime.spawn(backend)
        backend.slow(0.02)
        await _each_in_its_own_collection(store, 16)
        assert backend.peak_in_flight == concurrency


async def test_a_crash_in_one_concurrent_call_loses_no_request() -> None:
    backend = FaultyBackend(concurrency=4)
    async with Runtime(restart=FAST) as runtime:
        store = await runtime.spawn(backend)
        backend.slow(0.01)
        backend.fail_next(TransientFault("reset"))
        await _each_in_its_own_collection(store, 12)
        assert runtime.stats()["faulty"].restarts == 1

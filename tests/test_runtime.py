"""The runtime's lifecycle: leaving the block in every way, and what callers see meanwhile."""

from __future__ import annotations

import anyio
import pytest

import kvrt
from kvrt import MailboxPolicy, RestartPolicy, Runtime
from kvrt.backends.memory import MemoryBackend
from kvrt.errors import DeadlineExceededError, InvalidKeyError, RuntimeClosedError, SerializationError
from kvrt.testing.conformance import eventually
from kvrt.testing.faults import FaultyBackend

pytestmark = pytest.mark.anyio


class _SlowClose(MemoryBackend):
    """Its close() hangs: a driver that never lets go."""

    async def close(self) -> None:
        await anyio.sleep_forever()


class _GatedOpen(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.closed = False

    async def open(self) -> None:
        await self.gate.wait()

    async def close(self) -> None:
        self.closed = True


async def test_an_exception_in_the_block_comes_out_as_itself() -> None:
    async def body() -> None:
        async with Runtime() as runtime:
            store = await runtime.spawn(MemoryBackend())
            await store.put("k", {"v": 1})
            raise KeyError("from the body")

    with pytest.raises(KeyError, match="from the body"):
        await body()


async def test_cancelling_the_block_shuts_down_cleanly() -> None:
    backend = FaultyBackend()
    outcomes: list[BaseException | None] = []

    async def put(store: object, i: int) -> None:
        try:
            await store.put(f"k{i}", {"i": i})  # type: ignore[attr-defined]
            outcomes.append(None)
        except RuntimeClosedError as exc:
            outcomes.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as callers:
            with anyio.move_on_after(0.1) as scope:
                async with Runtime(shutdown_grace=0.1) as runtime:
                    store = await runtime.spawn(backend)
                    backend.hang()
                    for i in range(3):
                        callers.start_soon(put, store, i)
                    await anyio.sleep_forever()
            assert scope.cancelled_caught
    assert len(outcomes) == 3
    assert all(isinstance(outcome, RuntimeClosedError) for outcome in outcomes)
    assert backend.closes == 1


async def test_a_backend_whose_close_hangs_does_not_hang_shutdown() -> None:
    with anyio.fail_after(3):
        async with Runtime(shutdown_grace=0.2) as runtime:
            store = await runtime.spawn(_SlowClose())
            await store.put("k", {"v": 1})


async def test_request_timeout_covers_the_wait_for_room_in_a_full_mailbox() -> None:
    backend = FaultyBackend()
    errors: list[BaseException] = []

    async def put(store: object, i: int) -> None:
        try:
            await store.put(f"k{i}", {"i": i})  # type: ignore[attr-defined]
        except DeadlineExceededError as exc:
            errors.append(exc)

    # The worker crashes on its own deadline at 0.2 s and then stays down for 5 s, so only the
    # callers' own deadline can release the ones still waiting for room well before that.
    restart = RestartPolicy(backoff_initial=5.0, backoff_max=5.0)
    async with Runtime(mailbox=MailboxPolicy(size=1, drain=1), restart=restart) as runtime:
        store = await runtime.spawn(backend, request_timeout=0.2)
        backend.hang()
        started = anyio.current_time()
        async with anyio.create_task_group() as group:
            for i in range(4):
                group.start_soon(put, store, i)
        elapsed = anyio.current_time() - started
        backend.release()
    assert len(errors) == 4, "the caller waiting for room timed out too"
    assert elapsed < 2.0, "a caller waited for the restarted worker instead of its own deadline"


async def test_a_spawn_that_finishes_after_shutdown_is_refused_and_closed() -> None:
    backend = _GatedOpen()
    outcome: list[BaseException] = []

    async def spawn(runtime: Runtime) -> None:
        with pytest.raises(RuntimeClosedError) as raised:
            await runtime.spawn(backend, name="late")
        outcome.append(raised.value)

    async with anyio.create_task_group() as group:
        async with Runtime() as runtime:
            group.start_soon(spawn, runtime)
            await eventually(lambda: "late" in runtime._opening)
        backend.gate.set()
    assert len(outcome) == 1
    assert backend.closed
    assert "late" not in runtime.stats()


async def test_library_events_stay_quiet_unless_the_application_asks(capsys: pytest.CaptureFixture[str]) -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(MemoryBackend())
        await store.put("k", {"v": 1})
    captured = capsys.readouterr()
    assert "worker.started" not in captured.out + captured.err


async def test_closing_a_worker_past_its_grace_cuts_off_what_it_still_serves() -> None:
    """A backend call that hangs does not hang ``close_worker``: past the grace the worker is cancelled and closed."""
    backend = FaultyBackend()
    outcome: list[BaseException] = []
    with anyio.fail_after(10):
        async with Runtime(shutdown_grace=0.2) as runtime:
            store = await runtime.spawn(backend, name="stuck")
            backend.hang()

            async def put() -> None:
                try:
                    await store.put("k", {"v": 1})
                except RuntimeClosedError as exc:
                    outcome.append(exc)

            async with anyio.create_task_group() as callers:
                callers.start_soon(put)
                await eventually(lambda: backend.entered == 1)
                await runtime.close_worker("stuck")
            assert "stuck" not in runtime.stats()
            assert backend.closes == 1
            assert [type(error) for error in outcome] == [RuntimeClosedError]
            again = await runtime.spawn(MemoryBackend(), name="stuck")  # the name is free again
            await again.put("k", {"v": 2})


async def test_seed_is_written_before_spawn_returns_and_open_refuses_a_bad_one(anyio_backend: str) -> None:
    seed = {"users": {"u1": {"name": "Jane"}}, "": {"greeting": {"text": "hi"}}}
    async with kvrt.Runtime() as runtime:
        store = await runtime.spawn(MemoryBackend(), seed=seed, default_collection="fresh")
        assert await store.get("u1", collection="users") == {"name": "Jane"}
        assert await store.get("greeting", collection="default_collection") == {"text": "hi"}
        assert await store.get("greeting") is None  # the handle's own default is another collection
        assert await store.ttl("u1", collection="users") == ({"name": "Jane"}, None)
        with pytest.raises(SerializationError):
            await runtime.spawn(MemoryBackend(), name="bad", seed={"c": {"k": {"when": float("nan")}}})
        with pytest.raises(InvalidKeyError):
            await runtime.spawn(MemoryBackend(), name="bad", seed={"c": {"": {}}})
        assert "bad" not in runtime.stats(), "nothing was spawned for a refused seed"
    with kvrt.Runtime.detached() as detached:
        with pytest.raises(TypeError):
            detached.open(MemoryBackend(), seed={"c": ["not", "a", "mapping"]})  # type: ignore[dict-item]
        lazy = detached.open(MemoryBackend(), name="lazy", seed={"c": {"k": {"v": 1}}}, default_collection="c")
        assert await lazy.get("k") == {"v": 1}

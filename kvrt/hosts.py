"""Where a backend's calls run: on the app's event loop, or on an asyncio loop in a thread.

Drivers such as redis-py's asyncio client run only on asyncio. Under trio, a runtime starts one
asyncio event loop in a thread of its own, opens such backends there (so their connection pools
belong to that loop), and sends each backend call across whole: a merged batch crosses once, and
its answer comes back by waking the waiting trio task, never by blocking either loop. Calls and
answers that cross at about the same time share one wake of the other loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import anyio

from kvrt.backends.base import Backend
from kvrt.crossing import Doorbell
from kvrt.wakeups import AwaitedEvent, trio_events

_T = TypeVar("_T")


def needs_host(backend: Backend) -> bool:
    """Say whether ``backend`` cannot run on the current event loop and needs an asyncio thread."""
    return backend.asyncio_only and not running_asyncio()


def running_asyncio() -> bool:
    """Whether the event loop running this task is asyncio's (anyio's cancellation class says which)."""
    return anyio.get_cancelled_exc_class() is asyncio.CancelledError


class AsyncioThread:
    """An asyncio event loop running in a daemon thread, for one runtime's asyncio-only backends.

    Calls cross in both directions through a :class:`~kvrt.crossing.Doorbell` each: the calls that every
    worker makes before the asyncio loop runs wake it once, and the answers that finish before the
    trio loop runs wake it once, so many workers' small batches share their wakes.
    """

    def __init__(self) -> None:
        token = _trio_token()  # made under the runtime's trio loop, which every call comes from
        self._new_event = trio_events()
        self._loop = asyncio.new_event_loop()
        self._calls: Doorbell[_HostCall] = Doorbell(self._loop.call_soon_threadsafe, self._start)
        self._answers: Doorbell[_HostCall] = Doorbell(token.run_sync_soon, _wake)
        self._thread = threading.Thread(target=self._run, name="kvrt asyncio host", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def call(self, function: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """Run ``function(*args)`` on the asyncio loop; wait for it here without blocking this loop."""
        call = _HostCall(function, args, self._new_event())
        self._calls.ring(call)
        try:
            await call.arrived.wait()
        except BaseException:
            call.abandoned = True  # not started yet: it never will be
            self._loop.call_soon_threadsafe(call.cancel)  # started: the driver call is abandoned there
            raise
        if call.error is not None:
            raise call.error
        return cast(_T, call.result)

    def _start(self, call: _HostCall) -> None:
        """Start ``call`` as a task on the asyncio loop (in the doorbell's callback there).

        The task runs in an empty context, not a copy of the trio task's: a copy would carry the
        marker that tells sniffio (and so anyio) "trio", and anyio code in the driver's call (a
        cancel scope) would then act as if it were running under trio.
        """
        if call.abandoned:
            return
        call.task = self._loop.create_task(_awaited(call.function, *call.args), context=contextvars.Context())
        call.task.add_done_callback(lambda task: self._finished(call, task))

    def _finished(self, call: _HostCall, task: asyncio.Task[Any]) -> None:
        if call.abandoned:
            return
        if task.cancelled():
            call.error = RuntimeError("the asyncio host stopped before the call finished")
        elif (error := task.exception()) is not None:
            call.error = error
        else:
            call.result = task.result()
        self._answers.ring(call)

    async def stop(self) -> None:
        """Stop the loop (cancelling what still runs on it) and wait for its thread to end."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        await anyio.to_thread.run_sync(self._thread.join)


class _HostCall:
    """One backend call crossing to the asyncio thread and its answer crossing back."""

    __slots__ = ("abandoned", "args", "arrived", "error", "function", "result", "task")

    def __init__(self, function: Callable[..., Awaitable[Any]], args: tuple[Any, ...], arrived: AwaitedEvent) -> None:
        self.function = function
        self.args = args
        self.arrived = arrived
        self.result: Any = None
        self.error: BaseException | None = None
        self.task: asyncio.Task[Any] | None = None
        self.abandoned = False
        """Set by a caller that stopped waiting (from its trio thread)."""

    def cancel(self) -> None:
        """Cancel the call's task, if it started (on the asyncio loop)."""
        if self.task is not None:
            self.task.cancel()


def _wake(call: _HostCall) -> None:
    call.arrived.set()


async def _awaited(function: Callable[..., Awaitable[_T]], *args: Any) -> _T:
    return await function(*args)


def _trio_token() -> Any:
    """Return the running trio loop's token: the way to wake one of its tasks from another thread."""
    import trio  # only ever needed under trio

    return trio.lowlevel.current_trio_token()


class HostedBackend(Backend):
    """``backend``, with every call made on an :class:`AsyncioThread`'s loop."""

    def __init__(self, backend: Backend, host: AsyncioThread) -> None:
        self.inner = backend
        self.name = backend.name
        self.capabilities = backend.capabilities
        self._call = host.call

    @property
    def kind(self) -> str:
        """The hosted backend's kind, and where it runs."""
        return f"{self.inner.kind} on an asyncio thread"

    async def open(self) -> None:
        """Open the backend on the asyncio loop, so its connections belong to that loop."""
        await self._call(self.inner.open)

    async def close(self) -> None:
        """Close the backend on the asyncio loop."""
        await self._call(self.inner.close)

    async def shutdown(self) -> None:
        """Shut the backend down on the asyncio loop."""
        await self._call(self.inner.shutdown)

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        """Forward the batch."""
        return await self._call(self.inner.get_many, collection, keys)

    async def put_many(
        self, collection: str, keys: Sequence[str], entries: Sequence[bytes], expires_at: Sequence[float | None]
    ) -> None:
        """Forward the batch."""
        await self._call(self.inner.put_many, collection, keys, entries, expires_at)

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Forward the batch."""
        return await self._call(self.inner.delete_many, collection, keys)

    async def cull(self, budget: int) -> tuple[int, bool]:
        """Forward the step."""
        return await self._call(self.inner.cull, budget)

    async def keys(self, collection: str, limit: int | None) -> list[str]:
        """Forward the scan."""
        return await self._call(self.inner.keys, collection, limit)

    async def collections(self, limit: int | None) -> list[str]:
        """Forward the scan."""
        return await self._call(self.inner.collections, limit)

    async def destroy(self) -> bool:
        """Forward the call."""
        return await self._call(self.inner.destroy)

    async def destroy_collection(self, collection: str) -> bool:
        """Forward the call."""
        return await self._call(self.inner.destroy_collection, collection)

    def is_transient(self, error: BaseException) -> bool:
        """Ask the backend: its driver's exceptions come back as they were raised."""
        return self.inner.is_transient(error)

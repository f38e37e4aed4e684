"""Where a backend's calls run: on the app's event loop, or on an asyncio loop in a thread.

Drivers such as redis-py's asyncio client run only on asyncio. Under trio, a runtime starts one
asyncio event loop in a thread of its own, opens such backends there (so their connection pools
belong to that loop), and sends each backend call across whole: a merged batch crosses once, and
its answer comes back by waking the waiting trio task, never by blocking either loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio

from kvrt.backends.base import Backend

_T = TypeVar("_T")


def needs_host(backend: Backend) -> bool:
    """Say whether ``backend`` cannot run on the current event loop and needs an asyncio thread."""
    return backend.asyncio_only and not running_asyncio()


def running_asyncio() -> bool:
    """Whether the event loop running this task is asyncio's (anyio's cancellation class says which)."""
    return anyio.get_cancelled_exc_class() is asyncio.CancelledError


class AsyncioThread:
    """An asyncio event loop running in a daemon thread, for one runtime's asyncio-only backends."""

    def __init__(self) -> None:
        self._token = _trio_token()  # made under the runtime's trio loop, which every call comes from
        self._loop = asyncio.new_event_loop()
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
        """Run ``function(*args)`` on the asyncio loop; wait for it here without blocking this loop.

        The asyncio task starts from an empty context, not a copy of this trio task's: a copy
        would carry the marker that tells sniffio (and so anyio) "trio", and anyio code in the
        driver's call (a cancel scope) would then act as if it were running under trio.
        """
        start = contextvars.Context().run  # the task created inside copies this empty context
        future = start(asyncio.run_coroutine_threadsafe, _awaited(function, *args), self._loop)
        done = anyio.Event()
        wake = self._token.run_sync_soon
        future.add_done_callback(lambda _: wake(done.set))
        try:
            await done.wait()
        except BaseException:
            future.cancel()  # cancels the asyncio task too: the driver call is abandoned there
            raise
        return future.result()

    async def stop(self) -> None:
        """Stop the loop (cancelling what still runs on it) and wait for its thread to end."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        await anyio.to_thread.run_sync(self._thread.join)


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

"""The runtime: the task group that owns every worker's supervisor and cull schedule.

::

    async with kvrt.Runtime() as rt:
        cache = await rt.spawn(MemoryBackend(), name="cache")
        await cache.put("k", {"v": 1}, ttl=60)

The same code runs under asyncio and trio. Leaving the block (normally, by an exception, or by
cancellation) stops taking requests, lets each worker drain what is already queued (within
``shutdown_grace`` seconds), then cancels the rest, whose callers get
:class:`~kvrt.errors.RuntimeClosedError`, and closes each backend (waiting at most
``shutdown_grace`` seconds for it). A write that was acknowledged has reached its backend, so
shutdown never loses one. An exception raised in the block comes out as itself.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

import anyio
from anyio.abc import TaskGroup

from kvrt.backends.base import Backend
from kvrt.entry import DEFAULT_COLLECTION, collection_name
from kvrt.errors import RuntimeClosedError, StoreSetupError
from kvrt.handle import Handle, handle_class
from kvrt.policies import CullPolicy, MailboxPolicy, RestartPolicy
from kvrt.stats import WorkerStats
from kvrt.supervisor import Supervisor
from kvrt.worker import Worker


class Runtime:
    """Owns supervised backend workers and hands out client handles to them.

    The policies given here are the defaults for every worker; :meth:`spawn` can override them.
    """

    def __init__(
        self,
        *,
        mailbox: MailboxPolicy | None = None,
        restart: RestartPolicy | None = None,
        cull: CullPolicy | None = None,
        shutdown_grace: float = 5.0,
    ) -> None:
        self.mailbox = mailbox or MailboxPolicy()
        self.restart = restart or RestartPolicy()
        self.cull = cull or CullPolicy()
        self.shutdown_grace = shutdown_grace
        self._workers: dict[str, Worker] = {}
        self._handles: dict[str, Handle] = {}
        self._opening: set[str] = set()
        self._task_group: TaskGroup | None = None
        self._new_event: type[anyio.Event] = anyio.Event
        self._closed = False

    async def __aenter__(self) -> Self:
        if self._task_group is not None or self._closed:
            raise RuntimeError("a Runtime can be entered only once")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        # anyio.Event() looks up the running event loop library on every call; the class it
        # returns is fixed for this runtime's life, and a handle makes one event per request.
        self._new_event = type(anyio.Event())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        task_group = self._task_group
        if task_group is None:
            return None
        self._closed = True
        workers = list(self._workers.values())
        for worker in workers:
            worker.send_stream.close()
        try:
            # Shielded: queued requests get their grace period even when the block was cancelled.
            with anyio.move_on_after(self.shutdown_grace, shield=True):
                for worker in workers:
                    await worker.stopped.wait()
        finally:
            task_group.cancel_scope.cancel()  # workers past the grace period, and the cull schedules
            # The body's own exception, if any, propagates as itself, not wrapped in a group.
            await task_group.__aexit__(None, None, None)
        return None

    async def spawn(
        self,
        backend: Backend,
        *,
        name: str | None = None,
        default_collection: str | None = None,
        request_timeout: float | None = None,
        mailbox: MailboxPolicy | None = None,
        restart: RestartPolicy | None = None,
        cull: CullPolicy | None = None,
    ) -> Handle:
        """Open ``backend``, start a supervised worker for it, and return a handle to it.

        ``name`` defaults to the backend's own (``"memory"``, ...) and must be unique in this runtime.
        Raises :class:`~kvrt.errors.StoreSetupError` if the backend cannot be opened.
        """
        task_group = self._running()
        name = backend.name if name is None else name
        if name in self._workers or name in self._opening:
            raise ValueError(f"this runtime already has a worker named {name!r}")
        default = collection_name(default_collection, DEFAULT_COLLECTION)
        self._opening.add(name)
        try:
            await backend.open()
        except Exception as exc:
            raise StoreSetupError(f"Could not open the backend: {type(exc).__name__}", backend=name) from exc
        finally:
            self._opening.discard(name)
        if self._closed:
            with anyio.CancelScope(shield=True):
                await backend.close()
            raise RuntimeClosedError("The runtime closed while the backend was opening.", backend=name)
        worker = Worker(
            name,
            backend,
            mailbox=mailbox or self.mailbox,
            restart=restart or self.restart,
            cull=cull or self.cull,
        )
        self._workers[name] = worker
        supervisor = Supervisor(worker, restart or self.restart, close_timeout=self.shutdown_grace)
        task_group.start_soon(supervisor.run, name=f"kvrt worker {name}")
        capabilities = backend.capabilities
        if capabilities.cull and not capabilities.native_ttl:
            task_group.start_soon(self._cull_schedule, worker, cull or self.cull, name=f"kvrt cull {name}")
        handle = handle_class(capabilities)(
            worker, new_event=self._new_event, default_collection=default, request_timeout=request_timeout
        )
        self._handles[name] = handle
        return handle

    def handle(self, name: str) -> Handle:
        """Return the handle of the worker called ``name``."""
        self._running()
        try:
            return self._handles[name]
        except KeyError:
            raise LookupError(f"this runtime has no worker named {name!r}") from None

    def stats(self) -> dict[str, WorkerStats]:
        """Return a snapshot of every worker, by name."""
        return {name: worker.snapshot() for name, worker in self._workers.items()}

    def _running(self) -> TaskGroup:
        if self._closed:
            raise RuntimeClosedError("The runtime is closed.")
        if self._task_group is None:
            raise RuntimeError("use the Runtime in an 'async with' block")
        return self._task_group

    @staticmethod
    async def _cull_schedule(worker: Worker, policy: CullPolicy) -> None:
        """Tell ``worker`` to cull every ``policy.interval`` seconds, for as long as it runs."""
        while True:
            await anyio.sleep(policy.interval)
            worker.request_cull()

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
shutdown never loses one. An exception raised in the block comes out as itself; a critical worker
that gave up comes out as :class:`~kvrt.errors.BackendUnavailableError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Self, Unpack, overload

import anyio
from anyio.abc import TaskGroup

from kvrt.backends.base import Backend
from kvrt.entry import DEFAULT_COLLECTION, check_seed, collection_name
from kvrt.errors import KeyValueError, RuntimeClosedError, StoreSetupError
from kvrt.handle import AttachedFullHandle, AttachedHandle, AttachedListingHandle, Handle, handle_class
from kvrt.hosts import AsyncioThread, HostedBackend, needs_host
from kvrt.inflight import DEFAULT_MAX_IN_FLIGHT, InflightLimit
from kvrt.policies import (
    CircuitPolicy,
    CullPolicy,
    FallbackPolicy,
    MailboxPolicy,
    RestartPolicy,
    RuntimePolicies,
    Seed,
    SpawnOptions,
    Strategy,
)
from kvrt.stats import RuntimeStats, WorkerStats
from kvrt.stats_server import StatsAddress, StatsServer, parse_stats_address
from kvrt.supervisor import Supervisor
from kvrt.wakeups import AwaitedEvent, reply_events
from kvrt.worker import Worker

if TYPE_CHECKING:
    from typing import TypeAlias

    from kvrt.backends.chdb import ChDBBackend
    from kvrt.backends.disk import DiskBackend
    from kvrt.backends.duckdb import DuckDBBackend
    from kvrt.backends.filetree import FileTreeBackend
    from kvrt.backends.memory import MemoryBackend
    from kvrt.backends.redis import RedisBackend
    from kvrt.backends.rocksdb import RocksDBBackend
    from kvrt.backends.simple import SimpleBackend
    from kvrt.detached import DetachedRuntime

    FullBackend: TypeAlias = (
        MemoryBackend | DiskBackend | SimpleBackend | DuckDBBackend | RocksDBBackend | FileTreeBackend | ChDBBackend
    )
    """The backends with every optional segment: a handle on one is typed with all of them."""


class Runtime:
    """Owns supervised backend workers and hands out client handles to them.

    The policies given here are the defaults for every worker; :meth:`spawn` can override them.
    ``max_in_flight`` caps the requests sent and not yet answered across all workers: a caller past
    it waits its turn (within its request timeout). ``stats_address`` (a Unix socket path, or a
    loopback ``host:port``) serves :meth:`stats` snapshots there while the runtime runs, for
    ``kvrt top`` (:mod:`kvrt.stats_server`); off by default.
    """

    def __init__(
        self,
        *,
        mailbox: MailboxPolicy | None = None,
        restart: RestartPolicy | None = None,
        cull: CullPolicy | None = None,
        circuit: CircuitPolicy | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        shutdown_grace: float = 5.0,
        stats_address: str | None = None,
    ) -> None:
        self.mailbox = mailbox or MailboxPolicy()
        self.restart = restart or RestartPolicy()
        self.cull = cull or CullPolicy()
        self.circuit = circuit or CircuitPolicy()
        self.shutdown_grace = shutdown_grace
        self._limit = InflightLimit(max_in_flight)
        self._workers: dict[str, Worker] = {}
        self._handles: dict[str, Handle] = {}
        self._supervisors: dict[str, Supervisor] = {}
        """Each worker's supervisor, by the worker's name."""
        self._opening: set[str] = set()
        self._task_group: TaskGroup | None = None
        self._new_event: Callable[[], AwaitedEvent] = anyio.Event
        self._asyncio_host: AsyncioThread | None = None
        self._closed = False
        self._stats_address: StatsAddress | None = None
        if stats_address is not None:
            self._stats_address = parse_stats_address(stats_address)  # a non-loopback host is refused here
        self._stats_server: StatsServer | None = None

    @property
    def stats_address(self) -> str | None:
        """Where this runtime serves its stats, if it does: with the port the system chose, for ``host:0``."""
        server = self._stats_server
        address = server.address if server is not None else self._stats_address
        return None if address is None else str(address)

    @staticmethod
    def detached(**policies: Unpack[RuntimePolicies]) -> DetachedRuntime:
        """Return a runtime of your own on a thread of its own: ``rt.open(...)``, ``rt.stats()``, ``rt.close()``."""
        from kvrt.detached import DetachedRuntime

        return DetachedRuntime(**policies)

    async def __aenter__(self) -> Self:
        if self._task_group is not None or self._closed:
            raise RuntimeError("a Runtime can be entered only once")
        if self._stats_address is not None:  # bound first: an address in use fails the entry, leaving nothing
            self._stats_server = await StatsServer.bind(self._stats_address, self)
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        self._new_event = reply_events()  # fixed for the runtime's life: one event per request
        if self._stats_server is not None:
            task_group.start_soon(self._stats_server.serve, name="kvrt stats server")
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
            worker.stop_intake()
        # The body's own exception propagates as itself; only a cancellation goes to the task group,
        # which needs to see it to account for its own cancel scope.
        cancelled = exc if isinstance(exc, anyio.get_cancelled_exc_class()) else None
        try:
            # Shielded: queued requests get their grace period even when the block was cancelled.
            with anyio.move_on_after(self.shutdown_grace, shield=True):
                for worker in workers:
                    await worker.stopped.wait()
        finally:
            task_group.cancel_scope.cancel()  # workers past the grace period, and the cull schedules
            try:
                await task_group.__aexit__(type(cancelled) if cancelled else None, cancelled, traceback)
            except BaseExceptionGroup as group:
                failures = group.exceptions
                if len(failures) == 1 and isinstance(failures[0], KeyValueError):
                    raise failures[0] from None  # a critical backend gave up
                raise
            finally:
                with anyio.CancelScope(shield=True):
                    if self._stats_server is not None:
                        await self._stats_server.aclose()
                    if self._asyncio_host is not None:
                        await self._asyncio_host.stop()
        return None

    @overload
    async def spawn(self, backend: FullBackend, **options: Unpack[SpawnOptions]) -> AttachedFullHandle: ...
    @overload
    async def spawn(self, backend: RedisBackend, **options: Unpack[SpawnOptions]) -> AttachedListingHandle: ...
    @overload
    async def spawn(self, backend: Backend, **options: Unpack[SpawnOptions]) -> Handle: ...
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
        circuit: CircuitPolicy | None = None,
        fallback: Handle | FallbackPolicy | None = None,
        critical: bool = False,
        seed: Seed | None = None,
    ) -> Handle:
        """Open ``backend``, start a supervised worker for it, and return a handle to it.

        ``name`` defaults to the backend's own (``"memory"``, ...) and must be unique in this runtime.
        ``fallback`` serves reads (and writes, with ``FallbackPolicy(handle, writes=True)``) while
        this worker's circuit is open. ``critical=True`` fails the whole runtime if the worker's
        supervisor gives up. ``seed`` (``{collection: {key: value}}``) is written, without expiry,
        before the handle is returned, as the reference's stores write theirs at setup. Raises
        :class:`~kvrt.errors.StoreSetupError` if the backend cannot be opened.
        """
        seeded = check_seed(seed)
        handles = await self.spawn_group(
            {backend.name if name is None else name: backend},
            default_collection=default_collection,
            request_timeout=request_timeout,
            mailbox=mailbox,
            restart=restart,
            cull=cull,
            circuit=circuit,
            fallback=fallback,
            critical=critical,
        )
        handle = next(iter(handles.values()))
        for collection, keys, values in seeded:
            await handle.put_many(keys, values, collection=collection)
        return handle

    async def spawn_group(
        self,
        backends: Mapping[str, Backend],
        *,
        strategy: Strategy = "one_for_one",
        default_collection: str | None = None,
        request_timeout: float | None = None,
        mailbox: MailboxPolicy | None = None,
        restart: RestartPolicy | None = None,
        cull: CullPolicy | None = None,
        circuit: CircuitPolicy | None = None,
        fallback: Handle | FallbackPolicy | None = None,
        critical: bool = False,
    ) -> dict[str, Handle]:
        """Spawn workers, by name, under one supervisor: one restart intensity, and ``strategy`` on a crash.

        ``one_for_one`` restarts the crashed worker alone, ``one_for_all`` every worker of the group,
        ``rest_for_one`` the crashed one and those after it in ``backends``' order.
        """
        task_group = self._running()
        for name in backends:
            if name in self._workers or name in self._opening:
                raise ValueError(f"this runtime already has a worker named {name!r}")
        default = collection_name(default_collection, DEFAULT_COLLECTION)
        restart = restart or self.restart
        backends = {name: self._hosted(backend) for name, backend in backends.items()}
        opened: list[Backend] = []
        self._opening.update(backends)
        try:
            for name, backend in backends.items():
                try:
                    await backend.open()
                except StoreSetupError as exc:  # the backend's own words: a missing bucket, a refused login
                    raise StoreSetupError(f"Could not open the backend: {exc.reason}", backend=name) from exc
                except Exception as exc:
                    raise StoreSetupError(f"Could not open the backend: {type(exc).__name__}", backend=name) from exc
                opened.append(backend)
        except BaseException:
            await self._close_quietly(opened)
            raise
        finally:
            self._opening.difference_update(backends)
        if self._closed:
            await self._close_quietly(opened)
            raise RuntimeClosedError("The runtime closed while the backends were opening.")
        cull = cull or self.cull
        workers = [
            Worker(
                name,
                backend,
                mailbox=mailbox or self.mailbox,
                restart=restart,
                cull=cull,
                circuit=circuit or self.circuit,
            )
            for name, backend in backends.items()
        ]
        supervisor = Supervisor(
            workers, restart, strategy=strategy, close_timeout=self.shutdown_grace, critical=critical
        )
        task_group.start_soon(supervisor.run, name=f"kvrt supervisor {', '.join(backends)}")
        policy = fallback if isinstance(fallback, FallbackPolicy) else FallbackPolicy(fallback)
        handles: dict[str, Handle] = {}
        for worker in workers:
            self._workers[worker.name] = worker
            self._supervisors[worker.name] = supervisor
            capabilities = worker.backend.capabilities
            if capabilities.cull and not capabilities.native_ttl:
                task_group.start_soon(self._cull_schedule, worker, cull, name=f"kvrt cull {worker.name}")
            handles[worker.name] = self._handles[worker.name] = handle_class(capabilities, AttachedHandle)(
                worker,
                new_event=self._new_event,
                default_collection=default,
                limit=self._limit,
                request_timeout=request_timeout,
                fallback=policy.handle,
                fallback_writes=policy.writes,
            )
        return handles

    def handle(self, name: str) -> Handle:
        """Return the handle of the worker called ``name``."""
        self._running()
        try:
            return self._handles[name]
        except KeyError:
            raise LookupError(f"this runtime has no worker named {name!r}") from None

    async def close_worker(self, name: str) -> None:
        """Stop the worker called ``name``: it serves what is queued (within the shutdown grace), then closes.

        A worker still serving when the grace is up is cancelled there, as at the runtime's exit. Its
        handles then raise :class:`~kvrt.errors.RuntimeClosedError`; the name may be spawned again.
        """
        self._running()
        try:
            worker = self._workers[name]
        except KeyError:
            raise LookupError(f"this runtime has no worker named {name!r}") from None
        worker.stop_intake()
        with anyio.move_on_after(self.shutdown_grace, shield=True):
            await worker.stopped.wait()
        if not worker.stopped.is_set():  # past the grace: what it still serves is cut off, as at runtime exit
            self._supervisors[name].cancel(name)
            with anyio.CancelScope(shield=True):
                await worker.stopped.wait()
        del self._workers[name], self._handles[name], self._supervisors[name]

    def stats(self) -> dict[str, WorkerStats]:
        """Return a snapshot of every worker, by name."""
        return {name: worker.snapshot() for name, worker in tuple(self._workers.items())}  # safe from another thread

    def runtime_stats(self) -> RuntimeStats:
        """Return the runtime-wide numbers: requests in flight now, the most ever, and the cap."""
        limit = self._limit
        return RuntimeStats(in_flight=limit.used, peak_in_flight=limit.peak, max_in_flight=limit.cap)

    def _hosted(self, backend: Backend) -> Backend:
        """``backend``, or, for an asyncio-only driver under trio, the same on this runtime's asyncio thread."""
        if not needs_host(backend):
            return backend
        if self._asyncio_host is None:
            self._asyncio_host = AsyncioThread()
        return HostedBackend(backend, self._asyncio_host)

    def _running(self) -> TaskGroup:
        if self._closed:
            raise RuntimeClosedError("The runtime is closed.")
        if self._task_group is None:
            raise RuntimeError("use the Runtime in an 'async with' block")
        return self._task_group

    @staticmethod
    async def _close_quietly(backends: list[Backend]) -> None:
        with anyio.CancelScope(shield=True):
            for backend in backends:
                with contextlib.suppress(Exception):  # the open failure is the error worth reporting
                    await backend.close()

    @staticmethod
    async def _cull_schedule(worker: Worker, policy: CullPolicy) -> None:
        """Tell ``worker`` to cull every ``policy.interval`` seconds, for as long as it runs."""
        while not worker.stopped.is_set():
            await anyio.sleep(policy.interval)
            worker.request_cull()

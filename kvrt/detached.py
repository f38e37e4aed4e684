"""The detached runtime: workers on an event loop in a thread of their own, handles usable from anywhere.

``kvrt.open(backend_or_url)`` makes a handle with no event loop running (at import time, in a
framework's constructor). Its worker runs under the same supervisors as an attached runtime's,
on an asyncio loop in a thread the detached runtime owns, started on first use. The handle can be
called from any asyncio loop, any trio run, successive loops and several threads at once: a call
encodes its frame in the caller's task, rings the runtime's doorbell (one wake-up of the runtime
loop for all the requests that arrive before it runs), and waits on an event of its own loop,
which the worker's round of replies wakes once (:mod:`kvrt.crossing`).

At interpreter exit the default detached runtime drains its mailboxes and closes its backends
within its shutdown grace, so an acknowledged write is never lost and no thread is left behind.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, Unpack, overload

import anyio
from anyio.abc import TaskGroup

from kvrt.backends.base import Backend
from kvrt.crossing import Doorbell, RemoteSlot, caller_doorbell
from kvrt.entry import DEFAULT_COLLECTION, check_seed, collection_name
from kvrt.errors import DeadlineExceededError, KeyValueError, RuntimeClosedError, StoreSetupError
from kvrt.frames import AnyRequest
from kvrt.handle import (
    AttachedHandle,
    CollectionsSegment,
    CullSegment,
    DestroyCollectionSegment,
    DestroySegment,
    Handle,
    KeysSegment,
    handle_class,
    named_composition,
)
from kvrt.inflight import DEFAULT_MAX_IN_FLIGHT
from kvrt.policies import RuntimePolicies, SpawnOptions
from kvrt.runtime import Runtime
from kvrt.stats import RuntimeStats, WorkerStats
from kvrt.stats_server import parse_stats_address

if TYPE_CHECKING:
    from kvrt.backends.redis import RedisBackend
    from kvrt.runtime import FullBackend

_T = TypeVar("_T")
_Crossing = tuple["_Remote", bytes, RemoteSlot]


class DetachedRuntime:
    """A :class:`~kvrt.Runtime` running on an asyncio loop in a thread it owns, started on first use.

    Takes the same policies as ``Runtime(...)``. :meth:`open` makes handles; :meth:`close` (or
    leaving ``with``) drains every worker, closes the backends and ends the thread. A
    ``stats_address`` is served from when the thread starts (on first use) until it ends.
    """

    def __init__(self, **policies: Unpack[RuntimePolicies]) -> None:
        address = policies.get("stats_address")
        if address is not None:
            parse_stats_address(address)  # refused here, at the call, not when the thread starts
        self._policies = policies
        self.shutdown_grace = policies.get("shutdown_grace", 5.0)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._token: Any = None
        self._runtime: Runtime | None = None
        self._task_group: TaskGroup | None = None
        self._inbox: Doorbell[_Crossing] | None = None
        self._stop: anyio.Event | None = None
        self._deferred: deque[tuple[Callable[..., Coroutine[Any, Any, Any]], tuple[Any, ...]]] = deque()
        self._wake_deferred = asyncio.Event()
        self._names: set[str] = set()
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._thread is not None else "not started"
        return f"<DetachedRuntime {state}, {len(self._names)} handles>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @overload
    def open(self, target: FullBackend, **options: Unpack[SpawnOptions]) -> DetachedFullHandle: ...
    @overload
    def open(self, target: RedisBackend, **options: Unpack[SpawnOptions]) -> DetachedListingHandle: ...
    @overload
    def open(self, target: Backend | str, **options: Unpack[SpawnOptions]) -> DetachedHandle: ...
    def open(self, target: Backend | str, **options: Unpack[SpawnOptions]) -> DetachedHandle:
        """Return a handle on ``target`` (a backend, or a URL naming one), served by this runtime.

        ``spawn_options`` are :meth:`Runtime.spawn`'s (``name``, ``request_timeout``, policies, ...); a
        URL's query may give the plain ones. Nothing is opened yet: the worker is spawned, and the
        backend opened, when the handle is first used (a backend that cannot be opened then fails
        that call with :class:`~kvrt.errors.StoreSetupError`, and the next call tries again).
        """
        spawn_options: dict[str, Any] = dict(options)
        if isinstance(target, str):
            from kvrt.urls import parse_url

            backend, from_url = parse_url(target)
            spawn_options = {**from_url, **spawn_options}
        elif isinstance(target, Backend):
            backend = target
        else:
            raise TypeError(f"kvrt.open takes a Backend or a URL, not {type(target).__name__}")
        name = spawn_options.pop("name", None) or backend.name
        with self._lock:
            if self._closed:
                raise RuntimeClosedError("The detached runtime is closed.", backend=name)
            if name in self._names:
                raise ValueError(f"this runtime already has a worker named {name!r}")
            self._names.add(name)
        default = collection_name(spawn_options.get("default_collection"), DEFAULT_COLLECTION)
        check_seed(spawn_options.get("seed"))  # refused here, at the call, not when the worker spawns
        timeout = spawn_options.pop("request_timeout", None)
        remote = _Remote(self, backend, name, spawn_options)
        handle_type = handle_class(backend.capabilities, DetachedHandle)
        return handle_type(remote, default_collection=default, request_timeout=timeout)

    @property
    def stats_address(self) -> str | None:
        """Where this runtime serves its stats, if it does: once started, with the port chosen for ``host:0``."""
        runtime = self._runtime
        return runtime.stats_address if runtime is not None else self._policies.get("stats_address")

    def stats(self) -> dict[str, WorkerStats]:
        """Return a snapshot of every worker that has been spawned, by name."""
        runtime = self._runtime
        return {} if runtime is None else runtime.stats()

    def runtime_stats(self) -> RuntimeStats:
        """Return the runtime-wide numbers (in flight now, the most ever, the cap), as ``Runtime.runtime_stats``."""
        runtime = self._runtime
        if runtime is None:
            cap = self._policies.get("max_in_flight", DEFAULT_MAX_IN_FLIGHT)
            return RuntimeStats(in_flight=0, peak_in_flight=0, max_in_flight=cap)
        return runtime.runtime_stats()

    def close(self) -> None:
        """Drain every worker, close its backend, and end the thread (within the shutdown grace); idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread, token = self._thread, self._token
        if thread is None:
            return
        anyio.from_thread.run_sync(self._stop_soon, token=token)
        thread.join(self.shutdown_grace * 2 + 5)

    async def aclose(self) -> None:
        """:meth:`close`, awaited from an event loop without blocking it."""
        await anyio.to_thread.run_sync(self.close)

    def _stop_soon(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def _started(self) -> Doorbell[_Crossing]:
        """Return the runtime's doorbell, starting its thread on first use."""
        inbox = self._inbox
        if inbox is not None:
            return inbox
        with self._lock:
            if self._closed:
                raise RuntimeClosedError("The detached runtime is closed.")
            if self._inbox is None:
                ready = threading.Event()
                failure: list[BaseException] = []
                thread = threading.Thread(
                    target=self._run, args=(ready, failure), name="kvrt detached runtime", daemon=True
                )
                thread.start()
                ready.wait()
                if failure:
                    raise RuntimeError("the detached runtime could not start") from failure[0]
                self._thread = thread
            assert self._inbox is not None
            return self._inbox

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            anyio.run(self._main, ready, backend="asyncio")
        except BaseException as exc:
            failure.append(exc)
        finally:
            ready.set()
            if self._inbox is not None:  # requests that crossed as the runtime closed, or that cross later
                self._inbox.close(_refuse)

    async def _main(self, ready: threading.Event) -> None:
        async with Runtime(**self._policies) as runtime, anyio.create_task_group() as tasks:
            self._runtime, self._task_group = runtime, tasks
            self._stop = anyio.Event()
            self._token = anyio.lowlevel.current_token()
            loop: asyncio.AbstractEventLoop = self._token.native_token  # the runtime's loop is asyncio's
            self._inbox = Doorbell(loop.call_soon_threadsafe, self._route)
            tasks.start_soon(self._start_deferred)
            ready.set()
            await self._stop.wait()
            tasks.cancel_scope.cancel()  # spawns and waits still under way; the runtime then drains

    def _defer(self, function: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Start ``function(*args)`` as a task soon: routing runs in a bare callback, where no task can start."""
        self._deferred.append((function, args))
        self._wake_deferred.set()

    async def _start_deferred(self) -> None:
        """Start the tasks routing asked for (a spawn, a wait for mailbox room, a fallback call)."""
        assert self._task_group is not None
        deferred, wake, start_soon = self._deferred, self._wake_deferred, self._task_group.start_soon
        while True:
            await wake.wait()
            wake.clear()
            while deferred:
                function, args = deferred.popleft()
                start_soon(function, *args)

    def _route(self, crossing: _Crossing) -> None:
        """Hand a request that crossed over to its worker (on the runtime's loop, in a bare callback)."""
        remote, frame, slot = crossing
        if slot.withdrawn:
            return
        attached = remote.attached
        if attached is not None:
            attached._accept(frame, slot, self._defer)
            return
        remote.waiting.append((frame, slot))
        if not remote.spawning:
            remote.spawning = True
            self._defer(self._spawn, remote)

    async def _spawn(self, remote: _Remote) -> None:
        """Spawn ``remote``'s worker, then hand it the requests that waited for it."""
        assert self._runtime is not None
        assert self._task_group is not None
        try:
            handle = await self._runtime.spawn(remote.backend, name=remote.name, **remote.options)
        except (KeyValueError, ValueError) as exc:
            waiting, remote.waiting = remote.waiting, []
            remote.spawning = False
            for _, slot in waiting:
                slot.fail(_copy_error(exc, remote.name))
            return
        assert isinstance(handle, AttachedHandle)
        remote.attached = handle
        remote.spawning = False
        waiting, remote.waiting = remote.waiting, []
        for frame, slot in waiting:
            if not slot.withdrawn:
                handle._accept(frame, slot, self._defer)

    def call(self, function: Callable[[], Awaitable[_T]]) -> Future[_T]:
        """Run ``function()`` on the runtime's loop; return a future of its result (for lifecycle calls)."""
        self._started()
        future: Future[_T] = Future()

        async def run() -> None:
            try:
                future.set_result(await function())
            except BaseException as exc:
                future.set_exception(exc)

        def start() -> None:
            assert self._task_group is not None
            self._task_group.start_soon(run)

        anyio.from_thread.run_sync(start, token=self._token)
        return future

    async def _close_worker(self, remote: _Remote) -> None:
        runtime = self._runtime
        if remote.attached is not None and runtime is not None and not runtime._closed:
            remote.attached = None
            await runtime.close_worker(remote.name)


def _refuse(crossing: _Crossing) -> None:
    remote, _, slot = crossing
    slot.fail(RuntimeClosedError("The detached runtime is closed.", backend=remote.name))


def _copy_error(error: Exception, name: str) -> Exception:
    """Return a copy of ``error`` for one waiting caller (one raised in several tasks would share a traceback)."""
    if isinstance(error, StoreSetupError):
        copy = StoreSetupError(error.reason, backend=name)
        copy.__cause__ = error.__cause__
        return copy
    return type(error)(*error.args)


class _Remote:
    """What every handle on one detached worker shares (``with_timeout`` copies share it too)."""

    __slots__ = ("attached", "backend", "closed", "name", "options", "runtime", "spawning", "waiting")

    def __init__(self, runtime: DetachedRuntime, backend: Backend, name: str, options: Mapping[str, Any]) -> None:
        self.runtime = runtime
        self.backend = backend
        self.name = name
        self.options = dict(options)
        self.attached: AttachedHandle | None = None
        self.spawning = False
        self.waiting: list[tuple[bytes, RemoteSlot]] = []
        self.closed = False


class DetachedHandle(Handle):
    """A handle on a worker of a :class:`DetachedRuntime`: call it from any event loop or thread's loop."""

    __slots__ = ("_remote",)

    def __init__(self, remote: _Remote, *, default_collection: str, request_timeout: float | None = None) -> None:
        super().__init__(remote.name, default_collection=default_collection, request_timeout=request_timeout)
        self._remote = remote

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} on {self._remote.backend.kind}, detached>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

    def _call(self, request: AnyRequest) -> Coroutine[Any, Any, Any]:
        return self._exchange(self._frame(request), request.deadline)

    async def _exchange(self, frame: bytes, deadline: float | None) -> Any:
        """Ring the runtime's doorbell with the frame; wait on this loop for the reply."""
        remote = self._remote
        if remote.closed:
            raise RuntimeClosedError("The handle is closed.", backend=self.name)
        inbox = remote.runtime._inbox or remote.runtime._started()
        doorbell, new_event = caller_doorbell()
        arrived = new_event()
        slot = RemoteSlot(doorbell, time.perf_counter(), arrived)
        inbox.ring((remote, frame, slot))
        try:
            if deadline is None:
                await arrived.wait()
            else:
                with anyio.fail_after(max(deadline - time.monotonic(), 0.0)):
                    await arrived.wait()
        except TimeoutError:
            slot.withdrawn = True
            raise DeadlineExceededError(f"No reply within {self._timeout} s.", backend=self.name) from None
        except BaseException:
            slot.withdrawn = True  # a caller that stops waiting withdraws its request, if not yet sent
            raise
        if slot.error is not None:
            raise slot.error
        return slot.result

    def close(self) -> None:
        """Stop this handle's worker (it serves what is queued first) and close its backend; blocks."""
        remote = self._remote
        if remote.closed:
            return
        remote.closed = True
        runtime = remote.runtime
        if not runtime._closed and runtime._thread is not None:
            runtime.call(lambda: runtime._close_worker(remote)).result()
        with runtime._lock:
            runtime._names.discard(remote.name)  # the name may be opened again

    async def aclose(self) -> None:
        """:meth:`close`, awaited from an event loop without blocking it."""
        await anyio.to_thread.run_sync(self.close)


@named_composition
class DetachedFullHandle(
    DetachedHandle, CollectionsSegment, CullSegment, DestroySegment, DestroyCollectionSegment, KeysSegment
):
    """A detached handle with every optional segment (memory and disk backends)."""

    __slots__ = ()


@named_composition
class DetachedListingHandle(DetachedHandle, CollectionsSegment, DestroySegment, DestroyCollectionSegment, KeysSegment):
    """A detached handle with every segment but ``cull`` (backends with native expiry, such as Redis)."""

    __slots__ = ()


_default: DetachedRuntime | None = None
_default_lock = threading.Lock()


def default_runtime() -> DetachedRuntime:
    """Return the process's shared detached runtime, made (and set to close at exit) on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = DetachedRuntime()
            atexit.register(_default.close)
        return _default


@overload
def open(
    target: FullBackend, *, runtime: DetachedRuntime | None = None, **options: Unpack[SpawnOptions]
) -> DetachedFullHandle: ...
@overload
def open(
    target: RedisBackend, *, runtime: DetachedRuntime | None = None, **options: Unpack[SpawnOptions]
) -> DetachedListingHandle: ...
@overload
def open(
    target: Backend | str, *, runtime: DetachedRuntime | None = None, **options: Unpack[SpawnOptions]
) -> DetachedHandle: ...
def open(
    target: Backend | str, *, runtime: DetachedRuntime | None = None, **options: Unpack[SpawnOptions]
) -> DetachedHandle:
    """Return a handle on ``target`` (a backend or a URL), served by a detached runtime.

    Callable anywhere, with or without an event loop running (at import time, too). The handle works
    from any asyncio loop or trio run, one after another, and from several threads at once. It is
    served by the process's shared detached runtime unless ``runtime`` names another. Use it as
    ``async with kvrt.open(...) as handle:`` to close its worker at the end, or call
    ``handle.close()`` / ``await handle.aclose()``.
    """
    return (runtime or default_runtime()).open(target, **options)

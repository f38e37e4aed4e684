"""Blocking handles for synchronous code: scripts, Django and Flask views, notebooks.

``kvrt.sync.open(target)`` gives a handle whose eight methods (and the segments its backend
offers) are plain blocking calls, served by a detached runtime (:mod:`kvrt.detached`). It is
thread-safe: any number of threads may call one handle at once. Each call checks and encodes
exactly as an async handle does (it runs the same code), hands its frame to the runtime's loop,
and blocks its thread until the worker's reply sets the thread's event.

::

    import kvrt.sync

    cache = kvrt.sync.open("disk:///var/cache/app")
    cache.put("user:1", {"name": "Alice"}, ttl=60)
    cache.get("user:1")
"""

from __future__ import annotations

import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, Final, SupportsFloat, TypeVar, Unpack, cast

from kvrt.backends.base import Backend
from kvrt.crossing import RemoteSlot, ThreadBell
from kvrt.detached import DetachedHandle, DetachedRuntime, default_runtime
from kvrt.errors import DeadlineExceededError, RuntimeClosedError
from kvrt.handle import (
    CollectionsSegment,
    CullSegment,
    DestroyCollectionSegment,
    DestroySegment,
    Handle,
    KeysSegment,
    handle_class,
)
from kvrt.policies import SpawnOptions

_T = TypeVar("_T")
_BELL: Final = ThreadBell()


class _BlockingTransport(DetachedHandle):
    """A detached handle whose exchange blocks the calling thread instead of suspending a task."""

    __slots__ = ()

    async def _exchange(self, frame: bytes, deadline: float | None) -> Any:
        remote = self._remote
        if remote.closed:
            raise RuntimeClosedError("The handle is closed.", backend=self.name)
        inbox = remote.runtime._started()
        arrived = threading.Event()
        slot = RemoteSlot(_BELL, time.perf_counter(), arrived)
        inbox.ring((remote, frame, slot))
        try:
            answered = arrived.wait(None if deadline is None else max(deadline - time.monotonic(), 0.0))
        except BaseException:  # Ctrl-C while waiting
            slot.withdrawn = True
            raise
        if not answered:
            slot.withdrawn = True
            raise DeadlineExceededError(f"No reply within {self._timeout} s.", backend=self.name)
        if slot.error is not None:
            raise slot.error
        return slot.result


def _blocking(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run a handle method's coroutine to its end in this thread: it never suspends (see above)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("a blocking kvrt handle's call tried to suspend")


class SyncHandle:
    """The blocking face of a detached handle: the same methods, each returning its result."""

    __slots__ = ("_handle",)

    def __init__(self, handle: Handle) -> None:
        self._handle = handle

    def __repr__(self) -> str:
        return f"<SyncHandle {self._handle.name!r}>"

    def __enter__(self) -> SyncHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def name(self) -> str:
        """The worker's name."""
        return self._handle.name

    def with_timeout(self, request_timeout: float | None) -> SyncHandle:
        """Return a blocking handle on the same worker whose calls each have ``request_timeout`` seconds."""
        clone = object.__new__(type(self))
        clone._handle = self._handle.with_timeout(request_timeout)
        return clone

    def close(self) -> None:
        """Stop this handle's worker (it serves what is queued first) and close its backend."""
        handle = self._handle
        assert isinstance(handle, DetachedHandle)
        handle.close()

    def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        """Return the value stored under ``key``, or ``None`` when missing or expired."""
        return _blocking(self._handle.get(key, collection=collection))

    def get_many(self, keys: Sequence[str], *, collection: str | None = None) -> list[dict[str, Any] | None]:
        """Return the values of ``keys``, in order, ``None`` for each miss."""
        return _blocking(self._handle.get_many(keys, collection=collection))

    def ttl(self, key: str, *, collection: str | None = None) -> tuple[dict[str, Any] | None, float | None]:
        """Return ``(value, seconds_left)``: ``(value, None)`` if it never expires, ``(None, None)`` if missing."""
        return _blocking(self._handle.ttl(key, collection=collection))

    def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[tuple[dict[str, Any] | None, float | None]]:
        """Return ``(value, seconds_left)`` for each of ``keys``, in order."""
        return _blocking(self._handle.ttl_many(keys, collection=collection))

    def put(
        self, key: str, value: Mapping[str, Any], *, collection: str | None = None, ttl: SupportsFloat | None = None
    ) -> None:
        """Store ``value`` under ``key``, replacing what was there; it expires ``ttl`` seconds from now if given."""
        _blocking(self._handle.put(key, value, collection=collection, ttl=ttl))

    def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        """Store each value under its key, all with one TTL; nothing is stored if any of them is refused."""
        _blocking(self._handle.put_many(keys, values, collection=collection, ttl=ttl))

    def delete(self, key: str, *, collection: str | None = None) -> bool:
        """Remove ``key``; ``True`` if a live entry was removed."""
        return _blocking(self._handle.delete(key, collection=collection))

    def delete_many(self, keys: Sequence[str], *, collection: str | None = None) -> int:
        """Remove ``keys``; return how many live entries were removed."""
        return _blocking(self._handle.delete_many(keys, collection=collection))


class SyncKeys(SyncHandle):
    """The ``keys`` segment, blocking."""

    __slots__ = ()

    def keys(self, collection: str | None = None, *, limit: int | None = None) -> list[str]:
        """Return the live keys of ``collection``: all of them, or the first ``limit``."""
        return _blocking(cast(KeysSegment, self._handle).keys(collection, limit=limit))


class SyncCollections(SyncHandle):
    """The ``collections`` segment, blocking."""

    __slots__ = ()

    def collections(self, *, limit: int | None = None) -> list[str]:
        """Return the names of the collections that hold entries."""
        return _blocking(cast(CollectionsSegment, self._handle).collections(limit=limit))


class SyncDestroy(SyncHandle):
    """The ``destroy`` segment, blocking."""

    __slots__ = ()

    def destroy(self) -> bool:
        """Remove every entry the backend holds for kvrt; ``True`` if anything was removed."""
        return _blocking(cast(DestroySegment, self._handle).destroy())


class SyncDestroyCollection(SyncHandle):
    """The ``destroy_collection`` segment, blocking."""

    __slots__ = ()

    def destroy_collection(self, collection: str) -> bool:
        """Remove every entry of ``collection``; ``True`` if anything was removed."""
        return _blocking(cast(DestroyCollectionSegment, self._handle).destroy_collection(collection))


class SyncCull(SyncHandle):
    """The ``cull`` segment, blocking."""

    __slots__ = ()

    def cull(self) -> None:
        """Remove every expired entry now."""
        _blocking(cast(CullSegment, self._handle).cull())


_SEGMENTS: Final[dict[str, type[SyncHandle]]] = {
    "collections": SyncCollections,
    "cull": SyncCull,
    "destroy": SyncDestroy,
    "destroy_collection": SyncDestroyCollection,
    "keys": SyncKeys,
}
_classes: dict[frozenset[str], type[SyncHandle]] = {}


def _sync_class(segments: frozenset[str]) -> type[SyncHandle]:
    cls = _classes.get(segments)
    if cls is None:
        bases = tuple(_SEGMENTS[name] for name in sorted(segments)) or (SyncHandle,)
        cls = _classes[segments] = type("SyncHandle", bases, {"__slots__": (), "__doc__": SyncHandle.__doc__})
    return cls


def open(
    target: Backend | str, *, runtime: DetachedRuntime | None = None, **options: Unpack[SpawnOptions]
) -> SyncHandle:
    """Return a blocking handle on ``target`` (a backend or a URL), served by a detached runtime.

    The process's shared detached runtime serves it unless ``runtime`` names another; the options
    are :func:`kvrt.open`'s.
    """
    detached = (runtime or default_runtime()).open(target, **options)
    assert isinstance(detached, DetachedHandle)
    capabilities = detached._remote.backend.capabilities
    blocking = handle_class(capabilities, _BlockingTransport)(
        detached._remote, default_collection=detached._default_collection, request_timeout=detached._timeout
    )
    segments = frozenset(name for name in _SEGMENTS if getattr(capabilities, name))
    return _sync_class(segments)(blocking)

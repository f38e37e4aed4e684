"""The client handle: ``AsyncKeyValue`` for application code, backed by a worker actor.

A call is checked and encoded here, in the caller's task, so a bad key, value or TTL is reported at
the call and nothing reaches the mailbox. The handle then sends one frame, waits for its reply slot,
and decodes what the worker found. It never touches a driver.

A handle offers an optional segment (``keys``, ``collections``, ``destroy``, ``destroy_collection``,
``cull``) only when its backend can do it: :func:`handle_class` composes the class from the segment
classes below, so ``isinstance`` checks against the segment protocols are truthful.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Self, SupportsFloat, TypeVar, cast

import anyio

from kvrt import frames
from kvrt.circuit import CLOSED
from kvrt.entry import (
    SURROGATE_NAME,
    Entry,
    check_key,
    check_keys,
    check_limit,
    check_ttl,
    collection_name,
    decode_entry,
    encode_entry,
    encode_value,
    stamp,
)
from kvrt.errors import (
    BackendUnavailableError,
    DeadlineExceededError,
    InvalidKeyError,
    KeyValueError,
    OverloadedError,
    RuntimeClosedError,
)
from kvrt.frames import AnyRequest, Collections, Cull, Delete, Destroy, DestroyCollection, Get, Keyed, Keys, Put
from kvrt.inflight import InflightLimit
from kvrt.reply import ReplySlot
from kvrt.wakeups import AwaitedEvent

if TYPE_CHECKING:
    from kvrt.backends.base import Capabilities
    from kvrt.crossing import RemoteSlot
    from kvrt.worker import Worker


class Handle:
    """An ``AsyncKeyValue`` whose calls are served by one worker of a kvrt runtime.

    Get one from ``await runtime.spawn(backend)`` (attached: served in your own task group) or
    ``kvrt.open(backend_or_url)`` (detached: served on a thread of its own, usable from any loop).
    Handles are cheap; any number of tasks may share one. ``request_timeout`` (seconds) bounds each
    call, including any wait for room in a full mailbox: a request still queued when it passes is
    never sent to the backend, and the caller gets :class:`~kvrt.errors.DeadlineExceededError`.
    :meth:`with_timeout` gives a handle with another. While the worker's circuit is open, requests
    go to the fallback handle (reads only, unless writes were asked for too), or fail at once with
    :class:`~kvrt.errors.BackendUnavailableError`.
    """

    __slots__ = ("_default_collection", "_timeout", "name")

    def __init__(self, name: str, *, default_collection: str, request_timeout: float | None = None) -> None:
        self.name = name
        self._default_collection = default_collection
        self._timeout = _check_timeout(request_timeout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def with_timeout(self, request_timeout: float | None) -> Self:
        """Return a handle on the same worker whose calls each have ``request_timeout`` seconds (``None``: no limit)."""
        clone = object.__new__(type(self))
        for cls in type(self).__mro__:
            for name in getattr(cls, "__slots__", ()):
                setattr(clone, name, getattr(self, name))
        clone._timeout = _check_timeout(request_timeout)
        return clone

    def _call(self, request: AnyRequest) -> Coroutine[Any, Any, Any]:
        """Return the coroutine that sends ``request`` and gives its reply (or raises its error)."""
        raise NotImplementedError

    def _frame(self, request: AnyRequest) -> bytes:
        """Encode ``request``; a name UTF-8 cannot encode is refused here, before anything is sent."""
        try:
            return frames.encode(request)
        except UnicodeEncodeError:
            pass  # raised below, outside the ``except``: the driver's error holds the name
        keys = request.keys if isinstance(request, Keyed) else []
        raise InvalidKeyError(
            SURROGATE_NAME,
            backend=self.name,
            collection=getattr(request, "collection", None),
            key=keys[0] if len(keys) == 1 else None,
        )

    def _deadline(self) -> float | None:
        return None if self._timeout is None else time.monotonic() + self._timeout

    def _key(self, key: object, collection: str) -> str:
        try:
            return check_key(key)
        except KeyValueError as exc:
            exc.locate(backend=self.name, collection=collection)
            raise

    def _keys(self, keys: Sequence[str], collection: str) -> list[str]:
        try:
            return check_keys(keys)
        except KeyValueError as exc:
            exc.locate(backend=self.name, collection=collection)
            raise

    def _entries(
        self, collection: str, keys: list[str], values: Sequence[Mapping[str, Any]], ttl: SupportsFloat | None
    ) -> tuple[list[bytes], float | None]:
        """Encode the documents of a put; an error names the key whose value was refused."""
        key = keys[0] if len(keys) == 1 else None
        try:
            when = stamp(check_ttl(ttl))
            entries = []
            for key, value in zip(keys, values, strict=True):
                entries.append(encode_entry(key, collection, encode_value(value), when))
        except KeyValueError as exc:
            exc.locate(backend=self.name, collection=collection, key=key)
            raise
        return entries, when.expires_epoch

    def _read(self, found: bytes | str | None, collection: str, key: str, now: float) -> Entry | None:
        """Decode a found document; ``None`` when missing or expired, whatever the backend thought."""
        if found is None:
            return None
        entry = decode_entry(found, backend=self.name, collection=collection, key=key)
        expires = entry[1]
        if expires is not None and expires <= now:
            return None
        return entry

    async def _lookup(self, keys: list[str], collection: str) -> tuple[list[Entry | None], float]:
        """Read ``keys`` and decode what was found; return the entries and the time they were judged at."""
        found = await self._call(Get(self._deadline(), collection, keys))
        now = time.time()
        return [self._read(document, collection, key, now) for key, document in zip(keys, found, strict=True)], now

    async def _lookup_one(self, key: str, collection: str) -> tuple[Entry | None, float]:
        """:meth:`_lookup` of one key, without the list work (the hottest path there is)."""
        (found,) = await self._call(Get(self._deadline(), collection, [key]))
        now = time.time()
        return self._read(found, collection, key, now), now

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        """Return the value stored under ``key``, or ``None`` when missing or expired."""
        collection = collection_name(collection, self._default_collection)
        entry, _ = await self._lookup_one(self._key(key, collection), collection)
        return None if entry is None else entry[0]

    async def get_many(self, keys: Sequence[str], *, collection: str | None = None) -> list[dict[str, Any] | None]:
        """Return the values of ``keys``, in order, ``None`` for each miss."""
        collection = collection_name(collection, self._default_collection)
        checked = self._keys(keys, collection)
        if not checked:
            return []
        entries, _ = await self._lookup(checked, collection)
        return [None if entry is None else entry[0] for entry in entries]

    async def ttl(self, key: str, *, collection: str | None = None) -> tuple[dict[str, Any] | None, float | None]:
        """Return ``(value, seconds_left)``: ``(value, None)`` if it never expires, ``(None, None)`` if missing."""
        collection = collection_name(collection, self._default_collection)
        entry, now = await self._lookup_one(self._key(key, collection), collection)
        return _with_ttl(entry, now)

    async def ttl_many(
        self, keys: Sequence[str], *, collection: str | None = None
    ) -> list[tuple[dict[str, Any] | None, float | None]]:
        """Return ``(value, seconds_left)`` for each of ``keys``, in order."""
        collection = collection_name(collection, self._default_collection)
        checked = self._keys(keys, collection)
        if not checked:
            return []
        entries, now = await self._lookup(checked, collection)
        return [_with_ttl(entry, now) for entry in entries]

    async def put(
        self,
        key: str,
        value: Mapping[str, Any],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        """Store ``value`` under ``key``, replacing what was there; it expires ``ttl`` seconds from now if given."""
        collection = collection_name(collection, self._default_collection)
        key = self._key(key, collection)
        entries, expires_at = self._entries(collection, [key], [value], ttl)
        await self._call(Put(self._deadline(), collection, [key], entries, expires_at))

    async def put_many(
        self,
        keys: Sequence[str],
        values: Sequence[Mapping[str, Any]],
        *,
        collection: str | None = None,
        ttl: SupportsFloat | None = None,
    ) -> None:
        """Store each value under its key, all with one TTL; nothing is stored if any of them is refused."""
        collection = collection_name(collection, self._default_collection)
        checked = self._keys(keys, collection)
        if isinstance(values, Mapping) or not isinstance(values, Sequence):
            raise TypeError(f"values must be a sequence of mappings, not {type(values).__name__}")
        if len(checked) != len(values):
            raise ValueError(f"put_many got {len(checked)} keys and {len(values)} values")
        entries, expires_at = self._entries(collection, checked, values, ttl)
        if entries:
            await self._call(Put(self._deadline(), collection, checked, entries, expires_at))

    async def delete(self, key: str, *, collection: str | None = None) -> bool:
        """Remove ``key``; ``True`` if a live entry was removed."""
        collection = collection_name(collection, self._default_collection)
        key = self._key(key, collection)
        (removed,) = await self._call(Delete(self._deadline(), collection, [key]))
        return bool(removed)

    async def delete_many(self, keys: Sequence[str], *, collection: str | None = None) -> int:
        """Remove ``keys``; return how many live entries were removed."""
        collection = collection_name(collection, self._default_collection)
        checked = self._keys(keys, collection)
        if not checked:
            return 0
        removed: list[bool] = await self._call(Delete(self._deadline(), collection, checked))
        return sum(removed)


class AttachedHandle(Handle):
    """A handle served in the runtime's own task group: its caller and its worker share one event loop."""

    __slots__ = ("_fallback", "_fallback_writes", "_limit", "_line", "_new_event", "_send", "_worker")

    def __init__(
        self,
        worker: Worker,
        *,
        new_event: Callable[[], AwaitedEvent],
        default_collection: str,
        limit: InflightLimit,
        request_timeout: float | None = None,
        fallback: Handle | None = None,
        fallback_writes: bool = False,
    ) -> None:
        super().__init__(worker.name, default_collection=default_collection, request_timeout=request_timeout)
        self._worker = worker
        self._send = worker.send_stream
        self._line = worker.line
        self._new_event = new_event
        self._limit = limit
        self._fallback = fallback
        self._fallback_writes = fallback_writes

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} on {self._worker.backend.kind}>"

    def _call(self, request: AnyRequest) -> Coroutine[Any, Any, Any]:
        """Return the coroutine that sends ``request`` and gives its reply (or raises its error).

        A plain method choosing among coroutines, so the common path awaits one frame, not two. With
        a ``request_timeout``, one deadline (the frame's own) covers the wait for a place under the
        runtime's in-flight cap, for room in a full mailbox, and for the reply.
        """
        breaker = self._worker.breaker
        if breaker.state != CLOSED and not breaker.allow():
            return self._divert(request)
        frame = self._frame(request)
        if request.deadline is None:
            return self._exchange(frame)
        return self._exchange_by_deadline(frame, request.deadline)

    async def _exchange_by_deadline(self, frame: bytes, deadline: float) -> Any:
        try:
            with anyio.fail_after(max(deadline - time.monotonic(), 0.0)):
                return await self._exchange(frame)
        except TimeoutError as exc:
            if isinstance(exc, KeyValueError):  # the worker's own deadline error
                raise
            raise DeadlineExceededError(f"No reply within {self._timeout} s.", backend=self.name) from None

    async def _exchange(self, frame: bytes) -> Any:
        """Take a place under the in-flight cap, send the frame, wait for the reply slot."""
        limit = self._limit
        if limit.used < limit.cap and not limit._waiters:
            limit.used += 1
            if limit.used > limit.peak:
                limit.peak = limit.used
        else:
            await limit.acquire()
        arrived = self._new_event()
        slot = ReplySlot(arrived, time.perf_counter())
        in_line = False
        try:
            item = (frame, slot)
            if self._line:  # callers wait for room already: this one goes behind them
                in_line = self._queue_when_full(item) or await self._send_waiting(item)
            else:
                try:
                    self._send.send_nowait(item)
                except anyio.WouldBlock:
                    in_line = self._queue_when_full(item) or await self._send_waiting(item)
                except anyio.ClosedResourceError:
                    raise RuntimeClosedError("The runtime is closed.", backend=self.name) from None
                except anyio.BrokenResourceError:
                    raise self._unavailable() from None
            await arrived.wait()
        except BaseException:
            slot.withdrawn = True  # a caller that stops waiting withdraws its request, if not yet sent
            if in_line:
                self._worker.left_line()
            raise
        finally:
            if limit._waiters:
                limit.release()
            else:
                limit.used -= 1
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _queue_when_full(self, item: tuple[bytes, ReplySlot]) -> bool:
        """Queue ``item`` for a full mailbox (backpressure) as the worker's policy says, without waiting.

        Returns ``True`` once it waits in the worker's line for room, where its caller needs only wait
        for the reply; ``False`` if the policy bounds that wait (``max_wait``), so the caller must
        wait for room itself (:meth:`_send_waiting`). Raises ``OverloadedError`` under ``"fail"``.
        """
        worker = self._worker
        policy = worker.mailbox
        if policy.when_full == "fail":
            raise self._overloaded("The backend's mailbox is full.")
        if policy.max_wait is not None:
            return False
        if not worker.line_open:
            raise self._unavailable()
        worker.join_line(item)
        return True

    async def _send_waiting(self, item: tuple[bytes, ReplySlot]) -> bool:
        """Wait at most the policy's ``max_wait`` for room in the full mailbox, then send; ``False`` (not in line)."""
        max_wait = self._worker.mailbox.max_wait
        try:
            with anyio.move_on_after(max_wait) as scope:
                await self._send.send(item)
            if scope.cancelled_caught:
                raise self._overloaded(f"The backend's mailbox stayed full for {max_wait} s.")
        except anyio.ClosedResourceError:
            raise RuntimeClosedError("The runtime is closed.", backend=self.name) from None
        except anyio.BrokenResourceError:
            raise self._unavailable() from None
        return False

    def _overloaded(self, reason: str) -> OverloadedError:
        self._worker.counters.overloaded += 1
        return OverloadedError(reason, backend=self.name)

    async def _divert(self, request: AnyRequest) -> Any:
        """Serve ``request`` from the fallback while the circuit is open, or refuse it at once."""
        fallback = self._fallback
        if fallback is not None and (self._fallback_writes or isinstance(request, _READS)):
            return await fallback._call(request)
        state = self._worker.state
        if state == "unavailable":
            raise BackendUnavailableError("Its restart policy stopped the backend for good.", backend=self.name)
        if state == "held_down":
            raise BackendUnavailableError("The backend kept crashing; its supervisor holds it down.", backend=self.name)
        raise BackendUnavailableError("The backend's circuit is open after repeated failures.", backend=self.name)

    def _accept(self, frame: bytes, slot: RemoteSlot, start_soon: Callable[..., Any]) -> None:
        """Take a request that crossed from another thread (on this runtime's loop, without waiting).

        What :meth:`_call` does, for a frame encoded and a slot made by a detached handle: an open
        circuit diverts it, the runtime's in-flight cap and a full mailbox make it wait in a task of
        its own (``start_soon``), and the worker answers the slot as it answers any other.
        """
        breaker = self._worker.breaker
        if breaker.state != CLOSED and not breaker.allow():
            start_soon(_answer, slot, self._divert(frames.decode(frame)))
            return
        limit = self._limit
        if limit.used < limit.cap and not limit._waiters:  # as in _call: the fast path, inlined
            limit.used += 1
            if limit.used > limit.peak:
                limit.peak = limit.used
        else:
            start_soon(_answer, slot, self._accept_in_turn(frame, slot), False)
            return
        slot.hold(limit)
        item = (frame, slot)
        try:
            if not self._enqueue(item):
                start_soon(_answer, slot, self._send_waiting(item), False)
        except KeyValueError as exc:
            slot.fail(exc)

    async def _accept_in_turn(self, frame: bytes, slot: RemoteSlot) -> None:
        """Wait for a place under the in-flight cap, then send (unless the caller left meanwhile)."""
        await self._limit.acquire()
        slot.hold(self._limit)
        if slot.withdrawn:
            slot.drop()
            return
        item = (frame, slot)
        if not self._enqueue(item):
            await self._send_waiting(item)

    def _enqueue(self, item: tuple[bytes, ReplySlot]) -> bool:
        """Queue a crossed request without waiting: in the mailbox, or in line behind those waiting for room.

        What :meth:`_exchange` does inline; ``False`` as for :meth:`_queue_when_full`.
        """
        if not self._line:
            try:
                self._send.send_nowait(item)
                return True
            except anyio.WouldBlock:
                pass
            except anyio.ClosedResourceError:
                raise RuntimeClosedError("The runtime is closed.", backend=self.name) from None
            except anyio.BrokenResourceError:
                raise self._unavailable() from None
        return self._queue_when_full(item)

    def _unavailable(self) -> Exception:
        if self._worker.state == "unavailable":
            return BackendUnavailableError("Its restart policy stopped the backend for good.", backend=self.name)
        return RuntimeClosedError("The runtime is closed.", backend=self.name)


async def _answer(slot: ReplySlot, reply: Coroutine[Any, Any, Any], replies: bool = True) -> None:
    """Answer ``slot`` with what ``reply`` returns (if it ``replies``: else the worker answers) or raises.

    Cancelled, the runtime is closing with the request still unanswered: its caller hears so.
    """
    try:
        result = await reply
    except Exception as exc:
        slot.fail(exc)
    except anyio.get_cancelled_exc_class():
        if not slot.done:
            slot.fail(RuntimeClosedError("The runtime closed before the request was served."))
        raise
    else:
        if replies:
            slot.resolve(result)


def _with_ttl(entry: Entry | None, now: float) -> tuple[dict[str, Any] | None, float | None]:
    if entry is None:
        return (None, None)
    value, expires = entry
    return (value, None if expires is None else expires - now)


_READS: Final = (Get, Keys, Collections)
"""Requests a fallback serves by default; writes go there only when asked (``FallbackPolicy.writes``)."""


def _check_timeout(seconds: float | None) -> float | None:
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds < float("inf"):
        raise ValueError(f"a request timeout must be a positive number of seconds, not {seconds!r}")
    return float(seconds)


class KeysSegment(Handle):
    """The ``keys`` segment of a handle."""

    __slots__ = ()

    async def keys(self, collection: str | None = None, *, limit: int | None = None) -> list[str]:
        """Return the live keys of ``collection``: all of them, or the first ``limit``."""
        collection = collection_name(collection, self._default_collection)
        limit = check_limit(limit)
        if limit == 0:
            return []
        names: list[str] = await self._call(Keys(self._deadline(), collection, limit))
        return names


class CollectionsSegment(Handle):
    """The ``collections`` segment of a handle."""

    __slots__ = ()

    async def collections(self, *, limit: int | None = None) -> list[str]:
        """Return the names of the collections that hold entries."""
        limit = check_limit(limit)
        if limit == 0:
            return []
        names: list[str] = await self._call(Collections(self._deadline(), limit))
        return names


class DestroySegment(Handle):
    """The ``destroy`` segment of a handle."""

    __slots__ = ()

    async def destroy(self) -> bool:
        """Remove every entry the backend holds for kvrt; ``True`` if anything was removed."""
        removed: bool = await self._call(Destroy(self._deadline()))
        return removed


class DestroyCollectionSegment(Handle):
    """The ``destroy_collection`` segment of a handle."""

    __slots__ = ()

    async def destroy_collection(self, collection: str) -> bool:
        """Remove every entry of ``collection``; ``True`` if anything was removed."""
        collection = collection_name(collection, self._default_collection)
        removed: bool = await self._call(DestroyCollection(self._deadline(), collection))
        return removed


class CullSegment(Handle):
    """The ``cull`` segment of a handle."""

    __slots__ = ()

    async def cull(self) -> None:
        """Remove every expired entry now (the runtime also does this in the background)."""
        await self._call(Cull(self._deadline()))


_SEGMENTS: dict[str, type[Handle]] = {
    "collections": CollectionsSegment,
    "cull": CullSegment,
    "destroy": DestroySegment,
    "destroy_collection": DestroyCollectionSegment,
    "keys": KeysSegment,
}


_H = TypeVar("_H", bound=Handle)


def handle_class(capabilities: Capabilities, transport: type[_H]) -> type[_H]:
    """Return ``transport`` with exactly the optional segments ``capabilities`` declares mixed in."""
    segments = frozenset(name for name in _SEGMENTS if getattr(capabilities, name))
    return cast("type[_H]", _composed(segments, cast("Hashable", transport)))


_COMPOSED: dict[tuple[frozenset[str], type[Handle]], type[Handle]] = {}


def _composed(segments: frozenset[str], transport: Any) -> type[Handle]:
    if not segments:
        return cast("type[Handle]", transport)
    composed = _COMPOSED.get((segments, transport))
    if composed is None:
        bases = (transport, *(_SEGMENTS[name] for name in sorted(segments)))
        composed = type(transport.__name__, bases, {"__slots__": (), "__doc__": transport.__doc__})
        _COMPOSED[segments, transport] = composed
    return composed


def named_composition(cls: type[_H]) -> type[_H]:
    """Register ``cls`` (a transport and segments, in the order :func:`handle_class` puts them) as that composition.

    Handles of that composition are then instances of ``cls``, a class with a name that type
    checkers know, so ``open(MemoryBackend())`` is typed as having ``keys()``.
    """
    transport, *mixins = cls.__bases__
    names = frozenset(name for name, segment in _SEGMENTS.items() if segment in mixins)
    expected = (transport, *(_SEGMENTS[name] for name in sorted(names)))
    if cls.__bases__ != expected or (names, transport) in _COMPOSED:
        raise TypeError(f"{cls.__name__}'s bases are not a composition handle_class makes")
    _COMPOSED[names, transport] = cls
    return cls


@named_composition
class AttachedFullHandle(
    AttachedHandle, CollectionsSegment, CullSegment, DestroySegment, DestroyCollectionSegment, KeysSegment
):
    """An attached handle with every optional segment (memory and disk backends)."""

    __slots__ = ()


@named_composition
class AttachedListingHandle(AttachedHandle, CollectionsSegment, DestroySegment, DestroyCollectionSegment, KeysSegment):
    """An attached handle with every segment but ``cull`` (backends with native expiry, such as Redis)."""

    __slots__ = ()

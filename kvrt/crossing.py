"""Requests and replies crossing between threads, a batch per wake-up.

A detached runtime runs its workers on an event loop in a thread of its own, while callers run on
their own loops (asyncio or trio, one or several, one after another) or in plain threads. Waking
another thread's loop costs far more than a request itself, so each direction goes through a
:class:`Doorbell`: items queue in a thread-safe deque, and the loop on the other side is woken
once for everything that arrives before it runs. Callers ring the runtime's doorbell with their
requests; a worker's round of replies rings each caller loop's doorbell once.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from kvrt.inflight import InflightLimit
from kvrt.reply import ReplySlot
from kvrt.wakeups import AwaitedEvent, asyncio_events, trio_events

_T = TypeVar("_T")


class Doorbell(Generic[_T]):
    """Hands items to another thread's event loop, waking it once per batch.

    ``schedule`` runs a callback on that loop soon (``loop.call_soon_threadsafe``, a trio token's
    ``run_sync_soon``) and may be called from any thread; ``serve`` is called there, once per item,
    in the order they came. A loop that has closed is not woken, and what was for it is dropped.
    Where serving needs a task rather than a bare callback, ``schedule`` can wake a task that calls
    :meth:`drain` itself.
    """

    __slots__ = ("_items", "_rung", "_schedule", "_serve")

    def __init__(self, schedule: Callable[[Callable[[], None]], Any], serve: Callable[[_T], None]) -> None:
        self._schedule = schedule
        self._serve = serve
        self._items: deque[_T] = deque()
        self._rung = False

    def ring(self, item: _T) -> None:
        """Queue ``item`` and make sure the other loop will look (appended first, then the flag read)."""
        self._items.append(item)
        if not self._rung:
            self._rung = True
            try:
                self._schedule(self._drain)
            except Exception:  # the loop has closed: nobody is left to serve
                self._rung = False

    def _drain(self) -> None:
        self.drain()

    def close(self, serve: Callable[[_T], None]) -> None:
        """Serve what is queued, and all that rings from now on, with ``serve`` at once: the other loop has ended."""
        self._serve = serve
        self._schedule = _at_once
        self.drain()

    def drain(self) -> None:
        """Serve every item queued so far (on the loop that was woken)."""
        self._rung = False  # before taking anything: an item rung in after this is served by the next wake
        items, serve = self._items, self._serve
        while items:
            serve(items.popleft())


def _at_once(callback: Callable[[], None]) -> None:
    callback()


class Bell(Protocol):
    """Whatever a :class:`RemoteSlot` rings when answered: a loop's :class:`Doorbell`, or a thread's event."""

    def ring(self, item: ReplySlot, /) -> None:
        """Wake whoever waits on ``item``."""


class RemoteSlot(ReplySlot):
    """A reply slot whose caller waits on another loop or thread: answering it rings that caller's bell.

    While it is in flight it may hold a place under the runtime's in-flight cap (:meth:`hold`), given
    back when the worker answers or drops it, on the runtime's loop (the caller's loop cannot touch it).
    """

    __slots__ = ("_answered", "_doorbell", "_place")

    def __init__(self, doorbell: Bell, sent_at: float, event: Any) -> None:
        super().__init__(event, sent_at)
        self._doorbell = doorbell
        self._answered = False
        self._place: InflightLimit | None = None

    def hold(self, place: InflightLimit) -> None:
        """Keep a place taken under ``place``'s cap until this request is answered or dropped."""
        self._place = place

    def resolve(self, result: Any) -> None:
        """Deliver ``result``; the caller's loop is woken (with the rest of the round's replies)."""
        self.result = result
        self._answer()

    def fail(self, error: BaseException) -> None:
        """Deliver ``error``; the caller's loop is woken."""
        self.error = error
        self._answer()

    def _answer(self) -> None:
        self._answered = True
        self.drop()
        self._doorbell.ring(self)

    def drop(self) -> None:
        """Give back the in-flight place this request held, if any."""
        place = self._place
        if place is not None:
            self._place = None
            place.release()

    @property
    def done(self) -> bool:
        """Whether an answer has been delivered (the caller may not have woken yet)."""
        return self._answered


def _wake(slot: ReplySlot) -> None:
    slot.arrived.set()


class ThreadBell:
    """The bell of a blocked thread: its slot's event is a ``threading.Event``, set from any thread."""

    __slots__ = ()

    def ring(self, slot: ReplySlot, /) -> None:
        """Wake the thread waiting on ``slot``."""
        slot.arrived.set()


_Found = tuple[Doorbell[ReplySlot], Callable[[], AwaitedEvent]]

_doorbells: dict[asyncio.AbstractEventLoop, _Found] = {}
"""Each asyncio caller loop's doorbell and reply-event maker (trio runs keep theirs in a run variable)."""


def caller_doorbell() -> _Found:
    """Return the doorbell of the event loop running the calling task, and what makes its reply events.

    One per loop, made on its first use: a thread that runs ``asyncio.run`` twice, or trio after
    asyncio, gets a new one for each loop, and replies never go to a loop that is gone. A trio
    run's doorbell lives in a ``RunVar``, so it goes when the run ends.
    """
    loop = asyncio._get_running_loop()  # None, rather than an exception to catch, under trio
    if loop is None:  # not asyncio: trio (the only other loop anyio runs on)
        return _trio_doorbell()
    found = _doorbells.get(loop)
    if found is None:
        found = _new_asyncio_doorbell(loop)
    return found


def _new_asyncio_doorbell(loop: asyncio.AbstractEventLoop) -> _Found:
    with _lock:
        for old in [old for old in _doorbells if old.is_closed()]:
            del _doorbells[old]
        found: _Found = (Doorbell(loop.call_soon_threadsafe, _wake), asyncio_events(loop))
        _doorbells[loop] = found
    return found


def _trio_doorbell() -> _Found:
    global _trio_run_doorbell
    if _trio_run_doorbell is None:
        import trio  # here, not at the top: kvrt never needs it where trio is not running

        _trio_run_doorbell = trio.lowlevel.RunVar("kvrt caller doorbell")
    try:
        found: _Found = _trio_run_doorbell.get()
    except LookupError:
        import trio

        token = trio.lowlevel.current_trio_token()
        found = (Doorbell(token.run_sync_soon, _wake), trio_events())
        _trio_run_doorbell.set(found)
    return found


_trio_run_doorbell: Any = None
_lock = threading.Lock()

"""Reply events: the cheapest way to wake the one task that waits for one reply, on each event loop.

Every request has an event its caller waits on and the worker sets. ``anyio.Event`` serves any
number of waiters and so pays for a general primitive (on asyncio an ``asyncio.Event``, two
coroutines around a future; on trio a parking lot and checkpoints). One waiter needs neither: on
asyncio the event is a bare future, on trio the waiting task itself, rescheduled. Both keep the
``set`` / ``is_set`` / ``wait`` shape, so a reply slot does not care which it holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol


class ReplyEvent(Protocol):
    """What a worker needs of the event in a reply slot (a ``threading.Event`` has it too)."""

    def set(self) -> None:
        """Wake the caller."""

    def is_set(self) -> bool:
        """Whether the caller has been woken."""


class AwaitedEvent(ReplyEvent, Protocol):
    """A reply event a task awaits."""

    def wait(self) -> Awaitable[Any]:
        """Return what to await until :meth:`set`."""


class FutureEvent:
    """A reply event on an asyncio loop: a bare future, awaited as it is."""

    __slots__ = ("_future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self._future = future

    def set(self) -> None:
        """Wake the caller (on its loop), unless it stopped waiting and so cancelled the future."""
        if not self._future.done():
            self._future.set_result(None)

    def is_set(self) -> bool:
        """Whether the reply has arrived (or the caller stopped waiting)."""
        return self._future.done()

    def wait(self) -> asyncio.Future[None]:
        """Return the future itself, to await: no coroutine of its own to step through."""
        return self._future


class TrioTaskEvent:
    """A reply event in a trio run: the waiting task itself, rescheduled when the reply comes.

    Made only in a trio run, by :func:`trio_events`, which has imported trio's ``lowlevel``.
    """

    __slots__ = ("_set", "_task")

    def __init__(self) -> None:
        self._set = False
        self._task: Any = None

    def set(self) -> None:
        """Wake the waiting task (called on its trio thread), unless it stopped waiting."""
        if not self._set:
            self._set = True
            task = self._task
            if task is not None:
                self._task = None
                _lowlevel.reschedule(task)

    def is_set(self) -> bool:
        """Whether the reply has arrived."""
        return self._set

    def wait(self) -> Any:
        """Return what to await for :meth:`set`: trio's own trap, with no coroutine of ours around it.

        Cancellable: the reply, if it comes later, then wakes nobody.
        """
        if self._set:
            return _lowlevel.checkpoint()
        self._task = _lowlevel.current_task()
        return _lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _: object) -> Any:
        self._task = None
        return _lowlevel.Abort.SUCCEEDED


def asyncio_events(loop: asyncio.AbstractEventLoop) -> Callable[[], FutureEvent]:
    """Return what makes reply events for callers on ``loop``."""
    create_future = loop.create_future
    return lambda: FutureEvent(create_future())


def trio_events() -> type[TrioTaskEvent]:
    """Return what makes reply events for callers in this trio run."""
    global _lowlevel
    if _lowlevel is None:
        import trio  # here, not at the top: kvrt never needs it where trio is not running

        _lowlevel = trio.lowlevel
    return TrioTaskEvent


def reply_events() -> Callable[[], AwaitedEvent]:
    """Return what makes reply events for callers on the event loop running now (asyncio or trio)."""
    loop = asyncio._get_running_loop()
    return trio_events() if loop is None else asyncio_events(loop)


_lowlevel: Any = None
"""``trio.lowlevel``, once a trio run has asked for reply events."""

"""Thread lanes: one thread a blocking backend owns, that runs its calls in order, one hop each.

A backend whose driver blocks (diskcache, and the embedded stores) must keep that work off the
event loop. ``anyio.to_thread`` would do it, but its threads belong to the event loop, not to the
backend: they outlive a backend that closed, and they are stopped only as the loop ends, without
being joined, so a runtime that closed could still leave a thread behind. A lane's thread starts on
first use and is joined when the backend closes it, and its calls run in the order they were made.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.lowlevel

_T = TypeVar("_T")

_Job = tuple[Callable[..., Any], tuple[Any, ...], list[Any], Callable[[Callable[[], Any]], Any], Callable[[], Any]]


_sched_yield: Callable[[], None] = getattr(os, "sched_yield", lambda: None)  # not on Windows


def yield_cpu() -> None:
    """Let a thread that waits for this one's CPU run first: above all the event loop's, between a batch's items.

    A lane thread making one system call after another keeps its CPU: Linux's scheduler (EEVDF)
    lets a running thread finish its slice before one it woke runs, and sees the slice end only on
    a timer tick (4 ms at 250 Hz), so an event loop woken on that CPU waited up to a tick for it.
    When nothing waits, this costs one system call.
    """
    _sched_yield()


def _stop() -> None:
    """End the lane's thread (its last job) once its caller is woken."""


def _call_soon() -> Callable[[Callable[[], Any]], Any]:
    """Return the thread-safe way to run a callback on the event loop running now (asyncio or trio)."""
    native: Any = anyio.lowlevel.current_token().native_token
    soon = getattr(native, "call_soon_threadsafe", None)  # an asyncio loop; else a trio token
    return soon if soon is not None else native.run_sync_soon  # type: ignore[no-any-return]


class ThreadLane:
    """A thread of one's own for blocking calls: started on first use, joined by :meth:`aclose`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._thread: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()

    async def run(self, call: Callable[..., _T], *args: Any) -> _T:
        """Run ``call(*args)`` on the lane's thread after every call made before it; return its result.

        The call cannot be abandoned once made (its effects would land after the caller left), so a
        cancelled caller waits for it, as ``anyio.to_thread.run_sync`` makes it wait.
        """
        if self._thread is None:
            self._jobs = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._serve, args=(self._jobs,), name=self.name, daemon=True)
            self._thread.start()
        return await self._submit(self._jobs, call, args)

    async def _submit(self, jobs: queue.SimpleQueue[_Job], call: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        done = anyio.Event()
        outcome: list[Any] = []
        jobs.put((call, args, outcome, _call_soon(), done.set))
        with anyio.CancelScope(shield=True):
            await done.wait()
        result, error = outcome
        if error is not None:
            raise error
        return result  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        """Let the calls already made finish, then end the thread and join it (the lane may start again)."""
        thread, jobs = self._thread, self._jobs
        if thread is None:
            return
        self._thread = None  # a call made from now on starts a new thread, with its own queue
        await self._submit(jobs, _stop, ())
        thread.join()  # its last job has run: the thread is returning

    @staticmethod
    def _serve(jobs: queue.SimpleQueue[_Job]) -> None:
        while True:
            call, args, outcome, soon, wake = jobs.get()
            try:
                outcome += (call(*args), None)
            except BaseException as exc:
                outcome += (None, exc)
            soon(wake)
            if call is _stop:
                return

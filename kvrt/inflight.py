"""The runtime-wide cap on requests in flight, shared by every handle of a runtime."""

from __future__ import annotations

from collections import deque

import anyio

DEFAULT_MAX_IN_FLIGHT = 65_536
"""A runtime's cap on requests in flight, unless its ``max_in_flight`` policy says otherwise."""


class InflightLimit:
    """Counts requests sent and not yet answered, across all workers; callers past the cap wait in line.

    Handles take the fast path themselves (``used < cap`` and nobody waiting: count and go) and call
    :meth:`acquire` only to wait. A release hands its place straight to the longest waiter.
    """

    __slots__ = ("_waiters", "cap", "peak", "used")

    def __init__(self, cap: int) -> None:
        if type(cap) is not int or cap < 1:
            raise ValueError("max_in_flight must be a positive int")
        self.cap = cap
        self.used = 0
        self.peak = 0
        self._waiters: deque[anyio.Event] = deque()

    async def acquire(self) -> None:
        """Take a place, waiting for one if the cap is reached."""
        if self.used < self.cap and not self._waiters:
            self.used += 1
            self.peak = max(self.peak, self.used)
            return
        turn = anyio.Event()
        self._waiters.append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():
                self.release()  # our place was handed over as we were cancelled: pass it on
            else:
                self._waiters.remove(turn)
            raise

    def release(self) -> None:
        """Give a place back, to the longest waiter if there is one."""
        if self._waiters:
            self._waiters.popleft().set()
        else:
            self.used -= 1

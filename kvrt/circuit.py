"""The circuit breaker in front of each worker: stop sending to a backend that keeps failing.

Closed, it lets every request through and counts backend failures (transient errors, calls that
outlive their callers' deadlines). After ``failures`` in a row, or a failure rate of at least
``failure_rate`` over the last ``window`` calls, it opens: handles stop queueing requests for the
backend and send them to the fallback, or fail them at once. After ``reset_after`` seconds it lets
one probe through (half-open): success closes it, failure opens it again for twice as long, up to
``reset_max``. The supervisor holds the breaker open while it holds a worker down (or for good once
it gave up), and half-opens it the moment a reconnect succeeds, so the first request after an
outage is the probe, however long the breaker had been told to wait.
"""

from __future__ import annotations

import time
from collections import deque

from kvrt.log import logger as _log
from kvrt.policies import CircuitPolicy

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class Breaker:
    """One worker's breaker. Handles ask :meth:`allow`; the worker reports each backend call's outcome."""

    __slots__ = (
        "_open_until",
        "_outcomes",
        "_policy",
        "_probe_since",
        "_reset",
        "consecutive",
        "name",
        "state",
        "trips",
    )

    def __init__(self, name: str, policy: CircuitPolicy) -> None:
        self.name = name
        self._policy = policy
        self.state = CLOSED
        self.consecutive = 0
        self.trips = 0
        self._outcomes: deque[bool] = deque(maxlen=policy.window)
        self._reset = policy.reset_after
        self._open_until = 0.0
        self._probe_since: float | None = None

    def allow(self) -> bool:
        """Whether a request may go to the backend now (call only when :attr:`state` is not closed)."""
        if self.state == CLOSED:
            return True
        now = time.monotonic()
        if self.state == OPEN:
            if now < self._open_until:
                return False
            self._transition(HALF_OPEN)
        if self._probe_since is None or now - self._probe_since > self._policy.reset_after:
            # One probe at a time. A probe can be lost (its caller left, its deadline passed before
            # it was sent), so another goes after ``reset_after``, however long the breaker waited.
            self._probe_since = now
            return True
        return False

    def succeeded(self) -> None:
        """Record a backend call that worked."""
        self.consecutive = 0
        if self.state == CLOSED:
            self._outcomes.append(True)
        elif self.state == HALF_OPEN:
            self._reset = self._policy.reset_after
            self._outcomes.clear()
            self._transition(CLOSED)

    def failed(self) -> None:
        """Record a backend call that failed in a way that says the backend is in trouble."""
        self.consecutive += 1
        policy = self._policy
        if self.state == HALF_OPEN:
            self._reset = min(self._reset * 2, policy.reset_max)
            self._trip()
        elif self.state == CLOSED:
            self._outcomes.append(False)
            outcomes = self._outcomes
            rate_tripped = len(outcomes) == policy.window and outcomes.count(False) >= policy.failure_rate * len(
                outcomes
            )
            if self.consecutive >= policy.failures or rate_tripped:
                self._trip()

    def reconnected(self) -> None:
        """Record that the worker reconnected to its backend: an open breaker lets a probe through at once.

        However long the outage made the breaker wait, the first request after a reconnect tests
        the backend; its success closes the breaker, so callers are served again straight away.
        """
        if self.state == OPEN:
            self._open_until = 0.0
            self._probe_since = None
            self._transition(HALF_OPEN)

    def hold_open(self) -> None:
        """Open until :meth:`reset`: the supervisor holds the worker down, or gave up on it."""
        self._open_until = float("inf")
        if self.state != OPEN:
            self._transition(OPEN)

    def _trip(self) -> None:
        self.trips += 1
        self._open_until = time.monotonic() + self._reset
        self._probe_since = None
        self._transition(OPEN)

    def _transition(self, state: str) -> None:
        self.state = state
        if state == OPEN:
            held = self._open_until == float("inf")  # until the supervisor lets the worker serve again
            seconds = None if held else self._reset
            _log.warning("circuit.opened", worker=self.name, seconds=seconds, held=held, failures=self.consecutive)
        elif state == HALF_OPEN:
            _log.info("circuit.half_open", worker=self.name)
        else:
            _log.info("circuit.closed", worker=self.name)

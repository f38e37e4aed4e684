"""The reply slot: where a worker leaves the answer to one request, and wakes the one caller waiting."""

from __future__ import annotations

from typing import Any

from kvrt.wakeups import ReplyEvent


class ReplySlot:
    """One request's answer: a result or an error, and an event that says it has arrived.

    A caller that stops waiting (cancelled, or past its deadline) marks its slot ``withdrawn``, and
    the worker then never sends that request to the backend. ``attempts`` counts how often the
    request's batch failed transiently, against the restart policy's retry budget.
    """

    __slots__ = ("arrived", "attempts", "error", "result", "sent_at", "withdrawn")

    def __init__(self, event: ReplyEvent, sent_at: float) -> None:
        self.arrived = event
        """Set when the answer is in: the caller waits on it."""
        self.sent_at = sent_at
        """When the caller sent the request, on ``time.perf_counter()``: for latency statistics."""
        self.result: Any = None
        self.error: BaseException | None = None
        self.withdrawn = False
        self.attempts = 0

    def resolve(self, result: Any) -> None:
        """Deliver ``result`` and wake the caller."""
        self.result = result
        self.arrived.set()

    def fail(self, error: BaseException) -> None:
        """Deliver ``error`` (raised in the caller) and wake the caller."""
        self.error = error
        self.arrived.set()

    def drop(self) -> None:
        """Note that the worker let this withdrawn request go unanswered (its caller left)."""

    @property
    def done(self) -> bool:
        """Whether an answer has been delivered."""
        return self.arrived.is_set()

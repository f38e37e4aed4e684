"""What a worker has done, kept as plain counters and read as a snapshot by ``Runtime.stats()``."""

from __future__ import annotations

import msgspec


class WorkerStats(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one worker."""

    name: str
    backend: str
    state: str
    """``running``, ``restarting``, ``unavailable`` (its supervisor gave up) or ``stopped``."""
    mailbox_depth: int
    mailbox_size: int
    in_flight: int
    """Requests taken from the mailbox and not yet answered."""
    ops: dict[str, int]
    """Requests answered, by kind (``get``, ``put``, ``delete``, ...)."""
    errors: dict[str, int]
    """Requests that failed, by error class name."""
    restarts: int
    batches: int
    """Backend calls made for requests."""
    mean_batch: float
    """Mean number of requests merged into one backend call."""
    max_batch: int
    deadline_drops: int
    """Requests whose deadline had passed before they reached the backend."""
    culled: int
    """Expired entries removed by background or on-demand culling."""


class Counters:
    """The worker's live counters; mutated on the hot path, so plain attributes and dict increments."""

    __slots__ = (
        "batched",
        "batches",
        "culled",
        "deadline_drops",
        "errors",
        "in_flight",
        "max_batch",
        "ops",
        "restarts",
    )

    def __init__(self) -> None:
        self.ops: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.in_flight = 0
        self.batches = 0
        self.batched = 0
        self.max_batch = 0
        self.restarts = 0
        self.deadline_drops = 0
        self.culled = 0

    def batch(self, op: str, size: int) -> None:
        """Count one backend call answering ``size`` requests of kind ``op``."""
        self.ops[op] = self.ops.get(op, 0) + size
        self.batches += 1
        self.batched += size
        if size > self.max_batch:
            self.max_batch = size

    def error(self, error: BaseException) -> None:
        """Count one request that failed with ``error``."""
        kind = type(error).__name__
        self.errors[kind] = self.errors.get(kind, 0) + 1

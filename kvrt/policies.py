"""Policy value objects: how the runtime restarts, schedules and bounds a worker. They do no I/O."""

from __future__ import annotations

import msgspec


class RestartPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How a supervisor restarts a crashed worker, and when it gives up.

    A worker crashes when its backend raises an error the backend calls transient (a dropped
    connection): the supervisor closes and reopens the backend after an exponential backoff with
    jitter, and the requests of the failed batch go back in line. More than ``max_restarts``
    restarts within ``within`` seconds and the supervisor gives up: every call fails at once with
    :class:`~kvrt.errors.BackendUnavailableError`.
    """

    max_restarts: int = 3
    within: float = 5.0
    backoff_initial: float = 0.05
    backoff_max: float = 2.0
    attempts: int = 3
    """How many times one request may be tried before its caller gets the backend's error."""


class MailboxPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The bound on a worker's queue of waiting requests; a caller facing a full mailbox waits."""

    size: int = 1024
    drain: int = 512
    """The most requests a worker takes from its mailbox for one round of batches."""


class CullPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Background removal of expired entries, for backends that do not expire entries themselves.

    Every ``interval`` seconds the worker is told to cull; it then removes ``budget`` expired entries
    per step, one step between rounds of foreground requests (or while idle) until none are left, so
    a foreground request waits for at most one step.
    """

    interval: float = 1.0
    budget: int = 512

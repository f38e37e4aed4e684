"""Policy value objects: how the runtime restarts, schedules and bounds a worker. They do no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import msgspec

if TYPE_CHECKING:
    from kvrt.handle import Handle

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
"""Which workers of a group restart when one crashes: itself, all, or itself and those spawned after it."""


class RestartPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How a supervisor restarts a crashed worker, and what it does when the crashes keep coming.

    A worker crashes when its backend raises an error the backend calls transient (a dropped
    connection) or something unexpected happens in it. The supervisor closes and reopens the
    backend after an exponential backoff with jitter (``backoff_initial`` doubling, capped at
    ``backoff_max``), and the requests of the failed batch go back in line. While the backend
    cannot be reached, it keeps trying at that capped pace for as long as the outage lasts: one
    outage is one restart, however many reconnects it takes.

    More than ``max_restarts`` restarts within ``within`` seconds means the worker keeps crashing
    while its backend answers (a driver bug, a poisoned request): the supervisor holds it down,
    for ``hold_initial`` seconds the first time and twice as long each time after (up to
    ``hold_max``) until it has run ``within`` seconds without a restart. Calls fail at once with
    :class:`~kvrt.errors.BackendUnavailableError` (or go to the fallback) while it is held.
    ``give_up=True`` makes the first such hold last for good, as OTP's supervisors do.
    """

    max_restarts: int = 3
    within: float = 5.0
    backoff_initial: float = 0.05
    backoff_max: float = 1.0
    """The longest wait between reconnect attempts: a backend that is back is served again within it."""
    hold_initial: float = 1.0
    hold_max: float = 60.0
    give_up: bool = False
    """Past the intensity, stop for good: every call fails at once, and a critical worker fails the runtime."""
    attempts: int = 3
    """How many times one request may be tried before its caller gets the backend's error."""
    hung_call: float = 2.0
    """How long a backend call may be out, once every caller's deadline has passed, before it is taken
    as hung: abandoned, counted as a backend failure, and the connection rebuilt. A call that merely
    outlives callers with short deadlines is left to finish; nobody waits for its answer."""
    restart_type: Literal["permanent", "transient", "temporary"] = "permanent"
    """OTP's restart types, read for kvrt: ``permanent`` restarts after any crash (a transient backend
    error, or an unexpected exception in the worker); ``transient`` only after a transient backend
    error, so an unexpected exception stops it; ``temporary`` never restarts: its first crash makes
    it unavailable, and a sibling's crash under ``one_for_all`` or ``rest_for_one`` stops it too."""


class MailboxPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The bound on a worker's queue of waiting requests, and what a caller facing a full one does.

    ``when_full="wait"`` (the default) waits for room, for at most ``max_wait`` seconds if given;
    ``"fail"`` raises :class:`~kvrt.errors.OverloadedError` at once. Either way, waiting past
    ``max_wait`` also raises ``OverloadedError``.
    """

    size: int = 1024
    drain: int = 128
    """The most requests a worker takes from its mailbox for one round of batches.

    Past about a hundred, a round gains nothing from its size and loses to the processor's caches:
    its requests, slots and callers no longer fit them. With 1,024 callers on one worker, rounds
    of 128 served 1.5x the gets of rounds of 512 on memory and 1.3x on Redis (bench/bench_scale.py).
    """
    when_full: Literal["wait", "fail"] = "wait"
    max_wait: float | None = None


class CullPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Background removal of expired entries, for backends that do not expire entries themselves.

    Every ``interval`` seconds the worker is told to cull; it then removes expired entries a step at
    a time until none are left. While idle, a step removes up to ``budget`` entries. While requests
    are flowing, one step follows each round of them, sized from the measured cost per entry to take
    about ``busy_share`` of the time the round took (and never more than ``budget``), so culling adds
    about that share to foreground latency.
    """

    interval: float = 1.0
    budget: int = 512
    busy_share: float = 0.1


class CircuitPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """When a worker's circuit breaker opens, and how long it stays open.

    It opens after ``failures`` backend failures in a row, or when at least ``failure_rate`` of the
    last ``window`` backend calls failed. It half-opens after ``reset_after`` seconds to let one
    probe through; each failed probe doubles the wait, up to ``reset_max``.
    """

    failures: int = 5
    failure_rate: float = 0.5
    window: int = 20
    reset_after: float = 1.0
    reset_max: float = 30.0


class FallbackPolicy(msgspec.Struct, frozen=True):
    """Where a worker's requests go while its circuit is open: reads, and writes too if ``writes``.

    ``handle`` is another handle of the same runtime (often a memory backend standing in for a
    remote one). Passing a bare handle to ``spawn(fallback=...)`` means reads only.
    """

    handle: Any = None
    writes: bool = False


class RuntimePolicies(TypedDict, total=False):
    """What ``Runtime(...)`` and ``Runtime.detached(...)`` take: the defaults for every worker, and the bounds."""

    mailbox: MailboxPolicy | None
    restart: RestartPolicy | None
    cull: CullPolicy | None
    circuit: CircuitPolicy | None
    max_in_flight: int
    shutdown_grace: float
    stats_address: str | None


Seed = Mapping[str, Mapping[str, Mapping[str, Any]]]
"""Entries a worker writes when it is spawned, as the reference's ``seed=``: ``{collection: {key: value}}``."""


class SpawnOptions(TypedDict, total=False):
    """What ``Runtime.spawn`` and ``kvrt.open`` take besides the backend: one worker's name and policies."""

    name: str | None
    default_collection: str | None
    request_timeout: float | None
    mailbox: MailboxPolicy | None
    restart: RestartPolicy | None
    cull: CullPolicy | None
    circuit: CircuitPolicy | None
    fallback: Handle | FallbackPolicy | None
    critical: bool
    seed: Seed | None

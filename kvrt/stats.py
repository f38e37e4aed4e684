"""What a worker has done, kept as plain counters and read as a snapshot by ``Runtime.stats()``."""

from __future__ import annotations

import math
from typing import Final

import msgspec

_BOUND_POWERS: Final = range(-17, 5)
LATENCY_BOUNDS: Final = tuple(2.0**power for power in _BOUND_POWERS)
"""The bounds, in seconds, :class:`LatencyBuckets` counts sampled latencies under: powers of two from 7.6 µs to
16 s. Each is an edge of :class:`LatencyHistogram`'s own buckets, so the counts are exact, not interpolated."""


class LatencyBuckets(msgspec.Struct, frozen=True, kw_only=True):
    """The sampled latencies as cumulative counts (a Prometheus histogram's ``le`` buckets), with count and sum."""

    under: tuple[int, ...] = ()
    """How many sampled latencies were under each of :data:`LATENCY_BOUNDS` (a latency exactly on a bound counts
    in the next bucket up)."""
    count: int = 0
    """Latencies sampled (every eighth answered request): at least ``under[-1]``."""
    sum_seconds: float = 0.0
    """Their sum."""


class WorkerStats(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one worker."""

    name: str
    backend: str
    state: str
    """``running``; ``restarting`` (reconnecting, for as long as an outage lasts); ``held_down`` (it kept
    crashing: calls fail at once until the hold ends); ``unavailable`` (stopped for good by its restart
    policy); ``stopped``."""
    mailbox_depth: int
    mailbox_size: int
    waiting_for_room: int = 0
    """Callers waiting for room in the full mailbox (backpressure), in line, not counted in the depth."""
    in_flight: int
    """Requests taken from the mailbox and not yet answered."""
    ops: dict[str, int]
    """Requests answered, by kind (``get``, ``put``, ``delete``, ...)."""
    errors: dict[str, int]
    """Requests that failed, by error class name."""
    restarts: int
    """Times the backend was reopened after a crash (an outage counts once, however many reconnects)."""
    reconnects_failed: int
    """Reopen attempts that failed (during outages)."""
    holds: int
    """Times the supervisor held the worker down for crashing past its restart intensity."""
    last_crash: str | None
    """The error type of the latest crash, if any."""
    batches: int
    """Backend calls made for requests."""
    mean_batch: float
    """Mean number of requests merged into one backend call."""
    max_batch: int
    deadline_drops: int
    """Requests whose deadline had passed before they reached the backend."""
    culled: int
    """Expired entries removed by background or on-demand culling."""
    retries: int
    """Requests sent to the backend again after a transient failure."""
    overloaded: int
    """Requests refused because the mailbox was full (``MailboxPolicy.when_full``/``max_wait``)."""
    circuit: str
    """The circuit breaker: ``closed``, ``open`` or ``half_open``."""
    circuit_trips: int
    """How many times the breaker has opened."""
    latency_ms: dict[str, float]
    """Time from send to reply of answered requests (every eighth is sampled): ``p50``, ``p90``, ``p99``,
    ``max``, in milliseconds."""
    latency_buckets: LatencyBuckets = msgspec.field(default_factory=LatencyBuckets)
    """The same samples counted under :data:`LATENCY_BOUNDS`, for a histogram that can be summed across workers."""


class RuntimeStats(msgspec.Struct, frozen=True, kw_only=True):
    """The runtime-wide bound on requests in flight, across every worker."""

    in_flight: int
    peak_in_flight: int
    """The most requests ever in flight at once: never above ``max_in_flight``."""
    max_in_flight: int


class LatencyHistogram:
    """Latencies in buckets an eighth of an octave wide: a few operations to record, percentiles within 7%."""

    __slots__ = ("counts", "largest", "seconds", "total")

    _SUB = 8
    _LOWEST = -32  # 2**-32 s, a quarter of a nanosecond
    _SIZE = (32 + 16) * _SUB  # up to 2**16 s

    def __init__(self) -> None:
        self.counts = [0] * self._SIZE
        self.total = 0
        self.largest = 0.0
        self.seconds = 0.0
        """The sum of the latencies recorded."""

    def record(self, seconds: float) -> None:
        """Count one latency."""
        mantissa, exponent = math.frexp(seconds)  # seconds = mantissa * 2**exponent, 0.5 <= mantissa < 1
        index = (exponent - self._LOWEST) * self._SUB + int((mantissa - 0.5) * 2 * self._SUB)
        self.counts[min(max(index, 0), self._SIZE - 1)] += 1
        self.total += 1
        self.seconds += seconds
        if seconds > self.largest:
            self.largest = seconds

    def buckets(self) -> LatencyBuckets:
        """Return the counts under each of :data:`LATENCY_BOUNDS`, consistent even while another thread records."""
        counts = self.counts[:]  # one copy, taken at once, that every figure is read from
        under: list[int] = []
        seen = start = 0
        for stop in _BOUND_INDEXES:
            seen += sum(counts[start:stop])
            under.append(seen)
            start = stop
        return LatencyBuckets(under=tuple(under), count=seen + sum(counts[start:]), sum_seconds=self.seconds)

    def percentile(self, fraction: float) -> float:
        """Return the latency that ``fraction`` of the recorded ones do not exceed (its bucket's middle), in seconds."""
        if not self.total:
            return 0.0
        wanted = fraction * self.total
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if count and seen >= wanted:
                exponent, sub = divmod(index, self._SUB)
                middle = math.ldexp(0.5 + (sub + 0.5) / (2 * self._SUB), exponent + self._LOWEST)
                return min(middle, self.largest)
        return self.largest

    def summary_ms(self) -> dict[str, float]:
        """``p50``, ``p90``, ``p99`` and ``max``, in milliseconds."""
        return {
            "p50": self.percentile(0.50) * 1000,
            "p90": self.percentile(0.90) * 1000,
            "p99": self.percentile(0.99) * 1000,
            "max": self.largest * 1000,
        }


_BOUND_INDEXES: Final = tuple((power + 1 - LatencyHistogram._LOWEST) * LatencyHistogram._SUB for power in _BOUND_POWERS)
"""The bucket each bound is the lower edge of (2**power is 0.5 * 2**(power + 1)): those before hold what is under it."""


class Counters:
    """The worker's live counters; mutated on the hot path, so plain attributes and dict increments."""

    __slots__ = (
        "answered",
        "batched",
        "batches",
        "culled",
        "deadline_drops",
        "errors",
        "holds",
        "in_flight",
        "last_crash",
        "latency",
        "max_batch",
        "ops",
        "overloaded",
        "reconnects_failed",
        "restarts",
        "retries",
    )

    def __init__(self) -> None:
        self.ops: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.answered = 0
        self.in_flight = 0
        self.batches = 0
        self.batched = 0
        self.max_batch = 0
        self.restarts = 0
        self.reconnects_failed = 0
        self.holds = 0
        self.last_crash: str | None = None
        self.deadline_drops = 0
        self.culled = 0
        self.retries = 0
        self.overloaded = 0
        self.latency = LatencyHistogram()

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

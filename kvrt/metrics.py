"""A runtime's figures for Prometheus: a collector that reads its stats each time it is scraped.

::

    import prometheus_client
    import kvrt.metrics

    kvrt.metrics.register(runtime)  # a Runtime or a DetachedRuntime, into prometheus_client's registry
    prometheus_client.start_http_server(9464)

The workers keep their own counters; a scrape reads one snapshot of them (``runtime.stats()`` and
``runtime.runtime_stats()``), so the collector keeps nothing of its own and costs nothing between
scrapes. The snapshot is a read of plain counters, safe from the exporter's thread. Every per-worker metric
has a ``worker`` label (the name given to ``spawn`` or ``open``); a worker that is closed drops out
of the next scrape. ``kvrt_circuit_state`` is a number for alerting on (:data:`CIRCUIT_STATES`).
Latencies are sampled, one answered request in eight: ``kvrt_request_seconds_count`` counts the
samples, ``kvrt_requests_total`` every request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Final, Protocol

from kvrt.extras import needs_extra
from kvrt.stats import LATENCY_BOUNDS, RuntimeStats, WorkerStats

with needs_extra("metrics", "kvrt.metrics"):
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

CIRCUIT_STATES: Final = {"closed": 0, "half_open": 1, "open": 2}
"""The value of ``kvrt_circuit_state`` for each breaker state: above 0, requests are refused or diverted."""
WORKER_STATES: Final = ("running", "restarting", "held_down", "unavailable", "stopped")
"""The states ``kvrt_worker_state`` has a series for (1 for the worker's state, 0 for the others)."""

_BOUNDS: Final = tuple(repr(bound) for bound in LATENCY_BOUNDS)
"""The ``le`` labels: for these bounds, ``repr`` is the Go formatting Prometheus (and prometheus_client) uses."""

_Figure = Callable[[WorkerStats], float]

_WORKER_COUNTERS: Final[tuple[tuple[str, str, _Figure], ...]] = (
    (
        "kvrt_restarts_total",
        "Times the worker's backend was reopened after a crash (an outage counts once).",
        lambda stats: stats.restarts,
    ),
    (
        "kvrt_reconnects_failed_total",
        "Attempts to reopen the worker's backend that failed, during outages.",
        lambda stats: stats.reconnects_failed,
    ),
    (
        "kvrt_holds_total",
        "Times the supervisor held the worker down for crashing past its restart intensity.",
        lambda stats: stats.holds,
    ),
    (
        "kvrt_batches_total",
        "Backend calls made for requests; kvrt_requests_total summed over op, divided by this, is the mean batch.",
        lambda stats: stats.batches,
    ),
    (
        "kvrt_culled_total",
        "Expired entries removed by background or on-demand culling.",
        lambda stats: stats.culled,
    ),
    (
        "kvrt_deadline_drops_total",
        "Requests whose deadline had passed before they reached the backend.",
        lambda stats: stats.deadline_drops,
    ),
    (
        "kvrt_retries_total",
        "Requests sent to the backend again after a transient failure.",
        lambda stats: stats.retries,
    ),
    (
        "kvrt_overloaded_total",
        "Requests refused because the worker's mailbox was full.",
        lambda stats: stats.overloaded,
    ),
    (
        "kvrt_circuit_trips_total",
        "Times the worker's circuit breaker opened.",
        lambda stats: stats.circuit_trips,
    ),
)

_WORKER_GAUGES: Final[tuple[tuple[str, str, _Figure], ...]] = (
    (
        "kvrt_worker_up",
        "1 if the worker is running, 0 if it is restarting, held down, unavailable or stopped.",
        lambda stats: stats.state == "running",
    ),
    (
        "kvrt_mailbox_depth",
        "Requests queued in the worker's mailbox.",
        lambda stats: stats.mailbox_depth,
    ),
    (
        "kvrt_mailbox_size",
        "Requests the worker's mailbox holds at most.",
        lambda stats: stats.mailbox_size,
    ),
    (
        "kvrt_mailbox_waiting",
        "Callers waiting for room in the worker's full mailbox (not counted in kvrt_mailbox_depth).",
        lambda stats: stats.waiting_for_room,
    ),
    (
        "kvrt_in_flight",
        "Requests the worker took from its mailbox and has not answered yet.",
        lambda stats: stats.in_flight,
    ),
    (
        "kvrt_circuit_state",
        "The worker's circuit breaker: 0 closed, 1 half-open (one probe let through), 2 open.",
        lambda stats: CIRCUIT_STATES[stats.circuit],
    ),
    (
        "kvrt_batch_size_max",
        "The most requests the worker has merged into one backend call.",
        lambda stats: stats.max_batch,
    ),
)

_RUNTIME_GAUGES: Final[tuple[tuple[str, str, Callable[[RuntimeStats], float]], ...]] = (
    (
        "kvrt_runtime_in_flight",
        "Requests sent and not yet answered, across every worker of the runtime.",
        lambda stats: stats.in_flight,
    ),
    (
        "kvrt_runtime_peak_in_flight",
        "The most requests ever in flight at once in the runtime.",
        lambda stats: stats.peak_in_flight,
    ),
    (
        "kvrt_runtime_max_in_flight",
        "The runtime's cap on requests in flight (its max_in_flight): callers past it wait their turn.",
        lambda stats: stats.max_in_flight,
    ),
)


class Observed(Protocol):
    """What the collector reads: a :class:`~kvrt.Runtime` or a :class:`~kvrt.DetachedRuntime`."""

    def stats(self) -> Mapping[str, WorkerStats]:
        """Return every worker's snapshot, by name."""
        ...

    def runtime_stats(self) -> RuntimeStats:
        """Return the runtime-wide numbers."""
        ...


class KvrtCollector:
    """A ``prometheus_client`` collector of one runtime's metrics, read from its stats at each scrape.

    Register it in a registry (``registry.register(KvrtCollector(runtime))``, or :func:`register`).
    One per runtime in a registry: two would export the same names.
    """

    def __init__(self, runtime: Observed) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family, from one snapshot of the runtime taken now."""
        return _families(self.runtime.stats(), self.runtime.runtime_stats())

    def describe(self) -> Iterator[Metric]:
        """Yield the metric families without samples: what the registry checks for names already taken."""
        return _families({}, None)


def register(runtime: Observed, registry: CollectorRegistry | None = None) -> KvrtCollector:
    """Export ``runtime``'s metrics from ``registry`` (``prometheus_client``'s default one unless given).

    Returns the collector, for ``registry.unregister`` once the runtime is gone.
    """
    collector = KvrtCollector(runtime)
    (REGISTRY if registry is None else registry).register(collector)
    return collector


def _families(workers: Mapping[str, WorkerStats], runtime: RuntimeStats | None) -> Iterator[Metric]:
    """Turn one snapshot into metric families (with no samples for an empty one)."""
    requests = CounterMetricFamily(
        "kvrt_requests_total",
        "Requests the worker answered, by kind; those that failed are in kvrt_request_errors_total.",
        labels=("worker", "backend", "op"),
    )
    errors = CounterMetricFamily(
        "kvrt_request_errors_total", "Requests that failed, by kvrt error class.", labels=("worker", "error")
    )
    latency = HistogramMetricFamily(
        "kvrt_request_seconds",
        "Time from send to reply of answered requests, sampled: one in eight is measured, so _count counts "
        "the samples (kvrt_requests_total counts every request).",
        labels=("worker",),
    )
    state = GaugeMetricFamily(
        "kvrt_worker_state", "1 for the state the worker is in, 0 for the others.", labels=("worker", "state")
    )
    plain: list[tuple[CounterMetricFamily | GaugeMetricFamily, _Figure]] = [
        (CounterMetricFamily(name, text, labels=("worker",)), figure) for name, text, figure in _WORKER_COUNTERS
    ]
    plain += [(GaugeMetricFamily(name, text, labels=("worker",)), figure) for name, text, figure in _WORKER_GAUGES]
    for name, stats in workers.items():
        for op, count in stats.ops.items():
            requests.add_metric((name, stats.backend, op), count)
        for error, count in stats.errors.items():
            errors.add_metric((name, error), count)
        sampled = stats.latency_buckets
        under = zip(_BOUNDS, sampled.under, strict=True) if sampled.under else ()  # () from a snapshot without them
        latency.add_metric((name,), [*under, ("+Inf", sampled.count)], sampled.sum_seconds)
        for known in dict.fromkeys((*WORKER_STATES, stats.state)):
            state.add_metric((name, known), float(known == stats.state))
        for family, figure in plain:
            family.add_metric((name,), float(figure(stats)))
    yield requests
    yield errors
    yield latency
    yield state
    for family, _ in plain:
        yield family
    for name, text, overall in _RUNTIME_GAUGES:
        yield GaugeMetricFamily(name, text, value=None if runtime is None else float(overall(runtime)))

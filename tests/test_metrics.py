"""The Prometheus collector, scraped: exposition text parsed back, exact counts, labels and gauges."""

from __future__ import annotations

import math
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import prometheus_client
import pytest
import redis
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

import kvrt
from kvrt import MailboxPolicy, RestartPolicy, Runtime
from kvrt.backends.disk import DiskBackend
from kvrt.backends.memory import MemoryBackend
from kvrt.backends.redis import RedisBackend
from kvrt.errors import KeyValueStoreError
from kvrt.metrics import KvrtCollector, register
from kvrt.stats import LATENCY_BOUNDS, LatencyBuckets, LatencyHistogram, RuntimeStats, WorkerStats
from kvrt.testing.conformance import eventually, sleep_past
from kvrt.testing.servers import RedisTarget

pytestmark = pytest.mark.anyio

Labels = tuple[tuple[str, str], ...]


class Scrape:
    """One exposition, parsed back: each sample's value by name and labels, each family's type and help."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, Labels], float] = {}
        self.types: dict[str, str] = {}
        self.help: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            self.help[family.name] = family.documentation
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                assert key not in self.samples, f"duplicate sample {key}"
                self.samples[key] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples[(name, tuple(sorted(labels.items())))]

    def named(self, name: str) -> dict[Labels, float]:
        return {labels: value for (sample, labels), value in self.samples.items() if sample == name}

    def buckets(self, worker: str) -> list[tuple[float, float]]:
        found = [
            (float(dict(labels)["le"]), value)
            for labels, value in self.named("kvrt_request_seconds_bucket").items()
            if dict(labels)["worker"] == worker
        ]
        return sorted(found)


def scrape(registry: CollectorRegistry) -> Scrape:
    return Scrape(generate_latest(registry).decode())


def sampled(requests: int) -> int:
    """Latencies a worker samples of ``requests`` answered one after another: the first, then every eighth."""
    return math.ceil(requests / 8)


async def test_a_scrape_counts_exactly_what_memory_and_disk_workers_did(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    async with Runtime(max_in_flight=500, mailbox=MailboxPolicy(size=64)) as runtime:
        register(runtime, registry)
        cache = await runtime.spawn(MemoryBackend(), name="cache")
        files = await runtime.spawn(DiskBackend(tmp_path / "disk"), name="files")
        for i in range(10):
            await cache.put(f"k{i}", {"i": i})
        await cache.put_many(["a", "b"], [{"v": 1}, {"v": 2}])
        found = [await cache.get(key) for key in ("k0", "k1", "a", "b", "missing", "absent")]
        assert found.count(None) == 2
        for key in ("k0", "k1", "nothing"):
            await cache.delete(key)
        assert len(await cache.keys()) == 10
        for i in range(5):
            await files.put(f"short{i}", {"i": i}, ttl=0.2)
        expires = time.time() + 0.2
        await files.put("kept", {"v": 1})
        await files.put("later", {"v": 2}, ttl=600)
        await sleep_past(expires)
        await files.cull()
        await eventually(lambda: runtime.stats()["files"].culled == 5)  # on demand, or by the background schedule

        metrics = scrape(registry)

    assert metrics.types["kvrt_requests"] == "counter"
    assert metrics.named("kvrt_requests_total") == {
        (("backend", "MemoryBackend"), ("op", "put"), ("worker", "cache")): 11,
        (("backend", "MemoryBackend"), ("op", "get"), ("worker", "cache")): 6,
        (("backend", "MemoryBackend"), ("op", "delete"), ("worker", "cache")): 3,
        (("backend", "MemoryBackend"), ("op", "keys"), ("worker", "cache")): 1,
        (("backend", "DiskBackend"), ("op", "put"), ("worker", "files")): 7,
        (("backend", "DiskBackend"), ("op", "cull"), ("worker", "files")): 1,
    }
    assert metrics.named("kvrt_request_errors_total") == {}
    assert metrics.named("kvrt_batches_total") == {(("worker", "cache"),): 21, (("worker", "files"),): 8}
    assert metrics.named("kvrt_batch_size_max") == {(("worker", "cache"),): 1, (("worker", "files"),): 1}
    assert metrics.named("kvrt_culled_total") == {(("worker", "cache"),): 0, (("worker", "files"),): 5}
    for name in ("cache", "files"):
        assert metrics("kvrt_worker_up", worker=name) == 1
        assert metrics("kvrt_worker_state", worker=name, state="running") == 1
        assert metrics("kvrt_worker_state", worker=name, state="restarting") == 0
        assert metrics("kvrt_circuit_state", worker=name) == 0
        assert metrics("kvrt_mailbox_size", worker=name) == 64
        for idle in ("kvrt_mailbox_depth", "kvrt_mailbox_waiting", "kvrt_in_flight"):
            assert metrics(idle, worker=name) == 0
        for never in ("kvrt_restarts_total", "kvrt_request_errors_total", "kvrt_retries_total", "kvrt_holds_total"):
            assert metrics.named(never).get((("worker", name),), 0) == 0
    assert metrics.types["kvrt_mailbox_depth"] == "gauge"
    assert metrics("kvrt_runtime_in_flight") == 0
    assert metrics("kvrt_runtime_peak_in_flight") == 1  # one request at a time
    assert metrics("kvrt_runtime_max_in_flight") == 500

    assert metrics.types["kvrt_request_seconds"] == "histogram"
    assert "one in eight" in metrics.help["kvrt_request_seconds"]
    for name, requests in (("cache", 21), ("files", 8)):
        buckets = metrics.buckets(name)
        assert [bound for bound, _ in buckets] == [*LATENCY_BOUNDS, math.inf]
        counts = [count for _, count in buckets]
        assert counts == sorted(counts), "cumulative"
        assert counts[-1] == metrics("kvrt_request_seconds_count", worker=name) == sampled(requests)
        assert counts[0] < counts[-1], "some latency is over 7.6 µs"
        assert 0 < metrics("kvrt_request_seconds_sum", worker=name) < counts[-1] * 1.0


class Snapshots:
    """A stats source that returns fixed snapshots: what a runtime in any state would, for the mapping alone."""

    def __init__(self, *workers: WorkerStats) -> None:
        self.workers = {worker.name: worker for worker in workers}

    def stats(self) -> dict[str, WorkerStats]:
        return self.workers

    def runtime_stats(self) -> RuntimeStats:
        return RuntimeStats(in_flight=3, peak_in_flight=9, max_in_flight=10)


def snapshot(name: str, **figures: Any) -> WorkerStats:
    """A worker's snapshot: running, circuit closed, every count zero, but for ``figures``."""
    counts = "mailbox_depth mailbox_size in_flight restarts reconnects_failed holds batches max_batch"
    counts += " deadline_drops culled retries overloaded circuit_trips"
    plain: dict[str, Any] = dict.fromkeys(counts.split(), 0)
    plain |= {"backend": "RedisBackend", "state": "running", "circuit": "closed", "ops": {}, "errors": {}}
    plain |= {"last_crash": None, "mean_batch": 0.0, "latency_ms": {}}
    return WorkerStats(name=name, **(plain | figures))


def test_every_figure_of_a_snapshot_is_its_own_metric() -> None:
    figures = {
        "restarts": 1,
        "reconnects_failed": 2,
        "holds": 3,
        "batches": 4,
        "culled": 5,
        "deadline_drops": 6,
        "retries": 7,
        "overloaded": 8,
        "circuit_trips": 9,
        "mailbox_depth": 10,
        "mailbox_size": 11,
        "waiting_for_room": 12,
        "in_flight": 13,
        "max_batch": 14,
    }
    over_16_s = LatencyBuckets(under=(0,) * 20 + (3, 4), count=6, sum_seconds=200.5)
    held = snapshot("held", state="held_down", circuit="open", latency_buckets=over_16_s, **figures)
    fresh = LatencyBuckets(under=(0,) * 22)  # nothing sampled yet
    errors = {"DeadlineExceededError": 2}
    probing = snapshot("probing", state="restarting", circuit="half_open", errors=errors, latency_buckets=fresh)
    odd = snapshot("odd", state="draining")  # a state this module does not know still gets its series
    registry = CollectorRegistry()
    registry.register(KvrtCollector(Snapshots(held, probing, odd)))
    metrics = scrape(registry)

    names = {
        "restarts": "kvrt_restarts_total",
        "reconnects_failed": "kvrt_reconnects_failed_total",
        "holds": "kvrt_holds_total",
        "batches": "kvrt_batches_total",
        "culled": "kvrt_culled_total",
        "deadline_drops": "kvrt_deadline_drops_total",
        "retries": "kvrt_retries_total",
        "overloaded": "kvrt_overloaded_total",
        "circuit_trips": "kvrt_circuit_trips_total",
        "mailbox_depth": "kvrt_mailbox_depth",
        "mailbox_size": "kvrt_mailbox_size",
        "waiting_for_room": "kvrt_mailbox_waiting",
        "in_flight": "kvrt_in_flight",
        "max_batch": "kvrt_batch_size_max",
    }
    assert {field: metrics(name, worker="held") for field, name in names.items()} == figures
    assert {name: metrics(name, worker="probing") for name in names.values()} == dict.fromkeys(names.values(), 0)
    assert [metrics("kvrt_circuit_state", worker=name) for name in ("held", "probing", "odd")] == [2, 1, 0]
    assert [metrics("kvrt_worker_up", worker=name) for name in ("held", "probing", "odd")] == [0, 0, 0]
    held_states = {
        dict(labels)["state"]: value
        for labels, value in metrics.named("kvrt_worker_state").items()
        if dict(labels)["worker"] == "held"
    }
    assert held_states == {"running": 0, "restarting": 0, "held_down": 1, "unavailable": 0, "stopped": 0}
    assert metrics("kvrt_worker_state", worker="odd", state="draining") == 1
    assert metrics("kvrt_worker_state", worker="odd", state="running") == 0
    assert metrics.named("kvrt_request_errors_total") == {
        (("error", "DeadlineExceededError"), ("worker", "probing")): 2
    }
    assert metrics.buckets("held")[-3:] == [(8.0, 3), (16.0, 4), (math.inf, 6)]
    assert metrics("kvrt_request_seconds_count", worker="held") == 6
    assert metrics("kvrt_request_seconds_sum", worker="held") == 200.5
    assert metrics.buckets("probing") == [(bound, 0) for bound in (*LATENCY_BOUNDS, math.inf)]
    assert metrics.buckets("odd") == [(math.inf, 0)], "a snapshot without buckets (an older kvrt's) has +Inf alone"
    assert [metrics(f"kvrt_runtime_{name}") for name in ("in_flight", "peak_in_flight", "max_in_flight")] == [3, 9, 10]


def test_latency_buckets_count_exactly_what_is_under_each_bound() -> None:
    histogram = LatencyHistogram()
    latencies = [1e-12, 3e-6, 1e6, 100.0, 16.0, 15.99]
    for bound in LATENCY_BOUNDS:
        latencies += [bound, bound * (1 - 1e-9), bound * 1.3]
    for latency in latencies:
        histogram.record(latency)
    buckets = histogram.buckets()
    assert buckets.under == tuple(sum(latency < bound for latency in latencies) for bound in LATENCY_BOUNDS)
    assert buckets.count == len(latencies)
    assert buckets.sum_seconds == pytest.approx(sum(latencies))
    assert LatencyHistogram().buckets().under == (0,) * len(LATENCY_BOUNDS)


@contextmanager
def restricted_user(server: RedisTarget) -> Iterator[tuple[str, str]]:
    """A Redis user that may run anything but SET (so a put fails in the backend); removed afterwards."""
    host, port = server.nodes[0]
    user, password = f"kvrt-metrics-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    with redis.Redis(host=host, port=port) as admin:
        admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all", "-set")
        try:
            yield user, password
        finally:
            admin.execute_command("ACL", "DELUSER", user)


async def test_redis_errors_restarts_and_requests_in_flight_show_in_the_scrape(redis_server: RedisTarget) -> None:
    host, port = redis_server.nodes[0]
    registry = CollectorRegistry()
    restart = RestartPolicy(backoff_initial=0.001, backoff_max=0.01)
    with restricted_user(redis_server) as (user, password), redis.Redis(host=host, port=port) as admin:
        async with Runtime(restart=restart) as runtime:
            register(runtime, registry)
            store = await runtime.spawn(RedisBackend(f"redis://{user}:{password}@{host}:{port}/0"), name="redis")
            assert await store.get("absent") is None
            for key in ("denied1", "denied2"):
                with pytest.raises(KeyValueStoreError):
                    await store.put(key, {"v": 1})

            admin.execute_command("CLIENT", "PAUSE", 800, "ALL")  # the server holds every reply back a while
            async with anyio.create_task_group() as group:
                for i in range(5):
                    group.start_soon(store.get, f"paused{i}")

                def held() -> bool:
                    metrics = scrape(registry)
                    waiting = metrics("kvrt_in_flight", worker="redis") + metrics("kvrt_mailbox_depth", worker="redis")
                    return metrics("kvrt_runtime_in_flight") == 5 and waiting == 5

                await eventually(held, within=0.7)

            admin.client_kill_filter(user=user)
            assert await store.get("absent") is None  # crashes on the dead connection; retried after the restart

            metrics = scrape(registry)
            kind = runtime.stats()["redis"].backend  # under trio, "RedisBackend on an asyncio thread"
    assert kind.startswith("RedisBackend")
    assert metrics.named("kvrt_requests_total") == {(("backend", kind), ("op", "get"), ("worker", "redis")): 7}
    assert metrics.named("kvrt_request_errors_total") == {(("error", "KeyValueStoreError"), ("worker", "redis")): 2}
    assert metrics("kvrt_restarts_total", worker="redis") == 1
    assert metrics("kvrt_retries_total", worker="redis") == 1
    assert metrics("kvrt_runtime_in_flight") == 0
    assert metrics("kvrt_runtime_peak_in_flight") == 5
    assert metrics("kvrt_worker_up", worker="redis") == 1
    assert password not in metrics.text
    assert user not in metrics.text


OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
"""What Prometheus asks for first: the exporter answers in OpenMetrics, whose parser is the stricter."""


def fetch(port: int, accept: str = "text/plain") -> tuple[str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode()


async def test_a_detached_runtime_is_scraped_over_http_from_the_exporters_thread() -> None:
    detached = kvrt.DetachedRuntime(max_in_flight=100)
    registry = CollectorRegistry()
    register(detached, registry)
    server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        kind, text = await anyio.to_thread.run_sync(fetch, server.server_port)
        assert kind.startswith("text/plain")
        before = Scrape(text)
        assert before("kvrt_runtime_max_in_flight") == 100
        assert before("kvrt_runtime_in_flight") == 0
        assert before.named("kvrt_requests_total") == {}, "no worker before the first call"

        handle = detached.open(MemoryBackend(), name="m")
        for i in range(9):
            await handle.put(f"k{i}", {"i": i})
        assert await handle.get("k3") == {"i": 3}
        after = Scrape((await anyio.to_thread.run_sync(fetch, server.server_port))[1])
        kind, text = await anyio.to_thread.run_sync(fetch, server.server_port, OPENMETRICS)
        assert kind.startswith("application/openmetrics-text")
        strict = {family.name: family for family in openmetrics_families(text)}  # type: ignore[no-untyped-call]
        assert [(sample.labels["op"], sample.value) for sample in strict["kvrt_requests"].samples] == [
            ("put", 9),
            ("get", 1),
        ]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        await detached.aclose()
    assert after.named("kvrt_requests_total") == {
        (("backend", "MemoryBackend"), ("op", "put"), ("worker", "m")): 9,
        (("backend", "MemoryBackend"), ("op", "get"), ("worker", "m")): 1,
    }
    assert after("kvrt_request_seconds_count", worker="m") == sampled(10)
    assert after("kvrt_worker_up", worker="m") == 1
    assert after("kvrt_runtime_max_in_flight") == 100


def test_register_takes_the_default_registry_and_a_registry_refuses_a_second_collector() -> None:
    detached = kvrt.DetachedRuntime(max_in_flight=77)  # never started: its numbers are the cap and zeros
    collector = register(detached)
    try:
        assert REGISTRY.get_sample_value("kvrt_runtime_max_in_flight") == 77
        with pytest.raises(ValueError, match="Duplicated timeseries"):
            register(detached)
    finally:
        REGISTRY.unregister(collector)
    registry = CollectorRegistry()  # no auto-describe: the names come from describe()
    registry.register(KvrtCollector(detached))
    with pytest.raises(ValueError, match="kvrt_requests_total"):
        registry.register(KvrtCollector(detached))


def test_without_prometheus_client_the_import_names_the_extra() -> None:
    script = (
        "import sys\nsys.modules['prometheus_client'] = None\nfrom kvrt.errors import MissingExtraError\n"
        "try:\n    import kvrt.metrics\nexcept MissingExtraError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert "kvrt.metrics needs the 'metrics' extra (prometheus_client is not installed)" in result.stdout, (
        result.stderr[-2000:]
    )
    assert "pip install 'kvrt[metrics]'" in result.stdout

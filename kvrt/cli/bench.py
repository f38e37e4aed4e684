"""``kvrt bench``: the standard workload (kvrt.workload) on each URL's backend, against the reference and raw driver.

Each URL is measured through kvrt and, with ``--against``, through the reference's store for its
scheme (py-key-value-aio: ``MemoryStore``, ``DiskStore``, ``RedisStore``) and through the raw driver
(a dict, ``diskcache.Cache``, a ``redis.asyncio`` client). For each count of callers the subjects
take turns, each fresh, so machine noise falls on all of them. The command prints a table per URL,
writes ``results.json`` into ``--out`` and, with the ``plots`` extra, the charts kvrt.plots draws.

The runs write keys into the collections ``kvrt-bench-kvrt`` (and ``-reference``, ``-raw``) of the
URL's store and delete them after; the reference and the raw driver on a ``disk://`` URL get a
fresh directory next to the URL's, removed after. Without the ``plots`` extra the table and the
JSON are still written, one stderr line says what the PNGs need, and the exit status is 0: the
measurements, the command's work, are complete.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec

import kvrt
from kvrt import workload
from kvrt.cli.commands import OK, Commands, positive_int
from kvrt.cli.target import add_loop_option, described, failed, opened, secrets_in
from kvrt.cli.target import run as run_on_loop
from kvrt.errors import MissingExtraError
from kvrt.extras import install_hint
from kvrt.urls import parse_url, redacted
from kvrt.workload import Failed, Measured, Results, Run, Store

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID
    from rich.table import Table

SUBJECTS = ("kvrt", "reference", "raw")
"""Who a URL's backend is measured through, in the order they take turns."""
DEFAULT_CALLERS = (1, 4, 16, 64, 256)
IDLE_SECONDS = 0.5
"""How long the idle host loop is watched first: the machine's own floor for the stall column."""
RESULTS_FILE = "results.json"

_REDIS = {"redis": "redis", "rediss": "rediss", "valkey": "redis", "valkeys": "rediss"}
"""The Redis schemes the reference and redis-py take, as redis-py spells them."""
_KVRT_PARAMETERS = {"pool_size", "request_timeout", "name", "default_collection"}
"""Query parameters kvrt reads itself and redis-py would refuse."""
_DELETE_BATCH = 1_000
_RAW_CONNECTIONS = 1_024
"""The raw client's pool: callers past it wait for a connection (as bench/bench_scale.py's raw redis-py does)."""

Opener = Callable[[list[str], str], AbstractAsyncContextManager[Store]]
"""Opens a subject for one run: given the keys it will write and the collection, it cleans up after them."""


@dataclass(frozen=True)
class Subject:
    """One way of reaching a URL's store."""

    name: str
    open: Opener


def add_commands(commands: Commands) -> None:
    """Add ``kvrt bench``."""
    bench = commands.add_parser(
        "bench",
        help="measure the standard workload on each URL's backend, against the reference's store and the raw driver",
        description="Run the standard workload (concurrent callers putting a 3-field dict, then getting it back) "
        "on each URL's backend through kvrt, and with --against through the reference's store and the raw "
        "driver; print ops/s, p50/p99 latency and the host loop's worst stall, and write results.json and "
        "charts (the 'plots' extra) into --out. Keys go into kvrt-bench-* collections and are deleted after.",
    )
    bench.add_argument("urls", nargs="+", metavar="URL", help="a store URL, as kvrt.open takes it")
    bench.add_argument(
        "--callers",
        type=_counts,
        default=DEFAULT_CALLERS,
        metavar="N,N,...",
        help="counts of concurrent callers (default 1,4,16,64,256)",
    )
    bench.add_argument(
        "--against",
        type=_against,
        default=(),
        metavar="reference,raw",
        help="also measure the reference's store (py-key-value-aio) and/or the raw driver for each URL's scheme",
    )
    bench.add_argument(
        "--keys", type=positive_int, default=10_000, metavar="N", help="keys per run, shared by its callers (10,000)"
    )
    bench.add_argument("--out", default="kvrt-bench", metavar="DIR", help="where results and charts go (./kvrt-bench)")
    add_loop_option(bench)
    bench.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the bench on ``args.loop``; return its exit status."""
    return run_on_loop(_bench, args)


def _counts(text: str) -> tuple[int, ...]:
    counts = tuple(sorted({positive_int(part.strip()) for part in text.split(",") if part.strip()}))
    if not counts:
        raise argparse.ArgumentTypeError("--callers takes counts such as 1,4,16")
    return counts


def _against(text: str) -> tuple[str, ...]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in SUBJECTS[1:]]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"--against takes reference and/or raw, not {text!r}")
    return tuple(subject for subject in SUBJECTS[1:] if subject in chosen)


async def _bench(args: argparse.Namespace) -> int:
    try:
        return await _measure(args)
    except Exception as error:  # one masked line, whichever URL's driver raised it
        return failed(error, secrets_in(*args.urls))


async def _measure(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    plans = [(redacted(url), *_subjects(url, args.against, args.loop)) for url in args.urls]  # bad URLs stop here
    for _, _, notes in plans:
        for note in notes:
            print(f"kvrt bench: {note}", file=sys.stderr)
    gc.collect()
    gc.freeze()  # the libraries imported so far make every full collection slower, for every subject alike
    idle = await workload.idle_stall(IDLE_SECONDS)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, TimeRemainingColumn(), console=Console(stderr=True), auto_refresh=False) as progress:
        measured, failures = await _run_all([(label, subjects) for label, subjects, _ in plans], args, progress)
    results = Results(
        kvrt=kvrt.__version__, loop=args.loop, keys=args.keys, idle_stall_ms=idle, measured=measured, failed=failures
    )
    _print(results)
    _write(results, Path(args.out))
    return OK


async def _run_all(
    plans: list[tuple[str, list[Subject]]], args: argparse.Namespace, progress: Progress
) -> tuple[list[Measured], list[Failed]]:
    """Run the workload on every subject of every URL, for each count of callers, the subjects taking turns."""
    runs_each = len(workload.OPERATIONS) * args.keys
    task = progress.add_task(
        "starting", total=sum(len(subjects) for _, subjects in plans) * len(args.callers) * runs_each
    )
    secrets = secrets_in(*args.urls)
    measured: list[Measured] = []
    failures: list[Failed] = []
    for label, subjects in plans:
        for callers in args.callers:
            for subject in subjects:
                progress.update(task, description=f"{label}  {subject.name}  {callers} callers")
                progress.refresh()  # drawn between runs, never during one: it costs no run anything
                runs: list[Run] = []
                try:
                    await _one(subject, callers, args.keys, _advancing(progress, task, runs))
                except Exception as error:
                    if subject.name == "kvrt":
                        raise  # kvrt's own failure is the command's
                    failures.append(
                        Failed(backend=label, subject=subject.name, callers=callers, error=described(error, secrets))
                    )
                    progress.update(task, advance=runs_each - sum(run.operations for run in runs))
                measured += (Measured(backend=label, subject=subject.name, run=run) for run in runs)
    return measured, failures


def _advancing(progress: Progress, task: TaskID, runs: list[Run]) -> Callable[[Run], None]:
    """Return what hears each run as it ends: it keeps the run and moves the bar on by its operations."""

    def done(run: Run) -> None:
        runs.append(run)
        progress.update(task, advance=run.operations)
        progress.refresh()

    return done


async def _one(subject: Subject, callers: int, keys: int, done: Callable[[Run], None]) -> None:
    """Run the workload once on a fresh ``subject``."""
    names = [key for own in workload.key_names(callers, keys) for key in own]
    collection = f"kvrt-bench-{subject.name}"
    async with subject.open(names, collection) as store:
        await workload.run_workload(store, callers, keys, collection=collection, after=done)


def _print(results: Results) -> None:
    from rich.console import Console

    out = Console(width=None if sys.stdout.isatty() else 120)  # in a pipe, each row on one line
    for backend in dict.fromkeys(measured.backend for measured in results.measured):
        failed = [failure for failure in results.failed if failure.backend == backend]
        out.print(_table(backend, [m for m in results.measured if m.backend == backend], failed))
    out.print(
        f"Idle host loop: worst stall {results.idle_stall_ms:.2f} ms over {IDLE_SECONDS} s "
        "(the machine's own floor for the stall column).",
        highlight=False,
    )
    for failure in results.failed:
        print(
            f"kvrt bench: {failure.backend} ({failure.subject}, {failure.callers} callers) failed: {failure.error}",
            file=sys.stderr,
        )
    for measured in results.measured:
        if measured.run.missing:
            print(
                f"kvrt bench: {measured.backend} ({measured.subject}, {measured.run.callers} callers): "
                f"{measured.run.missing:,} of {measured.run.operations:,} gets found nothing "
                "(the store did not keep them: evicted, expired or discarded)",
                file=sys.stderr,
            )


def _table(backend: str, measured: list[Measured], failed: list[Failed]) -> Table:
    from rich.table import Table

    reference = {(m.run.callers, m.run.op): m.run.ops_per_second for m in measured if m.subject == "reference"}
    table = Table(title=backend, title_justify="left", title_style="bold")
    table.add_column("subject")
    table.add_column("callers", justify="right")
    table.add_column("op")
    table.add_column("ops/s", justify="right")
    if reference:
        table.add_column("vs reference", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    table.add_column("worst stall ms", justify="right")
    order = {name: index for index, name in enumerate(SUBJECTS)}
    rows = sorted(measured, key=lambda m: (m.run.callers, workload.OPERATIONS.index(m.run.op), order[m.subject]))
    for m in rows:
        run = m.run
        row = [m.subject, f"{run.callers:,}", run.op, f"{run.ops_per_second:,.0f}"]
        if reference:
            theirs = reference.get((run.callers, run.op))
            row.append(f"{run.ops_per_second / theirs:.2f}x" if theirs else "")
        row += [_ms(run.latency_ms["p50"]), _ms(run.latency_ms["p99"]), _ms(run.worst_stall_ms)]
        table.add_row(*row)
    for failure in failed:  # the reason is on stderr, in full
        table.add_row(failure.subject, f"{failure.callers:,}", "", "failed", style="red")
    return table


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def _write(results: Results, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS_FILE).write_bytes(msgspec.json.format(msgspec.json.encode(results), indent=2) + b"\n")
    try:
        from kvrt import plots

        written = plots.draw(results, out)
    except MissingExtraError:
        print(
            f"kvrt bench: PNGs need the 'plots' extra: {install_hint('plots')} ({RESULTS_FILE} is written)",
            file=sys.stderr,
        )
        return
    names = ", ".join(path.name for path in written)
    print(f"kvrt bench: wrote {RESULTS_FILE}, {names} into {out}", file=sys.stderr)


# --- subjects ---------------------------------------------------------------------------------


def _subjects(url: str, against: Sequence[str], loop: str) -> tuple[list[Subject], list[str]]:
    """Return the subjects ``url`` is measured through, and a note for each asked for that it cannot have."""
    backend, _ = parse_url(url)
    scheme = urlsplit(url).scheme.lower()
    subjects = [Subject("kvrt", _kvrt(url))]
    notes = []
    for name in against:
        opener, missing = (_reference if name == "reference" else _raw)(url, scheme, backend, loop)
        if opener is not None:
            subjects.append(Subject(name, opener))
        else:
            notes.append(f"{missing}: {redacted(url)} runs without it")
    return subjects, notes


def _reference(url: str, scheme: str, backend: Any, loop: str) -> tuple[Opener | None, str]:
    if scheme not in ("memory", "disk", *_REDIS):
        return None, f"no reference store for {scheme}:// URLs"
    if scheme in _REDIS and loop != "asyncio":
        return None, "the reference's RedisStore runs on asyncio only"
    try:
        import key_value.aio  # noqa: F401
    except ImportError:
        return None, "the reference (py-key-value-aio) is not installed"
    if scheme == "memory":
        return _reference_memory, ""
    if scheme == "disk":
        return _reference_disk(backend.directory), ""
    return _reference_redis(_driver_url(url)), ""


def _raw(url: str, scheme: str, backend: Any, loop: str) -> tuple[Opener | None, str]:
    if scheme not in ("memory", "disk", *_REDIS):
        return None, f"no raw driver for {scheme}:// URLs"
    if scheme in _REDIS and loop != "asyncio":
        return None, "the raw redis.asyncio client runs on asyncio only"
    if scheme == "memory":
        return _raw_memory, ""
    if scheme == "disk":
        return _raw_disk(backend.directory), ""
    return _raw_redis(_driver_url(url)), ""


def _driver_url(url: str) -> str:
    """Return ``url`` as redis-py takes it: its own scheme, without the parameters only kvrt reads."""
    parts = urlsplit(url)
    query = [(name, value) for name, value in parse_qsl(parts.query) if name not in _KVRT_PARAMETERS]
    return urlunsplit(parts._replace(scheme=_REDIS[parts.scheme.lower()], query=urlencode(query)))


async def _delete(store: Any, keys: list[str], collection: str) -> None:
    for start in range(0, len(keys), _DELETE_BATCH):
        await store.delete_many(keys[start : start + _DELETE_BATCH], collection=collection)


@asynccontextmanager
async def _cleaned(store: Any, keys: list[str], collection: str) -> AsyncIterator[Store]:
    """Yield ``store``, then delete ``keys``: after a failed run too, where the cleanup's own failure is not news."""
    try:
        yield store
    except Exception:
        with contextlib.suppress(Exception):
            await _delete(store, keys, collection)
        raise
    await _delete(store, keys, collection)


def _kvrt(url: str) -> Opener:
    @asynccontextmanager
    async def open_kvrt(keys: list[str], collection: str) -> AsyncIterator[Store]:
        async with opened(url) as handle, _cleaned(handle, keys, collection) as store:
            yield store

    return open_kvrt


def _beside(directory: Path) -> tempfile.TemporaryDirectory[str]:
    """Return a fresh temporary directory on the same file system as ``directory`` (its parent), where it can."""
    parent = directory.resolve().parent
    return tempfile.TemporaryDirectory(prefix=".kvrt-bench-", dir=parent if parent.is_dir() else None)


@asynccontextmanager
async def _reference_memory(keys: list[str], collection: str) -> AsyncIterator[Store]:
    from key_value.aio.stores.memory import MemoryStore

    yield MemoryStore()


def _reference_disk(directory: Path) -> Opener:
    @asynccontextmanager
    async def open_reference_disk(keys: list[str], collection: str) -> AsyncIterator[Store]:
        from key_value.aio.stores.disk import DiskStore

        with _beside(directory) as fresh:
            store = DiskStore(directory=fresh)
            try:
                yield store
            finally:
                await store.close()

    return open_reference_disk


def _reference_redis(url: str) -> Opener:
    @asynccontextmanager
    async def open_reference_redis(keys: list[str], collection: str) -> AsyncIterator[Store]:
        from key_value.aio.stores.redis import RedisStore

        store = RedisStore(url=url)
        try:
            async with _cleaned(store, keys, collection) as cleaned:
                yield cleaned
        finally:
            await store.close()

    return open_reference_redis


class _Dict:
    """The raw form of memory: a dict, no runtime, no copy."""

    def __init__(self) -> None:
        self.data: dict[tuple[str | None, str], dict[str, Any]] = {}

    async def put(self, key: str, value: dict[str, Any], *, collection: str | None = None) -> None:
        self.data[collection, key] = value

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        return self.data.get((collection, key))


@asynccontextmanager
async def _raw_memory(keys: list[str], collection: str) -> AsyncIterator[Store]:
    yield _Dict()


class _Cache:
    """The raw form of disk: a ``diskcache.Cache``, called on the loop as its users call it."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    async def put(self, key: str, value: dict[str, Any], *, collection: str | None = None) -> None:
        self.cache.set(f"{collection}::{key}", value)

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.cache.get(f"{collection}::{key}")
        return found


def _raw_disk(directory: Path) -> Opener:
    @asynccontextmanager
    async def open_raw_disk(keys: list[str], collection: str) -> AsyncIterator[Store]:
        import diskcache

        with _beside(directory) as fresh, diskcache.Cache(fresh) as cache:
            yield _Cache(cache)

    return open_raw_disk


class _Redis:
    """The raw form of Redis: one ``redis.asyncio`` client, a JSON string per key."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def put(self, key: str, value: dict[str, Any], *, collection: str | None = None) -> None:
        await self.client.set(f"{collection}::{key}", msgspec.json.encode(value))

    async def get(self, key: str, *, collection: str | None = None) -> dict[str, Any] | None:
        found = await self.client.get(f"{collection}::{key}")
        return None if found is None else dict(msgspec.json.decode(found))

    async def delete_many(self, keys: Sequence[str], *, collection: str | None = None) -> int:
        deleted: int = await self.client.delete(*(f"{collection}::{key}" for key in keys))
        return deleted


def _raw_redis(url: str) -> Opener:
    @asynccontextmanager
    async def open_raw_redis(keys: list[str], collection: str) -> AsyncIterator[Store]:
        import redis.asyncio

        pool = redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=_RAW_CONNECTIONS)
        client = redis.asyncio.Redis(connection_pool=pool)
        try:
            async with _cleaned(_Redis(client), keys, collection) as raw:
                yield raw
        finally:
            await client.aclose(close_connection_pool=True)

    return open_raw_redis

"""Copying the entries of one store into another, a batch at a time, each with the time it has left.

:func:`copy` lists a collection's keys, then reads them in batches (``ttl_many``) and writes each
batch (``put_many``) while reading the next, so at most two batches of values are held, whatever
the size of the store. A key list is held whole, one collection at a time: the listing segment returns
every key at once (there is no paged listing to follow). Each entry keeps its expiry: entries read
together that expire at the same moment are written together, with the time left at the write, so
an entry never outlives its source. Puts replace, so copying again completes an interrupted copy.

An entry the destination refuses (too large, a key it cannot hold) is counted, with its reason, and
the copy goes on; an unavailable store stops it, and a summary passed in keeps what was done.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import anyio

from kvrt.errors import KeyValueOperationError, ReadOnlyError
from kvrt.protocol import (
    AsyncEnumerateCollectionsProtocol,
    AsyncEnumerateKeysProtocol,
    AsyncKeyValue,
    collections_of,
    keys_of,
    segments_of,
)

DEFAULT_BATCH: Final = 1000
"""Entries read, and then written, per step: one backend call each on every built-in backend."""

SHOWN_FAILURES: Final = 100
"""Failed entries a summary names one by one; past these it only counts them (by error)."""

Progress = Callable[["CopySummary"], object]
"""Called with the summary once a collection's keys are listed and after every batch."""


class UnlistableSourceError(ValueError):
    """The source cannot list what it holds (its keys, or without ``collections`` its collections) to copy them."""


@dataclass(frozen=True, slots=True)
class Failure:
    """An entry that could not be copied: where it is and why (never its value)."""

    collection: str
    key: str
    error: str
    """The name of the error's class, as ``kvrt`` prints errors."""
    reason: str

    def as_json(self) -> dict[str, str]:
        """Return the failure as a JSON object."""
        return {"collection": self.collection, "key": self.key, "error": self.error, "reason": self.reason}


@dataclass(slots=True)
class CopySummary:
    """What a copy did so far: filled in as it goes, so a copy that stops early still says how far it got."""

    collections: list[str] = field(default_factory=list)
    """The collections to copy, once known (listed by the source, or as asked)."""
    collection: str | None = None
    """The collection being copied now."""
    listed: int = 0
    """Keys listed so far: the collections done and the one in progress."""
    copied: int = 0
    expired: int = 0
    """Listed entries gone by the time they were read or written (expired, or removed meanwhile)."""
    failed: int = 0
    failures: list[Failure] = field(default_factory=list)
    """The first :data:`SHOWN_FAILURES` failed entries."""
    errors: dict[str, int] = field(default_factory=dict)
    """How many entries failed with each error."""
    interrupted: bool = False
    """The copy was stopped before it went through every listed key: copying again completes it."""
    seconds: float = 0.0

    @property
    def done(self) -> int:
        """Return how many listed entries were dealt with: copied, expired or failed."""
        return self.copied + self.expired + self.failed

    def fail(self, collection: str, key: str, error: Exception) -> None:
        """Count ``key`` as failed with ``error``; name it if fewer than :data:`SHOWN_FAILURES` are named."""
        name = type(error).__name__
        self.failed += 1
        self.errors[name] = self.errors.get(name, 0) + 1
        if len(self.failures) < SHOWN_FAILURES:
            self.failures.append(Failure(collection, key, name, " ".join(str(error).split())))

    def as_json(self) -> dict[str, Any]:
        """Return the summary as a JSON object (what ``kvrt copy`` prints)."""
        return {
            "collections": list(self.collections),
            "listed": self.listed,
            "copied": self.copied,
            "expired": self.expired,
            "failed": self.failed,
            "errors": dict(self.errors),
            "failures": [failure.as_json() for failure in self.failures],
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 3),
        }


async def copy(
    source: AsyncKeyValue,
    destination: AsyncKeyValue,
    collections: Sequence[str] | None = None,
    *,
    batch: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    stop: anyio.Event | None = None,
    summary: CopySummary | None = None,
) -> CopySummary:
    """Copy every live entry of ``collections`` (all the source lists, if ``None``) into ``destination``.

    Entries keep their remaining TTL. ``batch`` entries are read, then written, per step (the next
    batch is read while one is written: two batches of values at most are held). Once
    ``stop`` is set, the copy ends after the batch in flight, marked ``interrupted``. Pass your own
    ``summary`` to keep its counts when the copy raises (an unavailable store, a read-only
    destination). Raises :class:`UnlistableSourceError` if the source cannot list its keys (or,
    without ``collections``, its collections).
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive whole number, not {batch!r}")
    summary = CopySummary() if summary is None else summary
    started = time.monotonic()

    def report() -> None:
        summary.seconds = time.monotonic() - started
        if progress is not None:
            progress(summary)

    try:
        lister = _lister(source)
        names = list(dict.fromkeys(collections)) if collections is not None else await _collections(source)
        summary.collections = names
        for name in names:
            if stop is not None and stop.is_set():
                summary.interrupted = True
                break
            summary.collection = name
            keys = await lister.keys(name)
            summary.listed += len(keys)
            report()
            if not await _copy_collection(source, destination, name, keys, batch, summary, report, stop):
                summary.interrupted = True
                break
    finally:
        summary.seconds = time.monotonic() - started
    return summary


def _lister(source: AsyncKeyValue) -> AsyncEnumerateKeysProtocol:
    if "keys" not in segments_of(source):
        raise UnlistableSourceError(
            f"the source ({_named(source)}) cannot list its keys, so there is no telling what to copy"
        )
    return keys_of(source)


async def _collections(source: AsyncKeyValue) -> list[str]:
    if "collections" not in segments_of(source):
        raise UnlistableSourceError(
            f"the source ({_named(source)}) cannot list its collections: name those to copy (-c COLLECTION)"
        )
    lister: AsyncEnumerateCollectionsProtocol = collections_of(source)
    return await lister.collections()


def _named(store: object) -> str:
    name = getattr(store, "name", None)
    return name if isinstance(name, str) else type(store).__name__


Found = tuple[dict[str, Any] | None, float | None]


@dataclass(slots=True)
class _Batch:
    """What one read found, ready to write: the live entries by expiry, the gone and the unreadable."""

    collection: str
    groups: dict[float | None, tuple[list[str], list[Mapping[str, Any]]]] = field(default_factory=dict)
    expired: int = 0
    unreadable: list[tuple[str, Exception]] = field(default_factory=list)


async def _copy_collection(
    source: AsyncKeyValue,
    destination: AsyncKeyValue,
    collection: str,
    keys: list[str],
    batch: int,
    summary: CopySummary,
    report: Callable[[], None],
    stop: anyio.Event | None,
) -> bool:
    """Copy ``keys`` a batch at a time, reading the next batch while writing this one; ``False`` once stopped."""
    starts = range(0, len(keys), batch)
    if not starts:
        return True
    ahead = await _read(source, collection, keys[:batch])
    for start in starts:
        if stop is not None and stop.is_set():
            return False  # the batch read ahead is dropped: nothing of it was written
        current, following = ahead, keys[start + batch : start + 2 * batch]
        if following:
            read: list[_Batch] = []
            await _together(
                [
                    partial(_write_batch, destination, current, summary),
                    partial(_read_into, read, source, collection, following),
                ]
            )
            ahead = read[0]
        else:
            await _write_batch(destination, current, summary)
        report()
    return True


async def _read(source: AsyncKeyValue, collection: str, keys: list[str]) -> _Batch:
    """Read ``keys`` and sort what is live by expiry (one ``put_many`` each: the worker merges them)."""
    read_at = time.time()  # before the read: the expiries worked out from it are never later than the source's
    batch = _Batch(collection)
    groups = batch.groups
    for key, (value, left) in await _read_entries(source, batch, keys):
        if value is None:
            batch.expired += 1
            continue
        expires = None if left is None else read_at + left
        group = groups.get(expires)
        if group is None:
            group = groups[expires] = ([], [])
        group[0].append(key)
        group[1].append(value)
    return batch


async def _read_into(read: list[_Batch], source: AsyncKeyValue, collection: str, keys: list[str]) -> None:
    read.append(await _read(source, collection, keys))


async def _read_entries(source: AsyncKeyValue, batch: _Batch, keys: list[str]) -> list[tuple[str, Found]]:
    """Return each key with what ``ttl_many`` found; if an entry cannot be read, read one by one and note it."""
    collection = batch.collection
    try:
        return list(zip(keys, await source.ttl_many(keys, collection=collection), strict=True))
    except KeyValueOperationError:
        pass  # an entry that cannot be decoded spoils the batch: find it below
    found: list[tuple[str, Found]] = []

    async def read_one(key: str) -> None:
        try:
            found.append((key, await source.ttl(key, collection=collection)))
        except KeyValueOperationError as exc:
            batch.unreadable.append((key, exc))

    await _together([partial(read_one, key) for key in keys])
    return found


async def _write_batch(destination: AsyncKeyValue, batch: _Batch, summary: CopySummary) -> None:
    """Write what ``batch`` found live, and count what it found gone or unreadable."""
    collection = batch.collection
    summary.expired += batch.expired
    for key, error in batch.unreadable:
        summary.fail(collection, key, error)
    groups = batch.groups
    if len(groups) == 1:
        ((expires, (names, values)),) = groups.items()
        await _write(destination, collection, expires, names, values, summary)
    elif groups:
        await _together(
            [
                partial(_write, destination, collection, expires, names, values, summary)
                for expires, (names, values) in groups.items()
            ]
        )


async def _write(
    destination: AsyncKeyValue,
    collection: str,
    expires: float | None,
    keys: list[str],
    values: list[Mapping[str, Any]],
    summary: CopySummary,
) -> None:
    """Write entries that expire at ``expires``; if the destination refuses the batch, find and count the refused."""
    ttl = None
    if expires is not None:
        ttl = expires - time.time()
        if ttl <= 0:
            summary.expired += len(keys)
            return
    try:
        await destination.put_many(keys, values, collection=collection, ttl=ttl)
    except ReadOnlyError:
        raise  # refuses every write: not a fault of these entries
    except KeyValueOperationError as exc:
        if len(keys) == 1:
            summary.fail(collection, keys[0], exc)
            return
        await _together(  # a put_many stores none if one is refused: put each alone
            [
                partial(_write, destination, collection, expires, [key], [value], summary)
                for key, value in zip(keys, values, strict=True)
            ]
        )
        return
    summary.copied += len(keys)


async def _together(calls: list[Callable[[], Awaitable[None]]]) -> None:
    """Run ``calls`` at once; the first to fail cancels the others, and its error is raised as itself."""
    failures: list[Exception] = []
    async with anyio.create_task_group() as group:

        async def run(call: Callable[[], Awaitable[None]]) -> None:
            try:
                await call()
            except Exception as exc:  # raised below, not wrapped in the task group's ExceptionGroup
                failures.append(exc)
                group.cancel_scope.cancel()

        for call in calls:
            group.start_soon(run, call)
    if failures:
        raise failures[0]

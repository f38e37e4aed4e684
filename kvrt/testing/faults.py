"""A backend that fails, hangs, slows or breaks on command: the only fake kvrt's tests use, for injecting faults.

It wraps a real backend (a :class:`~kvrt.backends.memory.MemoryBackend` by default), records every
call that reaches it, and before doing the real work raises or waits as it was told to.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import anyio
import msgspec

from kvrt.backends.base import Backend
from kvrt.backends.memory import MemoryBackend


class TransientFault(ConnectionError):
    """An injected failure that :class:`FaultyBackend` calls transient (worth a reconnect)."""


class PermanentFault(ValueError):
    """An injected failure that is not transient: it goes back to the caller it concerns."""


class FaultyBackend(Backend):
    """Delegates to ``inner`` after applying the faults queued with :meth:`fail_next`, :meth:`poison`, :meth:`hang`."""

    name = "faulty"

    def __init__(
        self, inner: Backend | None = None, *, concurrency: int = 1, rounds_in_flight: int | None = None
    ) -> None:
        self.inner = inner if inner is not None else MemoryBackend()
        self.capabilities = msgspec.structs.replace(
            self.inner.capabilities,
            concurrency=concurrency,
            rounds_in_flight=concurrency if rounds_in_flight is None else rounds_in_flight,
        )
        self.in_flight = 0
        self.peak_in_flight = 0
        """The most data calls it was in at once."""
        self.calls: list[tuple[str, str, tuple[str, ...]]] = []
        """``(operation, collection, keys)`` of every data call that reached this backend."""
        self.opens = 0
        self.closes = 0
        self.failing_opens = 0
        """How many of the next :meth:`open` calls fail with :class:`TransientFault`."""
        self._faults: deque[BaseException] = deque()
        self._poisoned: dict[str, BaseException] = {}
        self._gate: anyio.Event | None = None
        self._delay = 0.0
        self._short = 0
        self.entered = 0
        """How many data calls have started (including those held by :meth:`hang`)."""

    def fail_next(self, *errors: BaseException) -> None:
        """Make the next data calls raise ``errors``, one each, in order."""
        self._faults.extend(errors)

    def poison(self, key: str, error: BaseException) -> None:
        """Make every data call that includes ``key`` raise ``error``."""
        self._poisoned[key] = error

    def hang(self) -> None:
        """Hold every data call from now on until :meth:`release`."""
        self._gate = anyio.Event()

    def release(self) -> None:
        """Let held calls (and later ones) go on."""
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    def slow(self, seconds: float) -> None:
        """Make every data call from now on take ``seconds`` longer (``0`` to stop)."""
        self._delay = seconds

    def short_next(self, calls: int = 1) -> None:
        """Make the next ``calls`` reads or deletes answer one key fewer than asked: a broken backend."""
        self._short += calls

    def keys_seen(self, operation: str) -> list[str]:
        """Every key that reached this backend in calls of ``operation``, in order."""
        return [key for op, _, keys in self.calls if op == operation for key in keys]

    async def _enter(self, operation: str, collection: str, keys: Sequence[str] = ()) -> None:
        self.entered += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self._gate is not None:
                await self._gate.wait()
            if self._delay:
                await anyio.sleep(self._delay)
        finally:
            self.in_flight -= 1
        self.calls.append((operation, collection, tuple(keys)))
        if self._faults:
            raise self._faults.popleft()
        for key in keys:
            if key in self._poisoned:
                raise self._poisoned[key]

    async def open(self) -> None:
        """Open the inner backend, unless told to fail."""
        self.opens += 1
        if self.failing_opens:
            self.failing_opens -= 1
            raise TransientFault("injected: open failed")
        await self.inner.open()

    async def close(self) -> None:
        """Close the inner backend."""
        self.closes += 1
        await self.inner.close()

    async def shutdown(self) -> None:
        """Shut the inner backend down."""
        await self.inner.shutdown()

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        """Read through to the inner backend."""
        await self._enter("get", collection, keys)
        return self._shortened(await self.inner.get_many(collection, keys))

    async def put_many(
        self,
        collection: str,
        keys: Sequence[str],
        entries: Sequence[bytes],
        expires_at: Sequence[float | None],
    ) -> None:
        """Write through to the inner backend."""
        await self._enter("put", collection, keys)
        await self.inner.put_many(collection, keys, entries, expires_at)

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Delete through the inner backend."""
        await self._enter("delete", collection, keys)
        return self._shortened(await self.inner.delete_many(collection, keys))

    def _shortened(self, results: list[Any]) -> list[Any]:
        if self._short:
            self._short -= 1
            return results[:-1]
        return results

    async def cull(self, budget: int) -> tuple[int, bool]:
        """Cull the inner backend."""
        await self._enter("cull", "")
        return await self.inner.cull(budget)

    async def keys(self, collection: str, limit: int | None) -> list[str]:
        """List the inner backend's keys."""
        await self._enter("keys", collection)
        return await self.inner.keys(collection, limit)

    async def collections(self, limit: int | None) -> list[str]:
        """List the inner backend's collections."""
        await self._enter("collections", "")
        return await self.inner.collections(limit)

    async def destroy(self) -> bool:
        """Destroy the inner backend's data."""
        await self._enter("destroy", "")
        return await self.inner.destroy()

    async def destroy_collection(self, collection: str) -> bool:
        """Destroy one of the inner backend's collections."""
        await self._enter("destroy_collection", collection)
        return await self.inner.destroy_collection(collection)

    def is_transient(self, error: BaseException) -> bool:
        """Only :class:`TransientFault` is transient."""
        return isinstance(error, TransientFault)

"""The worker actor: takes requests from its mailbox, merges them into backend batches, replies.

A worker knows its backend only through the contract in :mod:`kvrt.backends.base`. It serves one
round at a time: everything waiting in the mailbox (up to the drain bound) is taken at once, runs
of consecutive requests of one kind and collection become one backend call, and each caller gets
its own slice of the result. A caller's requests therefore reach the backend in the order it sent
them. While a cull is due, the worker removes one budget of expired entries between rounds (or
whenever it is idle), so a foreground request waits for at most one budgeted step.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

import anyio
from anyio.lowlevel import checkpoint

from kvrt import frames
from kvrt.backends.base import Backend
from kvrt.circuit import Breaker
from kvrt.errors import DeadlineExceededError, KeyValueError, KeyValueStoreError, StoreConnectionError
from kvrt.frames import (
    AnyRequest,
    Collections,
    Cull,
    Delete,
    Destroy,
    DestroyCollection,
    Get,
    Keyed,
    Keys,
    Put,
)
from kvrt.log import logger as _log
from kvrt.policies import CircuitPolicy, CullPolicy, MailboxPolicy, RestartPolicy
from kvrt.reply import ReplySlot
from kvrt.stats import Counters, WorkerStats

Item = tuple[bytes, ReplySlot | None]
"""What a mailbox carries: a frame and the slot for its reply (``None``: a tick that wakes the worker)."""

Pending = tuple[AnyRequest, ReplySlot]
Run = list[Pending]
_KeyedRun = list[tuple[Keyed, ReplySlot]]
"""A run whose requests are all keyed (gets, puts, deletes): what the worker casts one to, once."""

_TICK: Final[Item] = (b"", None)
_LATENCY_STRIDE: Final = 8
_OP_NAMES: Final[dict[type[AnyRequest], str]] = {
    Get: "get",
    Put: "put",
    Delete: "delete",
    Keys: "keys",
    Collections: "collections",
    Destroy: "destroy",
    DestroyCollection: "destroy_collection",
    Cull: "cull",
}


class WorkerCrash(Exception):
    """The backend failed in a way its connection must be rebuilt for; the supervisor restarts the worker."""


class BackendContractError(RuntimeError):
    """A backend broke its contract (an answer of the wrong length): a bug, so the worker crashes."""


class SiblingRestart(WorkerCrash):
    """The worker stopped at a safe point because its supervisor restarts it along with a crashed sibling."""


class Worker:
    """Runs one backend for the requests of every handle on it."""

    def __init__(
        self,
        name: str,
        backend: Backend,
        *,
        mailbox: MailboxPolicy,
        restart: RestartPolicy,
        cull: CullPolicy,
        circuit: CircuitPolicy,
    ) -> None:
        self.name = name
        self.backend = backend
        self.state = "running"
        self.counters = Counters()
        self.breaker = Breaker(name, circuit)
        self.mailbox = mailbox
        concurrency = backend.capabilities.concurrency
        self._lanes = anyio.Semaphore(concurrency) if concurrency > 1 else None
        self._rounds_in_flight = min(backend.capabilities.rounds_in_flight, concurrency)
        self.stopped = anyio.Event()
        self.closing = anyio.Event()
        """Set when the runtime stops taking requests: a worker in backoff with nothing left to serve stops."""
        self.send_stream, self._receive = anyio.create_memory_object_stream[Item](mailbox.size)
        self.line: deque[Item] = deque()
        """Callers waiting for room in the full mailbox, in the order they came (``MailboxPolicy.max_wait``
        unset): each waits on its reply alone, and the worker takes from here once the mailbox is empty.
        Every entry is a request in flight, so the runtime's in-flight cap bounds it."""
        self.line_open = True
        """Whether callers may still join :attr:`line` (not once intake stops or the mailbox closes)."""
        self._line_left = 0
        """Entries of :attr:`line` whose callers may have left: past half the line, it is swept."""
        self._mailbox = mailbox
        self._restart = restart
        self._cull = cull
        self._cull_due = False
        self._restart_due = False
        self._culled_this_pass = 0
        self._cull_cost = 0.0
        self._pending: Run = []
        self._rounds: dict[int, Run] = {}
        """The requests of every round in flight, by round."""
        self._last_round = 0.0
        self._runners: dict[type[AnyRequest], Callable[[Run], Awaitable[list[Any]]]] = {
            Get: self._get,
            Put: self._put,
            Delete: self._delete,
            Keys: self._keys,
            Collections: self._collections,
            Destroy: self._destroy,
            DestroyCollection: self._destroy_collection,
            Cull: self._cull_all,
        }

    async def run(self) -> None:
        """Serve requests until the mailbox is closed and empty.

        Raises :class:`WorkerCrash` when the backend fails transiently; the unanswered requests are
        kept and served first when the supervisor calls ``run`` again. With a backend that takes
        concurrent calls, its runs go out concurrently, and with ``rounds_in_flight`` above 1 up to
        that many rounds are in flight at once: the next round is taken while the last one is
        still at the backend.
        """
        if self._rounds_in_flight <= 1:
            await self._loop(self._serve)
            return
        crashes: list[Exception] = []
        rounds_free = anyio.Semaphore(self._rounds_in_flight)
        async with anyio.create_task_group() as rounds:

            async def serve(batch: Run) -> None:
                del self._rounds[id(batch)]  # _serve holds it from here
                try:
                    await self._serve(batch)
                except Exception as exc:
                    crashes.append(exc)
                    rounds.cancel_scope.cancel()
                finally:
                    rounds_free.release()

            async def start(batch: Run) -> None:
                try:
                    await rounds_free.acquire()
                except BaseException:  # cancelled by a crash before the round began: keep its requests
                    self._pending += batch
                    raise
                self._rounds[id(batch)] = batch  # held, even if cancelled before its task first runs
                rounds.start_soon(serve, batch)

            try:
                await self._loop(start)
            except Exception as exc:  # a sibling's restart, or a crash while culling between rounds
                crashes.append(exc)
                rounds.cancel_scope.cancel()
        if crashes:
            for live in self._rounds.values():  # rounds cancelled by the crash: try them again
                self._pending += [pending for pending in live if not pending[1].done]
            self._rounds.clear()
            raise crashes[0]

    async def _loop(self, serve: Callable[[Run], Awaitable[None]]) -> None:
        """Take rounds from the mailbox and hand each to ``serve``; cull between them when due."""
        receive = self._receive
        blocked = True
        while True:
            if self._restart_due:
                self._restart_due = False
                raise SiblingRestart(f"{self.name} restarts with a crashed sibling")
            if self._pending:  # held over a restart: served first, a drain's worth a round
                drain = self._mailbox.drain
                batch, self._pending = self._pending[:drain], self._pending[drain:]
            else:
                if not blocked:
                    await checkpoint()  # busy: let callers and other workers run between rounds
                try:
                    first = receive.receive_nowait()
                    blocked = False
                except anyio.WouldBlock:
                    if self.line:
                        first = self.line.popleft()
                        blocked = False
                    elif self._cull_due:
                        await self._cull_step(self._cull.budget)  # idle: a full step
                        continue
                    else:
                        try:
                            first = await receive.receive()
                        except anyio.EndOfStream:
                            return
                        blocked = True
                except anyio.EndOfStream:
                    if not self.line:
                        return
                    first = self.line.popleft()  # intake has stopped; those already waiting are served
                batch = self._take(first)
            await serve(batch)
            if self._cull_due:  # between rounds: a busy worker still culls, in steps sized to the round
                await self._cull_step(self._busy_budget(self._last_round))

    def _take(self, first: Item) -> Run:
        """Drain what else is waiting, decode it, and set aside cull ticks."""
        items = [first]
        receive = self._receive
        limit = self._mailbox.drain
        while len(items) < limit:
            try:
                items.append(receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                line = self.line
                while line and len(items) < limit:  # the mailbox is empty: those waiting for room are next
                    items.append(line.popleft())
                break
        if self.line:
            self._admit()
        batch: Run = []
        for frame, slot in items:
            if slot is not None:  # ticks only wake the worker; their flags are already set
                batch.append((frames.decode(frame), slot))
        return batch

    async def _serve(self, batch: Run) -> None:
        """Answer every request of ``batch``, a backend call per run of like requests."""
        now = time.monotonic()
        live: Run = []
        for request, slot in batch:
            if slot.withdrawn:
                slot.drop()
                continue
            if request.deadline is not None and request.deadline <= now:
                self.counters.deadline_drops += 1
                self._fail(slot, request, DeadlineExceededError("The request's deadline passed before it was sent."))
                continue
            live.append((request, slot))
        key = id(live)
        self._rounds[key] = live
        self.counters.in_flight += len(live)
        started = time.perf_counter()
        try:
            runs = self._runs(live)
            if self._lanes is None or (len(runs) == 1 and self._rounds_in_flight <= 1):
                for run in runs:  # one call out at a time: no lane to take
                    await self._serve_run(run)
            elif len(runs) == 1:
                async with self._lanes:  # every backend call holds a lane: calls in flight stay bounded
                    await self._serve_run(runs[0])
            else:
                await self._serve_concurrently(runs, self._lanes)
        except Exception:  # a crash: keep what is unanswered for the restarted worker
            self._pending += [pending for pending in live if not pending[1].done]
            del self._rounds[key]
            raise
        finally:
            self.counters.in_flight -= len(live)
        # Left in _rounds when cancelled (shutdown past its grace, or a concurrent round's crash),
        # so whoever cancelled can answer or re-queue these callers.
        del self._rounds[key]
        self._last_round = time.perf_counter() - started

    def _runs(self, live: Run) -> list[Run]:
        """Cut ``live`` into runs: consecutive requests of one kind and collection, up to ``max_batch`` keys."""
        limit = self.backend.capabilities.max_batch
        runs: list[Run] = []
        keyed = cast(_KeyedRun, live)  # read as keyed only past the type check against a keyed first
        start, end = 0, len(live)
        while start < end:
            first = live[start][0]
            stop = start + 1
            if isinstance(first, Keyed):
                size = len(first.keys)
                while stop < end:
                    other = keyed[stop][0]
                    if (
                        type(other) is not type(first)
                        or other.collection != first.collection
                        or size + len(other.keys) > limit
                    ):
                        break
                    size += len(other.keys)
                    stop += 1
            runs.append(live[start:stop])
            start = stop
        return runs

    async def _serve_concurrently(self, runs: list[Run], lanes: anyio.Semaphore) -> None:
        """Serve ``runs`` with up to ``concurrency`` backend calls at once; a crash in one stops the rest."""
        crashes: list[Exception] = []

        async def serve(run: Run) -> None:
            try:
                await self._serve_run(run)
            except Exception as exc:
                crashes.append(exc)
                group.cancel_scope.cancel()
            finally:
                lanes.release()

        async with anyio.create_task_group() as group:
            for run in runs:
                await lanes.acquire()
                group.start_soon(serve, run)
        if crashes:
            raise crashes[0]

    async def _serve_run(self, run: Run) -> None:
        """Make one backend call for ``run`` and hand each caller its part of the answer.

        Requests whose callers left, or whose deadline passed while earlier runs of the round were
        out, are answered here and never sent.
        """
        run, latest = self._sendable(run)
        if not run:
            return
        request = run[0][0]
        try:
            if latest is None:
                results = await self._runners[type(request)](run)
            else:
                results = await self._bounded(run, latest)
        except WorkerCrash:
            self.breaker.failed()
            raise
        except BackendContractError:
            raise
        except Exception as exc:
            if self.backend.is_transient(exc):
                self.breaker.failed()
                self._count_attempt(run, exc)
                raise WorkerCrash(f"{type(exc).__name__} in {self.name}") from exc
            if len(run) > 1:  # find the request the error belongs to; its neighbours still succeed
                for pending in run:
                    await self._serve_run([pending])
                return
            self._fail(run[0][1], request, exc)
            return
        self.breaker.succeeded()
        for (_, slot), result in zip(run, results, strict=True):
            slot.resolve(result)
        self._sample_latency(run)
        self.counters.batch(_OP_NAMES[type(request)], len(run))

    def _sample_latency(self, run: Run) -> None:
        """Record the send-to-reply time of every eighth answered request (a stride, so no position is favoured)."""
        counters = self.counters
        first = -counters.answered % _LATENCY_STRIDE
        counters.answered += len(run)
        if first < len(run):
            now = time.perf_counter()
            record = counters.latency.record
            for _, slot in run[first::_LATENCY_STRIDE]:
                record(now - slot.sent_at)

    def _sendable(self, run: Run) -> tuple[Run, float | None]:
        """Drop what nobody waits for from ``run``; return the rest and its latest deadline (``None``: no bound)."""
        now = time.monotonic()
        latest: float | None = 0.0
        kept: Run | None = None  # a copy only once something is dropped
        for index, pending in enumerate(run):
            request, slot = pending
            deadline = request.deadline
            if slot.withdrawn or (deadline is not None and deadline <= now):
                if kept is None:
                    kept = run[:index]
                if slot.withdrawn:
                    slot.drop()
                else:
                    self.counters.deadline_drops += 1
                    self._fail(slot, request, DeadlineExceededError("The deadline passed before it was sent."))
                continue
            if kept is not None:
                kept.append(pending)
            if deadline is None:
                latest = None
            elif latest is not None and deadline > latest:
                latest = deadline
        return (run if kept is None else kept), latest

    async def _bounded(self, run: Run, latest: float) -> list[Any]:
        """Run the backend call for ``run``; abandon it only if it hangs long after every caller left.

        A call that outlives callers with short deadlines is left to finish: the backend is healthy
        and their replies are simply not read. One still out ``hung_call`` seconds past the last
        deadline (or past its start, if that came later) did not answer: the driver, cut off
        mid-call, may have left its connection in any state, so the worker crashes and its
        supervisor reconnects.
        """
        hung_call = self._restart.hung_call
        now = time.monotonic()
        with anyio.move_on_after(max(latest - now, 0.0) + hung_call):
            return await self._runners[type(run[0][0])](run)
        raise WorkerCrash(f"a call to {self.name} hung past every caller's deadline") from DeadlineExceededError(
            f"The backend did not answer within {hung_call:g} s of the last caller's deadline.", backend=self.name
        )

    def _count_attempt(self, run: Run, exc: Exception) -> None:
        """Charge a transient failure to each request of ``run``; fail those out of attempts."""
        for request, slot in run:
            slot.attempts += 1
            self.counters.retries += 1
            if slot.attempts >= self._restart.attempts:
                error = StoreConnectionError(f"The backend kept failing: {type(exc).__name__}: {exc}"[:300])
                error.__cause__ = exc
                self._fail(slot, request, error)

    def _fail(self, slot: ReplySlot, request: AnyRequest, exc: BaseException) -> None:
        """Answer ``slot`` with ``exc`` if it is a kvrt error, else with one that names backend and key.

        Driver exceptions never reach a caller raw: their type and message are kept, as the cause.
        """
        if not isinstance(exc, KeyValueError):
            keys = request.keys if isinstance(request, Keyed) else []
            error = KeyValueStoreError(
                f"The backend failed: {type(exc).__name__}: {exc}"[:300],
                backend=self.name,
                collection=getattr(request, "collection", None),
                key=keys[0] if len(keys) == 1 else None,
            )
            error.__cause__ = exc
            exc = error
        self.counters.error(exc)
        slot.fail(exc)

    async def _get(self, run: Run) -> list[Any]:
        return await self._per_key(run, self.backend.get_many)

    async def _delete(self, run: Run) -> list[Any]:
        return await self._per_key(run, self.backend.delete_many)

    async def _per_key(self, run: Run, call: Callable[[str, list[str]], Awaitable[list[Any]]]) -> list[Any]:
        """Make one ``call`` for the keys of every request in ``run``; give each request its own results."""
        keyed = cast(_KeyedRun, run)
        first = keyed[0][0]
        if len(run) == 1:
            found = await call(first.collection, first.keys)
            if len(found) != len(first.keys):
                raise BackendContractError(f"{self.backend.kind} answered {len(found)} of {len(first.keys)} keys")
            return [found]
        keys = [key for request, _ in keyed for key in request.keys]
        found = await call(first.collection, keys)
        if len(found) != len(keys):
            raise BackendContractError(f"{self.backend.kind} answered {len(found)} of {len(keys)} keys")
        parts: list[Any] = []
        start = 0
        for request, _ in keyed:
            end = start + len(request.keys)
            parts.append(found[start:end])
            start = end
        return parts

    async def _put(self, run: Run) -> list[Any]:
        puts = cast("list[tuple[Put, ReplySlot]]", run)
        first = puts[0][0]
        if len(run) == 1:
            await self.backend.put_many(
                first.collection, first.keys, first.entries, [first.expires_at] * len(first.keys)
            )
            return [None]
        keys: list[str] = []
        entries: list[bytes] = []
        expiries: list[float | None] = []
        for put, _ in puts:
            keys += put.keys
            entries += put.entries
            expiries += [put.expires_at] * len(put.keys)
        await self.backend.put_many(first.collection, keys, entries, expiries)
        return [None] * len(run)

    async def _keys(self, run: Run) -> list[Any]:
        request = cast(Keys, run[0][0])
        return [await self.backend.keys(request.collection, request.limit)]

    async def _collections(self, run: Run) -> list[Any]:
        request = cast(Collections, run[0][0])
        return [await self.backend.collections(request.limit)]

    async def _destroy(self, run: Run) -> list[Any]:
        return [await self.backend.destroy()]

    async def _destroy_collection(self, run: Run) -> list[Any]:
        request = cast(DestroyCollection, run[0][0])
        return [await self.backend.destroy_collection(request.collection)]

    async def _cull_all(self, run: Run) -> list[Any]:
        """Cull until nothing expired is left, yielding between steps so the host loop never stalls."""
        budget = self._cull.budget
        total = 0
        while True:
            removed, done = await self.backend.cull(budget)
            total += removed
            if done:
                break
            await checkpoint()
        self.counters.culled += total
        return [total]

    def request_cull(self) -> None:
        """Ask for a background cull; it starts the next time the mailbox is empty."""
        if self._cull_due or self.state != "running":
            return
        self._cull_due = True
        self._wake()

    def request_restart(self) -> None:
        """Stop at the next safe point (between rounds) so the supervisor can restart this worker."""
        self._restart_due = True
        self._wake()

    def _wake(self) -> None:
        """Wake a worker waiting for requests; a busy or closing one sees its flags between rounds."""
        with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.send_stream.send_nowait(_TICK)

    def _busy_budget(self, round_seconds: float) -> int:
        """Size a cull step taken between rounds to about ``busy_share`` of the round just served."""
        policy = self._cull
        if self._cull_cost <= 0.0:
            return min(policy.budget, 64)  # no measurement yet: a small first step
        wanted = int(policy.busy_share * round_seconds / self._cull_cost)
        return max(16, min(policy.budget, wanted))

    async def _cull_step(self, budget: int) -> None:
        """Do one step of culling; clear the flag, and log the pass, when nothing expired is left."""
        started = time.perf_counter()
        try:
            removed, done = await self.backend.cull(budget)
        except Exception as exc:
            self._cull_due = False
            if self.backend.is_transient(exc):
                raise WorkerCrash(f"{type(exc).__name__} in {self.name} while culling") from exc
            _log.warning("worker.cull_failed", worker=self.name, error=type(exc).__name__)
            return
        if removed:  # seconds per entry, smoothed: what sizes the next busy step
            cost = (time.perf_counter() - started) / removed
            self._cull_cost = cost if self._cull_cost <= 0.0 else 0.8 * self._cull_cost + 0.2 * cost
        self.counters.culled += removed
        self._culled_this_pass += removed
        if done:
            self._cull_due = False
            if self._culled_this_pass:
                _log.info("worker.culled", worker=self.name, removed=self._culled_this_pass)
            self._culled_this_pass = 0
        await checkpoint()

    def _admit(self) -> None:
        """Move callers waiting in line into the room this round made in the mailbox, in order."""
        line, send = self.line, self.send_stream.send_nowait
        with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            while line:
                send(line[0])
                line.popleft()

    def join_line(self, item: Item) -> None:
        """Queue ``item`` behind the callers already waiting for room in the full mailbox."""
        self.line.append(item)

    def left_line(self) -> None:
        """Note that a caller in :attr:`line` stopped waiting; sweep the line once half of it may have left."""
        self._line_left += 1
        line = self.line
        if self._line_left * 2 > len(line):
            kept = [item for item in line if not (item[1] is not None and item[1].withdrawn)]
            line.clear()
            line.extend(kept)
            self._line_left = 0

    def fail_all(self, error: Callable[[], KeyValueError]) -> None:
        """Answer everything held or queued with a fresh ``error()``; used on give-up and at shutdown."""
        held = self._pending + [pending for live in self._rounds.values() for pending in live]
        self._pending = []
        self._rounds.clear()
        for _, slot in held:
            if not slot.done:
                self.counters.error(exc := error())
                slot.fail(exc)
        while self.line:
            _, waiting = self.line.popleft()
            if waiting is not None and not waiting.done:
                self.counters.error(exc := error())
                waiting.fail(exc)
        while True:
            try:
                _, queued = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            if queued is not None and not queued.done:
                self.counters.error(exc := error())
                queued.fail(exc)

    def stop_intake(self) -> None:
        """Take no more requests; those already queued are still served (the runtime's shutdown)."""
        self.send_stream.close()
        self.line_open = False
        self.closing.set()

    def idle_at_close(self) -> bool:
        """At shutdown, whether no request is left that a restart would answer.

        Moves what is queued into the held requests first (intake is closed, nothing new arrives),
        so requests whose callers gave up do not count.
        """
        while True:
            try:
                first = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            self._pending += self._take(first)
        while self.line:
            self._pending += self._take(self.line.popleft())
        return all(slot.done or slot.withdrawn for _, slot in self._pending)

    def close_mailbox(self) -> None:
        """Refuse further requests: callers then get an error at once instead of waiting."""
        self.line_open = False
        self._receive.close()

    def snapshot(self) -> WorkerStats:
        """Return what this worker has done so far."""
        counters = self.counters
        mailbox = self.send_stream.statistics()
        return WorkerStats(
            name=self.name,
            backend=self.backend.kind,
            state=self.state,
            mailbox_depth=mailbox.current_buffer_used,
            waiting_for_room=len(self.line) + mailbox.tasks_waiting_send,
            mailbox_size=int(mailbox.max_buffer_size),
            in_flight=counters.in_flight,
            ops=dict(counters.ops),
            errors=dict(counters.errors),
            restarts=counters.restarts,
            reconnects_failed=counters.reconnects_failed,
            holds=counters.holds,
            last_crash=counters.last_crash,
            batches=counters.batches,
            mean_batch=counters.batched / counters.batches if counters.batches else 0.0,
            max_batch=counters.max_batch,
            deadline_drops=counters.deadline_drops,
            culled=counters.culled,
            retries=counters.retries,
            overloaded=counters.overloaded,
            circuit=self.breaker.state,
            circuit_trips=self.breaker.trips,
            latency_ms=counters.latency.summary_ms(),
            latency_buckets=counters.latency.buckets(),
        )

"""The supervisor: runs a group of workers, reconnects them through outages, holds down the ones that keep crashing.

Restart follows OTP's model, read for stores whose servers come and go. A crash (a transient
backend failure, or an unexpected exception in a worker) closes and reopens the backend after an
exponential backoff with jitter, and the worker picks up the requests it was holding. When the
backend cannot be reached, the supervisor keeps reconnecting at the capped backoff for as long as
the outage lasts; that whole outage is one restart, and the first reconnect that works ends it.
The worker's circuit breaker opens on the failed reconnects (callers then fail fast, or go to the
fallback) and lets the first request through as its probe the moment the backend is back.

The group's strategy says who restarts with a crashed worker: ``one_for_one`` the crashed worker
alone, ``one_for_all`` every worker of the group, ``rest_for_one`` it and those spawned after it.
More than ``max_restarts`` restarts of the group within ``within`` seconds means a worker keeps
crashing while its backend answers: it is held down, longer each time, and serves again after
the hold. Only an explicit policy ends a worker for good (``give_up=True``, or the ``temporary`` and
``transient`` restart types); a critical group that gives up fails the whole runtime.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Final

import anyio

from kvrt.circuit import OPEN
from kvrt.errors import BackendUnavailableError, KeyValueError, RuntimeClosedError
from kvrt.log import logger as _log
from kvrt.policies import RestartPolicy, Strategy
from kvrt.worker import SiblingRestart, Worker, WorkerCrash

_RECHECK_AT_CLOSE: Final = 0.05
"""Seconds between looks, during a backoff at shutdown, for whether the held requests still have callers."""
_MAX_DOUBLINGS: Final = 30
"""Backoffs and holds stop doubling here (they are capped long before; this keeps the numbers finite)."""


class Supervisor:
    """Keeps a group of workers serving through outages and crashes, as its restart policy says."""

    def __init__(
        self,
        workers: Sequence[Worker],
        policy: RestartPolicy,
        *,
        strategy: Strategy = "one_for_one",
        close_timeout: float,
        critical: bool = False,
    ) -> None:
        self.workers = list(workers)
        self.policy = policy
        self.strategy = strategy
        self.close_timeout = close_timeout
        self.critical = critical
        self._restarts: deque[float] = deque()
        """When the group's recent restarts happened (``time.monotonic()``), for the intensity."""
        self._holds = 0
        """Holds in a row: each lasts twice as long as the last, until a calm ``within`` resets it."""
        self._scopes = {worker.name: anyio.CancelScope() for worker in self.workers}
        self.gave_up = False

    async def run(self) -> None:
        """Run every worker until its mailbox closes; raise if a critical group gave up."""
        async with anyio.create_task_group() as group:
            for worker in self.workers:
                group.start_soon(self._supervise, worker, name=f"kvrt worker {worker.name}")
        if self.gave_up and self.critical:
            names = ", ".join(worker.name for worker in self.workers)
            raise BackendUnavailableError(f"Critical backends gave up: {names}.")

    def cancel(self, name: str) -> None:
        """Cancel the worker called ``name`` where it is (past its grace); its backend is still closed."""
        self._scopes[name].cancel()

    async def _supervise(self, worker: Worker) -> None:
        """Run one worker, restarting it as the policy and strategy say; close its backend at the end."""
        log = _log.bind(worker=worker.name, backend=worker.backend.kind)
        log.info("worker.started")
        try:
            with self._scopes[worker.name]:
                while await self._run_once(worker, log):
                    pass
        finally:
            if worker.state not in ("stopped", "unavailable"):
                worker.state = "stopped"
            worker.fail_all(lambda: self._final_error(worker))
            worker.close_mailbox()
            with anyio.CancelScope(shield=True):  # the backend is closed even when we are cancelled
                await self._close_backend(worker, log, final=True)
            worker.stopped.set()
            log.info("worker.stopped", state=worker.state)

    async def _run_once(self, worker: Worker, log: Any) -> bool:
        """Run ``worker`` until it stops; return whether it was restarted and should run again."""
        try:
            await worker.run()
        except SiblingRestart:
            if self.policy.restart_type == "temporary":
                self._retire(worker, log, "a sibling crashed and temporary workers are not restarted")
                return False
            log.info("worker.restarting_with_sibling")
            return await self._reconnect(worker, log)
        except WorkerCrash as crash:
            cause = crash.__cause__ or crash
            log.warning("worker.crashed", cause=_name(cause), detail=_detail(cause))
            return await self._after_crash(worker, log, cause, transient=True)
        except Exception as exc:
            log.error("worker.crashed", cause=_name(exc), detail=_detail(exc), unexpected=True)
            return await self._after_crash(worker, log, exc, transient=False)
        worker.state = "stopped"
        return False

    async def _after_crash(self, worker: Worker, log: Any, cause: BaseException, *, transient: bool) -> bool:
        """Decide what a crash of ``worker`` leads to; return whether it runs again."""
        worker.counters.last_crash = _name(cause)
        if self.gave_up:
            return False
        restart_type = self.policy.restart_type
        if restart_type == "temporary" or (restart_type == "transient" and not transient):
            self._retire(worker, log, f"a {restart_type} worker is not restarted after this crash")
            return False
        worker.state = "restarting"
        if _finished(worker):
            return False
        hold = self._count_restart()
        if hold is None:
            self._give_up(log, cause)
            return False
        index = self.workers.index(worker)
        affected = {
            "one_for_one": [],
            "one_for_all": self.workers[:index] + self.workers[index + 1 :],
            "rest_for_one": self.workers[index + 1 :],
        }[self.strategy]
        for sibling in affected:
            if sibling.state == "running":
                sibling.request_restart()
        if hold and not await self._hold_down(worker, log, hold, cause):
            return False
        return await self._reconnect(worker, log)

    def _count_restart(self) -> float | None:
        """Count a restart against the group's intensity; return the hold before it (0: none), ``None``: give up."""
        policy = self.policy
        now = time.monotonic()
        restarts = self._restarts
        while restarts and now - restarts[0] > policy.within:
            restarts.popleft()
        if not restarts:
            self._holds = 0  # calm for a whole window: holds start short again
        if len(restarts) < policy.max_restarts:
            restarts.append(now)
            return 0.0
        if policy.give_up:
            return None
        hold: float = min(policy.hold_max, policy.hold_initial * 2.0 ** min(self._holds, _MAX_DOUBLINGS))
        self._holds += 1
        restarts.append(now + hold)  # the restart after the hold counts too, when it happens
        return hold

    async def _hold_down(self, worker: Worker, log: Any, hold: float, cause: BaseException) -> bool:
        """Keep ``worker`` down for ``hold`` seconds, failing calls at once; ``False`` if shutdown ended it."""
        worker.state = "held_down"
        worker.counters.holds += 1
        worker.breaker.hold_open()
        log.error(
            "worker.gave_up",
            cause=_name(cause),
            holding_for=round(hold, 3),
            max_restarts=self.policy.max_restarts,
            within=self.policy.within,
        )
        worker.fail_all(
            lambda: BackendUnavailableError(
                f"The backend keeps crashing; its supervisor holds it down for {hold:g} s.", backend=worker.name
            )
        )
        return await self._wait(worker, hold)

    async def _reconnect(self, worker: Worker, log: Any) -> bool:
        """Close and reopen the backend, backing off between attempts, until it opens or shutdown ends it.

        Every failed attempt is part of the same outage: it is not another restart, but it does
        count against the circuit breaker, and once the breaker is open the requests waiting for
        the worker fail at once rather than wait the outage out.
        """
        policy = self.policy
        attempt = max(len(self._restarts) - 1, 0)
        while True:
            worker.state = "restarting"
            delay = min(policy.backoff_max, policy.backoff_initial * 2.0 ** min(attempt, _MAX_DOUBLINGS))
            delay *= random.uniform(0.5, 1.0)
            log.info("worker.backoff", seconds=round(delay, 3))
            if not await self._wait(worker, delay):
                return False
            await self._close_backend(worker, log)
            try:
                await worker.backend.open()
            except Exception as exc:
                worker.counters.reconnects_failed += 1
                log.warning("worker.reopen_failed", cause=_name(exc), detail=_detail(exc), attempt=attempt)
                worker.breaker.failed()
                if worker.breaker.state == OPEN:
                    worker.fail_all(
                        lambda: BackendUnavailableError(
                            "The backend cannot be reached; its supervisor keeps reconnecting.", backend=worker.name
                        )
                    )
                if self.gave_up:
                    return False
                attempt += 1
                continue
            if self.gave_up:  # a sibling gave up for the group while we were reopening (cancellation lands later)
                return False
            worker.counters.restarts += 1
            worker.breaker.reconnected()
            worker.state = "running"
            log.info("worker.restarted", restarts=worker.counters.restarts, failed_attempts=attempt)
            return True

    async def _wait(self, worker: Worker, seconds: float) -> bool:
        """Wait ``seconds``; ``False`` if the runtime shut down meanwhile with nothing left for a restart to serve.

        Shutting down with requests held, those still get a backed-off retry, unless every one of
        their callers gives up first (a withdrawal wakes nobody, so look again now and then).
        """
        wake = anyio.current_time() + seconds
        with anyio.move_on_after(seconds):
            await worker.closing.wait()
        while worker.closing.is_set():
            if worker.idle_at_close():
                return False
            left = wake - anyio.current_time()
            if left <= 0:
                break
            await anyio.sleep(min(left, _RECHECK_AT_CLOSE))
        return True

    def _retire(self, worker: Worker, log: Any, reason: str) -> None:
        """Stop one worker for good: it becomes unavailable."""
        worker.state = "unavailable"
        worker.breaker.hold_open()
        log.error("worker.retired", reason=reason)

    def _give_up(self, log: Any, cause: BaseException) -> None:
        """Make every worker of the group unavailable for good and stop the others' loops (``give_up=True``)."""
        policy = self.policy
        self.gave_up = True
        log.error(
            "worker.gave_up", cause=_name(cause), for_good=True, max_restarts=policy.max_restarts, within=policy.within
        )
        for worker in self.workers:
            worker.state = "unavailable"
            worker.breaker.hold_open()
            self._scopes[worker.name].cancel()

    def _final_error(self, worker: Worker) -> KeyValueError:
        if worker.state == "unavailable":
            return BackendUnavailableError(
                "Its restart policy stopped the backend for good: it crashed more than "
                f"{self.policy.max_restarts} times in {self.policy.within} s with give_up=True, "
                "or in a way its restart type does not restart.",
                backend=worker.name,
            )
        return RuntimeClosedError("The runtime shut down first.", backend=worker.name)

    async def _close_backend(self, worker: Worker, log: Any, *, final: bool = False) -> None:
        """Close the backend (and, at the worker's end, shut it down), giving up after ``close_timeout`` seconds.

        A hung driver never hangs kvrt.
        """
        with anyio.move_on_after(self.close_timeout) as scope:
            try:
                await worker.backend.close()
                if final:
                    await worker.backend.shutdown()
            except Exception as exc:
                log.warning("worker.close_failed", cause=_name(exc), detail=_detail(exc))
        if scope.cancelled_caught:
            log.warning("worker.close_timed_out", seconds=self.close_timeout)


def _finished(worker: Worker) -> bool:
    """Whether the runtime is shutting down and ``worker`` holds nothing a restart would serve."""
    return worker.closing.is_set() and worker.idle_at_close()


def _name(error: BaseException | None) -> str:
    return type(error).__name__


def _detail(error: BaseException | None) -> str:
    return str(error)[:200]

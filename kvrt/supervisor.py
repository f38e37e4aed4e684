"""The supervisor: runs a group of workers, restarts them with backoff when they crash, gives up past the intensity.

Restart follows OTP's model. A crash (a transient backend failure, or an unexpected exception in a
worker) closes and reopens the backend's connection after an exponential backoff with jitter, and
the worker picks up the requests it was holding. The group's strategy says who restarts with it:
``one_for_one`` the crashed worker alone, ``one_for_all`` every worker of the group,
``rest_for_one`` it and those spawned after it. More than ``max_restarts`` restarts of the group
within ``within`` seconds means the backends are not coming back soon: the supervisor gives up,
every worker of the group becomes unavailable and every call on one fails at once. A critical group
then fails the whole runtime.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Final

import anyio

from kvrt.errors import BackendUnavailableError, KeyValueError, RuntimeClosedError
from kvrt.log import logger as _log
from kvrt.policies import RestartPolicy, Strategy
from kvrt.worker import SiblingRestart, Worker, WorkerCrash

_RECHECK_AT_CLOSE: Final = 0.05
"""Seconds between looks, during a backoff at shutdown, for whether the held requests still have callers."""


class Supervisor:
    """Keeps a group of workers running for as long as its restart policy allows."""

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
        self._delay = 0.0
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
                await self._close_backend(worker, log)
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
            return await self._reopen(worker, log, self._delay)
        except WorkerCrash as crash:
            log.warning("worker.crashed", cause=_name(crash.__cause__), detail=str(crash.__cause__)[:200])
            return await self._after_crash(worker, log, transient=True)
        except Exception as exc:
            log.error("worker.crashed", cause=_name(exc), detail=str(exc)[:200], unexpected=True)
            return await self._after_crash(worker, log, transient=False)
        worker.state = "stopped"
        return False

    async def _after_crash(self, worker: Worker, log: Any, *, transient: bool) -> bool:
        if self.gave_up:
            return False
        restart_type = self.policy.restart_type
        if restart_type == "temporary" or (restart_type == "transient" and not transient):
            self._retire(worker, log, f"a {restart_type} worker is not restarted after this crash")
            return False
        worker.state = "restarting"
        index = self.workers.index(worker)
        affected = {
            "one_for_one": [],
            "one_for_all": self.workers[:index] + self.workers[index + 1 :],
            "rest_for_one": self.workers[index + 1 :],
        }[self.strategy]
        if _finished(worker):
            return False
        if not self._may_restart():
            self._give_up(log)
            return False
        for sibling in affected:
            if sibling.state == "running":
                sibling.request_restart()
        return await self._reopen(worker, log, self._delay)  # a failed reopen comes back here as a crash

    def _may_restart(self) -> bool:
        """Count a restart of the group against its intensity, and set the backoff before it."""
        policy = self.policy
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > policy.within:
            self._restarts.popleft()
        if len(self._restarts) >= policy.max_restarts:
            return False
        self._restarts.append(now)
        attempt = len(self._restarts) - 1
        self._delay = min(policy.backoff_max, policy.backoff_initial * 2**attempt) * random.uniform(0.5, 1.0)
        return True

    async def _reopen(self, worker: Worker, log: Any, delay: float) -> bool:
        """Close the backend, wait ``delay``, open it again; ``False`` if opening failed."""
        worker.state = "restarting"
        log.info("worker.backoff", seconds=round(delay, 3))
        wake = anyio.current_time() + delay
        with anyio.move_on_after(delay):
            await worker.closing.wait()
        # Shutting down with requests held: they still get a backed-off retry, unless every one of
        # their callers gives up first (a withdrawal wakes nobody, so look again now and then).
        while worker.closing.is_set():
            if worker.idle_at_close():
                return False
            left = wake - anyio.current_time()
            if left <= 0:
                break
            await anyio.sleep(min(left, _RECHECK_AT_CLOSE))
        worker.counters.restarts += 1
        await self._close_backend(worker, log)
        try:
            await worker.backend.open()
        except Exception as exc:
            log.warning("worker.reopen_failed", cause=_name(exc), detail=str(exc)[:200])
            worker.breaker.failed()  # a backend that cannot be reached is failing: let the circuit open
            return await self._after_crash(worker, log, transient=True)
        if self.gave_up:  # a sibling gave up for the group while we were reopening (cancellation lands later)
            return False
        worker.state = "running"
        log.info("worker.restarted", restarts=worker.counters.restarts)
        return True

    def _retire(self, worker: Worker, log: Any, reason: str) -> None:
        """Stop one worker for good: it becomes unavailable."""
        worker.state = "unavailable"
        worker.breaker.hold_open()
        log.error("worker.retired", reason=reason)

    def _give_up(self, log: Any) -> None:
        """Make every worker of the group unavailable and stop the others' loops."""
        policy = self.policy
        self.gave_up = True
        log.error("worker.gave_up", max_restarts=policy.max_restarts, within=policy.within)
        for worker in self.workers:
            worker.state = "unavailable"
            worker.breaker.hold_open()
            self._scopes[worker.name].cancel()

    def _final_error(self, worker: Worker) -> KeyValueError:
        if worker.state == "unavailable":
            return BackendUnavailableError(
                f"The backend failed more than {self.policy.max_restarts} times in {self.policy.within} s, "
                "or crashed in a way its restart type does not restart; its supervisor gave up.",
                backend=worker.name,
            )
        return RuntimeClosedError("The runtime shut down first.", backend=worker.name)

    async def _close_backend(self, worker: Worker, log: Any) -> None:
        """Close the backend, giving up after ``close_timeout`` seconds: a hung driver never hangs kvrt."""
        with anyio.move_on_after(self.close_timeout) as scope:
            try:
                await worker.backend.close()
            except Exception as exc:
                log.warning("worker.close_failed", cause=_name(exc))
        if scope.cancelled_caught:
            log.warning("worker.close_timed_out", seconds=self.close_timeout)


def _finished(worker: Worker) -> bool:
    """Whether the runtime is shutting down and ``worker`` holds nothing a restart would serve."""
    return worker.closing.is_set() and worker.idle_at_close()


def _name(error: BaseException | None) -> str:
    return type(error).__name__

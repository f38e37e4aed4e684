"""The supervisor: runs a worker, restarts it with backoff when it crashes, gives up past the intensity.

Restart follows OTP's model: a crash (a transient backend failure) closes and reopens the backend's
connection after an exponential backoff with jitter, and the worker picks up the requests it was
holding. More than ``max_restarts`` restarts within ``within`` seconds means the backend is not
coming back soon: the supervisor gives up, and every call on it fails at once.
"""

from __future__ import annotations

import random
import time
from collections import deque

import anyio
from structlog.typing import FilteringBoundLogger

from kvrt.errors import BackendUnavailableError, RuntimeClosedError
from kvrt.log import logger as _log
from kvrt.policies import RestartPolicy
from kvrt.worker import Worker, WorkerCrash


class Supervisor:
    """Keeps one worker running for as long as its restart policy allows."""

    def __init__(self, worker: Worker, policy: RestartPolicy, *, close_timeout: float) -> None:
        self.worker = worker
        self.policy = policy
        self.close_timeout = close_timeout
        self._restarts: deque[float] = deque()

    async def run(self) -> None:
        """Run the worker until its mailbox closes, restarting it after each crash; then close the backend."""
        worker = self.worker
        log = _log.bind(worker=worker.name, backend=type(worker.backend).__name__)
        log.info("worker.started")
        try:
            while True:
                try:
                    await worker.run()
                    worker.state = "stopped"
                    return
                except WorkerCrash as crash:
                    cause = crash.__cause__
                    log.warning("worker.crashed", cause=type(cause).__name__, detail=str(cause)[:200])
                    if not await self._restart(log):
                        self._give_up(log)
                        return
        finally:
            if worker.state not in ("stopped", "unavailable"):
                worker.state = "stopped"
            worker.fail_all(lambda: RuntimeClosedError("The runtime shut down first.", backend=worker.name))
            worker.close_mailbox()
            with anyio.CancelScope(shield=True):  # the backend is closed even when we are cancelled
                await self._close_backend(log)
            worker.stopped.set()
            log.info("worker.stopped")

    async def _restart(self, log: FilteringBoundLogger) -> bool:
        """Reopen the backend after a backoff; return ``False`` once the restart intensity is spent."""
        worker = self.worker
        policy = self.policy
        worker.state = "restarting"
        attempt = 0
        while True:
            now = time.monotonic()
            while self._restarts and now - self._restarts[0] > policy.within:
                self._restarts.popleft()
            if len(self._restarts) >= policy.max_restarts:
                return False
            self._restarts.append(now)
            worker.counters.restarts += 1
            delay = min(policy.backoff_max, policy.backoff_initial * 2**attempt) * random.uniform(0.5, 1.0)
            attempt += 1
            log.info("worker.backoff", seconds=round(delay, 3), attempt=attempt)
            await anyio.sleep(delay)
            await self._close_backend(log)
            try:
                await worker.backend.open()
            except Exception as exc:
                log.warning("worker.reopen_failed", cause=type(exc).__name__, detail=str(exc)[:200])
                continue
            worker.state = "running"
            log.info("worker.restarted", restarts=worker.counters.restarts)
            return True

    def _give_up(self, log: FilteringBoundLogger) -> None:
        """Mark the backend unavailable and fail everything waiting on it, now and from now on."""
        worker = self.worker
        worker.state = "unavailable"
        policy = self.policy
        log.error("worker.gave_up", max_restarts=policy.max_restarts, within=policy.within)
        worker.fail_all(
            lambda: BackendUnavailableError(
                f"The backend failed more than {policy.max_restarts} times in {policy.within} s; "
                "its supervisor gave up.",
                backend=worker.name,
            )
        )
        worker.close_mailbox()

    async def _close_backend(self, log: FilteringBoundLogger) -> None:
        """Close the backend, giving up after ``close_timeout`` seconds: a hung driver never hangs kvrt."""
        with anyio.move_on_after(self.close_timeout) as scope:
            try:
                await self.worker.backend.close()
            except Exception as exc:
                log.warning("worker.close_failed", cause=type(exc).__name__)
        if scope.cancelled_caught:
            log.warning("worker.close_timed_out", seconds=self.close_timeout)

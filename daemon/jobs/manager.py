"""JobManager: the component the service starts — watcher, ordered scheduler, workers, retention."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from typing import Any, Protocol

from daemon import metrics
from daemon.config import Config
from daemon.jobs.notices import build_payload
from daemon.jobs.paths import job_dir, partner_errors_dir
from daemon.jobs.queue import Queue, Ready
from daemon.jobs.worker import Worker
from daemon.logs import event
from daemon.shutdown import Shutdown
from daemon.sinks.base import Sink
from daemon.store.db import StateDB
from daemon.store.jobs import JobStore, iso
from daemon.watch.watcher import DropWatcher

log = logging.getLogger("ingestd.jobs")

WAKE_DELAY = 0.25  # least seconds between two scheduling passes asked for by file events
# The scheduler looks again at least this often, even without a file event: a job `imports retry` queued
# (from another process, with no file event) starts within this.
IDLE_TICK = 5.0
RETENTION_EVERY = 3600.0
COOLDOWN = 30.0  # seconds an account is left alone after its job's task died unexpectedly
PAUSE_RETRY = 5.0  # seconds before a job paused by a full disk or a locked database is tried again


class Notifier(Protocol):
    def notify(self, kind: str, job: dict[str, Any]) -> None: ...


class JobManager:
    """One job at a time per account in arrival order, `jobs.workers` accounts at once."""

    def __init__(
        self, config: Config, db: StateDB, sink: Sink, notifier: Notifier, shutdown: Shutdown | None = None
    ) -> None:
        self.config = config
        # The service's stop deadline (shared with the other components); its own when run alone.
        self._own_shutdown = shutdown is None
        self.shutdown = shutdown if shutdown is not None else Shutdown(config.jobs.shutdown_grace)
        self.store = JobStore(db)
        self.sink = sink
        self.notifier = notifier
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._wake_pending = False
        self._last_wake = float("-inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        self.worker = Worker(config, self.store, sink, self._notify, self._stopping)
        self.queue = Queue(config, self.store, self.worker.fail_pickup, self.worker.cancel_pending)
        # The watcher also rescans every watch.rescan_interval: files of other nodes, lost watch events.
        self.watcher = DropWatcher(
            config.drop_root, self.store, self.wake, config.watch.rescan_interval, config.sftp.resume_window
        )
        self._running: dict[str, asyncio.Task[None]] = {}  # account -> its job's task
        self._tasks: list[asyncio.Task[None]] = []
        self._next_check: float | None = None
        self._more = False  # the last pass left heads to settle
        self._cooldown: dict[str, float] = {}  # account -> monotonic time before which it is left alone
        self._graceful: asyncio.Task[Any] | None = None  # the wait for running jobs at shutdown

    # -- service interface ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._own_shutdown:  # started again after a stop: a new deadline for the next one
            self.shutdown = Shutdown(self.config.jobs.shutdown_grace)
        self._loop = asyncio.get_running_loop()
        self.config.jobs_root.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.remove_expired)
        # Watch first, then rescan: a file arriving in between is seen by one or both (enqueue de-duplicates).
        await asyncio.to_thread(self.watcher.start)
        queued = await asyncio.to_thread(self.watcher.rescan)
        if queued:
            event(log, "jobs.rescan", queued=len(queued))
        self._tasks = [
            asyncio.create_task(self._schedule_forever(), name="jobs-scheduler"),
            asyncio.create_task(self._periodic(), name="jobs-housekeeping"),
        ]

    async def stop(self) -> None:
        """Stop taking jobs; running ones stop at their next checkpoint within what remains of the stop's
        deadline (`jobs.shutdown_grace` from its start), then are cancelled (at once when the service is told
        to stop again: `force_stop`)."""
        self.shutdown.begin()
        self._stopping.set()
        self.wake()
        await asyncio.to_thread(self.watcher.stop)
        for task in self._tasks:
            task.cancel()
        running = list(self._running.values())
        if running:
            self._graceful = asyncio.create_task(self.shutdown.wait(running))
            with contextlib.suppress(asyncio.CancelledError):
                await self._graceful
            for task in running:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def force_stop(self) -> None:
        """A second stop signal: running jobs are cancelled now (they resume from their last checkpoint)."""
        self.shutdown.force()  # ends the wait for running jobs (self._graceful)

    def banner(self) -> list[str]:
        return [f"  jobs   {self.config.jobs.workers} workers, drop folders under {self.config.drop_root.resolve()}"]

    def health(self) -> str | None:
        for task in self._tasks:
            if task.done() and not self._stopping.is_set():
                return f"jobs: {task.get_name()} stopped"
        paused = sorted({**self.queue.paused, **self.worker.paused}.items())
        if paused:
            return "jobs: " + "; ".join(f"job {job_id} of {account} {reason}" for job_id, (account, reason) in paused)
        return None

    def wake(self, urgent: bool = False) -> None:
        """Look at the queue again soon (`urgent`: at once, a job was queued); safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if self._wake_pending and not urgent:
            return  # one wake-up already on its way: a burst of arrivals costs one scheduling pass
        self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
            loop.call_soon_threadsafe(self._wake_soon, loop, urgent)

    def _wake_soon(self, loop: asyncio.AbstractEventLoop, urgent: bool) -> None:
        # At once after a quiet spell or for a new job, else WAKE_DELAY after the last pass: a burst of
        # uploads (a thousand small files) costs a few passes, not one each.
        delay = 0.0 if urgent else max(0.0, self._last_wake + WAKE_DELAY - loop.time())
        loop.call_later(delay, self._woken)

    def _woken(self) -> None:
        self._wake_pending = False
        if self._loop is not None:
            self._last_wake = self._loop.time()
        self._wake.set()

    # -- scheduling -----------------------------------------------------------------------------

    async def schedule_once(self) -> int:
        """Settle what can be settled now and start workers for ready jobs; returns how many started."""
        if self._stopping.is_set():
            return 0
        now = time.monotonic()
        self._cooldown = {account: until for account, until in self._cooldown.items() if until > now}
        busy = set(self._running) | set(self._cooldown)
        free = self.config.jobs.workers - len(self._running)
        plan = await asyncio.to_thread(self.queue.plan, busy, free)
        self._next_check = plan.next_check
        for job_id, (account, _) in list(self.worker.paused.items()):
            # A paused job stays its account's head until it ends; one that left (cancelled) is forgotten.
            if job_id not in self.queue.active_ids and account not in self._running:
                self.worker.paused.pop(job_id, None)
        for ready in plan.ready:
            self._start(ready)
        self._more = plan.more
        if plan.more:  # heads left to settle: another pass right after this one, ready jobs already started
            self._wake.set()
        metrics.QUEUE_DEPTH.set(await asyncio.to_thread(self.store.pending_count))
        return len(plan.ready)

    def _start(self, ready: Ready) -> None:
        account = ready.job.account
        task = asyncio.create_task(self.worker.run(ready), name=f"job-{ready.job.id}")
        self._running[account] = task

        def done(finished: asyncio.Task[None]) -> None:
            self._running.pop(account, None)
            if not finished.cancelled() and finished.exception() is not None:
                # Even recording the failure failed (e.g. the state DB): try again later, not in a tight loop.
                log.error("job %s stopped unexpectedly", ready.job.id, exc_info=finished.exception())
                self._cooldown[account] = time.monotonic() + COOLDOWN
            elif ready.job.id in self.worker.paused:
                # Paused (a full disk, a locked database): run it again from its checkpoint in a while.
                self._cooldown[account] = time.monotonic() + PAUSE_RETRY
            self._wake.set()

        task.add_done_callback(done)

    async def _schedule_forever(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                await self.schedule_once()
            except Exception:
                # Recorded, and tried again on the next tick: one bad head must not stop every account.
                log.exception("scheduling failed")
            timeout = IDLE_TICK
            if self._next_check is not None:
                timeout = min(timeout, max(0.05, self._next_check - time.time()))
            if self._cooldown:  # an account coming out of its cooldown is looked at when it does
                timeout = min(timeout, max(0.05, min(self._cooldown.values()) - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _periodic(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(RETENTION_EVERY)
            try:
                await asyncio.to_thread(self.remove_expired)
            except Exception:
                log.exception("housekeeping failed")

    async def run_until_idle(self, timeout: float = 120.0) -> None:
        """For tests: rescan, then run jobs until none is running and none is ready (waiting jobs may remain)."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.watcher.rescan)
        deadline = time.monotonic() + timeout
        while True:
            started = await self.schedule_once()
            if not started and not self._running and not self._more:
                return
            if self._running:
                await asyncio.wait(list(self._running.values()), timeout=max(0.1, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still running after {timeout}s")

    # -- retention ------------------------------------------------------------------------------

    def remove_expired(self) -> list[int]:
        """Remove the folders of jobs finished more than `jobs.retention_days` ago (0 keeps them), and their
        copies in the partner's `errors/` folder (error CSV, report)."""
        days = self.config.jobs.retention_days
        if days <= 0:
            return []
        removed = []
        for job in self.store.finished_before(iso(time.time() - days * 86400)):
            folder = job_dir(self.config, job.id)
            gone = False
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
                gone = True
            errors = partner_errors_dir(self.config, job.account)
            for recorded in (job.details.get("error_csv"), job.details.get("report")):
                if not isinstance(recorded, str) or not recorded.startswith("errors/"):
                    continue
                path = errors / recorded.removeprefix("errors/")
                if "/" in recorded.removeprefix("errors/") or not os.path.lexists(path) or os.path.isdir(path):
                    continue
                try:
                    os.unlink(path)  # a link placed there is removed, never followed
                    gone = True
                except OSError as exc:
                    log.warning("could not remove %s of job %s: %s", recorded, job.id, exc)
            if gone:
                removed.append(job.id)
        if removed:
            event(log, "jobs.retention", removed=len(removed), retention_days=days)
        return removed

    # -- notifications --------------------------------------------------------------------------

    def _notify(self, kind: str, job_id: int, **extra: Any) -> None:
        """The payload of daemon/jobs/notices.py to the notifier; a notifier error is logged, never fatal to the job."""
        try:
            self.notifier.notify(kind, build_payload(self.store, job_id, **extra))
        except Exception:
            log.exception("could not queue the %s notification of job %s", kind, job_id)

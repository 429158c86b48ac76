"""The ordered queue: which job of each account may move next, and the checks made before pickup."""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from daemon.config import Config
from daemon.jobs import messages
from daemon.jobs.files import NotRegular, lstat_regular, pause_reason, read_bounded
from daemon.jobs.paths import job_dir
from daemon.jobs.status import PENDING
from daemon.logs import event
from daemon.sftp import partials
from daemon.store.jobs import Job, JobStore
from daemon.text import safe
from manifests.model import Manifest, ManifestError, load_manifest

log = logging.getLogger("ingestd.jobs")

PASS_BUDGET = 0.25  # seconds one scheduling pass may spend settling heads before the ready ones start
MAX_CHECK_ERRORS = 3  # passes in a row a head's check may fail unexpectedly before the job fails for good


@dataclass
class Ready:
    """A job whose manifest is valid and whose CSV is there (or a job to resume)."""

    job: Job
    manifest: Manifest


@dataclass
class Pickups:
    """What one pass over the queue found: jobs ready for a worker, and when to look again."""

    ready: list[Ready] = field(default_factory=list)
    next_check: float | None = None  # epoch seconds when a waiting job should be looked at again
    more: bool = False  # the pass ran out of its time budget with heads still to settle: look again at once


class Queue:
    """Pickup checks, run in a worker thread (file and database I/O): one head job per account, in id order."""

    def __init__(self, config: Config, store: JobStore, fail: Callable[..., None], cancel: Callable[..., None]) -> None:
        self.config = config
        self.store = store
        self.fail = fail  # fail(job, reason, problems, client_emails): final status, file moved, notified
        self.cancel = cancel  # cancel(job, detail, client_emails): `cancelled`, notified
        # job id -> (the manifest file's identity, its parse): a manifest waiting for its CSV is parsed once.
        self._parsed: dict[int, tuple[tuple[int, ...], Manifest | ManifestError]] = {}
        self.active_ids: set[int] = set()  # the head jobs of the last pass
        # job id -> (account, reason): heads that could not be settled for a full disk or a locked database.
        self.paused: dict[int, tuple[str, str]] = {}
        self._errors: dict[int, int] = {}  # job id -> passes in a row its check raised unexpectedly

    def job_dir(self, job_id: int) -> Path:
        return job_dir(self.config, job_id)

    def manifest_path(self, job: Job) -> Path:
        """The job folder once picked up (also after a crash mid-pickup), else the partner's folder."""
        moved = self.job_dir(job.id) / job.manifest_name
        return moved if moved.exists() else self.config.drop_root / job.account / job.manifest_name

    def plan(self, busy: set[str], free_slots: int, now: float | None = None) -> Pickups:
        """Settle the head jobs that can be settled now; return those ready for a worker (at most free_slots).

        Every account's head is looked at once per round; a round that settled some looks again (the next job
        became the head), until PASS_BUDGET seconds are used: then `more` says to come back at once, after the
        ready jobs have started. So a thousand bad manifests of one account cost it many passes, and another
        account's import waits for one budget, not for all of them.
        """
        now = time.time() if now is None else now
        started = time.monotonic()
        result = Pickups()
        looked: set[int] = set()  # heads this node claimed (shared state) to look at in this pass
        try:
            self._plan(busy, free_slots, now, started, result, looked)
        finally:
            # Shared state: the heads looked at but not started go back to every node (one statement).
            ready = {r.job.id for r in result.ready}
            self.store.release(sorted(looked - ready))
        return result

    def _plan(
        self, busy: set[str], free_slots: int, now: float, started: float, result: Pickups, looked: set[int]
    ) -> None:
        settled = True
        while settled:  # a head that fails makes the account's next job the head: look again
            if time.monotonic() - started > PASS_BUDGET:
                result.more = True
                break
            settled = False
            heads = self.store.heads()
            current = {job.id for job in heads}
            self.active_ids = current
            self._parsed = {job_id: entry for job_id, entry in self._parsed.items() if job_id in current}
            self.paused = {job_id: entry for job_id, entry in self.paused.items() if job_id in current}
            self._errors = {job_id: count for job_id, count in self._errors.items() if job_id in current}
            taken = {r.job.account for r in result.ready}
            # Shared state: only the heads no other node holds (one per account cluster-wide); else all of them.
            mine = self.store.claim([job.id for job in heads if job.account not in busy and job.account not in taken])
            looked.update(mine)
            for job in heads:
                if job.account in busy or job.id not in mine or any(r.job.account == job.account for r in result.ready):
                    continue
                try:
                    outcome = self._check(job, now, result, free_slots - len(result.ready))
                except Exception as exc:
                    reason = pause_reason(exc)
                    if reason is None:
                        outcome = self._unexpected(job, exc)
                        settled = settled or outcome
                        continue
                    if self.paused.get(job.id, ("", ""))[1] != reason:
                        event(log, "job.paused", logging.WARNING, account=job.account, job_id=job.id, reason=reason)
                    self.paused[job.id] = (job.account, reason)
                    continue
                self.paused.pop(job.id, None)
                self._errors.pop(job.id, None)
                settled = settled or outcome

    def _unexpected(self, job: Job, exc: Exception) -> bool:
        """A check that raised what no rule foresaw: tried again next pass (the other accounts go on), and after
        MAX_CHECK_ERRORS passes in a row the job fails for good, so it never blocks its account for ever. The
        log line is bounded: the exception may quote a partner's (very long) name."""
        count = self._errors[job.id] = self._errors.get(job.id, 0) + 1
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        where = f"{Path(frame.filename).name}:{frame.lineno}" if frame else "?"
        error = safe(f"{type(exc).__name__}: {exc}")[:300]
        event(log, "job.check_failed", logging.ERROR, account=job.account, job_id=job.id, error=error, at=where)
        if count < MAX_CHECK_ERRORS:
            return False
        self._errors.pop(job.id, None)
        self.fail(job, messages.INTERNAL, [], list(job.details.get("client_emails") or []))
        return True

    def _manifest(self, job: Job, path: Path) -> Manifest:
        """The job's manifest, parsed once per version of the file; ManifestError, NotRegular or OSError."""
        info = os.lstat(path)
        identity = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)
        cached = self._parsed.get(job.id)
        if cached is None or cached[0] != identity:
            limit = self.config.jobs.max_manifest_size
            raw, info = read_bounded(path, limit)
            identity = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)
            try:
                parsed: Manifest | ManifestError = load_manifest(
                    raw, max_size=limit, max_recipients=self.config.notify.max_recipients
                )
            except ManifestError as exc:
                parsed = exc
            cached = self._parsed[job.id] = (identity, parsed)
        if isinstance(cached[1], ManifestError):
            raise cached[1]
        return cached[1]

    def _check(self, job: Job, now: float, result: Pickups, free: int) -> bool:
        """True when the job reached a final status here (so the account's next job may move)."""
        raw_name = job.details.get("raw_name")
        if raw_name and job.status != "processing":
            # Queued under safe text by the watcher; the file itself goes by its real bytes.
            self.fail(job, messages.UNREADABLE, [messages.bad_name_detail(job.manifest_name)], [])
            return True
        path = self.manifest_path(job)
        try:
            manifest = self._manifest(job, path)
        except FileNotFoundError:
            if job.status in PENDING:
                # The partner took it back: not a failure, and never a reason to block the account.
                emails = list(job.details.get("client_emails") or [])
                self.cancel(job, messages.removed_by_partner(job.manifest_name), emails)
                return True
            self.fail(job, messages.UNREADABLE, [messages.vanished_detail(job.manifest_name)], [])
            return True
        except NotRegular as exc:
            self.fail(job, messages.UNREADABLE, [str(exc)], [])
            return True
        except OSError as exc:
            detail = messages.unreadable_detail(job.manifest_name, exc.strerror or str(exc))
            self.fail(job, messages.UNREADABLE, [detail], [])
            return True
        except ManifestError as exc:
            self.fail(job, messages.BAD_MANIFEST, list(exc.problems), list(exc.client_emails))
            return True
        if not job.file_name:
            self.store.set_file(job.id, manifest.file_name, manifest.type)
            job.file_name, job.type = manifest.file_name, manifest.type
        if job.status == "processing":
            if free > 0:
                result.ready.append(Ready(job, manifest))
            return False
        retry = job.details.get("retry_of") is not None  # the same manifest again, on purpose
        if not retry and self.store.name_used(job.account, job.manifest_name, job.id):
            detail = messages.duplicate_detail(job.manifest_name)
            self.fail(job, messages.DUPLICATE_MANIFEST, [detail], manifest.client_emails)
            return True
        csv_path = self.config.drop_root / job.account / manifest.file_name
        moved_csv = self.job_dir(job.id) / manifest.file_name
        try:
            present = lstat_regular(csv_path) is not None or lstat_regular(moved_csv) is not None
        except NotRegular as exc:
            # A link or a special file is not waited for: it will not become the partner's data.
            self.fail(job, messages.UNREADABLE, [str(exc)], manifest.client_emails)
            return True
        except OSError as exc:
            if pause_reason(exc) is not None:
                raise
            detail = messages.unreadable_detail(safe(manifest.file_name)[:300], exc.strerror or str(exc))
            self.fail(job, messages.UNREADABLE, [detail], manifest.client_emails)
            return True
        if present:
            if free > 0:
                result.ready.append(Ready(job, manifest))
            return False
        grace = self.config.jobs.data_file_grace
        since = job.waiting_since
        if since is None:
            self.store.mark_waiting(job.id, now, manifest.file_name, manifest.type, list(manifest.client_emails))
            event(log, "job.waiting_for_data", account=job.account, job_id=job.id, file=manifest.file_name)
            since = now
        deadline = since + grace
        kept = partials.kept_since(self.config.drop_root / job.account, manifest.file_name)
        if kept is not None:  # a broken upload of it may still be resumed: wait for it as long as it is kept
            deadline = max(deadline, kept + self.config.sftp.resume_window)
        if now >= deadline:
            self.fail(
                job, messages.NO_DATA_FILE, [messages.no_data_detail(manifest.file_name, grace)], manifest.client_emails
            )
            return True
        result.next_check = _earliest(result.next_check, deadline)
        return False


def _earliest(current: float | None, candidate: float) -> float:
    return candidate if current is None else min(current, candidate)

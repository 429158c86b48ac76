"""The ordered queue: which job of each account may move next, and the checks made before pickup."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.jobs import messages
from daemon.logs import event
from daemon.store.jobs import JobStore
from manifests.model import ManifestError, load_manifest

log = logging.getLogger("ingestd.jobs")


@dataclass
class Ready:
    """A job whose manifest is valid and whose CSV is there (or a job to resume)."""

    job: dict[str, Any]
    manifest: Any


@dataclass
class Plan:
    ready: list[Ready] = field(default_factory=list)
    next_check: float | None = None  # epoch seconds when a waiting job should be looked at again


class Queue:
    """Pickup checks, run in a worker thread (file and database I/O): one head job per account, in id order."""

    def __init__(self, config: Config, store: JobStore, fail: Callable[..., None]) -> None:
        self.config = config
        self.store = store
        self.fail = fail  # fail(job, reason, problems, client_emails): final status, file moved, notified

    def job_dir(self, job_id: int) -> Path:
        return self.config.jobs_root / str(job_id)

    def manifest_path(self, job: dict[str, Any]) -> Path:
        """The job folder once picked up (also after a crash mid-pickup), else the partner's folder."""
        moved = self.job_dir(job["id"]) / job["manifest_name"]
        return moved if moved.exists() else self.config.drop_root / job["account"] / job["manifest_name"]

    def plan(self, busy: set[str], free_slots: int, now: float | None = None) -> Plan:
        """Settle every head job that can be settled now; return those ready for a worker (at most free_slots)."""
        now = time.time() if now is None else now
        result = Plan()
        settled = True
        while settled:  # a head that fails makes the account's next job the head: look again
            settled = False
            for job in self.store.heads():
                if job["account"] in busy or any(r.job["account"] == job["account"] for r in result.ready):
                    continue
                try:
                    outcome = self._check(job, now, result, free_slots - len(result.ready))
                except Exception:
                    # Logged and tried again next round; the other accounts go on meanwhile.
                    log.exception("could not check job %s of %s", job["id"], job["account"])
                    continue
                settled = settled or outcome
        return result

    def _check(self, job: dict[str, Any], now: float, result: Plan, free: int) -> bool:
        """True when the job reached a final status here (so the account's next job may move)."""
        path = self.manifest_path(job)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            self.fail(job, messages.UNREADABLE, [messages.vanished_detail(job["manifest_name"])], [])
            return True
        except OSError as exc:
            detail = messages.unreadable_detail(job["manifest_name"], exc.strerror or str(exc))
            self.fail(job, messages.UNREADABLE, [detail], [])
            return True
        try:
            manifest = load_manifest(raw)
        except ManifestError as exc:
            self.fail(job, messages.BAD_MANIFEST, list(exc.problems), list(exc.client_emails))
            return True
        if not job["file_name"]:
            self.store.set_file(job["id"], manifest.file_name, manifest.type)
            job.update(file_name=manifest.file_name, type=manifest.type)
        if job["status"] == "processing":
            if free > 0:
                result.ready.append(Ready(job, manifest))
            return False
        if self.store.name_used(job["account"], job["manifest_name"], job["id"]):
            detail = messages.duplicate_detail(job["manifest_name"])
            self.fail(job, messages.DUPLICATE_MANIFEST, [detail], manifest.client_emails)
            return True
        csv_path = self.config.drop_root / job["account"] / manifest.file_name
        moved_csv = self.job_dir(job["id"]) / manifest.file_name
        if csv_path.is_file() or moved_csv.is_file():
            if free > 0:
                result.ready.append(Ready(job, manifest))
            return False
        grace = self.config.jobs.data_file_grace
        since = job.get("waiting_since")
        if since is None:
            self.store.mark_waiting(job["id"], now, manifest.file_name, manifest.type)
            event(log, "job.waiting_for_data", account=job["account"], job_id=job["id"], file=manifest.file_name)
            since = now
        if now - since >= grace:
            self.fail(
                job, messages.NO_DATA_FILE, [messages.no_data_detail(manifest.file_name, grace)], manifest.client_emails
            )
            return True
        result.next_check = _earliest(result.next_check, since + grace)
        return False


def _earliest(current: float | None, candidate: float) -> float:
    return candidate if current is None else min(current, candidate)

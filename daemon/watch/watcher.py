"""Watch the drop root: a completed `*.manifest` in `drop/<account>/` becomes a queued job."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from daemon.logs import event
from daemon.sftp import partials
from daemon.store.jobs import JobStore
from daemon.store.keys import ACCOUNT_RE
from daemon.text import has_surrogates, safe
from daemon.watch.inotify import Events

log = logging.getLogger("ingestd.watch")

ACCOUNT = ACCOUNT_RE


def manifest_of(drop_root: Path, path: str | bytes) -> tuple[str, str] | None:
    """(account, manifest name) when `path` is a manifest directly inside an account's folder."""
    text = os.fsdecode(path)
    try:
        parts = Path(text).relative_to(drop_root).parts
    except ValueError:
        return None
    if len(parts) != 2:
        return None  # the drop root itself, errors/ and any deeper folder are not arrivals
    account, name = parts
    # Hidden names are uploads in progress (".ingestd-upload-*.part") or the partner's own dotfiles; broken
    # uploads kept for resuming are one level deeper (".ingestd-partial/<name>").
    if name.startswith(".") or not name.endswith(".manifest") or not ACCOUNT.match(account):
        return None
    return account, name


RESCAN_MIN_AGE = 5.0  # a periodic rescan leaves alone files still being written by other means


class DropWatcher:
    """Turns manifests into jobs from the inotify thread (daemon/watch/inotify.py); `on_change` wakes the
    scheduler for any file.

    Every `rescan_interval` seconds it also rescans the drop folders: inotify sees only this machine's writes,
    not those of other nodes on a shared file system (NFS, EFS), and it can overflow. Queuing is idempotent
    (JobStore.enqueue: one pending job per manifest), so a file seen both ways makes one job."""

    def __init__(
        self,
        drop_root: Path,
        store: JobStore,
        on_change: Callable[..., None],
        rescan_interval: float = 0.0,
        resume_window: float | None = None,
    ) -> None:
        self.drop_root = drop_root.resolve()
        self.store = store
        self.on_change = on_change
        self.rescan_interval = rescan_interval  # 0: no periodic rescan
        self.resume_window = resume_window  # broken uploads older than this are removed by each rescan
        self._events: Events | None = None
        self._stop = threading.Event()
        self._rescanner: threading.Thread | None = None

    def arrived(self, account: str, name: str) -> int | None:
        """Register a manifest seen in the drop folder; None when a job already waits for it.

        A name that is not UTF-8 (written by another writer) is stored as safe text, with its real bytes
        in the job's details: the queue fails that job, and moves the file out by those bytes."""
        path = self.drop_root / account / name
        details = None
        if has_surrogates(name):
            details = {"raw_name": os.fsencode(name).hex()}
        # lexists: a link is queued too, so that the queue refuses it and moves it out of the way.
        job_id = self.store.enqueue(account, safe(name), lambda: os.path.lexists(path), details)
        if job_id is not None:
            event(log, "job.queued", account=account, job_id=job_id, manifest=safe(name))
        return job_id

    def rescan(self, min_age: float = 0.0, account: str | None = None) -> list[int]:
        """Queue every manifest already in the drop folders, oldest first (arrival while we were down).

        `min_age` skips files modified in the last seconds: one being copied in may not be complete."""
        found: list[tuple[float, str, str]] = []
        now = time.time()
        if not self.drop_root.is_dir():
            return []
        folders = [self.drop_root / account] if account else list(self.drop_root.iterdir())
        for account_dir in folders:
            if not account_dir.is_dir() or not ACCOUNT.match(account_dir.name):
                continue
            if self.resume_window is not None:
                try:
                    partials.remove_expired(account_dir, self.resume_window, now)
                except OSError:
                    log.exception("could not remove the expired partial uploads of %s", account_dir.name)
            for entry in os.scandir(account_dir):
                match = manifest_of(self.drop_root, entry.path)
                try:
                    if match and (entry.is_file() or entry.is_symlink()):
                        mtime = entry.stat(follow_symlinks=False).st_mtime
                        if now - mtime >= min_age:
                            found.append((mtime, match[0], match[1]))
                except OSError:
                    continue  # gone meanwhile
        created = []
        for _, account, name in sorted(found):
            try:
                job_id = self.arrived(account, name)
            except Exception:
                # One file that cannot be queued must not stop the others (nor the daemon's start).
                log.exception("could not queue %s/%s", account, safe(name))
                continue
            if job_id is not None:
                created.append(job_id)
        return created

    def start(self) -> None:
        self.drop_root.mkdir(parents=True, exist_ok=True)
        self._events = Events(self.drop_root, self._file_event, self._new_folder, self._lost)
        self._events.start()
        if self.rescan_interval > 0:
            self._stop.clear()
            self._rescanner = threading.Thread(target=self._rescan_forever, daemon=True, name="drop-rescan")
            self._rescanner.start()

    def _file_event(self, account: str, name: str, arrived: bool) -> None:
        """A file in an account's folder is whole under its name (renamed in: an SFTP upload completed; or
        closed after writing: a copy by other means), or has left it."""
        queued = False
        if arrived:
            match = manifest_of(self.drop_root, os.path.join(self.drop_root, account, name))
            if match:
                try:
                    queued = self.arrived(*match) is not None
                except Exception:
                    log.exception("could not queue %s/%s", account, safe(name))
        # Only a whole, visible file (or one leaving the folder) can unblock a job; the temp files of uploads
        # in progress must not wake the scheduler. A new job is started at once; other changes may wait for
        # the next scheduling pass of a burst.
        if not name.startswith("."):
            self.on_change(urgent=queued)

    def _new_folder(self, account: str) -> None:
        # Files may land in a new account folder before its watch is in place: look at what is there.
        try:
            if self.rescan(account=account):
                self.on_change(urgent=True)
        except Exception:
            log.exception("could not scan the new folder %s", safe(account))

    def _lost(self) -> None:
        """The kernel dropped events (its queue overflowed): every folder is looked at again."""
        event(log, "watch.overflow", logging.WARNING)
        try:
            self.rescan()
        except Exception:
            log.exception("rescanning the drop folders failed")
        self.on_change(urgent=True)

    def _rescan_forever(self) -> None:
        while not self._stop.wait(self.rescan_interval):
            try:
                queued = self.rescan(RESCAN_MIN_AGE)
            except Exception:
                log.exception("rescanning the drop folders failed")  # and again at the next interval
                continue
            if queued:
                # Files no watch event announced: another node's or writer's (or events were lost).
                event(log, "watch.rescan_queued", queued=len(queued), job_ids=queued[:20])
                self.on_change(urgent=True)

    def stop(self) -> None:
        self._stop.set()
        if self._rescanner is not None:
            self._rescanner.join(timeout=30)  # a rescan of a slow shared file system may be under way
            self._rescanner = None
        if self._events is not None:
            self._events.stop()
            self._events = None

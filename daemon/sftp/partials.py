"""Broken uploads kept for resuming: `<account>/.ingestd-partial/<name>`, hidden, never an arrival, expired by age.

A partial is what a dropped connection left of an upload (truncated to the bytes received without a gap). It
is not in the listing, not a manifest the watcher queues, not a data file a job reads: only a `stat` of its
name sees it, which is how OpenSSH's `reput` / `put -a` learns where to continue. The SFTP process that
continues one holds an exclusive flock on it, so a second session (in any process) cannot write it at once,
and the sweep here never removes it under a writer. Leaf module: the watcher and the job queue import it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import time
from pathlib import Path

from daemon.logs import event
from daemon.text import safe

log = logging.getLogger("ingestd.sftp")

PARTIAL_DIR = ".ingestd-partial"
_PARTIAL_DIR = PARTIAL_DIR.encode()


def partial_path(account_dir: bytes, name: bytes) -> bytes:
    return os.path.join(account_dir, _PARTIAL_DIR, name)


def folder_ok(account_dir: bytes | Path, create: bool = False) -> bool:
    """True when the account's partial folder is a real folder (a link planted there is never followed)."""
    folder = os.path.join(os.fsencode(account_dir), _PARTIAL_DIR)
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o700)
    try:
        return stat.S_ISDIR(os.lstat(folder).st_mode)
    except FileNotFoundError:
        return False


def kept_since(account_dir: Path, name: str) -> float | None:
    """When the partial of `name` was last written (its mtime), or None when there is none."""
    if "/" in name or name.startswith(".") or not folder_ok(account_dir):
        return None  # a manifest's fileName never leads out of the partial folder
    try:
        info = os.lstat(account_dir / PARTIAL_DIR / name)
    except (OSError, ValueError):
        return None
    return info.st_mtime if stat.S_ISREG(info.st_mode) else None


def lock(fd: int) -> bool:
    """Take the writer's lock on an open partial; False when another session (or the sweep) holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def remove_expired(account_dir: Path, window: float, now: float | None = None) -> int:
    """Delete the partials of one account last written more than `window` seconds ago; returns how many."""
    folder = account_dir / PARTIAL_DIR
    if not folder_ok(account_dir):
        return 0
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    now = time.time() if now is None else now
    removed = 0
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode) and now - info.st_mtime <= window:
                continue
            if not stat.S_ISREG(info.st_mode):
                os.unlink(entry.path)  # only the daemon writes here: anything else does not belong
                continue
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            continue  # resumed to completion meanwhile
        try:
            if not lock(fd):
                continue  # being resumed right now
            with contextlib.suppress(FileNotFoundError):
                if os.stat(entry.path).st_ino == os.fstat(fd).st_ino:
                    os.unlink(entry.path)
                    removed += 1
                    event(
                        log,
                        "upload.partial_removed",
                        account=account_dir.name,
                        file=safe(os.fsdecode(entry.name)),
                        size_bytes=info.st_size,
                        age_s=int(now - info.st_mtime),
                    )
        finally:
            os.close(fd)
    return removed

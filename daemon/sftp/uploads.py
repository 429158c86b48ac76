"""Uploads in progress: written to a hidden temp file, renamed into place only after a successful close."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import time
from dataclasses import dataclass, field

from asyncssh import SFTPAttrs

from daemon.logs import event
from daemon.sftp.paths import NAME_MAX
from daemon.sftp.policy import Count

log = logging.getLogger("ingestd.sftp")

TEMP_PREFIX = ".ingestd-upload-"
TEMP_SUFFIX = ".part"


def temp_path(root: bytes, name: bytes) -> bytes:
    """A new hidden temp name next to the final one (so the rename stays on one file system)."""
    # Keep the temp name within NAME_MAX; the random part alone keeps it unique.
    keep = NAME_MAX - len(TEMP_PREFIX) - 17 - len(TEMP_SUFFIX)
    temp_name = f"{TEMP_PREFIX}{secrets.token_hex(8)}.".encode() + name[:keep] + TEMP_SUFFIX.encode()
    return os.path.join(root, temp_name)


def create_temp(temp: bytes) -> int:
    # 0600: only the daemon's user reads uploads (the umask cannot widen it).
    return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


@dataclass
class Upload:
    """An upload in progress: written to `temp`, renamed to `final` only after a successful close."""

    fd: int
    temp: bytes
    final: bytes
    account: str
    name: str
    connection_id: str
    append: bool
    count: Count
    started: float = field(default_factory=time.monotonic)
    size: int = 0
    failed: str | None = None  # the partner-facing reason, once the upload is lost

    def discard(self, reason: str, message: str) -> None:
        """Close and delete the temp file; the final name is never touched."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp)
        if self.failed is None:
            self.failed = message
            self.count("UPLOADS_FAILED", 1, (reason,))
            event(
                log,
                "upload.discarded",
                logging.WARNING,
                account=self.account,
                file=self.name,
                reason=reason,
                size_bytes=self.size,
                connection_id=self.connection_id,
            )

    def commit(self) -> None:
        """Close and atomically rename into place: the watcher sees the final name only when complete.

        No fsync, as OpenSSH's sftp-server: it would cost 1-2 ms per small file and most of a second per GiB,
        a daemon crash loses nothing that is in the page cache, and a client wanting durability asks for it
        (fsync@openssh.com, `put -f`), which the handler's `fsync()` honours.
        """
        os.close(self.fd)
        self.fd = -1
        os.replace(self.temp, self.final)


@dataclass
class Download:
    fd: int
    name: str = ""


def set_times(target: int | bytes, attrs: SFTPAttrs) -> None:
    if attrs.atime is not None and attrs.mtime is not None:
        os.utime(target, (attrs.atime, attrs.mtime))


def sweep_temp_files(root: bytes | str) -> int:
    """Delete temp uploads left by a crash (a killed daemon never renamed them); returns how many."""
    removed = 0
    root = os.fsencode(root)
    try:
        accounts = list(os.scandir(root))
    except FileNotFoundError:
        return 0
    prefix = TEMP_PREFIX.encode()
    for account in accounts:
        if not account.is_dir(follow_symlinks=False):
            continue
        with os.scandir(account.path) as entries:
            for entry in entries:
                if entry.name.startswith(prefix) and entry.is_file(follow_symlinks=False):
                    try:
                        os.unlink(entry.path)
                        removed += 1
                    except OSError as exc:
                        if exc.errno != errno.ENOENT:
                            raise
    return removed

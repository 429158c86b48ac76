"""Uploads in progress: written to a hidden temp file, renamed into place only after a successful close."""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass, field

from asyncssh import SFTPAttrs, SFTPFailure

from daemon.logs import event
from daemon.sftp import partials
from daemon.sftp.messages import DISCARDED, NOT_A_FILE, RESUME_BUSY
from daemon.sftp.policy import Count

log = logging.getLogger("ingestd.sftp")

TEMP_PREFIX = ".ingestd-upload-"
TEMP_SUFFIX = ".part"
_MAX_AHEAD = 1024  # out-of-order writes remembered per upload
_DISCONNECTED = DISCARDED.format(reason="the connection ended before the file was closed")


def temp_path(root: bytes) -> bytes:
    """A new hidden temp name in the account's folder (so the rename into place stays on one file system).

    The name does not carry the final one: a session's next temp file is made before its name is known."""
    return os.path.join(root, f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}".encode())


def create_temp(temp: bytes) -> int:
    # 0600: only the daemon's user reads uploads (the umask cannot widen it).
    return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


@dataclass
class Upload:
    """An upload in progress: written to `temp`, renamed to `final` only after a successful close.

    A resumed upload writes the kept partial itself (`temp` is then the partial, `resumed_from` its size).
    If the connection ends first, `keep()` leaves what arrived as the partial of `final`'s name.
    """

    fd: int
    temp: bytes
    final: bytes
    partial: bytes  # where a broken upload of this name is kept
    account: str
    name: str
    connection_id: str
    append: bool
    count: Count
    started: float = field(default_factory=time.monotonic)
    size: int = 0
    resumed_from: int = 0
    prefix: int = 0  # bytes from the start written without a gap: what a broken upload keeps
    failed: str | None = None  # the partner-facing reason, once the upload is lost
    cut_short: bool = False  # an append-mode client truncated it: an interrupted resume, not a complete file
    _ahead: dict[int, int] = field(default_factory=dict)  # writes past a gap: offset -> end

    def wrote(self, offset: int, end: int) -> None:
        """Record a write of [offset, end): the size, and how far the file is whole from its start."""
        if end > self.size:
            self.size = end
        if offset > self.prefix:
            # Past a gap (a client writing out of order). Bounded: beyond it the gap just stays a gap.
            if len(self._ahead) < _MAX_AHEAD:
                self._ahead[offset] = max(end, self._ahead.get(offset, 0))
            return
        if end <= self.prefix:
            return
        self.prefix = end
        while self._ahead:
            reachable = [start for start in self._ahead if start <= self.prefix]
            if not reachable:
                break
            for start in reachable:
                self.prefix = max(self.prefix, self._ahead.pop(start))

    def truncated(self, size: int) -> None:
        self.size = size
        self.prefix = min(self.prefix, size)
        self._ahead = {start: min(end, size) for start, end in self._ahead.items() if start < size}

    def _ours(self) -> bool:
        """Whether `temp` is still the file we write (another upload of the name may have replaced it)."""
        try:
            return os.lstat(self.temp).st_ino == os.fstat(self.fd).st_ino
        except FileNotFoundError:
            return False

    def discard(self, reason: str, message: str) -> None:
        """Close and delete the temp file (or the partial being continued); the final name is never touched."""
        if self.fd >= 0:
            if self._ours():
                os.unlink(self.temp)
            os.close(self.fd)
            self.fd = -1
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

    def keep(self, reason: str = "disconnected") -> None:
        """The upload ended unfinished: keep the whole part as the name's partial, for resuming."""
        if self.prefix == 0 or not self._ours():
            self.discard(reason, _DISCONNECTED)
            return
        if self.size > self.prefix:
            os.ftruncate(self.fd, self.prefix)  # after a gap nothing is trusted: resuming continues from here
        os.utime(self.fd)  # the resume window runs from now (`put -p` may have set an old time)
        if self.temp != self.partial:
            folder = os.path.dirname(self.partial)
            if not partials.folder_ok(os.path.dirname(folder), create=True):
                self.discard(reason, _DISCONNECTED)
                return
            os.replace(self.temp, self.partial)  # the newest broken upload of a name is the one to continue
        os.close(self.fd)
        self.fd = -1
        self.failed = _DISCONNECTED
        self.count("UPLOADS_FAILED", 1, (reason,))
        event(
            log,
            "upload.interrupted",
            account=self.account,
            file=self.name,
            reason=reason,
            size_bytes=self.prefix,
            kept="resumable",
            connection_id=self.connection_id,
        )

    def commit(self) -> None:
        """Atomically rename into place, then close: the watcher sees the final name only when complete.

        No fsync, as OpenSSH's sftp-server: it would cost 1-2 ms per small file and most of a second per GiB,
        a daemon crash loses nothing that is in the page cache, and a client wanting durability asks for it
        (fsync@openssh.com, `put -f`), which the handler's `fsync()` honours.
        """
        if self.resumed_from and not self._ours():
            raise FileNotFoundError(errno.ENOENT, "the broken upload was replaced or removed meanwhile")
        os.replace(self.temp, self.final)
        os.close(self.fd)
        self.fd = -1


def resume(
    partial: bytes, *, final: bytes, account: str, name: str, connection_id: str, append: bool, count: Count
) -> Upload | None:
    """Open a kept partial for continuing, under its writer's lock; None when there is none (or no more)."""
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SFTPFailure(NOT_A_FILE)
        if not partials.lock(fd):
            raise SFTPFailure(RESUME_BUSY)
        try:
            current = os.lstat(partial).st_ino
        except FileNotFoundError:
            current = None
    except BaseException:
        os.close(fd)
        raise
    if current != info.st_ino:  # removed (expired) or replaced while we opened it
        os.close(fd)
        return None
    size = info.st_size
    return Upload(
        fd=fd,
        temp=partial,
        final=final,
        partial=partial,
        account=account,
        name=name,
        connection_id=connection_id,
        append=append,
        count=count,
        size=size,
        resumed_from=size,
        prefix=size,
    )


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

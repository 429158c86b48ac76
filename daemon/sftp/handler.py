"""One SFTP session: a partner's chrooted drop folder, hidden temp files and rename-at-close uploads."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import posixpath
import re
import secrets
import stat
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncssh
from asyncssh import (
    FXF_APPEND,
    FXF_CREAT,
    FXF_EXCL,
    FXF_READ,
    FXF_TRUNC,
    FXF_WRITE,
    SFTPAttrs,
    SFTPError,
    SFTPFailure,
    SFTPFileAlreadyExists,
    SFTPName,
    SFTPNoSuchFile,
    SFTPOpUnsupported,
    SFTPPermissionDenied,
)

from daemon import metrics
from daemon.logs import event
from daemon.sftp.rename import rename_noreplace
from daemon.text import name_from_bytes, safe

log = logging.getLogger("ingestd.sftp")

TEMP_PREFIX = ".ingestd-upload-"
TEMP_SUFFIX = ".part"

# Every partner-facing message of the SFTP front end, in one place.
NO_SUCH_FILE = "No such file or directory"
HIDDEN_NAME = "Names starting with '.' are reserved"
LINKS_REFUSED = "Links are not allowed"
TOP_FOLDER_ONLY = "Uploads go to the top folder only"
NO_DIRECTORIES = "Creating or removing folders is not allowed"
NOT_A_FILE = "Not a regular file"
NO_READ_WRITE = "Opening a file for both reading and writing is not supported"
NO_RESUME = "Resuming or changing an existing file is not supported; upload the whole file again"
READ_ONLY_HANDLE = "File is open for reading only"
WRITE_ONLY_HANDLE = "File is open for writing only"
ALREADY_EXISTS = "File already exists"
NOT_A_DIRECTORY = "Not a directory"
INVALID_NAME = "Invalid name: {reason}"
SHUTTING_DOWN = "Server is shutting down; try again shortly"
TOO_LARGE = "File exceeds the maximum upload size of {limit}"
DISCARDED = "Upload failed and was discarded: {reason}"
NO_CHMOD = "Changing permissions, ownership or size is not supported"
TOO_MANY_OPEN = "Too many files open at once for this account (at most {limit}); close some and try again"
NAME_NOT_UTF8 = "File names must be valid UTF-8"
NAME_CONTROL = "File names must not contain control characters"
# Said before or at login (auth.py), or when a channel is refused.
BANNED = "Too many failed logins for {account} from {address}; try again in {wait}"
BANNED_ADDRESS = "Too many failed logins from {address}; try again in {wait}"
TOO_MANY_AUTH_FAILURES = "Too many authentication failures"
TOO_MANY_SESSIONS = "Too many sessions on this connection (at most {limit}); close one or open another connection"

Count = Callable[[str, float, tuple[str, ...]], None]  # (name in daemon.metrics, amount, label values)


def count_locally(name: str, amount: float = 1.0, labels: tuple[str, ...] = ()) -> None:
    """Update a daemon.metrics counter; the SFTP process sends these to the daemon instead."""
    metric = getattr(metrics, name)
    (metric.labels(*labels) if labels else metric).inc(amount)


_WRITE_FLAGS = FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC
_NAME_MAX = 255
MAX_READ = 256 * 1024  # bytes one read request returns at most (OpenSSH's sftp-server: 256 KiB)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: they break log lines, emails, terminals


def check_new_name(name: bytes) -> None:
    """A name a partner creates (upload, rename target) must be UTF-8 without control characters."""
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise SFTPPermissionDenied(NAME_NOT_UTF8) from None
    if _CONTROL.search(text):
        raise SFTPPermissionDenied(NAME_CONTROL)


def human_size(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"


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
        (fsync@openssh.com, `put -f`), which `fsync()` below honours.
        """
        os.close(self.fd)
        self.fd = -1
        os.replace(self.temp, self.final)


@dataclass
class Download:
    fd: int
    name: str = ""


@dataclass
class SessionPolicy:
    """Shared by every session of one server: limits, the shutdown flag and the uploads in flight."""

    max_file_size: int
    count: Count = count_locally
    max_open_files: int = 64  # per account, over all its connections and sessions
    stopping: bool = False
    uploads: set[int] = field(default_factory=set)  # id() of open Upload objects
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    open_files: dict[str, int] = field(default_factory=dict)  # account -> handles open now

    def __post_init__(self) -> None:
        self.idle.set()

    def take_file(self, account: str) -> None:
        """One more open handle for `account`, or SFTPFailure when it holds `max_open_files` already."""
        held = self.open_files.get(account, 0)
        if held >= self.max_open_files:
            raise SFTPFailure(TOO_MANY_OPEN.format(limit=self.max_open_files))
        self.open_files[account] = held + 1

    def release_file(self, account: str) -> None:
        held = self.open_files.get(account, 0) - 1
        if held > 0:
            self.open_files[account] = held
        else:
            self.open_files.pop(account, None)

    def started(self, upload: Upload) -> None:
        self.uploads.add(id(upload))
        self.idle.clear()

    def finished(self, upload: Upload) -> None:
        self.uploads.discard(id(upload))
        if not self.uploads:
            self.idle.set()


_F = TypeVar("_F", bound=Callable[..., Any])

# What OpenSSH's sftp prints for each status code (its fx2txt): all a partner sees of a refusal. Codes above
# 8 do not exist in SFTP v3; asyncssh sends them to a v3 client as FX_FAILURE.
SHOWN_BY_OPENSSH = {
    asyncssh.FX_NO_SUCH_FILE: "No such file or directory",
    asyncssh.FX_PERMISSION_DENIED: "Permission denied",
    asyncssh.FX_FAILURE: "Failure",
    asyncssh.FX_OP_UNSUPPORTED: "Operation unsupported",
}
_OS_CODES = {errno.ENOENT: asyncssh.FX_NO_SUCH_FILE, errno.EACCES: asyncssh.FX_PERMISSION_DENIED}
# Lookups a client makes to find out whether a name exists (`put` stats its target first): "no such file"
# is their answer, not a refusal.
_LOOKUPS = frozenset({"stat", "lstat", "realpath", "statvfs"})


def shown_by_openssh(exc: BaseException) -> str:
    code = exc.code if isinstance(exc, SFTPError) else _OS_CODES.get(getattr(exc, "errno", None) or 0)
    return SHOWN_BY_OPENSSH.get(code or asyncssh.FX_FAILURE, "Failure")


def _target(args: tuple[Any, ...]) -> str:
    """The file an operation was about: the path it names or the open file's name, as safe text."""
    if not args:
        return ""
    first = args[0]
    if isinstance(first, bytes):
        return name_from_bytes(first)
    return str(getattr(first, "name", "") or "")


def _sftp_errors(method: _F) -> _F:
    """The one place an operation's refusal leaves the handler: non-OSError failures (bad bytes in a name)
    become SFTP errors (asyncssh maps OSErrors itself), and every refusal is logged once as `sftp.refused`
    with the account, operation, file and the reason — OpenSSH's sftp shows the partner only the code's
    text ("Permission denied", "Failure"), so this line is where the reason can be found."""
    op = method.__name__

    @functools.wraps(method)
    def wrapper(self: DropFolderSFTP, *args: Any, **kwargs: Any) -> Any:
        # A failed upload refuses each later write (OpenSSH has dozens in flight) and its close: the first
        # refusal, and upload.discarded, already said why.
        already = args and isinstance(args[0], Upload) and args[0].failed is not None
        try:
            return method(self, *args, **kwargs)
        except SFTPError as exc:
            if not already and exc.code != asyncssh.FX_EOF:
                self._refused(op, args, exc, str(exc.reason))
            raise
        except OSError as exc:
            if not already:
                self._refused(op, args, exc, exc.strerror or str(exc))
            raise
        except ValueError as exc:  # e.g. an embedded NUL byte in a path
            refusal = SFTPNoSuchFile(INVALID_NAME.format(reason=exc))
            self._refused(op, args, refusal, str(refusal.reason))
            raise refusal from None

    return wrapper  # type: ignore[return-value]


class DropFolderSFTP(asyncssh.SFTPServer):
    """SFTP limited to one account's drop folder: no links, no hidden names, uploads only via temp + rename."""

    def __init__(
        self, chan: asyncssh.SSHServerChannel, *, root: bytes, account: str, connection_id: str, policy: SessionPolicy
    ) -> None:
        self._root = os.path.realpath(root)
        # Our own path mapping (_local) replaces asyncssh's chroot, so it is not passed on.
        super().__init__(chan)
        self._account = account
        self._connection_id = connection_id
        self._policy = policy

    # -- paths ----------------------------------------------------------------------------------

    def _parts(self, path: bytes) -> list[bytes]:
        """The client path as components under the root; '..' cannot climb above it."""
        norm = posixpath.normpath(posixpath.join(b"/", path))
        parts = [part for part in norm.split(b"/") if part]
        if any(part.startswith(b".") for part in parts):
            raise SFTPNoSuchFile(NO_SUCH_FILE)
        return parts

    def _local(self, path: bytes) -> bytes:
        """Map a client path to a local one inside the root; a link on the way is treated as absent."""
        parts = self._parts(path)
        local = self._root
        # Partners cannot make links, but one planted by hand must not lead out of the root. One lstat per
        # component below the root (usually one or two) instead of realpath's walk from '/'.
        for index, part in enumerate(parts):
            local = os.path.join(local, part)
            try:
                if stat.S_ISLNK(os.lstat(local).st_mode):
                    raise SFTPNoSuchFile(NO_SUCH_FILE)
            except (FileNotFoundError, NotADirectoryError):
                return os.path.join(local, *parts[index + 1 :])  # nothing exists below a missing name
        return local

    def _refused(self, op: str, args: tuple[Any, ...], exc: BaseException, reason: str) -> None:
        shown = shown_by_openssh(exc)
        if op in _LOOKUPS and shown == SHOWN_BY_OPENSSH[asyncssh.FX_NO_SUCH_FILE]:
            return
        event(
            log,
            "sftp.refused",
            logging.INFO if shown == SHOWN_BY_OPENSSH[asyncssh.FX_NO_SUCH_FILE] else logging.WARNING,
            account=self._account,
            op=op,
            file=safe(_target(args)),
            reason=reason,
            shown=shown,
            connection_id=self._connection_id,
        )

    def map_path(self, path: bytes) -> bytes:
        return self._local(path)

    def reverse_map_path(self, path: bytes) -> bytes:
        if path == self._root:
            return b"/"
        if path.startswith(self._root + b"/"):
            return path[len(self._root) :]
        raise SFTPNoSuchFile(NO_SUCH_FILE)

    def _session_ended(self) -> bool:
        """True when the client is gone: asyncssh then closes leftover handles, which must not commit uploads."""
        chan = self.channel
        # An explicit FXP_CLOSE is processed while the channel still receives; the cleanup close after a
        # dropped connection or EOF comes when it no longer does.
        return chan.is_closing() or getattr(chan, "_recv_state", "open") != "open"

    # -- open / close ---------------------------------------------------------------------------

    @_sftp_errors
    def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> object:
        self._policy.take_file(self._account)
        try:
            if pflags & _WRITE_FLAGS:
                return self._open_upload(path, pflags)
            return self._open_download(path)
        except BaseException:
            self._policy.release_file(self._account)
            raise

    def _open_download(self, path: bytes) -> Download:
        local = self._local(path)
        fd = os.open(local, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise SFTPFailure(NOT_A_FILE)
        return Download(fd, name_from_bytes(posixpath.basename(path)))

    def _open_upload(self, path: bytes, pflags: int) -> Upload:
        if self._policy.stopping:
            raise SFTPFailure(SHUTTING_DOWN)
        if pflags & FXF_READ:
            raise SFTPOpUnsupported(NO_READ_WRITE)
        try:
            parts = self._parts(path)
        except SFTPNoSuchFile:
            raise SFTPPermissionDenied(HIDDEN_NAME) from None
        if len(parts) != 1:
            raise SFTPPermissionDenied(TOP_FOLDER_ONLY if parts else NOT_A_FILE)
        check_new_name(parts[0])
        # One component under the root: its lstat is _local's link check and the existing-file check at once.
        final = os.path.join(self._root, parts[0])
        try:
            existing = os.lstat(final)
        except FileNotFoundError:
            existing = None
        if existing is not None:
            if stat.S_ISLNK(existing.st_mode):
                raise SFTPNoSuchFile(NO_SUCH_FILE)  # as _local treats a link planted by hand
            if not stat.S_ISREG(existing.st_mode):
                raise SFTPFailure(NOT_A_FILE)
            if pflags & FXF_EXCL:
                raise SFTPFileAlreadyExists(ALREADY_EXISTS)
            if not pflags & FXF_TRUNC:
                raise SFTPOpUnsupported(NO_RESUME)
        elif not pflags & FXF_CREAT:
            raise SFTPNoSuchFile(NO_SUCH_FILE)
        name = parts[0]
        # Keep the temp name within NAME_MAX; the random part alone keeps it unique.
        keep = _NAME_MAX - len(TEMP_PREFIX) - 17 - len(TEMP_SUFFIX)
        temp_name = f"{TEMP_PREFIX}{secrets.token_hex(8)}.".encode() + name[:keep] + TEMP_SUFFIX.encode()
        temp = os.path.join(self._root, temp_name)
        # 0600: only the daemon's user reads uploads (the umask cannot widen it).
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        upload = Upload(
            fd=fd,
            temp=temp,
            final=final,
            account=self._account,
            name=name_from_bytes(name),
            connection_id=self._connection_id,
            append=bool(pflags & FXF_APPEND),
            count=self._policy.count,
        )
        self._policy.started(upload)
        return upload

    @_sftp_errors
    def close(self, file_obj: object) -> None:
        if isinstance(file_obj, Download):
            self._policy.release_file(self._account)
            os.close(file_obj.fd)
            return
        assert isinstance(file_obj, Upload)
        upload = file_obj
        try:
            if self._session_ended():
                # Never raise here: asyncssh is cleaning up the session and would skip the other handles.
                if upload.failed is None:
                    upload.discard(
                        "disconnected", DISCARDED.format(reason="the connection ended before the file was closed")
                    )
                return
            if upload.failed is not None:
                raise SFTPFailure(upload.failed)
            try:
                upload.commit()
            except OSError as exc:
                upload.discard("error", DISCARDED.format(reason=exc.strerror or str(exc)))
                raise SFTPFailure(upload.failed or "") from None
        finally:
            self._policy.finished(upload)
            self._policy.release_file(self._account)
        elapsed_ms = int((time.monotonic() - upload.started) * 1000)
        upload.count("UPLOADS", 1, (upload.account,))
        upload.count("UPLOAD_BYTES", upload.size, (upload.account,))
        event(
            log,
            "upload.completed",
            account=upload.account,
            file=upload.name,
            size_bytes=upload.size,
            elapsed_ms=elapsed_ms,
            connection_id=upload.connection_id,
        )

    def exit(self) -> None:
        return None

    # -- data -----------------------------------------------------------------------------------

    @_sftp_errors
    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        if isinstance(file_obj, Download):
            # A client may ask for up to 4 GiB in one request, and the reply is built in memory: cap it as
            # OpenSSH's sftp-server does (a short read is legal; clients ask again from where it ended).
            return os.pread(file_obj.fd, min(size, MAX_READ), offset)
        raise SFTPPermissionDenied(WRITE_ONLY_HANDLE)

    @_sftp_errors
    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        if not isinstance(file_obj, Upload):
            raise SFTPPermissionDenied(READ_ONLY_HANDLE)
        upload = file_obj
        if upload.failed is not None:
            raise SFTPFailure(upload.failed)
        if upload.append:
            offset = upload.size
        end = offset + len(data)
        if end > self._policy.max_file_size:
            upload.discard("too_large", TOO_LARGE.format(limit=human_size(self._policy.max_file_size)))
            raise SFTPFailure(upload.failed or "")
        try:
            written = os.pwrite(upload.fd, data, offset)
            if written < len(data):  # rare: a short write; finish it rather than corrupt the file
                view = memoryview(data)
                while written < len(data):
                    written += os.pwrite(upload.fd, view[written:], offset + written)
        except OSError as exc:
            upload.discard("error", DISCARDED.format(reason=exc.strerror or str(exc)))
            raise SFTPFailure(upload.failed or "") from None
        if end > upload.size:
            upload.size = end
        return len(data)

    # -- attributes -----------------------------------------------------------------------------

    @_sftp_errors
    def fstat(self, file_obj: object) -> os.stat_result:
        return os.fstat(file_obj.fd)  # type: ignore[attr-defined]

    @_sftp_errors
    def lstat(self, path: bytes) -> os.stat_result:
        return os.lstat(self._local(path))

    @_sftp_errors
    def stat(self, path: bytes) -> os.stat_result:
        return os.stat(self._local(path))

    @_sftp_errors
    def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:
        # `put -p` sends permissions and times: keep the times, ignore the permissions (the daemon must read it).
        if not isinstance(file_obj, Upload) or file_obj.failed is not None:
            raise SFTPPermissionDenied(READ_ONLY_HANDLE)
        if attrs.size is not None:
            if attrs.size > self._policy.max_file_size:
                file_obj.discard("too_large", TOO_LARGE.format(limit=human_size(self._policy.max_file_size)))
                raise SFTPFailure(file_obj.failed or "")
            os.ftruncate(file_obj.fd, attrs.size)
            file_obj.size = attrs.size
        _set_times(file_obj.fd, attrs)

    @_sftp_errors
    def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        local = self._local(path)
        if attrs.size is not None or attrs.uid is not None or attrs.permissions is not None:
            raise SFTPPermissionDenied(NO_CHMOD)
        _set_times(local, attrs)

    lsetstat = setstat

    # -- directories ----------------------------------------------------------------------------

    @_sftp_errors
    def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        # A plain method, so a bad path fails at opendir rather than at the first readdir.
        local = self._local(path)
        if not stat.S_ISDIR(os.stat(local).st_mode):
            raise SFTPFailure(NOT_A_DIRECTORY)
        return self._entries(local)

    async def _entries(self, local: bytes) -> AsyncIterator[SFTPName]:
        parent = local if local == self._root else os.path.dirname(local)
        yield SFTPName(b".", attrs=SFTPAttrs.from_local(os.lstat(local)))
        yield SFTPName(b"..", attrs=SFTPAttrs.from_local(os.lstat(parent)))
        with os.scandir(local) as entries:
            for entry in entries:
                if entry.name.startswith(b"."):
                    continue  # temp uploads and anything else hidden
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # picked up by a job (moved out) while we were listing
                if stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode):
                    yield SFTPName(entry.name, attrs=SFTPAttrs.from_local(info))

    @_sftp_errors
    def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        raise SFTPPermissionDenied(NO_DIRECTORIES)

    @_sftp_errors
    def rmdir(self, path: bytes) -> None:
        raise SFTPPermissionDenied(NO_DIRECTORIES)

    @_sftp_errors
    def realpath(self, path: bytes) -> bytes:
        parts = self._parts(path)
        return b"/" + b"/".join(parts)

    # -- names ----------------------------------------------------------------------------------

    @_sftp_errors
    def remove(self, path: bytes) -> None:
        local = self._local(path)
        if not stat.S_ISREG(os.lstat(local).st_mode):
            raise SFTPFailure(NOT_A_FILE)
        os.unlink(local)

    def _rename_paths(self, oldpath: bytes, newpath: bytes) -> tuple[bytes, bytes]:
        old = self._local(oldpath)
        if not stat.S_ISREG(os.lstat(old).st_mode):
            raise SFTPFailure(NOT_A_FILE)
        try:
            parts = self._parts(newpath)
        except SFTPNoSuchFile:
            raise SFTPPermissionDenied(HIDDEN_NAME) from None
        if len(parts) != 1:
            raise SFTPPermissionDenied(TOP_FOLDER_ONLY)
        check_new_name(parts[0])
        return old, self._local(newpath)

    @_sftp_errors
    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        old, new = self._rename_paths(oldpath, newpath)
        # SFTP v3 rename must not replace an existing name. renameat2(RENAME_NOREPLACE) does that atomically
        # and is a move to inotify, so the watcher sees `x.tmp -> x.manifest` at once.
        try:
            rename_noreplace(old, new)
        except FileExistsError:
            raise SFTPFileAlreadyExists(ALREADY_EXISTS) from None

    @_sftp_errors
    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        old, new = self._rename_paths(oldpath, newpath)
        if os.path.isdir(new):
            raise SFTPFailure(NOT_A_FILE)
        os.replace(old, new)

    @_sftp_errors
    def readlink(self, path: bytes) -> bytes:
        raise SFTPNoSuchFile(LINKS_REFUSED)

    @_sftp_errors
    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise SFTPPermissionDenied(LINKS_REFUSED)

    @_sftp_errors
    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise SFTPPermissionDenied(LINKS_REFUSED)

    @_sftp_errors
    def statvfs(self, path: bytes) -> os.statvfs_result:
        return os.statvfs(self._local(path))

    @_sftp_errors
    def fstatvfs(self, file_obj: object) -> os.statvfs_result:
        return os.statvfs(self._root)

    @_sftp_errors
    def fsync(self, file_obj: object) -> None:
        if isinstance(file_obj, Upload) and file_obj.fd >= 0:
            os.fsync(file_obj.fd)


def _set_times(target: int | bytes, attrs: SFTPAttrs) -> None:
    if attrs.atime is not None and attrs.mtime is not None:
        os.utime(target, (attrs.atime, attrs.mtime))


def sweep_temp_files(root: bytes | str | os.PathLike[str]) -> int:
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

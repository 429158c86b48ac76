"""One SFTP session: a partner's drop folder (paths.py) with rename-at-close uploads (uploads.py)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import posixpath
import stat
import time
from collections.abc import AsyncIterator, Callable
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

from daemon.logs import event
from daemon.sftp import listing, partials
from daemon.sftp.messages import (
    ALREADY_EXISTS,
    DISCARDED,
    INVALID_NAME,
    LINKS_REFUSED,
    NO_CHMOD,
    NO_DIRECTORIES,
    NO_READ_WRITE,
    NO_RESUME,
    NO_SUCH_FILE,
    NOT_A_DIRECTORY,
    NOT_A_FILE,
    READ_ONLY_HANDLE,
    RESUME_GONE,
    SHOWN_BY_OPENSSH,
    SHUTTING_DOWN,
    TOO_LARGE,
    TOP_FOLDER_ONLY,
    UPLOAD_CUT_SHORT,
    WRITE_ONLY_HANDLE,
    human_size,
    shown_by_openssh,
)
from daemon.sftp.partials import partial_path
from daemon.sftp.paths import Jail
from daemon.sftp.policy import Count, SessionPolicy, count_locally
from daemon.sftp.rename import rename_noreplace
from daemon.sftp.uploads import Download, Upload, create_temp, resume, set_times, sweep_temp_files, temp_path
from daemon.text import name_from_bytes, safe

# The listener and the supervisor import these from here.
__all__ = ["Count", "DropFolderSFTP", "SessionPolicy", "count_locally", "sweep_temp_files"]

log = logging.getLogger("ingestd.sftp")

_WRITE_FLAGS = FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC
MAX_READ = 256 * 1024  # bytes one read request returns at most (OpenSSH's sftp-server: 256 KiB)
# Lookups a client makes to find out whether a name exists (`put` stats its target first): "no such file"
# is their answer, not a refusal.
_LOOKUPS = frozenset({"stat", "lstat", "realpath", "statvfs"})

_F = TypeVar("_F", bound=Callable[..., Any])


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
        self._jail = Jail(root)
        self._root = self._jail.root
        self._local = self._jail.local
        # Our own path mapping (the jail) replaces asyncssh's chroot, so it is not passed on.
        super().__init__(chan)
        self._account = account
        self._connection_id = connection_id
        self._policy = policy
        self._uploads = 0  # uploads this session opened
        self._in_flight = 0  # of which still open
        self._spare: tuple[int, bytes] | None = None  # an empty temp file for its next upload
        self._exited = False

    # -- paths ----------------------------------------------------------------------------------

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
        return self._jail.client_path(path)

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
                upload = self._open_upload(path, pflags)
                self._in_flight += 1
                return upload
            return self._open_download(path)
        except BaseException:
            self._policy.release_file(self._account)
            raise

    def _open_download(self, path: bytes) -> Download:
        local = self._local(path)
        # O_NONBLOCK: opening a FIFO planted by hand would otherwise wait for a writer, with the loop blocked.
        fd = os.open(local, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise SFTPFailure(NOT_A_FILE)
        return Download(fd, name_from_bytes(posixpath.basename(path)))

    def _open_upload(self, path: bytes, pflags: int) -> Upload:
        if self._policy.stopping:
            raise SFTPFailure(SHUTTING_DOWN)
        if pflags & FXF_READ:
            raise SFTPOpUnsupported(NO_READ_WRITE)
        name = self._jail.new_name(path)
        # One component under the root: its lstat is the jail's link check and the existing-file check at once.
        final = os.path.join(self._root, name)
        try:
            existing = os.lstat(final)
        except FileNotFoundError:
            existing = None
        if existing is not None:
            if stat.S_ISLNK(existing.st_mode):
                raise SFTPNoSuchFile(NO_SUCH_FILE)  # as _local treats a link planted by hand
            if not stat.S_ISREG(existing.st_mode):
                raise SFTPFailure(NOT_A_FILE)
        partial = partial_path(self._root, name)
        if pflags & FXF_APPEND and not pflags & (FXF_TRUNC | FXF_EXCL):
            # `reput` / `put -a` / append mode: continue the kept partial of this name, if there is one. Only
            # in append mode: a client writing from offset 0 without truncating would leave a longer
            # partial's old tail in place.
            resumed = self._resume(name, final, partial, pflags)
            if resumed is not None:
                return resumed
        if existing is not None:
            if pflags & FXF_EXCL:
                raise SFTPFileAlreadyExists(ALREADY_EXISTS)
            if not pflags & FXF_TRUNC:
                raise SFTPOpUnsupported(NO_RESUME)
        elif not pflags & FXF_CREAT:
            raise SFTPNoSuchFile(NO_SUCH_FILE)
        if partials.folder_ok(self._root):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)  # the partner starts this name over: its broken upload is obsolete
        fd, temp = self._temp_file()
        upload = Upload(
            fd=fd,
            temp=temp,
            final=final,
            partial=partial,
            account=self._account,
            name=name_from_bytes(name),
            connection_id=self._connection_id,
            append=bool(pflags & FXF_APPEND),
            count=self._policy.count,
        )
        self._policy.started(upload)
        self._uploads += 1
        if self._uploads > 1 and self._in_flight == 0:
            # A session sending several files one after the other (OpenSSH's `put` of many): make the temp
            # file of its next upload once this open's reply is out, while the partner sends this file.
            # Creating a file in a watched folder is one of the dearest steps of a small upload (the inode,
            # the watcher's inotify event), and the partner's next open would otherwise wait for it.
            asyncio.get_running_loop().call_soon(self._make_spare)
        return upload

    def _temp_file(self) -> tuple[int, bytes]:
        """The open descriptor and path of a new empty temp file: the spare made ahead, or a new one."""
        spare, self._spare = self._spare, None
        if spare is not None:
            return spare
        temp = temp_path(self._root)
        return create_temp(temp), temp

    def _make_spare(self) -> None:
        if self._spare is not None or self._exited or self._policy.stopping:
            return
        temp = temp_path(self._root)
        try:
            self._spare = (create_temp(temp), temp)
        except OSError:
            return  # the next upload then creates its own, and reports whatever fails at that point

    def _resume(self, name: bytes, final: bytes, partial: bytes, pflags: int) -> Upload | None:
        """The kept partial of `name`, opened and locked for continuing; None when there is none."""
        if not partials.folder_ok(self._root):
            return None
        upload = resume(
            partial,
            final=final,
            account=self._account,
            name=name_from_bytes(name),
            connection_id=self._connection_id,
            append=bool(pflags & FXF_APPEND),
            count=self._policy.count,
        )
        if upload is not None:
            self._policy.started(upload)
        return upload

    def _partial_stat(self, path: bytes) -> os.stat_result | None:
        """What `stat` says of a name that is only a kept partial: its size so far (how `reput` resumes)."""
        parts = self._jail.parts(path)
        if len(parts) != 1 or not partials.folder_ok(self._root):
            return None
        try:
            info = os.lstat(partial_path(self._root, parts[0]))
        except FileNotFoundError:
            return None
        return info if stat.S_ISREG(info.st_mode) else None

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
                    try:
                        upload.keep()
                    except OSError as exc:
                        upload.discard("error", DISCARDED.format(reason=exc.strerror or str(exc)))
                return
            if upload.failed is not None:
                raise SFTPFailure(upload.failed)
            if upload.cut_short:
                try:
                    upload.keep("interrupted")
                except OSError as exc:
                    upload.discard("error", DISCARDED.format(reason=exc.strerror or str(exc)))
                raise SFTPFailure(UPLOAD_CUT_SHORT)
            try:
                upload.commit()
            except OSError as exc:
                upload.discard("error", DISCARDED.format(reason=exc.strerror or str(exc)))
                raise SFTPFailure(upload.failed or "") from None
        finally:
            self._in_flight -= 1
            self._policy.finished(upload)
            self._policy.release_file(self._account)
        elapsed_ms = int((time.monotonic() - upload.started) * 1000)
        upload.count("UPLOADS", 1, (upload.account,))
        upload.count("UPLOAD_BYTES", upload.size, (upload.account,))
        resumed = {"resumed_from": upload.resumed_from} if upload.resumed_from else {}
        event(
            log,
            "upload.completed",
            account=upload.account,
            file=upload.name,
            size_bytes=upload.size,
            elapsed_ms=elapsed_ms,
            connection_id=upload.connection_id,
            **resumed,
        )

    def exit(self) -> None:
        """The session ended (asyncssh calls this after closing its open files): remove the spare temp file."""
        self._exited = True
        spare, self._spare = self._spare, None
        if spare is not None:
            fd, temp = spare
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)

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
            if offset > upload.size:
                # The client continues from bytes this server does not have (the partial expired meanwhile).
                upload.discard("error", RESUME_GONE)
                raise SFTPFailure(upload.failed or "")
            offset = upload.size
        upload.cut_short = False  # data after a size change: the client goes on, it was not interrupted
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
        upload.wrote(offset, end)
        return len(data)

    # -- attributes -----------------------------------------------------------------------------

    @_sftp_errors
    def fstat(self, file_obj: object) -> os.stat_result:
        return os.fstat(file_obj.fd)  # type: ignore[attr-defined]

    @_sftp_errors
    def lstat(self, path: bytes) -> os.stat_result:
        return self._stat(path, os.lstat)

    @_sftp_errors
    def stat(self, path: bytes) -> os.stat_result:
        return self._stat(path, os.stat)

    def _stat(self, path: bytes, how: Callable[[bytes], os.stat_result]) -> os.stat_result:
        local = self._local(path)
        try:
            return how(local)
        except FileNotFoundError:
            kept = self._partial_stat(path)
            if kept is None:
                raise
            return kept

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
            file_obj.truncated(attrs.size)
            if file_obj.append:
                # OpenSSH's `reput` / `put -a` cuts the file to what was acknowledged only when the transfer was
                # interrupted (Ctrl-C) or failed, just before closing it: keep it for resuming, do not publish it.
                file_obj.cut_short = True
        set_times(file_obj.fd, attrs)

    @_sftp_errors
    def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        local = self._local(path)
        if attrs.size is not None or attrs.uid is not None or attrs.permissions is not None:
            raise SFTPPermissionDenied(NO_CHMOD)
        set_times(local, attrs)

    lsetstat = setstat

    # -- directories ----------------------------------------------------------------------------

    @_sftp_errors
    def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        # A plain method, so a bad path fails at opendir rather than at the first readdir.
        local = self._local(path)
        if not stat.S_ISDIR(os.stat(local).st_mode):
            raise SFTPFailure(NOT_A_DIRECTORY)
        return listing.entries(local, self._root)

    @_sftp_errors
    def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        raise SFTPPermissionDenied(NO_DIRECTORIES)

    @_sftp_errors
    def rmdir(self, path: bytes) -> None:
        raise SFTPPermissionDenied(NO_DIRECTORIES)

    @_sftp_errors
    def realpath(self, path: bytes) -> bytes:
        return b"/" + b"/".join(self._jail.parts(path))

    # -- names ----------------------------------------------------------------------------------

    @_sftp_errors
    def remove(self, path: bytes) -> None:
        local = self._local(path)
        try:
            info = os.lstat(local)
        except FileNotFoundError:
            if self._partial_stat(path) is None:
                raise
            # `rm` of a name that is only a broken upload: the partner gives up on resuming it.
            parts = self._jail.parts(path)
            os.unlink(partial_path(self._root, parts[0]))
            return
        if not stat.S_ISREG(info.st_mode):
            raise SFTPFailure(NOT_A_FILE)
        os.unlink(local)

    def _rename_paths(self, oldpath: bytes, newpath: bytes) -> tuple[bytes, bytes]:
        old = self._local(oldpath)
        if not stat.S_ISREG(os.lstat(old).st_mode):
            raise SFTPFailure(NOT_A_FILE)
        self._jail.new_name(newpath, empty=TOP_FOLDER_ONLY)
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

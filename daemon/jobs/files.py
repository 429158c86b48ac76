"""The files a job touches in a partner's folder: regular files only, opened without following links."""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
from pathlib import Path

from daemon.errors import RetryableError
from daemon.jobs import messages
from daemon.text import safe

# O_NONBLOCK: opening a FIFO someone placed in the folder must not hang the scheduler's thread.
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_FULL = (errno.ENOSPC, errno.EDQUOT)


class NotRegular(Exception):
    """The entry is not a plain file of its own; str() is the partner-facing detail."""


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a special file"


def check_entry(info: os.stat_result, name: str) -> None:
    """A regular file with one name only: a symbolic link or a second hard link could name a file of ours."""
    if not stat.S_ISREG(info.st_mode):
        raise NotRegular(messages.not_regular_detail(safe(name), _kind(info.st_mode)))
    if info.st_nlink > 1:
        raise NotRegular(messages.hard_linked_detail(safe(name), info.st_nlink))


def lstat_regular(path: Path) -> os.stat_result | None:
    """The entry's lstat when it is an acceptable data file, None when absent; NotRegular otherwise."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    check_entry(info, path.name)
    return info


def open_regular(path: Path) -> int:
    """A file descriptor of `path`, opened with O_NOFOLLOW and checked with fstat; NotRegular otherwise."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW on a symbolic link
            raise NotRegular(messages.not_regular_detail(safe(path.name), "a symbolic link")) from None
        raise
    try:
        check_entry(os.fstat(fd), path.name)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bounded(path: Path, limit: int) -> tuple[bytes, os.stat_result]:
    """At most `limit + 1` bytes of a regular file (one more than allowed shows it is too large), and its fstat."""
    fd = open_regular(path)
    try:
        info = os.fstat(fd)
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), info
    finally:
        os.close(fd)


def pause_reason(exc: BaseException) -> str | None:
    """The reason to pause (not fail) a job for: a full disk or a locked database, wherever it was met.

    The exception chain is searched, so a sink's RetryableError or a failed rollback still shows the cause."""
    seen: set[int] = set()
    database = "data store" if isinstance(exc, RetryableError) else "state database"
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _FULL:
            where = f"file {safe(os.fsdecode(current.filename))}" if current.filename else "job files"
            return messages.paused_disk_full(where, os.strerror(current.errno))
        if getattr(current, "state_unavailable", False):  # shared state (PostgreSQL) out of reach
            return messages.paused_unreachable(database, str(current))
        if isinstance(current, sqlite3.Error):
            name = getattr(current, "sqlite_errorname", "") or ""
            text = str(current)
            if name.startswith("SQLITE_FULL") or "disk is full" in text:
                return messages.paused_disk_full(database, text)
            if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in text:
                return messages.paused_locked(database, text)
        current = current.__cause__ or current.__context__
    return None

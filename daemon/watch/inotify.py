"""The drop root's file events, read from the kernel's inotify (inotify_simple: a thin ctypes wrapper).

Only what the watcher acts on is asked for: in the drop root, folders made, moved or removed (an account's
folder); in each account's folder, a file written and closed, moved in or out, or removed. A small upload is
then two events (its temp file closed, its rename), each a few microseconds of one thread. watchdog, used
before, turned each upload into four events passed through three threads, and paired every rename by scanning
all the events of the last half second: 0.56 ms of CPU per upload, which the SFTP processes' uploads of many
small files lost to it on a two-core machine (bench/sftp_upload.py).

Deeper folders (an account's `errors/`, `.ingestd-partial/`) are not watched: nothing in them is an arrival.
A lost event (the kernel's queue overflowed, a folder that could not be watched) is made good by a rescan."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from inotify_simple import INotify, flags

from daemon.store.keys import ACCOUNT_RE

log = logging.getLogger("ingestd.watch")

ROOT_MASK = flags.CREATE | flags.MOVED_TO | flags.MOVED_FROM | flags.DELETE | flags.ONLYDIR | flags.DONT_FOLLOW
FOLDER_MASK = (
    flags.CLOSE_WRITE
    | flags.MOVED_TO
    | flags.MOVED_FROM
    | flags.DELETE
    | flags.ONLYDIR
    | flags.DONT_FOLLOW
    | flags.EXCL_UNLINK
)
_ARRIVED = flags.CLOSE_WRITE | flags.MOVED_TO
_LEFT = flags.MOVED_FROM | flags.DELETE
_POLL_MS = 250  # how often the reading thread looks at its stop flag


class Events:
    """Calls `on_file(account, name, arrived)` for each file event in an account's folder (arrived: whole and
    visible under its name; else gone from it), `on_folder(account)` for a new account folder, `on_lost()` when
    events may have been missed; from one thread of its own, started by start()."""

    def __init__(
        self,
        root: Path,
        on_file: Callable[[str, str, bool], None],
        on_folder: Callable[[str], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.root = root
        self.on_file = on_file
        self.on_folder = on_folder
        self.on_lost = on_lost
        self._inotify: INotify | None = None
        self._root_wd = -1
        self._folders: dict[int, str] = {}  # watch descriptor -> account
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._inotify = INotify()
        self._root_wd = self._inotify.add_watch(os.fspath(self.root), ROOT_MASK)
        # The root's watch first: a folder made meanwhile is announced, one made before is listed here.
        for entry in os.scandir(self.root):
            if entry.is_dir(follow_symlinks=False) and ACCOUNT_RE.match(entry.name):
                self._watch(entry.name)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True, name="drop-watch")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        self._folders.clear()

    def _watch(self, account: str) -> bool:
        assert self._inotify is not None
        try:
            wd = self._inotify.add_watch(os.fspath(self.root / account), FOLDER_MASK)
        except OSError as exc:  # gone meanwhile, not a folder, or out of watches (fs.inotify.max_user_watches)
            if os.path.isdir(self.root / account):
                log.warning("cannot watch %s (%s): its files are found by rescans only", account, exc.strerror)
            return False
        self._folders[wd] = account
        return True

    def _run(self) -> None:
        assert self._inotify is not None
        inotify = self._inotify
        while not self._stop.is_set():
            try:
                events = inotify.read(timeout=_POLL_MS)
            except OSError:
                if self._stop.is_set():
                    return
                log.exception("reading the drop folders' events failed")
                self._stop.wait(1.0)
                continue
            for ev in events:
                try:
                    self._dispatch(ev.wd, ev.mask, ev.name)
                except Exception:  # one event's failure must not end the watch of every account
                    log.exception("handling a drop folder event failed")

    def _dispatch(self, wd: int, mask: int, name: str) -> None:
        if mask & flags.Q_OVERFLOW:
            self.on_lost()
            return
        if mask & flags.IGNORED:
            self._folders.pop(wd, None)  # the folder was removed (or its watch taken away)
            return
        if wd == self._root_wd:
            if mask & flags.ISDIR and ACCOUNT_RE.match(name):
                if mask & (flags.CREATE | flags.MOVED_TO):
                    if self._watch(name):
                        self.on_folder(name)  # files may have landed before its watch was in place
                elif mask & flags.MOVED_FROM:
                    self._unwatch(name)  # a watch follows its folder: this one left the drop root
            return
        account = self._folders.get(wd)
        if account is None or mask & flags.ISDIR:
            return
        if mask & _ARRIVED:
            self.on_file(account, name, True)
        elif mask & _LEFT:
            self.on_file(account, name, False)

    def _unwatch(self, account: str) -> None:
        assert self._inotify is not None
        for wd, name in list(self._folders.items()):
            if name == account:
                del self._folders[wd]
                with contextlib.suppress(OSError):  # already gone
                    self._inotify.rm_watch(wd)

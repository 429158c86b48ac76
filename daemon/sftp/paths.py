"""The jail: client paths mapped into one account's folder; no climbing out, no hidden names, no links."""

from __future__ import annotations

import os
import posixpath
import re
import stat

from asyncssh import SFTPNoSuchFile, SFTPPermissionDenied

from daemon.sftp.messages import HIDDEN_NAME, NAME_CONTROL, NAME_NOT_UTF8, NO_SUCH_FILE, NOT_A_FILE, TOP_FOLDER_ONLY

NAME_MAX = 255
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: they break log lines, emails, terminals


def check_new_name(name: bytes) -> None:
    """A name a partner creates (upload, rename target) must be UTF-8 without control characters."""
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise SFTPPermissionDenied(NAME_NOT_UTF8) from None
    if _CONTROL.search(text):
        raise SFTPPermissionDenied(NAME_CONTROL)


class Jail:
    """One account's folder as the client's `/`."""

    def __init__(self, root: bytes) -> None:
        self.root = os.path.realpath(root)

    def parts(self, path: bytes) -> list[bytes]:
        """The client path as components under the root; '..' cannot climb above it."""
        norm = posixpath.normpath(posixpath.join(b"/", path))
        parts = [part for part in norm.split(b"/") if part]
        if any(part.startswith(b".") for part in parts):
            raise SFTPNoSuchFile(NO_SUCH_FILE)
        return parts

    def local(self, path: bytes) -> bytes:
        """Map a client path to a local one inside the root; a link on the way is treated as absent."""
        parts = self.parts(path)
        local = self.root
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

    def client_path(self, local: bytes) -> bytes:
        """The client's view of a local path inside the root."""
        if local == self.root:
            return b"/"
        if local.startswith(self.root + b"/"):
            return local[len(self.root) :]
        raise SFTPNoSuchFile(NO_SUCH_FILE)

    def new_name(self, path: bytes, *, empty: str = NOT_A_FILE) -> bytes:
        """The one top-folder name a partner may create at `path` (an upload, a rename target)."""
        try:
            parts = self.parts(path)
        except SFTPNoSuchFile:
            raise SFTPPermissionDenied(HIDDEN_NAME) from None
        if len(parts) != 1:
            raise SFTPPermissionDenied(TOP_FOLDER_ONLY if parts else empty)
        check_new_name(parts[0])
        return parts[0]

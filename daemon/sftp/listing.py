"""Directory listings: only whole, visible files and folders; temp uploads and dotfiles never show."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator

from asyncssh import SFTPAttrs, SFTPName


async def entries(local: bytes, root: bytes) -> AsyncIterator[SFTPName]:
    parent = local if local == root else os.path.dirname(local)
    yield SFTPName(b".", attrs=SFTPAttrs.from_local(os.lstat(local)))
    yield SFTPName(b"..", attrs=SFTPAttrs.from_local(os.lstat(parent)))
    with os.scandir(local) as found:
        for entry in found:
            if entry.name.startswith(b"."):
                continue  # temp uploads and anything else hidden
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # picked up by a job (moved out) while we were listing
            if stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode):
                yield SFTPName(entry.name, attrs=SFTPAttrs.from_local(info))

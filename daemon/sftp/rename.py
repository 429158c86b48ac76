"""rename without replacing: renameat2(RENAME_NOREPLACE), else link + unlink where the kernel or file system lacks it."""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1

_renameat2: Callable[[int, bytes, int, bytes, int], int] | None
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _function = _libc.renameat2  # glibc >= 2.28
    _function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    _function.restype = ctypes.c_int
    _renameat2 = _function
except (OSError, AttributeError):
    _renameat2 = None

_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}


def rename_noreplace(old: bytes, new: bytes) -> None:
    """Rename `old` to `new` atomically, FileExistsError if `new` exists.

    One rename is also one inotify move (IN_MOVED_TO), which the watcher reacts to at once; link + unlink
    is seen as a new file with no close-write, so only the periodic rescan would notice it.
    """
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, old, _AT_FDCWD, new, _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in _UNSUPPORTED:
            raise OSError(code, os.strerror(code), os.fsdecode(old), None, os.fsdecode(new))
    os.link(old, new, follow_symlinks=False)
    os.unlink(old)

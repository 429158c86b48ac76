"""SQLite's threading mode for this process: multi-thread instead of the library's default, serialized.

What: `sqlite3_config(SQLITE_CONFIG_MULTITHREAD)` and `SQLITE_CONFIG_MEMSTATUS` off, through ctypes, on the
shared library Python's `sqlite3` module links (Debian's libsqlite3.so.0), before that module is imported: it
initializes the library, after which the mode cannot change.

Why: in serialized mode every call on a connection takes and releases the connection's mutex (each value bound,
each step, each reset), and every allocation the memory-statistics mutex. The sqlite sink binds eight values per
event, so that was about a tenth of its instructions; the atomic operations cost more than their share. The sink
writing 1M prepared events, five paired runs: CPU median 2.33 s against 2.81 s serialized.

Why it is safe: multi-thread mode still guards everything connections share; it only stops guarding one
connection used by two threads at the same time, which the daemon never does. The sqlite sink's connection lives
on its one executor thread (and a health check opens its own); the state database gives each thread its own
connection; an export's selection stays on the thread of its run. Connections opened with Python's default
check_same_thread=True cannot be shared at all.

When it does not apply: something imported `sqlite3` first, the platform is not Linux (ctypes cannot call the
variadic sqlite3_config portably), or the library is not found (a Python linked statically against its own
SQLite); the process then keeps the default mode and works as before, only slower.
tests/unit/test_sqlite_mode.py fails if the mode stops applying to the library `sqlite3` uses.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

SQLITE_CONFIG_MULTITHREAD = 2
SQLITE_CONFIG_MEMSTATUS = 9
SQLITE_OK = 0


def library() -> ctypes.CDLL | None:
    """The SQLite shared library (the one Python's sqlite3 module links on Linux), or None."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def apply() -> bool:
    """Put the process's SQLite in multi-thread mode unless `sqlite3` was imported already; whether it did."""
    if "sqlite3" in sys.modules or "_sqlite3" in sys.modules or not sys.platform.startswith("linux"):
        return False
    lib = library()
    if lib is None:
        return False
    try:
        if lib.sqlite3_config(SQLITE_CONFIG_MULTITHREAD) != SQLITE_OK:
            return False
        lib.sqlite3_config(SQLITE_CONFIG_MEMSTATUS, ctypes.c_int(0))
    except AttributeError:  # not SQLite after all
        return False
    return True

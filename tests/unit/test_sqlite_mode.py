"""The daemon's process puts SQLite in multi-thread mode (daemon/sqlite_mode.py): a connection opened after
`import daemon` has no mutex, on the same library copy Python's sqlite3 module initialized. Fails if a Python or
SQLite upgrade makes the setting miss the library the daemon's connections use, or a module imported before it
starts importing sqlite3 (the mode would silently stay serialized, the sink a sixth slower)."""

import subprocess
import sys

PROBE = """
import ctypes, sys
import daemon
import sqlite3
from daemon import sqlite_mode
lib = sqlite_mode.library()
lib.sqlite3_db_mutex.restype = ctypes.c_void_p
handle = ctypes.c_void_p()
assert lib.sqlite3_open_v2(b":memory:", ctypes.byref(handle), 6, None) == 0
# 21, SQLITE_MISUSE: the library ctypes configured is already initialized, so it is the one sqlite3 loaded.
print(lib.sqlite3_db_mutex(handle) is None, lib.sqlite3_config(sqlite_mode.SQLITE_CONFIG_MULTITHREAD))
conn = sqlite3.connect(":memory:")
print(conn.execute("SELECT 1 + 1").fetchone()[0])
"""


def probe(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.split()


def test_connections_opened_after_importing_daemon_have_no_mutex_on_the_library_sqlite3_uses() -> None:
    assert probe(PROBE) == ["True", "21", "2"]


def test_sqlite3_imported_first_keeps_the_default_serialized_mode() -> None:
    assert probe("import sqlite3\n" + PROBE) == ["False", "21", "2"]

"""ingestd: an SFTP drop-folder ingestion daemon."""

__version__ = "0.1.0"

# Before anything imports polars or pyarrow: their allocators read their settings when they load.
from daemon.jobs import memory as _memory

_memory.apply()

# Before anything imports sqlite3: the module initializes the library, which fixes its threading mode.
from daemon import sqlite_mode as _sqlite_mode  # noqa: E402

_sqlite_mode.apply()

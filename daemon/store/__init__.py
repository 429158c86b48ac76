"""The state store: one SQLite database under data_dir for accounts, keys, jobs and the outbox."""

from daemon.store.db import StateDB

__all__ = ["StateDB"]

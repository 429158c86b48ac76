"""The state store: SQLite under data_dir, or PostgreSQL shared by several nodes (`state.url`)."""

from daemon.store.db import StateDB, open_state

__all__ = ["StateDB", "open_state"]

"""The work behind each `ingestd` verb; cli.py only parses and dispatches. Shared here: the state DB and tables."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Sequence

from daemon.config import Config
from daemon.errors import UsageError
from daemon.store import StateDB, db
from daemon.store.urls import redacted


def open_state(config: Config, *, create: bool) -> StateDB | None:
    """The state database. A read (`create=False`) never makes one: None, with a hint on stderr, when there is
    none; a write says so when it starts the default ./ingestd-data, which is likely not where the daemon looks.
    With `state.url` the state is the PostgreSQL database it names."""
    if config.state.url:
        try:
            return db.open_state(config)
        except sqlite3.Error as exc:  # reached, but the schema could not be read or migrated
            raise UsageError(f"state database {redacted(config.state.url)}: cannot be read ({exc})") from None
    if not config.state_db.exists():
        where = config.data_dir.resolve()
        if not create:
            print(
                f"ingestd: no state database in {where}; is this the daemon's data directory? "
                "(data_dir in the config file, INGESTD_DATA_DIR, or --config FILE)",
                file=sys.stderr,
            )
            return None
        if not config.data_dir.exists() and "data_dir" not in config.model_fields_set:
            # The built-in ./ingestd-data of whatever folder this runs in: likely not the daemon's.
            print(f"ingestd: note: new data directory {where} (no daemon has used it yet)", file=sys.stderr)
    try:
        return StateDB(config.state_db)
    except sqlite3.Error as exc:
        raise UsageError(f"state database {config.state_db}: cannot be read ({exc})") from None


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell; callers escape partner text (daemon.text.printable) first."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

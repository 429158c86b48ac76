"""The state database: SQLite in data_dir (PRAGMA user_version counts applied migrations) or PostgreSQL
(`state.url`, daemon/store/pg.py) shared by several nodes; `open_state(config)` picks one.

The stores write one SQL for both engines: `?` placeholders, `INSERT ... ON CONFLICT`, `RETURNING id`,
and `db.for_update` / `db.skip_locked` (empty on SQLite, whose BEGIN IMMEDIATE already serialises writers).
PostgreSQL errors reach callers as subclasses of the sqlite3 exceptions, so `except sqlite3.Error` holds."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.errors import UsageError

if TYPE_CHECKING:
    from daemon.config import Config

log = logging.getLogger("ingestd.store")


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("daemon.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [number for number, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"migrations must be numbered 0001, 0002, ... without gaps: {numbers}")
    return found


def rollback(conn: sqlite3.Connection) -> None:
    """ROLLBACK after an error, never hiding it: SQLite may have rolled back already (SQLITE_FULL, an
    I/O error), and then "cannot rollback - no transaction is active" would replace the real cause."""
    if not conn.in_transaction:
        return
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        log.warning("rollback failed after an error: %s", exc)


MAX_INTEGER = 2**63 - 1  # SQLite's largest INTEGER: an id or offset beyond it is bad input, not a query
WAL_WAIT = 30.0  # seconds a new connection keeps asking for WAL while another process holds the file (as timeout=30)


def migration_scripts() -> list[tuple[int, str]]:
    """The numbered migrations as written (SQLite's dialect; daemon/store/pg.py translates the types)."""
    return _migrations()


def statements(script: str) -> list[str]:
    return [statement for statement in script.split(";\n") if statement.strip()]


class StateDB:
    """The state database. Each thread gets its own connection; writes are short transactions."""

    dialect = "sqlite"
    for_update = ""  # " FOR UPDATE" on PostgreSQL: lock the rows read for a read-modify-write
    skip_locked = ""  # " FOR UPDATE SKIP LOCKED" on PostgreSQL: claim rows no other node is claiming
    shared = False  # True when several nodes may use this state at once (PostgreSQL)
    # This process's node id once `ingestd serve` registered it (daemon/store/nodes.py); None for the CLI.
    node: str | None = None

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.transaction() as conn:
            self._migrate(conn)

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                raise UsageError(f"state database {self.path}: cannot be opened ({exc})") from None
            conn.row_factory = sqlite3.Row
            self._set_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    def _set_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL. Several processes opening a new state file at once (two nodes, or `serve` and a CLI
        call) can be refused with SQLITE_BUSY here without SQLite's busy timeout being waited out: try again for
        as long as that timeout, then say which file is held."""
        deadline = time.monotonic() + WAL_WAIT
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorname", "") not in ("SQLITE_BUSY", "SQLITE_LOCKED"):
                    raise
                if time.monotonic() > deadline:
                    conn.close()
                    raise UsageError(
                        f"state database {self.path}: still locked by another process after {WAL_WAIT:.0f} s ({exc})"
                    ) from None
                time.sleep(0.05)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")  # a failed COMMIT (a full disk) is rolled back too
        except BaseException:
            rollback(conn)
            raise

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        return self.connection().execute(sql, params).fetchall()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        for number, script in _migrations():
            if number > current:
                for statement in statements(script):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")

    def describe(self) -> str:
        return str(self.path)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def for_update(conn: sqlite3.Connection, of: str = "") -> str:
    """ " FOR UPDATE [OF ...]" inside a PostgreSQL transaction (lock the rows read to be changed), "" on SQLite."""
    if getattr(conn, "dialect", "sqlite") == "postgresql":
        return " FOR UPDATE" + (f" {of}" if of else "")
    return ""


def open_state(config: Config) -> StateDB:
    """The state of `config`: data_dir/state.sqlite3, or the PostgreSQL database of `state.url`."""
    if config.state.url:
        from daemon.store.pg import PgStateDB

        return PgStateDB(config.state.url)
    return StateDB(config.state_db)

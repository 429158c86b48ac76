"""Reading a selection out of the configured sink in bounded batches, in arrival order, from a watermark to another.

A watermark is where the sink's arrival order stood: sqlite events carry their rowid (assigned in insert order and
never reused: events are never deleted); Elasticsearch events an `ingest_seq` set at bulk time. Profiles change in
place: sqlite profiles carry the account's change sequence of their last write, Elasticsearch ones the time of it
(`changed`), and a recurring profiles run takes those last changed in its window. A run reads the
rows that arrived after its low watermark and up to its high one, so consecutive runs neither overlap nor leave a
gap, whatever arrives while they run. Each batch is its own short read, so an export never holds the sink's lock
while an import wants to commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from daemon.config import Config

EVENT_SCHEMA = {"seq": pl.Int64, "identity": pl.String, "name": pl.String, "ts": pl.Int64, "properties": pl.String}
PROFILE_SCHEMA = {"identity": pl.String, "ts": pl.Int64, "properties": pl.String}


class SelectionError(Exception):
    """The sink could not be read; the run fails with this reason (a recurring export tries again next period)."""


class Selection(Protocol):
    def watermark(self) -> dict[str, Any]:
        """Where the arrival order stands now (the high end of a run starting now)."""

    def events(
        self,
        account: str,
        names: tuple[str, ...],
        since_ms: int | None,
        low: dict[str, Any],
        high: dict[str, Any],
        batch_rows: int,
    ) -> Iterator[pl.DataFrame]:
        """Frames of EVENT_SCHEMA in arrival order: the account's events after `low` up to `high`."""

    def profiles(self, account: str, batch_rows: int) -> Iterator[pl.DataFrame]:
        """Frames of PROFILE_SCHEMA, every profile of the account once, by identity."""

    def profiles_watermark(self, account: str) -> dict[str, Any]:
        """Where the account's profile changes stand now (the high end of a recurring profiles run starting now)."""

    def changed_profiles(
        self, account: str, low: dict[str, Any], high: dict[str, Any], batch_rows: int
    ) -> Iterator[pl.DataFrame]:
        """Frames of PROFILE_SCHEMA: each profile of the account last changed after `low` up to `high`, once (the
        first window, from 0, also has those stored before the sink recorded changes)."""

    def stored_names(self, account: str, names: tuple[str, ...]) -> set[str]:
        """Which of `names` the account has any event of."""

    def close(self) -> None: ...


class SQLiteSelection:
    """Its own read-only connection to the sink file; a missing file is an empty sink."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection | None:
        if self._conn is None:
            if not self.path.exists():
                return None
            try:
                self._conn = sqlite3.connect(
                    f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=60, check_same_thread=False
                )
            except sqlite3.Error as exc:
                raise SelectionError(f"sqlite sink {self.path}: {exc}") from None
        return self._conn

    def _query(self, sql: str, params: tuple[Any, ...], many: int | None = None) -> list[tuple[Any, ...]]:
        conn = self._connection()
        if conn is None:
            return []
        try:
            cursor = conn.execute(sql, params)
            rows = cursor.fetchall() if many is None else cursor.fetchmany(many)
            cursor.close()
            return rows
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise SelectionError(f"sqlite sink {self.path}: {exc}") from None
        except sqlite3.Error as exc:
            raise SelectionError(f"sqlite sink {self.path}: {exc}") from None

    def watermark(self) -> dict[str, Any]:
        rows = self._query("SELECT max(rowid) FROM events", ())
        return {"seq": int(rows[0][0] or 0) if rows else 0}

    def events(
        self,
        account: str,
        names: tuple[str, ...],
        since_ms: int | None,
        low: dict[str, Any],
        high: dict[str, Any],
        batch_rows: int,
    ) -> Iterator[pl.DataFrame]:
        after, until = int(low.get("seq", 0)), int(high.get("seq", 0))
        # "+account": never through an index on the account (sink files before 2026-12-02 had one), which would
        # make SQLite sort the account's whole selection by rowid for every batch; the rowid range is the cheap way.
        where = "rowid > ? AND rowid <= ? AND +account = ?"
        extra: list[Any] = [account]
        if names:
            where += f" AND name IN ({', '.join('?' * len(names))})"
            extra += list(names)
        if since_ms is not None:
            where += " AND ts >= ?"
            extra.append(since_ms)
        sql = f"SELECT rowid, identity, name, ts, properties FROM events WHERE {where} ORDER BY rowid LIMIT ?"
        while after < until:
            rows = self._query(sql, (after, until, *extra, batch_rows))
            if not rows:
                return
            after = rows[-1][0]
            yield pl.DataFrame(rows, schema=EVENT_SCHEMA, orient="row")
            if len(rows) < batch_rows:
                return

    def profiles(self, account: str, batch_rows: int) -> Iterator[pl.DataFrame]:
        sql = (
            "SELECT identity, ts, properties FROM profiles WHERE account = ? AND identity > ? ORDER BY identity LIMIT ?"
        )
        after = ""
        while True:
            rows = self._query(sql, (account, after, batch_rows))
            if not rows:
                return
            after = rows[-1][0]
            yield pl.DataFrame(rows, schema=PROFILE_SCHEMA, orient="row")
            if len(rows) < batch_rows:
                return

    def profiles_watermark(self, account: str) -> dict[str, Any]:
        # A sink file the daemon has not opened since the counter came (no profile_changes table) has the numbers
        # in its profiles; one from before the column came has none: nothing changed yet.
        rows = self._query("SELECT last FROM profile_changes WHERE account = ?", (account,))
        if not rows:
            try:
                rows = self._query("SELECT max(changed) FROM profiles WHERE account = ?", (account,))
            except SelectionError as exc:
                if "no such column" not in str(exc):
                    raise
        return {"seq": int(rows[0][0] or 0) if rows else 0}

    def changed_profiles(
        self, account: str, low: dict[str, Any], high: dict[str, Any], batch_rows: int
    ) -> Iterator[pl.DataFrame]:
        after, until = int(low.get("seq", 0)), int(high.get("seq", 0))
        if until <= after:
            return
        # In identity order along the primary key, a page at a time from where the last ended: one pass over the
        # account's profiles per run (there is no index on `changed`: see the sqlite sink's profile_changes).
        sql = (
            "SELECT identity, ts, properties FROM profiles WHERE account = ? AND identity > ? "
            "AND changed > ? AND changed <= ? ORDER BY identity LIMIT ?"
        )
        position = ""
        while True:
            rows = self._query(sql, (account, position, after, until, batch_rows))
            if not rows:
                return
            position = rows[-1][0]
            yield pl.DataFrame(rows, schema=PROFILE_SCHEMA, orient="row")
            if len(rows) < batch_rows:
                return

    def stored_names(self, account: str, names: tuple[str, ...]) -> set[str]:
        found = set()
        for name in names:
            if self._query("SELECT 1 FROM events WHERE account = ? AND name = ? LIMIT 1", (account, name)):
                found.add(name)
        return found

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def open_selection(config: Config) -> Selection:
    """The reader for `sink.driver` (daemon/sinks: DRIVERS)."""
    from daemon.sinks import driver

    return driver(config).selection(config)

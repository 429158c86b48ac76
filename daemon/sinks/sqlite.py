"""The embedded sink: profiles and events in their own SQLite file (config.sink_db): a transaction per write, or
one held open across a job's batches until the worker commits it (SQLiteSink.held)."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from daemon.errors import RetryableError
from daemon.logs import event
from daemon.sinks import profile_ops
from daemon.sinks.base import (
    EVENT_COLUMNS,
    INCOMPLETE_EVENT,
    PROFILE_COLUMNS,
    HeldWrites,
    RowFailure,
    Sink,
    Written,
    check_columns,
    iso_ms,
    valid_events,
)
from daemon.store.db import rollback
from manifests.hashes import signed_xxh3_64, signed_xxh3_64_of

T = TypeVar("T")
log = logging.getLogger("ingestd.sink")
_to_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# json.loads' own scanner, called without its three Python wrapper layers (a third of a small cell's cost).
_scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # set in __init__; typeshed omits it

# An event id (128 bits) is kept as two signed 64-bit integers, id_hi and id_lo: 16 bytes in the unique index
# where its 39 decimal digits took 40, and a commit rewrites every index page it touches.
# The unique index leads with identity_hash (the identity's 64-bit xxh3, manifests/hashes.py), not the account
# and identity texts: an insert compares integers down the index, and its entries are a third smaller (1M events:
# 0.4 s less of the sink's CPU in a 3.5 s write). It still finds an identity's events (list_events: the hash,
# then the texts compared); the id already holds account and identity, so uniqueness is unchanged.
EVENTS_TABLE = """
CREATE TABLE IF NOT EXISTS events (
    account TEXT NOT NULL,
    identity TEXT NOT NULL,
    identity_hash INTEGER NOT NULL,
    id_hi INTEGER NOT NULL,
    id_lo INTEGER NOT NULL,
    name TEXT NOT NULL,
    ts INTEGER NOT NULL,
    line INTEGER NOT NULL,
    properties TEXT NOT NULL
)"""
EVENTS_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS events_key ON events (identity_hash, id_hi, id_lo, account)"
# The account's last change number, in a table of its own, and no index on `changed`: maintaining an
# (account, changed) index was a third of a profile write (200k new profiles: 0.57 s of SQLite CPU with it,
# 0.28-0.46 without), for a recurring export that reads an account's profiles once per run (every 4 h at most).
# The run walks the primary key instead (SQLiteSelection.changed_profiles); files from before 2026-12-02 get the
# table, seeded from their profiles, and lose the index (_migrate_profile_changes).
PROFILE_CHANGES_TABLE = (
    "CREATE TABLE IF NOT EXISTS profile_changes (account TEXT PRIMARY KEY, last INTEGER NOT NULL) WITHOUT ROWID"
)
SCHEMA = f"""
{EVENTS_TABLE};
{EVENTS_INDEX};
CREATE TABLE IF NOT EXISTS profiles (
    account TEXT NOT NULL,
    identity TEXT NOT NULL,
    ts INTEGER NOT NULL,
    properties TEXT NOT NULL,
    changed INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (account, identity)
) WITHOUT ROWID;
{PROFILE_CHANGES_TABLE};
"""
# exports: `changed` is the account's change sequence, one more for every write of its profiles (every profile a
# write touches gets that write's number), so a recurring export takes the profiles changed after its last run.
# Sink files from before 2026-12-01 get the column, their profiles 1: changed before any export looked, so in the
# first window of every recurring export (which starts after 0).
PROFILES_CHANGED = "ALTER TABLE profiles ADD COLUMN changed INTEGER NOT NULL DEFAULT 1"
_COUNT_CHANGE = (
    "INSERT INTO profile_changes (account, last) VALUES (?, 1) ON CONFLICT (account) DO UPDATE SET last = last + 1"
)
_LAST_CHANGE = "SELECT last FROM profile_changes WHERE account = ?"

# Errors that say "not now" rather than "never": another writer holds the lock, the disk is full or failing.
_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_PROTOCOL")

# Rows per INSERT statement: one sqlite3_step (and one GIL release) per chunk instead of per row roughly
# halves the Python-side cost of a batch. Bounded by SQLite's host-parameter limit (999 on old builds), and by
# memory: a statement of many rows compiles to a large program (about 130 KiB for 160 events, 700 KiB for
# 1,000), and the connection keeps the last 128 it ran (the account is a literal: each account has its own).
# 1,000 rows took the same CPU as 160 (160 to 5,000 measured alike).
_ROWS_PER_STATEMENT = 160
_TAIL_ROWS = 16  # the rows left over go in statements of this many, then of one (_insert_chunked)
# Rows turned into Python values at a time within one write (50,000 rows of 7 values held about 50 MiB).
_PYTHON_ROWS = 10_000
_TWO_64 = pl.lit(2**64, dtype=pl.UInt128)
_HASH, _ID_HI, _ID_LO, _COMPLETE = "_identity_hash", "_id_hi", "_id_lo", "_complete"
# prepare_events' frame: the values of a row in the order the INSERT binds them, and whether it is complete.
PREPARED_EVENTS = ("identity", _HASH, _ID_HI, _ID_LO, "name", "ts", "line", "properties", _COMPLETE)
_SELECT_PROFILES = (
    "SELECT identity, properties FROM profiles WHERE account = ? AND identity IN (SELECT value FROM json_each(?))"
)


# One $add to a stored profile, as base.apply_ops does it: an absent or null property becomes a list of the
# value; a list gets the value appended unless an item is the same (base._same: by JSON type, then value); another
# value becomes a list of it, and of the value unless they are the same. Bound: the property's path, the value's
# kind (s: string, n: number, t: true, f: false), the value as SQL compares it, its JSON text, account, identity.
_SAME = (
    "CASE ?2 WHEN 's' THEN {type} = 'text' AND {value} = ?3 WHEN 'n' THEN {type} IN ('integer', 'real')"
    " AND {value} = CAST(?3 AS NUMERIC) WHEN 't' THEN {type} = 'true' ELSE {type} = 'false' END"
)
_ADD_SQL = (  # the stored JSON is parsed twice: for the property's value (`cur`), and by json_set
    "UPDATE profiles SET properties = json_set(properties, ?1, (SELECT CASE"
    " WHEN coalesce(json_type(cur), 'null') = 'null' THEN json_array(json(?4))"
    " WHEN json_type(cur) = 'array' THEN CASE WHEN EXISTS (SELECT 1 FROM json_each(cur) WHERE "
    + _SAME.format(type="type", value="value")
    + ") THEN json(cur) ELSE json_insert(cur, '$[#]', json(?4)) END"
    " WHEN "
    + _SAME.format(type="json_type(cur)", value="cur ->> '$'")
    + " THEN json_array(json(cur)) ELSE json_array(json(cur), json(?4)) END FROM (SELECT properties -> ?1 AS cur)))"
    " WHERE account = ?5 AND identity = ?6"
)
_SELECT_STORED = (
    "SELECT identity FROM profiles WHERE account = ? AND identity IN (SELECT value FROM json_each(?)) AND changed < ?"
)


class SQLiteSink(Sink):
    """One connection used from one worker thread: SQLite has a single writer anyway, and the event loop never blocks."""

    name = "sqlite"
    joins_batches = True  # a commit rewrites every index page it touched: few large commits beat many small ones

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        # The writer slot: one transaction at a time on the one connection, held by a write or a HeldWrites.
        self._slot: asyncio.Lock | None = None
        self._waiting = 0  # writes and held transactions waiting for the slot

    def held(self) -> HeldWrites:
        return _Held(self)

    def prepare(self, kind: str) -> Callable[[pl.DataFrame], pl.DataFrame]:
        return prepare_events if kind == "event" else profile_ops.prepare

    async def _take_slot(self) -> None:
        if self._slot is None:
            self._slot = asyncio.Lock()
        self._waiting += 1
        try:
            await self._slot.acquire()
        finally:
            self._waiting -= 1

    def _give_slot(self) -> None:
        assert self._slot is not None
        self._slot.release()

    def banner(self) -> list[str]:
        return [f"  sink   sqlite {self.path.resolve()}"]

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-sqlite")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorname", "").startswith(_TRANSIENT):
                raise RetryableError(f"sqlite sink {self.path}: {exc}", delay=1.0) from exc
            raise

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            # Bigger pages make the index shallower; it only applies to a new file (before the first table).
            conn.execute("PRAGMA page_size=16384")
            # A rollback journal, not WAL: imports append, and new pages go straight into the file while the
            # journal keeps only the pages a commit changes (the index), where WAL writes every page twice (to
            # the log, then back at the checkpoint). Readers (the CLI, health checks) wait out a commit instead
            # of reading past it; the worker's commits are large and few (jobs.commit_rows).
            # bench/ingest.py, 1M events, paired runs: 0.80 -> 0.91 of the naive import with WAL -> TRUNCATE.
            conn.execute("PRAGMA journal_mode=TRUNCATE")
            # FULL: each write's commit is on disk before the worker records the job's checkpoint in the
            # state database, so a power cut cannot leave a checkpoint past rows that were lost. It costs
            # two fsyncs per write of many thousands of rows.
            conn.execute("PRAGMA synchronous=FULL")
            # 16 MiB of pages, shared by every import (was 256 MiB, then 64: the cache grows towards its size
            # with each import, and stays). Index pages past it are read back from the OS's file cache: a
            # 1M-row event import through held writes peaked 33 MiB lower at 32 MiB than at 64, and 20 MiB
            # lower again at 16, for the same CPU (paired runs, 3.8 s each).
            conn.execute("PRAGMA cache_size=-16384")
            conn.execute("PRAGMA temp_store=MEMORY")
            self._conn = conn
        return self._conn

    async def start(self) -> None:
        await self._run(self._create_schema)

    def _create_schema(self) -> None:
        conn = self._connection()
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        if "event_id" in columns:
            _migrate_event_ids(conn)
        elif columns and "identity_hash" not in columns:
            _migrate_identity_hashes(conn)
        profile_columns = {row[1] for row in conn.execute("PRAGMA table_info(profiles)")}
        if profile_columns and "changed" not in profile_columns:
            conn.execute(PROFILES_CHANGED)
            event(log, "sink.migrated", logging.WARNING, table="profiles", column="changed")
        if profile_columns:
            _migrate_profile_changes(conn)
        conn.executescript(SCHEMA)

    async def stop(self) -> None:
        if self._executor is None:
            return
        await self._run(self._close)
        self._executor.shutdown(wait=True)
        self._executor = None

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def write_events(self, account: str, frame: pl.DataFrame) -> Written:
        check_columns(frame, PREPARED_EVENTS if _COMPLETE in frame.columns else EVENT_COLUMNS, "events")
        await self._take_slot()
        try:
            return await self._run(self._in_transaction, self._write_events, account, frame)
        finally:
            self._give_slot()

    def _in_transaction(
        self, write: Callable[[str, pl.DataFrame], Written], account: str, frame: pl.DataFrame
    ) -> Written:
        """One write in its own transaction."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            written = write(account, frame)
            conn.execute("COMMIT")  # a failed COMMIT (a full disk) is rolled back too
        except BaseException:
            rollback(conn)
            raise
        return written

    def _in_held(self, write: Callable[[str, pl.DataFrame], Written], account: str, frame: pl.DataFrame) -> Written:
        """One write in the held transaction (begun by the first); any error undoes the whole transaction."""
        conn = self._connection()
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
        try:
            return write(account, frame)
        except BaseException:
            rollback(conn)
            raise

    def _commit(self) -> None:
        conn = self._connection()
        if conn.in_transaction:
            try:
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise

    def _rollback(self) -> None:
        if self._conn is not None and self._conn.in_transaction:
            rollback(self._conn)

    def _write_events(self, account: str, frame: pl.DataFrame) -> Written:
        frame = prepare_events(frame)
        rows, failures = frame, []
        if not frame[_COMPLETE].all():
            failures = [RowFailure(line, INCOMPLETE_EVENT) for line in frame.filter(~pl.col(_COMPLETE))["line"]]
            rows = frame.filter(pl.col(_COMPLETE))
        rows = rows.select(PREPARED_EVENTS[:-1])
        conn = self._connection()
        before = conn.total_changes
        # A slice at a time as one flat list of values in row order (cheaper than a tuple per row), so
        # the Python objects of a large write never all exist at once.
        for part in rows.iter_slices(_PYTHON_ROWS):
            _insert_chunked(conn, _insert_events, account, _flat(part), 8)
        # INSERT OR IGNORE changes only the rows it inserted: the others were already there.
        inserted = conn.total_changes - before
        return Written(failures, duplicates=rows.height - inserted)

    async def write_profiles(self, account: str, frame: pl.DataFrame) -> Written:
        check_columns(frame, PROFILE_COLUMNS, "profiles")
        await self._take_slot()
        try:
            return await self._run(self._in_transaction, self._write_profiles, account, frame)
        finally:
            self._give_slot()

    def _write_profiles(self, account: str, frame: pl.DataFrame) -> Written:
        """Within the caller's transaction."""
        conn = self._connection()
        conn.execute(_COUNT_CHANGE, (account,))
        change = conn.execute(_LAST_CHANGE, (account,)).fetchone()[0]
        # Rows that need no folding (most of an engine's file: one row per identity) are inserted as new profiles,
        # built column-wise, with no look-up first: only when some were already stored (the insert skipped them)
        # are those found, by their change number; they get a merge patch, or fold below if they add or remove.
        found = profile_ops.quick_of(frame)
        slow = None
        if not found.rows.is_empty():
            before = conn.total_changes
            self._insert_frame(conn, _insert_profiles, account, found.rows, change)
            inserted = conn.total_changes - before
            if inserted < found.rows.height:
                known = found.rows  # none was inserted: all were stored
                if inserted:
                    stored = pl.Series(
                        list(_stored(conn, account, known["identity"].to_list(), change)), dtype=pl.String
                    )
                    known = known.filter(pl.col("identity").is_in(stored.implode()))
                # $remove folds below; $set and $delete by merge patch, then each $add by an update, in SQL: a row
                # given only as `sets` (its `properties`) that adds has its operations read out of it for that.
                known = profile_ops.with_ops(known, "properties", only=pl.col("given") & pl.col("grows"))
                simple = known.filter(~pl.col("removes"))
                odd = profile_ops.loose(simple)
                simple = simple.filter(~pl.col("pos").is_in(odd.implode()))
                adds, more = profile_ops.stored_adds(simple)
                simple = simple.filter(~pl.col("pos").is_in(more.implode()))
                slow = pl.concat([known.filter(pl.col("removes"))["pos"], odd, more])
                self._insert_frame(conn, _patch_profiles, account, profile_ops.patches(simple), change)
                for part in adds.iter_slices(_PYTHON_ROWS):
                    conn.executemany(
                        _ADD_SQL,
                        (
                            (path, kind, plain, value, account, identity)
                            for identity, path, value, kind, plain in part.iter_rows()
                        ),
                    )
        rest = found.rest(slow)
        failures = self._fold_profiles(conn, account, rest, change) if not rest.is_empty() else []
        failures.sort(key=lambda failure: failure.line)
        return Written(failures)  # a profile row is applied, never a duplicate

    def _insert_frame(
        self,
        conn: sqlite3.Connection,
        statement: Callable[[str, int], str],
        account: str,
        rows: pl.DataFrame,
        change: int,
    ) -> None:
        """`statement` for the (identity, ts, properties) rows, each with the change number."""
        values = rows.select("identity", "ts", "properties", changed=pl.lit(change, dtype=pl.Int64)).sort(
            "identity"  # in primary key order, so the statements walk the index forwards
        )
        for part in values.iter_slices(_PYTHON_ROWS):  # the Python values of a slice at a time, as for events
            _insert_chunked(conn, statement, account, _flat(part), 4)

    def _fold_profiles(
        self, conn: sqlite3.Connection, account: str, frame: pl.DataFrame, change: int
    ) -> list[RowFailure]:
        """Apply rows that need folding (several per identity, stored values to merge, cells not tight)."""
        batch = profile_ops.split(frame)
        failures = list(batch.failures)
        # Sorted, the look-up walks the primary key forwards.
        identities = pl.concat([batch.rows["identity"], batch.slow["identity"]]).unique().sort().to_list()
        stored = dict(conn.execute(_SELECT_PROFILES, (account, json.dumps(identities))).fetchall())
        if not batch.rows.is_empty():
            values = _patches(batch, stored, change)
            _insert_chunked(conn, _patch_profiles, account, values, 4)
        if not batch.slow.is_empty():
            slow = set(batch.slow["identity"].to_list())
            before = {identity: _loads(stored[identity]) for identity in slow if identity in stored}
            refused, profiles = profile_ops.row_by_row(batch.slow, before)
            failures.extend(refused)
            values = [
                value
                for identity, (ts, properties) in profiles.items()
                for value in (identity, ts, _to_json(properties), change)
            ]
            _insert_chunked(conn, _upsert_profiles, account, values, 4)
        return failures

    async def get_profile(self, account: str, identity: str) -> dict[str, Any] | None:
        return await self._run(self._get_profile, account, identity)

    def _get_profile(self, account: str, identity: str) -> dict[str, Any] | None:
        row = (
            self._connection()
            .execute("SELECT ts, properties FROM profiles WHERE account = ? AND identity = ?", (account, identity))
            .fetchone()
        )
        if row is None:
            return None
        return {"identity": identity, "properties": json.loads(row[1]), "ts": iso_ms(row[0])}

    async def list_events(self, account: str, identity: str, limit: int = 1000) -> list[dict[str, Any]]:
        return await self._run(self._list_events, account, identity, limit)

    def _list_events(self, account: str, identity: str, limit: int) -> list[dict[str, Any]]:
        rows = (
            self._connection()
            .execute(
                "SELECT name, ts, properties FROM events WHERE identity_hash = ? AND account = ? AND identity = ? "
                "ORDER BY ts, line, id_hi, id_lo LIMIT ?",
                (signed_xxh3_64_of(identity), account, identity, limit),
            )
            .fetchall()
        )
        return [{"name": name, "ts": iso_ms(ts), "properties": json.loads(props)} for name, ts, props in rows]

    async def health(self) -> str | None:
        # Its own short-lived reader, so a health check never queues behind a big batch being written.
        try:
            await asyncio.to_thread(self._probe)
        except (sqlite3.Error, OSError) as exc:
            return f"sqlite sink {self.path}: {exc}"
        return None

    def _probe(self) -> None:
        # mode=rw: a missing file is reported, not silently created empty.
        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=rw", uri=True, timeout=5)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()


class _Held(HeldWrites):
    """The sqlite sink's open transaction for one job (Sink.held)."""

    def __init__(self, sink: SQLiteSink) -> None:
        self.sink = sink
        self._holding = False

    async def _write(self, write: Callable[[str, pl.DataFrame], Written], account: str, frame: pl.DataFrame) -> Written:
        if not self._holding:
            await self.sink._take_slot()
            self._holding = True
        try:
            return await self.sink._run(self.sink._in_held, write, account, frame)
        except BaseException:
            self._holding = False  # _in_held rolled the transaction back (or it never ran: undone below)
            await self._undo()
            raise

    async def write_events(self, account: str, frame: pl.DataFrame) -> Written:
        check_columns(frame, PREPARED_EVENTS if _COMPLETE in frame.columns else EVENT_COLUMNS, "events")
        return await self._write(self.sink._write_events, account, frame)

    async def write_profiles(self, account: str, frame: pl.DataFrame) -> Written:
        check_columns(frame, PROFILE_COLUMNS, "profiles")
        return await self._write(self.sink._write_profiles, account, frame)

    async def commit(self) -> None:
        if not self._holding:
            return
        self._holding = False
        try:
            await self.sink._run(self.sink._commit)
        except BaseException:
            await self._undo()
            raise
        self.sink._give_slot()

    async def abort(self) -> None:
        if self._holding:
            self._holding = False
            await self._undo()

    async def _undo(self) -> None:
        """Roll back whatever is open and give the slot back (also when the rollback itself fails)."""
        try:
            await asyncio.shield(self.sink._run(self.sink._rollback))
        finally:
            self.sink._give_slot()

    @property
    def contended(self) -> bool:
        return self.sink._waiting > 0


def _migrate_event_ids(conn: sqlite3.Connection) -> None:
    """Events stored before 2026-11-30 (one event_id column: 16 bytes of sha256, or a decimal string) move to the
    two-integer layout in one transaction; an interrupted start leaves the old table as it was."""

    def half(value: bytes | str, high: int) -> int:
        number = int.from_bytes(value[:16], "big") if isinstance(value, bytes) else int(value)
        part = (number >> 64 if high else number) & (2**64 - 1)
        return part - 2**64 if part >= 2**63 else part

    conn.create_function("id_half", 2, half, deterministic=True)
    conn.create_function("identity_hash", 1, signed_xxh3_64_of, deterministic=True)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("ALTER TABLE events RENAME TO events_before_id_columns")
        conn.execute("DROP INDEX IF EXISTS events_key")
        conn.execute(EVENTS_TABLE)
        conn.execute(EVENTS_INDEX)
        moved = conn.execute(
            "INSERT OR IGNORE INTO events (account, identity, identity_hash, id_hi, id_lo, name, ts, line, "
            "properties) SELECT account, identity, identity_hash(identity), id_half(event_id, 1), "
            "id_half(event_id, 0), name, ts, line, properties FROM events_before_id_columns ORDER BY rowid"
        ).rowcount
        conn.execute("DROP TABLE events_before_id_columns")
        conn.execute("COMMIT")  # a failed COMMIT (a full disk) is rolled back too
    except BaseException:
        rollback(conn)
        raise
    event(log, "sink.migrated", logging.WARNING, table="events", layout="id_hi/id_lo", rows=moved)


def _migrate_profile_changes(conn: sqlite3.Connection) -> None:
    """A file from before 2026-12-02 (each account's last change number was max(changed), through an index on
    it): the counter table, seeded from the profiles, and the index dropped, in one transaction. Idempotent, also
    when two processes open the file at once."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'profile_changes'").fetchone()
        if found is None:
            conn.execute(PROFILE_CHANGES_TABLE)
            accounts = conn.execute(
                "INSERT INTO profile_changes (account, last) SELECT account, max(changed) FROM profiles GROUP BY account"
            ).rowcount
        conn.execute("DROP INDEX IF EXISTS profiles_changed")
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise
    if found is None:
        event(log, "sink.migrated", logging.WARNING, table="profile_changes", accounts=accounts)


def _migrate_identity_hashes(conn: sqlite3.Connection) -> None:
    """Events stored before 2026-12-02 (a unique index on account, identity and id) get their identity_hash and
    the index on it, in one transaction; an interrupted start leaves them as they were."""
    conn.create_function("identity_hash", 1, signed_xxh3_64_of, deterministic=True)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("ALTER TABLE events ADD COLUMN identity_hash INTEGER NOT NULL DEFAULT 0")
        rows = conn.execute("UPDATE events SET identity_hash = identity_hash(identity)").rowcount
        conn.execute("DROP INDEX IF EXISTS events_key")
        conn.execute(EVENTS_INDEX)
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise
    event(log, "sink.migrated", logging.WARNING, table="events", column="identity_hash", rows=rows)


def prepare_events(frame: pl.DataFrame) -> pl.DataFrame:
    """An events frame as the sink writes it (Sink.prepare): the columns of PREPARED_EVENTS, the event id as two
    integers, complete rows sorted in index order, then the others (only their line). A prepared frame, or prepared
    frames joined, stay as they are."""
    if _COMPLETE in frame.columns:
        return frame
    complete = frame.select(valid_events()).to_series()
    whole = bool(complete.all())
    rows = frame if whole else frame.filter(complete)
    # Sorted in index order, the inserts walk the unique index forwards instead of jumping around it; a
    # repeat within the batch sorts after its first line, so the first line is the one kept.
    event_id = pl.col("event_id").cast(pl.UInt128)
    rows = rows.select(
        "identity",
        signed_xxh3_64("identity").alias(_HASH),
        (event_id // _TWO_64).cast(pl.UInt64).reinterpret(signed=True).alias(_ID_HI),
        event_id.cast(pl.UInt64, wrap_numerical=True).reinterpret(signed=True).alias(_ID_LO),
        "name",
        "ts",
        "line",
        "properties",
        pl.lit(True).alias(_COMPLETE),
    ).sort(_HASH, _ID_HI, _ID_LO, "line")
    if whole:
        return rows
    rest = frame.filter(~complete).select("line", pl.lit(False).alias(_COMPLETE))
    return pl.concat([rows, rest], how="diagonal_relaxed", rechunk=False).select(PREPARED_EVENTS)


def _stored(conn: sqlite3.Connection, account: str, identities: list[str], change: int) -> set[str]:
    """Those of the identities that had a profile stored in the account before the write numbered `change`."""
    if not identities:
        return set()
    identities.sort()  # the look-up walks the primary key forwards
    return {row[0] for row in conn.execute(_SELECT_STORED, (account, json.dumps(identities), change))}


def _flat(frame: pl.DataFrame) -> list[Any]:
    """The frame's values as one flat list in row order (row 0's columns, then row 1's, ...): each column's Python
    values put in place by one strided slice assignment, half the cost of zipping the columns into rows."""
    width = frame.width
    flat: list[Any] = [None] * (frame.height * width)
    for index, column in enumerate(frame.iter_columns()):
        flat[index::width] = column.to_list()
    return flat


def _loads(text: str) -> Any:
    """json.loads, the same result and errors: text that is not exactly one JSON value goes through json.loads."""
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


def _insert_chunked(
    conn: sqlite3.Connection, statement: Callable[[str, int], str], account: str, values: list[Any], width: int
) -> None:
    """Insert a flat list of `width` values per row, `_ROWS_PER_STATEMENT` rows per statement, in order; the rows
    left over in statements of `_TAIL_ROWS` rows, then of one: three statements per account and table whatever the
    sizes of the writes, where one per left-over count filled the connection's statement cache (see
    _ROWS_PER_STATEMENT)."""
    per = min(_ROWS_PER_STATEMENT, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width)
    done = 0
    for rows in (per, min(per, _TAIL_ROWS), 1):
        step = rows * width
        end = done + (len(values) - done) // step * step
        if end > done:
            conn.executemany(
                statement(account, rows), (values[start : start + step] for start in range(done, end, step))
            )
        done = end


@functools.lru_cache(maxsize=64)
def _upsert_profiles(account: str, rows: int) -> str:
    """Insert or replace `rows` profiles (identity, ts, properties, changed); the account is a quoted literal."""
    row = f"({_sql_text(account)}, ?, ?, ?, ?)"
    return (
        "INSERT INTO profiles (account, identity, ts, properties, changed) VALUES "
        + ", ".join([row] * rows)
        + " ON CONFLICT (account, identity) DO UPDATE SET ts = excluded.ts, properties = excluded.properties,"
        " changed = excluded.changed"
    )


def _patches(batch: profile_ops.ProfileBatch, stored: dict[str, str], change: int) -> list[Any]:
    """(identity, ts, properties, change) per identity of the batch's plain rows, flat: the whole object for a new
    profile, a JSON merge patch (null: remove) for a stored one (applied by `_patch_profiles`)."""
    people = batch.rows.group_by("who", maintain_order=True).agg(pl.col("identity", "ts").last())
    known = people.filter(pl.col("identity").is_in(pl.Series(list(stored), dtype=pl.String).implode()))
    folded = profile_ops.fold(batch.ops, known["who"])
    values = folded.values
    if not folded.dependent.is_empty():
        who_of = dict(zip(known["who"].to_list(), known["identity"].to_list(), strict=True))
        whos = folded.dependent["who"].unique().to_list()
        before = [stored[who_of[who]] for who in whos]
        decoded = dict(zip(whos, json.loads("[" + ",".join(before) + "]"), strict=True))  # one call for them all
        changed = [
            (who, key, text, -1)
            for who, key, text in profile_ops.apply_dependent(folded.dependent, batch.keys, decoded, _to_json)
        ]
        values = pl.concat([values, pl.DataFrame(changed, schema=values.schema, orient="row")])
    # Keys as the reference path writes them ("\u00e9" and "é" name one property): they must match the stored ones.
    texts = [_to_json(name) + ":" for name in batch.keys]
    objects = (
        values.filter(pl.col("who").is_in(known["who"].implode()) | pl.col("value").is_not_null())
        .select(
            "who",
            pl.concat_str(
                pl.col("key").replace_strict(range(len(texts)), texts, return_dtype=pl.String),
                pl.col("value").fill_null("null"),
            ).alias("properties"),
        )
        .group_by("who", maintain_order=True)
        .agg("properties")  # a list per identity, in operation order, joined below (cheaper than str.join here)
        .with_columns(pl.col("properties").list.join(","))
    )
    # In primary key order, so the upserts walk the index forwards instead of jumping around it.
    rows = (
        people.join(objects, on="who", how="left", maintain_order="left")
        .select(
            "identity",
            "ts",
            pl.lit("{") + pl.col("properties").fill_null("") + pl.lit("}"),
            pl.lit(change, dtype=pl.Int64).alias("changed"),
        )
        .sort("identity")
    )
    return _flat(rows)


@functools.lru_cache(maxsize=64)
def _insert_profiles(account: str, rows: int) -> str:
    """Insert `rows` new profiles (identity, ts, properties, changed); a stored one is left as it is."""
    row = f"({_sql_text(account)}, ?, ?, ?, ?)"
    return (
        "INSERT INTO profiles (account, identity, ts, properties, changed) VALUES "
        + ", ".join([row] * rows)
        + " ON CONFLICT (account, identity) DO NOTHING"
    )


@functools.lru_cache(maxsize=64)
def _patch_profiles(account: str, rows: int) -> str:
    """Insert `rows` new profiles (identity, ts, properties, changed), or merge the properties into the stored ones
    as a JSON merge patch; the account is a quoted literal."""
    row = f"({_sql_text(account)}, ?, ?, ?, ?)"
    return (
        "INSERT INTO profiles (account, identity, ts, properties, changed) VALUES "
        + ", ".join([row] * rows)
        + " ON CONFLICT (account, identity) DO UPDATE SET ts = excluded.ts,"
        " properties = json_patch(profiles.properties, excluded.properties), changed = excluded.changed"
    )


@functools.lru_cache(maxsize=64)
def _insert_events(account: str, rows: int) -> str:
    """INSERT OR IGNORE of `rows` events; the batch's account is a quoted literal, so each row binds eight values."""
    row = f"({_sql_text(account)}, ?, ?, ?, ?, ?, ?, ?, ?)"
    return (
        "INSERT OR IGNORE INTO events (account, identity, identity_hash, id_hi, id_lo, name, ts, line, properties) "
        "VALUES " + ", ".join([row] * rows)
    )


def _sql_text(value: str) -> str:
    """A string as an SQL literal: quotes doubled, so no value can end the literal early."""
    return "'" + value.replace("'", "''") + "'"

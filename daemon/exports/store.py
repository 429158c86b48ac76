"""Exports, their runs and the files each run published, in the state database."""

from __future__ import annotations

import builtins
import json
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

from daemon.exports.model import ExportSpec, iso, run_timestamp
from daemon.store.db import StateDB
from daemon.store.leases import LEASE_SECONDS
from daemon.units import setting_text


class ExportStore:
    """Every write is one short transaction; a run's window is fixed (written) before any file of it is."""

    def __init__(self, db: StateDB) -> None:
        self.db = db

    # -- exports --------------------------------------------------------------------------------

    def create(self, spec: ExportSpec, watermark: dict[str, Any], now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO exports (account, type, events, format, since_ms, days, every_s, destination, "
                "requested_by, emails, status, watermark, next_run_at, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?) RETURNING id",
                (
                    spec.account,
                    spec.type,
                    json.dumps(list(spec.events)),
                    spec.format,
                    spec.since_ms,
                    spec.days,
                    spec.every_s,
                    spec.destination,
                    spec.requested_by,
                    json.dumps(list(spec.emails)),
                    json.dumps(watermark),
                    # A recurring export's first run comes one period after it was created (what arrived meanwhile);
                    # a one-time export runs at once.
                    now + spec.every_s if spec.every_s else now,
                    now,
                    now,
                ),
            )
            return int(cursor.fetchone()[0])

    def get(self, export_id: int) -> sqlite3.Row | None:
        rows = self.db.query("SELECT * FROM exports WHERE id = ?", (export_id,))
        return rows[0] if rows else None

    def list(self, account: str | None = None, limit: int = 500, offset: int = 0) -> list[sqlite3.Row]:
        if account:
            return self.db.query(
                "SELECT * FROM exports WHERE account = ? ORDER BY id DESC LIMIT ? OFFSET ?", (account, limit, offset)
            )
        return self.db.query("SELECT * FROM exports ORDER BY id DESC LIMIT ? OFFSET ?", (limit, offset))

    def cancel(self, export_id: int) -> bool:
        """True when it was pending or running (a running run stops at its next batch)."""
        with self.db.transaction() as conn:
            changed = conn.execute(
                "UPDATE exports SET status = 'cancelled', next_run_at = NULL, updated_at = ? "
                "WHERE id = ? AND status IN ('pending', 'running')",
                (time.time(), export_id),
            ).rowcount
        return bool(changed)

    def run_now(self, export_id: int) -> bool:
        """Make a pending export's next run due now (a recurring one keeps its period afterwards)."""
        with self.db.transaction() as conn:
            changed = conn.execute(
                "UPDATE exports SET next_run_at = ?, updated_at = ? WHERE id = ? AND status = 'pending'",
                (time.time(), time.time(), export_id),
            ).rowcount
        return bool(changed)

    def pending_requests(self, account: str) -> int:
        """One-time exports a partner requested over SFTP that have not finished yet."""
        rows = self.db.query(
            "SELECT count(*) FROM exports WHERE account = ? AND requested_by = 'sftp' "
            "AND status IN ('pending', 'running')",
            (account,),
        )
        return int(rows[0][0])

    def is_cancelled(self, export_id: int) -> bool:
        row = self.db.query("SELECT status FROM exports WHERE id = ?", (export_id,))
        return not row or row[0]["status"] == "cancelled"

    def due(self, now: float | None = None, interrupted: bool = False) -> builtins.list[sqlite3.Row]:
        """Exports with a run due, oldest first; with `interrupted`, also those left running by a stop or a crash.

        One node (SQLite) looks for those once, at start. With shared state every look finds the runs whose
        node's claim lapsed (that node died), and only those: a run another live node holds is never resumed."""
        now = time.time() if now is None else now
        if self.db.shared:
            also = "(status = 'running' AND (lease_until IS NULL OR lease_until < ?)) OR "
            args: tuple[Any, ...] = (now, now)
        else:
            also = "status = 'running' OR " if interrupted else ""
            args = (now,)
        return self.db.query(
            f"SELECT * FROM exports WHERE {also}(status = 'pending' AND next_run_at <= ?) ORDER BY id", args
        )

    def holds(self, export_id: int) -> bool:
        """Whether this node still holds its claim on the export (always, on one node): a node whose claim
        lapsed (its heartbeats did not reach the state in time) stops, as another may have taken the run over."""
        if not self.db.shared:
            return True
        rows = self.db.query("SELECT lease_node FROM exports WHERE id = ?", (export_id,))
        return bool(rows) and rows[0]["lease_node"] == self.db.node

    # -- runs -----------------------------------------------------------------------------------

    def open_run(self, export: sqlite3.Row, high: dict[str, Any], now: float | None = None) -> sqlite3.Row | None:
        """The export's unfinished run (interrupted: attempted again with the same window and names), or a new
        run from the export's watermark to `high`; None when another process claimed the export first."""
        now = time.time() if now is None else now
        lease = (self.db.node, now + LEASE_SECONDS) if self.db.shared else (None, None)
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT * FROM export_runs WHERE export_id = ? AND status = 'running' ORDER BY id DESC LIMIT 1",
                (export["id"],),
            ).fetchone()
            if row is not None:
                # Take the interrupted run over: ours already, or its node's claim lapsed (shared state).
                taken = conn.execute(
                    "UPDATE exports SET lease_node = ?, lease_until = ? WHERE id = ? AND status = 'running'"
                    " AND (lease_node IS NULL OR lease_node = ? OR lease_until < ?)",
                    (*lease, export["id"], self.db.node, now),
                ).rowcount
                if not taken:
                    return None
                conn.execute("UPDATE export_runs SET attempts = attempts + 1 WHERE id = ?", (row["id"],))
                run_id = row["id"]
            else:
                claimed = conn.execute(
                    "UPDATE exports SET status = 'running', updated_at = ?, lease_node = ?, lease_until = ?"
                    " WHERE id = ? AND status = 'pending'",
                    (now, *lease, export["id"]),
                ).rowcount
                if not claimed:
                    return None
                # The run timestamp names the run's files: never the same for two runs of one export, even when
                # they start within one second (`exports run`).
                last = conn.execute(
                    "SELECT max(run_ts) FROM export_runs WHERE export_id = ?", (export["id"],)
                ).fetchone()[0]
                stamp = run_timestamp(now)
                if last is not None and stamp <= last:
                    stamp = run_timestamp(datetime.strptime(last, "%Y%m%d%H%M%S").replace(tzinfo=UTC).timestamp() + 1)
                cursor = conn.execute(
                    "INSERT INTO export_runs (export_id, run_ts, status, low, high, started_at) "
                    "VALUES (?, ?, 'running', ?, ?, ?) RETURNING id",
                    (export["id"], stamp, export["watermark"], json.dumps(high), now),
                )
                run_id = cursor.fetchone()[0]
            return conn.execute("SELECT * FROM export_runs WHERE id = ?", (run_id,)).fetchone()

    def has_unfinished_run(self, export_id: int) -> bool:
        rows = self.db.query(
            "SELECT 1 FROM export_runs WHERE export_id = ? AND status = 'running' LIMIT 1", (export_id,)
        )
        return bool(rows)

    def files(self, run_id: int) -> builtins.list[sqlite3.Row]:
        return self.db.query("SELECT * FROM export_files WHERE run_id = ? ORDER BY id", (run_id,))

    def forget_files(self, run_id: int) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM export_files WHERE run_id = ?", (run_id,))
            conn.execute("UPDATE export_runs SET rows = 0, bytes = 0 WHERE id = ?", (run_id,))

    def add_file(self, run_id: int, name: str, location: str, series: str, rows: int, size: int) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO export_files (run_id, name, location, series, rows, bytes) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, name, location, series, rows, size),
            )
            conn.execute("UPDATE export_runs SET rows = rows + ?, bytes = bytes + ? WHERE id = ?", (rows, size, run_id))

    def finish_run(
        self, export: sqlite3.Row, run: sqlite3.Row, status: str, *, note: str | None = None, error: str | None = None
    ) -> None:
        """Close the run; on success the export's watermark moves to the run's high end (the next run starts
        there); a failed recurring run leaves it, so the next period covers this one's rows too."""
        now = time.time()
        every = export["every_s"]
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE export_runs SET status = ?, note = ?, error = ?, finished_at = ? WHERE id = ?",
                (status, note, error, now, run["id"]),
            )
            conn.execute("UPDATE exports SET lease_node = NULL, lease_until = NULL WHERE id = ?", (export["id"],))
            current = conn.execute("SELECT status FROM exports WHERE id = ?", (export["id"],)).fetchone()
            if current["status"] == "cancelled":
                return
            if status == "done":
                conn.execute("UPDATE exports SET watermark = ? WHERE id = ?", (run["high"], export["id"]))
            if every:
                # Runs keep to the period, measured from the start of the run.
                conn.execute(
                    "UPDATE exports SET status = 'pending', next_run_at = ?, error = ?, updated_at = ? WHERE id = ?",
                    (max(run["started_at"] + every, now + 1), error, now, export["id"]),
                )
            else:
                conn.execute(
                    "UPDATE exports SET status = ?, next_run_at = NULL, error = ?, updated_at = ? WHERE id = ?",
                    (status if status != "cancelled" else "cancelled", error, now, export["id"]),
                )

    def runs(self, export_id: int) -> builtins.list[sqlite3.Row]:
        return self.db.query("SELECT * FROM export_runs WHERE export_id = ? ORDER BY id", (export_id,))

    # -- shapes ---------------------------------------------------------------------------------

    def describe(self, export: sqlite3.Row, with_runs: bool = True) -> dict[str, Any]:
        """The `exports show --json` / `GET /api/exports/{id}` shape."""
        runs = self.runs(export["id"])
        shown: dict[str, Any] = {
            "id": export["id"],
            "account": export["account"],
            "type": export["type"],
            "events": json.loads(export["events"]),
            "format": export["format"],
            "days": export["days"],
            "since": iso(export["since_ms"] / 1000) if export["since_ms"] is not None else None,
            "every": setting_text(export["every_s"]) if export["every_s"] is not None else None,
            "recurring": export["every_s"] is not None,
            "destination": export["destination"],
            "requested_by": export["requested_by"],
            "emails": json.loads(export["emails"]),
            "status": export["status"],
            "created_at": iso(export["created_at"]),
            "next_run_at": iso(export["next_run_at"]),
            "error": export["error"],
            "rows_exported": sum(run["rows"] for run in runs if run["status"] == "done"),
            "bytes_exported": sum(run["bytes"] for run in runs if run["status"] == "done"),
            "runs_done": sum(run["status"] == "done" for run in runs),
        }
        last = runs[-1] if runs else None
        shown["last_run"] = self._run(last) if last is not None else None
        if with_runs:
            shown["runs"] = [self._run(run) for run in runs]
        return shown

    def _run(self, run: sqlite3.Row) -> dict[str, Any]:
        return {
            "id": run["id"],
            "run_ts": run["run_ts"],
            "status": run["status"],
            "rows": run["rows"],
            "bytes": run["bytes"],
            "attempts": run["attempts"],
            "started_at": iso(run["started_at"]),
            "finished_at": iso(run["finished_at"]),
            "note": run["note"],
            "error": run["error"],
            "files": [
                {
                    "name": f["name"],
                    "location": f["location"],
                    "series": f["series"],
                    "rows": f["rows"],
                    "bytes": f["bytes"],
                }
                for f in self.files(run["id"])
            ],
        }

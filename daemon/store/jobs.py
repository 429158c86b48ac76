"""JobStore: import jobs in the state database — creation, status changes, checkpoints, queries."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from daemon.store.db import StateDB

STATUSES = ("queued", "waiting_for_data", "processing", "succeeded", "completed_with_errors", "failed")
PENDING = ("queued", "waiting_for_data")
ACTIVE = ("queued", "waiting_for_data", "processing")
FINAL = ("succeeded", "completed_with_errors", "failed")


def utc_now() -> str:
    return iso(time.time())


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _details(raw: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {"problems": [], "reasons": [], "paused": None, "duration_ms": None}
    details.update(json.loads(raw or "{}"))
    return details


def to_import(row: sqlite3.Row) -> dict[str, Any]:
    """The import dict of DESIGN.md and docs/interfaces.md from a jobs row."""
    details = _details(row["details"])
    details["paused"] = row["paused"]
    return {
        "id": row["id"],
        "account": row["account"],
        "file_name": row["file_name"],
        "manifest_name": row["manifest_name"],
        "type": row["type"],
        "status": row["status"],
        "rows_total": row["rows_total"],
        "rows_ingested": row["rows_ingested"],
        "rows_failed": row["rows_failed"],
        "bytes_total": row["bytes_total"],
        "bytes_done": row["bytes_done"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "error": row["error"],
        "details": details,
    }


class JobStore:
    """All reads and writes of the jobs table; every write is one short transaction."""

    def __init__(self, db: StateDB) -> None:
        self.db = db

    # -- creation -------------------------------------------------------------------------------

    def create(self, account: str, manifest_name: str) -> int:
        """A new queued job; its id is its place in the arrival order."""
        now = utc_now()
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO jobs (account, manifest_name, status, created_at, updated_at) VALUES (?, ?, 'queued', ?, ?)",
                (account, manifest_name, now, now),
            )
            return int(cursor.lastrowid or 0)

    def enqueue(
        self,
        account: str,
        manifest_name: str,
        still_there: Callable[[], bool],
        details: dict[str, Any] | None = None,
    ) -> int | None:
        """Create a job for a manifest in the drop folder unless one already waits for it.

        `still_there` is checked inside the write lock: a worker moves the file before it marks the
        job processing, so a late watch event for a file already picked up creates nothing.
        `manifest_name` must be valid UTF-8 text (daemon.text.safe); `details` start the job's details."""
        now = utc_now()
        with self.db.transaction() as conn:
            pending = conn.execute(
                "SELECT id FROM jobs WHERE account = ? AND manifest_name = ? AND status IN ('queued', 'waiting_for_data')",
                (account, manifest_name),
            ).fetchone()
            if pending is not None or not still_there():
                return None
            cursor = conn.execute(
                "INSERT INTO jobs (account, manifest_name, status, created_at, updated_at, details)"
                " VALUES (?, ?, 'queued', ?, ?, ?)",
                (account, manifest_name, now, now, json.dumps(details or {})),
            )
            return int(cursor.lastrowid or 0)

    # -- reads ----------------------------------------------------------------------------------

    def get_import(self, job_id: int) -> dict[str, Any] | None:
        rows = self.db.query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return to_import(rows[0]) if rows else None

    def list_imports(
        self, account: str | None = None, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Newest first."""
        where, params = [], []
        if account is not None:
            where.append("account = ?")
            params.append(account)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.db.query(
            f"SELECT * FROM jobs {clause} ORDER BY id DESC LIMIT ? OFFSET ?", (*params, int(limit), int(offset))
        )
        return [to_import(row) for row in rows]

    def checkpoint(self, job_id: int) -> dict[str, Any]:
        rows = self.db.query("SELECT checkpoint FROM jobs WHERE id = ?", (job_id,))
        return json.loads(rows[0]["checkpoint"]) if rows else {}

    def heads(self) -> list[dict[str, Any]]:
        """Each account's oldest unfinished job: the only one of that account allowed to move."""
        rows = self.db.query(
            "SELECT * FROM jobs WHERE id IN (SELECT MIN(id) FROM jobs WHERE status IN (?, ?, ?) GROUP BY account)"
            " ORDER BY id",
            ACTIVE,
        )
        return [{**to_import(row), "waiting_since": row["waiting_since"]} for row in rows]

    def name_used(self, account: str, manifest_name: str, before_id: int) -> bool:
        """True when an earlier job of the account was picked up under this manifest name."""
        rows = self.db.query(
            "SELECT 1 FROM jobs WHERE account = ? AND manifest_name = ? AND id < ? AND started_at IS NOT NULL LIMIT 1",
            (account, manifest_name, before_id),
        )
        return bool(rows)

    def pending_count(self) -> int:
        return int(self.db.query("SELECT COUNT(*) FROM jobs WHERE status IN (?, ?)", PENDING)[0][0])

    def finished_before(self, cutoff: str) -> list[int]:
        rows = self.db.query(
            "SELECT id FROM jobs WHERE status IN (?, ?, ?) AND finished_at IS NOT NULL AND finished_at < ?",
            (*FINAL, cutoff),
        )
        return [row["id"] for row in rows]

    # -- transitions ----------------------------------------------------------------------------

    def mark_waiting(self, job_id: int, since: float, file_name: str, type_: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET status = 'waiting_for_data', waiting_since = COALESCE(waiting_since, ?),"
                " file_name = ?, type = ?, updated_at = ? WHERE id = ?",
                (since, file_name, type_, utc_now(), job_id),
            )

    def mark_processing(
        self, job_id: int, file_name: str, type_: str, bytes_total: int, checkpoint: dict[str, Any]
    ) -> None:
        now = utc_now()
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET status = 'processing', file_name = ?, type = ?, bytes_total = ?, started_at = ?,"
                " checkpoint = ?, updated_at = ? WHERE id = ?",
                (file_name, type_, bytes_total, now, json.dumps(checkpoint), now, job_id),
            )

    def save_checkpoint(self, job_id: int, checkpoint: dict[str, Any], bytes_done: int) -> None:
        """Everything a resume needs, in one transaction: written only after the sink acknowledged."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET rows_total = ?, rows_ingested = ?, rows_failed = ?, bytes_done = ?,"
                " checkpoint = ?, updated_at = ? WHERE id = ?",
                (
                    checkpoint["rows_done"],
                    checkpoint["rows_ingested"],
                    checkpoint["rows_failed"],
                    bytes_done,
                    json.dumps(checkpoint),
                    utc_now(),
                    job_id,
                ),
            )

    def set_paused(self, job_id: int, reason: str | None) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE jobs SET paused = ?, updated_at = ? WHERE id = ?", (reason, utc_now(), job_id))

    def finish(self, job_id: int, status: str, *, error: str | None = None, **details: Any) -> None:
        """A final status; `details` are merged into the job's details."""
        if status not in FINAL:
            raise ValueError(f"not a final status: {status}")
        now = utc_now()
        with self.db.transaction() as conn:
            row = conn.execute("SELECT details FROM jobs WHERE id = ?", (job_id,)).fetchone()
            merged = json.loads(row["details"] if row else "{}")
            merged.update(details)
            conn.execute(
                "UPDATE jobs SET status = ?, error = ?, details = ?, paused = NULL, finished_at = ?, updated_at = ?"
                " WHERE id = ?",
                (status, error, json.dumps(merged), now, now, job_id),
            )

    def set_file(self, job_id: int, file_name: str, type_: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET file_name = ?, type = ?, updated_at = ? WHERE id = ?",
                (file_name, type_, utc_now(), job_id),
            )

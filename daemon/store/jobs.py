"""JobStore: import jobs in the state database — creation, status changes, checkpoints, queries."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daemon.jobs.status import ACTIVE, FINAL, PENDING, STATUSES
from daemon.store.db import StateDB, for_update
from daemon.store.leases import LEASE_SECONDS

_IN_PENDING = f"status IN ({', '.join(repr(status) for status in PENDING)})"
_IN_ACTIVE = f"status IN ({', '.join(repr(status) for status in ACTIVE)})"

# Re-exported: the statuses have one home, daemon/jobs/status.py.
# LEASE_SECONDS too: its home is daemon/store/leases.py.
__all__ = [
    "ACTIVE",
    "FINAL",
    "LEASE_SECONDS",
    "PENDING",
    "STATUSES",
    "Job",
    "JobStore",
    "LeaseLost",
    "iso",
    "to_import",
    "utc_now",
]


class LeaseLost(Exception):
    """Shared state: this node's claim on a processing job lapsed (its heartbeats did not reach the state in
    time) and another node may have taken the job over: stop without touching the job any more."""


def utc_now() -> str:
    return iso(time.time())


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _details(raw: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {"problems": [], "reasons": [], "paused": None, "duration_ms": None, "timeline": []}
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
        "rows_duplicate": row["rows_duplicate"],
        "dry_run": bool(details.get("dry_run")),
        "bytes_total": row["bytes_total"],
        "bytes_done": row["bytes_done"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "error": row["error"],
        "cancel_requested": row["cancel_requested"],
        "details": details,
    }


@dataclass
class Job:
    """A job as the scheduler and the workers see it; the CLI and the API read import dicts (`to_import`)."""

    id: int
    account: str
    manifest_name: str
    file_name: str
    type: str
    status: str
    rows_total: int
    details: dict[str, Any]
    waiting_since: float | None = None  # epoch seconds when it first waited for its data file

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(
            id=row["id"],
            account=row["account"],
            manifest_name=row["manifest_name"],
            file_name=row["file_name"],
            type=row["type"],
            status=row["status"],
            rows_total=row["rows_total"],
            details=_details(row["details"]),
            waiting_since=row["waiting_since"],
        )


def _timeline(details: dict[str, Any], event: str, detail: str | None = None, at: float | None = None) -> None:
    """Append one `{"at", "event", "detail"}` entry to `details["timeline"]` (the shape the page renders)."""
    details.setdefault("timeline", []).append(
        {"at": iso(time.time() if at is None else at), "event": event, "detail": detail}
    )


def _update_details(conn: sqlite3.Connection, job_id: int, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    row = conn.execute(f"SELECT details FROM jobs WHERE id = ?{for_update(conn)}", (job_id,)).fetchone()
    details = json.loads(row["details"] if row else "{}")
    change(details)
    conn.execute("UPDATE jobs SET details = ? WHERE id = ?", (json.dumps(details), job_id))
    return details


class JobStore:
    """All reads and writes of the jobs table; every write is one short transaction."""

    def __init__(self, db: StateDB) -> None:
        self.db = db

    # -- creation -------------------------------------------------------------------------------

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
            self._lock_account(conn, account)
            pending = conn.execute(
                "SELECT id FROM jobs WHERE account = ? AND manifest_name = ? AND status IN ('queued', 'waiting_for_data')",
                (account, manifest_name),
            ).fetchone()
            if pending is not None or not still_there():
                return None
            details = dict(details or {})
            _timeline(details, "queued")
            row = conn.execute(
                "INSERT INTO jobs (account, manifest_name, status, created_at, updated_at, details)"
                " VALUES (?, ?, 'queued', ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                (account, manifest_name, now, now, json.dumps(details)),
            ).fetchone()
            return int(row[0]) if row is not None else None

    def _lock_account(self, conn: sqlite3.Connection, account: str) -> None:
        """Shared state: serialise the account's job creations (held to COMMIT), so its job ids grow in commit
        order and a scheduler never sees a later job of the account before an earlier one. SQLite's BEGIN
        IMMEDIATE already serialises every writer."""
        if self.db.shared:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (f"ingestd.jobs.{account}",))

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

    def heads(self) -> list[Job]:
        """Each account's oldest unfinished job: the only one of that account allowed to move."""
        rows = self.db.query(
            f"SELECT * FROM jobs WHERE id IN (SELECT MIN(id) FROM jobs WHERE {_IN_ACTIVE} GROUP BY account) ORDER BY id"
        )
        return [Job.from_row(row) for row in rows]

    def name_used(self, account: str, manifest_name: str, before_id: int) -> bool:
        """True when an earlier job of the account was picked up under this manifest name."""
        rows = self.db.query(
            "SELECT 1 FROM jobs WHERE account = ? AND manifest_name = ? AND id < ? AND started_at IS NOT NULL LIMIT 1",
            (account, manifest_name, before_id),
        )
        return bool(rows)

    def pending_count(self) -> int:
        return int(self.db.query(f"SELECT COUNT(*) FROM jobs WHERE {_IN_PENDING}")[0][0])

    def finished_before(self, cutoff: str) -> list[Job]:
        """Jobs finished before `cutoff` (ISO 8601 UTC): retention removes their files."""
        marks = ", ".join("?" for _ in FINAL)
        rows = self.db.query(
            f"SELECT * FROM jobs WHERE status IN ({marks}) AND finished_at IS NOT NULL AND finished_at < ?",
            (*FINAL, cutoff),
        )
        return [Job.from_row(row) for row in rows]

    def cancel_requested(self, job_id: int) -> str | None:
        rows = self.db.query("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,))
        return rows[0]["cancel_requested"] if rows else None

    # -- leases (shared state only: SQLite has one node, whose scheduler is the only one) -------------------

    @property
    def _leasing(self) -> bool:
        return self.db.shared and self.db.node is not None

    def claim(self, job_ids: list[int], now: float | None = None) -> set[int]:
        """The heads among `job_ids` this node may settle or run now, claimed for LEASE_SECONDS.

        A job is claimed only while it is still its account's oldest unfinished job and no other node holds it
        (or that node's claim lapsed: it died, and its processing job resumes here from its last checkpoint).
        `FOR UPDATE SKIP LOCKED`: two nodes claiming at once never wait for each other nor both win.
        Without shared state every job is this node's."""
        if not self._leasing or not job_ids:
            return set(job_ids)
        now = time.time() if now is None else now
        marks = ", ".join("?" for _ in job_ids)
        with self.db.transaction() as conn:
            rows = conn.execute(
                f"SELECT id FROM jobs WHERE id IN ({marks}) AND {_IN_ACTIVE}"
                " AND (lease_node IS NULL OR lease_node = ? OR lease_until < ?)"
                f" AND id = (SELECT MIN(h.id) FROM jobs h WHERE h.account = jobs.account AND h.{_IN_ACTIVE})"
                f"{self.db.skip_locked}",
                (*job_ids, self.db.node, now),
            ).fetchall()
            claimed = [int(row[0]) for row in rows]
            if claimed:
                marks = ", ".join("?" for _ in claimed)
                conn.execute(
                    f"UPDATE jobs SET lease_node = ?, lease_until = ? WHERE id IN ({marks})",
                    (self.db.node, now + LEASE_SECONDS, *claimed),
                )
        return set(claimed)

    def release(self, job_ids: list[int]) -> None:
        """Give up this node's claim on `job_ids` (heads it looked at but does not run)."""
        if not self._leasing or not job_ids:
            return
        marks = ", ".join("?" for _ in job_ids)
        with self.db.transaction() as conn:
            conn.execute(
                f"UPDATE jobs SET lease_node = NULL, lease_until = NULL WHERE id IN ({marks}) AND lease_node = ?",
                (*job_ids, self.db.node),
            )

    def holds(self, job_id: int) -> bool:
        """True while this node's claim on the job holds (always, without shared state)."""
        if not self._leasing:
            return True
        rows = self.db.query("SELECT lease_node FROM jobs WHERE id = ?", (job_id,))
        return bool(rows) and rows[0]["lease_node"] == self.db.node

    def _lease_clause(self) -> tuple[str, tuple[Any, ...]]:
        return (" AND lease_node = ?", (self.db.node,)) if self._leasing else ("", ())

    # -- transitions ----------------------------------------------------------------------------

    def mark_waiting(
        self, job_id: int, since: float, file_name: str, type_: str, client_emails: list[str] | None = None
    ) -> None:
        """`client_emails` are kept so that a cancel (the partner removing the manifest) can still tell them."""
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET status = 'waiting_for_data', waiting_since = ?, file_name = ?, type = ?,"
                f" updated_at = ? WHERE id = ? AND waiting_since IS NULL AND {_IN_PENDING}",
                (since, file_name, type_, utc_now(), job_id),
            )
            if cursor.rowcount:

                def change(details: dict[str, Any]) -> None:
                    details["client_emails"] = list(client_emails or [])
                    _timeline(details, "waiting_for_data", file_name, at=since)

                _update_details(conn, job_id, change)

    def mark_processing(
        self, job_id: int, file_name: str, type_: str, bytes_total: int, checkpoint: dict[str, Any]
    ) -> bool:
        """False when the job is no longer pending (cancelled meanwhile): it must not be processed."""
        now = utc_now()
        lease, held = self._lease_clause()
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET status = 'processing', file_name = ?, type = ?, bytes_total = ?, started_at = ?,"
                f" checkpoint = ?, updated_at = ? WHERE id = ? AND {_IN_PENDING}{lease}",
                (file_name, type_, bytes_total, now, json.dumps(checkpoint), now, job_id, *held),
            )
            if not cursor.rowcount:
                return False
            _update_details(conn, job_id, lambda details: _timeline(details, "picked_up", file_name))
            return True

    def save_checkpoint(
        self, job_id: int, checkpoint: dict[str, Any], bytes_done: int, progress: dict[str, Any] | None = None
    ) -> str | None:
        """Everything a resume needs, in one transaction: written only after the sink acknowledged.

        `progress` (rows done, rows expected, fraction, time left) goes to `details.progress` for the API.
        Returns the job's `cancel_requested` (who asked), read in the same transaction: the batch boundary
        is where a processing job stops when it is cancelled. Shared state: LeaseLost when this node's claim
        lapsed (another node may be running the job from its previous checkpoint)."""
        lease, held = self._lease_clause()
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET rows_total = ?, rows_ingested = ?, rows_failed = ?, rows_duplicate = ?,"
                f" bytes_done = ?, checkpoint = ?, updated_at = ? WHERE id = ?{lease}",
                (
                    checkpoint["rows_done"],
                    checkpoint["rows_ingested"],
                    checkpoint["rows_failed"],
                    checkpoint.get("rows_duplicate", 0),
                    bytes_done,
                    json.dumps(checkpoint),
                    utc_now(),
                    job_id,
                    *held,
                ),
            )
            if lease and not cursor.rowcount:
                raise LeaseLost(f"job {job_id}: this node's claim lapsed; another node may have taken it over")
            if progress is not None:
                _update_details(conn, job_id, lambda details: details.update(progress=progress))
            row = conn.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return row["cancel_requested"] if row else None

    def set_details(self, job_id: int, **values: Any) -> None:
        """Merge `values` into the job's details."""
        with self.db.transaction() as conn:
            _update_details(conn, job_id, lambda details: details.update(values))

    def set_paused(self, job_id: int, reason: str | None) -> None:
        """Record a pause (or its end, None); the timeline gets `paused` / `resumed` when that changes."""
        with self.db.transaction() as conn:
            row = conn.execute(f"SELECT paused FROM jobs WHERE id = ?{self.db.for_update}", (job_id,)).fetchone()
            before = row["paused"] if row else None
            conn.execute("UPDATE jobs SET paused = ?, updated_at = ? WHERE id = ?", (reason, utc_now(), job_id))
            if reason is not None and before is None:
                _update_details(conn, job_id, lambda details: _timeline(details, "paused", reason))
            elif reason is None and before is not None:
                _update_details(conn, job_id, lambda details: _timeline(details, "resumed"))

    def finish(
        self,
        job_id: int,
        status: str,
        *,
        error: str | None = None,
        from_statuses: tuple[str, ...] = ACTIVE,
        **details: Any,
    ) -> bool:
        """A final status; `details` are merged into the job's details. False (nothing changed) when the job
        is not in one of `from_statuses` any more, e.g. cancelled by an operator while the queue settled it."""
        if status not in FINAL:
            raise ValueError(f"not a final status: {status}")
        now = utc_now()
        with self.db.transaction() as conn:
            row = conn.execute(
                f"SELECT details, status, cancel_requested, lease_node, lease_until FROM jobs WHERE id = ?"
                f"{self.db.for_update}",
                (job_id,),
            ).fetchone()
            if row is None or row["status"] not in from_statuses:
                return False
            if (
                self._leasing
                and row["lease_node"] not in (None, self.db.node)
                and (row["lease_until"] or 0) >= time.time()
            ):
                return False  # another node holds the job: it settles it
            merged = json.loads(row["details"])
            merged.update(details)
            if status == "cancelled":
                _timeline(merged, "cancelled", row["cancel_requested"] or error)
            _timeline(merged, "finished", status)
            conn.execute(
                "UPDATE jobs SET status = ?, error = ?, details = ?, paused = NULL, finished_at = ?, updated_at = ?,"
                " lease_node = NULL, lease_until = NULL WHERE id = ?",
                (status, error, json.dumps(merged), now, now, job_id),
            )
            return True

    # -- cancel and retry (`ingestd imports cancel|retry`, a partner removing a waiting manifest) ---------------

    def request_cancel(self, job_id: int, by: str) -> bool:
        """Ask a processing job to stop at its next batch boundary; False when it is not processing."""
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET cancel_requested = COALESCE(cancel_requested, ?), updated_at = ?"
                " WHERE id = ? AND status = 'processing'",
                (by, utc_now(), job_id),
            )
            return bool(cursor.rowcount)

    def retry(self, job_id: int, move_files: Callable[[int], None]) -> int | None:
        """A new queued job for a finished job's files, last in its account's order; None when not finished.

        `move_files(new_id)` moves the files into the new job's folder inside the write transaction: the
        scheduler sees the new job only once its files are in place (and never if moving them failed)."""
        now = utc_now()
        with self.db.transaction() as conn:
            row = conn.execute(f"SELECT * FROM jobs WHERE id = ?{self.db.for_update}", (job_id,)).fetchone()
            if row is None or row["status"] not in FINAL:
                return None
            self._lock_account(conn, row["account"])
            details: dict[str, Any] = {"retry_of": job_id}
            _timeline(details, "queued", f"retry of job {job_id}")
            inserted = conn.execute(
                "INSERT INTO jobs (account, manifest_name, file_name, type, status, created_at, updated_at, details)"
                " VALUES (?, ?, ?, ?, 'queued', ?, ?, ?) RETURNING id",
                (row["account"], row["manifest_name"], row["file_name"], row["type"], now, now, json.dumps(details)),
            ).fetchone()
            new_id = int(inserted[0])
            _update_details(conn, job_id, lambda old: _timeline(old, "retried", f"as job {new_id}"))
            move_files(new_id)
            return new_id

    def set_file(self, job_id: int, file_name: str, type_: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET file_name = ?, type = ?, updated_at = ? WHERE id = ?",
                (file_name, type_, utc_now(), job_id),
            )

"""The outbox table: rows are written before any delivery attempt and marked sent once accepted."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from daemon.store import StateDB

# First retry after this many seconds, doubling per attempt up to the channel's cap.
BASE_DELAY = 1.0

_PENDING = "sent_at IS NULL AND failed_at IS NULL"
# All emails form one channel (one SMTP server); each webhook URL is its own.
_CHANNEL = "CASE WHEN kind = 'webhook' THEN target ELSE '' END"


@dataclass(frozen=True)
class Item:
    id: int
    kind: str
    job_id: int | None
    event: str
    target: str
    message_id: str | None
    payload: bytes
    attempts: int
    next_attempt: float

    @property
    def channel(self) -> tuple[str, str]:
        return (self.kind, self.target if self.kind == "webhook" else "")


def backoff(attempts: int, cap: float) -> float:
    """Seconds to wait after the `attempts`-th failed attempt."""
    return min(cap, BASE_DELAY * 2 ** max(0, attempts - 1))


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Outbox:
    """Thin data access over `outbox`; every method is one short statement or transaction."""

    def __init__(self, db: StateDB) -> None:
        self.db = db

    @staticmethod
    def add(
        conn: sqlite3.Connection,
        kind: str,
        job_id: int | None,
        event: str,
        target: str,
        payload: bytes,
        message_id: str | None = None,
    ) -> int:
        """Insert one row inside the caller's transaction."""
        cursor = conn.execute(
            "INSERT INTO outbox (kind, job_id, event, target, message_id, payload, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (kind, job_id, event, target, message_id, payload, _now_iso()),
        )
        return int(cursor.lastrowid or 0)

    def heads(self) -> list[Item]:
        """The oldest pending row of every channel: the only one that may be delivered next."""
        rows = self.db.query(
            f"SELECT * FROM outbox WHERE id IN (SELECT MIN(id) FROM outbox WHERE {_PENDING} GROUP BY kind, {_CHANNEL})"
            " ORDER BY id"
        )
        return [_item(row) for row in rows]

    def head(self, channel: tuple[str, str]) -> Item | None:
        kind, target = channel
        rows = self.db.query(
            f"SELECT * FROM outbox WHERE {_PENDING} AND kind = ? AND {_CHANNEL} = ? ORDER BY id LIMIT 1",
            (kind, target),
        )
        return _item(rows[0]) if rows else None

    def mark_sent(self, item_id: int) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE outbox SET sent_at = ?, attempts = attempts + 1 WHERE id = ?", (_now_iso(), item_id))

    def mark_retry(self, item_id: int, error: str, cap: float) -> tuple[int, float]:
        """Record a failed attempt; returns (attempts so far, seconds until the next one)."""
        with self.db.transaction() as conn:
            attempts = conn.execute("SELECT attempts FROM outbox WHERE id = ?", (item_id,)).fetchone()[0] + 1
            delay = backoff(attempts, cap)
            conn.execute(
                "UPDATE outbox SET attempts = ?, next_attempt = ?, last_error = ? WHERE id = ?",
                (attempts, time.time() + delay, error, item_id),
            )
        return attempts, delay

    def mark_failed(self, item_id: int, error: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET failed_at = ?, attempts = attempts + 1, last_error = ? WHERE id = ?",
                (_now_iso(), error, item_id),
            )

    def retry_now(self) -> int:
        """After a restart every pending row is due at once: the outage may well be over."""
        with self.db.transaction() as conn:
            return conn.execute(f"UPDATE outbox SET next_attempt = 0 WHERE {_PENDING}").rowcount

    def prune(self, days: float) -> int:
        """Delete rows delivered (or refused) more than `days` ago: their payloads can be megabytes."""
        if days <= 0:
            return 0
        cutoff = datetime.fromtimestamp(time.time() - days * 86400, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM outbox WHERE COALESCE(sent_at, failed_at) < ?", (cutoff,)).rowcount

    def depth(self) -> int:
        return int(self.db.query(f"SELECT COUNT(*) FROM outbox WHERE {_PENDING}")[0][0])

    def oldest_pending(self) -> tuple[int, str | None] | None:
        """(attempts, last error) of the oldest pending row, for health()."""
        rows = self.db.query(f"SELECT attempts, last_error FROM outbox WHERE {_PENDING} ORDER BY id LIMIT 1")
        return (int(rows[0][0]), rows[0][1]) if rows else None


def _item(row: sqlite3.Row) -> Item:
    return Item(
        id=row["id"],
        kind=row["kind"],
        job_id=row["job_id"],
        event=row["event"],
        target=row["target"],
        message_id=row["message_id"],
        payload=bytes(row["payload"]),
        attempts=row["attempts"],
        next_attempt=row["next_attempt"],
    )

"""The outbox table: rows are written before any delivery attempt and marked sent once accepted.

Each row names its channel, delivered first-in first-out and independently of the others (Postfix-style
per-destination queues): `email:<recipient domain>`, `webhook:<url>`, `eml` (files, no SMTP). One slow or
refusing destination only ever holds up its own rows."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from daemon.store import StateDB
from daemon.store.db import for_update
from daemon.store.leases import LEASE_SECONDS
from daemon.store.nodes import NodeStore
from notifier import channels

# First retry after this many seconds, doubling per attempt up to the channel's cap.
BASE_DELAY = 1.0

_PENDING = "sent_at IS NULL AND failed_at IS NULL"
# A job's record keeps at most this many undelivered addresses (details.undelivered).
MAX_UNDELIVERED = 20
# ... and this many entries of who was emailed (details.notified); progress entries go first when over.
MAX_NOTIFIED = 50


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
    channel: str
    account: str | None = None

    @property
    def recipients(self) -> list[str]:
        return [address.strip() for address in self.target.split(",") if address.strip()]


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
        *,
        channel: str | None = None,
        account: str | None = None,
    ) -> int:
        """Insert one row inside the caller's transaction; `channel` defaults to the target's own."""
        if channel is None:
            channel = channels.channel(kind).key(target)
        row = conn.execute(
            "INSERT INTO outbox (kind, job_id, event, target, message_id, payload, created_at, channel, account)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (kind, job_id, event, target, message_id, payload, _now_iso(), channel, account),
        ).fetchone()
        return int(row[0])

    @property
    def _leasing(self) -> bool:
        return self.db.shared and self.db.node is not None

    def heads(self) -> list[Item]:
        """The oldest pending row of every channel: the only one that may be delivered next. Shared state:
        not those another node is delivering."""
        sql = f"SELECT * FROM outbox WHERE id IN (SELECT MIN(id) FROM outbox WHERE {_PENDING} GROUP BY channel)"
        params: tuple[object, ...] = ()
        if self._leasing:
            sql += " AND (lease_node IS NULL OR lease_node = ? OR lease_until < ?)"
            params = (self.db.node, time.time())
        return [_item(row) for row in self.db.query(sql + " ORDER BY id", params)]

    def head(self, channel: str) -> Item | None:
        """The channel's oldest pending row, to deliver now. Shared state: claimed for this node (until it is
        settled, or its claim lapses), None when another node holds it, so each row is sent by one node."""
        rows = self.db.query(
            f"SELECT * FROM outbox WHERE {_PENDING} AND channel = ? ORDER BY id LIMIT 1",
            (channel,),
        )
        if not rows or not self._leasing:
            return _item(rows[0]) if rows else None
        now = time.time()
        with self.db.transaction() as conn:
            # The head itself or nothing: SKIP LOCKED must never pass over it to the next row of the channel.
            row = conn.execute(
                f"SELECT * FROM outbox WHERE id = ? AND {_PENDING}"
                f" AND (lease_node IS NULL OR lease_node = ? OR lease_until < ?){self.db.skip_locked}",
                (rows[0]["id"], self.db.node, now),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE outbox SET lease_node = ?, lease_until = ? WHERE id = ?",
                (self.db.node, now + LEASE_SECONDS, row["id"]),
            )
        return _item(row)

    def mark_sent(self, item_id: int) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE outbox SET sent_at = ?, attempts = attempts + 1 WHERE id = ?", (_now_iso(), item_id))

    def mark_retry(self, item_id: int, error: str, cap: float) -> tuple[int, float]:
        """Record a failed attempt; returns (attempts so far, seconds until the next one)."""
        with self.db.transaction() as conn:
            sql = f"SELECT attempts FROM outbox WHERE id = ?{self.db.for_update}"
            attempts = conn.execute(sql, (item_id,)).fetchone()[0] + 1
            delay = backoff(attempts, cap)
            # The claim ends with the attempt: any node may make the next one.
            conn.execute(
                "UPDATE outbox SET attempts = ?, next_attempt = ?, last_error = ?, lease_node = NULL, lease_until = NULL"
                " WHERE id = ?",
                (attempts, time.time() + delay, error, item_id),
            )
        return attempts, delay

    def mark_failed(self, item_id: int, error: str, refused: dict[str, str] | None = None) -> None:
        """Refused for good; `refused` (address -> the server's answer) also goes on the job's record."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET failed_at = ?, attempts = attempts + 1, last_error = ? WHERE id = ?",
                (_now_iso(), error, item_id),
            )
            _record_undelivered(conn, item_id, refused or {})

    def mark_partial(self, item_id: int, remaining: list[str], error: str, cap: float) -> tuple[int, float]:
        """Some recipients were accepted or refused for good: the row keeps only those to try again."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE outbox SET target = ? WHERE id = ?", (", ".join(remaining), item_id))
        return self.mark_retry(item_id, error, cap)

    def record_undelivered(self, item_id: int, refused: dict[str, str]) -> None:
        """Recipients refused for good while the row stays pending for others: on the job's record now."""
        with self.db.transaction() as conn:
            _record_undelivered(conn, item_id, refused)

    def mark_sent_except(self, item_id: int, refused: dict[str, str]) -> None:
        """Accepted for some recipients; the others were refused for good (recorded on the row and the job)."""
        error = "; ".join(f"{address}: {answer}" for address, answer in refused.items())
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET sent_at = ?, attempts = attempts + 1, last_error = ? WHERE id = ?",
                (_now_iso(), f"refused for good: {error}", item_id),
            )
            _record_undelivered(conn, item_id, refused)

    def retry_now(self) -> int:
        """After a restart every pending row is due at once: the outage may well be over. Shared state: only
        when no other node is up. One that is has been trying the rows on their back-off all along, and this
        node's restart says nothing about the relay: made due, every node would try a failing relay at once."""
        if self._leasing and NodeStore(self.db).others_up(self.db.node or ""):
            return 0
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

    def oldest_pending_created(self) -> float | None:
        """When the oldest row still waiting was queued (epoch seconds), None when none waits."""
        rows = self.db.query(f"SELECT MIN(created_at) FROM outbox WHERE {_PENDING}")
        return epoch(rows[0][0]) if rows and rows[0][0] else None

    def stuck(self, min_attempts: int, min_age: float) -> tuple[int, sqlite3.Row] | None:
        """(channels stuck, the oldest stuck row): pending rows failed `min_attempts` times, queued `min_age` s ago."""
        cutoff = datetime.fromtimestamp(time.time() - min_age, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        where = f"{_PENDING} AND attempts >= ? AND created_at <= ?"
        rows = self.db.query(
            f"SELECT channel, attempts, last_error, created_at FROM outbox WHERE {where} ORDER BY id LIMIT 1",
            (min_attempts, cutoff),
        )
        if not rows:
            return None
        count = self.db.query(f"SELECT COUNT(DISTINCT channel) FROM outbox WHERE {where}", (min_attempts, cutoff))
        return int(count[0][0]), rows[0]


def epoch(stamp: str) -> float:
    """An outbox time stamp (created_at, sent_at) as epoch seconds."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def _record_undelivered(conn: sqlite3.Connection, item_id: int, refused: dict[str, str]) -> None:
    """Append the refused addresses to the job's details.undelivered, so `imports show` tells."""
    if not refused:
        return
    row = conn.execute(
        "SELECT j.id, j.details, o.event FROM outbox o JOIN jobs j ON j.id = o.job_id WHERE o.id = ?"
        + for_update(conn, "OF j"),
        (item_id,),
    ).fetchone()
    if row is None:
        return
    details = json.loads(row["details"] or "{}")
    undelivered = list(details.get("undelivered") or [])
    at = _now_iso()
    for address, answer in refused.items():
        if len(undelivered) >= MAX_UNDELIVERED:
            break
        undelivered.append({"to": address, "event": row["event"], "error": answer, "at": at})
    details["undelivered"] = undelivered
    conn.execute("UPDATE jobs SET details = ? WHERE id = ?", (json.dumps(details), row["id"]))


def record_notified(conn: sqlite3.Connection, job_id: int | None, entry: dict[str, object]) -> None:
    """Append who an event's emails went to (or that nobody could be told) to the job's details.notified,
    in the caller's transaction: the same one that queues the emails, so the record and the outbox agree."""
    if job_id is None:
        return
    row = conn.execute("SELECT details FROM jobs WHERE id = ?" + for_update(conn), (job_id,)).fetchone()
    if row is None:
        return
    details = json.loads(row["details"] or "{}")
    notified = [item for item in details.get("notified") or [] if isinstance(item, dict)]
    notified.append({**entry, "at": _now_iso()})
    while len(notified) > MAX_NOTIFIED:
        progress = [i for i, item in enumerate(notified[:-1]) if item.get("event") == "progress"]
        del notified[progress[0] if progress else 0]
    details["notified"] = notified
    conn.execute("UPDATE jobs SET details = ? WHERE id = ?", (json.dumps(details), job_id))


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
        channel=row["channel"],
        account=row["account"],
    )

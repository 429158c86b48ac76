"""Login bans in the state DB: written by the SFTP process, listed and lifted by `ingestd bans`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from daemon.store.db import StateDB


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@dataclass(frozen=True)
class Ban:
    address: str
    account: str  # '' for every account of the address
    reason: str
    failures: int
    banned_until: float  # epoch seconds

    def as_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "account": self.account or None,
            "reason": self.reason,
            "banned_until": iso(self.banned_until),
            "failures": self.failures,
        }


class BanStore:
    """Active bans; an expired one is as good as absent (and pruned when a new one is written)."""

    def __init__(self, db: StateDB, clock: Any = time.time) -> None:
        self.db = db
        self.clock = clock

    def add(self, ban: Ban) -> None:
        now = self.clock()
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM bans WHERE banned_until <= ?", (now,))
            conn.execute(
                "INSERT INTO bans (address, account, reason, failures, banned_at, banned_until)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (address, account) DO UPDATE SET reason = excluded.reason,"
                " failures = excluded.failures, banned_at = excluded.banned_at, banned_until = excluded.banned_until",
                (ban.address, ban.account, ban.reason, ban.failures, iso(now), ban.banned_until),
            )

    def active(self, address: str | None = None) -> list[Ban]:
        sql = "SELECT * FROM bans WHERE banned_until > ?"
        params: tuple[Any, ...] = (self.clock(),)
        if address is not None:
            sql += " AND address = ?"
            params += (address,)
        rows = self.db.query(sql + " ORDER BY address, account", params)
        return [Ban(r["address"], r["account"], r["reason"], r["failures"], r["banned_until"]) for r in rows]

    def banned(self, address: str, account: str) -> Ban | None:
        """The ban that refuses `account` from `address` now, if any (an address-wide one included)."""
        rows = self.db.query(
            "SELECT * FROM bans WHERE address = ? AND account IN (?, '') AND banned_until > ?"
            " ORDER BY banned_until DESC LIMIT 1",
            (address, account, self.clock()),
        )
        if not rows:
            return None
        r = rows[0]
        return Ban(r["address"], r["account"], r["reason"], r["failures"], r["banned_until"])

    def lift(self, address: str) -> int:
        """Remove every ban of `address`; returns how many were active."""
        with self.db.transaction() as conn:
            active = conn.execute(
                "SELECT COUNT(*) FROM bans WHERE address = ? AND banned_until > ?", (address, self.clock())
            ).fetchone()[0]
            conn.execute("DELETE FROM bans WHERE address = ?", (address,))
        return int(active)

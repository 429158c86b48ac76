"""The nodes using one state (`ingestd nodes`, GET /api/nodes) and the heartbeat that keeps their claims alive.

Each `ingestd serve` registers itself as a node (`host:pid`) and beats every HEARTBEAT_SECONDS: one transaction
that stamps its row and extends its claims on jobs, outbox rows and export runs by LEASE_SECONDS (both in
daemon/store/leases.py). A node that stops cleanly gives its claims back at once; one that dies loses them when
they lapse, and the other nodes take its work over (a processing job resumes from its last checkpoint)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

from daemon import __version__
from daemon.jobs.status import ACTIVE
from daemon.logs import event
from daemon.store.db import StateDB
from daemon.store.jobs import iso
from daemon.store.leases import HEARTBEAT_SECONDS, LEASE_SECONDS

log = logging.getLogger("ingestd.nodes")

FORGET_AFTER = 7 * 86400.0  # rows of nodes gone this long are deleted
_IN_ACTIVE = f"status IN ({', '.join(repr(status) for status in ACTIVE)})"


def node_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class NodeStore:
    """Reads and writes of the `nodes` table and of the claims a node holds."""

    def __init__(self, db: StateDB, clock: Any = time.time) -> None:
        self.db = db
        self.clock = clock

    def register(self, node: str, *, sftp: str = "", http: str = "") -> None:
        now = self.clock()
        host, _, pid = node.rpartition(":")
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO nodes (id, host, pid, version, sftp, http, started_at, heartbeat_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET version = excluded.version,"
                " sftp = excluded.sftp, http = excluded.http, started_at = excluded.started_at,"
                " heartbeat_at = excluded.heartbeat_at, stopped_at = NULL",
                (node, host, int(pid) if pid.isdigit() else 0, __version__, sftp, http, iso(now), now),
            )
            conn.execute("DELETE FROM nodes WHERE heartbeat_at < ?", (now - FORGET_AFTER,))

    def set_addresses(self, node: str, sftp: str, http: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE nodes SET sftp = ?, http = ? WHERE id = ?", (sftp, http, node))

    def beat(self, node: str) -> None:
        """Stamp the node's row and extend its claims (jobs, outbox rows) by LEASE_SECONDS."""
        now = self.clock()
        with self.db.transaction() as conn:
            conn.execute("UPDATE nodes SET heartbeat_at = ?, stopped_at = NULL WHERE id = ?", (now, node))
            if self.db.shared:
                until = now + LEASE_SECONDS
                conn.execute(f"UPDATE jobs SET lease_until = ? WHERE lease_node = ? AND {_IN_ACTIVE}", (until, node))
                conn.execute(
                    "UPDATE outbox SET lease_until = ? WHERE lease_node = ? AND sent_at IS NULL AND failed_at IS NULL",
                    (until, node),
                )
                conn.execute(
                    "UPDATE exports SET lease_until = ? WHERE lease_node = ? AND status = 'running'", (until, node)
                )

    def stopped(self, node: str) -> None:
        """A clean stop: the node's claims go back to the other nodes now, not when they lapse."""
        now = self.clock()
        with self.db.transaction() as conn:
            conn.execute("UPDATE nodes SET heartbeat_at = ?, stopped_at = ? WHERE id = ?", (now, iso(now), node))
            conn.execute("UPDATE jobs SET lease_node = NULL, lease_until = NULL WHERE lease_node = ?", (node,))
            conn.execute("UPDATE outbox SET lease_node = NULL, lease_until = NULL WHERE lease_node = ?", (node,))
            conn.execute("UPDATE exports SET lease_node = NULL, lease_until = NULL WHERE lease_node = ?", (node,))

    def others_up(self, node: str) -> list[str]:
        """The nodes other than `node` that are `up`: not stopped, and a heartbeat within a lease."""
        rows = self.db.query(
            "SELECT id FROM nodes WHERE id <> ? AND stopped_at IS NULL AND heartbeat_at >= ? ORDER BY id",
            (node, self.clock() - LEASE_SECONDS),
        )
        return [row["id"] for row in rows]

    def list(self) -> list[dict[str, Any]]:
        """Every node, newest first: its state (`up`, `stopped`, `lost`: no heartbeat within a lease) and the
        imports it runs. Without shared state the one node runs every processing import."""
        now = self.clock()
        rows = self.db.query("SELECT * FROM nodes ORDER BY started_at DESC, id")
        running: dict[str | None, list[dict[str, Any]]] = {}
        for job in self.db.query(
            "SELECT id, account, file_name, rows_total, lease_node FROM jobs WHERE status = 'processing' ORDER BY id"
        ):
            owner = job["lease_node"] if self.db.shared else None
            running.setdefault(owner, []).append(
                {
                    "id": job["id"],
                    "account": job["account"],
                    "file_name": job["file_name"],
                    "rows_done": job["rows_total"],
                }
            )
        nodes = []
        for row in rows:
            if row["stopped_at"] is not None:
                state = "stopped"
            elif now - row["heartbeat_at"] <= LEASE_SECONDS:
                state = "up"
            else:
                state = "lost"
            runs = running.get(row["id"] if self.db.shared else None, []) if state == "up" else []
            nodes.append(
                {
                    "id": row["id"],
                    "host": row["host"],
                    "pid": row["pid"],
                    "version": row["version"],
                    "state": state,
                    "sftp": row["sftp"],
                    "http": row["http"],
                    "started_at": row["started_at"],
                    "heartbeat_at": iso(row["heartbeat_at"]),
                    "heartbeat_age_s": round(max(0.0, now - row["heartbeat_at"]), 1),
                    "stopped_at": row["stopped_at"],
                    "running": runs,
                }
            )
        return nodes


class Heartbeat:
    """The service component that registers this node, beats, and gives its claims back at a clean stop.
    Started first and stopped last, so every claim the other components make is kept alive."""

    def __init__(self, db: StateDB, node: str, *, sftp: str = "", http: str = "") -> None:
        self.store = NodeStore(db)
        self.node = node
        self.sftp, self.http = sftp, http
        self._task: asyncio.Task[None] | None = None
        self._failing: str | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self.store.register, self.node, sftp=self.sftp, http=self.http)
        self._task = asyncio.create_task(self._beat_forever(), name="node-heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await asyncio.to_thread(self.store.stopped, self.node)
        except Exception as exc:  # the state is gone: the claims lapse by themselves
            event(log, "node.stop_unrecorded", logging.WARNING, node=self.node, error=str(exc))

    async def announce(self, sftp: str, http: str) -> None:
        """The addresses the node's servers listen on, once they are bound (a port 0 became a real one)."""
        self.sftp, self.http = sftp, http
        await asyncio.to_thread(self.store.set_addresses, self.node, sftp, http)

    def banner(self) -> list[str]:
        return [f"  node   {self.node}, state {self.store.db.describe()}"]

    def health(self) -> str | None:
        return f"node: heartbeat failing ({self._failing})" if self._failing else None

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await asyncio.to_thread(self.store.beat, self.node)
            except Exception as exc:
                if self._failing is None:
                    event(log, "node.heartbeat_failed", logging.ERROR, node=self.node, error=str(exc))
                self._failing = str(exc)
                continue
            if self._failing is not None:
                event(log, "node.heartbeat_restored", node=self.node)
            self._failing = None

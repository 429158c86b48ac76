"""A node's start makes the outbox due again only when no other node has been delivering it (shared state)."""

from __future__ import annotations

import time
from collections.abc import Callable

from daemon.store.db import StateDB
from daemon.store.leases import LEASE_SECONDS
from daemon.store.nodes import NodeStore
from notifier.outbox import Outbox

Engine = Callable[[], StateDB]


def _node(state_engine: Engine, name: str) -> StateDB:
    db = state_engine()
    db.node = name
    return db


def _backing_off(outbox: Outbox) -> tuple[int, float]:
    """A row of a failing relay, tried three times, its next attempt minutes away."""
    with outbox.db.transaction() as conn:
        row_id = Outbox.add(conn, "email", 7, "succeeded", "a@x.example", b"message", "<1@x>")
    head = outbox.head("email:x.example")
    assert head is not None and head.id == row_id
    for _ in range(3):
        attempts, delay = outbox.mark_retry(row_id, "421 try later", cap=600)
    assert attempts == 3 and delay == 4
    with outbox.db.transaction() as conn:
        conn.execute("UPDATE outbox SET next_attempt = ? WHERE id = ?", (time.time() + 300, row_id))
    return row_id, _next_attempt(outbox, row_id)


def _next_attempt(outbox: Outbox, row_id: int) -> float:
    return float(outbox.db.query("SELECT next_attempt FROM outbox WHERE id = ?", (row_id,))[0][0])


def test_a_restart_keeps_the_back_off_while_another_node_is_up(state_engine: Engine) -> None:
    db_a, db_b = _node(state_engine, "a:1"), _node(state_engine, "b:2")
    nodes_a, nodes_b = NodeStore(db_a), NodeStore(db_b)
    nodes_b.register("b:2")  # b has been up, trying the row on its back-off
    row_id, planned = _backing_off(Outbox(db_b))
    nodes_a.register("a:1")  # a (re)starts while b is up
    restarted = Outbox(db_a)
    if not db_a.shared:
        # One node on SQLite: its restart is the only news about the relay, every pending row is due at once.
        assert restarted.retry_now() == 1 and _next_attempt(restarted, row_id) == 0
        return
    assert restarted.retry_now() == 0
    assert _next_attempt(restarted, row_id) == planned  # b's schedule holds: no burst against the relay
    # b stopped cleanly: a is the only node up, so its start makes the row due at once.
    nodes_b.stopped("b:2")
    assert restarted.retry_now() == 1 and _next_attempt(restarted, row_id) == 0


def test_a_restart_after_the_other_node_was_lost_makes_the_outbox_due(state_engine: Engine) -> None:
    db_a, db_b = _node(state_engine, "a:1"), _node(state_engine, "b:2")
    nodes_b = NodeStore(db_b)
    nodes_b.clock = lambda: time.time() - LEASE_SECONDS - 1  # b's last heartbeat is older than a lease: lost
    nodes_b.register("b:2")
    row_id, _ = _backing_off(Outbox(db_b))
    NodeStore(db_a).register("a:1")
    assert [node["state"] for node in NodeStore(db_a).list() if node["id"] == "b:2"] == ["lost"]
    restarted = Outbox(db_a)
    assert restarted.retry_now() == 1 and _next_attempt(restarted, row_id) == 0

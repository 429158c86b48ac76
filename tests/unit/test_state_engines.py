"""The stores on both state engines (SQLite in data_dir, a real PostgreSQL): what one writes, another reads."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable

import pytest

from daemon.exports.model import ExportSpec
from daemon.exports.store import ExportStore
from daemon.jobs.files import pause_reason
from daemon.store.accounts import AccountStore
from daemon.store.bans import Ban, BanStore
from daemon.store.db import StateDB
from daemon.store.jobs import LEASE_SECONDS, JobStore, LeaseLost
from daemon.store.nodes import NodeStore
from notifier import ratelimit
from notifier.outbox import Outbox, record_notified
from tests.fixtures.jobs import add_job
from tests.fixtures.postgres import Postgres

Engine = Callable[[], StateDB]


def test_migrating_again_keeps_the_data(state_engine: Engine) -> None:
    first = state_engine()
    job_id = add_job(JobStore(first), "acme", "a.manifest.json")
    second = state_engine()  # another node starting on the same state: nothing to migrate, nothing lost
    assert JobStore(second).get_import(job_id)["manifest_name"] == "a.manifest.json"  # type: ignore[index]


def test_large_counts_and_epoch_seconds_keep_their_precision(state_engine: Engine) -> None:
    # A 5 GB file's byte counts exceed 32 bits; waiting_since is epoch seconds with a fraction.
    store = JobStore(state_engine())
    job_id = add_job(store, "acme", "big.manifest.json")
    since = 1_767_225_600.123456
    store.mark_waiting(job_id, since, "big.csv", "events")
    assert store.heads()[0].waiting_since == since
    assert store.mark_processing(job_id, "big.csv", "events", 6_000_000_000, {"rows_done": 0})
    checkpoint = {"rows_done": 3_000_000_000, "rows_ingested": 2_999_999_999, "rows_failed": 1}
    assert store.save_checkpoint(job_id, checkpoint, 5_500_000_000) is None
    record = store.get_import(job_id)
    assert record is not None
    assert (record["bytes_total"], record["bytes_done"], record["rows_total"]) == (
        6_000_000_000,
        5_500_000_000,
        3_000_000_000,
    )
    assert store.checkpoint(job_id) == checkpoint


def test_a_second_enqueue_of_a_waiting_manifest_creates_nothing(state_engine: Engine) -> None:
    one, two = JobStore(state_engine()), JobStore(state_engine())
    first = one.enqueue("acme", "a.manifest.json", lambda: True)
    assert first is not None
    assert two.enqueue("acme", "a.manifest.json", lambda: True) is None
    assert [job.id for job in two.heads()] == [first]


def test_retry_queues_a_new_job_last(state_engine: Engine) -> None:
    store = JobStore(state_engine())
    job_id = add_job(store, "acme", "a.manifest.json")
    later = add_job(store, "acme", "b.manifest.json")
    assert store.finish(job_id, "failed", error="bad")
    moved: list[int] = []
    new_id = store.retry(job_id, moved.append)
    assert new_id is not None and new_id > later and moved == [new_id]
    assert store.get_import(new_id)["details"]["retry_of"] == job_id  # type: ignore[index]


def test_accounts_contacts_are_shared(state_engine: Engine) -> None:
    writer, reader = AccountStore(state_engine()), AccountStore(state_engine())
    writer.set("acme", emails=["ops@acme.example"], allowed_domains=["acme.example"])
    writer.set("acme", emails=["ops@acme.example", "it@acme.example"])  # the account exists: kept, updated
    assert reader.contacts("acme") == (["ops@acme.example", "it@acme.example"], ["acme.example"])
    assert [row["account"] for row in reader.list()] == ["acme"]


def test_a_ban_written_by_one_is_seen_by_another_and_lifted(state_engine: Engine) -> None:
    now = time.time()
    writer, reader = BanStore(state_engine()), BanStore(state_engine())
    writer.add(Ban("192.0.2.7", "acme", "5 failed logins", 5, now + 600))
    writer.add(Ban("192.0.2.7", "acme", "6 failed logins", 6, now + 900))  # replaces the first
    found = reader.banned("192.0.2.7", "acme")
    assert found is not None and (found.reason, found.failures) == ("6 failed logins", 6)
    assert reader.banned("192.0.2.7", "other") is None
    assert reader.lift("192.0.2.7") == 1
    assert writer.banned("192.0.2.7", "acme") is None


def test_outbox_rows_keep_their_payload_and_order(state_engine: Engine) -> None:
    db = state_engine()
    store = JobStore(db)
    job_id = add_job(store, "acme", "a.manifest.json")
    outbox = Outbox(db)
    payload = b"From: ingestd\r\n\r\n\x00\xff binary-safe"
    with db.transaction() as conn:
        first = Outbox.add(conn, "email", job_id, "failed", "a@x.example", payload, "<1@x>", account="acme")
        Outbox.add(conn, "email", job_id, "failed", "b@x.example", b"2", "<2@x>", account="acme")
        record_notified(conn, job_id, {"event": "failed", "to": ["a@x.example"]})
    heads = Outbox(state_engine()).heads()
    assert [item.id for item in heads] == [first]
    assert heads[0].payload == payload and heads[0].channel == "email:x.example"
    attempts, delay = outbox.mark_retry(first, "421 try later", cap=60)
    assert (attempts, delay) == (1, 1.0)
    outbox.mark_failed(first, "550 no such user", {"a@x.example": "550 no such user"})
    record = store.get_import(job_id)
    assert record is not None
    assert [entry["to"] for entry in record["details"]["undelivered"]] == ["a@x.example"]
    assert [entry["event"] for entry in record["details"]["notified"]] == ["failed"]
    assert outbox.depth() == 1


def test_failure_budget_counts_across_connections(state_engine: Engine) -> None:
    one, two = state_engine(), state_engine()
    now = time.time()
    with one.transaction() as conn:
        assert ratelimit.take(conn, "acme", 1, 1, {"partners": ["a@x.example"]}, now)
    with two.transaction() as conn:
        assert not ratelimit.take(conn, "acme", 2, 1, {"partners": ["a@x.example"]}, now)
    assert ratelimit.due(one, now + ratelimit.WINDOW) == ["acme"]
    with one.transaction() as conn:
        rows = ratelimit.claim(conn, "acme", now + ratelimit.WINDOW)
    assert [row["job_id"] for row in rows] == [2]
    assert json.loads(rows[0]["recipients"]) == {"partners": ["a@x.example"]}


def test_exports_state(state_engine: Engine) -> None:
    store = ExportStore(state_engine())
    export_id = store.create(ExportSpec(account="acme", type="events"), {"seq": 0})
    export = store.get(export_id)
    assert export is not None and export["status"] == "pending"
    run = store.open_run(export, {"seq": 10})
    assert run is not None and run["export_id"] == export_id
    assert [row["id"] for row in store.runs(export_id)] == [run["id"]]


@pytest.mark.parametrize("text", ["100%", "it's ?", "--"])
def test_text_with_sql_punctuation_is_stored_as_given(state_engine: Engine, text: str) -> None:
    store = JobStore(state_engine())
    job_id = add_job(store, "acme", f"{text}.manifest.json")
    assert store.finish(job_id, "failed", error=text)
    assert store.get_import(job_id)["error"] == text  # type: ignore[index]


# -- leases: shared state (PostgreSQL) only; SQLite has one node and keeps its single-process path ----------------


def _node(state_engine: Engine, name: str) -> StateDB:
    db = state_engine()
    db.node = name
    return db


def test_a_head_is_claimed_by_one_node_at_a_time(state_engine: Engine) -> None:
    a, b = JobStore(_node(state_engine, "a:1")), JobStore(_node(state_engine, "b:2"))
    first = add_job(a, "acme", "1.manifest.json")
    second = add_job(a, "acme", "2.manifest.json")
    other = add_job(a, "beta", "1.manifest.json")
    if not a.db.shared:
        assert a.claim([first, other]) == {first, other} == b.claim([first, other])
        return
    assert a.claim([first, second]) == {first}  # only an account's oldest unfinished job is ever claimed
    assert b.claim([first, other]) == {other}  # a's claim holds; the other account is free
    assert a.finish(first, "failed", error="x")
    assert b.claim([second]) == {second}  # the next head of acme, once the first is settled
    assert not a.mark_processing(second, "2.csv", "event", 10, {"rows_done": 0})  # b holds it


def test_a_lapsed_claim_is_taken_over_and_the_old_holder_stops(state_engine: Engine) -> None:
    a, b = JobStore(_node(state_engine, "a:1")), JobStore(_node(state_engine, "b:2"))
    job_id = add_job(a, "acme", "1.manifest.json")
    if not a.db.shared:
        return
    assert a.claim([job_id]) == {job_id}
    assert a.mark_processing(job_id, "1.csv", "event", 10, {"rows_done": 0})
    checkpoint = {"rows_done": 5, "rows_ingested": 5, "rows_failed": 0}
    a.save_checkpoint(job_id, checkpoint, 5)
    assert b.claim([job_id]) == set()
    later = time.time() + LEASE_SECONDS + 1  # a died: no heartbeat renewed its claim
    assert b.claim([job_id], now=later) == {job_id}
    assert b.checkpoint(job_id) == checkpoint  # b resumes from a's last checkpoint
    with pytest.raises(LeaseLost):
        a.save_checkpoint(job_id, {**checkpoint, "rows_done": 9}, 9)
    assert not a.finish(job_id, "succeeded")  # a can no longer settle it: b does
    assert b.finish(job_id, "succeeded")


def test_heartbeats_keep_claims_and_a_clean_stop_gives_them_back(state_engine: Engine) -> None:
    db_a, db_b = _node(state_engine, "a:1"), _node(state_engine, "b:2")
    a, b = JobStore(db_a), JobStore(db_b)
    nodes_a = NodeStore(db_a)
    nodes_a.register("a:1", sftp="127.0.0.1:2222")
    job_id = add_job(a, "acme", "1.manifest.json")
    assert a.claim([job_id]) == {job_id}
    assert a.mark_processing(job_id, "1.csv", "event", 10, {"rows_done": 0})
    listed = NodeStore(db_b).list()
    assert [(node["id"], node["state"], node["sftp"]) for node in listed] == [("a:1", "up", "127.0.0.1:2222")]
    assert [job["id"] for job in listed[0]["running"]] == [job_id]
    if db_a.shared:
        nodes_a.clock = lambda: time.time() + LEASE_SECONDS - 1
        nodes_a.beat("a:1")  # renewed: still a's a lease later
        assert b.claim([job_id], now=time.time() + LEASE_SECONDS + 0.5) == set()
    nodes_a.clock = time.time
    nodes_a.stopped("a:1")
    assert NodeStore(db_b).list()[0]["state"] == "stopped"
    assert b.claim([job_id]) == {job_id}  # given back at once, no waiting for the lease


def test_an_outbox_row_is_delivered_by_one_node(state_engine: Engine) -> None:
    db_a, db_b = _node(state_engine, "a:1"), _node(state_engine, "b:2")
    with db_a.transaction() as conn:
        row_id = Outbox.add(conn, "email", None, "succeeded", "a@x.example", b"1", "<1@x>")
        Outbox.add(conn, "email", None, "succeeded", "b@x.example", b"2", "<2@x>")
    a, b = Outbox(db_a), Outbox(db_b)
    item = a.head("email:x.example")
    assert item is not None and item.id == row_id
    if db_a.shared:
        assert b.head("email:x.example") is None  # a is sending it; never the next row out of order
        assert b.heads() == []
        a.mark_retry(row_id, "421 later", cap=1)  # the attempt is over: any node may make the next
        again = b.head("email:x.example")
        assert again is not None and again.id == row_id
    else:
        assert b.head("email:x.example") is not None


def test_a_lost_state_connection_pauses_the_job_and_is_replaced(postgres_url: str, postgres_server: Postgres) -> None:
    from daemon.store.pg import PgStateDB

    db = PgStateDB(postgres_url)
    store = JobStore(db)
    job_id = add_job(store, "acme", "1.manifest.json")
    name = postgres_url.rpartition("/")[2]
    postgres_server.admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    with pytest.raises(sqlite3.Error) as caught:  # what every caller already catches
        store.heads()
    assert (pause_reason(caught.value) or "").startswith("paused: the state database does not answer")
    assert [job.id for job in store.heads()] == [job_id]  # the next use connects again
    db.close()


def test_an_export_run_is_resumed_only_by_its_node_or_after_its_claim_lapsed(state_engine: Engine) -> None:
    a, b = ExportStore(_node(state_engine, "a:1")), ExportStore(_node(state_engine, "b:2"))
    export_id = a.create(ExportSpec(account="acme", type="events"), {"seq": 0})
    export = a.get(export_id)
    assert export is not None
    run = a.open_run(export, {"seq": 10})
    assert run is not None and a.holds(export_id)
    running = b.get(export_id)
    assert running is not None and running["status"] == "running"
    if not a.db.shared:
        # One node: a run left running is taken up again at its next start, by itself.
        assert [row["id"] for row in b.due(interrupted=True)] == [export_id]
        return
    # a is alive and runs it: b neither sees it as due nor can take it, at start or later.
    assert b.due(interrupted=True) == [] and b.open_run(running, {"seq": 10}) is None
    later = time.time() + LEASE_SECONDS + 1  # a died: no heartbeat renewed its claim
    assert [row["id"] for row in b.due(later)] == [export_id]
    taken = b.open_run(running, {"seq": 10}, now=later)
    assert taken is not None and taken["id"] == run["id"] and taken["attempts"] == 2  # the same window, again
    assert b.holds(export_id) and not a.holds(export_id)  # a, if it wakes up, stops at its next batch
    b.finish_run(running, taken, "done")
    finished = a.get(export_id)
    assert finished is not None and finished["status"] == "done" and finished["lease_node"] is None

"""JobStore: arrival order, one pending job per manifest, checkpoints and the import dict's shape."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from daemon.store.db import StateDB
from daemon.store.jobs import JobStore
from tests.fixtures.jobs import add_job

IMPORT_KEYS = {
    "id",
    "account",
    "file_name",
    "manifest_name",
    "type",
    "status",
    "rows_total",
    "rows_ingested",
    "rows_failed",
    "created_at",
    "started_at",
    "finished_at",
    "error",
    "details",
}


@pytest.fixture
def store(state_engine: Callable[[], StateDB]) -> JobStore:
    return JobStore(state_engine())


def test_ids_follow_arrival_and_lists_are_newest_first(store: JobStore) -> None:
    first = add_job(store, "acme", "a.manifest")
    second = add_job(store, "acme", "b.manifest")
    other = add_job(store, "globex", "a.manifest")
    assert first < second < other
    assert [job["id"] for job in store.list_imports()] == [other, second, first]
    assert [job["id"] for job in store.list_imports(account="acme")] == [second, first]
    assert [job["id"] for job in store.list_imports(limit=1, offset=1)] == [second]


def test_import_dict_has_the_documented_keys(store: JobStore) -> None:
    job = store.get_import(add_job(store, "acme", "a.manifest"))
    assert job is not None
    assert set(job) >= IMPORT_KEYS
    assert job["status"] == "queued"
    assert job["created_at"].endswith("Z") and job["started_at"] is None
    assert {"problems", "reasons", "paused", "duration_ms"} <= set(job["details"])
    assert store.get_import(999) is None


def test_a_manifest_waiting_in_the_drop_folder_gets_one_job(store: JobStore) -> None:
    first = store.enqueue("acme", "a.manifest", lambda: True)
    assert first is not None
    # Repeated watch events and rescans for the same file create nothing more.
    assert store.enqueue("acme", "a.manifest", lambda: True) is None
    # Once picked up, an upload under the same name is a new arrival.
    store.mark_processing(first, "a.csv", "event", 10, {})
    assert store.enqueue("acme", "a.manifest", lambda: True) is not None
    # A late event for a file already moved away creates nothing.
    assert store.enqueue("acme", "gone.manifest", lambda: False) is None


def test_heads_are_each_accounts_oldest_unfinished_job(store: JobStore) -> None:
    a1 = add_job(store, "acme", "1.manifest")
    add_job(store, "acme", "2.manifest")
    g1 = add_job(store, "globex", "1.manifest")
    assert [job.id for job in store.heads()] == [a1, g1]
    store.finish(a1, "succeeded")
    assert [job.manifest_name for job in store.heads() if job.account == "acme"] == ["2.manifest"]


def test_manifest_name_is_used_only_once_picked_up(store: JobStore) -> None:
    first = add_job(store, "acme", "a.manifest")
    assert not store.name_used("acme", "a.manifest", first + 1)
    store.mark_processing(first, "a.csv", "event", 10, {})
    second = add_job(store, "acme", "a.manifest")
    assert store.name_used("acme", "a.manifest", second)
    assert not store.name_used("acme", "a.manifest", first)
    assert not store.name_used("globex", "a.manifest", second)


def test_checkpoint_and_final_status_are_visible_in_the_import(store: JobStore) -> None:
    job_id = add_job(store, "acme", "a.manifest")
    store.mark_processing(job_id, "a.csv", "profile", 100, {"rows_done": 0})
    store.save_checkpoint(job_id, {"rows_done": 7, "rows_ingested": 5, "rows_failed": 2, "error_bytes": 40}, 60)
    store.set_paused(job_id, "elasticsearch unreachable")
    job = store.get_import(job_id)
    assert job is not None
    assert (job["rows_total"], job["rows_ingested"], job["rows_failed"]) == (7, 5, 2)
    assert job["details"]["paused"] == "elasticsearch unreachable"
    assert store.checkpoint(job_id)["error_bytes"] == 40
    store.finish(job_id, "completed_with_errors", reasons=[["Phone number is not valid", 2]], duration_ms=12)
    job = store.get_import(job_id)
    assert job is not None
    assert job["status"] == "completed_with_errors" and job["finished_at"] is not None
    assert job["details"]["paused"] is None
    assert job["details"]["reasons"] == [["Phone number is not valid", 2]]
    assert [row["id"] for row in store.list_imports(status="completed_with_errors")] == [job_id]


def test_finish_refuses_a_non_final_status(store: JobStore) -> None:
    with pytest.raises(ValueError, match="not a final status"):
        store.finish(add_job(store, "acme", "a.manifest"), "processing")

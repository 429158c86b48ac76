"""The job manager in-process on a real SQLite sink: order, waiting for data, failures, re-imports, retention."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.config import Config
from daemon.jobs.manager import JobManager
from daemon.sinks import open_sink
from daemon.store.db import StateDB
from manifests.model import Manifest

ACCOUNT = "acme"


class Harness:
    """A JobManager with its state DB and sink; `run()` drives it until idle."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.db = StateDB(config.state_db)
        self.sink = open_sink(config)
        self.manager = JobManager(config, self.db, self.sink, _notifier(config, self.db))
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.sink.start())

    def run(self) -> None:
        self.loop.run_until_complete(self.manager.run_until_idle(timeout=60))

    def call(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def drop(self, name: str, text: str, account: str = ACCOUNT) -> Path:
        folder = self.config.drop_root / account
        folder.mkdir(parents=True, exist_ok=True)
        # Like an upload: written under a hidden name, then renamed.
        temp = folder / f".ingestd-upload-x.{name}.part"
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, folder / name)
        return folder / name

    def jobs(self) -> list[dict[str, Any]]:
        return list(reversed(self.manager.store.list_imports(limit=1000)))

    def close(self) -> None:
        self.loop.run_until_complete(self.sink.stop())
        self.loop.close()
        self.db.close()


def _notifier(config: Config, db: StateDB) -> Any:
    try:
        from notifier.service import Notifier
    except ImportError:
        return None
    return Notifier(config, db)


@pytest.fixture
def harness(config: Config) -> Iterator[Harness]:
    h = Harness(config)
    yield h
    h.close()


def manifest(file_name: str, kind: str = "profile", **extra: Any) -> str:
    return json.dumps({"fileName": file_name, "type": kind, "clientEmail": "partner@example.com", **extra})


def test_files_of_one_account_apply_in_upload_order(harness: Harness) -> None:
    for n, name in enumerate(["first", "second", "third"]):
        harness.drop(f"p{n}.csv", f"identity,Name\njohn,{name}\n")
        harness.drop(f"p{n}.manifest", manifest(f"p{n}.csv"))
        time.sleep(0.01)  # distinct mtimes: the rescan orders by arrival
    harness.run()
    jobs = harness.jobs()
    assert [job["status"] for job in jobs] == ["succeeded"] * 3
    assert [job["manifest_name"] for job in jobs] == ["p0.manifest", "p1.manifest", "p2.manifest"]
    profile = harness.call(harness.sink.get_profile(ACCOUNT, "john"))
    assert profile["properties"]["Name"] == "third"
    # Picked-up files leave the partner's folder; they live in the job's own folder.
    assert sorted(p.name for p in (harness.config.drop_root / ACCOUNT).iterdir()) == []
    assert (harness.config.jobs_root / str(jobs[0]["id"]) / "p0.csv").exists()


def test_a_manifest_waits_for_its_csv(harness: Harness) -> None:
    harness.drop("late.manifest", manifest("late.csv"))
    harness.run()
    [job] = harness.jobs()
    assert job["status"] == "waiting_for_data"
    harness.drop("late.csv", "identity,Name\njane,Jane\n")
    harness.run()
    [job] = harness.jobs()
    assert job["status"] == "succeeded" and job["rows_ingested"] == 1


def test_a_csv_that_never_comes_fails_the_import(config: Config) -> None:
    config.jobs.data_file_grace = 0.3
    harness = Harness(config)
    try:
        harness.drop("lost.manifest", manifest("lost.csv"))
        harness.drop("next.csv", "identity,Name\njane,Jane\n")
        harness.drop("next.manifest", manifest("next.csv"))
        harness.run()
        assert [job["status"] for job in harness.jobs()] == ["waiting_for_data", "queued"]
        deadline = time.monotonic() + 30
        while harness.jobs()[0]["status"] == "waiting_for_data" and time.monotonic() < deadline:
            time.sleep(0.1)
            harness.run()
        lost, nxt = harness.jobs()
        assert lost["status"] == "failed" and lost["error"] == "No data file found"
        # The account's next file goes on once the waiting one is settled.
        assert nxt["status"] == "succeeded"
    finally:
        harness.close()


def test_a_manifest_name_can_be_used_only_once(harness: Harness) -> None:
    harness.drop("a.csv", "identity,Name\njohn,John\n")
    harness.drop("a.manifest", manifest("a.csv"))
    harness.run()
    harness.drop("a.csv", "identity,Name\njohn,Johnny\n")
    harness.drop("a.manifest", manifest("a.csv"))
    harness.run()
    first, second = harness.jobs()
    assert first["status"] == "succeeded"
    assert second["status"] == "failed" and second["error"] == "Every manifest file must have a unique name"
    assert harness.call(harness.sink.get_profile(ACCOUNT, "john"))["properties"]["Name"] == "John"


def test_an_unreadable_manifest_fails_with_its_problems(harness: Harness) -> None:
    harness.drop("bad.manifest", '{"filename": "x.csv", "type": "event", "clientEmail": "partner@example.com"}')
    harness.run()
    [job] = harness.jobs()
    assert job["status"] == "failed" and job["error"] == "Incorrect details in manifest file"
    assert job["details"]["problems"]
    # Consumed: a restart's rescan does not queue it again.
    assert not (harness.config.drop_root / ACCOUNT / "bad.manifest").exists()
    harness.run()
    assert len(harness.jobs()) == 1


def test_bad_rows_go_to_the_partners_error_csv(harness: Harness) -> None:
    harness.drop("p.csv", "identity,Name,Phone\njohn,John,+14155550100\n,Nobody,+14155550101\njane,Jane,12\n")
    harness.drop("p.manifest", manifest("p.csv"))
    harness.run()
    [job] = harness.jobs()
    assert job["status"] == "completed_with_errors"
    assert (job["rows_total"], job["rows_ingested"], job["rows_failed"]) == (3, 1, 2)
    error_csv = harness.config.drop_root / ACCOUNT / job["details"]["error_csv"]
    lines = error_csv.read_text(encoding="utf-8-sig").splitlines()
    assert lines[0] == "identity,Name,Phone,Failure Description"
    assert lines[1].startswith(",Nobody,'+14155550101,") and lines[2].startswith("jane,Jane,12,")
    assert sum(count for _, count in job["details"]["reasons"]) >= 2


def test_a_file_where_every_row_fails_fails(harness: Harness) -> None:
    harness.drop("p.csv", "identity,Name\n,A\n,B\n")
    harness.drop("p.manifest", manifest("p.csv"))
    harness.run()
    [job] = harness.jobs()
    assert job["status"] == "failed" and job["error"] == "All rows failed" and job["rows_failed"] == 2


def test_reimporting_events_adds_no_duplicates(harness: Harness) -> None:
    rows = "identity,evtName,ts,Price\n" + "".join(f"john,Bought,{1_600_000_000 + i},{i}\n" for i in range(5))
    for name in ("e1", "e2"):
        harness.drop(f"{name}.csv", rows)
        harness.drop(f"{name}.manifest", manifest(f"{name}.csv", "event"))
        harness.run()
    assert [job["rows_ingested"] for job in harness.jobs()] == [5, 5]
    assert len(harness.call(harness.sink.list_events(ACCOUNT, "john"))) == 5


def test_finished_job_folders_are_removed_after_the_retention_period(harness: Harness) -> None:
    harness.drop("p.csv", "identity,Name\njohn,John\n")
    harness.drop("p.manifest", manifest("p.csv"))
    harness.run()
    [job] = harness.jobs()
    folder = harness.config.jobs_root / str(job["id"])
    assert folder.exists()
    assert harness.manager.remove_expired() == []
    harness.db.query("UPDATE jobs SET finished_at = '2000-01-01T00:00:00Z'")
    assert harness.manager.remove_expired() == [job["id"]]
    assert not folder.exists()


def notifications(harness: Harness, job_id: int) -> list[tuple[str, str]]:
    """(event, recipients) of the emails queued for a job, in order."""
    rows = harness.db.query(
        "SELECT event, target FROM outbox WHERE job_id = ? AND kind = 'email' ORDER BY id", (job_id,)
    )
    return [(row["event"], row["target"]) for row in rows]


def test_partner_and_ops_are_told_at_pickup_progress_and_the_end(config: Config) -> None:
    config.notify.progress_interval = 0.0  # every batch is "a long time" here
    config.notify.ops_emails = ["ops@example.com"]
    config.jobs.batch_rows = config.jobs.commit_rows = 100
    harness = Harness(config)
    try:
        harness.drop("p.csv", "identity,Name\n" + "".join(f"u{i},N{i}\n" for i in range(250)))
        harness.drop("p.manifest", manifest("p.csv"))
        harness.drop("broken.manifest", "{not json")
        harness.run()
        good, broken = harness.jobs()
        sent = notifications(harness, good["id"])
        # Ops get their own copy of each email (its own outbox row): partners never see their address.
        for address in ("partner@example.com", "ops@example.com"):
            kinds = [kind for kind, to in sent if to == address]
            assert kinds == ["picked_up", "progress", "progress", "progress", "succeeded"], address
        assert [kind for kind, _ in notifications(harness, broken["id"])] == ["failed"]
        assert "ops@example.com" in notifications(harness, broken["id"])[0][1]
    finally:
        harness.close()


def test_an_unreadable_csv_fails_with_the_files_problem(harness: Harness) -> None:
    harness.drop("empty.csv", "")
    harness.drop("empty.manifest", manifest("empty.csv"))
    folder = harness.config.drop_root / ACCOUNT
    (folder / "latin.csv").write_bytes("identity,Name\njos\xe9,Jos\xe9\n".encode("latin-1"))
    harness.drop("latin.manifest", manifest("latin.csv"))
    harness.run()
    empty, latin = harness.jobs()
    for job in (empty, latin):
        assert job["status"] == "failed"
        assert job["error"].startswith("File couldn't be read"), job["error"]
        assert job["details"]["problems"] == [job["error"]]


def test_a_manifest_waiting_for_its_csv_is_parsed_once_per_version(harness: Harness) -> None:
    harness.drop("late.manifest", manifest("late.csv"))
    harness.run()
    [job] = harness.jobs()
    first = harness.manager.queue._parsed[job["id"]]
    harness.run()
    assert harness.manager.queue._parsed[job["id"]] is first  # the same parse: the file did not change
    harness.drop("late.manifest", manifest("late.csv", columns={"Name": {"ctName": "name"}}))
    harness.run()
    again = harness.manager.queue._parsed[job["id"]]
    assert again is not first and isinstance(again[1], Manifest) and again[1].columns["Name"].ct_name == "name"
    harness.drop("late.csv", "identity,Name\njane,Jane\n")
    harness.run()
    [job] = harness.jobs()
    assert job["status"] == "succeeded"
    assert job["id"] not in harness.manager.queue._parsed  # settled jobs are forgotten

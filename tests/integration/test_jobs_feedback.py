"""Cancel, retry, dry runs, duplicates, the timeline and the partner's report, on the job manager in-process."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from daemon.cli import main
from daemon.config import Config
from daemon.jobs.status import TIMELINE_EVENTS
from tests.integration.test_jobs import ACCOUNT, Harness, manifest, notifications


@pytest.fixture
def harness(config: Config, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    # The CLI run in-process below finds the same data directory as the harness.
    monkeypatch.setenv("INGESTD_DATA_DIR", str(config.data_dir))
    h = Harness(config)
    yield h
    h.close()


def cli(*args: str) -> int:
    return main(list(args))


def timeline(job: dict[str, Any]) -> list[str]:
    entries = job["details"]["timeline"]
    for entry in entries:
        assert set(entry) == {"at", "event", "detail"} and entry["event"] in TIMELINE_EVENTS
        assert time.strptime(entry["at"], "%Y-%m-%dT%H:%M:%SZ")
        assert entry["detail"] is None or isinstance(entry["detail"], str)
    return [entry["event"] for entry in entries]


def test_removing_a_waiting_manifest_cancels_it_and_the_next_job_runs(harness: Harness) -> None:
    harness.drop("late.manifest", manifest("late.csv"))
    harness.drop("next.csv", "identity,Name\njane,Jane\n")
    harness.drop("next.manifest", manifest("next.csv"))
    harness.run()
    assert [job["status"] for job in harness.jobs()] == ["waiting_for_data", "queued"]
    (harness.config.drop_root / ACCOUNT / "late.manifest").unlink()
    harness.run()
    late, nxt = harness.jobs()
    assert late["status"] == "cancelled" and "removed from your folder" in late["error"]
    assert nxt["status"] == "succeeded"
    assert timeline(late) == ["queued", "waiting_for_data", "cancelled", "finished"]
    # The partner is told it was cancelled (the waiting manifest's address), not that a file was unreadable.
    assert notifications(harness, late["id"]) == [("cancelled", "partner@example.com")]
    assert "report" not in {key for key, value in late["details"].items() if value}


def test_imports_cancel_of_a_waiting_job_frees_the_account(harness: Harness, capsys: Any) -> None:
    harness.drop("late.manifest", manifest("late.csv"))
    harness.drop("next.csv", "identity,Name\njane,Jane\n")
    harness.drop("next.manifest", manifest("next.csv"))
    harness.run()
    late, _ = harness.jobs()
    assert cli("imports", "cancel", str(late["id"])) == 0
    assert f"import {late['id']} cancelled" in capsys.readouterr().out
    harness.run()
    late, nxt = harness.jobs()
    assert late["status"] == "cancelled" and nxt["status"] == "succeeded"
    # The manifest left the partner's folder, so no rescan queues it again; the email waits in the outbox.
    assert not (harness.config.drop_root / ACCOUNT / "late.manifest").exists()
    assert notifications(harness, late["id"]) == [("cancelled", "partner@example.com")]
    # A finished import cannot be cancelled (usage, 2); an unknown one does not exist (1).
    assert cli("imports", "cancel", str(late["id"])) == 2
    assert cli("imports", "cancel", "999") == 1
    assert cli("imports", "cancel", "x") == 2


def test_a_processing_job_asked_to_cancel_stops_at_its_batch_boundary(config: Config) -> None:
    config.jobs.batch_rows = config.jobs.commit_rows = 100
    harness = Harness(config)
    try:
        harness.drop("big.csv", "identity,Name\n" + "".join(f"u{i},N{i}\n" for i in range(1000)))
        harness.drop("big.manifest", manifest("big.csv"))
        asked: list[int] = []
        original = harness.manager.store.save_checkpoint

        def save_checkpoint(job_id: int, *args: Any, **kwargs: Any) -> str | None:
            if not asked:  # the operator's `imports cancel` lands during the first batch
                asked.append(job_id)
                assert harness.manager.store.request_cancel(job_id, "cancelled by an operator")
            return original(job_id, *args, **kwargs)

        harness.manager.store.save_checkpoint = save_checkpoint  # type: ignore[method-assign]
        harness.run()
        [job] = harness.jobs()
        assert job["status"] == "cancelled" and job["error"] == "cancelled by an operator"
        # What was written stays; the rest of the file was not read.
        assert job["rows_ingested"] == 100 and job["rows_total"] == 100
        assert timeline(job) == ["queued", "picked_up", "cancelled", "finished"]
        assert [kind for kind, _ in notifications(harness, job["id"])] == ["picked_up", "cancelled"]
    finally:
        harness.close()


def test_imports_retry_queues_the_same_files_again_last_in_order(harness: Harness, capsys: Any) -> None:
    harness.drop("p.csv", "identity,Name\njohn,John\n,Nobody\n")
    harness.drop("p.manifest", manifest("p.csv"))
    harness.run()
    [first] = harness.jobs()
    assert first["status"] == "completed_with_errors"
    assert cli("imports", "retry", str(first["id"]), "--json") == 0
    queued = json.loads(capsys.readouterr().out)
    assert queued["status"] == "queued" and queued["details"]["retry_of"] == first["id"]
    assert cli("imports", "retry", str(queued["id"])) == 2  # not finished yet
    harness.run()
    first, second = harness.jobs()
    assert second["status"] == "completed_with_errors" and second["rows_ingested"] == 1
    assert timeline(first)[-1] == "retried" and first["details"]["timeline"][-1]["detail"] == f"as job {second['id']}"
    assert timeline(second) == ["queued", "picked_up", "finished"]
    assert second["details"]["timeline"][0]["detail"] == f"retry of job {first['id']}"
    # The files moved to the new job: the first one's are no longer kept (1: not there).
    assert cli("imports", "retry", str(first["id"])) == 1


def test_a_dry_run_validates_and_reports_everything_and_stores_nothing(harness: Harness) -> None:
    harness.drop("p.csv", "identity,Name,Phone\njohn,John,+14155550100\njane,Jane,12\n")
    harness.drop("p.manifest", manifest("p.csv", dryRun=True))
    harness.run()
    [job] = harness.jobs()
    assert job["dry_run"] is True and job["status"] == "completed_with_errors"
    assert (job["rows_total"], job["rows_ingested"], job["rows_failed"]) == (2, 1, 1)
    assert harness.call(harness.sink.get_profile(ACCOUNT, "john")) is None
    error_csv = harness.config.drop_root / ACCOUNT / job["details"]["error_csv"]
    assert error_csv.read_text(encoding="utf-8").splitlines()[1].startswith("jane,Jane,12,")
    rows = harness.db.query("SELECT event, payload FROM outbox WHERE job_id = ? AND kind = 'email'", (job["id"],))
    final = [message_from_bytes(row["payload"], policy=policy.default) for row in rows]
    final = [message for message, row in zip(final, rows, strict=True) if row["event"] == "completed_with_errors"]
    assert final and all("dry run" in str(message["Subject"]).lower() for message in final)
    body = final[0].get_body(("plain",))
    assert body is not None and "nothing was stored" in body.get_content()


def test_a_reimport_says_how_many_rows_were_already_present(harness: Harness) -> None:
    rows = "identity,evtName,ts,Price\n" + "".join(f"john,Bought,{1_600_000_000 + i},{i}\n" for i in range(5))
    harness.drop("e1.csv", rows)
    harness.drop("e1.manifest", manifest("e1.csv", "event"))
    harness.run()
    harness.drop("e2.csv", rows + "john,Bought,1700000000,9\n")
    harness.drop("e2.manifest", manifest("e2.csv", "event"))
    harness.run()
    first, second = harness.jobs()
    assert (first["rows_duplicate"], second["rows_duplicate"]) == (0, 5)
    assert second["rows_ingested"] == 6 and second["status"] == "succeeded"


def test_a_failed_import_leaves_a_report_and_retention_removes_the_partners_copies(harness: Harness) -> None:
    harness.drop("bad.manifest", '{"filename": "x.csv", "type": "event", "clientEmail": "partner@example.com"}')
    harness.drop("p.csv", "identity,Name\njohn,John\n,Nobody\n")
    harness.drop("p.manifest", manifest("p.csv"))
    harness.run()
    bad, partly = harness.jobs()
    errors = harness.config.drop_root / ACCOUNT / "errors"
    report = (errors / Path(bad["details"]["report"]).name).read_text(encoding="utf-8")
    assert "Incorrect details in manifest file" in report and "unknown key 'filename'" in report
    assert "What to do:" in report
    text = (errors / Path(partly["details"]["report"]).name).read_text(encoding="utf-8")
    assert "imported with errors" in text and partly["details"]["error_csv"] in text
    assert sorted(path.name for path in errors.iterdir()) == sorted(
        [Path(bad["details"]["report"]).name, Path(partly["details"]["report"]).name, "2-p.errors.csv"]
    )
    harness.db.query("UPDATE jobs SET finished_at = '2000-01-01T00:00:00Z'")
    assert sorted(harness.manager.remove_expired()) == [bad["id"], partly["id"]]
    assert list(errors.iterdir()) == []


def test_a_second_stop_signal_interrupts_running_imports_at_once_and_they_resume(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    config.jobs.shutdown_grace = 600.0  # the first stop alone waits for the batch in hand
    rows = 2000
    harness = Harness(config)
    # Another writer holds the sink's lock: the import's first write waits for it (the batch in hand).
    lock = sqlite3.connect(config.sink_db, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        harness.drop("big.csv", "identity,Name\n" + "".join(f"u{i},N{i}\n" for i in range(rows)))
        harness.drop("big.manifest", manifest("big.csv"))
        manager = harness.manager

        async def stop_twice() -> bool:
            await manager.start()
            while not any(job["status"] == "processing" for job in harness.jobs()):
                await asyncio.sleep(0.01)
            await asyncio.sleep(1.0)  # its 2000 rows validate in milliseconds: it now waits for the lock
            stopping = asyncio.create_task(manager.stop())
            while manager._graceful is None and not stopping.done():
                await asyncio.sleep(0.001)
            waited = not stopping.done()  # the first signal: waiting for the batch in hand
            manager.force_stop()  # the second signal
            await stopping
            return waited

        with caplog.at_level(logging.INFO, logger="ingestd.jobs"):
            assert harness.call(stop_twice())
        [job] = harness.jobs()
        # Cancelled in the batch in hand (forced), not at the boundary after it: still processing, to resume.
        assert job["status"] == "processing" and job["rows_total"] == 0
        interrupted = [record for record in caplog.records if record.getMessage() == "job.interrupted"]
        assert [getattr(record, "fields", {}).get("forced") for record in interrupted] == [True]
    finally:
        lock.rollback()
        lock.close()
        harness.close()
    # The next start resumes it from its checkpoint: nothing lost, nothing twice.
    again = Harness(config)
    try:
        again.run()
        [job] = again.jobs()
        assert job["status"] == "succeeded" and job["rows_ingested"] == rows
        assert again.call(again.sink.get_profile(ACCOUNT, "u1999"))["properties"]["Name"] == "N1999"
    finally:
        again.close()

"""A daemon killed with SIGKILL mid-import resumes from its checkpoint: exact counts, nothing twice."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.daemon import Daemon
from tests.integration.test_e2e import ACCOUNT, Partner, finished

ROWS = 300_000
BAD_EVERY = 997  # every 997th row has no identity: the error CSV must come out exact too


def write_events(path: Path) -> int:
    """A ROWS-row events file with distinct events; returns how many rows are bad."""
    bad = 0
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("identity,event,when,Amount\n")
        for i in range(ROWS):
            if i % BAD_EVERY == BAD_EVERY - 1:
                bad += 1
                handle.write(f",Bought,{1_600_000_000 + i},{i}\n")
            else:
                handle.write(f"user{i % 5000},Bought,{1_600_000_000 + i},{i}\n")
    return bad


MANIFEST = {
    "fileName": "big.csv",
    "type": "event",
    "clientEmail": "partner@example.com",
    "columns": {
        "event": {"ctName": "evtName"},
        "when": {"ctName": "ts", "dataType": "LONG"},
        "Amount": {"dataType": "INTEGER"},
    },
}


def job_row(daemon: Daemon) -> tuple[str, int] | None:
    """(status, rows_ingested) straight from the state DB: fast enough to catch the job mid-way."""
    path = daemon.data_dir / "state.sqlite3"
    if not path.exists():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("SELECT status, rows_ingested FROM jobs ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()
    return (row[0], row[1]) if row else None


def sink_events(daemon: Daemon) -> tuple[int, int]:
    conn = sqlite3.connect(daemon.data_dir / "sink.sqlite3", timeout=30)
    try:
        total, distinct = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events WHERE account = ?", (ACCOUNT,)
        ).fetchone()
    finally:
        conn.close()
    return total, distinct


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_daemon_stopped_mid_import_resumes_and_ends_with_exact_counts(
    how: str, make_daemon: Callable[..., Daemon], keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    daemon = make_daemon(INGESTD_JOBS__BATCH_ROWS="5000")
    daemon.add_key(ACCOUNT, keypair[1])
    partner = Partner(daemon, keypair[0], tmp_path / "partner")
    bad = write_events(partner.folder / "big.csv")
    partner.put(partner.folder / "big.csv", partner.file("big.manifest", MANIFEST))

    deadline = time.monotonic() + 120
    while True:
        state = job_row(daemon)
        if state and state[0] == "processing" and state[1] > 0:
            break
        assert time.monotonic() < deadline, f"never saw the job processing: {state}\n{daemon.log()[-3000:]}"
        time.sleep(0.02)
    if how == "SIGKILL":
        daemon.kill()  # a crash: nothing gets to clean up
    else:
        assert daemon.stop() == 0  # a graceful stop: the running batch reaches its checkpoint, then exit
    status, ingested_at_stop = job_row(daemon) or ("?", 0)
    assert status == "processing" and 0 < ingested_at_stop < ROWS - bad, "the stop must land mid-import"

    daemon.start()
    [job] = finished(daemon, 1)
    assert job["status"] == "completed_with_errors"
    assert (job["rows_total"], job["rows_ingested"], job["rows_failed"]) == (ROWS, ROWS - bad, bad)
    assert sink_events(daemon) == (ROWS - bad, ROWS - bad)
    error_rows = (daemon.drop(ACCOUNT) / job["details"]["error_csv"]).read_text(encoding="utf-8").splitlines()
    assert len(error_rows) == bad + 1  # the header, then each bad row exactly once
    assert len(set(error_rows)) == bad + 1
    assert "job.resumed" in daemon.log()
    if how == "SIGTERM":
        assert "job.interrupted" in daemon.log()

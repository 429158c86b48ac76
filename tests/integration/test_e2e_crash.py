"""A daemon killed with SIGKILL mid-import resumes from its checkpoint: exact counts, nothing twice."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.csvgen import write_bought
from tests.fixtures.daemon import Daemon
from tests.integration.test_e2e import ACCOUNT, Partner, finished

ROWS = 300_000
BAD_EVERY = 997  # every 997th row has no identity: the error CSV must come out exact too


def write_events(path: Path) -> int:
    """A ROWS-row events file with distinct events; returns how many rows are bad."""
    return write_bought(path, ROWS, bad_every=BAD_EVERY)


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
            "SELECT COUNT(*), COUNT(DISTINCT printf('%d:%d', id_hi, id_lo)) FROM events WHERE account = ?", (ACCOUNT,)
        ).fetchone()
    finally:
        conn.close()
    return total, distinct


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGTERM, no grace"])
def test_a_daemon_stopped_mid_import_resumes_and_ends_with_exact_counts(
    how: str, make_daemon: Callable[..., Daemon], keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    # Batches ready at once are joined into writes of up to 15,000 rows, as the default config does at scale.
    # With no shutdown grace the import is stopped in its batch in hand, not at the end of it.
    grace = {"INGESTD_JOBS__SHUTDOWN_GRACE": "0s"} if how == "SIGTERM, no grace" else {}
    daemon = make_daemon(INGESTD_JOBS__BATCH_ROWS="5000", INGESTD_JOBS__COMMIT_ROWS="15000", **grace)
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
    error_rows = (daemon.drop(ACCOUNT) / job["details"]["error_csv"]).read_text(encoding="utf-8-sig").splitlines()
    assert len(error_rows) == bad + 1  # the header, then each bad row exactly once
    assert len(set(error_rows)) == bad + 1
    assert "job.resumed" in daemon.log()
    if how == "SIGTERM":
        assert re.search(r"job\.interrupted account=acme job_id=\d+$", daemon.log(), re.MULTILINE)
    elif how == "SIGTERM, no grace":
        # Cut in its batch in hand (forced), or, when the stop came just as a batch ended, at that checkpoint.
        assert re.search(r"job\.interrupted account=acme job_id=1( forced=True)?$", daemon.log(), re.MULTILINE)


PROFILE_ROWS = 60_000
IDENTITIES = 2_000


def write_profiles(path: Path) -> dict[str, dict[str, Any]]:
    """Rows that $set, $add and $remove; returns each profile as a clean run leaves it."""
    expected: dict[str, dict[str, Any]] = {}
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("identity,Name,Count,Tags,Tags.operation\n")
        for i in range(PROFILE_ROWS):
            identity = f"p{i % IDENTITIES}"
            op = "$remove" if i % 5 == 4 else "$add"
            tag = f"t{i % 3}"
            handle.write(f"{identity},N{i},{i},{tag},{op}\n")
            profile = expected.setdefault(identity, {"Tags": []})
            profile["Name"], profile["Count"] = f"N{i}", i
            tags = profile["Tags"]
            assert isinstance(tags, list)
            if op == "$add" and tag not in tags:
                tags.append(tag)
            elif op == "$remove" and tag in tags:
                tags.remove(tag)
    for profile in expected.values():
        if not profile["Tags"]:
            del profile["Tags"]
    return expected


def sink_profiles(daemon: Daemon) -> dict[str, dict[str, Any]]:
    conn = sqlite3.connect(daemon.data_dir / "sink.sqlite3", timeout=30)
    try:
        rows = conn.execute("SELECT identity, properties FROM profiles WHERE account = ?", (ACCOUNT,)).fetchall()
    finally:
        conn.close()
    return {identity: json.loads(properties) for identity, properties in rows}


@pytest.mark.slow
def test_a_killed_profile_import_resumes_to_the_same_profiles_as_a_clean_run(
    make_daemon: Callable[..., Daemon], keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    daemon = make_daemon(INGESTD_JOBS__BATCH_ROWS="1000", INGESTD_JOBS__COMMIT_ROWS="1000")
    daemon.add_key(ACCOUNT, keypair[1])
    partner = Partner(daemon, keypair[0], tmp_path / "partner")
    expected = write_profiles(partner.folder / "people.csv")
    manifest = {
        "fileName": "people.csv",
        "type": "profile",
        "clientEmail": "partner@example.com",
        "columns": {"Count": {"dataType": "INTEGER"}},
    }
    partner.put(partner.folder / "people.csv", partner.file("people.manifest", manifest))
    deadline = time.monotonic() + 120
    while not ((state := job_row(daemon)) and state[0] == "processing" and state[1] > 0):
        assert time.monotonic() < deadline, f"never saw the job processing: {state}\n{daemon.log()[-3000:]}"
        time.sleep(0.02)
    daemon.kill()
    assert (job_row(daemon) or ("?", 0))[1] < PROFILE_ROWS, "the kill must land mid-import"
    daemon.start()
    [job] = finished(daemon, 1)
    assert (job["status"], job["rows_ingested"]) == ("succeeded", PROFILE_ROWS)
    profiles = sink_profiles(daemon)
    for profile in profiles.values():
        if "Tags" in profile:
            profile["Tags"] = sorted(profile["Tags"])
    for profile in expected.values():
        if "Tags" in profile:
            profile["Tags"] = sorted(profile["Tags"])
    assert profiles == expected

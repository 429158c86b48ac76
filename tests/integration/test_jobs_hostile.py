"""What a partner (or another writer in the drop folder) can put there, through a real `ingestd serve`:
every job still reaches a final status with a true reason, and nothing blocks the account or the daemon."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import Daemon
from tests.integration.test_e2e import cli_json, finished, imports, wait_for
from tests.integration.test_http_api import fetch

ACCOUNT = "acme"
EMAIL = "partner@example.com"


def put(daemon: Daemon, name: str | bytes, content: bytes | str, account: str = ACCOUNT) -> Path:
    """Like a finished upload by another writer: written under a hidden name, then renamed into place."""
    folder = daemon.drop(account)
    folder.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    temp = folder / ".writer.part"
    temp.write_bytes(data)
    target = os.path.join(os.fsencode(folder), name) if isinstance(name, bytes) else folder / name
    os.replace(temp, target)
    return Path(os.fsdecode(target))


def manifest(file_name: str, kind: str = "profile", **extra: Any) -> str:
    return json.dumps({"fileName": file_name, "type": kind, "clientEmail": EMAIL, **extra})


def import_pair(daemon: Daemon, csv_name: str, csv_text: str, manifest_name: str, **extra: Any) -> None:
    put(daemon, csv_name, csv_text)
    put(daemon, manifest_name, manifest(csv_name, **extra))


def mail_text(daemon: Daemon) -> str:
    folder = daemon.data_dir / "mail"
    return "".join(p.read_text(errors="replace") for p in sorted(folder.rglob("*.eml"))) if folder.exists() else ""


# -- 1. hostile text ----------------------------------------------------------------------------


def test_lone_surrogates_anywhere_in_a_manifest_are_a_manifest_problem(daemon: Daemon) -> None:
    raw = (
        '{"fileName": "p\\udcff.csv", "type": "profile", "clientEmail": "partner@example.com",'
        ' "columns": {"Na\\udce9me": {"ctName": "x\\udc80"}}}'
    )
    put(daemon, "p.csv", "identity,Name\njohn,John\n")
    put(daemon, "bad.manifest", raw)
    put(daemon, "good.manifest", manifest("p.csv"))
    bad, good = finished(daemon, 2)
    assert bad["status"] == "failed" and bad["error"] == "Incorrect details in manifest file"
    problems = bad["details"]["problems"]
    assert any(p.startswith("fileName: ") and "is not valid Unicode text" in p for p in problems), problems
    assert any(p.startswith("columns: the key ") for p in problems) and any("ctName" in p for p in problems)
    # The account's next import is not held up.
    assert good["status"] == "succeeded"
    assert fetch(f"{daemon.http_url}/api/imports").status == 200


def test_a_file_name_that_is_not_utf8_fails_its_job_and_blocks_nothing(daemon: Daemon) -> None:
    put(daemon, b"\xff.manifest", manifest("p.csv"))
    [job] = finished(daemon, 1)
    assert job["status"] == "failed" and job["error"] == "File couldn't be read"
    assert job["manifest_name"] == "\\xff.manifest"
    assert job["details"]["problems"] == ["\\xff.manifest: the file name is not valid UTF-8; rename it"]
    # Moved out of the partner's folder by its real bytes, kept in the job's folder under safe text.
    # Only the report of the failure is left for the partner, in errors/.
    assert os.listdir(os.fsencode(daemon.drop(ACCOUNT))) == [b"errors"]
    assert [path.name for path in (daemon.drop(ACCOUNT) / "errors").iterdir()] == [f"{job['id']}-\\xff.report.txt"]
    assert (daemon.data_dir / "jobs" / str(job["id"]) / "\\xff.manifest").exists()
    # Another one arrives while the daemon is down: the next start's rescan must cope with it.
    daemon.stop()
    put(daemon, b"caf\xe9.manifest", manifest("q.csv"))
    daemon.start()
    jobs = finished(daemon, 2)
    assert jobs[1]["status"] == "failed" and "not valid UTF-8" in jobs[1]["details"]["problems"][0]
    for page in ("/", "/api/imports", f"/api/imports/{jobs[1]['id']}", "/healthz"):
        assert fetch(daemon.url(page)).status == 200, page
    assert daemon.cli("imports", "list").returncode == 0
    import_pair(daemon, "next.csv", "identity,Name\nann,Ann\n", "next.manifest")
    assert finished(daemon, 3)[2]["status"] == "succeeded"
    # A third start still works.
    daemon.restart()
    assert fetch(daemon.url("/healthz")).status == 200


# -- 2. work that grows faster than its input ---------------------------------------------------


def test_large_and_wide_inputs_fail_quickly_with_their_limit(daemon: Daemon) -> None:
    # Unparseable, with a megabyte of letters where the addresses go (was about 20 minutes of regex).
    put(daemon, "letters.manifest", '{"fileName": "x.csv", "clientEmail": "' + "a" * 1_000_000)
    put(daemon, "huge.manifest", manifest("x.csv", padding="x" * (1 << 20)))
    many = ",".join(f"u{i}@example.com" for i in range(10_001))
    put(daemon, "many.manifest", json.dumps({"fileName": "x.csv", "type": "profile", "clientEmail": many}))
    put(daemon, "wide.csv", ",".join(f"c{i}" for i in range(100_000)) + "\n" + "1," * 99_999 + "1\n")
    put(daemon, "wide.manifest", manifest("wide.csv"))
    put(daemon, "long.csv", "identity," + "n" * (5 << 20) + "\njohn,x\n")
    put(daemon, "long.manifest", manifest("long.csv"))
    put(daemon, "ok.csv", "identity,Name\nann,Ann\n")
    put(daemon, "ok.manifest", manifest("ok.csv"))
    letters, huge, many_job, wide, long, ok = finished(daemon, 6)
    assert letters["status"] == "failed" and "not valid JSON" in letters["details"]["problems"][0]
    assert huge["details"]["problems"] == [
        "the manifest is larger than 1 MiB (it was not read); a manifest is a small JSON object"
    ]
    assert many_job["details"]["problems"] == ["clientEmail: at most 10 addresses, found 10001"]
    assert wide["error"] == "File couldn't be read: the header has 100000 columns; at most 260 are allowed"
    assert long["error"] == "File couldn't be read: the header row is longer than 4 MiB"
    assert ok["status"] == "succeeded"


# -- 3. jobs that never end ---------------------------------------------------------------------


def test_an_errors_file_in_the_way_does_not_keep_the_job_processing(daemon: Daemon) -> None:
    put(daemon, "errors", "not a folder")
    import_pair(daemon, "p.csv", "identity,Name\njohn,John\n,Nobody\n", "p.manifest")
    [job] = finished(daemon, 1)
    assert job["status"] == "completed_with_errors" and job["rows_ingested"] == 1
    assert job["details"]["error_csv"] is None
    assert "could not be copied into your errors/ folder" in job["details"]["error_csv_copy"]
    assert (daemon.drop(ACCOUNT) / "errors").read_text() == "not a folder"
    # The email still carries the error file.
    wait_for("the completed email", lambda: "Nobody" in mail_text(daemon) or "errors.csv" in mail_text(daemon), daemon)


def test_a_long_data_file_name_still_gets_its_error_copy(daemon: Daemon) -> None:
    name = "d" * 241 + ".csv"  # 245 bytes
    import_pair(daemon, name, "identity,Name\njohn,John\n,Nobody\n", "long.manifest")
    [job] = finished(daemon, 1)
    assert job["status"] == "completed_with_errors"
    copy = daemon.drop(ACCOUNT) / job["details"]["error_csv"]
    assert copy.exists() and len(copy.name.encode()) <= 255


def test_long_fields_get_a_true_reason(daemon: Daemon) -> None:
    # A ragged row holding a field over the csv module's 128 KiB limit (was "Internal error").
    text = "identity,Name\njohn,John\nann," + "x" * (200 << 10) + ",extra\n"
    import_pair(daemon, "p.csv", text, "p.manifest")
    [job] = finished(daemon, 1)
    assert job["status"] == "failed"
    assert job["error"] == "File couldn't be read: line 3: a field is longer than 128 KiB"


# -- 5. links -----------------------------------------------------------------------------------


def test_links_and_special_files_are_never_followed(daemon: Daemon) -> None:
    key = daemon.data_dir / "host_keys" / "ssh_host_ed25519_key"
    assert key.exists()
    folder = daemon.drop(ACCOUNT)
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink(key, folder / "key.csv")
    put(daemon, "sym.manifest", manifest("key.csv"))
    os.link(key, folder / "hard.csv")
    put(daemon, "hard.manifest", manifest("hard.csv"))
    os.mkfifo(folder / "fifo.csv")
    put(daemon, "fifo.manifest", manifest("fifo.csv"))
    os.symlink(key, folder / ".link")
    os.replace(folder / ".link", folder / "link.manifest")  # a rename: the watcher sees it at once
    put(daemon, "ok.csv", "identity,Name\nann,Ann\n")
    put(daemon, "ok.manifest", manifest("ok.csv"))
    sym, hard, fifo, link, ok = finished(daemon, 5)
    for job in (sym, hard, fifo, link):
        assert job["status"] == "failed" and job["error"] == "File couldn't be read", job
    assert "key.csv is a symbolic link" in sym["details"]["problems"][0]
    assert "hard.csv has 2 names (hard links)" in hard["details"]["problems"][0]
    assert "fifo.csv is a special file" in fifo["details"]["problems"][0]
    assert "link.manifest is a symbolic link" in link["details"]["problems"][0]
    assert ok["status"] == "succeeded"
    # Nothing of the key reached an email, an error file or the partner's folder.
    secret = key.read_bytes()
    assert b"PRIVATE KEY" in secret
    assert "PRIVATE KEY" not in mail_text(daemon)
    host_keys = daemon.data_dir / "host_keys"
    for path in daemon.data_dir.rglob("*"):
        # The host keys themselves, and the hard link to one the other writer placed, are the key, not a copy.
        if (
            path.is_file()
            and not path.is_symlink()
            and path.parent != host_keys
            and path.stat().st_ino != key.stat().st_ino
        ):
            assert b"PRIVATE KEY" not in path.read_bytes(), path


# -- 6. formula injection -----------------------------------------------------------------------


def test_error_csv_cells_are_neutralised_and_a_fixed_error_csv_imports_the_originals(daemon: Daemon) -> None:
    columns = {"Score": {"dataType": "INTEGER"}}
    link = '=HYPERLINK("http://evil.example/","click")'
    rows = [["identity", "Name", "Score", "Note"], ["john", "John", "1", "ok"], ["", link, "-5", "@SUM(A1)"]]
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    import_pair(daemon, "p.csv", text.getvalue(), "p.manifest", columns=columns)
    [job] = finished(daemon, 1)
    assert job["status"] == "completed_with_errors"
    error_csv = (daemon.drop(ACCOUNT) / job["details"]["error_csv"]).read_text(encoding="utf-8-sig")
    header, bad = list(csv.reader(io.StringIO(error_csv)))
    assert header == ["identity", "Name", "Score", "Note", "Failure Description"]
    assert bad[1:4] == ["'" + link, "'-5", "'@SUM(A1)"]
    # The partner fixes the identity and uploads the error CSV as it is.
    bad[0] = "kate"
    fixed = io.StringIO()
    csv.writer(fixed, lineterminator="\r\n").writerows([header, bad])
    import_pair(daemon, "fixed.csv", fixed.getvalue(), "fixed.manifest", columns=columns)
    again = finished(daemon, 2)[1]
    assert again["status"] == "succeeded" and again["rows_ingested"] == 1
    kate = cli_json(daemon, "profiles", "get", ACCOUNT, "kate")["properties"]
    assert kate == {"Name": link, "Score": -5, "Note": "@SUM(A1)"}


# -- 4. a full disk -----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs: a real ENOSPC without special hardware (needs root and mount permission)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode(errors='replace').strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write until the file system is full. Unbuffered: a write that does not fit fails at once, and no buffered
    rest is left for close() to fail on."""
    for size in (64 << 10, 4096, 512, 1):  # big blocks, then the last pages too
        with open(path, "ab", buffering=0) as handle:
            block = b"\0" * size
            try:
                while True:
                    handle.write(block)
            except OSError:
                continue


def test_a_full_disk_pauses_the_import_and_it_resumes_when_space_is_back(
    make_daemon: Callable[..., Daemon], small_disk: Path
) -> None:
    daemon = make_daemon(INGESTD_DATA_DIR=str(small_disk))  # its log stays outside, next to it
    try:
        rows = 30_000
        text = "identity,Name,City\n" + "".join(f"user{i},Name {i},City {i % 97}\n" for i in range(rows))
        folder = daemon.drop(ACCOUNT)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".p.csv.part").write_text(text)
        # The job is queued (and waits for its data) while there is room; then the disk fills up.
        put(daemon, "p.manifest", manifest("p.csv"))
        wait_for("waiting_for_data", lambda: [j for j in imports(daemon) if j["status"] == "waiting_for_data"], daemon)
        filler = small_disk / "filler"
        fill(filler)
        os.replace(folder / ".p.csv.part", folder / "p.csv")  # a rename needs no space

        def unhealthy() -> str | None:
            response = fetch(daemon.url("/healthz"))
            reason = response.json().get("reason", "") if response.status == 503 else ""
            return reason if "no space left" in reason else None

        reason = wait_for("the job to pause", unhealthy, daemon)
        assert "paused" in reason and "acme" in reason
        assert "job.paused" in daemon.log()
        filler.unlink()
        [job] = finished(daemon, 1)
        assert job["status"] == "succeeded", job
        assert (job["rows_ingested"], job["rows_failed"]) == (rows, 0)
        assert job["details"]["paused"] is None
        assert fetch(daemon.url("/healthz")).status == 200
        assert (
            cli_json(daemon, "profiles", "get", ACCOUNT, f"user{rows - 1}")["properties"]["City"]
            == f"City {(rows - 1) % 97}"
        )
    finally:
        daemon.stop()


@pytest.mark.slow
def test_a_locked_sink_database_pauses_the_import_and_it_resumes_when_released(daemon: Daemon) -> None:
    # Another process (a backup, an operator's sqlite3 shell) holds the sink's write lock past SQLite's 30 s wait.
    import sqlite3

    sink = daemon.data_dir / "sink.sqlite3"
    wait_for("the sink file", sink.exists, daemon)
    holder = sqlite3.connect(sink, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        import_pair(daemon, "p.csv", "identity,Name\njohn,John\njane,Jane\n", "p.manifest")

        def paused() -> str | None:
            jobs = imports(daemon)
            reason = (jobs[0]["details"].get("paused") or "") if jobs else ""
            return reason if "locked" in reason else None

        assert "locked" in wait_for("the job to pause on the lock", paused, daemon, timeout=180)
        assert [job["status"] for job in imports(daemon)] == ["processing"]
        health = fetch(daemon.url("/healthz"))
        assert health.status == 503 and "locked" in health.json()["reason"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    [job] = finished(daemon, 1)
    assert (job["status"], job["rows_ingested"]) == ("succeeded", 2), job
    assert fetch(daemon.url("/healthz")).status == 200
    assert cli_json(daemon, "profiles", "get", ACCOUNT, "jane")["properties"]["Name"] == "Jane"


def test_manifests_that_break_the_checks_still_end_and_block_nothing(daemon: Daemon) -> None:
    # A fileName longer than any file name (lstat: ENAMETOOLONG), one with control characters, and an integer of
    # 5,000 digits (json: ValueError): each stayed queued for ever, its account blocked, a traceback every pass.
    put(daemon, "long.manifest", manifest("x" * 1000 + ".csv"))
    put(daemon, "ctrl.manifest", manifest("a\x1b[31mred\x07.csv"))
    put(
        daemon,
        "digits.manifest",
        '{"fileName": "d.csv", "type": "profile", "clientEmail": "a@b.co", "n": ' + "7" * 5000 + "}",
    )
    import_pair(daemon, "ok.csv", "identity,Name\njohn,John\n", "ok.manifest")
    jobs = {job["manifest_name"]: job for job in finished(daemon, 4)}
    assert jobs["ok.manifest"]["status"] == "succeeded"
    for name, problem in (
        ("long.manifest", "fileName: expected a file name of at most 255 bytes"),
        ("ctrl.manifest", "fileName: expected a file name without control characters"),
        ("digits.manifest", "the manifest is not valid JSON: Exceeds the limit"),
    ):
        assert jobs[name]["status"] == "failed"
        assert jobs[name]["details"]["problems"][0].startswith(problem), jobs[name]["details"]["problems"]
    assert "Traceback" not in daemon.log()
    assert max(len(line) for line in daemon.log().splitlines()) < 4000


def test_a_burst_of_bad_manifests_does_not_hold_back_another_accounts_import(daemon: Daemon) -> None:
    # Found at start (or arriving together), 600 broken manifests of one account used to be settled in one
    # scheduling pass before any ready job started: another account's import waited for all of them.
    # All of them are there when the daemon starts, so the good import is found in the same first pass (put
    # after the start, a fast machine had settled the whole pile before the good manifest arrived).
    daemon.stop()
    for n in range(600):
        put(daemon, f"bad{n:04d}.manifest", "{not json", account="evil")
    import_pair(daemon, "ok.csv", "identity,Name\njohn,John\n", "ok.manifest")
    daemon.start()
    jobs = finished(daemon, 601)
    [ok] = [job for job in jobs if job["account"] == ACCOUNT]
    assert ok["status"] == "succeeded"
    bad = [job for job in jobs if job["account"] == "evil"]
    assert {job["status"] for job in bad} == {"failed"}
    # The good import did not wait for the bad account's pile to be settled: it started while that went on.
    lines = daemon.log().splitlines()
    started = next(i for i, line in enumerate(lines) if "job.processing" in line and f"account={ACCOUNT}" in line)
    assert any("job.failed account=evil" in line for line in lines[started:])


def test_a_file_of_nothing_but_ragged_rows_fails_and_its_error_csv_holds_every_row(
    make_daemon: Callable[..., Daemon],
) -> None:
    # The security review's file, in many small batches: bad rows wait for the sink by weight, none is lost.
    daemon = make_daemon(INGESTD_JOBS__BATCH_ROWS="100", INGESTD_JOBS__COMMIT_ROWS="2000")
    rows = 5_000
    import_pair(daemon, "p.csv", "identity,name\n" + "a\n" * rows, "p.manifest")
    [job] = finished(daemon, 1)
    assert job["status"] == "failed" and job["error"] == "All rows failed"
    assert (job["rows_ingested"], job["rows_failed"]) == (0, rows)
    error_csv = (daemon.drop(ACCOUNT) / job["details"]["error_csv"]).read_text(
        encoding="utf-8-sig"
    )  # a BOM, as the upload was UTF-8
    header, *bad = list(csv.reader(io.StringIO(error_csv)))
    assert header == ["identity", "name", "Failure Description"]
    assert len(bad) == rows and all(row[0] == "a" for row in bad)


def test_a_file_of_many_blocks_with_bad_and_ragged_rows_throughout_keeps_exact_counts(
    make_daemon: Callable[..., Daemon],
) -> None:
    # About 11.6 MB: three of the reader's 4 MiB blocks, which it now reads one after another as it parses.
    daemon = make_daemon(INGESTD_SINK__DRIVER="sqlite")
    rows = 150_000
    lines = ["identity,Name,Age"]
    expected_bad: list[str] = []
    for i in range(rows):
        if i % 1000 == 7:
            lines.append(f"user{i}@example.com,Name {i}")  # one field short: ragged
            expected_bad.append(f"user{i}@example.com")
        elif i % 1000 == 500:
            lines.append(f"user{i}@example.com,Name {i},not a number {'x' * 40}")
            expected_bad.append(f"user{i}@example.com")
        else:
            lines.append(f"user{i}@example.com,Name {i} {'y' * 40},{i % 90}")
    text = "\n".join(lines) + "\n"
    assert len(text) > 2 * (4 << 20)
    import_pair(daemon, "p.csv", text, "p.manifest", columns={"Age": {"dataType": "INTEGER"}})
    [job] = finished(daemon, 1)
    assert job["status"] == "completed_with_errors"
    assert (job["rows_ingested"], job["rows_failed"]) == (rows - len(expected_bad), len(expected_bad))
    error_csv = (daemon.drop(ACCOUNT) / job["details"]["error_csv"]).read_text(encoding="utf-8-sig")
    _, *bad = list(csv.reader(io.StringIO(error_csv)))
    assert [row[0] for row in bad] == expected_bad  # in file order, none lost or repeated at a block's edge

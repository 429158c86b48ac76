"""`ingestd imports list|show` against a state database: table, JSON, filters and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.store.db import StateDB
from daemon.store.jobs import JobStore
from tests.fixtures.daemon import run_cli
from tests.fixtures.jobs import add_job
from tests.fixtures.sshkeys import make_keypair


def ingestd(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m daemon.cli ARGS` on `data_dir`, in a process of its own (tests/fixtures/daemon.run_cli)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("INGESTD_")}
    env["INGESTD_DATA_DIR"] = str(data_dir)
    return run_cli(list(args), env=env, cwd=Path.cwd())


@pytest.fixture
def imports(data_dir: Path) -> dict[str, int]:
    store = JobStore(StateDB(data_dir / "state.sqlite3"))
    done = add_job(store, "acme", "profiles.manifest")
    store.mark_processing(done, "profiles.csv", "profile", 500, {})
    store.save_checkpoint(done, {"rows_done": 5, "rows_ingested": 4, "rows_failed": 1}, 500)
    store.finish(
        done,
        "completed_with_errors",
        reasons=[["Phone number is not valid", 1]],
        error_csv="errors/1-profiles.errors.csv",
    )
    failed = add_job(store, "globex", "events.manifest")
    store.finish(failed, "failed", error="No data file found", problems=["events.csv did not arrive"])
    queued = add_job(store, "acme", "later.manifest")
    store.db.close()
    return {"done": done, "failed": failed, "queued": queued}


def test_list_shows_a_table_newest_first(data_dir: Path, imports: dict[str, int]) -> None:
    result = ingestd(data_dir, "imports", "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "ACCOUNT", "STATUS", "TYPE", "FILE", "ROWS", "CREATED"]
    assert [line.split()[0] for line in lines[1:]] == [
        str(imports["queued"]),
        str(imports["failed"]),
        str(imports["done"]),
    ]
    assert "completed_with_errors" in lines[3] and "4/5 (1 failed)" in lines[3]


def test_list_json_filters_by_account_and_status(data_dir: Path, imports: dict[str, int]) -> None:
    result = ingestd(data_dir, "imports", "list", "--account", "acme", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [job["id"] for job in listed] == [imports["queued"], imports["done"]]
    for key in ("id", "account", "file_name", "manifest_name", "type", "status", "rows_total", "rows_ingested"):
        assert key in listed[0]
    result = ingestd(data_dir, "imports", "list", "--status", "failed", "--json")
    assert [job["error"] for job in json.loads(result.stdout)] == ["No data file found"]


def test_show_prints_one_import(data_dir: Path, imports: dict[str, int]) -> None:
    result = ingestd(data_dir, "imports", "show", str(imports["done"]))
    assert result.returncode == 0, result.stderr
    assert "completed_with_errors" in result.stdout
    assert "Phone number is not valid" in result.stdout
    assert "errors/1-profiles.errors.csv" in result.stdout
    shown = json.loads(ingestd(data_dir, "imports", "show", str(imports["failed"]), "--json").stdout)
    assert shown["status"] == "failed" and shown["error"] == "No data file found"
    assert shown["details"]["problems"] == ["events.csv did not arrive"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["imports", "show", "999"], 1, "no import with id 999"),
        (["imports", "show", "abc"], 2, "expected a positive whole number"),
        (["imports", "show", "-3"], 2, "expected a positive whole number"),
        (["imports", "list", "--status", "done"], 2, "expected one of queued"),
        (["imports", "list", "--limit", "0"], 2, "expected a positive number"),
        (["imports", "list", "--account", "../x"], 2, "account '../x'"),
    ],
)
def test_bad_requests_get_a_clear_error_and_exit_code(
    data_dir: Path, imports: dict[str, int], args: list[str], code: int, message: str
) -> None:
    result = ingestd(data_dir, *args)
    assert result.returncode == code
    assert message in result.stderr and "Traceback" not in result.stderr


def test_no_state_database_means_no_imports(tmp_path: Path) -> None:
    data_dir = tmp_path / "never-started"
    assert ingestd(data_dir, "imports", "list", "--json").stdout.strip() == "[]"
    assert ingestd(data_dir, "imports", "show", "1").returncode == 1
    assert not data_dir.exists()


def test_a_damaged_state_database_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "state.sqlite3").write_bytes(b"this is not a database" * 100)
    result = ingestd(data_dir, "imports", "list")
    assert result.returncode == 2
    assert "state database" in result.stderr and "Traceback" not in result.stderr


def test_partner_text_cannot_drive_the_operators_terminal(data_dir: Path) -> None:
    # A manifest name, a file name and a reason quoting a cell are partner text: escapes must arrive as text.
    store = JobStore(StateDB(data_dir / "state.sqlite3"))
    hostile = add_job(store, "acme", "x\x1b]0;owned\x07.manifest")
    store.mark_processing(hostile, "\x1b[2Jdata\x9b.csv", "event", 10, {})
    store.finish(hostile, "failed", error="All rows failed", problems=["line 2: found '\x1b[31mred\u202e'"])
    store.db.close()
    for args in (("imports", "list"), ("imports", "show", str(hostile))):
        result = ingestd(data_dir, *args)
        assert result.returncode == 0, result.stderr
        assert not any(char in result.stdout for char in "\x1b\x07\x9b\u202e"), result.stdout
        assert "\\x1b[2Jdata\\x9b.csv" in result.stdout
    result = ingestd(data_dir, "imports", "show", str(hostile), "--json")
    assert not any(char in result.stdout for char in "\x1b\x07\x9b\u202e")
    shown = json.loads(result.stdout)  # the same values, once parsed
    assert shown["file_name"] == "\x1b[2Jdata\x9b.csv"
    assert shown["details"]["problems"] == ["line 2: found '\x1b[31mred\u202e'"]


def test_commands_run_in_the_wrong_folder_say_so_and_reads_create_nothing(tmp_path: Path) -> None:
    # No config at all: the built-in ./ingestd-data of whatever folder the operator is in.
    env = {name: value for name, value in os.environ.items() if not name.startswith("INGESTD_")}
    env["INGESTD_CONFIG"] = str(tmp_path / "empty.toml")
    (tmp_path / "empty.toml").write_text("")
    folder = tmp_path / "somewhere"
    folder.mkdir()
    for args in (("imports", "list"), ("keys", "list"), ("accounts", "list"), ("bans", "list")):
        result = subprocess.run(
            [sys.executable, "-m", "daemon.cli", *args], env=env, cwd=folder, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert "is this the daemon's data directory?" in result.stderr
    assert list(folder.iterdir()) == []  # no empty data directory left behind
    _, public = make_keypair(tmp_path / "keys")
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "keys", "add", "acme", str(public)],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert f"new data directory {folder / 'ingestd-data'}" in result.stderr


def test_a_job_id_beyond_any_import_is_bad_input_not_a_traceback(data_dir: Path, imports: dict[str, int]) -> None:
    for bad in ("9" * 30, "²", "9" * 5000):
        for verb in ("show", "cancel", "retry"):
            result = ingestd(data_dir, "imports", verb, bad)
            assert result.returncode == 2, result.stderr
            assert result.stderr.startswith("ingestd: error: job id ") and "Traceback" not in result.stderr
    result = ingestd(data_dir, "exports", "show", "9" * 30)
    assert result.returncode == 2 and "Traceback" not in result.stderr

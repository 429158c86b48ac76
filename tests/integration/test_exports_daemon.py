"""Exports through a real `ingestd serve`: the CLI, `get` from exports/ over OpenSSH sftp (and a refused `put`),
and a run killed with SIGKILL that restarts and leaves complete files, none duplicated."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.config import load_config
from daemon.sinks import open_sink
from tests.fixtures.daemon import Daemon
from tests.fixtures.sshkeys import make_keypair, sftp_batch
from tests.integration.test_exports import ACCOUNT, event_rows
from tests.integration.test_sinks import events_frame, profiles_frame


def write_events(daemon: Daemon, rows: list[Any]) -> None:
    """Into the daemon's own sqlite sink file, as an import would."""
    config = load_config(environ={"INGESTD_DATA_DIR": str(daemon.data_dir)})

    async def write() -> None:
        sink = open_sink(config)
        await sink.start()
        try:
            assert await sink.write_events(ACCOUNT, events_frame(rows)) == []
        finally:
            await sink.stop()

    asyncio.run(write())


def show(daemon: Daemon, export_id: int) -> dict[str, Any]:
    result = daemon.cli("exports", "show", str(export_id), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(daemon: Daemon, export_id: int, status: str = "done", timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        shown = show(daemon, export_id)
        if shown["status"] == status and shown["runs"] and shown["runs"][-1]["status"] != "running":
            return shown
        assert time.monotonic() < deadline, f"export {export_id} not {status}: {shown}\n{daemon.log()}"
        time.sleep(0.1)


def create(daemon: Daemon, *args: str) -> int:
    result = daemon.cli("exports", "create", ACCOUNT, "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["id"]


def test_cli_exports_to_the_sftp_folder_partners_can_get_and_remove_but_not_write(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = make_daemon(INGESTD_EXPORTS__POLL_INTERVAL="0.2s")
    private, public = make_keypair(tmp_path / "keys")
    daemon.add_key(ACCOUNT, public)
    write_events(daemon, event_rows(30))
    export_id = create(daemon, "--type", "events", "--event", "Charged", "--format", "csv", "--days", "10")
    shown = wait_for(daemon, export_id)
    (item,) = shown["runs"][0]["files"] if len(shown["runs"][0]["files"]) == 1 else shown["runs"][0]["files"][:1]
    assert item["location"].startswith("exports/")
    local = tmp_path / "got"
    local.mkdir()
    upload = tmp_path / "mine.csv"
    upload.write_text("a,b\n")
    result = sftp_batch(daemon.sftp_port, ACCOUNT, private, ["ls exports", f'get "{item["location"]}" {local}/'])
    assert result.returncode == 0, result.stderr
    got = local / item["name"]
    assert got.read_bytes() == (daemon.drop(ACCOUNT) / item["location"]).read_bytes()
    assert got.read_text().startswith("identity,ts,eventName,")
    assert ".export-" not in result.stdout  # temp names are never listed
    refused = sftp_batch(daemon.sftp_port, ACCOUNT, private, [f"put {upload} exports/mine.csv"])
    assert refused.returncode != 0
    assert not (daemon.drop(ACCOUNT) / "exports" / "mine.csv").exists()
    removed = sftp_batch(daemon.sftp_port, ACCOUNT, private, [f'rm "{item["location"]}"'])
    assert removed.returncode == 0, removed.stderr
    assert not (daemon.drop(ACCOUNT) / item["location"]).exists()
    # Text and JSON listings, and the exit codes of bad requests.
    listed = daemon.cli("exports", "list", "--json")
    assert [entry["id"] for entry in json.loads(listed.stdout)] == [export_id]
    assert "done" in daemon.cli("exports", "list").stdout
    for args in (["--days", "46"], ["--format", "xlsx"], ["--every", "1h"], ["--type", "things"]):
        bad = daemon.cli("exports", "create", ACCOUNT, *(["--type", "events"] if "--type" not in args else []), *args)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr, bad.stderr
    assert daemon.cli("exports", "show", "999").returncode == 1
    assert "Traceback" not in daemon.log()


@pytest.mark.slow
def test_a_run_killed_mid_way_restarts_and_its_files_are_complete_and_not_duplicated(
    make_daemon: Callable[..., Daemon],
) -> None:
    daemon = make_daemon(
        INGESTD_EXPORTS__POLL_INTERVAL="0.1s", INGESTD_EXPORTS__CHUNK_SIZE="2KB", INGESTD_EXPORTS__BATCH_ROWS="40"
    )
    rows = event_rows(3000, names=("Charged",))
    write_events(daemon, rows)
    export_id = create(daemon, "--type", "events", "--days", "10")
    folder = daemon.drop(ACCOUNT) / "exports"
    deadline = time.monotonic() + 60
    while not (folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir())):
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.01)
    daemon.kill()
    interrupted = show(daemon, export_id)
    assert interrupted["status"] == "running", "the run finished before the kill: give it more rows"
    daemon.start()
    shown = wait_for(daemon, export_id)
    run = shown["runs"][0]
    assert run["attempts"] == 2 and "interrupted" in run["note"]
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(item["name"] for item in run["files"]), "a file not recorded, or a temp file, is left"
    seen = []
    for name in names:
        assert (folder / name).stat().st_size <= 2000
        seen += [json.loads(line)["eventProps"]["amount"] for line in (folder / name).read_text().splitlines()]
    assert sorted(seen) == list(range(3000))
    series: dict[str, list[int]] = {}
    for name in names:
        parts = name.split("-")
        series.setdefault(parts[3], []).append(int(parts[4]))
    for indexes in series.values():
        assert sorted(indexes) == list(range(1, len(indexes) + 1))
    assert "Traceback" not in daemon.log()


def test_runs_show_in_the_api_and_activity_log_and_are_emailed_with_their_files(
    make_daemon: Callable[..., Daemon],
) -> None:
    import urllib.error
    import urllib.request

    from tests.fixtures.common import free_port

    daemon = make_daemon(
        INGESTD_EXPORTS__POLL_INTERVAL="0.2s",
        INGESTD_NOTIFY__OPS_EMAILS="ops@example.com",
        # Nothing listens there: the S3 export fails at once, with the reason.
        INGESTD_EXPORTS__ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
        INGESTD_EXPORTS__MAX_ATTEMPTS="1",
    )
    assert daemon.cli("accounts", "set", ACCOUNT, "--email", "data@acme.example").returncode == 0
    write_events(daemon, event_rows(12))
    export_id = create(daemon, "--type", "events", "--format", "xml", "--days", "5")
    shown = wait_for(daemon, export_id)
    failed_id = create(daemon, "--type", "events", "--days", "5", "--to", "s3://no-bucket-here/x")
    wait_for(daemon, failed_id, status="failed")

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"{daemon.http_url}{path}", timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    status, body = get("/api/exports")
    assert status == 200
    assert [item["id"] for item in json.loads(body)["exports"]] == [failed_id, export_id]
    status, body = get(f"/api/exports/{export_id}")
    assert status == 200 and json.loads(body)["runs"][0]["files"] == shown["runs"][0]["files"]
    assert get("/api/exports/9999")[0] == 404 and get("/api/exports/x")[0] == 400
    status, page = get("/")
    assert status == 200 and f'id="export-{export_id}"' in page and f'id="export-{failed_id}"' in page
    status, page = get(f"/exports/{export_id}")
    assert status == 200 and shown["runs"][0]["files"][0]["name"] in page
    status, metrics = get("/metrics")
    assert 'ingestd_export_rows_total{format="xml",type="events"} 12.0' in metrics
    assert 'ingestd_exports_total{status="failed"} 1.0' in metrics
    mail = daemon.data_dir / "mail"
    deadline = time.monotonic() + 30
    while len(list(mail.glob("*.eml")) if mail.is_dir() else []) < 4:
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.1)
    messages = [path.read_bytes().decode("utf-8", "replace") for path in sorted(mail.glob("*.eml"))]
    done = [m for m in messages if f"Export {export_id} of {ACCOUNT} is done: 12 rows" in m]
    assert len(done) == 2  # the account's contacts, and ops' own copy
    assert any("To: data@acme.example" in m for m in done) and any("To: ops@example.com" in m for m in done)
    assert all(item["location"] in done[0] for item in shown["runs"][0]["files"])
    assert any(f"Export {failed_id} of {ACCOUNT} failed: S3 bucket no-bucket-here" in m for m in messages)


def test_a_partner_requests_an_export_by_uploading_a_dot_export_file(
    make_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = make_daemon(INGESTD_EXPORTS__POLL_INTERVAL="0.2s")
    private, public = make_keypair(tmp_path / "keys")
    daemon.add_key(ACCOUNT, public)
    write_events(daemon, event_rows(9))
    good = tmp_path / "weekly.export"
    good.write_text(
        json.dumps(
            {"type": "events", "events": ["Charged"], "format": "csv", "days": 7, "clientEmail": "me@acme.example"}
        )
    )
    bad = tmp_path / "oops.export"
    bad.write_text(json.dumps({"type": "events", "days": 90}))
    result = sftp_batch(daemon.sftp_port, ACCOUNT, private, [f"put {good}", f"put {bad}"])
    assert result.returncode == 0, result.stderr
    folder = daemon.drop(ACCOUNT) / "exports"
    deadline = time.monotonic() + 30
    while not (folder / "oops.export.error.txt").exists() or not list(folder.glob("*-Charged-*.csv")):
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.1)
    assert (folder / "oops.export.error.txt").read_text() == (
        "The export request cannot be used: days 90: a one-time export looks at most 45 days back\n"
    )
    assert not (daemon.drop(ACCOUNT) / "weekly.export").exists() and not (daemon.drop(ACCOUNT) / "oops.export").exists()
    (listed,) = json.loads(daemon.cli("exports", "list", "--json").stdout)
    assert listed["requested_by"] == "sftp" and listed["emails"] == ["me@acme.example"]
    shown = wait_for(daemon, listed["id"])
    assert shown["runs"][0]["rows"] == 3
    got = sftp_batch(daemon.sftp_port, ACCOUNT, private, ["get exports/oops.export.error.txt " + str(tmp_path)])
    assert got.returncode == 0, got.stderr


def write_profiles(daemon: Daemon, rows: list[Any]) -> None:
    """Into the daemon's own sqlite sink file, as an import would."""
    config = load_config(environ={"INGESTD_DATA_DIR": str(daemon.data_dir)})

    async def write() -> None:
        sink = open_sink(config)
        await sink.start()
        try:
            assert await sink.write_profiles(ACCOUNT, profiles_frame(rows)) == []
        finally:
            await sink.stop()

    asyncio.run(write())


def test_a_recurring_profiles_export_takes_only_the_profiles_changed_since_its_last_run_across_a_kill(
    make_daemon: Callable[..., Daemon],
) -> None:
    daemon = make_daemon(INGESTD_EXPORTS__POLL_INTERVAL="0.1s")
    now = int(time.time())
    write_profiles(daemon, [(f"p{i}", now, [["$set", "Age", i], ["$add", "Tags", "a"]]) for i in range(6)])
    export_id = create(daemon, "--type", "profiles", "--every", "4h")

    def run(number: int) -> dict[str, dict[str, Any]]:
        assert daemon.cli("exports", "run", str(export_id)).returncode == 0
        deadline = time.monotonic() + 60
        while True:
            runs = show(daemon, export_id)["runs"]
            if len(runs) == number and runs[-1]["status"] == "done":
                break
            assert time.monotonic() < deadline, f"run {number} not done: {runs}\n{daemon.log()}"
            time.sleep(0.1)
        lines = [
            json.loads(line)
            for item in runs[-1]["files"]
            for line in (daemon.drop(ACCOUNT) / item["location"]).read_text().splitlines()
        ]
        return {line["profile"]["identity"]: line["profileData"] for line in lines}

    assert set(run(1)) == {f"p{i}" for i in range(6)}
    write_profiles(daemon, [("p1", now, [["$set", "Age", 50]]), ("p4", now, [["$remove", "Tags", "a"]])])
    daemon.kill()  # SIGKILL between the runs: the window the next one starts from is in the state database
    write_profiles(daemon, [("p5", now, [["$add", "Tags", "z"]])])
    daemon.start()
    assert run(2) == {"p1": {"Age": 50, "Tags": ["a"]}, "p4": {"Age": 4}, "p5": {"Age": 5, "Tags": ["a", "z"]}}
    assert run(3) == {}
    assert "Traceback" not in daemon.log()

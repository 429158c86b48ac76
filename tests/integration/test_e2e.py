"""End to end through real SFTP uploads to `ingestd serve` on the SQLite sink: what a partner and ops see."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import Daemon
from tests.fixtures.samples import EVENTS_CSV, EVENTS_MANIFEST, PROFILES_CSV, PROFILES_MANIFEST
from tests.fixtures.sshkeys import sftp_batch

ACCOUNT = "acme"


class Partner:
    """One account's files on disk and its SFTP uploads to a daemon."""

    def __init__(self, daemon: Daemon, key: Path, folder: Path, account: str = ACCOUNT) -> None:
        self.daemon, self.key, self.folder, self.account = daemon, key, folder, account
        folder.mkdir(parents=True, exist_ok=True)

    def file(self, name: str, content: str | dict[str, Any]) -> Path:
        path = self.folder / name
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
        return path

    def put(self, *paths: Path) -> None:
        """One SFTP session: `put` each file in turn (a CSV before its manifest, as the spec asks)."""
        result = sftp_batch(self.daemon.sftp_port, self.account, self.key, [f'put "{p}" "{p.name}"' for p in paths])
        assert result.returncode == 0, result.stderr

    def upload(self, csv_name: str, csv_text: str, manifest_name: str, manifest: dict[str, Any]) -> None:
        self.put(self.file(csv_name, csv_text), self.file(manifest_name, manifest))


def profile_manifest(file_name: str, **extra: Any) -> dict[str, Any]:
    return {"fileName": file_name, "type": "profile", "clientEmail": "partner@example.com", **extra}


def cli_json(daemon: Daemon, *args: str) -> Any:
    result = daemon.cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def imports(daemon: Daemon) -> list[dict[str, Any]]:
    """Oldest first."""
    return list(reversed(cli_json(daemon, "imports", "list", "--limit", "1000")))


def wait_for(what: str, check: Callable[[], Any], daemon: Daemon, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{daemon.log()[-4000:]}")
        time.sleep(0.2)


def finished(daemon: Daemon, count: int) -> list[dict[str, Any]]:
    """Wait until `count` imports exist and none is still queued, waiting or processing."""

    def check() -> list[dict[str, Any]] | None:
        jobs = imports(daemon)
        done = len(jobs) >= count and all(job["finished_at"] for job in jobs)
        return jobs if done else None

    return wait_for(f"{count} finished imports", check, daemon)


@pytest.fixture
def partner(daemon: Daemon, keypair: tuple[Path, Path], tmp_path: Path) -> Partner:
    daemon.add_key(ACCOUNT, keypair[1])
    return Partner(daemon, keypair[0], tmp_path / "partner")


def import_samples(partner: Partner, daemon: Daemon) -> None:
    """Upload the reference samples and check the outcomes of ../shared/samples/README.md (any sink)."""
    partner.upload("profiles.csv", PROFILES_CSV, "profiles.manifest", PROFILES_MANIFEST)
    partner.upload("events.csv", EVENTS_CSV, "events.manifest", EVENTS_MANIFEST)
    profiles, events = finished(daemon, 2)
    assert (profiles["status"], profiles["rows_ingested"]) == ("succeeded", 5)
    assert (events["status"], events["rows_ingested"]) == ("succeeded", 4)
    john = cli_json(daemon, "profiles", "get", ACCOUNT, "john.doe@example.com")["properties"]
    assert john["Playlist"] == ["Rock"]
    jane = cli_json(daemon, "profiles", "get", ACCOUNT, "jane.doe@example.com")["properties"]
    assert "Pop" not in jane.get("Playlist", [])
    john_roe = cli_json(daemon, "profiles", "get", ACCOUNT, "john.roe@example.com")["properties"]
    assert john_roe["Phone"] == "+918876543213" and john_roe["Married"] is True
    assert "Phone" not in cli_json(daemon, "profiles", "get", ACCOUNT, "jane.roe@example.com")["properties"]
    roe5 = cli_json(daemon, "profiles", "get", ACCOUNT, "jane.roe5@example.com")
    assert roe5["properties"]["Age"] == 32
    # No ts in the row: the processing time, which is when the import started.
    assert roe5["ts"][:16] >= profiles["started_at"][:16]
    purchased = cli_json(daemon, "events", "list", ACCOUNT, "john.doe@example.com")
    assert len(purchased) == 4 and {event["name"] for event in purchased} == {"Purchased"}
    for event in purchased:
        assert event["properties"]["Price"] == 123.0
        assert event["properties"]["DeliveryDate"] == "2020-05-12T09:07:12Z"
        assert isinstance(event["properties"]["DeliveryStatus"], bool)
    # The partner's folder is clean again: the pairs moved into their jobs' folders.
    assert sorted(path.name for path in daemon.drop(ACCOUNT).iterdir() if not path.name.startswith(".")) == []


def test_the_reference_samples_end_as_documented(partner: Partner, daemon: Daemon) -> None:
    import_samples(partner, daemon)


def test_files_from_one_account_are_imported_in_upload_order(partner: Partner, daemon: Daemon) -> None:
    paths = []
    for n, name in enumerate(["first", "second", "third", "fourth"]):
        paths.append(partner.file(f"p{n}.csv", f"identity,Name,Step\njohn,{name},{n}\n"))
        paths.append(partner.file(f"p{n}.manifest", profile_manifest(f"p{n}.csv")))
    partner.put(*paths)
    jobs = finished(daemon, 4)
    assert [job["manifest_name"] for job in jobs] == [f"p{n}.manifest" for n in range(4)]
    assert [job["status"] for job in jobs] == ["succeeded"] * 4
    # Each job started only after the one before it finished.
    for before, after in itertools.pairwise(jobs):
        assert before["finished_at"] <= after["started_at"]
    assert cli_json(daemon, "profiles", "get", ACCOUNT, "john")["properties"]["Name"] == "fourth"


def test_a_manifest_waits_for_a_late_csv(partner: Partner, daemon: Daemon) -> None:
    partner.put(partner.file("late.manifest", profile_manifest("late.csv")))
    wait_for("waiting_for_data", lambda: imports(daemon)[-1]["status"] == "waiting_for_data", daemon)
    partner.put(partner.file("late.csv", "identity,Name\njane,Jane\n"))
    [job] = finished(daemon, 1)
    assert job["status"] == "succeeded" and job["rows_ingested"] == 1


def test_a_csv_that_never_arrives_fails_with_no_data_file_found(
    make_daemon: Callable[..., Daemon], keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    daemon = make_daemon(INGESTD_JOBS__DATA_FILE_GRACE="1s")
    daemon.add_key(ACCOUNT, keypair[1])
    partner = Partner(daemon, keypair[0], tmp_path / "partner")
    partner.put(partner.file("lost.manifest", profile_manifest("lost.csv")))
    [job] = finished(daemon, 1)
    assert job["status"] == "failed" and job["error"] == "No data file found"
    result = daemon.cli("imports", "show", str(job["id"]))
    assert "No data file found" in result.stdout


def test_a_manifest_name_is_used_once(partner: Partner, daemon: Daemon) -> None:
    partner.upload("a.csv", "identity,Name\njohn,John\n", "a.manifest", profile_manifest("a.csv"))
    finished(daemon, 1)
    partner.upload("a.csv", "identity,Name\njohn,Johnny\n", "a.manifest", profile_manifest("a.csv"))
    first, second = finished(daemon, 2)
    assert first["status"] == "succeeded"
    assert second["status"] == "failed" and second["error"] == "Every manifest file must have a unique name"
    assert cli_json(daemon, "profiles", "get", ACCOUNT, "john")["properties"]["Name"] == "John"


def test_reimporting_an_events_file_adds_no_duplicates(partner: Partner, daemon: Daemon) -> None:
    partner.upload("events.csv", EVENTS_CSV, "events.manifest", EVENTS_MANIFEST)
    finished(daemon, 1)
    partner.upload("events.csv", EVENTS_CSV, "events-again.manifest", EVENTS_MANIFEST)
    jobs = finished(daemon, 2)
    assert [job["status"] for job in jobs] == ["succeeded", "succeeded"]
    assert len(cli_json(daemon, "events", "list", ACCOUNT, "john.doe@example.com")) == 4


def test_bad_rows_are_reported_and_the_partner_can_fetch_the_error_csv(partner: Partner, daemon: Daemon) -> None:
    text = "identity,Name,Phone\njohn,John,+14155550100\n,Nobody,+14155550101\njane,Jane,12345\n"
    partner.upload("mixed.csv", text, "mixed.manifest", profile_manifest("mixed.csv"))
    [job] = finished(daemon, 1)
    assert job["status"] == "completed_with_errors"
    assert (job["rows_total"], job["rows_ingested"], job["rows_failed"]) == (3, 1, 2)
    fetched = partner.folder / "fetched.csv"
    result = sftp_batch(daemon.sftp_port, ACCOUNT, partner.key, [f'get "{job["details"]["error_csv"]}" "{fetched}"'])
    assert result.returncode == 0, result.stderr
    rows = fetched.read_text(encoding="utf-8-sig").splitlines()
    assert rows[0] == "identity,Name,Phone,Failure Description"
    assert rows[1].startswith(",Nobody,") and rows[2].startswith("jane,Jane,12345,")
    assert "Phone number is not valid" in rows[2]


def test_files_dropped_while_the_daemon_was_down_are_processed(partner: Partner, daemon: Daemon) -> None:
    daemon.stop()
    # Placed by other means (a mounted share, an external sshd) while nothing was watching.
    folder = daemon.drop(ACCOUNT)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "offline.csv").write_text("identity,Name\nola,Ola\n", encoding="utf-8")
    (folder / "offline.manifest").write_text(json.dumps(profile_manifest("offline.csv")), encoding="utf-8")
    # An upload that never completed is not an arrival.
    (folder / ".ingestd-upload-abc.broken.manifest.part").write_text("{", encoding="utf-8")
    daemon.start()
    [job] = finished(daemon, 1)
    assert job["status"] == "succeeded" and job["manifest_name"] == "offline.manifest"
    assert cli_json(daemon, "profiles", "get", ACCOUNT, "ola")["properties"]["Name"] == "Ola"
    # And a file copied in while it runs is picked up as well.
    (folder / "live.csv").write_text("identity,Name\nliv,Liv\n", encoding="utf-8")
    (folder / "live.manifest").write_text(json.dumps(profile_manifest("live.csv")), encoding="utf-8")
    assert finished(daemon, 2)[-1]["status"] == "succeeded"

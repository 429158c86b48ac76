"""Emails of real imports: files uploaded over SFTP to `ingestd serve`, mails received by a real SMTP server."""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import Daemon
from tests.fixtures.samples import EVENTS_CSV
from tests.fixtures.smtp import Received, SMTPServer
from tests.fixtures.sshkeys import sftp_batch

ACCOUNT = "acme"
PARTNER = "partner@example.com"
OPS = "ops@example.com"

EVENTS_MANIFEST = {
    "fileName": "events.csv",
    "type": "event",
    "columns": {
        "event_name": {"ctName": "evtName"},
        "time_stamp": {"ctName": "ts", "dataType": "INTEGER"},
        "item_price": {"ctName": "Price", "dataType": "FLOAT"},
        "status_delivered": {"ctName": "DeliveryStatus", "dataType": "BOOLEAN"},
    },
    "clientEmail": PARTNER,
}


def profile_manifest(file_name: str, **extra: Any) -> dict[str, Any]:
    return {"fileName": file_name, "type": "profile", "clientEmail": PARTNER, **extra}


class Partner:
    """A partner's local folder and SFTP session to the daemon."""

    def __init__(self, daemon: Daemon, key: Path, folder: Path) -> None:
        self.daemon, self.key, self.folder = daemon, key, folder
        folder.mkdir(parents=True, exist_ok=True)

    def upload(self, csv_name: str | None, csv_data: str | bytes, manifest_name: str, manifest: Any) -> None:
        """`put` the CSV (if any), then the manifest, in one SFTP session."""
        paths = []
        if csv_name is not None:
            paths.append(self._write(csv_name, csv_data))
        paths.append(self._write(manifest_name, manifest if isinstance(manifest, str) else json.dumps(manifest)))
        result = sftp_batch(self.daemon.sftp_port, ACCOUNT, self.key, [f'put "{p}" "{p.name}"' for p in paths])
        assert result.returncode == 0, result.stderr

    def get(self, remote: str) -> bytes:
        local = self.folder / f"fetched-{time.monotonic_ns()}"
        result = sftp_batch(self.daemon.sftp_port, ACCOUNT, self.key, [f'get "{remote}" "{local}"'])
        assert result.returncode == 0, result.stderr
        return local.read_bytes()

    def _write(self, name: str, data: str | bytes) -> Path:
        path = self.folder / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path


@pytest.fixture
def mail_daemon(
    make_daemon: Callable[..., Daemon], smtp_server: SMTPServer, keypair: tuple[Path, Path], tmp_path: Path
) -> Callable[..., tuple[Daemon, Partner]]:
    """Factory: a daemon sending to `smtp_server` (ops copied), with the partner's key registered."""

    def factory(**env: str) -> tuple[Daemon, Partner]:
        settings = {
            "INGESTD_SMTP__HOST": smtp_server.host,
            "INGESTD_SMTP__PORT": str(smtp_server.port),
            "INGESTD_SMTP__MAX_RETRY_DELAY": "1s",
            "INGESTD_NOTIFY__OPS_EMAILS": OPS,
        }
        daemon = make_daemon(**{**settings, **env})
        daemon.add_key(ACCOUNT, keypair[1])
        return daemon, Partner(daemon, keypair[0], tmp_path / "partner")

    return factory


def job_mails(
    server: SMTPServer, count: int, daemon: Daemon, timeout: float = 90, copies: bool = False
) -> list[Received]:
    """The partners' own emails (with `copies`: the ops and contacts copies too), once `count` arrived."""
    try:
        return server.wait_for(count, timeout, where=None if copies else lambda mail: mail.copy is None)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{daemon.log()[-4000:]}") from None


def until_event(server: SMTPServer, event: str, daemon: Daemon, timeout: float = 90) -> list[Received]:
    """Every partner email received by the time one for `event` arrived."""
    deadline = time.monotonic() + timeout
    while not any(mail.event == event and mail.copy is None for mail in list(server.messages)):
        assert time.monotonic() < deadline, f"no {event} email\n{daemon.log()[-4000:]}"
        time.sleep(0.1)
    return [mail for mail in list(server.messages) if mail.copy is None]


def events_of(mails: list[Received]) -> list[str]:
    return [mail.event for mail in mails]


def imports(daemon: Daemon) -> list[dict[str, Any]]:
    result = daemon.cli("imports", "list", "--json")
    assert result.returncode == 0, result.stderr
    return list(reversed(json.loads(result.stdout)))


def test_pickup_then_success(mail_daemon: Callable[..., tuple[Daemon, Partner]], smtp_server: SMTPServer) -> None:
    daemon, partner = mail_daemon()
    partner.upload("events.csv", EVENTS_CSV, "events.manifest", EVENTS_MANIFEST)
    picked, done = job_mails(smtp_server, 2, daemon)
    (job,) = imports(daemon)
    assert events_of([picked, done]) == ["picked_up", "succeeded"]
    assert picked.subject == "[acme] Picked up: events.csv"
    assert done.subject == "[acme] Imported: events.csv (4 rows)"
    for mail in (picked, done):
        assert mail.rcpt_tos == [PARTNER] and OPS not in mail.data.decode()
        assert mail.message["X-Ingestd-Job"] == str(job["id"])
    copies = [mail for mail in job_mails(smtp_server, 4, daemon, copies=True) if mail.copy]
    assert [(mail.copy, mail.event, mail.rcpt_tos) for mail in copies] == [
        ("ops", "picked_up", [OPS]),
        ("ops", "succeeded", [OPS]),
    ]
    text = done.text()
    assert "events.csv was imported: all 4 rows." in text
    assert "Rows imported: 4" in text and f"Job id:        {job['id']}" in text
    assert done.attachments() == []


def test_pickup_progress_completion(
    mail_daemon: Callable[..., tuple[Daemon, Partner]], smtp_server: SMTPServer
) -> None:
    # Batches of 100 rows and a zero interval: a progress email after every batch but the last.
    daemon, partner = mail_daemon(
        INGESTD_NOTIFY__PROGRESS_INTERVAL="0s", INGESTD_JOBS__BATCH_ROWS="100", INGESTD_JOBS__COMMIT_ROWS="100"
    )
    rows = "".join(f"user{index},Name {index}\n" for index in range(350))
    partner.upload("big.csv", "identity,Name\n" + rows, "big.manifest", profile_manifest("big.csv"))
    mails = until_event(smtp_server, "succeeded", daemon)
    kinds = events_of(mails)
    assert kinds[0] == "picked_up" and kinds[-1] == "succeeded"
    progress = [mail for mail in mails if mail.event == "progress"]
    assert progress, kinds
    first = progress[0]
    assert first.subject.startswith("[acme] In progress, ") and first.subject.endswith(" done: big.csv")
    assert "Rows so far:   100" in first.text()
    assert "Time left:" in first.text()
    assert mails[-1].subject == "[acme] Imported: big.csv (350 rows)"


def test_an_incorrect_manifest_is_reported_to_the_recovered_address_and_ops(
    mail_daemon: Callable[..., tuple[Daemon, Partner]], smtp_server: SMTPServer
) -> None:
    daemon, partner = mail_daemon()
    manifest = {"filename": "a.csv", "type": "profile", "clientEmail": "someone@example.com"}
    partner.upload("a.csv", "identity,Name\njohn,John\n", "a.manifest", manifest)
    (mail,) = job_mails(smtp_server, 1, daemon)
    assert mail.event == "failed"
    assert mail.subject.endswith("(manifest has errors)")
    assert mail.rcpt_tos == ["someone@example.com"]
    _, ops = job_mails(smtp_server, 2, daemon, copies=True)
    assert (ops.copy, ops.rcpt_tos, ops.subject) == ("ops", [OPS], mail.subject)
    text = mail.text()
    assert "did you mean 'fileName'?" in text
    assert "Correct the manifest" in text


def test_an_unparseable_manifest_still_tells_ops(
    mail_daemon: Callable[..., tuple[Daemon, Partner]], smtp_server: SMTPServer
) -> None:
    daemon, partner = mail_daemon()
    partner.upload(None, "", "broken.manifest", "{not json")
    (mail,) = job_mails(smtp_server, 1, daemon, copies=True)
    assert mail.rcpt_tos == [OPS] and mail.copy == "ops"
    assert mail.subject == "[acme] Failed: broken.manifest (manifest has errors)"


def test_no_data_file_found(mail_daemon: Callable[..., tuple[Daemon, Partner]], smtp_server: SMTPServer) -> None:
    daemon, partner = mail_daemon(INGESTD_JOBS__DATA_FILE_GRACE="1s")
    partner.upload(None, "", "lost.manifest", profile_manifest("lost.csv"))
    (mail,) = job_mails(smtp_server, 1, daemon)
    assert mail.subject == "[acme] Failed: lost.csv (no data file found)"
    assert "Upload the data file first" in mail.text()


def test_a_file_that_cannot_be_read(
    mail_daemon: Callable[..., tuple[Daemon, Partner]], smtp_server: SMTPServer
) -> None:
    daemon, partner = mail_daemon()
    partner.upload("bad.csv", b"identity,Name\njohn,J\xff\xfe\n", "bad.manifest", profile_manifest("bad.csv"))
    mails = job_mails(smtp_server, 2, daemon)
    assert events_of(mails) == ["picked_up", "failed"]
    assert mails[1].subject == "[acme] Failed: bad.csv (file couldn't be read)"
    assert "couldn't be read" in mails[1].text()


def test_all_rows_failed_attaches_every_row(
    mail_daemon: Callable[..., tuple[Daemon, Partner]], smtp_server: SMTPServer
) -> None:
    daemon, partner = mail_daemon()
    partner.upload(
        "none.csv", "identity,Phone\n,+14155550100\njane,12345\n", "none.manifest", profile_manifest("none.csv")
    )
    _, failed = job_mails(smtp_server, 2, daemon)
    (job,) = imports(daemon)
    assert failed.subject == "[acme] Failed: none.csv (all rows failed)"
    ((name, content),) = failed.attachments()
    assert name == job["details"]["error_csv"].removeprefix("errors/")
    assert content == partner.get(job["details"]["error_csv"])
    assert content.decode("utf-8-sig").splitlines()[0] == "identity,Phone,Failure Description"


def test_completed_with_errors_attaches_exactly_the_partners_error_csv(
    mail_daemon: Callable[..., tuple[Daemon, Partner]], smtp_server: SMTPServer
) -> None:
    daemon, partner = mail_daemon()
    text = "identity,Name,Phone\njohn,John,+14155550100\n,Nobody,+14155550101\njane,Jane,12345\n"
    partner.upload("mixed.csv", text, "mixed.manifest", profile_manifest("mixed.csv"))
    _, mail = job_mails(smtp_server, 2, daemon)
    (job,) = imports(daemon)
    assert mail.subject == "[acme] Imported with errors: mixed.csv (2 of 3 rows failed)"
    ((name, content),) = mail.attachments()
    remote = job["details"]["error_csv"]
    assert name == remote.removeprefix("errors/")
    assert content == partner.get(remote)
    body = mail.text()
    assert f"get {remote}" in body
    assert "1 row:  Phone number is not valid" in body or "1 row:  Phone: Phone number is not valid" in body


def test_a_large_error_csv_is_compressed_then_cut_to_its_first_rows(
    mail_daemon: Callable[..., tuple[Daemon, Partner]], smtp_server: SMTPServer
) -> None:
    daemon, partner = mail_daemon(INGESTD_NOTIFY__MAX_ATTACHMENT="4KiB")
    rng = random.Random(5)
    noise = lambda: "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(30))  # noqa: E731
    rows = "".join(f"user{index},{noise()},12345\n" for index in range(400))  # every Phone invalid, ~20 KB
    partner.upload("many.csv", "identity,Note,Phone\n" + rows, "many.manifest", profile_manifest("many.csv"))
    _, mail = job_mails(smtp_server, 2, daemon)
    (job,) = imports(daemon)
    full = partner.get(job["details"]["error_csv"])
    ((name, content),) = mail.attachments()
    assert len(content) <= 4096
    first = gzip.decompress(content)
    count = len(first.decode().splitlines()) - 1
    assert full.startswith(first) and 0 < count < 400
    assert name.endswith(f".first-{count}-rows.csv.gz")
    assert f"the first {count:,} of 400 rejected rows only" in " ".join(mail.text().split())


@pytest.mark.slow
def test_smtp_down_and_a_daemon_restart_lose_no_email_and_send_none_twice(
    mail_daemon: Callable[..., tuple[Daemon, Partner]], smtp_server: SMTPServer
) -> None:
    daemon, partner = mail_daemon()
    smtp_server.stop()
    partner.upload("events.csv", EVENTS_CSV, "events.manifest", EVENTS_MANIFEST)
    deadline = time.monotonic() + 90
    while not [job for job in imports(daemon) if job["finished_at"]]:
        assert time.monotonic() < deadline, daemon.log()[-4000:]
        time.sleep(0.2)
    daemon.stop()
    smtp_server.start()
    daemon.start()
    mails = job_mails(smtp_server, 2, daemon)
    assert events_of(mails) == ["picked_up", "succeeded"]
    # A second import as a marker: once its emails are in, the first job's would have been resent by now.
    partner.upload("events.csv", EVENTS_CSV, "again.manifest", EVENTS_MANIFEST)
    mails = job_mails(smtp_server, 4, daemon)
    assert events_of(mails) == ["picked_up", "succeeded", "picked_up", "succeeded"]
    assert max(Counter(mail.message_id for mail in mails).values()) == 1
    assert "notify.retry" in daemon.log()


def test_webhooks_get_the_same_events_signed(
    mail_daemon: Callable[..., tuple[Daemon, Partner]], smtp_server: SMTPServer
) -> None:
    from notifier.webhooks import verify
    from tests.integration.test_webhooks import HookReceiver

    receiver = HookReceiver(statuses=[502])  # the first call fails and is retried
    receiver.start()
    try:
        daemon, partner = mail_daemon(
            INGESTD_WEBHOOKS__URLS=receiver.url,
            INGESTD_WEBHOOKS__SECRET="hook-secret",
            INGESTD_WEBHOOKS__MAX_RETRY_DELAY="1s",
        )
        partner.upload("events.csv", EVENTS_CSV, "events.manifest", EVENTS_MANIFEST)
        mails = job_mails(smtp_server, 2, daemon)
        calls = receiver.wait_for(3)
    finally:
        receiver.stop()
    assert [json.loads(body)["event"] for _, body in calls] == ["picked_up", "picked_up", "succeeded"]
    assert all(verify("hook-secret", body, headers["X-Ingestd-Signature"]) for headers, body in calls)
    last = json.loads(calls[-1][1])["job"]
    assert (last["status"], last["rows_ingested"]) == ("succeeded", 4)
    assert events_of(mails) == ["picked_up", "succeeded"]


def _finished(daemon: Daemon, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 90
    while len(done := [job for job in imports(daemon) if job["finished_at"]]) < count:
        assert time.monotonic() < deadline, daemon.log()[-4000:]
        time.sleep(0.2)
    return done


def test_contacts_are_told_when_the_manifest_names_no_usable_address(
    mail_daemon: Callable[..., tuple[Daemon, Partner]], smtp_server: SMTPServer
) -> None:
    daemon, partner = mail_daemon(INGESTD_NOTIFY__OPS_EMAILS="")  # the default: no ops addresses
    result = daemon.cli("accounts", "set", ACCOUNT, "--email", "contact@example.com")
    assert result.returncode == 0, result.stderr
    partner.upload(None, "", "broken.manifest", "{not json")
    (mail,) = job_mails(smtp_server, 1, daemon, copies=True)
    assert (mail.copy, mail.rcpt_tos) == ("contacts", ["contact@example.com"])
    assert mail.subject == "[acme] Failed: broken.manifest (manifest has errors)"
    assert "the manifest names no email address we could read" in " ".join(mail.text().split())
    # Whatever the config, the partner can `get` why from errors/.
    [job] = json.loads(daemon.cli("imports", "list", "--json").stdout)
    report = partner.get(job["details"]["report"]).decode()
    assert "broken.manifest" in report and "the manifest is not valid JSON" in report


def test_addresses_outside_the_allowed_domains_are_dropped_and_the_contacts_told(
    mail_daemon: Callable[..., tuple[Daemon, Partner]], smtp_server: SMTPServer
) -> None:
    daemon, partner = mail_daemon()
    result = daemon.cli(
        "accounts", "set", ACCOUNT, "--email", "contact@example.com", "--allowed-domain", "example.com", "--json"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["allowed_domains"] == ["example.com"]
    manifest = {**EVENTS_MANIFEST, "clientEmail": [PARTNER, "spy@evil.example"]}
    partner.upload("events.csv", EVENTS_CSV, "events.manifest", manifest)
    until_event(smtp_server, "succeeded", daemon)
    # Per event: the partner's email, the contacts' copy, the ops copy.
    mails = job_mails(smtp_server, 6, daemon, copies=True)
    assert [(mail.event, mail.copy) for mail in mails] == [
        ("picked_up", None),
        ("picked_up", "contacts"),
        ("picked_up", "ops"),
        ("succeeded", None),
        ("succeeded", "contacts"),
        ("succeeded", "ops"),
    ]
    assert all("evil.example" not in " ".join(mail.rcpt_tos) for mail in mails)
    assert all(b"spy@evil.example" not in mail.data for mail in mails if mail.copy is None)
    contacts = " ".join(mails[4].text().split())
    assert "Not sent to spy@evil.example: evil.example is not one of the account's allowed domains" in contacts
    assert "notify.address_dropped" in daemon.log()


def test_a_destination_answering_4xx_does_not_delay_other_partners(
    mail_daemon: Callable[..., tuple[Daemon, Partner]], smtp_server: SMTPServer
) -> None:
    daemon, partner = mail_daemon()
    smtp_server.deferred_domains.add("stuck.example")
    partner.upload("events.csv", EVENTS_CSV, "stuck.manifest", {**EVENTS_MANIFEST, "clientEmail": "a@stuck.example"})
    _finished(daemon, 1)
    partner.upload("events.csv", EVENTS_CSV, "fine.manifest", EVENTS_MANIFEST)
    mails = until_event(smtp_server, "succeeded", daemon)
    first, second = _finished(daemon, 2)
    assert [(mail.message["X-Ingestd-Job"], mail.rcpt_tos) for mail in mails] == [
        (str(second["id"]), [PARTNER]),
        (str(second["id"]), [PARTNER]),
    ]
    assert "notify.retry" in daemon.log() and "stuck.example" in daemon.log()
    smtp_server.deferred_domains.clear()  # the destination recovers: its emails follow, in order
    late = [mail for mail in job_mails(smtp_server, 4, daemon) if mail.message["X-Ingestd-Job"] == str(first["id"])]
    assert [(mail.event, mail.rcpt_tos) for mail in late] == [
        ("picked_up", ["a@stuck.example"]),
        ("succeeded", ["a@stuck.example"]),
    ]


def test_a_recipient_refused_for_good_is_shown_on_the_import(
    mail_daemon: Callable[..., tuple[Daemon, Partner]], smtp_server: SMTPServer
) -> None:
    daemon, partner = mail_daemon()
    smtp_server.refused.add("gone@example.com")
    partner.upload(
        "events.csv", EVENTS_CSV, "events.manifest", {**EVENTS_MANIFEST, "clientEmail": [PARTNER, "gone@example.com"]}
    )
    picked, done = job_mails(smtp_server, 2, daemon)
    assert picked.rcpt_tos == done.rcpt_tos == [PARTNER]
    (job,) = _finished(daemon, 1)
    deadline = time.monotonic() + 30
    while True:  # the refusal of the last email is recorded just after the server answered
        result = daemon.cli("imports", "show", str(job["id"]), "--json")
        undelivered = json.loads(result.stdout)["details"].get("undelivered") or []
        if len(undelivered) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [(entry["to"], entry["event"]) for entry in undelivered] == [
        ("gone@example.com", "picked_up"),
        ("gone@example.com", "succeeded"),
    ]
    assert all(entry["error"].startswith("550") for entry in undelivered)
    assert "notify.refused" in daemon.log()
    shown = daemon.cli("imports", "show", str(job["id"])).stdout
    assert "undelivered emails:" in shown and "- succeeded to gone@example.com: 550" in shown


def test_a_stuck_destination_turns_healthz_unhealthy_naming_it(
    mail_daemon: Callable[..., tuple[Daemon, Partner]], smtp_server: SMTPServer
) -> None:
    import sqlite3
    import urllib.error
    import urllib.request

    daemon, partner = mail_daemon(INGESTD_NOTIFY__OPS_EMAILS="")
    smtp_server.deferred_domains.add("stuck.example")
    partner.upload("events.csv", EVENTS_CSV, "events.manifest", {**EVENTS_MANIFEST, "clientEmail": "a@stuck.example"})
    state = daemon.data_dir / "state.sqlite3"

    def query(sql: str) -> list[tuple]:
        with contextlib.closing(sqlite3.connect(state, timeout=30)) as conn, conn:
            return conn.execute(sql).fetchall()

    def healthz() -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"{daemon.http_url}/healthz", timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    deadline = time.monotonic() + 90
    while not query("SELECT 1 FROM outbox WHERE attempts >= 3 AND sent_at IS NULL"):
        assert time.monotonic() < deadline, daemon.log()[-4000:]
        time.sleep(0.2)
    assert healthz()[0] == 200  # failing for seconds only: not stuck yet
    query("UPDATE outbox SET created_at = '2000-01-01T00:00:00.000000Z'")  # as if for much longer
    status, body = healthz()
    assert status == 503
    assert body["reason"].startswith("notifier: outbox: email:stuck.example stuck for ")
    assert "451 4.4.1" in body["checks"]["notifier"]

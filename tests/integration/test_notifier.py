"""The Notifier against a real SMTP server (aiosmtpd): content, recipients, attachments, outages, restarts, TLS."""

from __future__ import annotations

import gzip
import random
from collections import Counter
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from daemon.store import StateDB
from notifier.outbox import backoff
from tests.fixtures.jobs import add_job
from tests.fixtures.smtp import (
    SMTPServer,
    job,
    make_notifier,
    notifier_config,
    outbox_rows,
    running,
    wait_until,
)


def _smtp_env(server: SMTPServer, **extra: str) -> dict[str, str]:
    return {"INGESTD_SMTP__HOST": server.host, "INGESTD_SMTP__PORT": str(server.port), **extra}


def test_pickup_then_success_arrive_in_order_to_partner_and_ops(data_dir: Path, smtp_server: SMTPServer) -> None:
    env = _smtp_env(smtp_server, INGESTD_SMTP__SENDER="Imports <imports@ingestd.test>")
    config = notifier_config(data_dir, **env, INGESTD_NOTIFY__OPS_EMAILS="ops@example.org")
    notifier = make_notifier(config)
    with running(notifier):
        notifier.notify("picked_up", job())
        done = job(status="succeeded", rows_total=4, rows_ingested=4, finished_at="2026-11-22T07:30:09Z")
        notifier.notify("succeeded", done)
        mails = smtp_server.wait_for(4)
    picked, succeeded = [mail for mail in mails if mail.copy is None]
    assert [picked.event, succeeded.event] == ["picked_up", "succeeded"]
    assert picked.subject == "[acme] Picked up: events.csv"
    assert succeeded.subject == "[acme] Imported: events.csv (4 rows)"
    assert succeeded.mail_from == "imports@ingestd.test"
    assert succeeded.rcpt_tos == ["partner@example.com"]
    message = succeeded.message
    assert message["From"] == "Imports <imports@ingestd.test>"
    assert (message["To"], message["Cc"]) == ("partner@example.com", None)
    assert b"ops@example.org" not in picked.data + succeeded.data  # partners never see ops addresses
    assert "events.csv was imported: all 4 rows." in succeeded.text()
    assert "Duration:      8 s" in succeeded.text()
    assert "events.csv was imported: all 4 rows." in succeeded.html()
    assert picked.message_id != succeeded.message_id
    # Ops get their own message, saying whom the partner's went to.
    copies = [mail for mail in mails if mail.copy == "ops"]
    assert [(mail.event, mail.rcpt_tos) for mail in copies] == [
        ("picked_up", ["ops@example.org"]),
        ("succeeded", ["ops@example.org"]),
    ]
    assert "Sent to: partner@example.com." in copies[1].text()
    assert copies[1].message_id != succeeded.message_id and copies[1].subject == succeeded.subject
    rows = outbox_rows(config)
    assert all(row["sent_at"] for row in rows)
    assert [row["channel"] for row in rows] == ["email:example.com", "email:example.org"] * 2


def test_progress_email_tells_share_rows_and_time_left(data_dir: Path, smtp_server: SMTPServer) -> None:
    notifier = make_notifier(notifier_config(data_dir, **_smtp_env(smtp_server)))
    with running(notifier):
        notifier.notify("progress", job(progress={"rows_done": 1_250_000, "fraction": 0.25, "eta_seconds": 3900}))
        (mail,) = smtp_server.wait_for(1)
    assert mail.subject == "[acme] In progress, 25% done: events.csv"
    text = mail.text()
    assert "Rows so far:   1,250,000" in text and "Time left:     about 1 h 5 min" in text


@pytest.mark.parametrize(
    ("error", "extra", "subject_end", "words"),
    [
        (
            "Incorrect details in manifest file",
            {"file_name": "", "problems": ["unknown key 'filename' — did you mean 'fileName'?"]},
            "Failed: events.manifest (manifest has errors)",
            "did you mean 'fileName'?",
        ),
        ("No data file found", {}, "Failed: events.csv (no data file found)", 'file name in "fileName"'),
        (
            "File couldn't be read: no header row",
            {},
            "Failed: events.csv (file couldn't be read)",
            "it needs a header row",
        ),
        (
            "All rows failed",
            {"rows_total": 3, "rows_failed": 3},
            "Failed: events.csv (all rows failed)",
            "nothing was imported",
        ),
        ("Internal error", {}, "Failed: events.csv (internal error)", "error on our side"),
    ],
)
def test_each_failure_kind_says_why_and_what_to_do(
    data_dir: Path, smtp_server: SMTPServer, error: str, extra: dict, subject_end: str, words: str
) -> None:
    notifier = make_notifier(notifier_config(data_dir, **_smtp_env(smtp_server)))
    with running(notifier):
        notifier.notify("failed", job(status="failed", error=error, **extra))
        (mail,) = smtp_server.wait_for(1)
    assert mail.subject == f"[acme] {subject_end}"
    assert words.lower() in mail.text().lower()
    assert mail.attachments() == []


def test_unreadable_manifest_goes_to_the_recovered_address_and_ops(data_dir: Path, smtp_server: SMTPServer) -> None:
    config = notifier_config(data_dir, **_smtp_env(smtp_server), INGESTD_NOTIFY__OPS_EMAILS="ops@example.com")
    notifier = make_notifier(config)
    failed = {"status": "failed", "error": "Incorrect details in manifest file", "file_name": ""}
    with running(notifier):
        notifier.notify("failed", job(1, client_emails=["recovered@example.com"], **failed))
        notifier.notify("failed", job(2, client_emails=[], **failed))
        first, first_ops, second_ops = smtp_server.wait_for(3)
    assert first.rcpt_tos == ["recovered@example.com"] and first.copy is None
    assert first_ops.rcpt_tos == ["ops@example.com"] and first_ops.copy == "ops"
    assert second_ops.rcpt_tos == ["ops@example.com"] and second_ops.message["X-Ingestd-Job"] == "2"
    assert "No address of the manifest was emailed." in second_ops.text()


def test_nobody_to_tell_queues_nothing(data_dir: Path) -> None:
    config = notifier_config(data_dir, INGESTD_NOTIFY__OPS_EMAILS="")
    make_notifier(config).notify("failed", job(client_emails=[], status="failed", error="Incorrect manifest"))
    assert outbox_rows(config) == []


def _error_csv(path: Path, rows: int, random_cells: bool = False) -> bytes:
    rng = random.Random(3)
    lines = [b"identity,phone,Failure Description\r\n"]
    for index in range(rows):
        phone = "".join(rng.choice("0123456789abcdef") for _ in range(40)) if random_cells else "+91887"
        lines.append(f"user{index}@example.com,{phone},Phone: Phone number is not valid\r\n".encode())
    data = b"".join(lines)
    path.write_bytes(data)
    return data


def _cwe(path: Path, rows: int) -> dict:
    return job(
        status="completed_with_errors",
        rows_total=rows + 10,
        rows_ingested=10,
        rows_failed=rows,
        reasons=[["Phone: Phone number is not valid", rows]],
        error_csv=str(path),
        details={"error_csv": "errors/7-events.errors.csv"},
    )


def test_error_csv_is_attached_byte_for_byte(data_dir: Path, tmp_path: Path, smtp_server: SMTPServer) -> None:
    data = _error_csv(tmp_path / "errors.csv", 1204)
    notifier = make_notifier(notifier_config(data_dir, **_smtp_env(smtp_server)))
    with running(notifier):
        notifier.notify("completed_with_errors", _cwe(tmp_path / "errors.csv", 1204))
        (mail,) = smtp_server.wait_for(1)
    assert mail.subject == "[acme] Imported with errors: events.csv (1,204 of 1,214 rows failed)"
    assert mail.attachments() == [("7-events.errors.csv", data)]
    assert "1,204 rows: Phone: Phone number is not valid" in mail.text()
    assert "get errors/7-events.errors.csv" in mail.text()


def test_large_error_csv_is_gzipped(data_dir: Path, tmp_path: Path, smtp_server: SMTPServer) -> None:
    data = _error_csv(tmp_path / "errors.csv", 2000)  # ~120 KB of near-identical rows
    config = notifier_config(data_dir, **_smtp_env(smtp_server), INGESTD_NOTIFY__MAX_ATTACHMENT="32KiB")
    notifier = make_notifier(config)
    with running(notifier):
        notifier.notify("completed_with_errors", _cwe(tmp_path / "errors.csv", 2000))
        (mail,) = smtp_server.wait_for(1)
    ((name, content),) = mail.attachments()
    assert name == "7-events.errors.csv.gz" and len(content) <= 32 * 1024
    assert gzip.decompress(content) == data
    assert "compressed with gzip" in mail.text()


def test_error_csv_too_large_even_gzipped_sends_its_first_rows_and_says_so(
    data_dir: Path, tmp_path: Path, smtp_server: SMTPServer
) -> None:
    data = _error_csv(tmp_path / "errors.csv", 5000, random_cells=True)  # ~400 KB, compresses poorly
    config = notifier_config(data_dir, **_smtp_env(smtp_server), INGESTD_NOTIFY__MAX_ATTACHMENT="16KiB")
    notifier = make_notifier(config)
    with running(notifier):
        notifier.notify("completed_with_errors", _cwe(tmp_path / "errors.csv", 5000))
        (mail,) = smtp_server.wait_for(1)
    ((name, content),) = mail.attachments()
    assert len(content) <= 16 * 1024
    first = gzip.decompress(content)
    assert data.startswith(first) and first.endswith(b"\r\n")
    rows = first.count(b"\r\n") - 1
    assert name == f"7-events.errors.first-{rows}-rows.csv.gz"
    text = " ".join(mail.text().split())
    assert f"the first {rows:,} of 5,000 rejected rows only" in text
    assert "get errors/7-events.errors.csv" in text


def test_temporary_smtp_errors_are_retried_until_accepted(data_dir: Path, smtp_server: SMTPServer) -> None:
    config = notifier_config(data_dir, **_smtp_env(smtp_server))
    smtp_server.fail_next(2)
    notifier = make_notifier(config)
    with running(notifier):
        notifier.notify("picked_up", job())
        (mail,) = smtp_server.wait_for(1)
        wait_until(lambda: outbox_rows(config)[0]["sent_at"], what="marked sent")
    assert mail.event == "picked_up"
    (row,) = outbox_rows(config)
    assert row["attempts"] == 3 and "451" in row["last_error"]


def test_smtp_outage_and_restart_lose_nothing_and_send_each_email_once(data_dir: Path, smtp_server: SMTPServer) -> None:
    config = notifier_config(data_dir, **_smtp_env(smtp_server))
    smtp_server.stop()
    first = make_notifier(config)
    with running(first):
        first.notify("picked_up", job(1))
        first.notify("picked_up", job(2))
        first.notify("succeeded", job(1, status="succeeded", rows_total=1, rows_ingested=1))
        # The sender keeps retrying the oldest email (in order: the others wait behind it).
        wait_until(lambda: outbox_rows(config)[0]["attempts"] >= 2, what="failed attempts")
    assert not any(row["sent_at"] for row in outbox_rows(config))

    smtp_server.start()
    second = make_notifier(config)  # a daemon restart: a new process on the same state database
    with running(second):
        mails = smtp_server.wait_for(3)
        wait_until(lambda: all(row["sent_at"] for row in outbox_rows(config)), what="all marked sent")
    third = make_notifier(config)
    with running(third):
        third.notify("picked_up", job(3))  # a marker: once it arrives, the sender has been through the outbox
        mails = smtp_server.wait_for(4)
    assert [(mail.message["X-Ingestd-Job"], mail.event) for mail in mails] == [
        ("1", "picked_up"),
        ("2", "picked_up"),
        ("1", "succeeded"),
        ("3", "picked_up"),
    ]
    assert Counter(mail.message_id for mail in mails).most_common(1)[0][1] == 1


def test_a_permanently_refused_email_does_not_hold_up_the_next(data_dir: Path, smtp_server: SMTPServer) -> None:
    config = notifier_config(data_dir, **_smtp_env(smtp_server), INGESTD_NOTIFY__OPS_EMAILS="")
    smtp_server.refused.add("nobody@example.com")
    notifier = make_notifier(config)
    with running(notifier):
        notifier.notify("picked_up", job(1, client_emails=["nobody@example.com"]))
        notifier.notify("picked_up", job(2))
        (mail,) = smtp_server.wait_for(1)
        wait_until(lambda: outbox_rows(config)[1]["sent_at"], what="second marked sent")
    assert mail.message["X-Ingestd-Job"] == "2"
    refused = outbox_rows(config)[0]
    assert refused["failed_at"] and refused["sent_at"] is None and "550" in refused["last_error"]


def test_without_smtp_emails_become_eml_files(data_dir: Path) -> None:
    config = notifier_config(data_dir)
    notifier = make_notifier(config)
    with running(notifier):
        notifier.notify("picked_up", job())
        notifier.notify("failed", job(status="failed", error="No data file found"))
        files = wait_until(
            lambda: sorted(config.mail_dir.glob("*.eml")) if len(list(config.mail_dir.glob("*.eml"))) == 2 else None
        )
    messages = [message_from_bytes(path.read_bytes(), policy=policy.default) for path in files]
    assert [message["Subject"] for message in messages] == [
        "[acme] Picked up: events.csv",
        "[acme] Failed: events.csv (no data file found)",
    ]
    assert [path.name for path in files] == ["000001-job7-picked_up.eml", "000002-job7-failed.eml"]
    assert "mail   .eml files in" in notifier.banner()[0]


def test_starttls_with_login(data_dir: Path, tls_files, make_smtp_server) -> None:
    server = make_smtp_server(starttls=tls_files.server_context(), credentials=("mailer", "s3cret"))
    env = _smtp_env(server, INGESTD_SMTP__STARTTLS="true", INGESTD_SMTP__USERNAME="mailer")
    notifier = make_notifier(notifier_config(data_dir, **env, INGESTD_SMTP__PASSWORD="s3cret"))
    with running(notifier):
        notifier.notify("picked_up", job())
        (mail,) = server.wait_for(1)
    assert (mail.tls, mail.login) == (True, "mailer")


def test_implicit_tls(data_dir: Path, tls_files, make_smtp_server) -> None:
    server = make_smtp_server(implicit_tls=tls_files.server_context())
    notifier = make_notifier(notifier_config(data_dir, **_smtp_env(server, INGESTD_SMTP__TLS="true")))
    with running(notifier):
        notifier.notify("picked_up", job())
        (mail,) = server.wait_for(1)
    assert mail.tls


def test_wrong_password_is_retried_and_reported_in_health(data_dir: Path, tls_files, make_smtp_server) -> None:
    server = make_smtp_server(starttls=tls_files.server_context(), credentials=("mailer", "right"))
    env = _smtp_env(
        server, INGESTD_SMTP__STARTTLS="true", INGESTD_SMTP__USERNAME="mailer", INGESTD_SMTP__PASSWORD="wrong"
    )
    config = notifier_config(data_dir, **env)
    notifier = make_notifier(config)
    with running(notifier):
        notifier.notify("picked_up", job())
        wait_until(lambda: outbox_rows(config)[0]["attempts"] >= 3, what="three attempts")
        assert notifier.health_reason() is None  # failing for seconds only: not yet stuck
        db = StateDB(config.state_db)
        with db.transaction() as conn:  # as if it had been failing for 11 minutes
            conn.execute("UPDATE outbox SET created_at = '2000-01-01T00:00:00.000000Z'")
        db.close()
        health = notifier.health_reason()
    assert health is not None and "login refused: 535" in health
    assert health.startswith("outbox: email:example.com stuck for ")
    assert server.messages == [] and outbox_rows(config)[0]["failed_at"] is None


def test_a_resend_after_a_crash_carries_the_same_message_id(data_dir: Path, smtp_server: SMTPServer) -> None:
    config = notifier_config(data_dir, **_smtp_env(smtp_server))
    with running(make_notifier(config)) as notifier:
        notifier.notify("picked_up", job())
        (first,) = smtp_server.wait_for(1)
        wait_until(lambda: outbox_rows(config)[0]["sent_at"], what="marked sent")
    # A crash after the server said 250 but before the row was marked: the row is still pending.
    db = StateDB(config.state_db)
    with db.transaction() as conn:
        conn.execute("UPDATE outbox SET sent_at = NULL")
    db.close()
    with running(make_notifier(config)):
        _, again = smtp_server.wait_for(2)
    assert again.message_id == first.message_id and again.data == first.data


def test_back_off_doubles_up_to_the_cap() -> None:
    assert [backoff(attempt, cap=10) for attempt in range(1, 7)] == [1, 2, 4, 8, 10, 10]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INGESTD_NOTIFY__OPS_EMAILS": "ops@example.com,not an address"}, "notify.ops_emails: expected an email"),
        ({"INGESTD_SMTP__SENDER": "nobody"}, "smtp.sender: expected an email address"),
    ],
)
def test_a_bad_address_in_the_config_is_refused_at_start(data_dir: Path, env: dict, message: str) -> None:
    import subprocess
    import sys

    from tests.fixtures.daemon import daemon_env

    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "serve"],
        env=daemon_env(data_dir, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_delivered_rows_are_removed_after_the_retention_period(data_dir: Path, smtp_server: SMTPServer) -> None:
    config = notifier_config(data_dir, **_smtp_env(smtp_server), INGESTD_JOBS__RETENTION_DAYS="30")
    with running(make_notifier(config)) as notifier:
        notifier.notify("picked_up", job(1))
        notifier.notify("picked_up", job(2))
        smtp_server.wait_for(2)
        wait_until(lambda: all(row["sent_at"] for row in outbox_rows(config)), what="both marked sent")
    db = StateDB(config.state_db)
    with db.transaction() as conn:  # as if the first had been delivered 31 days ago
        conn.execute("UPDATE outbox SET sent_at = '2000-01-01T00:00:00.000000Z' WHERE job_id = 1")
    db.close()
    with running(make_notifier(config)):
        pass
    assert [row["job_id"] for row in outbox_rows(config)] == [2]


def test_notify_from_many_threads_at_once_queues_and_delivers_every_email_once(
    data_dir: Path, smtp_server: SMTPServer
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    config = notifier_config(data_dir, **_smtp_env(smtp_server), INGESTD_NOTIFY__OPS_EMAILS="")
    notifier = make_notifier(config)
    with running(notifier), ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda job_id: notifier.notify("picked_up", job(job_id)), range(1, 41)))
        mails = smtp_server.wait_for(40)
    assert sorted(int(mail.message["X-Ingestd-Job"]) for mail in mails) == list(range(1, 41))


def test_the_job_record_says_who_was_emailed_or_that_nobody_could_be(data_dir: Path, smtp_server: SMTPServer) -> None:
    from daemon.store.jobs import JobStore

    config = notifier_config(data_dir, **_smtp_env(smtp_server), INGESTD_NOTIFY__OPS_EMAILS="ops@example.org")
    notifier = make_notifier(config)
    jobs = JobStore(notifier.db)
    told, nobody = add_job(jobs, "acme", "a.manifest"), add_job(jobs, "acme", "b.manifest")
    failed = {"status": "failed", "error": "Incorrect details in manifest file", "file_name": ""}
    with running(notifier):
        notifier.notify("picked_up", job(told, client_emails=["partner@example.com", "not an address"]))
        notifier.notify("failed", job(nobody, client_emails=[], **failed))
        smtp_server.wait_for(3)
    told_import, nobody_import = jobs.get_import(told), jobs.get_import(nobody)
    assert told_import is not None and nobody_import is not None
    (picked,) = told_import["details"]["notified"]
    assert (picked["event"], picked["to"], picked["ops"]) == ("picked_up", ["partner@example.com"], ["ops@example.org"])
    assert "nobody" not in picked and "Not sent to not an address" in picked["note"]
    assert picked["at"].endswith("Z")
    (failure,) = nobody_import["details"]["notified"]
    assert failure["to"] == [] and failure["nobody"] is True and failure["ops"] == ["ops@example.org"]
    assert "no contact address for the account" in failure["note"]

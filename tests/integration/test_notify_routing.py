"""Per-destination queues, 5xx refusals, contacts and allowed domains, the failure-email budget — against aiosmtpd."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from daemon.metrics import REGISTRY
from daemon.store import StateDB
from daemon.store.accounts import AccountStore
from daemon.store.jobs import JobStore
from notifier.service import SMTP_CONNECTIONS
from tests.fixtures.jobs import add_job
from tests.fixtures.smtp import SMTPServer, job, make_notifier, notifier_config, outbox_rows, running, wait_until


def _smtp_env(server: SMTPServer, **extra: str) -> dict[str, str]:
    return {"INGESTD_SMTP__HOST": server.host, "INGESTD_SMTP__PORT": str(server.port), **extra}


def _failed(job_id: int, **changes: object) -> dict:
    return job(job_id, status="failed", error="No data file found", **changes)


def test_a_destination_answering_4xx_delays_only_its_own_emails(data_dir: Path, smtp_server: SMTPServer) -> None:
    config = notifier_config(data_dir, **_smtp_env(smtp_server))
    smtp_server.deferred_domains.add("stuck.example")
    notifier = make_notifier(config)
    with running(notifier):
        notifier.notify("picked_up", job(1, client_emails=["a@stuck.example"]))
        notifier.notify("picked_up", job(2, client_emails=["b@fine.example"]))
        notifier.notify("succeeded", job(1, client_emails=["a@stuck.example"], status="succeeded"))
        notifier.notify("succeeded", job(2, client_emails=["b@fine.example"], status="succeeded"))
        mails = smtp_server.wait_for(2)
        wait_until(lambda: outbox_rows(config)[0]["attempts"] >= 2, what="stuck destination retried")
        rows = {row["id"]: row for row in outbox_rows(config)}
        assert [(mail.message["X-Ingestd-Job"], mail.event) for mail in mails] == [
            ("2", "picked_up"),
            ("2", "succeeded"),
        ]
        # The stuck channel keeps its order: its second email waits behind the first, untried.
        assert rows[1]["channel"] == "email:stuck.example" and "451" in rows[1]["last_error"]
        assert rows[3]["attempts"] == 0 and rows[3]["sent_at"] is None
        smtp_server.deferred_domains.clear()  # the destination recovers
        mails = smtp_server.wait_for(4)
    assert [(mail.message["X-Ingestd-Job"], mail.event) for mail in mails[2:]] == [
        ("1", "picked_up"),
        ("1", "succeeded"),
    ]


def test_one_accounts_slow_destinations_do_not_hold_up_another_accounts_email(
    data_dir: Path, smtp_server: SMTPServer
) -> None:
    config = notifier_config(data_dir, **_smtp_env(smtp_server))
    # Twice as many slow destinations as conversations: first come first served, B would wait for all of them.
    slow = [f"slow{n}.example" for n in range(2 * SMTP_CONNECTIONS)]
    smtp_server.slow_domains.update(dict.fromkeys(slow, 3.0))
    notifier = make_notifier(config)
    with running(notifier):
        for n in range(0, len(slow), 2):
            emails = [f"ops@{slow[n]}", f"ops@{slow[n + 1]}"]
            notifier.notify("picked_up", job(n + 1, account="evil", client_emails=emails))
        wait_until(lambda: len(outbox_rows(config)) == len(slow), what="A's emails queued")
        notifier.notify("picked_up", job(99, account="good", client_emails=["b@fine.example"]))
        (mail,) = smtp_server.wait_for(1, where=lambda m: m.rcpt_tos == ["b@fine.example"])
        rows = outbox_rows(config)
        waiting = [row for row in rows if row["account"] == "evil" and row["sent_at"] is None]
        assert waiting, "B's email went out only after every one of A's"
        assert len(waiting) >= len(slow) - (SMTP_CONNECTIONS - 1)  # one slot was B's all along
        assert mail.message["X-Ingestd-Job"] == "99"
    # stop() let the conversations in flight end and started none: the rest wait in the outbox, untouched.
    evil = [row for row in outbox_rows(config) if row["account"] == "evil"]
    assert all(row["failed_at"] is None for row in evil)
    assert any(row["sent_at"] is None for row in evil)
    smtp_server.slow_domains.clear()
    with running(make_notifier(config)):
        wait_until(lambda: all(row["sent_at"] for row in outbox_rows(config)), what="all delivered after restart")
    received = {rcpt for message in smtp_server.messages for rcpt in message.rcpt_tos}
    assert received == {f"ops@{domain}" for domain in slow} | {"b@fine.example"}


def test_a_recipient_refused_with_5xx_is_given_up_and_recorded_while_the_others_get_the_email(
    data_dir: Path, smtp_server: SMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    config = notifier_config(data_dir, **_smtp_env(smtp_server))
    db = StateDB(config.state_db)
    job_id = add_job(JobStore(db), "acme", "events.manifest")
    smtp_server.refused.add("gone@example.com")
    notifier = make_notifier(config)
    with caplog.at_level(logging.INFO, logger="ingestd.notifier"), running(notifier):
        notifier.notify("succeeded", job(job_id, client_emails=["gone@example.com", "here@example.com"]))
        (mail,) = smtp_server.wait_for(1)
        wait_until(lambda: outbox_rows(config)[0]["sent_at"], what="marked sent")
    assert mail.rcpt_tos == ["here@example.com"]
    (row,) = outbox_rows(config)
    assert row["failed_at"] is None and "gone@example.com: 550" in row["last_error"]
    refused = [record for record in caplog.records if record.getMessage() == "notify.refused"]
    assert [record.__dict__["fields"]["to"] for record in refused] == ["gone@example.com"]
    imported = JobStore(db).get_import(job_id)
    assert imported is not None
    (undelivered,) = imported["details"]["undelivered"]
    assert undelivered["to"] == "gone@example.com" and undelivered["event"] == "succeeded"
    assert undelivered["error"].startswith("550")
    db.close()


def test_contacts_are_told_when_the_manifest_names_nobody_and_about_every_failure(
    data_dir: Path, smtp_server: SMTPServer
) -> None:
    config = notifier_config(data_dir, **_smtp_env(smtp_server))
    AccountStore(StateDB(config.state_db)).set("acme", emails=["contact@example.com"])
    notifier = make_notifier(config)
    with running(notifier):
        notifier.notify("picked_up", job(1))  # all is well: the partner only
        notifier.notify("failed", _failed(2, client_emails=[]))  # nobody in the manifest: contacts stand in
        notifier.notify("failed", _failed(3))  # a failure: partner, and contacts too
        mails = smtp_server.wait_for(4)
    assert [(m.message["X-Ingestd-Job"], m.rcpt_tos, m.copy) for m in mails] == [
        ("1", ["partner@example.com"], None),
        ("2", ["contact@example.com"], "contacts"),
        ("3", ["partner@example.com"], None),
        ("3", ["contact@example.com"], "contacts"),
    ]
    texts = [" ".join(mail.text().split()) for mail in mails]
    assert "the manifest names no email address we could read" in texts[1]
    assert "contacts are told about every failed import" in texts[3]
    assert "Sent to: partner@example.com." in texts[3]


def test_addresses_outside_the_allowed_domains_are_never_emailed(data_dir: Path, smtp_server: SMTPServer) -> None:
    config = notifier_config(data_dir, **_smtp_env(smtp_server, INGESTD_NOTIFY__MAX_RECIPIENTS="2"))
    AccountStore(StateDB(config.state_db)).set("acme", emails=["contact@example.com"], allowed_domains=["example.com"])
    notifier = make_notifier(config)
    emails = ["partner@example.com", "spy@evil.example", "third@example.com"]
    with running(notifier):
        notifier.notify("succeeded", job(1, client_emails=emails, status="succeeded"))
        partner, contacts = smtp_server.wait_for(2)
    assert partner.rcpt_tos == ["partner@example.com"] and partner.message["To"] == "partner@example.com"
    assert contacts.rcpt_tos == ["contact@example.com"] and contacts.copy == "contacts"
    text = " ".join(contacts.text().split())
    assert "Not sent to spy@evil.example: evil.example is not one of the account's allowed domains" in text
    assert "Not sent to third@example.com: the manifest names more than 2 addresses" in text
    assert all("evil.example" not in address for row in outbox_rows(config) for address in row["target"].split(","))


def test_failure_emails_beyond_the_hourly_budget_are_summarised_once(data_dir: Path, smtp_server: SMTPServer) -> None:
    config = notifier_config(data_dir, **_smtp_env(smtp_server, INGESTD_NOTIFY__MAX_FAILURE_EMAILS="2"))
    with running(make_notifier(config)) as notifier:
        for job_id in range(1, 6):
            notifier.notify("failed", _failed(job_id))
        notifier.notify("picked_up", job(9))  # other emails are not counted
        mails = smtp_server.wait_for(3)
    assert [(m.message["X-Ingestd-Job"], m.event) for m in mails] == [
        ("1", "failed"),
        ("2", "failed"),
        ("9", "picked_up"),
    ]
    db = StateDB(config.state_db)
    held = db.query("SELECT job_id FROM notify_failures WHERE emailed = 0 ORDER BY id")
    assert [row["job_id"] for row in held] == [3, 4, 5]

    # A restart does not reset the budget: still held back.
    with running(make_notifier(config)) as notifier:
        notifier.notify("failed", _failed(6))
    with db.transaction() as conn:  # as if an hour had passed since they were held back
        conn.execute("UPDATE notify_failures SET at = at - 3601")
    with running(make_notifier(config)) as notifier:
        summary = smtp_server.wait_for(1, where=lambda m: m.event == "failures_summary")[0]
        assert asyncio.run(notifier.summarise()) == 0  # one summary an hour: nothing left to summarise
    assert summary.subject == "[acme] 4 more failed imports, not emailed one by one"
    assert summary.rcpt_tos == ["partner@example.com"]
    text = " ".join(summary.text().split())
    assert "Job ids: 3, 4, 5, 6" in text and "activity log" in text
    assert "after the 2 failure emails an account gets per hour" in text
    assert len(smtp_server.messages) == 4
    db.close()


def test_oldest_pending_email_age_is_a_metric(data_dir: Path, smtp_server: SMTPServer) -> None:
    config = notifier_config(data_dir, **_smtp_env(smtp_server))
    smtp_server.deferred_domains.add("example.com")
    with running(make_notifier(config)) as notifier:
        notifier.notify("picked_up", job(1))
        wait_until(lambda: outbox_rows(config)[0]["attempts"] >= 1, what="an attempt")
        db = StateDB(config.state_db)
        with db.transaction() as conn:
            conn.execute("UPDATE outbox SET created_at = '2000-01-01T00:00:00.000000Z'")
        db.close()
        notifier._update_depth()
        age = REGISTRY.get_sample_value("ingestd_outbox_oldest_pending_seconds")
        assert age is not None and age > 3600
        smtp_server.deferred_domains.clear()
        smtp_server.wait_for(1)
        gauge = "ingestd_outbox_oldest_pending_seconds"
        wait_until(lambda: REGISTRY.get_sample_value(gauge) == 0, what="nothing pending")

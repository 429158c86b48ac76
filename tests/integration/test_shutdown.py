"""One `jobs.shutdown_grace` for the whole stop of `ingestd serve`: uploads and deliveries in flight finish in it."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.daemon import Daemon
from tests.fixtures.samples import EVENTS_CSV, EVENTS_MANIFEST
from tests.fixtures.smtp import SMTPServer
from tests.fixtures.sshkeys import paramiko_sftp
from tests.integration.test_e2e import ACCOUNT, Partner, finished

TEMP_PREFIX = ".ingestd-upload-"


def wait_for(what: str, check: Callable[[], object], daemon: Daemon, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{daemon.log()[-4000:]}")
        time.sleep(0.02)


def test_an_upload_in_flight_at_sigterm_finishes_within_the_shutdown_grace_and_is_imported_after_restart(
    make_daemon: Callable[..., Daemon], keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    daemon = make_daemon(INGESTD_JOBS__SHUTDOWN_GRACE="60s")
    daemon.add_key(ACCOUNT, keypair[1])
    partner = Partner(daemon, keypair[0], tmp_path / "partner")
    drop = daemon.drop(ACCOUNT)
    data = EVENTS_CSV.encode()
    with paramiko_sftp(daemon.sftp_port, ACCOUNT, keypair[0]) as sftp:
        sftp.put(str(partner.file("events.manifest", EVENTS_MANIFEST)), "events.manifest")  # waits for its CSV
        remote = sftp.open("events.csv", "wb")
        remote.write(data[: len(data) // 2])
        remote.flush()
        wait_for("the temp file", lambda: any(p.name.startswith(TEMP_PREFIX) for p in drop.iterdir()), daemon)
        assert daemon.process is not None
        os.kill(daemon.process.pid, signal.SIGTERM)
        wait_for("the daemon to start draining", lambda: "sftp.draining" in daemon.log(), daemon)
        remote.write(data[len(data) // 2 :])
        remote.close()
    assert daemon.stop() == 0
    # The SFTP process was given the configured grace (what remained of it), not a constant of its own.
    [grace] = re.findall(r"sftp\.draining .*grace_s=([\d.]+)", daemon.log())
    assert 50 < float(grace) <= 60
    daemon.start()
    [job] = finished(daemon, 1)
    assert (job["status"], job["rows_ingested"]) == ("succeeded", 4)


def outbox(daemon: Daemon) -> list[tuple[str, str | None]]:
    """(event, sent_at) of each email row, oldest first."""
    conn = sqlite3.connect(daemon.data_dir / "state.sqlite3", timeout=30)
    try:
        return conn.execute("SELECT event, sent_at FROM outbox WHERE kind = 'email' ORDER BY id").fetchall()
    finally:
        conn.close()


@pytest.mark.slow
def test_a_delivery_in_flight_at_sigterm_is_marked_sent_and_not_sent_again_after_restart(
    make_daemon: Callable[..., Daemon], smtp_server: SMTPServer, keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    # The relay takes 4s over each email: longer than the notifier's own 3s of before, well within the grace.
    smtp_server.slow_domains["example.com"] = 4.0
    daemon = make_daemon(
        INGESTD_SMTP__HOST=smtp_server.host,
        INGESTD_SMTP__PORT=str(smtp_server.port),
        INGESTD_SMTP__MAX_RETRY_DELAY="1s",
        INGESTD_JOBS__SHUTDOWN_GRACE="30s",
    )
    daemon.add_key(ACCOUNT, keypair[1])
    Partner(daemon, keypair[0], tmp_path / "partner").upload(
        "events.csv", EVENTS_CSV, "events.manifest", EVENTS_MANIFEST
    )
    wait_for("the picked-up email to be in flight", lambda: smtp_server.held, daemon)
    assert daemon.stop() == 0
    # The email in flight was accepted and recorded as sent; the next one waited (not started during the stop).
    assert [(event, sent is not None) for event, sent in outbox(daemon)] == [("picked_up", True), ("succeeded", False)]
    assert [mail.event for mail in smtp_server.messages] == ["picked_up"]
    smtp_server.slow_domains.clear()
    daemon.start()
    wait_for("the succeeded email", lambda: len(smtp_server.messages) == 2, daemon)
    assert [mail.event for mail in smtp_server.messages] == ["picked_up", "succeeded"]
    wait_for("both rows sent", lambda: all(sent for _, sent in outbox(daemon)), daemon)


def test_a_second_sigterm_cuts_an_upload_in_flight_at_once_and_keeps_it_for_reput(
    make_daemon: Callable[..., Daemon], keypair: tuple[Path, Path]
) -> None:
    daemon = make_daemon(INGESTD_JOBS__SHUTDOWN_GRACE="1h")  # only a second signal ends this stop soon
    daemon.add_key(ACCOUNT, keypair[1])
    drop = daemon.drop(ACCOUNT)
    with paramiko_sftp(daemon.sftp_port, ACCOUNT, keypair[0]) as sftp:
        remote = sftp.open("never.csv", "wb")
        remote.write(b"identity\n1\n")
        remote.flush()
        wait_for("the temp file", lambda: any(p.name.startswith(TEMP_PREFIX) for p in drop.iterdir()), daemon)
        assert daemon.process is not None
        os.kill(daemon.process.pid, signal.SIGTERM)
        wait_for("the daemon to start draining", lambda: "sftp.draining" in daemon.log(), daemon)
        assert daemon.running  # waiting for the upload
        assert daemon.stop(signal.SIGTERM, timeout=60) == 0
    assert "service.forced_stop" in daemon.log()
    assert "never.csv" not in os.listdir(drop)
    assert (drop / ".ingestd-partial" / "never.csv").read_bytes() == b"identity\n1\n"

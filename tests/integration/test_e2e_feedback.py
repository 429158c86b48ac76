"""Through `ingestd serve`, OpenSSH's sftp and a real SMTP server: cancel, dry runs, reports and true progress."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fixtures.daemon import Daemon
from tests.fixtures.smtp import SMTPServer
from tests.fixtures.sshkeys import sftp_batch
from tests.integration.test_e2e import ACCOUNT, cli_json, finished, wait_for
from tests.integration.test_emails_e2e import (  # noqa: F401 - mail_daemon is a fixture
    PARTNER,
    Partner,
    job_mails,
    mail_daemon,
    profile_manifest,
)


def job(daemon: Daemon, job_id: int) -> dict[str, Any]:
    return cli_json(daemon, "imports", "show", str(job_id))


def api(daemon: Daemon, path: str) -> Any:
    with urllib.request.urlopen(f"{daemon.http_url}{path}", timeout=30) as response:
        return json.loads(response.read())


def test_removing_a_waiting_manifest_over_sftp_cancels_it_tells_the_partner_and_frees_the_account(
    mail_daemon: Callable[..., tuple[Daemon, Partner]],  # noqa: F811
    smtp_server: SMTPServer,
) -> None:
    daemon, partner = mail_daemon()
    partner.upload(None, "", "late.manifest", profile_manifest("late.csv"))
    [late] = wait_for(
        "the manifest waiting",
        lambda: [j for j in cli_json(daemon, "imports", "list") if j["status"] == "waiting_for_data"],
        daemon,
    )
    partner.upload("next.csv", "identity,Name\njane,Jane\n", "next.manifest", profile_manifest("next.csv"))
    result = sftp_batch(daemon.sftp_port, ACCOUNT, partner.key, ["rm late.manifest"])
    assert result.returncode == 0, result.stderr
    cancelled, done = finished(daemon, 2)
    assert (cancelled["id"], cancelled["status"]) == (late["id"], "cancelled")
    assert "removed from your folder" in cancelled["error"] and done["status"] == "succeeded"
    events = [entry["event"] for entry in cancelled["details"]["timeline"]]
    assert events == ["queued", "waiting_for_data", "cancelled", "finished"]
    mails = job_mails(smtp_server, 3, daemon)
    [mail] = [mail for mail in mails if mail.event == "cancelled"]
    assert mail.subject == "[acme] Cancelled: late.csv" and mail.rcpt_tos == [PARTNER]
    assert "was cancelled" in mail.text() and "removed from your folder" in mail.text()
    # Not a failure: ops are not told a file was unreadable, and no report is left.
    assert cancelled["error"] != "File couldn't be read"
    assert not (daemon.drop(ACCOUNT) / "errors").exists()


def test_a_dry_run_stores_nothing_and_reports_everything(
    mail_daemon: Callable[..., tuple[Daemon, Partner]],  # noqa: F811
    smtp_server: SMTPServer,
) -> None:
    daemon, partner = mail_daemon()
    rows = "identity,Name,Phone\njohn,John,+14155550100\njane,Jane,12\n"
    partner.upload("p.csv", rows, "p.manifest", profile_manifest("p.csv", dryRun=True))
    [result] = finished(daemon, 1)
    assert result["status"] == "completed_with_errors" and result["dry_run"] is True
    assert (result["rows_total"], result["rows_ingested"], result["rows_failed"]) == (2, 1, 1)
    assert daemon.cli("profiles", "get", ACCOUNT, "john").returncode == 1  # nothing stored
    assert api(daemon, f"/api/imports/{result['id']}")["dry_run"] is True
    picked, done = job_mails(smtp_server, 2, daemon)
    assert picked.event == "picked_up" and done.event == "completed_with_errors"
    assert "Dry run" in done.subject and "nothing was stored" in done.text()
    [(name, data)] = done.attachments()
    assert name == f"{result['id']}-p.errors.csv" and b"jane,Jane,12," in data
    # The report, whatever was emailed: `get` tells the partner why.
    report = partner.get(result["details"]["report"]).decode()
    assert "dry run" in report and "Rows: 2 read, 1 valid, 1 rejected" in report


def test_imports_cancel_stops_a_processing_import_at_a_batch_and_the_next_one_runs(
    make_daemon: Callable[..., Daemon], keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    daemon = make_daemon(INGESTD_JOBS__BATCH_ROWS="100", INGESTD_JOBS__COMMIT_ROWS="100")
    daemon.add_key(ACCOUNT, keypair[1])
    partner = Partner(daemon, keypair[0], tmp_path / "partner")
    total = 200_000
    partner.upload(
        "big.csv",
        "identity,Name\n" + "".join(f"u{i},N{i}\n" for i in range(total)),
        "big.manifest",
        profile_manifest("big.csv"),
    )
    partner.upload("next.csv", "identity,Name\njane,Jane\n", "next.manifest", profile_manifest("next.csv"))
    big = wait_for(
        "the import under way",
        lambda: [j for j in cli_json(daemon, "imports", "list") if j["status"] == "processing" and j["rows_total"]],
        daemon,
    )[0]
    result = daemon.cli("imports", "cancel", str(big["id"]))
    assert result.returncode == 0, result.stderr
    assert "next batch boundary" in result.stdout
    cancelled, done = finished(daemon, 2)
    assert cancelled["status"] == "cancelled" and done["status"] == "succeeded"
    # What was written stays (and is counted); the rest of the file was never read.
    assert 0 < cancelled["rows_ingested"] == cancelled["rows_total"] < total
    assert cancelled["error"] == "cancelled by an operator (ingestd imports cancel)"
    events = [entry["event"] for entry in cancelled["details"]["timeline"]]
    assert events == ["queued", "picked_up", "cancelled", "finished"]
    # A finished import cannot be cancelled again; it can be retried from its kept files.
    assert daemon.cli("imports", "cancel", str(cancelled["id"])).returncode == 2


def test_progress_mid_import_is_within_a_few_percent_of_the_rows_done(
    make_daemon: Callable[..., Daemon], keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    daemon = make_daemon(INGESTD_JOBS__BATCH_ROWS="500", INGESTD_JOBS__COMMIT_ROWS="500")
    daemon.add_key(ACCOUNT, keypair[1])
    partner = Partner(daemon, keypair[0], tmp_path / "partner")
    total = 100_000
    # Rows of very different lengths: a share of bytes read would not be a share of rows done.
    body = "".join(f"u{i},{'x' * (200 if i < total // 10 else 1)}\n" for i in range(total))
    partner.upload("p.csv", "identity,Name\n" + body, "p.manifest", profile_manifest("p.csv"))
    seen: list[dict[str, Any]] = []

    def observe() -> bool:
        jobs = api(daemon, "/api/imports")
        items = jobs["imports"] if isinstance(jobs, dict) else jobs
        if not items:
            return False
        current = api(daemon, f"/api/imports/{items[0]['id']}")
        progress = current["details"].get("progress")
        if current["status"] == "processing" and progress and progress["fraction"] is not None:
            seen.append({"rows_total": current["rows_total"], **progress})
        return current["status"] != "processing" and current["finished_at"] is not None

    wait_for("the import to finish", observe, daemon)
    middle = [item for item in seen if 0 < item["rows_done"] < total]
    assert middle, "no progress was seen mid-import"
    for item in middle:
        # rows_done is what was validated and written; the fraction is that share of the file's rows.
        assert item["rows_done"] == item["rows_total"]
        assert abs(item["rows_expected"] - total) <= total * 0.02
        assert abs(item["fraction"] - item["rows_done"] / total) <= 0.03
        assert item["eta_seconds"] is None or item["eta_seconds"] >= 0

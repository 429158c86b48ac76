"""Rendered emails: golden files for every kind, the docs' copies, wording rules, formatting and attachments."""

from __future__ import annotations

import gzip
import os
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from jinja2 import UndefinedError

from daemon.config import load_config
from daemon.jobs import messages
from daemon.units import duration_text, setting_text, size_text
from notifier.attachment import prepare_attachment
from notifier.compose import compose_email, compose_emails, render_email
from notifier.render import (
    build_context,
    environment,
    failure_kind,
    fmt_int,
    fmt_percent,
    render_bodies,
)
from notifier.samples import DOC_SAMPLES, NOW, SAMPLES, render_sample, sample_config, sample_job

GOLDEN = Path(__file__).parent / "golden"
DOCS = Path(__file__).parents[2] / "docs" / "emails"
# UPDATE_GOLDEN=1 rewrites the golden files (and docs/emails) from the current templates; review the diff.
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _check(path: Path, actual: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"{path} missing: run UPDATE_GOLDEN=1 pytest {__file__}"
    assert actual == path.read_text(encoding="utf-8"), f"{path.name} changed: review, then UPDATE_GOLDEN=1"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_rendered_email_matches_golden_file(name: str, tmp_path: Path) -> None:
    # The emails shown to readers in docs/emails are golden files themselves: one copy, always current.
    folder = DOCS if name in DOC_SAMPLES else GOLDEN
    text, html = render_sample(name, tmp_path)
    _check(folder / f"{name}.txt", text)
    _check(folder / f"{name}.html", html)


def test_subjects_are_short_and_name_the_file_and_outcome(tmp_path: Path) -> None:
    subjects = {name: render_sample(name, tmp_path)[0].splitlines()[0] for name in SAMPLES}
    for subject in subjects.values():
        assert len(subject) <= len("Subject: ") + 78, subject
        assert "events.csv" in subject or "orders.manifest" in subject
    assert subjects["succeeded"] == "Subject: [acme] Imported: events.csv (50,000 rows)"
    assert subjects["completed_with_errors"].endswith("(1,204 of 50,000 rows failed)")
    assert subjects["failed_manifest"] == "Subject: [acme] Failed: orders.manifest (manifest has errors)"
    assert subjects["failed_no_data_file"].endswith("(no data file found)")
    assert subjects["failed_file_unreadable"].endswith("(file couldn't be read)")
    assert subjects["failed_all_rows"].endswith("(all rows failed)")
    assert subjects["failed_internal"].endswith("(internal error)")


def test_every_failure_kind_has_its_own_next_steps(tmp_path: Path) -> None:
    steps = {}
    for name in (
        "failed_manifest",
        "failed_no_data_file",
        "failed_file_unreadable",
        "failed_all_rows",
        "failed_internal",
    ):
        text = render_sample(name, tmp_path)[0]
        steps[name] = text.split("What to do next", 1)[1].split("-- ", 1)[0]
    assert len(set(steps.values())) == len(steps)
    assert "fileName" in steps["failed_no_data_file"]
    assert "header row" in steps["failed_file_unreadable"]
    assert "job 42" in steps["failed_internal"]


def test_reasons_are_grouped_with_thousands_separators(tmp_path: Path) -> None:
    text, html = render_sample("completed_with_errors", tmp_path)
    assert "1,100 rows: Phone: Phone number is not valid" in text
    assert "4 rows: Event name is mandatory" in text
    assert "1,100 rows</td>" in html


def test_many_reasons_and_problems_are_capped_with_a_count_of_the_rest(tmp_path: Path) -> None:
    _, job = sample_job("completed_with_errors", tmp_path)
    job["reasons"] = [[f"problem {index}", 10] for index in range(25)]
    job["problems"] = [f"detail {index}" for index in range(60)]
    context = build_context("completed_with_errors", job, progress_interval=7200, now=NOW)
    text, _ = render_bodies(context)
    assert "problem 19" in text and "problem 20" not in text
    assert "… and 5 more kinds of problem on 50 rows" in text
    assert "… and 10 more" in text


def test_html_escapes_partner_supplied_text(tmp_path: Path) -> None:
    _, job = sample_job("failed_manifest", tmp_path)
    job["problems"] = ["<script>alert(1)</script> & more"]
    job["manifest_name"] = "<b>x</b>.manifest"
    _, html = render_bodies(build_context("failed", job, progress_interval=0, now=NOW))
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert "&lt;b&gt;x&lt;/b&gt;.manifest" in html


def test_templates_refuse_undefined_variables() -> None:
    with pytest.raises(UndefinedError):
        environment().get_template("email.txt").render({"outcome": "x"})


def test_unknown_kind_is_a_clear_error(tmp_path: Path) -> None:
    _, job = sample_job("succeeded", tmp_path)
    with pytest.raises(ValueError, match="unknown notification kind 'done'"):
        build_context("done", job, progress_interval=0, now=NOW)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("Incorrect details in manifest file", "manifest"),
        ("Every manifest file must have a unique name", "manifest"),
        ("No data file found", "no_data_file"),
        ("File couldn't be read: no header row", "file_unreadable"),
        ("All rows failed", "all_rows_failed"),
        ("Internal error", "internal"),
    ],
)
def test_failure_kind_is_named_by_the_worker_and_never_guessed_from_the_wording(error: str, expected: str) -> None:
    # The worker names the kind from its own reason constants (daemon/jobs/messages.py) ...
    assert messages.failure_kind(error) == expected
    # ... and the notifier takes what it was told: an error that merely mentions a manifest is not a manifest problem.
    assert failure_kind({"error": error, "failure": expected}) == expected
    assert failure_kind({"error": "manifest.csv could not be read", "rows_total": 3, "rows_failed": 3}) == "internal"


def test_formatting_helpers_read_naturally() -> None:
    assert fmt_int(1204) == "1,204" and fmt_int(None) == "0"
    assert fmt_percent(0.4567) == "45%" and fmt_percent(0.999) == "99%" and fmt_percent(0.001) == "<1%"
    assert fmt_percent(None) == "?%"
    assert [duration_text(s) for s in (5, 125, 3600, 7500, 90000)] == [
        "5 s",
        "2 min 5 s",
        "1 h",
        "2 h 5 min",
        "1 d 1 h",
    ]
    assert duration_text(0.2) == "<1 s" and duration_text(0.35, precise=True) == "350 ms"
    assert duration_text(12.34, precise=True) == "12.3 s" and duration_text(61, precise=True) == "1 min 1 s"
    assert size_text(297) == "297 bytes" and size_text(10 * 1024 * 1024) == "10 MiB" and size_text(1536) == "1.5 KiB"
    assert size_text(5 * 1024**3) == "5 GiB" and size_text(1000) == "1,000 bytes"
    assert [setting_text(s) for s in (900, 7200, 90, 0.5)] == ["15m", "2h", "90s", "0.5s"]


def test_ops_get_their_own_copy_and_never_appear_in_the_partners_message(tmp_path: Path) -> None:
    kind, job = sample_job("completed_with_errors", tmp_path)
    partner, ops = compose_emails(kind, job, sample_config(), now=NOW)
    assert (partner.audience, partner.recipients) == ("partner", ["partner@example.com"])
    assert (ops.audience, ops.recipients) == ("ops", ["ops@example.com"])
    partner_message = message_from_bytes(partner.data, policy=policy.default)
    assert "ops@example.com" not in partner.data.decode() and partner_message["Cc"] is None
    ops_message = message_from_bytes(ops.data, policy=policy.default)
    assert ops_message["X-Ingestd-Copy"] == "ops" and ops.message_id != partner.message_id
    ops_text = ops_message.get_body(("plain",))
    assert ops_text is not None
    assert "Sent to: partner@example.com." in ops_text.get_content()
    assert [part.get_filename() for part in ops_message.iter_attachments()] == ["42-events.errors.csv"]


def test_composed_email_is_multipart_with_headers_for_threading_and_filters(tmp_path: Path) -> None:
    kind, job = sample_job("completed_with_errors", tmp_path)
    email = compose_email(kind, job, sample_config(), now=datetime(2026, 11, 22, 8, 0, tzinfo=UTC))
    assert email is not None
    assert b"\r\n" in email.data  # SMTP line ends, stored as sent
    message = message_from_bytes(email.data, policy=policy.default)
    assert message["To"] == "partner@example.com" and message["Cc"] is None
    assert message["Message-ID"] == email.message_id
    assert message["X-Ingestd-Job"] == "42" and message["X-Ingestd-Event"] == "completed_with_errors"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["References"].startswith("<ingestd.job.42.")
    assert message.get_body(("plain",)) is not None and message.get_body(("html",)) is not None
    attachments = list(message.iter_attachments())
    assert [part.get_filename() for part in attachments] == ["42-events.errors.csv"]
    assert attachments[0].get_content_type() == "text/csv"
    assert email.recipients == ["partner@example.com"]


def test_nobody_to_tell_means_no_email(tmp_path: Path) -> None:
    kind, job = sample_job("failed_manifest", tmp_path)
    job["client_emails"] = []
    assert compose_email(kind, job, load_config(environ={})) is None


def _csv(path: Path, rows: int, width: int = 60, multiline_every: int = 0) -> bytes:
    import random

    rng = random.Random(7)
    lines = [b"identity,note,Failure Description\r\n"]
    for index in range(rows):
        note = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(width))
        if multiline_every and index % multiline_every == 0:
            note = f'"{note[:10]}\r\nsecond ""line"" {note[10:]}"'
        lines.append(f"user{index},{note},Phone: Phone number is not valid\r\n".encode())
    data = b"".join(lines)
    path.write_bytes(data)
    return data


def test_small_error_csv_is_attached_as_is(tmp_path: Path) -> None:
    data = _csv(tmp_path / "e.csv", 10)
    attachment = prepare_attachment(tmp_path / "e.csv", "1-e.errors.csv", 10 * 1024)
    assert (attachment.mode, attachment.data, attachment.content_type) == ("full", data, ("text", "csv"))


def test_error_csv_over_the_limit_is_gzipped_whole(tmp_path: Path) -> None:
    data = _csv(tmp_path / "e.csv", 400, width=4)  # repetitive: compresses well
    attachment = prepare_attachment(tmp_path / "e.csv", "1-e.errors.csv", len(data) // 3)
    assert attachment.mode == "gzip" and attachment.filename == "1-e.errors.csv.gz"
    assert gzip.decompress(attachment.data) == data
    assert len(attachment.data) <= len(data) // 3


def test_error_csv_too_large_even_gzipped_keeps_its_first_whole_records(tmp_path: Path) -> None:
    data = _csv(tmp_path / "e.csv", 3000, multiline_every=7)
    limit = 8 * 1024
    attachment = prepare_attachment(tmp_path / "e.csv", "1-e.errors.csv", limit)
    assert attachment.mode == "truncated"
    assert len(attachment.data) <= limit
    part = gzip.decompress(attachment.data)
    assert data.startswith(part) and part.endswith(b"\r\n")
    import csv
    import io

    records = list(csv.reader(io.StringIO(part.decode(), newline="")))
    assert records[0] == ["identity", "note", "Failure Description"]
    assert attachment.rows is not None and len(records) - 1 == attachment.rows > 50
    assert [row[0] for row in records[1:]] == [f"user{index}" for index in range(attachment.rows)]
    assert attachment.filename == f"1-e.errors.first-{attachment.rows}-rows.csv.gz"


def test_error_csv_whose_header_alone_is_too_large_is_not_attached(tmp_path: Path) -> None:
    _csv(tmp_path / "e.csv", 3000)
    assert prepare_attachment(tmp_path / "e.csv", "x.csv", 20).mode == "none"
    assert prepare_attachment(tmp_path / "missing.csv", "x.csv", 20).mode == "missing"


def test_progress_without_a_known_share_says_so_plainly(tmp_path: Path) -> None:
    _, job = sample_job("progress", tmp_path)
    job["progress"] = {"rows_done": 500, "fraction": None, "eta_seconds": None}
    context = build_context("progress", job, progress_interval=7200, now=NOW)
    assert context["subject"] == "[acme] In progress: events.csv"
    assert ("Time left", "still estimating") in context["facts"]


def test_a_line_break_in_a_file_name_cannot_break_the_headers(tmp_path: Path) -> None:
    kind, job = sample_job("completed_with_errors", tmp_path)
    job["file_name"] = "evil\r\nBcc: victim@example.com.csv"
    email = compose_email(kind, job, sample_config(), now=NOW)
    assert email is not None
    message = message_from_bytes(email.data, policy=policy.default)
    assert message["Bcc"] is None
    assert message["Subject"].startswith("[acme] Imported with errors: evil Bcc: victim@example.com.csv (")
    assert [part.get_filename() for part in message.iter_attachments()] == [
        "42-evil__Bcc: victim@example.com.errors.csv"
    ]


def test_counts_read_right_for_one_row_and_dry_runs_say_nothing_was_stored(tmp_path: Path) -> None:
    config = sample_config()
    one = {"status": "succeeded", "rows_total": 1, "rows_ingested": 1, "finished_at": "2026-11-22T07:41:14Z"}
    context, text, html, _ = render_email("succeeded", {**sample_job("succeeded", tmp_path)[1], **one}, config, NOW)
    assert context["subject"] == "[acme] Imported: events.csv (1 row)"
    assert "events.csv was imported: its 1 row." in text and "1 rows" not in text + html
    cwe = {**sample_job("completed_with_errors", tmp_path)[1], "rows_failed": 1, "rows_total": 2, "rows_ingested": 1}
    context, text, _, _ = render_email("completed_with_errors", cwe, config, NOW)
    assert context["subject"] == "[acme] Imported with errors: events.csv (1 of 2 rows failed)"
    assert "1 of 2 rows was rejected." in text and "(1 rejected row," in text
    dry = {**sample_job("completed_with_errors", tmp_path)[1], "dry_run": True}
    context, text, html, _ = render_email("completed_with_errors", dry, config, NOW)
    assert context["subject"] == "[acme] Dry run found errors: events.csv (1,204 of 50,000 rows would fail)"
    assert "nothing is stored" in text and "nothing is stored" in html
    assert "Rows valid:    48,796" in text and "Rows imported" not in text
    assert "The rows that passed were imported" not in text
    # Without the keys, nothing about dry runs or duplicates.
    _, plain, _, _ = render_email(
        "completed_with_errors", sample_job("completed_with_errors", tmp_path)[1], config, NOW
    )
    assert "Dry run" not in plain and "Duplicates" not in plain
    dup = {**sample_job("succeeded", tmp_path)[1], "rows_duplicate": 1}
    assert "Duplicates:    1 row already present" in render_email("succeeded", dup, config, NOW)[1]

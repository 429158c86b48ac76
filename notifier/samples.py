"""Sample jobs for every email, rendered for the golden tests and docs/emails/ (`python -m notifier.samples DIR`)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.config import Config, load_config
from daemon.jobs.messages import failure_kind
from notifier.compose import render_email

_BASE: dict[str, Any] = {
    "id": 42,
    "account": "acme",
    "file_name": "events.csv",
    "manifest_name": "events.manifest",
    "type": "event",
    "status": "processing",
    "rows_total": 0,
    "rows_ingested": 0,
    "rows_failed": 0,
    "created_at": "2026-11-22T07:30:00Z",
    "started_at": "2026-11-22T07:30:02Z",
    "finished_at": None,
    "error": None,
    "details": {},
    "client_emails": ["partner@example.com"],
    "problems": [],
    "reasons": [],
    "error_csv": None,
}

_ERROR_CSV = (
    "event_name,time_stamp,identity,phone,Failure Description\r\n"
    "Purchased,1578503667,john.doe@example.com,+91887654,Phone: Phone number is not valid\r\n"
    ",1578503668,,+918876543212,Atleast one of identity / fbId / gpId / objectId is mandatory under 1024 chars"
    " to identify the user; Event name is mandatory\r\n"
)

_FINISHED = {"finished_at": "2026-11-22T07:41:14Z", "details": {"duration_ms": 672_000}}

_REASONS = [
    ["Phone: Phone number is not valid", 1_100],
    ["Atleast one of identity / fbId / gpId / objectId is mandatory under 1024 chars to identify the user", 100],
    ["Event name is mandatory", 4],
]

# name -> (kind, changes to the base job)
SAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "picked_up": ("picked_up", {}),
    "progress": (
        "progress",
        {"progress": {"rows_done": 1_250_000, "fraction": 0.4567, "eta_seconds": 8_700}},
    ),
    "succeeded": (
        "succeeded",
        {"status": "succeeded", "rows_total": 50_000, "rows_ingested": 50_000, **_FINISHED},
    ),
    "completed_with_errors": (
        "completed_with_errors",
        {
            "status": "completed_with_errors",
            "rows_total": 50_000,
            "rows_ingested": 48_796,
            "rows_failed": 1_204,
            "reasons": _REASONS,
            "error_csv": "ERROR_CSV",
            **_FINISHED,
        },
    ),
    "succeeded_dry_run": (
        "succeeded",
        {"status": "succeeded", "rows_total": 1, "rows_ingested": 0, "dry_run": True, **_FINISHED},
    ),
    "completed_with_errors_reimport": (
        "completed_with_errors",
        {
            "status": "completed_with_errors",
            "rows_total": 50_000,
            "rows_ingested": 48_796,
            "rows_failed": 1,
            "rows_duplicate": 48_000,
            "reasons": [["Phone: Phone number is not valid", 1]],
            "error_csv": "ERROR_CSV",
            **_FINISHED,
        },
    ),
    "failed_manifest": (
        "failed",
        {
            "status": "failed",
            "file_name": "",
            "manifest_name": "orders.manifest",
            "type": "",
            "error": "Incorrect details in manifest file",
            "problems": [
                "fileName: required key is missing",
                "type: expected 'event' or 'profile', found 'profiles' — did you mean 'profile'?",
                "columns.Age.dataType: expected one of STRING, INTEGER, FLOAT, BOOLEAN, LONG, found 'INT'"
                " — did you mean 'INTEGER'?",
                "unknown key 'filename' — did you mean 'fileName'?",
            ],
            "client_emails": ["partner@example.com"],  # recovered from the broken manifest
            "started_at": None,  # it never got past pickup
            "finished_at": "2026-11-22T07:30:01Z",
        },
    ),
    "failed_no_data_file": (
        "failed",
        {
            "status": "failed",
            "error": "No data file found",
            "problems": ["events.csv did not arrive within 15 min of the manifest"],
            "finished_at": "2026-11-22T07:45:02Z",
        },
    ),
    "failed_file_unreadable": (
        "failed",
        {
            "status": "failed",
            "error": "File couldn't be read: byte 0xff at line 12 is not valid UTF-8",
            **_FINISHED,
        },
    ),
    "failed_all_rows": (
        "failed",
        {
            "status": "failed",
            "error": "All rows failed",
            "rows_total": 1_204,
            "rows_failed": 1_204,
            "reasons": _REASONS,
            "error_csv": "ERROR_CSV",
            **_FINISHED,
        },
    ),
    "failed_internal": (
        "failed",
        {
            "status": "failed",
            "error": "Internal error while importing data",
            "failure": "internal",
            "problems": ["the sink stopped answering: database disk image is malformed"],
            "rows_total": 20_000,
            "rows_ingested": 10_000,
            **_FINISHED,
        },
    ),
}

# The clock for progress emails ("running for"), fixed so renders are reproducible.
NOW = datetime(2026, 11, 22, 9, 30, 2, tzinfo=UTC)

# The ones copied to docs/emails/ for readers.
DOC_SAMPLES = ("picked_up", "progress", "succeeded", "completed_with_errors", "failed_manifest", "failed_no_data_file")


def sample_config() -> Config:
    return load_config(environ={"INGESTD_NOTIFY__OPS_EMAILS": "ops@example.com"})


def sample_job(name: str, workdir: Path) -> tuple[str, dict[str, Any]]:
    """(kind, job) for a sample; its error CSV, if any, is written into `workdir`."""
    kind, changes = SAMPLES[name]
    job = {**_BASE, **changes}
    if kind == "failed":  # named as the worker names it (daemon/jobs/notices.py)
        job.setdefault("failure", failure_kind(job["error"]))
    if job["error_csv"] == "ERROR_CSV":
        path = Path(workdir) / f"{name}.errors.csv"
        path.write_bytes(_ERROR_CSV.encode())
        job["error_csv"] = str(path)
    return kind, job


def render_sample(name: str, workdir: Path) -> tuple[str, str]:
    """(text with a Subject line on top, HTML) exactly as the email's bodies."""
    kind, job = sample_job(name, workdir)
    context, text, html, _ = render_email(kind, job, sample_config(), NOW)
    return f"Subject: {context['subject']}\n\n{text}", html


def write_docs(folder: Path, names: tuple[str, ...] = DOC_SAMPLES) -> list[Path]:
    import tempfile

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in names:
            text, html = render_sample(name, Path(workdir))
            for suffix, body in ((".txt", text), (".html", html)):
                path = folder / f"{name}{suffix}"
                path.write_text(body, encoding="utf-8")
                written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_docs(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/emails")):
        print(written_path)

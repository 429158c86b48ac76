"""The notification payload, built once here for every sender (the workers, `ingestd imports cancel`)."""

from __future__ import annotations

from typing import Any

from daemon.store.jobs import JobStore


def build_payload(store: JobStore, job_id: int, **extra: Any) -> dict[str, Any]:
    """The import dict of the API plus what the notifier needs, named explicitly so that it guesses nothing:

    `client_emails`, `problems`, `reasons`, `progress`, `error_csv` (the full error CSV to attach),
    `partner_error_csv` / `partner_report` (their paths in the partner's folder, `errors/...`, or None when
    they could not be written) and, for `failed`, `failure` (one of notifier.texts.FAILURE_KINDS)."""
    job = store.get_import(job_id) or {"id": job_id}
    details = job.get("details") or {}
    return {
        **job,
        "client_emails": [],
        "problems": [],
        "reasons": [],
        "error_csv": None,
        "partner_error_csv": details.get("error_csv"),
        "partner_report": details.get("report"),
        "progress": None,
        **extra,
    }

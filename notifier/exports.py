"""Export run notices: an email to the account's contacts (and a `*.export` request's clientEmail), ops' own copy,
and a signed webhook, when a run is done or failed, listing its files. Queued in the outbox like every email."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html import escape
from typing import Any

from notifier.compose import build_message

SUBJECT_DONE = "Export {id} of {account} is done: {rows} rows in {files} file(s)"
SUBJECT_FAILED = "Export {id} of {account} failed: {reason}"
INTRO_DONE = "Export {id} ({selection}, {format}) finished its run {run_ts}: {rows} rows in {files} file(s)."
INTRO_FAILED = "Export {id} ({selection}, {format}) could not finish its run {run_ts}: {reason}"
RETRY_NOTE = "It is recurring: the next run, {next_run}, takes this run's rows too."
WHERE_SFTP = "The files are in the exports/ folder of your SFTP account: get them, and remove them when done."
WHERE_S3 = "The files are in {destination}."
NO_FILES = "Nothing matched the selection in this run, so there are no files."


def _lines(status: str, export: dict[str, Any], run: dict[str, Any]) -> tuple[str, list[str]]:
    selection = ", ".join(export["events"]) if export["events"] else f"all {export['type']}"
    fields = {
        "id": export["id"],
        "account": export["account"],
        "selection": selection,
        "format": export["format"],
        "run_ts": run["run_ts"],
        "rows": run["rows"],
        "files": len(run["files"]),
        "reason": run.get("error") or export.get("error") or "",
        "next_run": export.get("next_run_at") or "",
        "destination": export["destination"],
    }
    if status == "done":
        subject = SUBJECT_DONE.format(**fields)
        lines = [INTRO_DONE.format(**fields)]
        if run.get("note"):
            lines.append(str(run["note"]))
        if run["files"]:
            lines.append(WHERE_SFTP if export["destination"] == "sftp" else WHERE_S3.format(**fields))
            lines += [f"  {item['location']}  ({item['rows']} rows, {item['bytes']} bytes)" for item in run["files"]]
        else:
            lines.append(NO_FILES)
    else:
        subject = SUBJECT_FAILED.format(**fields)
        lines = [INTRO_FAILED.format(**fields)]
        if export["recurring"]:
            lines.append(RETRY_NOTE.format(**fields))
    return subject[:200], lines


def queue_export_notice(notifier: Any, status: str, export: dict[str, Any], run: dict[str, Any]) -> None:
    """Store the emails and webhook bodies for one finished run in the outbox, in one transaction."""
    account = export["account"]
    contacts = notifier.accounts.contacts(account)[0] if account else []
    partners = list(dict.fromkeys([*export.get("emails", []), *contacts]))
    ops = [address for address in notifier.config.notify.ops_emails if address not in partners]
    subject, lines = _lines(status, export, run)
    text = "\n".join(lines) + "\n"
    html = "".join(f"<p>{escape(line)}</p>" for line in lines)
    kind = f"export_{status}"
    now = datetime.now(UTC)
    emails = []
    for audience, addresses in (("partner", partners), ("ops", ops)):
        if addresses:
            headers = {"X-Ingestd-Account": account, "X-Ingestd-Export": str(export["id"]), "X-Ingestd-Event": kind}
            if audience != "partner":
                headers["X-Ingestd-Copy"] = audience
            emails.append(
                build_message(
                    notifier.config,
                    to=addresses,
                    subject=subject,
                    text=text,
                    html=html,
                    now=now,
                    idstring=f"ingestd.export.{export['id']}.{run['id']}.{audience}",
                    thread=f"ingestd.export.{export['id']}",
                    headers=headers,
                    audience=audience,
                )
            )
    body = json.dumps(
        {
            "event": kind,
            "occurred_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "export": {key: export.get(key) for key in ("id", "account", "type", "events", "format", "destination")},
            "run": {key: run.get(key) for key in ("id", "run_ts", "status", "rows", "bytes", "note", "error", "files")},
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    with notifier.db.transaction() as conn:
        for email in emails:
            notifier.queue_email(conn, email, None, kind, account)
        notifier.queue_webhooks(conn, None, kind, body, account)
    notifier.wake()

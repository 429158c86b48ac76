"""The failure-email budget: at most `notify.max_failure_emails` failure emails per account per hour; the
others are held back (table notify_failures, so a restart keeps the count) and named in one summary an hour."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

from daemon.config import Config
from daemon.store import StateDB
from daemon.store.db import for_update
from notifier import texts
from notifier.compose import Email, build_message
from notifier.render import environment, fmt_int

WINDOW = 3600.0  # seconds: the budget's sliding window, and the least time between two summaries
MAX_LISTED_JOBS = 100  # job ids a summary lists before "… and N more"
KEEP = 2 * 86400.0  # settled budget rows are deleted after this many seconds


def take(
    conn: sqlite3.Connection, account: str, job_id: int | None, limit: int, recipients: dict[str, list[str]], now: float
) -> bool:
    """Inside the caller's transaction: True when this failure may be emailed, False when it is held back."""
    used = conn.execute(
        "SELECT COUNT(*) FROM notify_failures WHERE account = ? AND emailed = 1 AND at > ?", (account, now - WINDOW)
    ).fetchone()[0]
    emailed = used < limit
    conn.execute(
        "INSERT INTO notify_failures (account, job_id, at, emailed, recipients) VALUES (?, ?, ?, ?, ?)",
        (account, job_id, now, int(emailed), "[]" if emailed else json.dumps(recipients)),
    )
    return emailed


def due(db: StateDB, now: float) -> list[str]:
    """Accounts whose oldest failure not yet summarised was held back at least WINDOW seconds ago."""
    rows = db.query(
        "SELECT account FROM notify_failures WHERE emailed = 0 AND summarised_at IS NULL"
        " GROUP BY account HAVING MIN(at) <= ? ORDER BY account",
        (now - WINDOW,),
    )
    return [row["account"] for row in rows]


def claim(conn: sqlite3.Connection, account: str, now: float) -> list[sqlite3.Row]:
    """Inside the caller's transaction: the held-back failures of `account` not yet summarised, marked as summarised."""
    # Locked (shared state): a second node summarising the same account at once finds them summarised.
    rows = conn.execute(
        "SELECT * FROM notify_failures WHERE account = ? AND emailed = 0 AND summarised_at IS NULL ORDER BY id"
        + for_update(conn),
        (account,),
    ).fetchall()
    if rows:
        conn.execute(
            "UPDATE notify_failures SET summarised_at = ? WHERE account = ? AND emailed = 0 AND summarised_at IS NULL",
            (now, account),
        )
    return rows


def prune(db: StateDB, now: float) -> int:
    with db.transaction() as conn:
        return conn.execute(
            "DELETE FROM notify_failures WHERE at < ? AND (emailed = 1 OR summarised_at IS NOT NULL)", (now - KEEP,)
        ).rowcount


def compose_summary(account: str, rows: list[sqlite3.Row], config: Config, now: datetime) -> list[Email]:
    """The summary to the held-back emails' recipients (partners and contacts) and its own copy for ops."""
    partners: list[str] = []
    ops: list[str] = []
    for row in rows:
        recipients = json.loads(row["recipients"] or "{}")
        for address in [*recipients.get("partners", []), *recipients.get("contacts", [])]:
            if address.lower() not in {a.lower() for a in partners}:
                partners.append(address)
        for address in recipients.get("ops", []):
            if address.lower() not in {a.lower() for a in [*ops, *partners]}:
                ops.append(address)
    # The newest addresses win when there are many: a partner who changed address gets it at the new one.
    partners = partners[-(config.notify.max_recipients + 20) :]
    context = summary_context(account, rows, config.notify.max_failure_emails)
    env = environment()
    emails = []
    for audience, to in (("partner", partners), ("ops", ops)):
        if not to:
            continue
        view = {**context, "notice": [texts.OPS_SUMMARY_NOTICE.format(addresses=", ".join(partners) or "—")]}
        if audience == "partner":
            view["notice"] = []
        emails.append(
            build_message(
                config,
                to=to,
                subject=context["subject"],
                text=env.get_template("summary.txt").render(view),
                html=env.get_template("summary.html").render(view),
                now=now,
                idstring=f"ingestd.summary.{account}.{audience}",
                thread=f"ingestd.summary.{account}",
                headers={"X-Ingestd-Account": account, "X-Ingestd-Event": "failures_summary"}
                | ({"X-Ingestd-Copy": "ops"} if audience == "ops" else {}),
                audience=audience,
            )
        )
    return emails


def summary_context(account: str, rows: list[Any], limit: int) -> dict[str, Any]:
    jobs = [str(row["job_id"]) for row in rows if row["job_id"] is not None]
    listed = ", ".join(jobs[:MAX_LISTED_JOBS])
    if len(jobs) > MAX_LISTED_JOBS:
        listed += " " + texts.SUMMARY_MORE_JOBS.format(count=fmt_int(len(jobs) - MAX_LISTED_JOBS))
    many = len(rows) != 1
    values = {
        "account": account,
        "count": fmt_int(len(rows)),
        "limit": fmt_int(limit),
        "failed_imports": "failed imports" if many else "failed import",
        "imports": "imports" if many else "import",
    }
    first, last = (_stamp(rows[0]["at"]), _stamp(rows[-1]["at"])) if rows else ("—", "—")
    return {
        "subject": " ".join(texts.SUMMARY_SUBJECT.format(**values).split()),
        "headline": texts.SUMMARY_HEADLINE.format(**values),
        "jobs": texts.SUMMARY_JOBS.format(jobs=listed or "—"),
        "period": texts.SUMMARY_FIRST_LAST.format(first=first, last=last),
        "next_steps_title": texts.SECTION_TITLES["next_steps"],
        "next_steps": [step.format(**values) for step in texts.SUMMARY_NEXT_STEPS],
        "footer": texts.SUMMARY_FOOTER.format(**values),
    }


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

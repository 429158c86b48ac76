"""Email bodies: a job dict becomes a template context (texts.py wording), rendered by jinja2 as text and HTML."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from daemon.jobs.paths import partner_error_name
from daemon.units import duration_text, size_text
from notifier import texts
from notifier.attachment import Attachment

# How many grouped reasons and listed problems an email shows before "… and N more".
MAX_REASONS = 20
MAX_PROBLEMS = 50

# Badge colours (background, text) per tone; accessible contrast on white.
BADGES = {
    "info": "background:#deebff;color:#0747a6;",
    "ok": "background:#e3fcef;color:#006644;",
    "warn": "background:#fffae6;color:#974f0c;",
    "bad": "background:#ffebe6;color:#bf2600;",
}

TONES = {
    "picked_up": "info",
    "progress": "info",
    "succeeded": "ok",
    "completed_with_errors": "warn",
    "failed": "bad",
    "cancelled": "warn",
}


@lru_cache(maxsize=1)
def environment() -> Environment:
    """StrictUndefined: a misspelt variable is an error in the tests, not a blank in a partner's inbox."""
    return Environment(
        loader=PackageLoader("notifier", "templates"),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_bodies(context: dict[str, Any]) -> tuple[str, str]:
    """(plain text, HTML) for a context from build_context()."""
    env = environment()
    return env.get_template("email.txt").render(context), env.get_template("email.html").render(context)


def failure_kind(job: dict[str, Any]) -> str:
    """One of texts.FAILURE_KINDS: the payload's `failure` (daemon/jobs/messages.failure_kind named it from the
    reason), never guessed from the wording of the error; `internal` when a sender named none."""
    explicit = job.get("failure")
    return str(explicit) if explicit in texts.FAILURE_KINDS else "internal"


def display_file(job: dict[str, Any]) -> str:
    return job.get("file_name") or job.get("manifest_name") or "(unknown file)"


def partner_error_path(job: dict[str, Any]) -> str:
    """Where the partner finds the error CSV over SFTP: the worker's record of it, else the agreed name."""
    recorded = _details(job).get("error_csv")
    if isinstance(recorded, str) and recorded.startswith("errors/"):
        return recorded
    return f"errors/{partner_error_name(job.get('id') or 0, display_file(job))}"


def build_context(
    kind: str,
    job: dict[str, Any],
    *,
    progress_interval: float,
    now: datetime,
    attachment: Attachment | None = None,
    attachment_limit: int = 0,
    notice: list[str] | None = None,
) -> dict[str, Any]:
    """Everything the templates show, already worded and formatted; the templates only lay it out."""
    if kind not in texts.KINDS:
        raise ValueError(f"unknown notification kind {kind!r}; expected one of {', '.join(texts.KINDS)}")
    file = display_file(job)
    fkind = failure_kind(job) if kind == "failed" else None
    reason = _reason(job, fkind)
    progress = job.get("progress") or {}
    dry_run = bool(job.get("dry_run"))
    failed_count = _int(job.get("rows_failed"))
    values = {
        "account": job.get("account") or "?",
        "file": file,
        "manifest": job.get("manifest_name") or "?",
        "job_id": job.get("id"),
        "rows_total": fmt_int(job.get("rows_total")),
        "rows_ingested": fmt_int(job.get("rows_ingested")),
        "rows_failed": fmt_int(job.get("rows_failed")),
        "percent": fmt_percent(progress.get("fraction")),
        "reason": reason,
        "short_reason": texts.SHORT_REASONS[fkind] if fkind else "",
        "interval": duration_text(progress_interval),
        "total_rows": plural(job.get("rows_total"), "row"),
        "ingested_rows": plural(job.get("rows_ingested"), "row"),
        # "all 4 rows", "its 1 row": the rows imported, or in a dry run the rows checked.
        "all_rows": _all_rows(job.get("rows_ingested" if kind == "succeeded" and not dry_run else "rows_total")),
        "were": "was" if failed_count == 1 else "were",
    }
    next_key = fkind or kind
    progress_note = texts.PROGRESS_NOTE.format(**values) if progress_interval > 0 else ""
    next_steps = texts.NEXT_STEPS[next_key]
    if dry_run and kind in texts.DRY_RUN_NEXT_STEPS:
        next_steps = texts.DRY_RUN_NEXT_STEPS[kind]
    steps = [step.format(progress_note=progress_note, **values) for step in next_steps]
    reasons, more_reasons = _reasons(job)
    problems = [str(problem) for problem in job.get("problems") or []]
    more_problems = ""
    if len(problems) > MAX_PROBLEMS:
        more_problems = texts.MORE_PROBLEMS.format(count=fmt_int(len(problems) - MAX_PROBLEMS))
        problems = problems[:MAX_PROBLEMS]
    attachment_note, sftp_command = _attachment_notes(job, attachment, attachment_limit)
    sftp_text = texts.SFTP_NOTE if sftp_command else ""
    wording = "progress_unknown" if kind == "progress" and progress.get("fraction") is None else kind
    # A file name may hold any character; a header may not hold a line break.
    subjects = texts.DRY_RUN_SUBJECTS if dry_run else texts.SUBJECTS
    subject = " ".join(subjects[wording].format(**values).split())
    headlines = texts.HEADLINES
    if dry_run and wording in texts.DRY_RUN_HEADLINES:
        headlines = texts.DRY_RUN_HEADLINES
    return {
        "kind": kind,
        "notice": list(notice or []),
        "tone": TONES[kind],
        "badge_style": BADGES[TONES[kind]],
        "subject_file": file,
        "outcome": (texts.DRY_RUN_OUTCOMES if dry_run else texts.OUTCOMES)[kind],
        "dry_run_note": texts.DRY_RUN_NOTE if dry_run else "",
        "subject": subject,
        "headline": headlines[wording].format(**values),
        "explanation": texts.FAILURE_EXPLANATIONS[fkind].format(**values) if fkind else "",
        "facts_title": texts.SECTION_TITLES["facts"],
        "facts": _facts(kind, job, progress, now),
        "reasons_title": texts.SECTION_TITLES["reasons"],
        "reasons": reasons,
        "reasons_width": max((len(reason["count"]) for reason in reasons), default=0),
        "more_reasons": more_reasons,
        "problems_title": texts.SECTION_TITLES["problems_manifest" if fkind == "manifest" else "problems"],
        "problems": problems,
        "more_problems": more_problems,
        "attachment_title": texts.SECTION_TITLES["attachment"],
        "attachment_note": attachment_note,
        "sftp_note": f"{sftp_text} {sftp_command}" if sftp_command else "",
        "sftp_note_text": sftp_text,
        "sftp_command": sftp_command,
        "next_steps_title": texts.SECTION_TITLES["next_steps"],
        "next_steps": steps,
        "footer": texts.FOOTER.format(**values),
    }


def _reason(job: dict[str, Any], fkind: str | None) -> str:
    if not fkind:
        return ""
    reason = str(job.get("error") or texts.DEFAULT_REASONS[fkind]).strip()
    return reason.rstrip(".") or texts.DEFAULT_REASONS[fkind]


def _reasons(job: dict[str, Any]) -> tuple[list[dict[str, str]], str]:
    grouped = [(str(message), _int(count)) for message, count in job.get("reasons") or []]
    shown = [
        {"count": fmt_int(count), "rows": "row" if count == 1 else "rows", "message": message}
        for message, count in grouped[:MAX_REASONS]
    ]
    rest = grouped[MAX_REASONS:]
    more = ""
    if rest:
        kinds = f"{fmt_int(len(rest))} more kind{'' if len(rest) == 1 else 's'}"
        more = texts.MORE_REASONS.format(kinds=kinds, rows=plural(sum(count for _, count in rest), "row"))
    return shown, more


def _attachment_notes(job: dict[str, Any], attachment: Attachment | None, limit: int) -> tuple[str, str]:
    if not job.get("error_csv"):
        return "", ""
    sftp_note = texts.SFTP_COMMAND.format(path=partner_error_path(job))
    if attachment is None:
        return "", sftp_note
    note = texts.ATTACHMENT_NOTES[attachment.mode].format(
        filename=attachment.filename,
        rows=fmt_int(attachment.rows if attachment.rows is not None else job.get("rows_failed")),
        rejected_rows=plural(
            attachment.rows if attachment.rows is not None else job.get("rows_failed"), "rejected row"
        ),
        rows_failed=fmt_int(job.get("rows_failed")),
        size=size_text(attachment.size),
        limit=size_text(limit),
    )
    return note, sftp_note


def _facts(kind: str, job: dict[str, Any], progress: dict[str, Any], now: datetime) -> list[tuple[str, str]]:
    label = texts.FACT_LABELS
    facts: list[tuple[str, str]] = [(label["account"], str(job.get("account") or "?"))]
    if job.get("file_name"):
        facts.append((label["file"], str(job["file_name"])))
    facts.append((label["manifest"], str(job.get("manifest_name") or "?")))
    if job.get("type"):
        facts.append((label["type"], texts.TYPE_NAMES.get(job["type"], str(job["type"]))))
    facts.append((label["job_id"], str(job.get("id"))))
    dry_run = bool(job.get("dry_run"))
    if dry_run:
        facts.append((label["dry_run"], texts.DRY_RUN_FACT))
    started = parse_time(job.get("started_at"))
    if kind == "picked_up":
        facts.append((label["received"], fmt_time(job.get("created_at"))))
        facts.append((label["started"], fmt_time(job.get("started_at"))))
        return facts
    if kind == "progress":
        facts.append((label["rows_done"], fmt_int(progress.get("rows_done"))))
        facts.append((label["progress"], fmt_percent(progress.get("fraction"))))
        eta = progress.get("eta_seconds")
        facts.append((label["eta"], f"about {duration_text(eta)}" if eta is not None else texts.ETA_UNKNOWN))
        facts.append((label["started"], fmt_time(job.get("started_at"))))
        if started:
            facts.append((label["running_for"], duration_text((now - started).total_seconds())))
        return facts
    counts = [_int(job.get(key)) for key in ("rows_total", "rows_ingested", "rows_failed")]
    if any(counts) and dry_run:  # nothing was ingested: the rows that would have been
        facts.append((label["rows_total"], fmt_int(counts[0])))
        facts.append((label["rows_valid"], fmt_int(max(0, counts[0] - counts[2]))))
        facts.append((label["rows_failed"], fmt_int(counts[2])))
    elif any(counts):
        facts.append((label["rows_total"], fmt_int(counts[0])))
        facts.append((label["rows_ingested"], fmt_int(counts[1])))
        facts.append((label["rows_failed"], fmt_int(counts[2])))
    duplicates = job.get("rows_duplicate")
    if isinstance(duplicates, int) and not isinstance(duplicates, bool) and duplicates > 0:
        facts.append((label["rows_duplicate"], texts.DUPLICATES.format(rows=plural(duplicates, "row"))))
    if started is None:  # failed before pickup: when it arrived is what the partner knows
        facts.append((label["received"], fmt_time(job.get("created_at"))))
    else:
        facts.append((label["started"], fmt_time(job.get("started_at"))))
    facts.append((label["finished"], fmt_time(job.get("finished_at"))))
    duration = _duration_seconds(job, started)
    if duration is not None:
        facts.append((label["duration"], duration_text(duration)))
    return facts


def _duration_seconds(job: dict[str, Any], started: datetime | None) -> float | None:
    details = _details(job)
    if details.get("duration_ms") is not None:
        return _int(details["duration_ms"]) / 1000
    finished = parse_time(job.get("finished_at"))
    if started and finished:
        return max(0.0, (finished - started).total_seconds())
    return None


def _details(job: dict[str, Any]) -> dict[str, Any]:
    details = job.get("details") or {}
    if isinstance(details, str):
        try:
            details = json.loads(details)
        except ValueError:
            return {}
    return details if isinstance(details, dict) else {}


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def fmt_int(value: Any) -> str:
    """1204 -> "1,204"."""
    return f"{_int(value):,}"


def _all_rows(count: Any) -> str:
    return "its 1 row" if _int(count) == 1 else f"all {fmt_int(count)} rows"


def plural(count: Any, noun: str) -> str:
    """(1, "row") -> "1 row", (1204, "row") -> "1,204 rows": every count the emails show reads right."""
    return f"{fmt_int(count)} {noun}{'' if _int(count) == 1 else 's'}"


def fmt_percent(fraction: Any) -> str:
    """Never rounds up to 100% before the end, never shows 0% once started."""
    if fraction is None:
        return "?%"
    share = max(0.0, min(1.0, float(fraction))) * 100
    if 0 < share < 1:
        return "<1%"
    return f"{math.floor(share)}%"


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def fmt_time(value: Any) -> str:
    stamp = parse_time(value)
    if stamp is None:
        return "—"
    return stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

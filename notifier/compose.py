"""A whole RFC 5322 email for one event: recipients, headers, text and HTML bodies, the error CSV attachment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from typing import Any

from daemon.config import Config
from notifier.attachment import Attachment, prepare_attachment
from notifier.render import build_context, partner_error_path, render_bodies

# Events whose email carries the error CSV (when the job has one).
ATTACHING_KINDS = ("completed_with_errors", "failed")


@dataclass(frozen=True)
class Email:
    message_id: str
    subject: str
    sender: str  # envelope sender (bare address)
    recipients: list[str]  # envelope recipients: To and Cc
    data: bytes  # the message as sent, CRLF line ends


def recipients(job: dict[str, Any], ops_emails: list[str]) -> tuple[list[str], list[str]]:
    """(To, Cc): the partner's addresses, ops copied; ops alone when no partner address could be recovered."""
    seen: set[str] = set()

    def unique(addresses: list[str]) -> list[str]:
        kept = []
        for address in addresses:
            address = str(address).strip()
            if address and address.lower() not in seen:
                seen.add(address.lower())
                kept.append(address)
        return kept

    partners = unique(list(job.get("client_emails") or []))
    ops = unique(list(ops_emails))
    return (partners, ops) if partners else (ops, [])


def compose_email(kind: str, job: dict[str, Any], config: Config, now: datetime | None = None) -> Email | None:
    """The email for `kind`, or None when there is nobody to send it to."""
    to, cc = recipients(job, config.notify.ops_emails)
    if not to:
        return None
    now = now or datetime.now(UTC)
    context, text, html, attachment = render_email(kind, job, config, now)
    sender = parseaddr(config.smtp.sender)[1] or config.smtp.sender
    domain = sender.rpartition("@")[2] or "localhost"
    message = EmailMessage()
    message["Subject"] = context["subject"]
    message["From"] = config.smtp.sender
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Date"] = format_datetime(now.astimezone(UTC))
    # Random but stored with the outbox row, so a resend after a crash carries the same id.
    message_id = make_msgid(idstring=f"ingestd.{job.get('id')}.{kind}", domain=domain)
    message["Message-ID"] = message_id
    # One synthetic thread root per job, so mail clients group a job's emails together.
    message["References"] = f"<ingestd.job.{job.get('id')}.{_compact(job.get('created_at'))}@{domain}>"
    message["Auto-Submitted"] = "auto-generated"
    message["X-Ingestd-Account"] = str(job.get("account") or "")
    message["X-Ingestd-Job"] = str(job.get("id"))
    message["X-Ingestd-Event"] = kind
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    if attachment is not None and attachment.data:
        maintype, subtype = attachment.content_type
        message.add_attachment(attachment.data, maintype=maintype, subtype=subtype, filename=attachment.filename)
    everyone = to + cc
    utf8 = any(not address.isascii() for address in [sender, *everyone])
    data = message.as_bytes(policy=policy.SMTPUTF8 if utf8 else policy.SMTP)
    return Email(message_id, context["subject"], sender, everyone, data)


def render_email(
    kind: str, job: dict[str, Any], config: Config, now: datetime
) -> tuple[dict[str, Any], str, str, Attachment | None]:
    """(context, text body, HTML body, attachment) for one event."""
    attachment = _attachment(kind, job, config.notify.max_attachment)
    context = build_context(
        kind,
        job,
        progress_interval=config.notify.progress_interval,
        now=now,
        attachment=attachment,
        attachment_limit=config.notify.max_attachment,
    )
    text, html = render_bodies(context)
    return context, text, html, attachment


def _attachment(kind: str, job: dict[str, Any], limit: int) -> Attachment | None:
    if kind not in ATTACHING_KINDS or not job.get("error_csv"):
        return None
    # Control characters are legal in a file name but not in a MIME header.
    filename = "".join(ch if ch.isprintable() else "_" for ch in partner_error_path(job).rpartition("/")[2])
    return prepare_attachment(Path(job["error_csv"]), filename, limit)


def _compact(stamp: Any) -> str:
    return "".join(ch for ch in str(stamp or "") if ch.isalnum())

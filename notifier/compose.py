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
from notifier.recipients import Plan, plan
from notifier.render import build_context, partner_error_path, render_bodies

# Events whose email carries the error CSV (when the job has one).
ATTACHING_KINDS = ("completed_with_errors", "failed")


@dataclass(frozen=True)
class Email:
    message_id: str
    subject: str
    sender: str  # envelope sender (bare address)
    recipients: list[str]  # envelope recipients: To
    data: bytes  # the message as sent, CRLF line ends
    audience: str = "partner"  # partner, contacts or ops: each gets its own message


def plan_for(kind: str, job: dict[str, Any], config: Config, contacts: tuple[list[str], list[str]] = ([], [])) -> Plan:
    """The recipients of one event's email; `contacts` = the account's (contact addresses, allowed domains)."""
    return plan(
        kind,
        job,
        contacts=contacts[0],
        allowed_domains=contacts[1],
        ops_emails=config.notify.ops_emails,
        max_recipients=config.notify.max_recipients,
    )


def compose_emails(
    kind: str,
    job: dict[str, Any],
    config: Config,
    now: datetime | None = None,
    *,
    recipients: Plan | None = None,
) -> list[Email]:
    """One message per audience (partner, contacts, ops); empty when there is nobody to tell."""
    recipients = recipients or plan_for(kind, job, config)
    now = now or datetime.now(UTC)
    audiences = recipients.audiences(job)
    if not audiences:
        return []
    context, text, html, attachment = render_email(kind, job, config, now)
    emails = []
    for audience in audiences:
        if audience.notice:
            context, text, html, _ = render_email(kind, job, config, now, notice=audience.notice, attachment=attachment)
        headers = {
            "X-Ingestd-Account": str(job.get("account") or ""),
            "X-Ingestd-Job": str(job.get("id")),
            "X-Ingestd-Event": kind,
        }
        if audience.name != "partner":
            headers["X-Ingestd-Copy"] = audience.name
        emails.append(
            build_message(
                config,
                to=audience.addresses,
                subject=context["subject"],
                text=text,
                html=html,
                now=now,
                idstring=f"ingestd.{job.get('id')}.{kind}.{audience.name}",
                thread=f"ingestd.job.{job.get('id')}.{_compact(job.get('created_at'))}",
                headers=headers,
                attachment=attachment,
                audience=audience.name,
            )
        )
    return emails


def compose_email(kind: str, job: dict[str, Any], config: Config, now: datetime | None = None) -> Email | None:
    """The first message of compose_emails() (the partner's, when there is one), or None."""
    emails = compose_emails(kind, job, config, now)
    return emails[0] if emails else None


def build_message(
    config: Config,
    *,
    to: list[str],
    subject: str,
    text: str,
    html: str,
    now: datetime,
    idstring: str,
    thread: str,
    headers: dict[str, str],
    attachment: Attachment | None = None,
    audience: str = "partner",
) -> Email:
    """An RFC 5322 message (text and HTML alternatives, optional attachment) ready for the outbox."""
    sender = parseaddr(config.smtp.sender)[1] or config.smtp.sender
    domain = sender.rpartition("@")[2] or "localhost"
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = config.smtp.sender
    message["To"] = ", ".join(to)
    message["Date"] = format_datetime(now.astimezone(UTC))
    # Random but stored with the outbox row, so a resend after a crash carries the same id.
    message_id = make_msgid(idstring=idstring, domain=domain)
    message["Message-ID"] = message_id
    # One synthetic thread root per job, so mail clients group a job's emails together.
    message["References"] = f"<{thread}@{domain}>"
    message["Auto-Submitted"] = "auto-generated"
    for name, value in headers.items():
        message[name] = value
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    if attachment is not None and attachment.data:
        maintype, subtype = attachment.content_type
        message.add_attachment(attachment.data, maintype=maintype, subtype=subtype, filename=attachment.filename)
    utf8 = any(not address.isascii() for address in [sender, *to])
    data = message.as_bytes(policy=policy.SMTPUTF8 if utf8 else policy.SMTP)
    return Email(message_id, subject, sender, list(to), data, audience)


def render_email(
    kind: str,
    job: dict[str, Any],
    config: Config,
    now: datetime,
    *,
    notice: list[str] | None = None,
    attachment: Attachment | None = None,
) -> tuple[dict[str, Any], str, str, Attachment | None]:
    """(context, text body, HTML body, attachment) for one event; `notice`: lines above the body of a copy."""
    attachment = attachment or _attachment(kind, job, config.notify.max_attachment)
    context = build_context(
        kind,
        job,
        progress_interval=config.notify.progress_interval,
        now=now,
        attachment=attachment,
        attachment_limit=config.notify.max_attachment,
        notice=notice or [],
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

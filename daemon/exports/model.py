"""What an export asks for (selection, format, window, schedule, destination), checked once, and its file names."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from daemon.config import parse_duration
from daemon.errors import UsageError
from daemon.exports import texts
from daemon.store.keys import ACCOUNT_RE

FORMATS = ("jsonl", "csv", "xml", "parquet")
TYPES = ("events", "profiles")
STATUSES = ("pending", "running", "done", "failed", "cancelled")
MAX_DAYS = 45
MIN_EVERY = 4 * 3600.0
MAX_EVERY = 24 * 3600.0
MAX_EVENT_NAME = 512
DAY_MS = 86_400_000
_S3 = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._ ]+")


@dataclass(frozen=True)
class ExportSpec:
    """A checked export request; `since_ms` only for one-time events exports, `every_s` only for recurring ones."""

    account: str
    type: str
    events: tuple[str, ...] = ()
    format: str = "jsonl"
    days: int | None = None
    since_ms: int | None = None
    every_s: float | None = None
    destination: str = "sftp"
    requested_by: str = "cli"
    emails: tuple[str, ...] = field(default_factory=tuple)

    @property
    def recurring(self) -> bool:
        return self.every_s is not None


def parse_since(text: str) -> int:
    """Epoch milliseconds of a date (`2026-11-20`, midnight UTC) or an ISO 8601 moment (`...T08:00:00Z`)."""
    value = str(text).strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            moment = datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        raise UsageError(texts.BAD_SINCE.format(value=text)) from None
    return int(moment.timestamp() * 1000)


def make_spec(
    account: str,
    type: str,
    *,
    events: list[str] | tuple[str, ...] | None = None,
    format: str | None = None,
    days: Any = None,
    since: str | None = None,
    every: Any = None,
    destination: str | None = None,
    requested_by: str = "cli",
    emails: list[str] | tuple[str, ...] = (),
    now: float | None = None,
) -> ExportSpec:
    """Check every part of a request; UsageError (exit 2) with one line naming the bad part."""
    now = time.time() if now is None else now
    if not isinstance(account, str) or not ACCOUNT_RE.match(account):
        raise UsageError(texts.BAD_ACCOUNT.format(value=account))
    if type not in TYPES:
        raise UsageError(texts.BAD_TYPE.format(value=type))
    fmt = format or "jsonl"
    if fmt not in FORMATS:
        raise UsageError(texts.BAD_FORMAT.format(value=fmt, choices=", ".join(FORMATS)))
    names = tuple(dict.fromkeys(events or ()))
    for name in names:
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_EVENT_NAME:
            raise UsageError(texts.BAD_EVENT.format(value=name))
    if names and type == "profiles":
        raise UsageError(texts.EVENTS_ON_PROFILES)
    every_s = None
    if every is not None:
        try:
            every_s = parse_duration(every)
        except ValueError:
            raise UsageError(texts.BAD_EVERY.format(value=every)) from None
        if not MIN_EVERY <= every_s <= MAX_EVERY:
            raise UsageError(texts.BAD_EVERY.format(value=every))
    if days is not None and since is not None:
        raise UsageError(texts.DAYS_AND_SINCE)
    if (days is not None or since is not None) and every_s is not None:
        raise UsageError(texts.WINDOW_ON_RECURRING)
    if (days is not None or since is not None) and type == "profiles":
        raise UsageError(texts.WINDOW_ON_PROFILES)
    since_ms = None
    day_count = None
    if type == "events" and every_s is None:
        if since is not None:
            since_ms = parse_since(since)
            if since_ms > now * 1000:
                raise UsageError(texts.SINCE_FUTURE.format(value=since))
            if since_ms < now * 1000 - MAX_DAYS * DAY_MS:
                raise UsageError(texts.SINCE_TOO_OLD.format(value=since, limit=MAX_DAYS))
        else:
            try:
                day_count = MAX_DAYS if days is None else int(days)
            except (TypeError, ValueError):
                raise UsageError(texts.BAD_DAYS.format(value=days, limit=MAX_DAYS)) from None
            if isinstance(days, bool) or (isinstance(days, float) and not days.is_integer()):
                raise UsageError(texts.BAD_DAYS.format(value=days, limit=MAX_DAYS))
            if not 1 <= day_count <= MAX_DAYS:
                raise UsageError(texts.BAD_DAYS.format(value=days, limit=MAX_DAYS))
            since_ms = int(now * 1000) - day_count * DAY_MS
    dest = destination or "sftp"
    if dest != "sftp" and not _S3.match(dest):
        raise UsageError(texts.BAD_DESTINATION.format(value=dest))
    return ExportSpec(
        account=account,
        type=type,
        events=names,
        format=fmt,
        days=day_count,
        since_ms=since_ms,
        every_s=every_s,
        destination=dest,
        requested_by=requested_by,
        emails=tuple(emails),
    )


def s3_target(destination: str) -> tuple[str, str]:
    """(bucket, key prefix without a trailing slash) of an s3://BUCKET/PREFIX destination."""
    match = _S3.match(destination)
    if not match:
        raise UsageError(texts.BAD_DESTINATION.format(value=destination))
    return match.group(1), (match.group(2) or "").strip("/")


def series_label(name: str) -> str:
    """An event name as a file-name part: letters, digits, '.', '_' kept, anything else '_' plus a short hash of
    the name, so two names that only differ in such characters never share a file series."""
    safe = _UNSAFE.sub("_", name)[:100].strip(".") or "_"
    if safe != name:
        safe += "_" + hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:6]
    return safe


def file_name(export_id: int, run_ts: str, series: str, day: str, index: int, account: str, fmt: str) -> str:
    """`<export id>-<run timestamp>-<event name or profiles>-<yyyymmdd>-<file index>-<account>.<ext>`."""
    return f"{export_id}-{run_ts}-{series_label(series)}-{day}-{index}-{account}.{fmt}"


def run_timestamp(moment: float) -> str:
    return datetime.fromtimestamp(moment, tz=UTC).strftime("%Y%m%d%H%M%S")


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

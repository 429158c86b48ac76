"""The HTML activity log: imports newest first at `/`, one import at `/imports/{id}`, its error CSV."""

from __future__ import annotations

import asyncio
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web

from daemon.http import api
from daemon.http.params import ACTIVE_STATUSES, STATUSES, ImportFilter, ParamError, parse_filter, parse_job_id
from daemon.jobs.paths import partner_error_name
from daemon.text import safe
from daemon.units import duration_text

REFRESH_SECONDS = 5

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("daemon.http", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


# Where the error CSVs are: data_dir/jobs/<id>/errors.csv (the worker's job folder).
JOBS_ROOT = web.AppKey("jobs_root", Path)
ERRORS_FILE = "errors.csv"
# The timeline's words per event (details.timeline); an unknown event is shown as it is.
TIMELINE_LABELS = {
    "queued": "queued",
    "waiting_for_data": "waiting for the data file",
    "picked_up": "picked up",
    "paused": "paused",
    "resumed": "resumed",
    "cancelled": "cancelled",
    "retried": "retried",
    "finished": "finished",
}
# How many addresses the list shows in its "emailed" line before "+N".
LIST_ADDRESSES = 2


def format_count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value if value is not None else "—")


def plural(count: Any, noun: str) -> str:
    """1 -> "1 row", 1204 -> "1,204 rows"."""
    number = count if isinstance(count, int) else 0
    return f"{format_count(count)} {noun}{'' if number == 1 else 's'}"


_ENV.filters["count"] = format_count
_ENV.filters["plural"] = plural


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(value: Any) -> str:
    parsed = _parse_time(value)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if parsed else "—"


def _duration(ms: float | None) -> str:
    return "—" if ms is None else duration_text(ms / 1000, precise=True)


def duration_ms(item: dict[str, Any], now: datetime | None = None) -> float | None:
    """The job's recorded duration, else pickup to finish (or to now while it runs)."""
    details = item.get("details") or {}
    if details.get("duration_ms") is not None:
        return float(details["duration_ms"])
    started = _parse_time(item.get("started_at"))
    if started is None:
        return None
    finished = _parse_time(item.get("finished_at")) or now or datetime.now(UTC)
    return max(0.0, (finished - started).total_seconds() * 1000)


def distinct_problems(item: dict[str, Any]) -> list[str]:
    """The manifest or file problems, without one that only repeats the failure reason."""
    error = str(item.get("error") or "").strip().rstrip(".")
    seen: set[str] = set()
    found = []
    for problem in (item.get("details") or {}).get("problems") or []:
        text = str(problem).strip()
        if not text or text.rstrip(".") == error or text in seen:
            continue
        seen.add(text)
        found.append(text)
    return found


def reason(item: dict[str, Any]) -> str:
    """One line saying why an import is where it is: the failure, the top row problem, a pause.

    Each text once: a problem that repeats the reason, or a reason that already starts the problem, is not
    said twice."""
    details = item.get("details") or {}
    if item.get("error"):
        error = str(item["error"]).strip()
        problems = distinct_problems(item)
        if not problems:
            return error
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        if first.startswith(error.rstrip(".")):
            return f"{first}{more}"
        return f"{error.rstrip('.')}: {first}{more}"
    if details.get("paused"):
        return f"paused: {details['paused']}"
    reasons = details.get("reasons") or []
    if reasons:
        message, count = reasons[0][0], reasons[0][1]
        others = len(reasons) - 1
        more = f" and {plural(others, 'other problem')}" if others else ""
        return f"{message} ({plural(count, 'row')}){more}"
    if item.get("status") == "waiting_for_data" and item.get("file_name"):
        return f"waiting for {item['file_name']}"
    return ""


def progress(item: dict[str, Any]) -> str:
    """Share of the data file read so far, while processing (from the worker's checkpoints)."""
    total, done = item.get("bytes_total") or 0, item.get("bytes_done") or 0
    if item.get("status") != "processing" or total <= 0:
        return ""
    return f"{min(100, int(done * 100 / total))}%"


def rows_duplicate(item: dict[str, Any]) -> int | None:
    """Rows already present (events that de-duplicated): the import's `rows_duplicate`."""
    value = item.get("rows_duplicate")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def timeline(item: dict[str, Any]) -> list[dict[str, str]]:
    """The job's events oldest first: details.timeline when recorded, else what the record's times say."""
    details = item.get("details") or {}
    recorded = details.get("timeline")
    steps: list[dict[str, str]] = []
    if isinstance(recorded, list) and recorded:
        for entry in recorded:
            if not isinstance(entry, dict):
                continue
            name = str(entry.get("event") or "")
            steps.append(
                {
                    "at": format_time(entry.get("at")),
                    "event": name,
                    "label": TIMELINE_LABELS.get(name, name.replace("_", " ")),
                    "detail": str(entry.get("detail") or ""),
                }
            )
        return steps
    # An import recorded before timelines: the three times every job has, and a pause still on.
    known = [("queued", item.get("created_at"), ""), ("picked_up", item.get("started_at"), "")]
    if details.get("paused"):
        known.append(("paused", None, str(details["paused"])))
    if item.get("finished_at"):
        known.append(("finished", item.get("finished_at"), str(item.get("status", "")).replace("_", " ")))
    for name, at, detail in known:
        if at or detail:
            steps.append({"at": format_time(at), "event": name, "label": TIMELINE_LABELS[name], "detail": detail})
    return steps


def notifications(item: dict[str, Any]) -> list[dict[str, Any]]:
    """Each email queued for the import (details.notified): the event, when, to whom, or why nobody."""
    shown = []
    for entry in (item.get("details") or {}).get("notified") or []:
        if not isinstance(entry, dict):
            continue
        to = [str(address) for address in entry.get("to") or []]
        shown.append(
            {
                "event": str(entry.get("event") or "").replace("_", " "),
                "at": format_time(entry.get("at")),
                "to": to,
                "ops": [str(address) for address in entry.get("ops") or []],
                "nobody": bool(entry.get("nobody")) or not to,
                "note": str(entry.get("note") or ""),
            }
        )
    return shown


def emailed_line(item: dict[str, Any]) -> dict[str, Any] | None:
    """For the list: whom the import's emails reached (partner and contacts), or that nobody could be told."""
    entries = notifications(item)
    if not entries:
        return None
    addresses: list[str] = []
    for entry in entries:
        for address in entry["to"]:
            if address.lower() not in {a.lower() for a in addresses}:
                addresses.append(address)
    if not addresses:
        return {"nobody": True, "text": "nobody could be emailed", "title": ""}
    rest = len(addresses) - LIST_ADDRESSES
    text = ", ".join(addresses[:LIST_ADDRESSES]) + (f" +{rest}" if rest > 0 else "")
    return {"nobody": False, "text": f"emailed {text}", "title": ", ".join(addresses)}


def _view(item: dict[str, Any], has_errors_csv: bool = False) -> dict[str, Any]:
    return {
        "progress": progress(item),
        **item,
        "created": format_time(item.get("created_at")),
        "started": format_time(item.get("started_at")),
        "finished": format_time(item.get("finished_at")),
        "duration": _duration(duration_ms(item)),
        "reason": reason(item),
        "problems": distinct_problems(item),
        "status_label": str(item.get("status", "")).replace("_", " "),
        "details": item.get("details") or {},
        "rows_duplicate": rows_duplicate(item),
        "timeline": timeline(item),
        "notified": notifications(item),
        "emailed": emailed_line(item),
        "undelivered": [u for u in (item.get("details") or {}).get("undelivered") or [] if isinstance(u, dict)],
        "errors_csv": f"/imports/{item['id']}/{ERRORS_FILE}" if has_errors_csv else None,
    }


def _errors_csv(jobs_root: Path, job_id: Any) -> Path | None:
    """The job folder's error CSV when it is there and a regular file (never a link), else None."""
    path = jobs_root / str(job_id) / ERRORS_FILE
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return path if stat.S_ISREG(info.st_mode) and info.st_size > 0 else None


async def _with_errors_csv(request: web.Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    root = request.app[JOBS_ROOT]
    found = await asyncio.to_thread(lambda: [_errors_csv(root, item["id"]) is not None for item in items])
    return [_view(item, has) for item, has in zip(items, found, strict=True)]


def _page_url(flt: ImportFilter, offset: int) -> str:
    query = {k: v for k, v in (("account", flt.account), ("status", flt.status)) if v}
    if flt.limit != 50:
        query["limit"] = str(flt.limit)
    if offset:
        query["offset"] = str(offset)
    return "/" + (f"?{urlencode(query)}" if query else "")


def render(template: str, status: int = 200, **context: Any) -> web.Response:
    # safe(): a lone surrogate from stored partner text would otherwise fail the UTF-8 encoding (a 500 for all).
    html = safe(_ENV.get_template(template).render(**context))
    return web.Response(text=html, status=status, content_type="text/html")


def error_page(status: int, message: str) -> web.Response:
    return render("error.html", status=status, title=f"{status}", message=message, refresh=None)


async def index(request: web.Request) -> web.Response:
    try:
        flt = parse_filter(request.query)
    except ParamError as exc:
        return error_page(400, str(exc))
    reader = request.app[api.IMPORTS]
    rows = await reader.list(flt, extra=1)
    more = len(rows) > flt.limit
    items = await _with_errors_csv(request, rows[: flt.limit])
    # Refresh while anything is in flight, even on another page, so new progress shows up.
    active = any(item.get("status") in ACTIVE_STATUSES for item in items) or await reader.any_active()
    from daemon.http.exports import activity  # exports (issue #15) beside the imports

    return render(
        "index.html",
        title="Activity log",
        exports=await activity(request),
        items=items,
        flt=flt,
        statuses=STATUSES,
        refresh=REFRESH_SECONDS if active else None,
        newer=_page_url(flt, max(0, flt.offset - flt.limit)) if flt.offset > 0 else None,
        older=_page_url(flt, flt.offset + flt.limit) if more else None,
    )


async def detail(request: web.Request) -> web.Response:
    try:
        job_id = parse_job_id(request.match_info["id"])
    except ParamError as exc:
        return error_page(400, str(exc))
    found = await request.app[api.IMPORTS].get(job_id)
    if found is None:
        return error_page(404, f"import {job_id} not found")
    item = (await _with_errors_csv(request, [found]))[0]
    return render(
        "detail.html",
        title=f"Import {job_id}",
        item=item,
        refresh=REFRESH_SECONDS if item.get("status") in ACTIVE_STATUSES else None,
    )


async def errors_csv(request: web.Request) -> web.StreamResponse:
    """The import's whole error CSV (its job folder's errors.csv), streamed from disk as a download."""
    try:
        job_id = parse_job_id(request.match_info["id"])
    except ParamError as exc:
        return error_page(400, str(exc))
    found = await request.app[api.IMPORTS].get(job_id)
    if found is None:
        return error_page(404, f"import {job_id} not found")
    path = await asyncio.to_thread(_errors_csv, request.app[JOBS_ROOT], job_id)
    if path is None:
        return error_page(
            404,
            f"import {job_id} has no error CSV: no row was rejected, or its job folder was removed after "
            "jobs.retention_days",
        )
    name = partner_error_name(job_id, str(found.get("file_name") or found.get("manifest_name") or "import"))
    ascii_name = "".join(ch if ch.isascii() and ch.isprintable() and ch not in '"\\' else "_" for ch in name)
    response = web.FileResponse(
        path,
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )
    return response

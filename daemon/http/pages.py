"""The HTML activity log: imports newest first at `/`, one import at `/imports/{id}`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from daemon.http import api
from daemon.http.params import ACTIVE_STATUSES, STATUSES, ImportFilter, ParamError, parse_filter, parse_job_id
from daemon.text import safe

REFRESH_SECONDS = 5

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("daemon.http", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def format_count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value if value is not None else "—")


_ENV.filters["count"] = format_count


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


def format_duration_ms(ms: float | None) -> str:
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{int(ms)} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


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


def reason(item: dict[str, Any]) -> str:
    """One line saying why an import is where it is: the failure, the top row problem, a pause."""
    details = item.get("details") or {}
    if item.get("error"):
        problems = details.get("problems") or []
        if not problems:
            return str(item["error"])
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"{item['error']}: {problems[0]}{more}"
    if details.get("paused"):
        return f"paused: {details['paused']}"
    reasons = details.get("reasons") or []
    if reasons:
        message, count = reasons[0][0], reasons[0][1]
        more = f" and {len(reasons) - 1} other problem(s)" if len(reasons) > 1 else ""
        return f"{message} ({count} row{'s' if count != 1 else ''}){more}"
    if item.get("status") == "waiting_for_data" and item.get("file_name"):
        return f"waiting for {item['file_name']}"
    return ""


def progress(item: dict[str, Any]) -> str:
    """Share of the data file read so far, while processing (from the worker's checkpoints)."""
    total, done = item.get("bytes_total") or 0, item.get("bytes_done") or 0
    if item.get("status") != "processing" or total <= 0:
        return ""
    return f"{min(100, int(done * 100 / total))}%"


def _view(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "progress": progress(item),
        **item,
        "created": format_time(item.get("created_at")),
        "started": format_time(item.get("started_at")),
        "finished": format_time(item.get("finished_at")),
        "duration": format_duration_ms(duration_ms(item)),
        "reason": reason(item),
        "status_label": str(item.get("status", "")).replace("_", " "),
        "details": item.get("details") or {},
    }


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
    items = [_view(row) for row in rows[: flt.limit]]
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
    item = _view(found)
    return render(
        "detail.html",
        title=f"Import {job_id}",
        item=item,
        refresh=REFRESH_SECONDS if item.get("status") in ACTIVE_STATUSES else None,
    )

"""Exports over HTTP: `GET /api/exports[/{id}]` (the `exports list|show --json` shapes), `/exports/{id}` and the
exports table of the activity log."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from daemon.exports.store import ExportStore
from daemon.http import api, pages
from daemon.store.db import MAX_INTEGER
from daemon.store.keys import ACCOUNT_RE

EXPORTS = web.AppKey("exports", ExportStore)
MAX_LIMIT = 500


def register(app: web.Application) -> None:
    """Add the export routes; the store reads the app's state database."""
    app[EXPORTS] = ExportStore(app[api.DB])
    app.router.add_get("/api/exports", list_exports)
    app.router.add_get("/api/exports/{id}", get_export)
    app.router.add_get("/exports/{id}", detail)


def _limit(request: web.Request) -> tuple[str | None, int, int]:
    account = request.query.get("account") or None
    if account is not None and not ACCOUNT_RE.match(account):
        raise ValueError(f"account {account!r}: expected letters, digits, '.', '_' or '-' (at most 64)")
    try:
        limit = int(request.query.get("limit", "50"))
        offset = int(request.query.get("offset", "0"))
    except ValueError:
        raise ValueError("limit and offset: expected whole numbers") from None
    if not 1 <= limit <= MAX_LIMIT or not 0 <= offset <= MAX_INTEGER:
        raise ValueError(f"limit: expected 1 to {MAX_LIMIT}; offset: 0 or more")
    return account, limit, offset


async def recent(app: web.Application, account: str | None = None, limit: int = 50, offset: int = 0) -> list[dict]:
    store = app[EXPORTS]

    def read() -> list[dict[str, Any]]:
        return [store.describe(row, with_runs=False) for row in store.list(account=account, limit=limit, offset=offset)]

    return await asyncio.to_thread(read)


async def list_exports(request: web.Request) -> web.Response:
    try:
        account, limit, offset = _limit(request)
    except ValueError as exc:
        return api.json_error(400, str(exc))
    items = await recent(request.app, account, limit + 1, offset)
    more = len(items) > limit
    return api.json_response(
        {"exports": items[:limit], "limit": limit, "offset": offset, "next": offset + limit if more else None}
    )


async def _one(request: web.Request) -> tuple[int | None, dict[str, Any] | None]:
    text = request.match_info["id"]
    if not text.isdigit() or len(text) > 18:  # 18 digits: always below SQLite's largest INTEGER
        return None, None
    store = request.app[EXPORTS]

    def read() -> dict[str, Any] | None:
        row = store.get(int(text))
        return store.describe(row) if row is not None else None

    return int(text), await asyncio.to_thread(read)


async def get_export(request: web.Request) -> web.Response:
    export_id, found = await _one(request)
    if export_id is None:
        return api.json_error(400, f"export id {request.match_info['id']!r}: expected a number")
    if found is None:
        return api.json_error(404, f"export {export_id} not found")
    return api.json_response(found)


async def detail(request: web.Request) -> web.Response:
    export_id, found = await _one(request)
    if export_id is None:
        return pages.error_page(400, f"export id {request.match_info['id']!r}: expected a number")
    if found is None:
        return pages.error_page(404, f"export {export_id} not found")
    return pages.render(
        "export.html",
        title=f"Export {export_id}",
        item=view(found),
        refresh=pages.REFRESH_SECONDS if found["status"] == "running" else None,
    )


def view(item: dict[str, Any]) -> dict[str, Any]:
    last = item.get("last_run") or {}
    return {
        **item,
        "schedule": f"every {item['every']}" if item["recurring"] else "once",
        "created": pages.format_time(item.get("created_at")),
        "last_finished": pages.format_time(last.get("finished_at")),
        "next_run": pages.format_time(item.get("next_run_at")),
        "reason": item.get("error") or last.get("error") or last.get("note") or "",
        "selection": ", ".join(item["events"]) if item["events"] else f"all {item['type']}",
    }


async def activity(request: web.Request) -> list[dict[str, Any]]:
    """The activity log's exports table: the newest, filtered by the page's account."""
    if EXPORTS not in request.app:
        return []
    account = request.query.get("account") or None
    if account is not None and not ACCOUNT_RE.match(account):
        return []
    return [view(item) for item in await recent(request.app, account, 20)]

"""JSON endpoints: /api/imports (filters, paging), /api/imports/{id}, /api/nodes, /healthz and /metrics."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon import metrics
from daemon.http.params import ImportFilter, ParamError, parse_filter, parse_job_id
from daemon.store import StateDB
from daemon.text import safe

HEALTH_TIMEOUT = 8.0  # a hung dependency must not hang the health check; above the sinks' own 5 s probes


def json_response(body: Any, status: int = 200) -> web.Response:
    # safe(): ensure_ascii=False keeps non-ASCII readable, and a lone surrogate would fail the UTF-8 encoding.
    body_text = safe(json.dumps(body, default=str, ensure_ascii=False, indent=None))
    return web.Response(text=body_text + "\n", status=status, content_type="application/json")


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return json_response({"error": message, **extra}, status=status)


class ImportsReader:
    """Reads imports through the jobs store in a worker thread: SQLite must not block the loop."""

    def __init__(self, db: StateDB) -> None:
        self.db = db
        self._store: Any = None

    def _jobs(self) -> Any:
        if self._store is None:
            # Imported late so /healthz and /metrics work even in a build without the jobs store.
            from daemon.store.jobs import JobStore

            self._store = JobStore(self.db)
        return self._store

    async def list(self, flt: ImportFilter, extra: int = 0) -> list[dict[str, Any]]:
        return await asyncio.to_thread(
            self._jobs().list_imports,
            account=flt.account,
            status=flt.status,
            limit=flt.limit + extra,
            offset=flt.offset,
        )

    async def get(self, job_id: int) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._jobs().get_import, job_id)

    async def any_active(self) -> bool:
        rows = await asyncio.to_thread(
            self.db.query,
            "SELECT 1 FROM jobs WHERE status IN ('queued', 'waiting_for_data', 'processing') LIMIT 1",
        )
        return bool(rows)


DB = web.AppKey("db", StateDB)
IMPORTS = web.AppKey("imports", ImportsReader)
HEALTH = web.AppKey("health", dict)


async def list_imports(request: web.Request) -> web.Response:
    try:
        flt = parse_filter(request.query)
    except ParamError as exc:
        return json_error(400, str(exc), param=exc.param)
    reader = request.app[IMPORTS]
    # One row more than asked tells whether there is a next page.
    rows = await reader.list(flt, extra=1)
    more = len(rows) > flt.limit
    rows = rows[: flt.limit]
    next_url = None
    if more:
        query = {k: v for k, v in (("account", flt.account), ("status", flt.status)) if v}
        query.update(limit=str(flt.limit), offset=str(flt.offset + flt.limit))
        next_url = f"{request.path}?{urlencode(query)}"
    return json_response({"imports": rows, "limit": flt.limit, "offset": flt.offset, "next": next_url})


async def get_import(request: web.Request) -> web.Response:
    try:
        job_id = parse_job_id(request.match_info["id"])
    except ParamError as exc:
        return json_error(400, str(exc), param=exc.param)
    found = await request.app[IMPORTS].get(job_id)
    if found is None:
        return json_error(404, f"import {job_id} not found")
    return json_response(found)


async def list_nodes(request: web.Request) -> web.Response:
    """The nodes using this state: `ingestd nodes --json`'s objects, newest first."""
    from daemon.store.nodes import NodeStore

    nodes = await asyncio.to_thread(NodeStore(request.app[DB]).list)
    return json_response({"nodes": nodes})


async def _check(component: Any) -> str | None:
    check = getattr(component, "health", None)
    if check is None:
        return None
    result = check()
    if inspect.isawaitable(result):
        result = await result
    return result or None


async def _state_check(db: StateDB) -> str | None:
    try:
        await asyncio.to_thread(db.query, "SELECT 1")
    except Exception as exc:  # any failure is the answer to report, not a crash
        return f"state store unavailable: {exc or type(exc).__name__}"
    return None


async def _bounded(check: Awaitable[str | None]) -> str:
    try:
        reason = await asyncio.wait_for(check, HEALTH_TIMEOUT)
    except TimeoutError:
        reason = f"no answer within {HEALTH_TIMEOUT:g}s"
    except Exception as exc:
        reason = f"health check failed: {exc or type(exc).__name__}"
    return reason or "ok"


async def health_report(db: StateDB, components: dict[str, Any]) -> dict[str, str]:
    """{name: "ok" | reason} for the state store and every component that exists, checked concurrently."""
    checks = {"state": _state_check(db)}
    checks.update({name: _check(component) for name, component in components.items() if component is not None})
    results = await asyncio.gather(*(_bounded(check) for check in checks.values()))
    return dict(zip(checks, results, strict=True))


async def healthz(request: web.Request) -> web.Response:
    report = await health_report(request.app[DB], request.app[HEALTH])
    failing = {name: reason for name, reason in report.items() if reason != "ok"}
    if failing:
        # Some components already prefix their own name ("jobs: ..."): don't say it twice.
        reason = "; ".join(
            text if text.startswith(f"{name}: ") else f"{name}: {text}" for name, text in failing.items()
        )
        return json_response({"status": "unhealthy", "reason": reason, "checks": report}, status=503)
    return json_response({"status": "ok", "checks": report})


def _refresh_gauges(db: StateDB) -> None:
    # Depths are read from the state store at scrape time, through the owners' own queries, so they
    # are right after a restart and whichever component last touched them.
    from daemon.store.jobs import JobStore
    from notifier.outbox import Outbox

    metrics.QUEUE_DEPTH.set(JobStore(db).pending_count())
    metrics.OUTBOX_DEPTH.set(Outbox(db).depth())


async def prometheus(request: web.Request) -> web.Response:
    await asyncio.to_thread(_refresh_gauges, request.app[DB])
    body = generate_latest(metrics.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

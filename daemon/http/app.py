"""The HTTP service: aiohttp in the daemon's event loop, with an optional bearer token."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from daemon import proxyproto
from daemon.config import Config
from daemon.http import api, pages
from daemon.http import exports as http_exports
from daemon.logs import event
from daemon.proxyproto import ProxyTrust
from daemon.store import StateDB

log = logging.getLogger("ingestd.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN_PATHS = frozenset({"/healthz"})  # probes (Docker, load balancers) carry no token


def _presented_token(header: str) -> str | None:
    """The token from `Bearer <token>`, or the password of `Basic` (so a browser can log in)."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def _is_api(path: str) -> bool:
    return path.startswith("/api/") or path == "/api" or path == "/metrics"


UNAUTHORIZED_LOG_INTERVAL = 60.0  # one http.unauthorized line per address per minute: guessing is not a log flood


def auth_middleware(token: str) -> Any:
    expected = token.encode("utf-8")
    logged: dict[str, float] = {}  # address -> when its last refusal was logged

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not expected or request.path in OPEN_PATHS:
            return await handler(request)
        presented = _presented_token(request.headers.get("Authorization", ""))
        if presented is not None and hmac.compare_digest(presented.encode("utf-8"), expected):
            return await handler(request)
        # request.remote: the partner's address, also behind a balancer that sends the PROXY protocol.
        address, now = request.remote or "?", time.monotonic()
        if now - logged.get(address, -math.inf) >= UNAUTHORIZED_LOG_INTERVAL:
            if len(logged) >= 10_000:
                logged.clear()
            logged[address] = now
            event(
                log,
                "http.unauthorized",
                logging.WARNING,
                address=address,
                method=request.method[:16],
                path=request.path[:200],
                token="wrong" if presented else "missing",
            )
        message = "missing or wrong token: send 'Authorization: Bearer <http.token>'"
        if _is_api(request.path):
            response = api.json_error(401, message)
            response.headers["WWW-Authenticate"] = 'Bearer realm="ingestd"'
        else:
            # Browsers cannot send a bearer token but do prompt for Basic: any user name, the token as password.
            response = pages.error_page(401, "Log in with any user name and the http.token as password.")
            response.headers["WWW-Authenticate"] = 'Basic realm="ingestd", charset="UTF-8"'
        return response

    return check_token


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown paths and methods answer in the caller's language: JSON for the API, HTML for pages."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = f"{request.method} {request.path}: {exc.reason.lower()}"
        if _is_api(request.path):
            response = api.json_error(exc.status, message)
        else:
            response = pages.error_page(exc.status, message)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception as exc:
        # Recorded with its traceback for ops; the caller gets one line, never a stack trace.
        log.exception("%s %s failed", request.method, request.path)
        message = f"internal error: {type(exc).__name__}: {exc}"
        if _is_api(request.path):
            return api.json_error(500, message)
        return pages.error_page(500, message)


def make_app(config: Config, db: StateDB, health: dict[str, Any] | None = None) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth_middleware(config.http.token)])
    app[api.DB] = db
    app[api.IMPORTS] = api.ImportsReader(db)
    app[api.HEALTH] = dict(health or {})
    app[pages.JOBS_ROOT] = config.jobs_root
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/metrics", api.prometheus)
    app.router.add_get("/api/imports", api.list_imports)
    app.router.add_get("/api/imports/{id}", api.get_import)
    app.router.add_get("/api/nodes", api.list_nodes)
    app.router.add_get("/", pages.index)
    app.router.add_get("/imports/{id}", pages.detail)
    app.router.add_get("/imports/{id}/errors.csv", pages.errors_csv)
    http_exports.register(app)  # exports (issue #15): /api/exports[/{id}], /exports/{id}
    return app


def cap_connections(server: web.Server, limit: int) -> None:
    """Past `limit` open connections, each new one closes the oldest ones, idle ones first.

    An idle one is closed at once, as aiohttp's own keep-alive timer does (force_close); a busy one answers
    its request first (close). So no number of idle sockets keeps a health probe or a browser out: the
    newest connection always gets in, and the daemon holds about `limit` sockets whatever comes.
    """
    made = server.connection_made

    def connection_made(handler: Any, transport: Any) -> None:
        made(handler, transport)
        connections = server.connections
        excess = len(connections) - limit
        if excess <= 0:
            return
        # `_request_in_progress` is aiohttp's own flag; if a release drops it, every connection counts as busy
        # and is closed gracefully.
        busy = {h: bool(getattr(h, "_request_in_progress", True)) for h in connections[:-1]}
        for old in sorted(busy, key=busy.__getitem__)[:excess]:
            if busy[old]:
                old.close()
            else:
                old.force_close()

    server.connection_made = connection_made  # type: ignore[method-assign]


class _Site(web.TCPSite):
    """aiohttp's TCPSite, with connections from the balancers of `sftp.proxy_protocol_from` reading their PROXY
    header first, so request.remote is the partner's address."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, proxy_from: ProxyTrust) -> None:
        super().__init__(runner, host, port)
        self.proxy_from = proxy_from

    async def start(self) -> None:
        if not self.proxy_from:
            return await super().start()
        await web.BaseSite.start(self)  # registers the site with its runner; what TCPSite.start does next:
        assert self._runner.server is not None
        factory = proxyproto.accepting(self._runner.server, self.proxy_from, proxyproto.RefusedHeaders(log, "http"))
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, self._host, self._port, backlog=self._backlog)
        self._bound_port = self._server.sockets[0].getsockname()[1]


class HTTPService:
    """Health, metrics, the imports API and the activity log on http.host:http.port."""

    def __init__(self, config: Config, db: StateDB, sink: Any = None, health: dict[str, Any] | None = None) -> None:
        self.config = config
        self.db = db
        self.sink = sink
        self.app = make_app(config, db, health)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        # access_log=None: requests are not state changes; a short shutdown so a browser's keep-alive can't stall stop().
        # keepalive_timeout also closes a connection that never sends a request (aiohttp's default: an hour).
        runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=2.0, keepalive_timeout=self.config.http.keepalive_timeout
        )
        await runner.setup()
        assert runner.server is not None
        cap_connections(runner.server, self.config.http.max_connections)
        try:
            site = _Site(
                runner, self.config.http.host, self.config.http.port, ProxyTrust(self.config.sftp.proxy_protocol_from)
            )
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        event(log, "http.started", host=self.config.http.host, port=self.port, auth=bool(self.config.http.token))

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            event(log, "http.stopped")

    def banner(self) -> list[str]:
        host = self.config.http.host
        shown = f"[{host}]" if ":" in host else host
        return [f"  http   http://{shown}:{self.port if self.port is not None else self.config.http.port}"]

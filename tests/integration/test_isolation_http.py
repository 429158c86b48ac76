"""Idle HTTP sockets cannot take the activity log, the API or /healthz away from anyone (issue #10)."""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Callable, Iterator

from tests.fixtures.daemon import Daemon
from tests.integration.test_http_api import fetch


@contextlib.contextmanager
def idle_sockets(port: int, count: int) -> Iterator[list[socket.socket]]:
    """`count` TCP connections to the HTTP port that never send a byte."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            held.append(sock)
        yield held
    finally:
        for sock in held:
            sock.close()


def closed_by_server(sockets: list[socket.socket], within: float, enough: int | None = None) -> int:
    """How many of `sockets` the server has closed (EOF or reset) by the deadline, or once `enough` are."""
    deadline = time.monotonic() + within
    open_ones = set(sockets)
    wanted = len(sockets) if enough is None else enough
    while len(sockets) - len(open_ones) < wanted and time.monotonic() < deadline:
        readable, _, _ = select.select(list(open_ones), [], [], 0.2)
        for sock in readable:
            try:
                data = sock.recv(1)
            except OSError:
                data = b""
            if not data:
                open_ones.discard(sock)
    return len(sockets) - len(open_ones)


def test_an_idle_connection_is_closed_after_the_keepalive_timeout(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(INGESTD_HTTP__KEEPALIVE_TIMEOUT="1s")
    assert daemon.http_port
    with idle_sockets(daemon.http_port, 3) as held:
        # aiohttp's own default holds such a socket for an hour.
        assert closed_by_server(held, within=30) == 3


def test_many_idle_connections_do_not_keep_healthz_or_the_api_out(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(INGESTD_HTTP__MAX_CONNECTIONS="20", INGESTD_HTTP__KEEPALIVE_TIMEOUT="10m")
    assert daemon.http_port and daemon.http_url
    with idle_sockets(daemon.http_port, 200) as held:
        health = fetch(daemon.http_url + "/healthz")
        assert health.status == 200, health.body
        imports = fetch(daemon.http_url + "/api/imports")
        assert imports.status == 200
        # The oldest idle sockets made room: the daemon holds about http.max_connections, not all 200.
        assert closed_by_server(held, within=30, enough=200 - 20) >= 200 - 20
    assert "Traceback" not in daemon.log()

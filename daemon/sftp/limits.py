"""Connection floods: caps on connections not yet logged in, dropped before any SSH work; refusals summarised."""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from daemon import proxyproto
from daemon.logs import event
from daemon.proxyproto import ProxyTrust

log = logging.getLogger("ingestd.sftp")

REFUSED_INTERVAL = 10.0  # seconds: refused connections are logged as one line per reason per interval


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (every connection is a descriptor); returns (old, new)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):  # e.g. the kernel's nr_open is below an "infinite" hard limit
        return soft, soft
    return soft, target


class RefusalLog:
    """Counts refused connections and logs them as one line per reason per REFUSED_INTERVAL, not one each."""

    def __init__(self, interval: float = REFUSED_INTERVAL) -> None:
        self.interval = interval
        self._counts: Counter[str] = Counter()
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, reason: str) -> None:
        self._counts[reason] += 1
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        counts, self._counts = self._counts, Counter()
        for reason, count in sorted(counts.items()):
            event(
                log,
                "sftp.connections_refused",
                logging.WARNING,
                count=count,
                reason=reason,
                interval_s=f"{self.interval:g}",
            )


class StartupGate:
    """Connections that have not logged in yet, in all and per address (OpenSSH's MaxStartups and
    PerSourceMaxStartups). A logged-in connection no longer counts.

    Over the per-address cap the new connection is dropped: that address is the one flooding. Over the
    overall cap the *oldest* connection that has not yet asked to log in (still in its key exchange, or
    idle) is dropped instead, so a flood of idle connections from many addresses cannot keep every partner
    out until `sftp.login_grace_time` runs out: a partner asks to log in within a fraction of a second, an
    idle connection never does. One that is logging in is not dropped for room; when every counted
    connection is, the new one is dropped.
    """

    def __init__(self, max_startups: int, per_source: int, refused: RefusalLog) -> None:
        self.max_startups = max_startups
        self.per_source = per_source
        self.refused = refused
        self.total = 0
        self._per_address: Counter[str] = Counter()
        self._waiting: dict[object, tuple[str, Callable[[], None]]] = {}  # oldest first: key -> (address, drop)
        self._logging_in: dict[object, str] = {}  # key -> address: asked to log in, not dropped for room

    def full(self, address: str) -> str | None:
        """The reason to drop a new connection from `address`, or None to let it in (making room if needed)."""
        if self._per_address[address] >= self.per_source:
            return "per_source_max_startups"
        if self.total >= self.max_startups:
            if not self._waiting:
                return "max_startups"
            oldest = next(iter(self._waiting))
            _, drop = self._waiting[oldest]
            self.done(oldest)
            drop()
            self.refused("max_startups")
        return None

    def opened(self, address: str, key: object, drop: Callable[[], None]) -> None:
        """Connection `key` from `address` is starting; `drop` closes it should room be needed (see full())."""
        self.total += 1
        self._per_address[address] += 1
        self._waiting[key] = (address, drop)

    def logging_in(self, key: object) -> None:
        """Connection `key` asked to log in: from now on it is not dropped to make room."""
        if key in self._waiting:
            address, _ = self._waiting.pop(key)
            self._logging_in[key] = address

    def done(self, key: object) -> None:
        """Connection `key` logged in or ended (or was dropped to make room); counts once however often called."""
        if key in self._waiting:
            address, _ = self._waiting.pop(key)
        elif key in self._logging_in:
            address = self._logging_in.pop(key)
        else:
            return
        self.total -= 1
        self._per_address[address] -= 1
        if self._per_address[address] <= 0:
            del self._per_address[address]


class _GateProtocol(asyncio.Protocol):
    """Decides at accept: over a cap, the socket is closed at once and no SSH connection object is built;
    otherwise the SSH connection takes over the transport (no layer in between afterwards)."""

    def __init__(self, gate: StartupGate, session_factory: Callable[[str, int], Any]) -> None:
        self._gate = gate
        self._session_factory = session_factory

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername") or ("?", 0)
        reason = self._gate.full(str(peer[0]))
        if reason is not None:
            cast(asyncio.Transport, transport).abort()  # a TCP server's transport
            self._gate.refused(reason)
            return
        conn = self._session_factory("", 0)
        transport.set_protocol(conn)
        conn.connection_made(transport)

    def data_received(self, data: bytes) -> None:  # only between abort() and the close: ignore
        return None


class GatedListener:
    """What `asyncssh.listen(tunnel=...)` accepts as a listener (its `create_server` seam): a plain TCP
    listener whose accepted sockets pass StartupGate before asyncssh sees them."""

    def __init__(
        self,
        gate: StartupGate,
        backlog: int = 1024,
        proxy_from: ProxyTrust | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.gate = gate
        self.backlog = backlog
        self.proxy_from = proxy_from or ProxyTrust([])
        self.reuse_port = reuse_port  # several SFTP processes share the port (see daemon/sftp/supervisor.py)
        self.logger = logging.getLogger("asyncssh")

    async def create_server(
        self, session_factory: Callable[[str, int], Any], listen_host: str, listen_port: int
    ) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        # Balancers in sftp.proxy_protocol_from give their PROXY header first: the gate, the bans and the log
        # then see the partner's address (the SSH connection gets a transport whose peername is that).
        factory = proxyproto.accepting(
            lambda: _GateProtocol(self.gate, session_factory), self.proxy_from, proxyproto.RefusedHeaders(log, "sftp")
        )
        return await loop.create_server(
            factory, listen_host, listen_port, backlog=self.backlog, reuse_port=self.reuse_port or None
        )

    def close(self) -> None:
        return None

    async def wait_closed(self) -> None:
        return None


_ACCEPT_FAILED = "socket.accept() out of system resource"


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, refused: RefusalLog) -> None:
    """accept() failing for lack of descriptors (EMFILE): asyncio already pauses accepting for a second;
    count it in the refusal summary instead of logging a traceback each time."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == _ACCEPT_FAILED:
            refused("accept_failed")
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)

"""`ingestd serve`: builds the components, starts them in order, stops them in reverse on a signal."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import stat
import sys
from typing import Any, Protocol

from daemon import __version__
from daemon.config import Config
from daemon.errors import UsageError
from daemon.logs import event, setup_logging
from daemon.sftp.limits import raise_nofile_limit
from daemon.shutdown import Shutdown
from daemon.store import open_state
from daemon.store.nodes import Heartbeat, node_id

log = logging.getLogger("ingestd.service")


class Component(Protocol):
    """What the service needs of each part. Optional: `banner() -> list[str]`, `health() -> str | None`,
    `force_stop()` (the second stop signal; one given the service's `Shutdown` also sees it there)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Service:
    """Owns the start and stop order: store, sink, notifier, jobs, SFTP, HTTP; stop is the reverse.

    The stop has one deadline, `jobs.shutdown_grace` from its start (`self.shutdown`): uploads in flight
    finish, then imports stop at their checkpoint, then deliveries in flight are marked sent, each in the
    time that remains; a second stop signal ends every wait at once."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.db = open_state(config)
        # This process is a node of the state: the stores claim jobs and outbox rows in its name (shared state).
        self.db.node = node_id()
        self.components: dict[str, Any] = {}
        self._started: list[str] = []
        self._stopping = asyncio.Event()
        self.shutdown = Shutdown(config.jobs.shutdown_grace)

    def build(self) -> None:
        from daemon.exports.service import ExportService
        from daemon.http.app import HTTPService
        from daemon.jobs.manager import JobManager
        from daemon.sftp.supervisor import SFTPService
        from daemon.sinks import open_sink
        from notifier.service import Notifier

        config, db = self.config, self.db
        assert db.node is not None
        node = Heartbeat(
            db, db.node, sftp=f"{config.sftp.host}:{config.sftp.port}", http=f"{config.http.host}:{config.http.port}"
        )
        sink = open_sink(config)
        notifier = Notifier(config, db, shutdown=self.shutdown)
        jobs = JobManager(config, db, sink, notifier, shutdown=self.shutdown)
        sftp = SFTPService(config, db, shutdown=self.shutdown)
        health = {"sftp": sftp, "sink": sink, "jobs": jobs, "notifier": notifier}
        http = HTTPService(config, db, sink, health=health)
        exports = ExportService(config, db, notifier)
        self.components = {
            "node": node,  # first and last: its heartbeat keeps the claims the others make alive
            "sink": sink,
            "notifier": notifier,
            "jobs": jobs,
            "exports": exports,
            "sftp": sftp,
            "http": http,
        }

    async def start(self) -> None:
        for name, component in self.components.items():
            await component.start()
            self._started.append(name)
        node, sftp, http = (self.components.get(name) for name in ("node", "sftp", "http"))
        if node is not None and sftp is not None and http is not None:
            # The bound addresses (a port 0 became a real one) for `ingestd nodes`.
            http_port = http.port if http.port is not None else self.config.http.port
            await node.announce(f"{sftp.host}:{sftp.port}", f"{self.config.http.host}:{http_port}")

    async def stop(self) -> None:
        self.shutdown.begin()  # the deadline, if no signal set it already (a start that failed)
        while self._started:
            name = self._started.pop()
            try:
                await self.components[name].stop()
            except Exception:
                log.exception("stopping %s failed", name)
        self.db.close()

    def banner(self) -> str:
        lines = [f"ingestd {__version__} serving"]
        for component in self.components.values():
            lines.extend(getattr(component, "banner", list)())
        lines.append(f"  data   {self.config.data_dir.resolve()}")
        return "\n".join(lines)

    def request_stop(self) -> None:
        """The first SIGTERM/SIGINT stops the service in order within `jobs.shutdown_grace`; a second one
        during that stop forces it: uploads in flight are cut (kept for a resume), running imports cancelled
        (they resume from their last checkpoint at the next start), deliveries in flight abandoned (their
        outbox rows stay pending)."""
        if not self._stopping.is_set():
            self.shutdown.begin()
            self._stopping.set()
            return
        event(log, "service.forced_stop", logging.WARNING)
        self.shutdown.force()
        for component in self.components.values():
            force = getattr(component, "force_stop", None)
            if force is not None:
                force()

    async def run(self) -> None:
        self.build()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start()
            print(self.banner(), flush=True)
            event(log, "service.started", version=__version__)
            await self._stopping.wait()
            event(log, "service.stopping")
        finally:
            await self.stop()
        event(log, "service.stopped")


def private_data_dir(config: Config) -> None:
    """data_dir 0700, its state, sink and host key files 0600, also when an older version made them readable."""
    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = [config.data_dir, *config.data_dir.glob("*.sqlite3*"), *config.host_keys_dir.glob("*")]
    for path in paths:
        try:
            mode = path.lstat().st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                path.chmod(0o700 if stat.S_ISDIR(mode) else 0o600)
        except OSError as exc:  # not ours (e.g. a shared mount): say so, the daemon still runs
            event(
                log, "service.permissions_unchanged", logging.WARNING, path=str(path), reason=exc.strerror or str(exc)
            )


def check_shared_state(config: Config) -> None:
    """Shared state (PostgreSQL) means several nodes: the sink must be one they all reach."""
    from daemon.sinks import DRIVERS, driver

    if config.state.url and not driver(config).shared:
        usable = " or ".join(f'"{name}"' for name, entry in DRIVERS.items() if entry.shared)
        raise UsageError(
            f"state.url is a shared PostgreSQL state, but sink.driver is {config.sink.driver!r}: several nodes "
            f"need one sink they all reach; set sink.driver = {usable} (or leave state.url empty for one node)"
        )


def run_serve(args: argparse.Namespace, config: Config) -> int:
    check_shared_state(config)  # UsageError: one line, exit 2, before anything starts
    setup_logging(config.log.format, config.log.level)
    private_data_dir(config)
    raise_nofile_limit()  # HTTP connections, SQLite files and the SFTP process's pipes are all descriptors
    try:
        asyncio.run(Service(config).run())
    except OSError as exc:
        # Typically a port already in use: one line, not a traceback.
        print(f"ingestd: error: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0

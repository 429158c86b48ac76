"""The SFTP supervisor: runs `sftp.processes` SFTP processes sharing one port, relays their metrics and failed
logins, replaces any that dies, stops them in order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys

from daemon.config import Config
from daemon.errors import UsageError
from daemon.logs import event
from daemon.sftp.handler import count_locally
from daemon.sftp.listener import remove_temp_files
from daemon.shutdown import Shutdown
from daemon.store import StateDB

log = logging.getLogger("ingestd.sftp")

START_TIMEOUT = 60.0
RESTART_DELAY = 1.0  # before replacing an SFTP process that died
# An SFTP process told to stop exits within its grace and this: after the grace it closes its sessions.
STOP_MARGIN = 15.0


def process_count(configured: int) -> int:
    """`sftp.processes`, 0 meaning one per core this process may run on."""
    if configured:
        return configured
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def reserve_port(host: str, port: int) -> list[socket.socket]:
    """Bind (without listening) every address of `host` on `port` (any free one for 0, the same on all), then
    allow SO_REUSEPORT on them, so that the SFTP processes can listen on that port together.

    The bind itself is made without SO_REUSEPORT: a port in use, also by another ingestd, fails here as it
    would without several processes. Set afterwards, the option lets our processes (same user) join. The
    sockets never listen: no connection waits on them; they keep the port ours while processes restart.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"sftp: cannot listen on {host}:{port}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio's listeners
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's: TIME_WAIT is no conflict
            sock.bind((address[0], port, *address[2:]))
            port = sock.getsockname()[1]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise UsageError(f"sftp: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sockets


class SFTPProcess:
    """One `python -m daemon.sftp.child` (see its protocol)."""

    def __init__(self, number: int) -> None:
        self.number = number  # 1..processes, in log lines
        self.process: asyncio.subprocess.Process | None = None
        self.ready = False  # it sent "ready": it reads its stdin and acts on "stop"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def spawn(self, config: Config) -> dict[str, object]:
        """Start it and wait for it to listen; returns its "ready" message. UsageError if it does not start."""
        if self.process is not None and self.process.stdin is not None:
            self.process.stdin.close()  # the previous, dead process's pipe
        self.ready = False
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "daemon.sftp.child",
            str(self.number),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # stderr is the daemon's: the child logs there in the same format
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(config.model_dump_json().encode() + b"\n")
        await self.process.stdin.drain()
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), START_TIMEOUT)
        except TimeoutError:
            await self.kill()
            raise UsageError(f"sftp: the SFTP process did not start within {START_TIMEOUT:.0f}s") from None
        message = json.loads(line) if line.strip() else {}
        if "ready" not in message:
            code = await self.process.wait()
            raise UsageError(message.get("error") or f"sftp: the SFTP process exited with status {code}")
        ready: dict[str, object] = message["ready"]
        self.ready = True
        return ready

    def tell(self, message: dict[str, object]) -> None:
        """One line on its stdin; nothing if it is gone (it is being replaced)."""
        if self.running and self.process is not None and self.process.stdin is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.process.stdin.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    async def terminate(self, grace: float) -> None:
        """It stops listening, lets uploads in flight finish within `grace` seconds, then exits (killed if it
        has not within grace + STOP_MARGIN). Told on its stdin: a SIGTERM of ours would count as the second
        signal in a process that got a Ctrl-C's SIGINT too. One not yet ready gets a SIGTERM."""
        if self.process is None:
            return
        if self.process.returncode is None:
            if self.ready:
                self.tell({"stop": round(grace, 3)})
            else:
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace + STOP_MARGIN)
            except TimeoutError:
                event(log, "sftp.process_killed", logging.WARNING, process=self.number, reason="did not stop in time")
                await self.kill()
        if self.process.stdin is not None:
            self.process.stdin.close()

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


class SFTPService:
    """Runs `sftp.processes` SFTP processes (0: one per core), each with its own event loop, on one port.

    With the listener in the daemon's process, the watcher and job scheduler reacting to each arriving
    file took the GIL from the SFTP sessions: 1,000 small files went at ~40% of sshd's rate, versus ~100%
    for the listener alone. Processes of their own give SFTP its own cores; with several, the kernel spreads
    new connections over them (SO_REUSEPORT), as sshd spreads its per-connection processes over the cores.

    Shared by all: the port, the host keys, the key store and bans (the state DB: a key added is seen by each
    at its next login), the metrics (added up here), failed-login counts (each failed login is relayed to
    every other process, so a ban starts at the same failure everywhere). Per process: the connection caps
    (`sftp.max_startups`, `sftp.per_source_max_startups`) and the open-file cap per account.
    """

    def __init__(self, config: Config, db: StateDB, shutdown: Shutdown | None = None) -> None:
        self.config = config
        # The service's stop deadline: uploads in flight get what remains of it (jobs.shutdown_grace).
        self._own_shutdown = shutdown is None
        self.shutdown = shutdown if shutdown is not None else Shutdown(config.jobs.shutdown_grace)
        self.host = config.sftp.host
        self.port = config.sftp.port
        self.fingerprint = ""
        self.processes = [SFTPProcess(number) for number in range(1, process_count(config.sftp.processes) + 1)]
        self._sockets: list[socket.socket] = []
        self._relays: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        """Of the SFTP processes running now."""
        return [p.pid for p in self.processes if p.running and p.pid is not None]

    async def start(self) -> None:
        if self._own_shutdown:  # started again after a stop: a new deadline for the next one
            self.shutdown = Shutdown(self.config.jobs.shutdown_grace)
        self._sockets = reserve_port(self.host, self.port)
        # Here, before any process runs: a process starting later must not delete the others' uploads.
        self.config.drop_root.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(remove_temp_files, self.config.drop_root)
        self.port = self._sockets[0].getsockname()[1]
        try:
            # All at once: of processes creating a missing host key together, the first one's is kept by all
            # (listener.load_or_create_host_key).
            await asyncio.gather(*(self._spawn(process) for process in self.processes))
        except BaseException:
            await asyncio.gather(*(process.terminate(0.0) for process in self.processes), return_exceptions=True)
            self._close_sockets()
            raise
        self._relays = [
            asyncio.create_task(self._relay_forever(process), name=f"sftp-relay-{process.number}")
            for process in self.processes
        ]

    def _config(self) -> Config:
        # The reserved port, even when the config said 0 (any): every process serves the same one.
        sftp = self.config.sftp.model_copy(update={"port": self.port})
        return self.config.model_copy(update={"sftp": sftp})

    async def _spawn(self, process: SFTPProcess) -> None:
        ready = await process.spawn(self._config())
        self.fingerprint = str(ready["fingerprint"])

    async def _relay_forever(self, process: SFTPProcess) -> None:
        """Relay one process's messages; if it dies, start a new one on the same port (partners reconnect)."""
        delay = RESTART_DELAY
        while True:
            await self._relay(process)
            if self._stopping:
                return
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._spawn(process)
                event(log, "sftp.process_restarted", process=process.number, pid=process.pid, port=self.port)
                delay = RESTART_DELAY
            except UsageError as exc:
                event(
                    log,
                    "sftp.restart_failed",
                    logging.ERROR,
                    process=process.number,
                    reason=str(exc),
                    retry_in_s=delay,
                )
                delay = min(delay * 2, 60.0)

    async def _relay(self, process: SFTPProcess) -> None:
        assert process.process is not None and process.process.stdout is not None
        while line := await process.process.stdout.readline():
            try:
                message = json.loads(line)
                if "failed" in message:
                    address, account = message["failed"]
                    for other in self.processes:
                        if other is not process:
                            other.tell({"failed": [str(address), str(account)]})
                    continue
                for name, amount, labels in message["counts"]:
                    count_locally(name, amount, tuple(labels))
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("sftp: unexpected output from the SFTP process: %r", line[:200])
        code = await process.process.wait()
        if not self._stopping:
            event(log, "sftp.process_exited", logging.ERROR, process=process.number, status=code)

    def banner(self) -> list[str]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        count = len(self.processes)
        processes = f"  ({count} processes)" if count > 1 else ""
        return [f"  sftp   {host}:{self.port}  host key {self.fingerprint}{processes}"]

    def health(self) -> str | None:
        down = [process for process in self.processes if not process.running]
        if not down:
            return None
        if all(process.process is None for process in self.processes):
            return "SFTP server not started"
        first = down[0]
        code = first.process.returncode if first.process is not None else None
        which = f"SFTP process {first.number} of {len(self.processes)}" if len(self.processes) > 1 else "SFTP process"
        return f"{which} exited with status {code}" if code is not None else f"{which} not started"

    async def stop(self) -> None:
        """Every process stops listening and lets uploads in flight finish in what remains of the stop's
        deadline (jobs.shutdown_grace from its start), all at once."""
        self.shutdown.begin()
        self._stopping = True
        await asyncio.gather(*(process.terminate(self.shutdown.remaining()) for process in self.processes))
        for relay in self._relays:
            relay.cancel()
        for relay in self._relays:
            with contextlib.suppress(BaseException):
                await relay
        # One a relay may have been starting at that very moment.
        await asyncio.gather(*(process.terminate(self.shutdown.remaining()) for process in self.processes))
        self._close_sockets()

    def force_stop(self) -> None:
        """A second stop signal: uploads in flight are cut now (each kept for a resume)."""
        self.shutdown.force()
        for process in self.processes:
            process.tell({"force": True})

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []

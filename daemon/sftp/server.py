"""The SFTP service: runs the SFTP listener in its own process, so uploads and imports don't share a GIL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys

from daemon.config import Config
from daemon.errors import UsageError
from daemon.logs import event
from daemon.sftp.handler import count_locally
from daemon.sftp.listener import UPLOAD_GRACE
from daemon.store import StateDB

log = logging.getLogger("ingestd.sftp")

START_TIMEOUT = 60.0
RESTART_DELAY = 1.0  # before replacing an SFTP process that died


class SFTPService:
    """Starts `python -m daemon.sftp.child` (see its protocol), relays its metrics, stops it in order.

    With the listener in the daemon's process, the watcher and job scheduler reacting to each arriving
    file took the GIL from the SFTP sessions: 1,000 small files went at ~40% of sshd's rate, versus ~100%
    for the listener alone. A process of its own gives SFTP its own core.
    """

    def __init__(self, config: Config, db: StateDB) -> None:
        self.config = config
        self.host = config.sftp.host
        self.port = config.sftp.port
        self.fingerprint = ""
        self._process: asyncio.subprocess.Process | None = None
        self._relay: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        await self._spawn(self.config)
        self._relay = asyncio.create_task(self._relay_forever(), name="sftp-relay")

    async def _spawn(self, config: Config) -> None:
        if self._process is not None and self._process.stdin is not None:
            self._process.stdin.close()  # the previous, dead process's pipe
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "daemon.sftp.child",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # stderr is the daemon's: the child logs there in the same format
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(config.model_dump_json().encode() + b"\n")
        await self._process.stdin.drain()
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), START_TIMEOUT)
        except TimeoutError:
            await self._kill()
            raise UsageError(f"sftp: the SFTP process did not start within {START_TIMEOUT:.0f}s") from None
        message = json.loads(line) if line.strip() else {}
        if "ready" not in message:
            code = await self._process.wait()
            raise UsageError(message.get("error") or f"sftp: the SFTP process exited with status {code}")
        ready = message["ready"]
        self.host, self.port, self.fingerprint = ready["host"], ready["port"], ready["fingerprint"]

    async def _relay_forever(self) -> None:
        """Relay metrics; if the SFTP process dies, start a new one on the same port (partners reconnect)."""
        delay = RESTART_DELAY
        while True:
            await self._relay_counts()
            if self._stopping:
                return
            await asyncio.sleep(delay)
            # Same port as before, even when the config said 0 (any): clients already know it.
            sftp = self.config.sftp.model_copy(update={"port": self.port})
            try:
                await self._spawn(self.config.model_copy(update={"sftp": sftp}))
                event(log, "sftp.process_restarted", port=self.port)
                delay = RESTART_DELAY
            except UsageError as exc:
                event(log, "sftp.restart_failed", logging.ERROR, reason=str(exc), retry_in_s=delay)
                delay = min(delay * 2, 60.0)

    async def _relay_counts(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        while line := await self._process.stdout.readline():
            try:
                for name, amount, labels in json.loads(line)["counts"]:
                    count_locally(name, amount, tuple(labels))
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("sftp: unexpected output from the SFTP process: %r", line[:200])
        code = await self._process.wait()
        if not self._stopping:
            event(log, "sftp.process_exited", logging.ERROR, status=code)

    def banner(self) -> list[str]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return [f"  sftp   {host}:{self.port}  host key {self.fingerprint}"]

    def health(self) -> str | None:
        if self._process is None:
            return "SFTP server not started"
        if self._process.returncode is not None:
            return f"SFTP process exited with status {self._process.returncode}"
        return None

    async def stop(self) -> None:
        """SIGTERM: the child stops listening, lets uploads in flight finish within the grace, then exits."""
        if self._process is None:
            return
        self._stopping = True
        await self._terminate()
        if self._relay is not None:
            self._relay.cancel()
            with contextlib.suppress(BaseException):
                await self._relay
        await self._terminate()  # one the relay may have been starting at that very moment

    async def _terminate(self) -> None:
        assert self._process is not None
        if self._process.returncode is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._process.wait(), UPLOAD_GRACE + 15)
            except TimeoutError:
                event(log, "sftp.process_killed", logging.WARNING, reason="did not stop in time")
                await self._kill()
        if self._process.stdin is not None:
            self._process.stdin.close()

    async def _kill(self) -> None:
        assert self._process is not None
        if self._process.returncode is None:
            self._process.kill()
            await self._process.wait()

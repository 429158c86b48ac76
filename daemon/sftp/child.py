"""An SFTP process, `python -m daemon.sftp.child NUMBER`: started, watched and stopped by SFTPService (supervisor.py)."""

# Protocol with the daemon: the first line on stdin is the config as JSON; the listening port is taken with
# SO_REUSEPORT, shared with the daemon's other SFTP processes. On stdout, one JSON object per line:
# {"ready": {...}} once listening, or {"error": "..."} and exit 2; then {"counts": [[metric, amount, labels],
# ...]}: the metric updates of the last COUNT_DELAY seconds, added up per metric and labels; and
# {"failed": [address, account]} for each failed login. On stdin after the config, {"failed": [address,
# account]}: a failed login in another SFTP process; {"stop": SECONDS}: the daemon is stopping, uploads in
# flight get SECONDS (what remains of its jobs.shutdown_grace) to finish; {"force": true}: the daemon was told
# to stop a second time, uploads in flight are cut now. The end of stdin means the daemon is gone.
# SIGTERM or SIGINT (sent to the whole process group too, by a terminal's Ctrl-C or systemd): the first stops
# as SFTPListener.stop does (uploads in flight get jobs.shutdown_grace, or less if the daemon said so), a
# second one forces the stop; exit 0.

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading

from daemon.config import Config
from daemon.errors import IngestdError
from daemon.logs import event, setup_logging
from daemon.sftp.limits import raise_nofile_limit
from daemon.sftp.listener import SFTPListener
from daemon.shutdown import Shutdown
from daemon.store import open_state

_lock = threading.Lock()
COUNT_DELAY = 0.2  # seconds: a burst of small uploads costs the daemon one line, not two per file
COUNTS_PER_LINE = 200


class CountRelay:
    """Adds up metric updates and sends them to the daemon in one line at most every COUNT_DELAY seconds."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, tuple[str, ...]], float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, name: str, amount: float = 1.0, labels: tuple[str, ...] = ()) -> None:
        key = (name, labels)
        self._pending[key] = self._pending.get(key, 0.0) + amount
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(COUNT_DELAY, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, {}
        counts = [[name, amount, list(labels)] for (name, labels), amount in pending.items()]
        # Lines well below the 64 KiB the daemon's reader takes, however many accounts were busy.
        for start in range(0, len(counts), COUNTS_PER_LINE):
            send({"counts": counts[start : start + COUNTS_PER_LINE]})


def send(message: dict[str, object]) -> None:
    line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
    # Unbuffered, so nothing is left to flush at exit. A daemon that is gone (killed) closed the pipe:
    # there is no one left to tell, and we are stopping anyway.
    view, fd = memoryview(line), sys.stdout.fileno()
    with _lock, contextlib.suppress(BrokenPipeError):
        while view:
            view = view[os.write(fd, view) :]


def read_line(fd: int, pending: bytearray) -> bytes | None:
    """The next line from `fd` (without its newline), reading unbuffered; None at its end."""
    while (end := pending.find(b"\n")) < 0:
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        pending += chunk
    line = bytes(pending[:end])
    del pending[: end + 1]
    return line


class Stopper:
    """The stop of this process: asked by a signal or by the daemon's {"stop"}/{"force"} lines (see above)."""

    def __init__(self, shutdown: Shutdown) -> None:
        self.shutdown = shutdown
        self.requested = asyncio.Event()
        self._signals = 0

    def signal(self) -> None:
        self._signals += 1
        if self._signals == 1:
            self.begin()
        else:
            self.force()

    def begin(self, seconds: float | None = None) -> None:
        self.shutdown.begin(seconds)
        self.requested.set()

    def force(self) -> None:
        self.shutdown.force()
        self.requested.set()

    def message(self, message: dict[str, object]) -> bool:
        """Acts on a {"stop"} or {"force"} line from the daemon; False for any other line."""
        if message.get("force") is True:
            self.force()
            return True
        seconds = message.get("stop")
        if isinstance(seconds, int | float) and not isinstance(seconds, bool):
            self.begin(float(seconds))
            return True
        return False


def _watch_parent(
    loop: asyncio.AbstractEventLoop, stopper: Stopper, listener: SFTPListener, pending: bytearray
) -> None:
    """Read the daemon's messages from stdin until it closes it (or dies): then stop, so no orphan keeps the port."""
    # os.read, not sys.stdin: a daemon thread blocked inside the buffered reader's lock makes
    # interpreter shutdown abort with "could not acquire lock for <stdin>".
    fd = sys.stdin.fileno()
    with contextlib.suppress(RuntimeError):  # the loop already closed: we are stopping anyway
        while (line := read_line(fd, pending)) is not None:
            try:
                message = json.loads(line)
                if not isinstance(message, dict):
                    continue
                if "stop" in message or "force" in message:
                    loop.call_soon_threadsafe(stopper.message, message)
                    continue
                address, account = message["failed"]
            except (ValueError, KeyError, TypeError):
                continue  # nothing else is sent; a line from a newer daemon is not ours to act on
            loop.call_soon_threadsafe(listener.failed_elsewhere, str(address), str(account))
        loop.call_soon_threadsafe(stopper.begin)


def share_failure(address: str, account: str) -> None:
    send({"failed": [address, account]})


async def serve(config: Config, pending: bytearray, number: int) -> int:
    old, new = raise_nofile_limit()  # every connection is a descriptor
    if new != old:
        event(logging.getLogger("ingestd.sftp"), "sftp.nofile_limit_raised", soft=new, was=old)
    relay = CountRelay()
    shutdown = Shutdown(config.jobs.shutdown_grace)
    listener = SFTPListener(
        config,
        open_state(config),
        count=relay,
        reuse_port=True,
        share_failure=share_failure,
        sweep=False,
        number=number,
        shutdown=shutdown,
    )
    try:
        await listener.start()
    except OSError as exc:
        send({"error": f"sftp: cannot listen on {config.sftp.host}:{config.sftp.port}: {exc.strerror or exc}"})
        return 2
    except IngestdError as exc:
        send({"error": str(exc)})
        return 2
    stopper = Stopper(shutdown)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopper.signal)
    threading.Thread(
        target=_watch_parent, args=(loop, stopper, listener, pending), daemon=True, name="parent-watch"
    ).start()
    send({"ready": {"host": listener.host, "port": listener.port, "fingerprint": listener.fingerprint}})
    await stopper.requested.wait()
    await listener.stop()
    relay.flush()
    return 0


def main() -> int:
    pending = bytearray()
    config = Config.model_validate_json(read_line(sys.stdin.fileno(), pending) or b"")
    setup_logging(config.log.format, config.log.level)
    # Our formatters use none of the caller's file and line, thread or process fields: not collecting them
    # (the logging HOWTO's "Optimization") makes the log line of each upload ~40% cheaper.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    number = int(sys.argv[1]) if len(sys.argv) > 1 else 1  # 1..sftp.processes
    return asyncio.run(serve(config, pending, number))


if __name__ == "__main__":
    sys.exit(main())

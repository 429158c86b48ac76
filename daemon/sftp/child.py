"""The SFTP process, `python -m daemon.sftp.child`: started, watched and stopped by SFTPService."""

# Protocol with the daemon: the first line on stdin is the config as JSON; stdin stays open and its end
# means the daemon is gone. On stdout, one JSON object per line: {"ready": {...}} once listening, or
# {"error": "..."} and exit 2; then {"counts": [[metric, amount, labels], ...]}: the metric updates of the
# last COUNT_DELAY seconds, added up per metric and labels.
# SIGTERM or SIGINT: stop as SFTPListener.stop does (uploads in flight get their grace), exit 0.

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


def _watch_parent(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Block on stdin until the daemon closes it (or dies): then stop, so no orphan keeps the port."""
    # os.read, not sys.stdin: a daemon thread blocked inside the buffered reader's lock makes
    # interpreter shutdown abort with "could not acquire lock for <stdin>".
    fd = sys.stdin.fileno()
    while os.read(fd, 4096):
        pass
    with contextlib.suppress(RuntimeError):  # the loop already closed: we are stopping anyway
        loop.call_soon_threadsafe(stop.set)


async def serve(config: Config) -> int:
    old, new = raise_nofile_limit()  # every connection is a descriptor
    if new != old:
        event(logging.getLogger("ingestd.sftp"), "sftp.nofile_limit_raised", soft=new, was=old)
    relay = CountRelay()
    listener = SFTPListener(config, open_state(config), count=relay)
    try:
        await listener.start()
    except OSError as exc:
        send({"error": f"sftp: cannot listen on {config.sftp.host}:{config.sftp.port}: {exc.strerror or exc}"})
        return 2
    except IngestdError as exc:
        send({"error": str(exc)})
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    threading.Thread(target=_watch_parent, args=(loop, stop), daemon=True, name="parent-watch").start()
    send({"ready": {"host": listener.host, "port": listener.port, "fingerprint": listener.fingerprint}})
    await stop.wait()
    await listener.stop()
    relay.flush()
    return 0


def main() -> int:
    config = Config.model_validate_json(sys.stdin.buffer.readline())
    setup_logging(config.log.format, config.log.level)
    # Our formatters use none of the caller's file and line, thread or process fields: not collecting them
    # (the logging HOWTO's "Optimization") makes the log line of each upload ~40% cheaper.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())

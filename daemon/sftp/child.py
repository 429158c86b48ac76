"""The SFTP process, `python -m daemon.sftp.child`: started, watched and stopped by SFTPService."""

# Protocol with the daemon: the first line on stdin is the config as JSON; stdin stays open and its end
# means the daemon is gone. On stdout, one JSON object per line: {"ready": {...}} once listening, or
# {"error": "..."} and exit 2; then {"count": [metric, amount, labels]} for each metric update.
# SIGTERM or SIGINT: stop as SFTPListener.stop does (uploads in flight get their grace), exit 0.

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading

from daemon.config import Config
from daemon.errors import IngestdError
from daemon.logs import setup_logging
from daemon.sftp.listener import SFTPListener
from daemon.store import StateDB

_lock = threading.Lock()


def send(message: dict[str, object]) -> None:
    line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
    with _lock:
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()


def forward_count(name: str, amount: float = 1.0, labels: tuple[str, ...] = ()) -> None:
    send({"count": [name, amount, list(labels)]})


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
    listener = SFTPListener(config, StateDB(config.state_db), count=forward_count)
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
    return 0


def main() -> int:
    config = Config.model_validate_json(sys.stdin.buffer.readline())
    setup_logging(config.log.format, config.log.level)
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())

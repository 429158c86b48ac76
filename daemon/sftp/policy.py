"""What every session of one SFTP server shares: limits, the shutdown flag, uploads in flight, open handles."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from asyncssh import SFTPFailure

from daemon import metrics
from daemon.sftp.messages import TOO_MANY_OPEN

Count = Callable[[str, float, tuple[str, ...]], None]  # (name in daemon.metrics, amount, label values)


def count_locally(name: str, amount: float = 1.0, labels: tuple[str, ...] = ()) -> None:
    """Update a daemon.metrics counter; the SFTP process sends these to the daemon instead."""
    metric = getattr(metrics, name)
    (metric.labels(*labels) if labels else metric).inc(amount)


@dataclass
class SessionPolicy:
    """Shared by every session of one server: limits, the shutdown flag and the uploads in flight."""

    max_file_size: int
    count: Count = count_locally
    max_open_files: int = 64  # per account, over all its connections and sessions
    stopping: bool = False
    uploads: set[int] = field(default_factory=set)  # id() of open Upload objects
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    open_files: dict[str, int] = field(default_factory=dict)  # account -> handles open now

    def __post_init__(self) -> None:
        self.idle.set()

    def take_file(self, account: str) -> None:
        """One more open handle for `account`, or SFTPFailure when it holds `max_open_files` already."""
        held = self.open_files.get(account, 0)
        if held >= self.max_open_files:
            raise SFTPFailure(TOO_MANY_OPEN.format(limit=self.max_open_files))
        self.open_files[account] = held + 1

    def release_file(self, account: str) -> None:
        held = self.open_files.get(account, 0) - 1
        if held > 0:
            self.open_files[account] = held
        else:
            self.open_files.pop(account, None)

    def started(self, upload: object) -> None:
        self.uploads.add(id(upload))
        self.idle.clear()

    def finished(self, upload: object) -> None:
        self.uploads.discard(id(upload))
        if not self.uploads:
            self.idle.set()

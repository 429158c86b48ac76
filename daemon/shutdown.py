"""One deadline for the whole shutdown: `jobs.shutdown_grace` from the moment the stop begins.

The service stops its components one after the other (daemon/service.py); each one that has work in flight
(uploads, imports, deliveries) waits for it only as long as the shared deadline allows, so the whole stop
takes about the grace, however many components wait. A second stop signal forces the stop: every wait ends
at once. The SFTP processes are processes of their own: they get the seconds that remain on their stdin
(daemon/sftp/child.py) and keep a Shutdown of their own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any


class Shutdown:
    """The stop's deadline (time.monotonic), set by `begin`; `force` ends it now. Safe to share between loops."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.deadline: float | None = None
        self.forced = False
        self._waiters: set[asyncio.Future[Any]] = set()

    @property
    def started(self) -> bool:
        return self.deadline is not None

    def begin(self, grace: float | None = None) -> None:
        """The stop starts now, with `grace` seconds (default: the configured grace). A deadline already set is
        only ever brought forward: a stop that has begun never gets longer."""
        deadline = time.monotonic() + max(0.0, self.grace if grace is None else grace)
        if self.deadline is None or deadline < self.deadline:
            self.deadline = deadline
        if self.remaining() == 0:
            self._wake_waiters()

    def force(self) -> None:
        """A second stop signal: no more waiting, anywhere."""
        self.forced = True
        self.deadline = time.monotonic()
        self._wake_waiters()

    def remaining(self) -> float:
        """Seconds left to wait: the whole grace before the stop begins, 0 once it is forced or over."""
        if self.forced:
            return 0.0
        if self.deadline is None:
            return self.grace
        return max(0.0, self.deadline - time.monotonic())

    async def wait(self, tasks: Iterable[asyncio.Future[Any]], limit: float | None = None) -> set[asyncio.Future[Any]]:
        """Wait until every one of `tasks` is done, the deadline passes (or `limit` seconds, if sooner) or the
        stop is forced; returns those not done (they are left running: cancelling them is the caller's)."""
        pending = {task for task in tasks if not task.done()}
        timeout = self.remaining() if limit is None else min(limit, self.remaining())
        if not pending or timeout <= 0:
            return pending
        woken: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.add(woken)
        everything: asyncio.Future[Any] = asyncio.ensure_future(asyncio.wait(pending))
        try:
            await asyncio.wait({everything, woken}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._waiters.discard(woken)
            woken.cancel()
            everything.cancel()
        return {task for task in pending if not task.done()}

    def _wake_waiters(self) -> None:
        for woken in list(self._waiters):
            loop = woken.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, woken)


def _resolve(woken: asyncio.Future[Any]) -> None:
    if not woken.done():
        woken.set_result(None)

"""Fair shares of the SMTP conversations: a slot that frees goes to the waiting account with the fewest in flight.

Modelled on OpenSSH's PerSourceMaxStartups and Postfix's per-destination concurrency: one account's slow
destinations may fill most slots, never all of them, so another account waits at most about one conversation."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

# The class of rows that belong to no account (ops summaries, exports): shared, scheduled like one account.
SHARED = ""


class FairSlots:
    """At most `size` conversations at once, shared round-robin over accounts (then their channels, in order asked).

    The last free slot is kept for an account with nothing in flight: whatever one account's destinations do,
    a second account's email starts at once or as soon as any one conversation ends."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._held: dict[str, int] = {}  # account -> conversations in flight
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}  # account -> its waiters, first come first
        self._granted: dict[str, int] = {}  # account -> when it last got a slot (a counter): ties go to the longest ago
        self._ticks = 0

    @contextlib.asynccontextmanager
    async def hold(self, account: str | None) -> AsyncIterator[None]:
        """One conversation's slot for `account` (None or "" is the shared class), released on exit."""
        key = account or SHARED
        await self._acquire(key)
        try:
            yield
        finally:
            self._release(key)

    def in_flight(self, account: str | None = None) -> int:
        """Conversations holding a slot: all of them, or `account`'s."""
        if account is None:
            return sum(self._held.values())
        return self._held.get(account or SHARED, 0)

    def waiting(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    async def _acquire(self, key: str) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append(future)
        self._dispatch()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release(key)  # granted in the same moment the waiter was cancelled: hand it on
            else:
                queue = self._waiting.get(key)
                if queue is not None and future in queue:
                    queue.remove(future)
                    if not queue:
                        del self._waiting[key]
            raise

    def _release(self, key: str) -> None:
        self._held[key] -= 1
        if not self._held[key]:
            del self._held[key]
        self._dispatch()

    def _may_take(self, key: str) -> bool:
        free = self.size - self.in_flight()
        return free > 1 or (free == 1 and key not in self._held)

    def _dispatch(self) -> None:
        while True:
            ready = [key for key, queue in self._waiting.items() if queue and self._may_take(key)]
            if not ready:
                return
            key = min(ready, key=lambda k: (self._held.get(k, 0), self._granted.get(k, -1)))
            queue = self._waiting[key]
            future = queue.popleft()
            if not queue:
                del self._waiting[key]
            if future.done():  # cancelled while queued; its waiter removes nothing more
                continue
            self._held[key] = self._held.get(key, 0) + 1
            self._ticks += 1
            self._granted[key] = self._ticks
            future.set_result(None)

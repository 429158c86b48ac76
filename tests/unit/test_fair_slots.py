"""FairSlots: one account never holds every SMTP slot; a freed slot goes to the account with the fewest in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from notifier.slots import FairSlots


async def _take(slots: FairSlots, account: str | None, order: list[str], release: asyncio.Event) -> None:
    async with slots.hold(account):
        order.append(account or "shared")
        await release.wait()


def _run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def test_one_account_leaves_the_last_slot_to_the_others() -> None:
    async def scenario() -> None:
        slots, order, release = FairSlots(4), list[str](), asyncio.Event()
        tasks = [asyncio.create_task(_take(slots, "evil", order, release)) for _ in range(6)]
        await asyncio.sleep(0)
        assert slots.in_flight("evil") == 3 and slots.waiting() == 3
        tasks.append(asyncio.create_task(_take(slots, "good", order, release)))
        await asyncio.sleep(0)
        assert slots.in_flight("good") == 1 and slots.in_flight() == 4
        release.set()
        await asyncio.gather(*tasks)
        assert order[:4] == ["evil", "evil", "evil", "good"] and slots.in_flight() == 0

    _run(scenario())


def test_a_freed_slot_goes_to_an_account_with_nothing_in_flight_first() -> None:
    async def scenario() -> None:
        slots, order = FairSlots(3), list[str]()
        evil, good, shared, rest = asyncio.Event(), asyncio.Event(), asyncio.Event(), asyncio.Event()
        rest.set()
        tasks = [asyncio.create_task(_take(slots, "evil", order, evil)) for _ in range(2)]
        await asyncio.sleep(0)
        tasks.append(
            asyncio.create_task(_take(slots, "evil", order, rest))
        )  # queued first: the last slot is not evil's
        tasks.append(asyncio.create_task(_take(slots, "good", order, good)))
        tasks.append(asyncio.create_task(_take(slots, None, order, shared)))
        await asyncio.sleep(0)
        assert order == ["evil", "evil", "good"] and slots.waiting() == 2
        evil.set()  # both of evil's end: the first freed slot goes to the shared class, the next to evil
        await asyncio.sleep(0.01)
        assert order == ["evil", "evil", "good", "shared", "evil"]
        good.set()
        shared.set()
        await asyncio.gather(*tasks)
        assert slots.in_flight() == 0 and slots.waiting() == 0

    _run(scenario())


def test_a_cancelled_waiter_gives_up_its_place() -> None:
    async def scenario() -> None:
        slots, order, release = FairSlots(1), list[str](), asyncio.Event()
        holder = asyncio.create_task(_take(slots, "a", order, release))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(_take(slots, "b", order, release))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert slots.waiting() == 0
        release.set()
        await holder
        assert order == ["a"] and slots.in_flight() == 0

    _run(scenario())

"""The stop's one deadline (daemon/shutdown.py) and the SFTP process's side of it (daemon/sftp/child.py)."""

from __future__ import annotations

import asyncio

from daemon.sftp.child import Stopper
from daemon.shutdown import Shutdown

HOUR = 3600.0


def test_a_stop_with_nothing_in_flight_does_not_wait() -> None:
    shutdown = Shutdown(HOUR)
    shutdown.begin()

    async def stop() -> set[asyncio.Future[object]]:
        done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return await shutdown.wait([]) | await shutdown.wait([done])

    assert asyncio.run(asyncio.wait_for(stop(), 30)) == set()


def test_a_second_signal_ends_a_wait_for_work_that_never_finishes() -> None:
    shutdown = Shutdown(HOUR)
    shutdown.begin()

    async def stop_twice() -> tuple[bool, bool]:
        stuck = asyncio.get_running_loop().create_future()
        waiting = asyncio.create_task(shutdown.wait([stuck]))
        await asyncio.sleep(0)
        shutdown.force()
        pending = await asyncio.wait_for(waiting, 30)
        return pending == {stuck}, stuck.cancelled()

    # The work in flight is handed back, not done and not cancelled: what to do with it is the component's.
    assert asyncio.run(stop_twice()) == (True, False)
    assert shutdown.remaining() == 0


def test_the_deadline_is_set_once_and_only_ever_brought_forward() -> None:
    shutdown = Shutdown(HOUR)
    assert shutdown.remaining() == HOUR and not shutdown.started  # the whole grace, until the stop begins
    shutdown.begin(60)
    shutdown.begin()  # a component's own begin() later: the stop does not get longer
    assert 0 < shutdown.remaining() <= 60
    shutdown.begin(0)
    assert shutdown.remaining() == 0


def test_the_sftp_process_stops_with_the_daemons_seconds_and_forces_at_a_second_signal() -> None:
    async def run() -> list[tuple[bool, bool, float]]:
        stopper = Stopper(Shutdown(HOUR))
        states = []
        assert not stopper.message({"failed": ["127.0.0.1", "acme"]})  # not a stop line
        assert not stopper.message({"stop": True})  # not a number of seconds
        states.append((stopper.requested.is_set(), stopper.shutdown.forced, stopper.shutdown.remaining()))
        assert stopper.message({"stop": 30})  # the daemon's line: what remains of its grace
        states.append((stopper.requested.is_set(), stopper.shutdown.forced, min(stopper.shutdown.remaining(), 30)))
        stopper.signal()  # the Ctrl-C's SIGINT, which the process got too: still the first signal
        states.append((stopper.requested.is_set(), stopper.shutdown.forced, min(stopper.shutdown.remaining(), 30)))
        stopper.signal()  # the second Ctrl-C
        states.append((stopper.requested.is_set(), stopper.shutdown.forced, stopper.shutdown.remaining()))
        return states

    first, told, signalled, forced = asyncio.run(run())
    assert first == (False, False, HOUR)
    assert told[:2] == (True, False) and 0 < told[2] <= 30
    assert signalled[:2] == (True, False) and 0 < signalled[2] <= 30  # the signal did not give it the hour
    assert forced == (True, True, 0)

"""Failed SFTP logins per address: refusals get slower, then the address is turned away for `ban_time`."""

from __future__ import annotations

from daemon.sftp.auth import LoginGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refusals_slow_down_then_the_address_is_banned() -> None:
    guard = LoginGuard(max_failures=4, ban_time=600, clock=Clock())
    delays = [guard.delay("203.0.113.7")]
    for _ in range(3):
        assert guard.failed("203.0.113.7") is False
        delays.append(guard.delay("203.0.113.7"))
    assert delays == sorted(delays) and delays[0] == 0 and delays[-1] > delays[1] > 0
    assert not guard.banned("203.0.113.7")
    assert guard.failed("203.0.113.7") is True
    assert guard.banned("203.0.113.7")
    # Other addresses are not affected.
    assert not guard.banned("198.51.100.1") and guard.delay("198.51.100.1") == 0


def test_the_ban_ends_after_ban_time() -> None:
    clock = Clock()
    guard = LoginGuard(max_failures=1, ban_time=600, clock=clock)
    assert guard.failed("203.0.113.7") is True
    clock.now += 599
    assert guard.banned("203.0.113.7")
    clock.now += 2
    assert not guard.banned("203.0.113.7")


def test_failures_older_than_ban_time_are_forgotten() -> None:
    clock = Clock()
    guard = LoginGuard(max_failures=2, ban_time=600, clock=clock)
    assert guard.failed("203.0.113.7") is False
    clock.now += 601
    assert guard.failed("203.0.113.7") is False  # not two within ban_time
    assert not guard.banned("203.0.113.7")
    clock.now += 10
    assert guard.failed("203.0.113.7") is True


def test_addresses_with_nothing_recent_are_forgotten() -> None:
    clock = Clock()
    guard = LoginGuard(max_failures=5, ban_time=600, clock=clock)
    for index in range(10_001):
        guard.failed(f"10.0.{index // 256}.{index % 256}")
    clock.now += 601
    guard.failed("203.0.113.7")
    assert len(guard._records) == 1

"""Failed SFTP logins per (address, account): refusals get slower, then the pair is turned away for `ban_time`."""

from __future__ import annotations

from daemon.sftp.auth import ADDRESS_FACTOR, LoginGuard, wait_text

ADDRESS = "203.0.113.7"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refusals_slow_down_then_the_account_is_banned_from_that_address() -> None:
    guard = LoginGuard(max_failures=4, ban_time=600, clock=Clock())
    delays = [guard.delay(ADDRESS, "acme")]
    for _ in range(3):
        assert guard.failed(ADDRESS, "acme") is None
        delays.append(guard.delay(ADDRESS, "acme"))
    assert delays == sorted(delays) and delays[0] == 0 and delays[-1] > delays[1] > 0
    assert guard.banned(ADDRESS, "acme") is None
    ban = guard.failed(ADDRESS, "acme")
    assert ban is not None and (ban.address, ban.account, ban.failures) == (ADDRESS, "acme", 4)
    assert guard.banned(ADDRESS, "acme") == ("acme", 600)
    # The same address as another account, and other addresses, are not affected.
    assert guard.banned(ADDRESS, "globex") is None and guard.delay(ADDRESS, "globex") == 0
    assert guard.banned("198.51.100.1", "acme") is None and guard.delay("198.51.100.1", "acme") == 0


def test_a_stranger_failing_as_other_accounts_does_not_lock_out_a_partner_behind_the_same_nat() -> None:
    guard = LoginGuard(max_failures=3, ban_time=600, clock=Clock())
    for account in ("globex", "initech", "root"):
        for _ in range(3):
            guard.failed(ADDRESS, account)
    assert guard.banned(ADDRESS, "globex") is not None
    assert guard.banned(ADDRESS, "acme") is None


def test_an_address_trying_many_accounts_is_banned_for_all() -> None:
    guard = LoginGuard(max_failures=3, ban_time=600, clock=Clock())
    bans = [guard.failed(ADDRESS, f"user{index}") for index in range(3 * ADDRESS_FACTOR)]
    assert bans[-1] is not None and bans[-1].account == "" and bans[-1].reason == "failed_logins_many_accounts"
    assert all(ban is None for ban in bans[:-1])
    assert guard.banned(ADDRESS, "acme") == ("", 600)


def test_the_ban_ends_after_ban_time() -> None:
    clock = Clock()
    guard = LoginGuard(max_failures=1, ban_time=600, clock=clock)
    assert guard.failed(ADDRESS, "acme") is not None
    clock.now += 599
    assert guard.banned(ADDRESS, "acme") is not None
    clock.now += 2
    assert guard.banned(ADDRESS, "acme") is None


def test_failures_older_than_ban_time_are_forgotten() -> None:
    clock = Clock()
    guard = LoginGuard(max_failures=2, ban_time=600, clock=clock)
    assert guard.failed(ADDRESS, "acme") is None
    clock.now += 601
    assert guard.failed(ADDRESS, "acme") is None  # not two within ban_time
    assert guard.banned(ADDRESS, "acme") is None
    clock.now += 10
    assert guard.failed(ADDRESS, "acme") is not None


def test_restore_and_lift() -> None:
    guard = LoginGuard(max_failures=5, ban_time=600, clock=Clock())
    guard.restore(ADDRESS, "acme", 300)
    assert guard.banned(ADDRESS, "acme") == ("acme", 300)
    guard.lift(ADDRESS)
    assert guard.banned(ADDRESS, "acme") is None and guard.delay(ADDRESS, "acme") == 0


def test_addresses_with_nothing_recent_are_forgotten() -> None:
    clock = Clock()
    guard = LoginGuard(max_failures=5, ban_time=600, clock=clock)
    for index in range(5_001):
        guard.failed(f"10.0.{index // 256}.{index % 256}", "acme")
    clock.now += 601
    guard.failed(ADDRESS, "acme")
    assert len(guard._records) == 2  # (address, account) and (address, every account)


def test_wait_text() -> None:
    assert wait_text(5) == "1 minute"
    assert wait_text(540) == "9 minutes"
    assert wait_text(599.5) == "10 minutes"
    assert wait_text(3 * 3600) == "3 hours"

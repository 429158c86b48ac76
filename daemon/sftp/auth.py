"""SSH authentication: public keys from the key store at every login, failed logins slowed and then banned."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncssh

from daemon.logs import event
from daemon.sftp.handler import Count
from daemon.store.keys import ACCOUNT_RE, KeyStore

log = logging.getLogger("ingestd.sftp")

_MAX_KEYS_PER_CONNECTION = 6  # as OpenSSH's MaxAuthTries: a client offering more keys is cut off
_MAX_DELAY = 2.0
_PRUNE_ABOVE = 10_000  # addresses remembered before forgetting the ones with nothing recent
BANNED = "Too many failed logins from this address; try again later"


@dataclass
class _Record:
    failures: list[float] = field(default_factory=list)  # monotonic times of recent failed logins
    banned_until: float = 0.0


class LoginGuard:
    """Failed logins per address: each refusal is answered more slowly, then the address is refused for a while.

    A success does not wipe the count: an address gets `max_failures` failed logins per `ban_time`.
    """

    def __init__(self, max_failures: int, ban_time: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.ban_time = ban_time
        self.clock = clock
        self._records: dict[str, _Record] = {}

    def _recent(self, address: str, now: float) -> _Record:
        record = self._records.setdefault(address, _Record())
        record.failures = [t for t in record.failures if now - t < self.ban_time]
        return record

    def banned(self, address: str) -> bool:
        record = self._records.get(address)
        return record is not None and record.banned_until > self.clock()

    def delay(self, address: str) -> float:
        """How long to wait before telling this address its key was refused."""
        record = self._records.get(address)
        now = self.clock()
        count = sum(1 for t in record.failures if now - t < self.ban_time) if record else 0
        return 0.0 if count == 0 else min(0.25 * 2 ** (count - 1), _MAX_DELAY)

    def failed(self, address: str) -> bool:
        """Record a failed login; True when the address is now banned."""
        now = self.clock()
        if len(self._records) > _PRUNE_ABOVE:  # a scan from many addresses must not grow memory for ever
            self._records = {
                addr: rec
                for addr, rec in self._records.items()
                if rec.banned_until > now or any(now - t < self.ban_time for t in rec.failures)
            }
        record = self._recent(address, now)
        record.failures.append(now)
        if len(record.failures) >= self.max_failures:
            record.banned_until = now + self.ban_time
            record.failures.clear()
            return True
        return False


class AccountSSHServer(asyncssh.SSHServer):
    """One connection's authentication. Only public keys; the key store is read at each attempt."""

    _ids = itertools.count(1)

    def __init__(
        self, keys: KeyStore, guard: LoginGuard, connections: set[asyncssh.SSHServerConnection], count: Count
    ) -> None:
        self._keys = keys
        self._count = count
        self._guard = guard
        self._connections = connections
        self.connection_id = f"c{next(self._ids)}"
        self.address = ""
        self.account: str | None = None
        self._conn: asyncssh.SSHServerConnection | None = None
        self._attempts = 0

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.address = str(peer[0])
        if self._guard.banned(self.address):
            event(log, "login.refused", logging.WARNING, address=self.address, reason="banned")
            self._count("LOGIN_FAILURES", 1, ())
            conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, BANNED)
            return
        self._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._connections.discard(self._conn)
        if self.account is None and self._attempts and not self._guard.banned(self.address):
            self._count("LOGIN_FAILURES", 1, ())
            banned = self._guard.failed(self.address)
            event(
                log,
                "login.failed",
                logging.WARNING,
                address=self.address,
                keys_refused=self._attempts,
                banned=banned,
                connection_id=self.connection_id,
            )

    def begin_auth(self, username: str) -> bool:
        return True  # every login needs a key

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if ACCOUNT_RE.match(username):
            allowed = await asyncio.to_thread(self._keys.fingerprints, username)
            if key.get_fingerprint("sha256") in allowed:
                return True
        self._attempts += 1
        delay = self._guard.delay(self.address)
        if delay:
            await asyncio.sleep(delay)
        if self._attempts >= _MAX_KEYS_PER_CONNECTION and self._conn is not None:
            self._conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "Too many authentication failures")
        return False

    def auth_completed(self) -> None:
        assert self._conn is not None
        self.account = self._conn.get_extra_info("username")
        event(log, "login.succeeded", address=self.address, account=self.account, connection_id=self.connection_id)

    # No tunnels of any kind: SFTP is the only service.
    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
        return False

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        return False

"""SSH authentication: public keys from the key store at every login; failed logins slowed, then banned."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import asyncssh
from asyncssh.stream import SFTPServerFactory, SSHServerStreamSession

from daemon.logs import event
from daemon.sftp.algorithms import move_to_fast_cipher
from daemon.sftp.compat import accept_repeated_userauth, lazy_keepalive, skip_empty_ignore
from daemon.sftp.limits import StartupGate
from daemon.sftp.messages import (
    BANNED,
    BANNED_ADDRESS,
    TOO_MANY_AUTH_FAILURES,
    TOO_MANY_SESSIONS,
)
from daemon.sftp.policy import Count
from daemon.store.bans import Ban, BanStore
from daemon.store.keys import ACCOUNT_RE, KeyStore
from daemon.text import printable

log = logging.getLogger("ingestd.sftp")

_MAX_KEYS_PER_CONNECTION = 6  # as OpenSSH's MaxAuthTries: a client offering more keys is cut off
_MAX_DELAY = 2.0
_PRUNE_ABOVE = 10_000  # (address, account) pairs remembered before forgetting the ones with nothing recent
# Failures from one address over all accounts before the whole address is banned: high enough that a
# stranger behind a partner's NAT cannot lock the partner out by failing as another account a few times,
# low enough to stop a scanner that tries many account names.
ADDRESS_FACTOR = 4
EVERY_ACCOUNT = ""  # the account of an address-wide ban
# A client with no algorithm in common is logged with what each side offered (how ops learn that a partner's
# client needs sftp.ciphers or an upgrade), once per address per this many seconds: a scanner retrying in a
# loop must not flood the log.
HANDSHAKE_LOG_INTERVAL = 60.0
# What we verify in user auth, as OpenSSH 9: no SHA-1 ("ssh-rsa") signatures; RSA keys sign with SHA-2.
SIGNATURE_ALGS = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-256",
    "rsa-sha2-512",
]
_SIGNATURES = {alg.encode() for alg in SIGNATURE_ALGS}


@dataclass
class _Record:
    failures: list[float] = field(default_factory=list)  # clock times of recent failed logins
    banned_until: float = 0.0


def account_key(username: str) -> str:
    """The account part of a ban: the login name as typed, made printable and short."""
    return printable(username)[:64]


def wait_text(seconds: float) -> str:
    if seconds < 60:
        return "1 minute"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minutes" if minutes < 120 else f"{math.ceil(minutes / 60)} hours"


class LoginGuard:
    """Failed logins per (address, account): each refusal is answered more slowly, then the pair is refused
    for `ban_time`. An address failing `ADDRESS_FACTOR` times as often over all accounts is refused for every
    account. A success does not wipe the count.
    """

    def __init__(self, max_failures: int, ban_time: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.max_address_failures = max_failures * ADDRESS_FACTOR
        self.ban_time = ban_time
        self.clock = clock
        self._records: dict[tuple[str, str], _Record] = {}

    def _recent(self, key: tuple[str, str], now: float) -> _Record:
        record = self._records.setdefault(key, _Record())
        record.failures = [t for t in record.failures if now - t < self.ban_time]
        return record

    def banned(self, address: str, account: str) -> tuple[str, float] | None:
        """(account of the ban, seconds left) when `account` from `address` is refused now; else None."""
        now = self.clock()
        for key in ((address, EVERY_ACCOUNT), (address, account)):
            record = self._records.get(key)
            if record is not None and record.banned_until > now:
                return key[1], record.banned_until - now
        return None

    def delay(self, address: str, account: str) -> float:
        """How long to wait before telling this client its key was refused."""
        record = self._records.get((address, account))
        now = self.clock()
        count = sum(1 for t in record.failures if now - t < self.ban_time) if record else 0
        return 0.0 if count == 0 else min(0.25 * 2 ** (count - 1), _MAX_DELAY)

    def failed(self, address: str, account: str) -> Ban | None:
        """Record a failed login; the new ban (its `banned_until` in this guard's clock) if one starts."""
        now = self.clock()
        if len(self._records) > _PRUNE_ABOVE:  # a scan from many addresses must not grow memory for ever
            self._records = {
                key: rec
                for key, rec in self._records.items()
                if rec.banned_until > now or any(now - t < self.ban_time for t in rec.failures)
            }
        started = None
        for key, limit, reason in (
            ((address, account), self.max_failures, "failed_logins"),
            ((address, EVERY_ACCOUNT), self.max_address_failures, "failed_logins_many_accounts"),
        ):
            record = self._recent(key, now)
            record.failures.append(now)
            if len(record.failures) >= limit and record.banned_until <= now:
                record.banned_until = now + self.ban_time
                started = Ban(address, key[1], reason, len(record.failures), record.banned_until)
                record.failures.clear()
        return started

    def restore(self, address: str, account: str, seconds_left: float) -> None:
        """A ban read back from the state DB (written before a restart)."""
        record = self._records.setdefault((address, account), _Record())
        record.banned_until = max(record.banned_until, self.clock() + seconds_left)

    def lift(self, address: str) -> None:
        """Forget everything about `address` (an operator lifted its bans)."""
        for key in [key for key in self._records if key[0] == address]:
            del self._records[key]


SFTPFactory = Callable[[asyncssh.SSHServerChannel], asyncssh.SFTPServer]


class _Session(SSHServerStreamSession):
    """A session channel that tells its connection when it closes, for the MaxSessions count."""

    def __init__(self, sftp_factory: SFTPFactory, closed: Callable[[], None]) -> None:
        # A server session hands the factory its SSHServerChannel; asyncssh's alias names the base class.
        super().__init__(None, cast(SFTPServerFactory, sftp_factory), 3, False)
        self._closed: Callable[[], None] | None = closed

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        closed = self._closed
        if closed is not None:
            self._closed = None
            closed()


@dataclass
class LoginContext:
    """What every connection of one listener shares."""

    keys: KeyStore
    bans: BanStore
    guard: LoginGuard
    gate: StartupGate
    connections: set[asyncssh.SSHServerConnection]
    count: Count
    sftp_factory: SFTPFactory
    max_sessions: int
    prefer_fast: bool = False  # re-key clients that can onto AES-GCM after login (algorithms.move_to_fast_cipher)
    # Told of every failed login here, (address, account): the other SFTP processes count it too (share_failure).
    share_failure: Callable[[str, str], None] | None = None
    connection_prefix: str = "c"  # connection ids: "c2.17" is the 17th connection of SFTP process 2
    tasks: set[asyncio.Future[None]] = field(default_factory=set)
    handshakes_logged: dict[str, float] = field(default_factory=dict)  # address -> when its failure was logged

    def handshake_failed(self, address: str, reason: str) -> None:
        now = time.monotonic()
        if now - self.handshakes_logged.get(address, -math.inf) < HANDSHAKE_LOG_INTERVAL:
            return
        if len(self.handshakes_logged) > _PRUNE_ABOVE:
            self.handshakes_logged = {
                addr: at for addr, at in self.handshakes_logged.items() if now - at < HANDSHAKE_LOG_INTERVAL
            }
        self.handshakes_logged[address] = now
        event(log, "sftp.handshake_failed", logging.WARNING, address=address, reason=printable(reason)[:1000])

    def failed_elsewhere(self, address: str, account: str) -> None:
        """A failed login in another SFTP process: counted here as well, so a ban holds in every process.

        Every process sees every failure, so each starts the ban at the same failure; each writes it (the same
        row: address and account are its key), so that it is stored whichever process saw that failure first.
        """
        ban = self.guard.failed(address, account)
        if ban is not None:
            self.save_ban(ban)

    def save_ban(self, ban: Ban) -> None:
        """Write a new ban to the state DB in a thread (its time in epoch seconds), without waiting."""
        left = ban.banned_until - self.guard.clock()
        stored = Ban(ban.address, ban.account, ban.reason, ban.failures, time.time() + left)
        future = asyncio.get_running_loop().run_in_executor(None, self.bans.add, stored)
        self.tasks.add(future)
        future.add_done_callback(self._saved)

    def _saved(self, future: asyncio.Future[None]) -> None:
        self.tasks.discard(future)
        if not future.cancelled() and future.exception() is not None:
            event(log, "login.ban_not_saved", logging.ERROR, reason=str(future.exception()))

    def key_used(self, account: str, fingerprint: str) -> None:
        """Record the key's last use (`keys list`) in a thread, without waiting: a login never waits on it."""
        future = asyncio.get_running_loop().run_in_executor(None, self.keys.touch, account, fingerprint)
        self.tasks.add(future)
        future.add_done_callback(self._touched)

    def _touched(self, future: asyncio.Future[None]) -> None:
        self.tasks.discard(future)
        if not future.cancelled() and future.exception() is not None:
            event(log, "login.last_used_not_saved", logging.WARNING, reason=str(future.exception()))


class AccountSSHServer(asyncssh.SSHServer):
    """One connection's authentication. Only public keys; the key store is read at each attempt."""

    _ids = itertools.count(1)

    def __init__(self, context: LoginContext) -> None:
        self._ctx = context
        self.connection_id = f"{context.connection_prefix}{next(self._ids)}"
        self.address = ""
        self.account: str | None = None
        self._conn: asyncssh.SSHServerConnection | None = None
        self._starting = False  # counted in the StartupGate until logged in or gone
        self._refused: set[str] = set()  # accounts (as typed) whose keys this connection got refused
        self._attempts = 0
        self._sessions = 0
        self._turned_away = False
        self._dropped = False  # closed by the StartupGate to make room for a newer connection
        self._key: tuple[str, str] | None = None  # (name, fingerprint) of the key that was accepted
        self._offered: list[str] = []  # fingerprints of the keys refused, for login.failed

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        accept_repeated_userauth(conn)  # paramiko with several keys (daemon/sftp/compat.py)
        skip_empty_ignore(conn)  # no CBC countermeasure with AEAD ciphers (daemon/sftp/compat.py)
        lazy_keepalive(conn)  # one keepalive timer per interval, not one per read (daemon/sftp/compat.py)
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.address = str(peer[0])
        self._ctx.gate.opened(self.address, self, self._drop)
        self._starting = True
        self._ctx.connections.add(conn)

    def _drop(self) -> None:
        """Closed by the StartupGate to make room: not the client's doing, so not a failed login."""
        self._dropped = True
        if self._conn is not None:
            self._conn.abort()

    def _started(self) -> None:
        if self._starting:
            self._starting = False
            self._ctx.gate.done(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._started()
        if isinstance(exc, asyncssh.KeyExchangeFailed):  # e.g. "No matching MAC algorithm found, sent ... received"
            self._ctx.handshake_failed(self.address, str(exc))
        if self._conn is not None:
            self._ctx.connections.discard(self._conn)
        if self.account is not None or self._turned_away or self._dropped:
            return  # a connection we closed to make room never counts against its address
        for account in sorted(self._refused):
            self._ctx.count("LOGIN_FAILURES", 1, ())
            ban = self._ctx.guard.failed(self.address, account)
            if self._ctx.share_failure is not None:
                self._ctx.share_failure(self.address, account)
            event(
                log,
                "login.failed",
                logging.WARNING,
                address=self.address,
                account=account,
                keys_refused=self._attempts,
                fingerprints=self._offered,
                banned=ban is not None,
                connection_id=self.connection_id,
            )
            if ban is not None:
                self._ctx.save_ban(ban)

    async def begin_auth(self, username: str) -> bool:
        if self._starting:
            self._ctx.gate.logging_in(self)  # past its key exchange: no longer dropped to make room
        account = account_key(username)
        banned = self._ctx.guard.banned(self.address, account)
        if banned is not None:
            # Memory says banned; the DB says whether an operator lifted it since (`ingestd bans lift`).
            if self._ctx.tasks:  # a ban just decided may not be written yet
                await asyncio.gather(*list(self._ctx.tasks), return_exceptions=True)
            ban = await asyncio.to_thread(self._ctx.bans.banned, self.address, account)
            if ban is None:
                self._ctx.guard.lift(self.address)
                event(log, "login.ban_lifted", address=self.address)
            else:
                self._turn_away(ban.account, max(ban.banned_until - time.time(), 0.0))
        elif self._ctx.bans.db.shared:
            # Shared state (several nodes): another node may have banned the address since this one started.
            ban = await asyncio.to_thread(self._ctx.bans.banned, self.address, account)
            if ban is not None:
                left = max(ban.banned_until - time.time(), 0.0)
                self._ctx.guard.restore(ban.address, ban.account, left)
                self._turn_away(ban.account, left)
        return True  # every login needs a key

    def _turn_away(self, account: str, seconds_left: float) -> None:
        assert self._conn is not None
        self._turned_away = True
        wait = wait_text(seconds_left)
        if account == EVERY_ACCOUNT:
            message = BANNED_ADDRESS.format(address=self.address, wait=wait)
        else:
            message = BANNED.format(account=account, address=self.address, wait=wait)
        event(
            log,
            "login.refused",
            logging.WARNING,
            address=self.address,
            account=account or None,
            reason="banned",
            connection_id=self.connection_id,
        )
        self._ctx.count("LOGIN_FAILURES", 1, ())
        self._conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, message)

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
            allowed = await asyncio.to_thread(self._ctx.keys.login_keys, username)
            fingerprint = key.get_fingerprint("sha256")
            if fingerprint in allowed:
                self._key = (allowed[fingerprint], fingerprint)
                # asyncssh's `signature_algs` only sets what we advertise (server-sig-algs); it verifies any
                # algorithm the key type has. This key object is the one it verifies with: narrow it.
                key.all_sig_algorithms = set(key.all_sig_algorithms) & _SIGNATURES
                return True
        self._attempts += 1
        offered = key.get_fingerprint("sha256")
        if offered not in self._offered:
            self._offered.append(offered)
        account = account_key(username)
        self._refused.add(account)
        delay = self._ctx.guard.delay(self.address, account)
        if delay:
            await asyncio.sleep(delay)
        if self._attempts >= _MAX_KEYS_PER_CONNECTION and self._conn is not None:
            self._conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, TOO_MANY_AUTH_FAILURES)
        return False

    def auth_completed(self) -> None:
        assert self._conn is not None
        self._started()
        self.account = self._conn.get_extra_info("username")
        if self._ctx.prefer_fast:
            move_to_fast_cipher(self._conn)
        name, fingerprint = self._key or (None, None)
        event(
            log,
            "login.succeeded",
            address=self.address,
            account=self.account,
            key=name,
            fingerprint=fingerprint,
            connection_id=self.connection_id,
        )
        if self.account and fingerprint:
            self._ctx.key_used(self.account, fingerprint)

    def session_requested(self) -> _Session:
        # OpenSSH's MaxSessions: each session is a channel with its own SFTP server and buffers.
        if self._sessions >= self._ctx.max_sessions:
            event(
                log,
                "sftp.session_refused",
                logging.WARNING,
                account=self.account,
                reason="max_sessions",
                connection_id=self.connection_id,
            )
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, TOO_MANY_SESSIONS.format(limit=self._ctx.max_sessions)
            )
        self._sessions += 1
        return _Session(self._ctx.sftp_factory, self._session_closed)

    def _session_closed(self) -> None:
        self._sessions -= 1

    # No tunnels of any kind: SFTP is the only service.
    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
        return False

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        return False

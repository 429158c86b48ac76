"""The asyncssh listener: host keys, key-store logins, drop-folder sessions, an ordered shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh

from daemon.config import Config
from daemon.errors import UsageError
from daemon.logs import event
from daemon.proxyproto import ProxyTrust
from daemon.sftp.algorithms import select_algorithms
from daemon.sftp.auth import SIGNATURE_ALGS, AccountSSHServer, LoginContext, LoginGuard
from daemon.sftp.compat import quiet_debug_logs
from daemon.sftp.handler import Count, DropFolderSFTP, SessionPolicy, count_locally, sweep_temp_files
from daemon.sftp.limits import GatedListener, RefusalLog, StartupGate, quiet_accept_errors
from daemon.shutdown import Shutdown
from daemon.store import StateDB
from daemon.store.bans import BanStore
from daemon.store.keys import KeyStore

log = logging.getLogger("ingestd.sftp")

# (file name, asyncssh key type, bits): OpenSSH's names in data_dir/host_keys. The first is the one the
# banner shows; OpenSSH clients pick ed25519 when the server has it.
HOST_KEYS = {
    "ed25519": ("ssh_host_ed25519_key", "ssh-ed25519", None),
    "ecdsa": ("ssh_host_ecdsa_key", "ecdsa-sha2-nistp256", None),
    "rsa": ("ssh_host_rsa_key", "ssh-rsa", 3072),
}
HOST_KEY_FILE = HOST_KEYS["ed25519"][0]


def load_or_create_host_key(
    directory: Path, name: str = HOST_KEY_FILE, key_type: str = "ssh-ed25519", bits: int | None = None
) -> asyncssh.SSHKey:
    """One host key, generated on first start. Race-free: of several processes or nodes sharing data_dir and
    starting at once, the first key in place wins and every other one reads it, so all present the same key."""
    path = directory / name
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        key = asyncssh.generate_private_key(
            key_type, comment="ingestd host key", **({"key_size": bits} if bits else {})
        )
        if _place_exclusively(path, key.export_private_key("openssh")):
            (directory / f"{name}.pub").write_bytes(key.export_public_key("openssh"))
            event(log, "sftp.host_key_created", path=str(path), fingerprint=key.get_fingerprint("sha256"))
            return key
    deadline = time.monotonic() + HOST_KEY_READ_WAIT
    while True:
        try:
            key = asyncssh.read_private_key(path)
            break
        except (asyncssh.KeyImportError, OSError) as exc:
            # Where hard links are missing, the winner writes in place: its key may be half written yet.
            if time.monotonic() >= deadline:
                raise UsageError(f"host key {path}: cannot be read ({exc}); remove it to generate a new one") from None
            time.sleep(0.1)
    public = directory / f"{name}.pub"
    if not public.exists():  # informational only; a crash may have come between the two files
        public.write_bytes(key.export_public_key("openssh"))
    return key


HOST_KEY_READ_WAIT = 5.0  # seconds a starting node waits for another's key to be whole where links are missing


def _place_exclusively(path: Path, data: bytes) -> bool:
    """Write `data` at `path` (mode 0600) unless a file is there already; True if this call put it there.

    A whole temp file is linked into place (a link, unlike a rename, fails if the name exists), so the key is
    never seen half written. File systems without hard links get an O_EXCL create of the name instead."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        _write_new(temp, data, os.O_TRUNC)
        try:
            os.link(temp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some SMB or FUSE mounts)
            pass
    finally:
        temp.unlink(missing_ok=True)
    try:
        _write_new(path, data, os.O_EXCL)
        return True
    except FileExistsError:
        return False


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | mode, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def remove_temp_files(drop_root: Path) -> None:
    """Delete the temp uploads a crash left (sweep_temp_files), saying how many."""
    removed = sweep_temp_files(os.fsencode(drop_root))
    if removed:
        event(log, "sftp.temp_files_removed", count=removed)


def host_keypairs(keys: dict[str, asyncssh.SSHKey], algorithms: list[str]) -> list[asyncssh.SSHKeyPair]:
    """The keys as asyncssh key pairs for `algorithms`, in that order: one pair per algorithm.

    asyncssh offers every signature a key can make (an RSA key's include SHA-1 "ssh-rsa"), and it sets the
    chosen one on the key pair when a connection picks it, then signs with it a packet later. Two connections
    choosing rsa-sha2-512 and rsa-sha2-256 at once on one shared pair would sign with the other's algorithm;
    a pair per algorithm always signs with its own.
    """
    pairs = []
    for algorithm in algorithms:
        for key in keys.values():
            [keypair] = asyncssh.load_keypairs([key])
            if algorithm.encode() in keypair.host_key_algorithms:
                keypair.host_key_algorithms = (algorithm.encode(),)
                keypair.set_sig_algorithm(algorithm.encode())
                pairs.append(keypair)
    return pairs


class SFTPListener:
    """Listens for partners; each login gets DropFolderSFTP on drop_root/<account>. Runs in the SFTP process."""

    def __init__(
        self,
        config: Config,
        db: StateDB,
        count: Count = count_locally,
        *,
        reuse_port: bool = False,
        share_failure: Callable[[str, str], None] | None = None,
        sweep: bool = True,
        number: int | None = None,
        shutdown: Shutdown | None = None,
    ) -> None:
        self.config = config
        # The stop's deadline: uploads in flight get what remains of it (jobs.shutdown_grace from its start).
        self.shutdown = shutdown if shutdown is not None else Shutdown(config.jobs.shutdown_grace)
        self.count = count
        self.reuse_port = reuse_port  # one of several SFTP processes on this port
        self.share_failure = share_failure  # tells the other processes of a failed login here
        # Remove temp uploads a crash left; not where other processes may be writing theirs (the supervisor does).
        self.sweep = sweep
        self.number = number  # of this SFTP process, when the supervisor runs it
        self.keys = KeyStore(db)
        self.bans = BanStore(db)
        self.guard = LoginGuard(config.sftp.max_auth_failures, config.sftp.ban_time)
        self.refused = RefusalLog()
        self.gate = StartupGate(config.sftp.max_startups, config.sftp.per_source_max_startups, self.refused)
        self.policy: SessionPolicy | None = None
        self._context: LoginContext | None = None
        self.host_keys: list[asyncssh.SSHKeyPair] = []  # one per host key algorithm offered
        self.fingerprints: dict[str, str] = {}  # of the keys offered, by key type (ed25519, ecdsa, rsa)
        self.connections: set[asyncssh.SSHServerConnection] = set()
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self.host = config.sftp.host
        self.port = config.sftp.port

    async def start(self) -> None:
        drop_root = self.config.drop_root
        drop_root.mkdir(parents=True, exist_ok=True)
        if self.sweep:
            remove_temp_files(drop_root)
        algorithms = select_algorithms(self.config.sftp)  # before anything is written: a config error stops here
        keys = {label: load_or_create_host_key(self.config.host_keys_dir, *spec) for label, spec in HOST_KEYS.items()}
        self.host_keys = host_keypairs(keys, algorithms.host_key_algorithms)
        offered = {pair.public_data for pair in self.host_keys}
        self.fingerprints = {
            label: key.get_fingerprint("sha256") for label, key in keys.items() if key.public_data in offered
        }
        self.policy = SessionPolicy(
            max_file_size=self.config.sftp.max_file_size,
            count=self.count,
            max_open_files=self.config.sftp.max_open_files,
        )
        now = time.time()
        for ban in await asyncio.to_thread(self.bans.active):  # bans outlive a restart
            self.guard.restore(ban.address, ban.account, ban.banned_until - now)
        self._context = LoginContext(
            keys=self.keys,
            bans=self.bans,
            guard=self.guard,
            gate=self.gate,
            connections=self.connections,
            count=self.count,
            sftp_factory=self._sftp_factory,
            max_sessions=self.config.sftp.max_sessions,
            prefer_fast=algorithms.prefer_fast,
            share_failure=self.share_failure,
            connection_prefix="c" if self.number is None else f"c{self.number}.",
        )
        quiet_accept_errors(asyncio.get_running_loop(), self.refused)
        quiet_debug_logs()  # asyncssh's debug log calls cost nothing while off (daemon/sftp/compat.py)
        # No sftp_factory here: AccountSSHServer.session_requested opens SFTP sessions, counting them.
        self._acceptor = await asyncssh.listen(
            self.config.sftp.host,
            self.config.sftp.port,
            # Connection caps, checked before asyncssh sees a socket (after a trusted balancer's PROXY header).
            tunnel=GatedListener(
                self.gate, proxy_from=ProxyTrust(self.config.sftp.proxy_protocol_from), reuse_port=self.reuse_port
            ),
            server_factory=self._server_factory,
            server_host_keys=self.host_keys,
            allow_scp=False,
            allow_pty=False,
            line_editor=False,  # no terminals: the editor layer would only pass every SFTP packet through
            agent_forwarding=False,
            x11_forwarding=False,
            rdns_lookup=False,
            # Channel window and packet size stay at asyncssh's defaults: larger ones measured no better
            # (OpenSSH's client sends at most 32 KiB per channel packet whatever we allow: a 100 KiB file is
            # six SSH packets in, three out, with 32 KiB or with 128 KiB).
            encryption_algs=algorithms.ciphers,
            mac_algs=algorithms.macs,
            kex_algs=algorithms.kex_algorithms,
            signature_algs=SIGNATURE_ALGS,
            compression_algs=["none"],
            login_timeout=self.config.sftp.login_grace_time,
            keepalive_interval=60,
            server_version="ingestd",
            config=None,
        )
        self.port = self._acceptor.get_port() or self.port
        others: dict[str, Any] = {f"{label}_fingerprint": value for label, value in list(self.fingerprints.items())[1:]}
        process: dict[str, Any] = {} if self.number is None else {"process": self.number, "pid": os.getpid()}
        event(log, "sftp.listening", host=self.host, port=self.port, **process, fingerprint=self.fingerprint, **others)

    @property
    def fingerprint(self) -> str:
        """The first host key offered (ed25519 unless sftp.host_key_algorithms leaves it out)."""
        return next(iter(self.fingerprints.values()), "")

    def failed_elsewhere(self, address: str, account: str) -> None:
        """A failed login seen by another SFTP process (see LoginContext.failed_elsewhere)."""
        if self._context is not None:
            self._context.failed_elsewhere(address, account)

    def _server_factory(self) -> AccountSSHServer:
        assert self._context is not None
        return AccountSSHServer(self._context)

    def _sftp_factory(self, chan: asyncssh.SSHServerChannel) -> DropFolderSFTP:
        conn = chan.get_connection()
        owner = conn.get_owner()
        assert isinstance(owner, AccountSSHServer) and self.policy is not None
        account = chan.get_extra_info("username")
        root = self.config.drop_root / account
        root.mkdir(parents=True, exist_ok=True)
        return DropFolderSFTP(
            chan, root=os.fsencode(root), account=account, connection_id=owner.connection_id, policy=self.policy
        )

    async def stop(self) -> None:
        """No new connections, no new uploads; uploads in flight get what remains of the stop's deadline
        (`self.shutdown`: jobs.shutdown_grace from its start, none once forced); then every session ends."""
        if self._acceptor is None:
            return
        self.shutdown.begin()
        acceptor, self._acceptor = self._acceptor, None
        acceptor.close()
        assert self.policy is not None
        self.policy.stopping = True
        if self.policy.uploads and self.shutdown.remaining() > 0:
            grace = round(self.shutdown.remaining(), 1)
            event(log, "sftp.draining", uploads=len(self.policy.uploads), grace_s=grace)
            idle = asyncio.ensure_future(self.policy.idle.wait())
            try:
                await self.shutdown.wait([idle])
            finally:
                idle.cancel()
        # Closing a connection makes asyncssh close its open handles, which discards unfinished uploads.
        connections = list(self.connections)
        for conn in connections:
            conn.close()
        for conn in connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.wait_closed(), 5)
        # Python >= 3.12 waits here for every connection, hence after closing them.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(acceptor.wait_closed(), 5)
        if self._context is not None and self._context.tasks:
            await asyncio.gather(*self._context.tasks, return_exceptions=True)  # bans being written
        self.refused.flush()
        event(log, "sftp.stopped")

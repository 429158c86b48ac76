"""The asyncssh listener: host key, key-store logins, drop-folder sessions, an ordered shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path

import asyncssh
from asyncssh.kex import get_default_kex_algs

from daemon.config import Config
from daemon.errors import UsageError
from daemon.logs import event
from daemon.sftp.auth import SIGNATURE_ALGS, AccountSSHServer, LoginContext, LoginGuard
from daemon.sftp.handler import Count, DropFolderSFTP, SessionPolicy, count_locally, sweep_temp_files
from daemon.sftp.limits import GatedListener, RefusalLog, StartupGate, quiet_accept_errors
from daemon.store import StateDB
from daemon.store.bans import BanStore
from daemon.store.keys import KeyStore

log = logging.getLogger("ingestd.sftp")

HOST_KEY_FILE = "ssh_host_ed25519_key"
# AES-GCM only. OpenSSH clients take the first cipher of *their* list that the server offers, and they
# list chacha20-poly1305 and aes-ctr before aes-gcm. asyncssh spends ~40% less CPU per byte with AES-GCM
# (AES-NI through OpenSSL, no separate MAC) than with chacha20-poly1305, so offering only these is what
# makes clients pick them. Every maintained client (OpenSSH >= 6.2, PuTTY/WinSCP, FileZilla, paramiko)
# has AES-GCM. Channel window and packet size stay at asyncssh's defaults: larger ones measured no better.
ENCRYPTION_ALGS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]
# asyncssh's key exchanges without the SHA-1 ones (diffie-hellman-group1/14-sha1, group-exchange-sha1), as
# OpenSSH 9 has them off by default, and without GSS-API (we have no Kerberos).
KEX_ALGS = [
    alg.decode() for alg in get_default_kex_algs() if not alg.endswith(b"-sha1") and not alg.startswith(b"gss-")
]
UPLOAD_GRACE = 5.0  # seconds uploads in flight get to finish at shutdown


def load_or_create_host_key(directory: Path) -> asyncssh.SSHKey:
    """The server's ed25519 host key, generated on first start (written atomically, mode 0600)."""
    path = directory / HOST_KEY_FILE
    if path.exists():
        try:
            return asyncssh.read_private_key(path)
        except (asyncssh.KeyImportError, OSError) as exc:
            raise UsageError(f"host key {path}: cannot be read ({exc}); remove it to generate a new one") from None
    directory.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519", comment="ingestd host key")
    temp = directory / f".{HOST_KEY_FILE}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.export_private_key("openssh"))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    (directory / f"{HOST_KEY_FILE}.pub").write_bytes(key.export_public_key("openssh"))
    event(log, "sftp.host_key_created", path=str(path), fingerprint=key.get_fingerprint("sha256"))
    return key


class SFTPListener:
    """Listens for partners; each login gets DropFolderSFTP on drop_root/<account>. Runs in the SFTP process."""

    def __init__(self, config: Config, db: StateDB, count: Count = count_locally) -> None:
        self.config = config
        self.count = count
        self.keys = KeyStore(db)
        self.bans = BanStore(db)
        self.guard = LoginGuard(config.sftp.max_auth_failures, config.sftp.ban_time)
        self.refused = RefusalLog()
        self.gate = StartupGate(config.sftp.max_startups, config.sftp.per_source_max_startups, self.refused)
        self.policy: SessionPolicy | None = None
        self._context: LoginContext | None = None
        self.host_key: asyncssh.SSHKey | None = None
        self.connections: set[asyncssh.SSHServerConnection] = set()
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self.host = config.sftp.host
        self.port = config.sftp.port

    async def start(self) -> None:
        drop_root = self.config.drop_root
        drop_root.mkdir(parents=True, exist_ok=True)
        removed = sweep_temp_files(drop_root)
        if removed:
            event(log, "sftp.temp_files_removed", count=removed)
        self.host_key = load_or_create_host_key(self.config.host_keys_dir)
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
        )
        quiet_accept_errors(asyncio.get_running_loop(), self.refused)
        # No sftp_factory here: AccountSSHServer.session_requested opens SFTP sessions, counting them.
        self._acceptor = await asyncssh.listen(
            self.config.sftp.host,
            self.config.sftp.port,
            tunnel=GatedListener(self.gate),  # connection caps, checked before asyncssh sees a socket
            server_factory=self._server_factory,
            server_host_keys=[self.host_key],
            allow_scp=False,
            allow_pty=False,
            line_editor=False,  # no terminals: the editor layer would only pass every SFTP packet through
            agent_forwarding=False,
            x11_forwarding=False,
            rdns_lookup=False,
            encryption_algs=ENCRYPTION_ALGS,
            kex_algs=KEX_ALGS,
            signature_algs=SIGNATURE_ALGS,
            compression_algs=["none"],
            login_timeout=self.config.sftp.login_grace_time,
            keepalive_interval=60,
            server_version="ingestd",
            config=None,
        )
        self.port = self._acceptor.get_port() or self.port
        event(log, "sftp.listening", host=self.host, port=self.port, fingerprint=self.fingerprint)

    @property
    def fingerprint(self) -> str:
        return self.host_key.get_fingerprint("sha256") if self.host_key else ""

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
        """No new connections, no new uploads; uploads in flight get a short grace; then every session ends."""
        if self._acceptor is None:
            return
        acceptor, self._acceptor = self._acceptor, None
        acceptor.close()
        assert self.policy is not None
        self.policy.stopping = True
        if self.policy.uploads:
            event(log, "sftp.draining", uploads=len(self.policy.uploads), grace_s=UPLOAD_GRACE)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.policy.idle.wait(), UPLOAD_GRACE)
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

"""The few places ingestd leans on asyncssh internals; an upgrade that changes one fails here, by name."""

from __future__ import annotations

import inspect

import asyncssh
from asyncssh.stream import SSHServerStreamSession


def test_the_session_class_we_subclass_takes_the_arguments_we_pass() -> None:
    # daemon/sftp/auth.py _Session: SSHServerStreamSession(session_factory, sftp_factory, sftp_version, allow_scp)
    names = list(inspect.signature(SSHServerStreamSession.__init__).parameters)
    assert names[:5] == ["self", "session_factory", "sftp_factory", "sftp_version", "allow_scp"]
    assert hasattr(SSHServerStreamSession, "connection_lost")


def test_a_public_key_verifies_only_the_algorithms_in_all_sig_algorithms() -> None:
    # daemon/sftp/auth.py narrows key.all_sig_algorithms so an ssh-rsa (SHA-1) signature is refused.
    key = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
    public = asyncssh.import_public_key(key.export_public_key())
    assert b"ssh-rsa" in public.all_sig_algorithms and b"rsa-sha2-256" in public.all_sig_algorithms
    signed = key.sign(b"data", b"ssh-rsa")
    assert public.verify(b"data", signed)
    public.all_sig_algorithms = {b"rsa-sha2-256", b"rsa-sha2-512"}
    assert not public.verify(b"data", signed)
    assert public.verify(b"data", key.sign(b"data", b"rsa-sha2-256"))


def test_listen_takes_a_tunnel_with_create_server() -> None:
    # daemon/sftp/limits.py GatedListener is handed over as listen(tunnel=...).
    assert "tunnel" in inspect.signature(asyncssh.listen).parameters


def test_the_connection_state_the_aes_gcm_rekey_reads_is_still_there() -> None:
    # daemon/sftp/algorithms.py move_to_fast_cipher reads and sets these to re-key a client onto AES-GCM.
    from asyncssh.connection import SSHConnection

    source = inspect.getsource(SSHConnection)
    for name in ("_client_kexinit", "_enc_algs", "_enc_alg_cs", "_kexinit_sent", "_kex_complete", "self._kex "):
        assert name in source, name
    assert callable(SSHConnection._send_kexinit)


def test_asyncssh_still_accepts_the_userauth_service_once_and_reads_the_state_the_override_reads() -> None:
    # daemon/sftp/compat.py: if asyncssh starts accepting a repeated ssh-userauth request itself, or renames the
    # state the override reads, this fails and the override is to be reviewed (or removed).
    from asyncssh.connection import SSHConnection
    from asyncssh.constants import MSG_SERVICE_REQUEST

    from daemon.sftp import compat

    original = SSHConnection._packet_handlers[MSG_SERVICE_REQUEST]
    assert original is compat._ORIGINAL is SSHConnection._process_service_request
    source = inspect.getsource(original)
    assert "self._next_service = None" in source and "self._auth_in_progress = True" in source
    init = inspect.getsource(SSHConnection.__init__)
    assert "self._auth_in_progress = False" in init and "self._auth_complete = False" in init

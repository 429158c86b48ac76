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


def test_asyncssh_still_sends_the_empty_ignore_packet_through_self_send_packet() -> None:
    # daemon/sftp/compat.py skip_empty_ignore drops exactly this call: if asyncssh stops making it (or makes
    # it another way), the override is dead code or misses the packet.
    from asyncssh.connection import SSHConnection

    source = inspect.getsource(SSHConnection.send_packet)
    assert "self.send_packet(MSG_IGNORE, String(b''))" in source
    assert "self._send_encryption" in source
    assert "_send_encryption" in inspect.getsource(SSHConnection.__init__)


def test_the_empty_ignore_packets_are_dropped_with_aead_ciphers_only() -> None:
    from asyncssh.constants import MSG_CHANNEL_DATA, MSG_IGNORE
    from asyncssh.encryption import BasicEncryption, ChachaEncryption, GCMEncryption
    from asyncssh.packet import String

    from daemon.sftp.compat import skip_empty_ignore

    class Connection:
        def __init__(self, encryption: object) -> None:
            self._send_encryption = encryption
            self.sent: list[tuple[int, tuple[bytes, ...]]] = []

        def send_packet(self, pkttype: int, *args: bytes, handler: object = None) -> None:
            self.sent.append((pkttype, args))

    for cipher, kept in ((GCMEncryption, False), (ChachaEncryption, False), (BasicEncryption, True)):
        conn = Connection(object.__new__(cipher))
        skip_empty_ignore(conn)  # type: ignore[arg-type]
        conn.send_packet(MSG_IGNORE, String(b""))
        conn.send_packet(MSG_IGNORE, String(b"padding"))  # not the countermeasure: sent
        conn.send_packet(MSG_CHANNEL_DATA, b"\x00\x00\x00\x01", String(b"x"))
        expected = [(MSG_IGNORE, (String(b"padding"),)), (MSG_CHANNEL_DATA, (b"\x00\x00\x00\x01", String(b"x")))]
        if kept:
            expected.insert(0, (MSG_IGNORE, (String(b""),)))
        assert conn.sent == expected, cipher


def test_a_real_session_over_aes_gcm_gets_no_empty_ignore_packets(tmp_path) -> None:
    # In-process server on port 0 with the override, and an asyncssh client counting the packets it receives.
    import asyncio

    from asyncssh.constants import MSG_IGNORE

    from daemon.sftp.compat import skip_empty_ignore

    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")

    async def session(skip: bool) -> int:
        class Server(asyncssh.SSHServer):
            def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
                if skip:
                    skip_empty_ignore(conn)

            def begin_auth(self, username: str) -> bool:
                return True

            def public_key_auth_supported(self) -> bool:
                return True

            def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
                return key.public_data == client_key.public_data

        server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_factory=Server,
            server_host_keys=[host_key],
            sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(tmp_path).encode()),
            encryption_algs=["aes128-gcm@openssh.com"],
        )
        received: list[int] = []
        try:
            async with asyncssh.connect(
                "127.0.0.1", server.get_port(), username="acme", client_keys=[client_key], known_hosts=None
            ) as conn:
                log = conn.log_received_packet

                def counting(pkttype, *args, **kwargs):
                    received.append(pkttype)
                    return log(pkttype, *args, **kwargs)

                conn.log_received_packet = counting  # type: ignore[method-assign]
                async with conn.start_sftp_client() as sftp:
                    for _ in range(20):
                        assert "seen.csv" in await sftp.listdir(".")
        finally:
            server.close()
        return received.count(MSG_IGNORE)  # the connection's own packets (channel data goes to the channel)

    (tmp_path / "seen.csv").write_text("x\n")
    assert asyncio.run(session(skip=False)) > 20  # asyncssh alone: one before each packet
    assert asyncio.run(session(skip=True)) == 0  # the same session without them

"""The few places ingestd leans on asyncssh internals; an upgrade that changes one fails here, by name."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

import asyncssh
import pytest
from asyncssh.connection import SSHConnection
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
        server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_factory=_key_server(client_key, skip_empty_ignore if skip else None),
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


def test_asyncssh_still_resets_the_keepalive_timer_through_self_on_every_read() -> None:
    # daemon/sftp/compat.py lazy_keepalive replaces these three on the connection: if asyncssh stops calling
    # them through `self` (or renames the state they use), the override is dead code or breaks keepalives.
    from asyncssh.connection import SSHConnection

    assert "self._reset_keepalive_timer()" in inspect.getsource(SSHConnection._recv_data)
    assert "self._keepalive_timer_callback" in inspect.getsource(SSHConnection._set_keepalive_timer)
    reset = inspect.getsource(SSHConnection._reset_keepalive_timer)
    assert "self._cancel_keepalive_timer()" in reset and "self._set_keepalive_timer()" in reset
    callback = inspect.getsource(SSHConnection._keepalive_timer_callback)
    assert "self._keepalive_count += 1" in callback and "self._set_keepalive_timer()" in callback
    init = inspect.getsource(SSHConnection.__init__)
    assert "self._keepalive_timer" in init and "self._loop" in init


class _KeepaliveConnection:
    """The keepalive part of asyncssh's SSHConnection (its own methods), with the request counted."""

    _cancel_keepalive_timer: Any = SSHConnection._cancel_keepalive_timer
    _set_keepalive_timer: Any = SSHConnection._set_keepalive_timer
    _reset_keepalive_timer: Any = SSHConnection._reset_keepalive_timer
    _keepalive_timer_callback: Any = SSHConnection._keepalive_timer_callback

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self._loop = loop
        self._keepalive_interval = interval
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._keepalive_count = 0
        self._keepalive_count_max = 3
        self._auth_complete = True
        self.requests = 0
        self.lost: Exception | None = None

    async def _make_keepalive_request(self) -> None:
        self.requests += 1
        self._keepalive_count = 0  # the client answered

    def create_task(self, coro: Any) -> asyncio.Task[None]:
        return self._loop.create_task(coro)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc


def test_a_busy_connection_gets_no_keepalive_request_and_one_timer_per_interval_not_one_per_read() -> None:
    from daemon.sftp.compat import lazy_keepalive

    async def busy_then_quiet(lazy: bool) -> tuple[int, int, int]:
        loop = asyncio.get_running_loop()
        conn = _KeepaliveConnection(loop, interval=0.5)
        if lazy:
            lazy_keepalive(conn)  # type: ignore[arg-type]
        timers: list[object] = []  # each timer the connection held (kept, so no id is reused)

        def seen() -> None:
            if conn._keepalive_timer is not None and all(conn._keepalive_timer is not t for t in timers):
                timers.append(conn._keepalive_timer)

        try:
            conn._set_keepalive_timer()  # logged in
            for _ in range(40):  # data arriving every 25 ms for a second: never a quiet interval
                conn._reset_keepalive_timer()
                seen()
                await asyncio.sleep(0.025)
                seen()
            busy = conn.requests
            for _ in range(100):  # then quiet: asyncssh's own callback asks the client
                if conn.requests:
                    break
                await asyncio.sleep(0.05)
            return busy, conn.requests, len(timers)
        finally:
            conn._cancel_keepalive_timer()

    busy, quiet, timers = asyncio.run(busy_then_quiet(lazy=True))
    assert busy == 0 and quiet == 1
    assert timers <= 6  # one per interval (and the first); asyncssh alone makes one per read
    busy, quiet, timers = asyncio.run(busy_then_quiet(lazy=False))
    assert busy == 0 and quiet == 1 and timers >= 40  # the same behaviour, the cost the override removes


def test_a_real_idle_session_with_the_lazy_keepalive_still_gets_keepalive_requests(tmp_path) -> None:
    from asyncssh.constants import MSG_GLOBAL_REQUEST

    from daemon.sftp.compat import lazy_keepalive

    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")

    async def session() -> tuple[int, int]:
        server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_factory=_key_server(client_key, lazy_keepalive),
            server_host_keys=[host_key],
            sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(tmp_path).encode()),
            keepalive_interval=0.5,
        )
        received: list[int] = []
        try:
            async with asyncssh.connect(
                "127.0.0.1", server.get_port(), username="acme", client_keys=[client_key], known_hosts=None
            ) as conn:
                log = conn.log_received_packet

                def counting(pkttype: int, *args: Any, **kwargs: Any) -> None:
                    received.append(pkttype)
                    log(pkttype, *args, **kwargs)

                conn.log_received_packet = counting  # type: ignore[method-assign]
                async with conn.start_sftp_client() as sftp:
                    for _ in range(30):  # busy for about as long as two intervals
                        assert "seen.csv" in await sftp.listdir(".")
                        await asyncio.sleep(0.03)
                    busy = received.count(MSG_GLOBAL_REQUEST)
                    for _ in range(100):
                        if received.count(MSG_GLOBAL_REQUEST) > busy:
                            break
                        await asyncio.sleep(0.05)
                    # Answered: the connection is still there and works.
                    assert "seen.csv" in await sftp.listdir(".")
        finally:
            server.close()
        return busy, received.count(MSG_GLOBAL_REQUEST)

    (tmp_path / "seen.csv").write_text("x\n")
    busy, total = asyncio.run(session())
    assert busy == 0 and total >= 1


def test_asyncssh_logs_through_the_two_methods_quiet_debug_logs_wraps() -> None:
    # daemon/sftp/compat.py quiet_debug_logs: SSHLogger.log converts the arguments before the level check,
    # and packets are logged only at debug level 3 via _log_packet -> logger.packet. If that changes, review.
    from asyncssh.logging import SSHLogger
    from asyncssh.packet import SSHPacketLogger

    from daemon.sftp import compat

    assert compat._ORIGINAL_LOG.__qualname__ == "SSHLogger.log"
    assert compat._ORIGINAL_LOG_PACKET.__qualname__ == "SSHPacketLogger._log_packet"
    assert "super().log(level, msg, *log_args, **kwargs)" in inspect.getsource(compat._ORIGINAL_LOG)
    assert "self.log(logging.DEBUG" in inspect.getsource(SSHLogger.debug1)
    assert "if self._debug_level >= 3:" in inspect.getsource(SSHLogger.packet)
    assert "self.logger.packet(" in inspect.getsource(compat._ORIGINAL_LOG_PACKET)
    for name in ("log_sent_packet", "log_received_packet"):
        assert "self._log_packet(" in inspect.getsource(getattr(SSHPacketLogger, name))


def test_asyncssh_debug_lines_cost_nothing_while_off_and_are_written_when_on(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncssh.sftp
    from asyncssh.logging import SSHLogger
    from asyncssh.packet import SSHPacketLogger

    from daemon.sftp import compat

    monkeypatch.setattr(SSHLogger, "log", SSHLogger.log)  # restored after the test
    monkeypatch.setattr(SSHPacketLogger, "_log_packet", SSHPacketLogger._log_packet)
    monkeypatch.setattr(asyncssh.sftp, "hide_empty", asyncssh.sftp.hide_empty)
    monkeypatch.setattr(SSHLogger, "_debug_level", 1)
    compat.quiet_debug_logs()
    converted: list[str] = []

    class Probe:
        def __str__(self) -> str:
            converted.append("probe")
            return "probe-text"

    class Handler(SSHPacketLogger):
        logger = asyncssh.logging.logger.get_child("test")

        def __init__(self) -> None:
            self._handler_names = {94: "MSG_CHANNEL_DATA"}

    logger = asyncssh.logging.logger.get_child("test")
    caplog.set_level(logging.WARNING, logger="asyncssh")
    logger.debug1("Received %s", [Probe()])
    Handler().log_received_packet(94, 7, b"payload")
    assert converted == [] and caplog.records == []
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    logger.debug1("Received %s", [Probe()])
    assert converted == ["probe"] and "Received probe-text" in caplog.text
    Handler().log_received_packet(94, 7, b"payload")
    assert "MSG_CHANNEL_DATA" not in caplog.text  # packets only at debug level 3, as asyncssh does
    monkeypatch.setattr(SSHLogger, "_debug_level", 3)
    Handler().log_received_packet(94, 7, b"payload")
    assert "Received MSG_CHANNEL_DATA (94), 7 bytes" in caplog.text


def test_asyncssh_sftp_uses_hide_empty_only_in_log_calls() -> None:
    # daemon/sftp/compat.py quiet_debug_logs rebinds asyncssh.sftp.hide_empty to a lazy one: every call must
    # still be an argument of a logger call (formatted with %s), or a caller would get an object, not a str.
    import ast

    import asyncssh.sftp

    tree = ast.parse(inspect.getsource(asyncssh.sftp))
    in_log_calls: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr.startswith("debug"):
            in_log_calls.update(id(arg) for arg in node.args)
    uses = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hide_empty"
    ]
    assert uses, "asyncssh.sftp no longer calls hide_empty: the override is dead code"
    assert all(id(node) in in_log_calls for node in uses), [
        node.lineno for node in uses if id(node) not in in_log_calls
    ]


def test_the_lazy_hide_empty_writes_what_asyncssh_wrote(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncssh.sftp
    from asyncssh.misc import hide_empty

    from daemon.sftp import compat

    monkeypatch.setattr(asyncssh.sftp, "hide_empty", asyncssh.sftp.hide_empty)
    compat.quiet_debug_logs()
    attrs = asyncssh.SFTPAttrs(size=12, permissions=0o644)
    for value in (attrs, asyncssh.SFTPAttrs(), ""):
        # What the logging module makes of the argument when it writes the line.
        record = logging.LogRecord(
            "asyncssh", logging.DEBUG, "", 0, "open x%s", (asyncssh.sftp.hide_empty(value),), None
        )
        assert record.getMessage() == "open x" + hide_empty(value)


def _key_server(
    client_key: asyncssh.SSHKey, on_connection: Callable[[asyncssh.SSHServerConnection], None] | None
) -> type[asyncssh.SSHServer]:
    """A plain asyncssh server that lets `client_key` in, `on_connection` (an override) applied to each
    connection."""

    class Server(asyncssh.SSHServer):
        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            if on_connection is not None:
                on_connection(conn)

        def begin_auth(self, username: str) -> bool:
            return True

        def public_key_auth_supported(self) -> bool:
            return True

        def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
            return key.public_data == client_key.public_data

    return Server

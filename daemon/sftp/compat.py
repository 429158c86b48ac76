"""Narrow overrides of asyncssh's server behaviour for real clients, each visible here with its reason, and
guarded by tests/unit/test_asyncssh_seams.py (which fails when an upgrade changes what is overridden).

Paramiko sends a new `ssh-userauth` service request before every authentication attempt (paramiko#2405,
#23), for instance when an agent or `key_filename` offers several keys and the first is not the partner's.
Since 2.14.1 asyncssh accepts that service once and disconnects on the second ("Unexpected service in service
request"), so such a partner could never log in, while OpenSSH's sshd lets them. Here, while authentication
is in progress and not complete, a repeated request for the same service is accepted again and changes
nothing else; any other service request goes to asyncssh's own handler unchanged.

And three for speed, measured on 1,000 small uploads (bench/sftp_upload.py), where asyncssh's per-packet path
is most of the SFTP process's time:
- no empty SSH_MSG_IGNORE before every packet while the cipher is an AEAD one (skip_empty_ignore);
- the keepalive timer moved on lazily instead of being cancelled and made anew for every read from the
  socket (lazy_keepalive);
- asyncssh's debug and per-packet log calls stop before building their text when nothing would be written,
  and the SFTP server's file attributes are formatted for a debug line only when it is written
  (quiet_debug_logs): ingestd keeps the asyncssh logger at WARNING.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncssh
import asyncssh.sftp
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_IGNORE, MSG_SERVICE_ACCEPT, MSG_SERVICE_REQUEST
from asyncssh.encryption import ChachaEncryption, GCMEncryption
from asyncssh.logging import SSHLogger
from asyncssh.packet import SSHPacket, SSHPacketLogger, String

USERAUTH_SERVICE = b"ssh-userauth"
_ORIGINAL = SSHConnection._packet_handlers[MSG_SERVICE_REQUEST]


def _service_request(conn: Any, pkttype: int, pktid: int, packet: SSHPacket) -> None:
    if conn._auth_in_progress and not conn._auth_complete:
        service = packet.get_string()
        packet.check_end()
        if service != USERAUTH_SERVICE:
            raise asyncssh.ServiceNotAvailable("Unexpected service in service request")
        conn.send_packet(MSG_SERVICE_ACCEPT, String(service))
        return
    _ORIGINAL(conn, pkttype, pktid, packet)


def accept_repeated_userauth(conn: asyncssh.SSHServerConnection) -> None:
    """Install the override on this one connection (its own handler table; the class's is left alone)."""
    handlers = dict(type(conn)._packet_handlers)
    handlers[MSG_SERVICE_REQUEST] = _service_request
    conn._packet_handlers = handlers


_EMPTY = (String(b""),)
# Ciphers that need no countermeasure against the CBC attacks: AEAD modes, where nothing of one packet's
# encryption carries over into the next one's.
_AEAD = (GCMEncryption, ChachaEncryption)


def skip_empty_ignore(conn: asyncssh.SSHServerConnection) -> None:
    """Stop `conn` sending an empty SSH_MSG_IGNORE before each of its packets while the cipher is AES-GCM or
    chacha20-poly1305.

    asyncssh inserts one before every packet once encryption is on (`SSHConnection.send_packet`, asyncssh
    2.24): the old countermeasure against chosen-plaintext attacks on CBC ciphers, where the IV of a packet
    is the previous packet's last block. With AEAD ciphers it only doubles the packets sent: one more
    encryption and one more `send()` for each SFTP reply. It cost about a fifth of the SFTP process's time
    on 1,000 small uploads (py-spy, bench/sftp_upload.py). Every other cipher (CBC and CTR ones, which
    `sftp.ciphers` may name) keeps the empty packets.

    The override is an attribute on this connection only, wrapping asyncssh's own method: asyncssh sends
    the packet through `self.send_packet`, so the wrapper sees it and drops exactly that packet.
    """
    send = conn.send_packet

    def send_packet(pkttype: int, *args: bytes, handler: Any = None) -> None:
        if pkttype == MSG_IGNORE and args == _EMPTY and isinstance(conn._send_encryption, _AEAD):
            return
        send(pkttype, *args, handler=handler)

    conn.send_packet = send_packet  # type: ignore[method-assign]


def lazy_keepalive(conn: asyncssh.SSHServerConnection) -> None:
    """Keep `conn`'s keepalive timer (keepalive_interval) without a new timer for each read from its socket.

    asyncssh 2.24 calls `_reset_keepalive_timer` from `_recv_data`, on every chunk received: it cancels the
    timer and makes a new one with `loop.call_later` (the cancelled one stays in the loop's heap until it is
    due or swept). That was about 3% of the SFTP process on small uploads. Here a reset only moves the due
    time forward; when the timer fires early (activity since it was set), it is set again for the rest of the
    interval, and only a timer that fires after a whole quiet interval runs asyncssh's own callback (which
    counts the missed reply and sends a keepalive request). Same behaviour, one timer per interval.

    Attributes on this connection only: asyncssh calls these through `self`.
    """
    loop = conn._loop
    original_callback = conn._keepalive_timer_callback
    original_set = conn._set_keepalive_timer
    due = [0.0]

    def set_timer() -> None:
        due[0] = loop.time() + conn._keepalive_interval
        original_set()  # calls self._keepalive_timer_callback: the one below

    def callback() -> None:
        remaining = due[0] - loop.time()
        if remaining > 0:
            conn._keepalive_timer = loop.call_later(remaining, callback)
            return
        original_callback()

    def reset() -> None:
        if not conn._auth_complete:
            return
        timer = conn._keepalive_timer
        due[0] = loop.time() + conn._keepalive_interval
        if timer is None or timer.when() > due[0]:  # none yet, or a shorter interval set meanwhile
            conn._cancel_keepalive_timer()
            set_timer()

    conn._set_keepalive_timer = set_timer  # type: ignore[method-assign]
    conn._keepalive_timer_callback = callback  # type: ignore[method-assign]
    conn._reset_keepalive_timer = reset  # type: ignore[method-assign]


_ORIGINAL_LOG = SSHLogger.log
_ORIGINAL_LOG_PACKET = SSHPacketLogger._log_packet
_ORIGINAL_HIDE_EMPTY = asyncssh.sftp.hide_empty


class _HiddenIfEmpty:
    """asyncssh's `hide_empty(attrs)` (a debug-line argument) worked out only when the line is written."""

    __slots__ = ("prefix", "value")

    def __init__(self, value: object, prefix: str = ", ") -> None:
        self.value = value
        self.prefix = prefix

    def __str__(self) -> str:
        return str(_ORIGINAL_HIDE_EMPTY(self.value, self.prefix))


def _log(self: SSHLogger, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
    if self.isEnabledFor(level):
        _ORIGINAL_LOG(self, level, msg, *args, **kwargs)


def _log_packet(self: Any, msg: str, pkttype: int, pktid: int | None, packet: Any, note: str) -> None:
    if SSHLogger._debug_level >= 3 and self.logger.isEnabledFor(logging.DEBUG):
        _ORIGINAL_LOG_PACKET(self, msg, pkttype, pktid, packet, note)


def quiet_debug_logs() -> None:
    """Make asyncssh's debug logging free when it is off (once per process; asyncssh's classes, not copies).

    `SSHLogger.log` (behind every `debug1` call, several per SFTP request) converts each argument to text
    and defines two helper functions before the standard library checks the level and drops the record.
    `SSHPacketLogger._log_packet` (two calls per SSH packet and two per SFTP packet) formats the packet's
    name and size before `SSHLogger.packet` drops it unless the debug level is 3. Together about 8% of the
    SFTP process on small uploads. Both now return first when nothing would be written, and otherwise run
    asyncssh's own code unchanged, so `asyncssh.set_debug_level(3)` with the asyncssh logger at DEBUG still
    logs every packet.

    And in the SFTP server, `hide_empty(attrs)` is passed to a debug1 line of every open (and setstat):
    it formats all the attributes at once, written or not. The name in asyncssh.sftp is bound to a class
    whose instances do that only when the line is formatted; hide_empty is used there for nothing else.
    """
    SSHLogger.log = _log  # type: ignore[method-assign]
    SSHPacketLogger._log_packet = _log_packet  # type: ignore[method-assign]
    asyncssh.sftp.hide_empty = _HiddenIfEmpty  # type: ignore[assignment]

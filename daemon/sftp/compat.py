"""Narrow overrides of asyncssh's server behaviour for real clients, each visible here with its reason, and
guarded by tests/unit/test_asyncssh_seams.py (which fails when an upgrade changes what is overridden).

Paramiko sends a new `ssh-userauth` service request before every authentication attempt (paramiko#2405,
#23), for instance when an agent or `key_filename` offers several keys and the first is not the partner's.
Since 2.14.1 asyncssh accepts that service once and disconnects on the second ("Unexpected service in service
request"), so such a partner could never log in, while OpenSSH's sshd lets them. Here, while authentication
is in progress and not complete, a repeated request for the same service is accepted again and changes
nothing else; any other service request goes to asyncssh's own handler unchanged.

And one for speed: no empty SSH_MSG_IGNORE before every packet while the cipher is an AEAD one
(skip_empty_ignore, below).
"""

from __future__ import annotations

from typing import Any

import asyncssh
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_IGNORE, MSG_SERVICE_ACCEPT, MSG_SERVICE_REQUEST
from asyncssh.encryption import ChachaEncryption, GCMEncryption
from asyncssh.packet import SSHPacket, String

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

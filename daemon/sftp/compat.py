"""Narrow overrides of asyncssh's server behaviour for real clients, each visible here with its reason, and
guarded by tests/unit/test_asyncssh_seams.py (which fails when an upgrade changes what is overridden).

Paramiko sends a new `ssh-userauth` service request before every authentication attempt (paramiko#2405,
#23), for instance when an agent or `key_filename` offers several keys and the first is not the partner's.
Since 2.14.1 asyncssh accepts that service once and disconnects on the second ("Unexpected service in service
request"), so such a partner could never log in, while OpenSSH's sshd lets them. Here, while authentication
is in progress and not complete, a repeated request for the same service is accepted again and changes
nothing else; any other service request goes to asyncssh's own handler unchanged.
"""

from __future__ import annotations

from typing import Any

import asyncssh
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_SERVICE_ACCEPT, MSG_SERVICE_REQUEST
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
    conn._packet_handlers = handlers  # type: ignore[misc]

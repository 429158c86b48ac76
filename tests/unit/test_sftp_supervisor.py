"""The SFTP supervisor's port: reserved once, shared by the SFTP processes, refused when someone else has it."""

from __future__ import annotations

import socket

import pytest

from daemon.errors import UsageError
from daemon.sftp.supervisor import process_count, reserve_port


def listener(port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    return sock


def test_port_0_reserves_one_free_port_that_every_sftp_process_can_listen_on() -> None:
    [reserved] = reserve_port("127.0.0.1", 0)
    port = reserved.getsockname()[1]
    processes = [listener(port, reuse_port=True) for _ in range(3)]
    try:
        assert port != 0
        # Connections reach the processes, never the reservation (it does not listen).
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(30)]
        accepted = 0
        for sock in processes:
            sock.setblocking(False)
            while True:
                try:
                    sock.accept()[0].close()
                    accepted += 1
                except BlockingIOError:
                    break
        assert accepted == 30
        for client in clients:
            client.close()
        # Another program (no SO_REUSEPORT) cannot take the port, not even while no process listens.
        for sock in processes:
            sock.close()
        with pytest.raises(OSError), socket.socket() as stranger:
            stranger.bind(("127.0.0.1", port))
    finally:
        for sock in processes:
            sock.close()
        reserved.close()


def test_a_port_in_use_is_refused_with_the_address_even_when_its_owner_allows_sharing() -> None:
    # Another ingestd's SFTP processes listen with SO_REUSEPORT: a second daemon must not join them.
    owner = listener(0, reuse_port=True)
    port = owner.getsockname()[1]
    try:
        with pytest.raises(UsageError, match=rf"^sftp: cannot listen on 127\.0\.0\.1:{port}: Address already in use"):
            reserve_port("127.0.0.1", port)
    finally:
        owner.close()


def test_processes_0_means_one_per_core() -> None:
    assert process_count(3) == 3
    assert process_count(0) >= 1

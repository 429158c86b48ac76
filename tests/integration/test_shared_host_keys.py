"""Two nodes on one data_dir present the same SSH host keys, even when both start at once on a fresh one."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from tests.fixtures.daemon import Daemon, daemon_env


def scanned(port: int) -> dict[str, str]:
    """The host keys a server presents, by type, as OpenSSH's ssh-keyscan sees them."""
    result = subprocess.run(
        ["ssh-keyscan", "-p", str(port), "-t", "ed25519,ecdsa,rsa", "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    keys = {}
    for line in result.stdout.splitlines():
        if line and not line.startswith("#"):
            _, key_type, blob = line.split()[:3]
            keys[key_type] = blob
    return keys


def test_two_daemons_started_at_once_on_a_fresh_data_dir_present_identical_host_keys(tmp_path: Path) -> None:
    data = tmp_path / "shared"
    nodes = [Daemon(data, daemon_env(data)) for _ in range(2)]
    for index, node in enumerate(nodes):  # their own log files; the data_dir is the one they share
        node.log_path = tmp_path / f"node{index}.stderr.log"
        node.stdout_path = tmp_path / f"node{index}.stdout.log"
    errors: list[BaseException] = []

    def start(node: Daemon) -> None:
        try:
            node.start(timeout=60)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(node,)) for node in nodes]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert not errors, errors
        first, second = (scanned(node.sftp_port) for node in nodes)
        assert set(first) == {"ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"}
        assert first == second
        created = [node.log().count("sftp.host_key_created") for node in nodes]
        assert sum(created) == 3  # each key generated once, by whichever node got there first
    finally:
        for node in nodes:
            if node.running:
                node.stop()

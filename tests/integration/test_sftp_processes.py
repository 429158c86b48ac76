"""Several SFTP processes on one port (`sftp.processes`): keys, bans and metrics hold across them, and a
killed one is replaced while the port keeps serving."""

from __future__ import annotations

import os
import re
import signal
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest

from tests.fixtures.common import wait_for
from tests.fixtures.daemon import Daemon
from tests.fixtures.sshkeys import make_keypair

MakeDaemon = Callable[..., Daemon]
PROCESSES = 3
MAX_CONNECTIONS = 90  # hashed over 3 processes, the chance that one gets none of them is below 1e-15


def log_in(daemon: Daemon, account: str, key: Path) -> paramiko.Transport:
    """A new connection (a new source port: the kernel picks its process) logged in with `key`."""
    sock = socket.create_connection(("127.0.0.1", daemon.sftp_port), timeout=30)
    transport = paramiko.Transport(sock)
    try:
        transport.connect(username=account, pkey=paramiko.PKey.from_path(key))
    except BaseException:
        transport.close()  # the server counts a failed login when the connection ends
        raise
    return transport


def refused(daemon: Daemon, account: str, key: Path) -> str | None:
    """The reason a login with `key` is refused (the server's disconnect message, if any), None if it succeeds."""
    try:
        log_in(daemon, account, key).close()
    except paramiko.SSHException as exc:
        return str(exc) or type(exc).__name__
    return None


def upload(transport: paramiko.Transport, name: str, content: bytes) -> None:
    sftp = paramiko.SFTPClient.from_transport(transport)
    assert sftp is not None
    with sftp.open(name, "wb") as remote:
        remote.write(content)
    sftp.close()


def processes_in(log: str, event: str, account: str) -> set[str]:
    """The SFTP process numbers whose log lines `event` for `account` carry (connection ids are "c<process>.<n>")."""
    found = set()
    for line in log.splitlines():
        if f" {event} " in line and f"account={account} " in line:
            match = re.search(r"connection_id=c(\d+)\.\d+", line)
            if match:
                found.add(match.group(1))
    return found


def child_pids(daemon: Daemon) -> list[int]:
    """The daemon's SFTP processes, as `ps` shows them: its children running daemon.sftp.child."""
    assert daemon.process is not None
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        if ppid == daemon.process.pid and b"daemon.sftp.child" in command:
            pids.append(int(entry.name))
    return sorted(pids)


def gone(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def metric(daemon: Daemon, name: str) -> float:
    assert daemon.http_url is not None
    with urllib.request.urlopen(f"{daemon.http_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    return {name: make_keypair(tmp_path / "keys" / name) for name in ("acme", "stranger")}


def test_keys_added_while_running_log_in_on_every_process_and_metrics_count_all_uploads(
    make_daemon: MakeDaemon, keys: dict[str, tuple[Path, Path]]
) -> None:
    daemon = make_daemon(INGESTD_SFTP__PROCESSES=str(PROCESSES), INGESTD_SFTP__MAX_AUTH_FAILURES="1000")
    assert f"({PROCESSES} processes)" in daemon.stdout()
    assert len(child_pids(daemon)) == PROCESSES
    private, public = keys["acme"]
    assert refused(daemon, "acme", private) is not None  # not registered yet
    daemon.add_key("acme", public, name="laptop")  # while the daemon runs

    uploads = 0
    while len(processes_in(daemon.log(), "login.succeeded", "acme")) < PROCESSES and uploads < MAX_CONNECTIONS:
        transport = log_in(daemon, "acme", private)
        upload(transport, f"part-{uploads}.csv", b"identity\n1\n")
        transport.close()
        uploads += 1
    # Every process served logins with the key added after they started, and stored what they received.
    assert processes_in(daemon.log(), "login.succeeded", "acme") == {str(n) for n in range(1, PROCESSES + 1)}
    assert sorted(p.name for p in daemon.drop("acme").glob("part-*.csv")) == sorted(
        f"part-{n}.csv" for n in range(uploads)
    )
    # /metrics adds up the uploads of every process (each reports its counts to the daemon).
    wait_for(lambda: metric(daemon, 'ingestd_uploads_total{account="acme"}') == uploads, f"{uploads} uploads")
    assert metric(daemon, 'ingestd_upload_bytes_total{account="acme"}') == 11 * uploads

    # A key revoked while running is refused by every process: enough attempts reach each of them.
    revoked = daemon.cli("keys", "revoke", "acme", "laptop")
    assert revoked.returncode == 0, revoked.stderr
    attempts = 0
    while len(processes_in(daemon.log(), "login.failed", "acme")) < PROCESSES and attempts < MAX_CONNECTIONS:
        assert refused(daemon, "acme", private) is not None
        attempts += 1
    assert processes_in(daemon.log(), "login.failed", "acme") == {str(n) for n in range(1, PROCESSES + 1)}
    assert "Traceback" not in daemon.log()


def test_failed_logins_through_several_processes_add_up_to_a_ban_that_every_process_holds(
    make_daemon: MakeDaemon, keys: dict[str, tuple[Path, Path]]
) -> None:
    daemon = make_daemon(
        INGESTD_SFTP__PROCESSES=str(PROCESSES), INGESTD_SFTP__MAX_AUTH_FAILURES="3", INGESTD_SFTP__BAN_TIME="10m"
    )
    private, public = keys["acme"]
    daemon.add_key("acme", public)
    # Three failures, each on whichever process the kernel picks: counted together, they are a ban.
    for _ in range(3):
        assert refused(daemon, "acme", keys["stranger"][0]) is not None
    # A failure counts when the server sees the connection end, a moment after the client has given up; the
    # process that counts the third one starts the ban and relays the failure to the others before storing it.
    wait_for(lambda: "127.0.0.1" in daemon.cli("bans", "list").stdout, "the ban to be stored")
    attempts = 0
    while len(processes_in(daemon.log(), "login.refused", "acme")) < PROCESSES and attempts < MAX_CONNECTIONS:
        # The right key, from the banned address: turned away by whichever process takes the connection.
        assert refused(daemon, "acme", private) is not None
        attempts += 1
    assert processes_in(daemon.log(), "login.refused", "acme") == {str(n) for n in range(1, PROCESSES + 1)}
    assert re.search(r"login\.refused address=127\.0\.0\.1 account=acme reason=banned", daemon.log())
    # Stored once for `ingestd bans`, however many processes saw it start.
    listed = daemon.cli("bans", "list")
    assert listed.returncode == 0 and listed.stdout.count("127.0.0.1") == 1, listed.stdout

    # Lifted by an operator: every process lets the partner in again.
    assert daemon.cli("bans", "lift", "127.0.0.1").returncode == 0
    start = len(daemon.log())
    attempts = 0
    while len(processes_in(daemon.log()[start:], "login.succeeded", "acme")) < PROCESSES:
        assert attempts < MAX_CONNECTIONS
        assert refused(daemon, "acme", private) is None
        attempts += 1


def test_a_killed_sftp_process_is_replaced_and_the_port_keeps_serving(
    make_daemon: MakeDaemon, keys: dict[str, tuple[Path, Path]]
) -> None:
    daemon = make_daemon(INGESTD_SFTP__PROCESSES="2", INGESTD_SFTP__MAX_AUTH_FAILURES="1000")
    private, public = keys["acme"]
    daemon.add_key("acme", public)
    before = child_pids(daemon)
    assert len(before) == 2
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: gone(victim), "the killed process to end")
    line = r"sftp\.process_restarted process=(\d) pid=(\d+) port=(\d+)"
    restarted = wait_for(lambda: re.search(line, daemon.log()), "the new process")
    assert isinstance(restarted, re.Match)
    # Every new connection is served again, by the survivor or the replacement. (Connections made while the
    # replacement was starting were once seen reset in a loaded full-suite run; see the session note.)
    for number in range(5):
        transport = log_in(daemon, "acme", private)
        upload(transport, f"after-{number}.csv", b"identity\n1\n")
        transport.close()
    assert len(list(daemon.drop("acme").glob("after-*.csv"))) == 5
    replaced = child_pids(daemon)
    assert len(replaced) == 2 and victim not in replaced and int(restarted.group(2)) in replaced
    assert re.search(r"sftp\.process_exited .*status=-9", daemon.log())
    assert int(restarted.group(3)) == daemon.sftp_port
    # The new process takes its share of logins on the same port.
    start = daemon.log().index(f"pid={restarted.group(2)}")
    number = restarted.group(1)
    attempts = 0
    while number not in processes_in(daemon.log()[start:], "login.succeeded", "acme"):
        assert attempts < MAX_CONNECTIONS
        log_in(daemon, "acme", private).close()
        attempts += 1
    assert daemon.stop() == 0
    assert all(gone(pid) for pid in replaced)

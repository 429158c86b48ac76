"""Uploads that go wrong leave nothing visible: killed clients, dropped connections, size limit, daemon stop/crash."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest

from tests.fixtures.daemon import Daemon
from tests.fixtures.sshkeys import make_keypair, paramiko_sftp, sftp_batch, sftp_command

TEMP_PREFIX = ".ingestd-upload-"


def temp_files(drop: Path) -> list[Path]:
    return [path for path in drop.iterdir() if path.name.startswith(TEMP_PREFIX)] if drop.exists() else []


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def partner(daemon: Daemon, tmp_path: Path) -> Iterator[Path]:
    private, public = make_keypair(tmp_path / "keys")
    daemon.add_key("acme", public)
    yield private
    # Every way an upload can fail is handled: nothing reaches the log as an unexpected exception.
    assert "Traceback" not in daemon.log()


def test_killed_openssh_upload_leaves_nothing_visible(daemon: Daemon, partner: Path, tmp_path: Path) -> None:
    source = tmp_path / "big.csv"
    with open(source, "wb") as handle:
        handle.truncate(4 * 1024**3)  # sparse: reading it costs nothing, the upload takes seconds
    drop = daemon.drop("acme")
    client = subprocess.Popen(
        sftp_command(daemon.sftp_port, "acme", partner),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: sftp and the ssh it runs die together
    )
    try:
        assert client.stdin is not None
        client.stdin.write(f"put {source}\n".encode())
        client.stdin.flush()
        wait_for(lambda: any(p.stat().st_size > 1024**2 for p in temp_files(drop)), "the upload to be under way")
        assert "big.csv" not in os.listdir(drop)
    finally:
        os.killpg(client.pid, signal.SIGKILL)
        client.wait(30)
    wait_for(lambda: not temp_files(drop), "the temp file to be gone")
    assert "big.csv" not in os.listdir(drop)
    # What arrived is kept hidden for `reput` (test_sftp_resume.py), never under its name.
    wait_for(lambda: "upload.interrupted account=acme file=big.csv" in daemon.log(), "the log line")
    assert (drop / ".ingestd-partial" / "big.csv").stat().st_size > 1024**2
    listing = sftp_batch(daemon.sftp_port, "acme", partner, ["ls -la"])
    assert listing.returncode == 0 and "big.csv" not in listing.stdout


def test_dropped_connection_mid_upload_leaves_nothing(daemon: Daemon, partner: Path) -> None:
    drop = daemon.drop("acme")
    sock = socket.create_connection(("127.0.0.1", daemon.sftp_port), timeout=30)
    transport = paramiko.Transport(sock)
    transport.connect(username="acme", pkey=paramiko.PKey.from_path(partner))
    sftp = paramiko.SFTPClient.from_transport(transport)
    assert sftp is not None
    remote = sftp.open("half.manifest", "wb")
    remote.write(b'{"fileName": "half.csv", "type": "event", ')
    remote.flush()
    wait_for(lambda: len(temp_files(drop)) == 1, "the temp file")
    sock.shutdown(socket.SHUT_RDWR)  # the network goes away; the file is never closed
    transport.close()
    wait_for(lambda: not temp_files(drop), "the temp file to be gone")
    assert "half.manifest" not in os.listdir(drop)
    # Kept hidden for `reput`: a manifest there is not an arrival, so no job starts from half a manifest.
    wait_for(lambda: (drop / ".ingestd-partial" / "half.manifest").exists(), "the kept part")
    assert "job.queued" not in daemon.log()


def test_session_closed_with_a_file_still_open_leaves_nothing(daemon: Daemon, partner: Path) -> None:
    # The SSH connection stays up, but the SFTP session ends without closing the file: not a finished upload.
    drop = daemon.drop("acme")
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", port=daemon.sftp_port, username="acme", key_filename=str(partner), timeout=30)
    try:
        sftp = client.open_sftp()
        remote = sftp.open("unclosed.csv", "wb")
        remote.write(b"identity\n1\n")
        remote.flush()
        wait_for(lambda: len(temp_files(drop)) == 1, "the temp file")
        sftp.close()
        wait_for(lambda: not temp_files(drop), "the temp file to be deleted")
        assert "unclosed.csv" not in os.listdir(drop)
        again = client.open_sftp()  # the same connection still works
        assert "unclosed.csv" not in again.listdir(".")
        again.close()
    finally:
        client.close()


def test_sigterm_lets_uploads_in_flight_finish_and_exits_0(daemon: Daemon, partner: Path) -> None:
    drop = daemon.drop("acme")
    with paramiko_sftp(daemon.sftp_port, "acme", partner) as sftp:
        first, second = sftp.open("first.csv", "wb"), sftp.open("second.csv", "wb")
        for remote in (first, second):
            remote.write(b"identity\n" + b"1\n" * 10_000)
            remote.flush()
        wait_for(lambda: len(temp_files(drop)) == 2, "two temp files")
        os.kill(daemon.process.pid, signal.SIGTERM)  # type: ignore[union-attr]
        wait_for(lambda: "sftp.draining" in daemon.log(), "the daemon to start draining")
        first.write(b"2\n")
        first.close()
        # While the second upload still runs, nothing new may start.
        with pytest.raises(OSError, match="shutting down"):
            sftp.open("late.csv", "wb")
        second.close()
    assert daemon.stop() == 0
    # The SFTP process ends cleanly too: no interpreter abort at its shutdown.
    assert "Fatal Python error" not in daemon.log()
    for name in ("first.csv", "second.csv"):
        assert (drop / name).read_bytes().startswith(b"identity\n1\n")
    assert (drop / "first.csv").read_bytes().endswith(b"1\n2\n")
    assert not temp_files(drop) and "late.csv" not in os.listdir(drop)


@pytest.mark.slow
def test_sigterm_ends_an_upload_that_does_not_finish_and_keeps_it_for_reput(daemon: Daemon, partner: Path) -> None:
    daemon.env["INGESTD_JOBS__SHUTDOWN_GRACE"] = "2s"  # what an upload in flight gets to finish
    daemon.restart()
    drop = daemon.drop("acme")
    stop_result: list[int] = []
    with paramiko_sftp(daemon.sftp_port, "acme", partner) as sftp:
        remote = sftp.open("never.csv", "wb")
        remote.write(b"identity\n1\n")
        remote.flush()
        wait_for(lambda: len(temp_files(drop)) == 1, "the temp file")
        stopper = threading.Thread(target=lambda: stop_result.append(daemon.stop(timeout=60)))
        stopper.start()
        stopper.join(90)
    assert stop_result == [0]
    assert not temp_files(drop) and "never.csv" not in os.listdir(drop)
    assert (drop / ".ingestd-partial" / "never.csv").read_bytes() == b"identity\n1\n"


def test_crash_mid_upload_then_restart_cleans_up_and_keeps_the_host_key(daemon: Daemon, partner: Path) -> None:
    drop = daemon.drop("acme")
    fingerprint = re.search(r"host key (SHA256:\S+)", daemon.stdout())
    old_port = daemon.sftp_port
    with paramiko_sftp(daemon.sftp_port, "acme", partner) as sftp:
        remote = sftp.open("crash.csv", "wb")
        remote.write(b"identity\n1\n")
        remote.flush()
        wait_for(lambda: len(temp_files(drop)) == 1, "the temp file")
        daemon.kill()
    # The SFTP process does not outlive the daemon: the port closes.
    wait_for(lambda: not port_open(old_port), "the old SFTP port to close")
    # Whatever a crash leaves behind (here planted by hand) is swept at the next start, still hidden until then.
    (drop / f"{TEMP_PREFIX}dead.crash.csv.part").write_bytes(b"identity\n")
    daemon.start()
    assert not temp_files(drop) and "crash.csv" not in os.listdir(drop)
    assert fingerprint and f"host key {fingerprint.group(1)}" in daemon.stdout()
    assert sftp_batch(daemon.sftp_port, "acme", partner, ["ls"]).returncode == 0


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_a_crashed_sftp_process_is_replaced_on_the_same_port(daemon: Daemon, partner: Path, tmp_path: Path) -> None:
    assert daemon.process is not None
    children = Path(f"/proc/{daemon.process.pid}/task/{daemon.process.pid}/children").read_text().split()
    [sftp_pid, *_] = [int(pid) for pid in children if b"daemon.sftp.child" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    os.kill(sftp_pid, signal.SIGKILL)
    wait_for(lambda: "sftp.process_restarted" in daemon.log(), "a new SFTP process")
    source = tmp_path / "after.csv"
    source.write_text("identity\n1\n")
    result = sftp_batch(daemon.sftp_port, "acme", partner, [f"put {source}"])
    assert result.returncode == 0, result.stderr
    assert (daemon.drop("acme") / "after.csv").exists()
    assert daemon.stop() == 0

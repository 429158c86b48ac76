"""Resumable uploads through `ingestd serve` with OpenSSH's sftp: a broken upload continued with `reput` is
byte-identical and imported once, a waiting manifest waits for it, and an expired one is removed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from daemon.sftp.partials import PARTIAL_DIR
from tests.fixtures.daemon import Daemon
from tests.fixtures.samples import EVENTS_MANIFEST
from tests.fixtures.sshkeys import make_keypair, sftp_batch, sftp_command
from tests.integration.test_e2e import finished, imports, wait_for

HEADER = "event_name,time_stamp,identity,cookie_id,item_name,item_price,item_delivery_date,status_delivered\n"


def events_csv(path: Path, size: int) -> int:
    """An event CSV of about `size` bytes with distinct rows; returns its row count."""
    row = "Purchased,1578503667,user-{0}@example.com,cookie_{0},Awesome Ring - {0},123,$D_1589274432,true\n"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(HEADER)
        rows, written = 0, len(HEADER)
        while written < size:
            line = row.format(rows)
            handle.write(line)
            written += len(line)
            rows += 1
    return rows


def manifest(folder: Path, name: str, file_name: str) -> Path:
    path = folder / name
    path.write_text(json.dumps({**EVENTS_MANIFEST, "fileName": file_name}), encoding="utf-8")
    return path


def kill_mid_upload(daemon: Daemon, key: Path, source: Path, remote: str) -> None:
    """`put` at a limited rate, SIGKILL the client (and its ssh) once a few MB arrived: the line drops."""
    temps = daemon.drop("acme")
    command = sftp_command(daemon.sftp_port, "acme", key)
    command[1:1] = ["-l", "20000"]  # Kbit/s: ~2.5 MB/s, so the upload is under way for seconds
    client = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        assert client.stdin is not None
        client.stdin.write(f'put "{source}" "{remote}"\n'.encode())
        client.stdin.flush()

        def under_way() -> bool:
            sizes = [p.stat().st_size for p in temps.iterdir() if p.name.startswith(".ingestd-upload-")]
            return any(size > 3 * 1024**2 for size in sizes)

        wait_for("the upload to be under way", under_way, daemon, timeout=60)
    finally:
        os.killpg(client.pid, signal.SIGKILL)
        client.wait(30)
    partial = temps / PARTIAL_DIR / remote
    wait_for("the broken upload to be kept", partial.exists, daemon, timeout=30)


@pytest.fixture
def key(daemon: Daemon, tmp_path: Path) -> Path:
    private, public = make_keypair(tmp_path / "keys")
    daemon.add_key("acme", public)
    return private


def test_a_killed_20mb_upload_resumed_with_reput_is_identical_and_imported_once(
    daemon: Daemon, key: Path, tmp_path: Path
) -> None:
    source = tmp_path / "big.csv"
    rows = events_csv(source, 20 * 1024**2)
    drop = daemon.drop("acme")
    kill_mid_upload(daemon, key, source, "big.csv")
    kept = (drop / PARTIAL_DIR / "big.csv").stat().st_size
    assert 0 < kept < source.stat().st_size
    assert source.read_bytes().startswith((drop / PARTIAL_DIR / "big.csv").read_bytes())
    # Not there for the partner, and nothing imported or counted.
    listing = sftp_batch(daemon.sftp_port, "acme", key, ["ls -la"])
    assert listing.returncode == 0 and "big.csv" not in listing.stdout and PARTIAL_DIR not in listing.stdout
    assert "upload.completed" not in daemon.log() and imports(daemon) == []
    result = sftp_batch(daemon.sftp_port, "acme", key, [f'reput "{source}" big.csv'])
    assert result.returncode == 0, result.stderr
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert hashlib.sha256((drop / "big.csv").read_bytes()).hexdigest() == digest
    assert not (drop / PARTIAL_DIR / "big.csv").exists()
    put = sftp_batch(daemon.sftp_port, "acme", key, [f'put "{manifest(tmp_path, "big.manifest", "big.csv")}"'])
    assert put.returncode == 0, put.stderr
    [job] = finished(daemon, 1)
    assert (job["status"], job["rows_ingested"]) == ("succeeded", rows)
    log = daemon.log()
    assert log.count("upload.completed account=acme file=big.csv ") == 1
    assert f"resumed_from={kept}" in log and "upload.interrupted account=acme file=big.csv" in log


def test_a_manifest_waiting_for_a_broken_upload_waits_until_it_is_resumed(make_daemon, tmp_path: Path) -> None:
    daemon = make_daemon(INGESTD_JOBS__DATA_FILE_GRACE="1s")
    private, public = make_keypair(tmp_path / "keys")
    daemon.add_key("acme", public)
    source = tmp_path / "late.csv"
    rows = events_csv(source, 300_000)
    content = source.read_bytes()
    # The connection drops in the middle of the data file (paramiko, so the cut is exactly where we say).
    sock = socket.create_connection(("127.0.0.1", daemon.sftp_port), timeout=30)
    transport = paramiko.Transport(sock)
    transport.connect(username="acme", pkey=paramiko.PKey.from_path(private))
    sftp = paramiko.SFTPClient.from_transport(transport)
    assert sftp is not None
    remote = sftp.open("late.csv", "wb")
    remote.write(content[:100_000])
    remote.flush()
    sock.shutdown(socket.SHUT_RDWR)
    transport.close()
    partial = daemon.drop("acme") / PARTIAL_DIR / "late.csv"
    wait_for("the broken upload to be kept", partial.exists, daemon)
    put = sftp_batch(daemon.sftp_port, "acme", private, [f'put "{manifest(tmp_path, "late.manifest", "late.csv")}"'])
    assert put.returncode == 0, put.stderr
    wait_for("the job to wait for its data", lambda: "job.waiting_for_data" in daemon.log(), daemon)
    time.sleep(3)  # well past jobs.data_file_grace: without the kept part the job would have failed by now
    [job] = imports(daemon)
    assert job["status"] == "waiting_for_data" and not job["finished_at"]
    result = sftp_batch(daemon.sftp_port, "acme", private, [f'reput "{source}" late.csv'])
    assert result.returncode == 0, result.stderr
    [job] = finished(daemon, 1)
    assert (job["status"], job["rows_ingested"]) == ("succeeded", rows)


def test_a_partial_older_than_the_window_is_removed_and_a_younger_one_outlives_a_restart(
    make_daemon, tmp_path: Path
) -> None:
    daemon = make_daemon(INGESTD_SFTP__RESUME_WINDOW="1h")
    private, public = make_keypair(tmp_path / "keys")
    daemon.add_key("acme", public)
    sources = {}
    for name in ("old.csv", "young.csv"):
        sources[name] = tmp_path / name
        events_csv(sources[name], 200_000)
        with paramiko.SSHClient() as client:
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            client.connect("127.0.0.1", port=daemon.sftp_port, username="acme", key_filename=str(private))
            remote = client.open_sftp().open(name, "wb")
            remote.write(sources[name].read_bytes()[:50_000])
            remote.flush()
        wait_for(f"{name} to be kept", (daemon.drop("acme") / PARTIAL_DIR / name).exists, daemon)
    folder = daemon.drop("acme") / PARTIAL_DIR
    two_hours_ago = time.time() - 7200
    os.utime(folder / "old.csv", (two_hours_ago, two_hours_ago))
    daemon.restart()  # the start's rescan removes what is past the window
    assert sorted(os.listdir(folder)) == ["young.csv"]
    assert "upload.partial_removed account=acme file=old.csv" in daemon.log()
    refused = sftp_batch(daemon.sftp_port, "acme", private, [f'reput "{sources["old.csv"]}" old.csv'])
    assert refused.returncode != 0 and "old.csv" not in os.listdir(daemon.drop("acme"))
    resumed = sftp_batch(daemon.sftp_port, "acme", private, [f'reput "{sources["young.csv"]}" young.csv'])
    assert resumed.returncode == 0, resumed.stderr
    assert (daemon.drop("acme") / "young.csv").read_bytes() == sources["young.csv"].read_bytes()

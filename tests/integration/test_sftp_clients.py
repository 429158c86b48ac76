"""Clients other than today's OpenSSH: CTR ciphers with plain MACs, each host key type, paramiko's defaults,
RFC 4716 (PuTTYgen) keys, and the `sftp.*` algorithm settings."""

from __future__ import annotations

import re
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from asyncssh.constants import MSG_KEXINIT
from asyncssh.packet import Boolean, Byte, NameList, UInt32

from tests.fixtures.daemon import Daemon, MakeDaemon, daemon_env
from tests.fixtures.sshkeys import make_keypair, paramiko_sftp, sftp_command

HOST_KEY_FILES = ("ssh_host_ed25519_key", "ssh_host_ecdsa_key", "ssh_host_rsa_key")


# The module shares one daemon (the fixture below): its tests run on one xdist worker (scripts/test.sh -n).
pytestmark = pytest.mark.xdist_group("test_sftp_clients")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Path]]:
    """One daemon with the built-in algorithm lists and one partner, acme."""
    base = tmp_path_factory.mktemp("clients")
    data = base / "data"
    daemon = Daemon(data, daemon_env(data, INGESTD_SFTP__MAX_AUTH_FAILURES="1000"))
    daemon.start()
    private, public = make_keypair(base / "keys")
    daemon.add_key("acme", public, name="laptop")
    yield daemon, private
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()


def openssh(port: int, private: Path, *options: str, commands: str = "ls\n") -> subprocess.CompletedProcess:
    """OpenSSH sftp, verbose (it prints what each key exchange chose), with extra -o options."""
    base = sftp_command(port, "acme", private)
    extra = [part for option in options for part in ("-o", option)]
    command = [base[0], "-v", *base[1:-1], *extra, "-o", "LogLevel=DEBUG1", base[-1]]
    return subprocess.run(command, input=commands, capture_output=True, text=True, timeout=60)


def ciphers(stderr: str) -> list[tuple[str, str]]:
    """(cipher, MAC) client to server, for each key exchange of the connection."""
    return re.findall(r"kex: client->server cipher: (\S+) MAC: (\S+)", stderr)


def fingerprint(public: Path) -> str:
    result = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(public)], capture_output=True, text=True)
    return result.stdout.split()[1]


def test_openssh_forced_to_aes128_ctr_and_hmac_sha2_256_uploads(served: tuple[Daemon, Path], tmp_path: Path) -> None:
    daemon, private = served
    source = tmp_path / "ctr.csv"
    source.write_bytes(b"identity,evtName\n1,Charged\n" * 5000)
    result = openssh(daemon.sftp_port, private, "Ciphers=aes128-ctr", "MACs=hmac-sha2-256", commands=f"put {source}\n")
    assert result.returncode == 0, result.stderr
    # The client allows nothing else, so it stays on what it chose: no re-key to AES-GCM.
    assert ciphers(result.stderr) == [("aes128-ctr", "hmac-sha2-256")]
    assert (daemon.drop("acme") / "ctr.csv").read_bytes() == source.read_bytes()


def test_openssh_defaults_end_on_aes_gcm_and_etm_macs_are_offered(served: tuple[Daemon, Path]) -> None:
    daemon, private = served
    result = openssh(daemon.sftp_port, private)
    assert result.returncode == 0, result.stderr
    # OpenSSH prefers chacha20-poly1305; after login the server re-keys offering only AES-GCM.
    assert ciphers(result.stderr) == [
        ("chacha20-poly1305@openssh.com", "<implicit>"),
        ("aes128-gcm@openssh.com", "<implicit>"),
    ]
    etm = openssh(daemon.sftp_port, private, "Ciphers=aes256-ctr", "MACs=hmac-sha2-512-etm@openssh.com")
    assert etm.returncode == 0, etm.stderr
    assert ciphers(etm.stderr) == [("aes256-ctr", "hmac-sha2-512-etm@openssh.com")]


@pytest.mark.parametrize(
    ("algorithm", "key_file"),
    [
        ("ssh-ed25519", "ssh_host_ed25519_key"),
        ("ecdsa-sha2-nistp256", "ssh_host_ecdsa_key"),
        ("rsa-sha2-512", "ssh_host_rsa_key"),
        ("rsa-sha2-256", "ssh_host_rsa_key"),
    ],
)
def test_each_host_key_type_is_offered(served: tuple[Daemon, Path], algorithm: str, key_file: str) -> None:
    daemon, private = served
    result = openssh(daemon.sftp_port, private, f"HostKeyAlgorithms={algorithm}")
    assert result.returncode == 0, result.stderr
    assert f"kex: host key algorithm: {algorithm}" in result.stderr
    seen = re.search(r"Server host key: \S+ (SHA256:\S+)", result.stderr)
    assert seen and seen.group(1) == fingerprint(daemon.data_dir / "host_keys" / f"{key_file}.pub")


def test_sha1_host_key_signatures_are_not_offered(served: tuple[Daemon, Path]) -> None:
    daemon, private = served
    result = openssh(daemon.sftp_port, private, "HostKeyAlgorithms=ssh-rsa")
    assert result.returncode != 0
    assert re.search("no matching host key type found", result.stderr, re.I), result.stderr
    mac = openssh(daemon.sftp_port, private, "Ciphers=aes128-ctr", "MACs=hmac-sha1")
    assert mac.returncode != 0
    assert re.search("no matching MAC found", mac.stderr, re.I), mac.stderr


def test_a_client_with_no_common_algorithm_is_logged_with_what_it_offered(served: tuple[Daemon, Path]) -> None:
    # OpenSSH notices the mismatch itself and may hang up before the server does: a client that only offers
    # hmac-sha1 and waits is what the server always gets to log. From 127.0.0.2: one line per address a minute.
    daemon, _ = served
    kexinit = b"".join(
        [
            Byte(MSG_KEXINIT),
            b"\0" * 16,
            NameList([b"curve25519-sha256"]),
            NameList([b"ssh-ed25519"]),
            *[NameList([b"aes128-ctr"])] * 2,
            *[NameList([b"hmac-sha1"])] * 2,
            *[NameList([b"none"])] * 2,
            NameList([]),
            NameList([]),
            Boolean(False),
            UInt32(0),
        ]
    )
    padding = 8 - (len(kexinit) + 5) % 8 + 8
    with socket.socket() as sock:
        sock.bind(("127.0.0.2", 0))
        sock.settimeout(30)
        sock.connect(("127.0.0.1", daemon.sftp_port))
        sock.sendall(b"SSH-2.0-OldAppliance_1.0\r\n")
        sock.sendall(UInt32(len(kexinit) + padding + 1) + Byte(padding) + kexinit + b"\0" * padding)
        while sock.recv(4096):  # the server's version, its KEXINIT, its disconnect; then the end
            pass
    deadline = time.monotonic() + 30
    while "sftp.handshake_failed address=127.0.0.2" not in daemon.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    [line] = [line for line in daemon.log().splitlines() if "sftp.handshake_failed address=127.0.0.2" in line]
    assert "No matching MAC algorithm found" in line and "hmac-sha2-256" in line and "hmac-sha1" in line, line


def test_host_keys_are_generated_private_and_the_banner_shows_ed25519(served: tuple[Daemon, Path]) -> None:
    daemon, _ = served
    folder = daemon.data_dir / "host_keys"
    for name in HOST_KEY_FILES:
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
        assert (folder / f"{name}.pub").is_file()
    assert "bits" not in fingerprint(folder / "ssh_host_rsa_key.pub")
    rsa = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(folder / "ssh_host_rsa_key.pub")], capture_output=True, text=True
    )
    assert rsa.stdout.startswith("3072 ")
    ed25519 = fingerprint(folder / "ssh_host_ed25519_key.pub")
    banner = rf"^  sftp   127\.0\.0\.1:\d+  host key {re.escape(ed25519)}(  \(\d+ processes\))?$"
    assert re.search(banner, daemon.stdout(), re.MULTILINE)
    listening = re.search(r"sftp\.listening .*", daemon.log())
    assert listening
    assert f"ecdsa_fingerprint={fingerprint(folder / 'ssh_host_ecdsa_key.pub')}" in listening.group(0)
    assert f"rsa_fingerprint={fingerprint(folder / 'ssh_host_rsa_key.pub')}" in listening.group(0)


def test_paramiko_defaults_upload_and_end_on_aes_gcm(served: tuple[Daemon, Path]) -> None:
    daemon, private = served
    with paramiko_sftp(daemon.sftp_port, "acme", private) as sftp:
        with sftp.open("paramiko.csv", "wb") as remote:
            remote.write(b"identity\n1\n" * 1000)
        transport = sftp.get_channel().get_transport()
        # paramiko lists aes128-ctr first and AES-GCM last: it logs in on CTR, then is re-keyed.
        assert (transport.local_cipher, transport.remote_cipher) == ("aes128-gcm@openssh.com",) * 2
    assert (daemon.drop("acme") / "paramiko.csv").stat().st_size == 11000


def test_winscp_style_filepart_upload_then_rename(served: tuple[Daemon, Path], tmp_path: Path) -> None:
    # WinSCP uploads big files to "name.filepart" and renames it at the end (its "transfer resume" default).
    daemon, private = served
    with paramiko_sftp(daemon.sftp_port, "acme", private) as sftp:
        with sftp.open("winscp.csv.filepart", "wb") as remote:
            remote.write(b"identity\n1\n")
        sftp.rename("winscp.csv.filepart", "winscp.csv")
        names = sftp.listdir(".")
    assert "winscp.csv" in names and "winscp.csv.filepart" not in names
    assert (daemon.drop("acme") / "winscp.csv").read_bytes() == b"identity\n1\n"


def test_an_rfc4716_key_logs_in(served: tuple[Daemon, Path], tmp_path: Path) -> None:
    daemon, _ = served
    private, public = make_keypair(tmp_path / "putty", name="id_rsa", key_type="rsa", bits=3072)
    exported = subprocess.run(["ssh-keygen", "-e", "-f", str(public)], capture_output=True, text=True, check=True)
    added = daemon.cli("keys", "add", "initech", "-", "--name", "putty", input=exported.stdout)
    assert added.returncode == 0, added.stderr
    assert fingerprint(public) in added.stdout
    result = subprocess.run(
        sftp_command(daemon.sftp_port, "initech", private), input="ls\n", capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_configured_lists_are_offered_as_they_are(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    daemon = make_daemon(
        INGESTD_SFTP__CIPHERS="aes256-ctr,aes128-gcm@openssh.com",
        INGESTD_SFTP__MACS="hmac-sha2-256",
        INGESTD_SFTP__KEX_ALGORITHMS="curve25519-sha256",
        INGESTD_SFTP__HOST_KEY_ALGORITHMS='["rsa-sha2-256"]',
    )
    private, public = make_keypair(tmp_path / "keys")
    daemon.add_key("acme", public)
    result = openssh(daemon.sftp_port, private)
    assert result.returncode == 0, result.stderr
    # A configured list is what the admin wants: no re-key onto AES-GCM.
    assert ciphers(result.stderr) == [("aes256-ctr", "hmac-sha2-256")]
    assert "kex: algorithm: curve25519-sha256" in result.stderr
    assert "kex: host key algorithm: rsa-sha2-256" in result.stderr
    # The banner shows the one host key offered.
    rsa = fingerprint(daemon.data_dir / "host_keys" / "ssh_host_rsa_key.pub")
    assert f"host key {rsa}" in daemon.stdout()
    for refused in ("HostKeyAlgorithms=ssh-ed25519", "Ciphers=chacha20-poly1305@openssh.com"):
        assert openssh(daemon.sftp_port, private, refused).returncode != 0, refused


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("INGESTD_SFTP__CIPHERS", "aes128-ctr,aes999-gcm", "sftp.ciphers: 'aes999-gcm' is not a known algorithm"),
        ("INGESTD_SFTP__MACS", "hmac-sha1", "sftp.macs: 'hmac-sha1' is SHA-1 or MD5 based and not offered"),
        (
            "INGESTD_SFTP__KEX_ALGORITHMS",
            "diffie-hellman-group14-sha1",
            "sftp.kex_algorithms: 'diffie-hellman-group14-sha1' is SHA-1 or MD5 based and not offered",
        ),
        ("INGESTD_SFTP__HOST_KEY_ALGORITHMS", "ssh-rsa", "sftp.host_key_algorithms: 'ssh-rsa' is SHA-1"),
    ],
)
def test_an_unknown_algorithm_stops_serve_with_one_line(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    env = daemon_env(tmp_path / "data", **{variable: value})
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "serve"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("ingestd: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"ingestd: error: {message}"), result.stderr
    assert "; choose from " in errors[0]
    assert "Traceback" not in result.stderr
    # Checked before the host keys are written.
    assert not (tmp_path / "data" / "host_keys").exists()


def test_concurrent_logins_with_both_rsa_signatures_each_get_their_own(served: tuple[Daemon, Path]) -> None:
    # asyncssh sets the chosen signature on the host key pair and signs with it a packet later: one pair shared
    # by both RSA algorithms let concurrent connections sign with each other's, which OpenSSH refuses (5 of 8
    # failed in a run before the fix). One pair per algorithm. 8 at once: below sftp.per_source_max_startups.
    daemon, private = served
    base = sftp_command(daemon.sftp_port, "acme", private)
    runs = [
        subprocess.Popen(
            [*base[:-1], "-o", f"HostKeyAlgorithms={algorithm}", base[-1]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for algorithm in ["rsa-sha2-256", "rsa-sha2-512"] * 4
    ]
    results = [run.communicate("ls\n", timeout=60) for run in runs]
    failed = [err for run, (_, err) in zip(runs, results, strict=True) if run.returncode != 0]
    assert failed == []


def test_paramiko_offering_a_wrong_key_first_logs_in_with_the_next(served: tuple[Daemon, Path], tmp_path: Path) -> None:
    # An agent or key_filename list with several keys: paramiko asks for the ssh-userauth service again before
    # each key, which plain asyncssh answers with a disconnect. sshd lets such a partner in; so must ingestd.
    daemon, private = served
    stranger, _ = make_keypair(tmp_path / "other", name="id_other")
    with paramiko_sftp(daemon.sftp_port, "acme", [stranger, private]) as sftp, sftp.open("second-key.csv", "wb") as f:
        f.write(b"identity,evtName\n1,Charged\n")
    assert (daemon.drop("acme") / "second-key.csv").read_bytes() == b"identity,evtName\n1,Charged\n"

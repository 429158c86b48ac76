"""SFTP with real clients: OpenSSH `sftp` in batch mode and paramiko against `ingestd serve`."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tests.fixtures.daemon import Daemon, MakeDaemon, daemon_env
from tests.fixtures.sshkeys import make_keypair, paramiko_sftp, sftp_batch


class Partner:
    def __init__(self, account: str, private: Path, public: Path) -> None:
        self.account, self.private, self.public = account, private, public


# The module shares one daemon (the fixture below): its tests run on one xdist worker (scripts/test.sh -n).
pytestmark = pytest.mark.xdist_group("test_sftp")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Partner, Partner]]:
    """One daemon for the module's read-mostly tests, with two partners (each test uses its own file names)."""
    base = tmp_path_factory.mktemp("sftp")
    data = base / "data"
    daemon = Daemon(data, daemon_env(data, INGESTD_SFTP__MAX_AUTH_FAILURES="1000"))
    daemon.start()
    partners = []
    for account in ("acme", "globex"):
        private, public = make_keypair(base / "keys" / account)
        daemon.add_key(account, public, name="laptop")
        partners.append(Partner(account, private, public))
    yield daemon, partners[0], partners[1]
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()


def visible(drop: Path) -> set[str]:
    return {path.name for path in drop.iterdir()}


def temp_files(drop: Path) -> list[str]:
    return [path.name for path in drop.iterdir() if path.name.startswith(".ingestd-upload-")]


def test_upload_with_openssh_then_list_and_get(served: tuple[Daemon, Partner, Partner], tmp_path: Path) -> None:
    daemon, acme, _ = served
    source = tmp_path / "events-1.csv"
    source.write_bytes(b"identity,evtName\n1,Charged\n" * 1000)
    back = tmp_path / "back.csv"
    result = sftp_batch(daemon.sftp_port, "acme", acme.private, [f"put {source}", "ls -l", f"get events-1.csv {back}"])
    assert result.returncode == 0, result.stderr
    assert "events-1.csv" in result.stdout
    assert back.read_bytes() == source.read_bytes()
    drop = daemon.drop("acme")
    assert (drop / "events-1.csv").read_bytes() == source.read_bytes()
    assert temp_files(drop) == []
    assert re.search(r"upload.completed account=acme file=events-1.csv size_bytes=27000 ", daemon.log())


def test_paramiko_put_list_get_rm(served: tuple[Daemon, Partner, Partner], tmp_path: Path) -> None:
    daemon, acme, _ = served
    with paramiko_sftp(daemon.sftp_port, "acme", acme.private) as sftp:
        with sftp.open("profiles-2.csv", "wb") as remote:
            remote.write(b"identity,Name\n1,Ann\n")
        assert "profiles-2.csv" in sftp.listdir(".")
        assert sftp.stat("profiles-2.csv").st_size == 20
        with sftp.open("profiles-2.csv", "rb") as remote:
            assert remote.read() == b"identity,Name\n1,Ann\n"
        sftp.remove("profiles-2.csv")
        assert "profiles-2.csv" not in sftp.listdir(".")
    assert not (daemon.drop("acme") / "profiles-2.csv").exists()


def test_rename_within_the_drop_folder(served: tuple[Daemon, Partner, Partner], tmp_path: Path) -> None:
    # Clients such as WinSCP upload to "name.filepart" and rename at the end.
    daemon, acme, _ = served
    source = tmp_path / "a.csv"
    source.write_text("identity\n1\n")
    result = sftp_batch(
        daemon.sftp_port, "acme", acme.private, [f"put {source} a.csv.filepart", "rename a.csv.filepart renamed.csv"]
    )
    assert result.returncode == 0, result.stderr
    assert {"renamed.csv"} <= visible(daemon.drop("acme"))
    assert "a.csv.filepart" not in visible(daemon.drop("acme"))


def test_wrong_key_and_unknown_account_are_refused(served: tuple[Daemon, Partner, Partner], tmp_path: Path) -> None:
    daemon, acme, globex = served
    stranger, _ = make_keypair(tmp_path / "stranger")
    for user, key in (("acme", stranger), ("acme", globex.private), ("nobody", acme.private)):
        result = sftp_batch(daemon.sftp_port, user, key, ["ls"])
        assert result.returncode != 0
        assert "Permission denied (publickey)" in result.stderr
    with pytest.raises(paramiko.AuthenticationException), paramiko_sftp(daemon.sftp_port, "acme", stranger):
        pass


def test_password_login_is_not_offered(served: tuple[Daemon, Partner, Partner]) -> None:
    daemon, _, _ = served
    transport = paramiko.Transport(("127.0.0.1", daemon.sftp_port))
    try:
        transport.start_client(timeout=30)
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_password("acme", "secret")
        assert refused.value.allowed_types == ["publickey"]
    finally:
        transport.close()


def test_two_accounts_see_only_their_own_files(served: tuple[Daemon, Partner, Partner], tmp_path: Path) -> None:
    daemon, acme, globex = served
    source = tmp_path / "secret-acme.csv"
    source.write_text("identity\n1\n")
    assert sftp_batch(daemon.sftp_port, "acme", acme.private, [f"put {source}"]).returncode == 0
    listing = sftp_batch(daemon.sftp_port, "globex", globex.private, ["ls -la", "ls -la /", "ls -la .."])
    assert listing.returncode == 0, listing.stderr
    assert "secret-acme.csv" not in listing.stdout
    assert "acme" not in listing.stdout.replace("globex", "")
    for path in ("../acme/secret-acme.csv", "/acme/secret-acme.csv", "../../drop/acme/secret-acme.csv"):
        result = sftp_batch(daemon.sftp_port, "globex", globex.private, [f"get {path} {tmp_path / 'stolen'}"])
        assert result.returncode != 0, path
    assert not (tmp_path / "stolen").exists()


def test_shell_exec_and_forwarding_are_refused(served: tuple[Daemon, Partner, Partner]) -> None:
    daemon, acme, _ = served
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        "127.0.0.1",
        port=daemon.sftp_port,
        username="acme",
        key_filename=str(acme.private),
        look_for_keys=False,
        allow_agent=False,
        timeout=30,
    )
    try:
        transport = client.get_transport()
        assert transport is not None
        for request in ("exec", "shell"):
            channel = transport.open_session(timeout=30)
            with pytest.raises(paramiko.SSHException):
                if request == "exec":
                    channel.exec_command("cat /etc/passwd")
                else:
                    channel.invoke_shell()
            channel.close()
        with pytest.raises(paramiko.ChannelException):
            transport.open_channel("direct-tcpip", ("127.0.0.1", daemon.sftp_port), ("127.0.0.1", 0), timeout=30)
        with pytest.raises(paramiko.SSHException):
            transport.request_port_forward("127.0.0.1", 0)
        # The connection is still good for what it is for.
        sftp = client.open_sftp()
        assert isinstance(sftp.listdir("."), list)
        sftp.close()
    finally:
        client.close()


def test_openssh_exec_is_refused(served: tuple[Daemon, Partner, Partner]) -> None:
    import subprocess

    daemon, acme, _ = served
    base = ["ssh", "-p", str(daemon.sftp_port), "-i", str(acme.private), "-o", "BatchMode=yes"]
    base += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes"]
    base += ["-o", "LogLevel=ERROR", "acme@127.0.0.1"]
    result = subprocess.run([*base, "echo", "pwned"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "pwned" not in result.stdout


def test_revoked_key_is_refused_and_added_key_accepted_without_restart(
    served: tuple[Daemon, Partner, Partner], tmp_path: Path
) -> None:
    daemon, _, _ = served
    private, public = make_keypair(tmp_path / "rotating")
    assert sftp_batch(daemon.sftp_port, "initech", private, ["ls"]).returncode != 0
    daemon.add_key("initech", public, name="rotating")
    assert sftp_batch(daemon.sftp_port, "initech", private, ["ls"]).returncode == 0
    revoked = daemon.cli("keys", "revoke", "initech", "rotating")
    assert revoked.returncode == 0, revoked.stderr
    result = sftp_batch(daemon.sftp_port, "initech", private, ["ls"])
    assert result.returncode != 0
    assert "Permission denied (publickey)" in result.stderr


def test_banner_shows_the_host_key_that_clients_see(served: tuple[Daemon, Partner, Partner]) -> None:
    daemon = served[0]
    match = re.search(
        r"^  sftp   127\.0\.0\.1:(\d+)  host key (SHA256:\S+)(  \(\d+ processes\))?$", daemon.stdout(), re.MULTILINE
    )
    assert match and int(match.group(1)) == daemon.sftp_port
    transport = paramiko.Transport(("127.0.0.1", daemon.sftp_port))
    try:
        transport.start_client(timeout=30)
        key = transport.get_remote_server_key()
    finally:
        transport.close()
    import base64
    import hashlib

    seen = "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    assert seen == match.group(2)
    assert (daemon.data_dir / "host_keys").is_dir()


def test_repeated_failures_from_one_address_are_banned(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    daemon = make_daemon(INGESTD_SFTP__MAX_AUTH_FAILURES="3", INGESTD_SFTP__BAN_TIME="10m")
    private, public = make_keypair(tmp_path / "good")
    stranger, _ = make_keypair(tmp_path / "bad")
    daemon.add_key("acme", public)
    assert sftp_batch(daemon.sftp_port, "acme", private, ["ls"]).returncode == 0
    for _ in range(3):
        assert sftp_batch(daemon.sftp_port, "acme", stranger, ["ls"]).returncode != 0
    # Now even the right key is turned away from this address for a while.
    deadline = time.monotonic() + 30
    result = sftp_batch(daemon.sftp_port, "acme", private, ["ls"])
    while result.returncode == 0 and time.monotonic() < deadline:
        result = sftp_batch(daemon.sftp_port, "acme", private, ["ls"])
    assert result.returncode != 0
    assert "login.failed" in daemon.log() and "banned=True" in daemon.log()


def test_openssh_client_defaults_negotiate_aes_gcm(served: tuple[Daemon, Partner, Partner]) -> None:
    # OpenSSH's default client prefers chacha20-poly1305 and AES-CTR; after login the server re-keys offering
    # only AES-GCM (the fast cipher for asyncssh), which the client then takes.
    import subprocess

    daemon, acme, _ = served
    command = ["sftp", "-v", "-b", "-", "-P", str(daemon.sftp_port), "-i", str(acme.private)]
    command += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"]
    command += ["-o", "IdentitiesOnly=yes", "acme@127.0.0.1"]
    result = subprocess.run(command, input="pwd\n", capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    chosen = re.findall(r"kex: client->server cipher: (\S+)", result.stderr)
    assert chosen[-1] == "aes128-gcm@openssh.com", result.stderr


def test_serve_reports_a_busy_sftp_port_in_one_line(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = daemon_env(tmp_path / "data", INGESTD_SFTP__PORT=str(port))
        result = subprocess.run(
            [sys.executable, "-m", "daemon.cli", "serve"], env=env, capture_output=True, text=True, timeout=120
        )
    assert result.returncode == 2
    assert f"ingestd: error: sftp: cannot listen on 127.0.0.1:{port}:" in result.stderr
    assert "address already in use" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def test_every_refused_operation_is_logged_with_the_account_and_reason(
    served: tuple[Daemon, Partner, Partner], tmp_path: Path
) -> None:
    # OpenSSH's sftp prints only "Permission denied" or "Failure": the log line is where the reason is.
    daemon, _, globex = served
    source = tmp_path / "r.csv"
    source.write_text("identity\n1\n")
    (daemon.drop("globex") / "errors").mkdir(exist_ok=True)
    ok = sftp_batch(daemon.sftp_port, "globex", globex.private, [f"put {source} quiet-upload.csv", "ls"])
    assert ok.returncode == 0, ok.stderr
    commands = ["mkdir refused-dir", f"put {source} errors/refused.csv", "chmod 600 quiet-upload.csv", "rm gone.csv"]
    for command in commands:
        result = sftp_batch(daemon.sftp_port, "globex", globex.private, [command])
        assert result.returncode != 0, command

    def refusals() -> list[str]:
        return [line for line in daemon.log().splitlines() if "sftp.refused" in line and "account=globex" in line]

    deadline = time.monotonic() + 30
    while len(refusals()) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = refusals()
    expected = [
        ("mkdir", "/refused-dir", "Creating or removing folders is not allowed", "Permission denied"),
        ("open", "/errors/refused.csv", "Uploads go to the top folder only", "Permission denied"),
        (
            "setstat",
            "/quiet-upload.csv",
            "Changing permissions, ownership or size is not supported",
            "Permission denied",
        ),
        ("remove", "/gone.csv", "No such file or directory", "No such file or directory"),
    ]
    assert len(lines) == 4, lines
    for line, (op, name, reason, shown) in zip(lines, expected, strict=True):
        assert f" op={op} " in line and f" file={name} " in line, line
        assert f'reason="{reason}"' in line, line
        shown = f'"{shown}"'
        assert f"shown={shown}" in line and "connection_id=" in line, line
    # A plain upload and listing (whose client stats the target first) logs no refusal.
    assert not [line for line in lines if "quiet-upload.csv" in line and "op=setstat" not in line]


def test_login_lines_name_the_key_and_keys_list_shows_its_last_use(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    daemon = make_daemon()
    laptop, laptop_public = make_keypair(tmp_path / "laptop")
    _, spare_public = make_keypair(tmp_path / "spare")
    daemon.add_key("acme", laptop_public, name="laptop")
    daemon.add_key("acme", spare_public, name="spare")
    before = json.loads(daemon.cli("keys", "list", "acme", "--json").stdout)
    assert [(key["name"], key["last_used"]) for key in before] == [("laptop", None), ("spare", None)]
    assert sftp_batch(daemon.sftp_port, "acme", laptop, ["ls"]).returncode == 0
    fingerprint = before[0]["fingerprint"]
    assert re.search(rf"login.succeeded .*account=acme key=laptop fingerprint={re.escape(fingerprint)} ", daemon.log())
    stranger, _ = make_keypair(tmp_path / "stranger")
    assert sftp_batch(daemon.sftp_port, "acme", stranger, ["ls"]).returncode != 0

    def last_used() -> dict[str, str | None]:
        keys = json.loads(daemon.cli("keys", "list", "acme", "--json").stdout)
        return {key["name"]: key["last_used"] for key in keys}

    deadline = time.monotonic() + 30
    while last_used()["laptop"] is None and time.monotonic() < deadline:
        time.sleep(0.2)
    used = last_used()
    assert used["spare"] is None
    assert used["laptop"] is not None and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", used["laptop"])
    table = daemon.cli("keys", "list", "acme").stdout.splitlines()
    assert table[0].split()[-2:] == ["LAST", "USED"]
    assert table[1].split()[-1] == used["laptop"] and table[2].split()[-1] == "never"
    deadline = time.monotonic() + 30
    while "login.failed" not in daemon.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    failed = next(line for line in daemon.log().splitlines() if "login.failed" in line)
    assert "fingerprints=[" in failed and fingerprint not in failed

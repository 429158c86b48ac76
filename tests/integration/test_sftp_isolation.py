"""One partner or stranger cannot starve the others: connection floods, sessions, open files, bans, algorithms,
names; and the details of an upload that others rely on (rename onto a manifest, file modes)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncssh
import paramiko
import pytest

from tests.fixtures.common import wait_for
from tests.fixtures.daemon import Daemon
from tests.fixtures.sshkeys import make_keypair, paramiko_sftp, sftp_batch, sftp_command

MakeDaemon = Callable[..., Daemon]


def with_options(command: list[str], *options: str) -> list[str]:
    """An OpenSSH command line with extra `-o` options before its destination."""
    extra = [part for option in options for part in ("-o", option)]
    return [*command[:-1], *extra, command[-1]]


def run(command: list[str], commands: str = "ls\n") -> subprocess.CompletedProcess:
    return subprocess.run(command, input=commands, capture_output=True, text=True, timeout=60)


@contextlib.contextmanager
def idle_connections(port: int, source: str, count: int) -> Iterator[list[socket.socket]]:
    """`count` TCP connections from `source` (any 127.x address works on Linux loopback) that say nothing."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((source, 0))
            sock.settimeout(10)
            sock.connect(("127.0.0.1", port))
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def greeted(sock: socket.socket) -> bool:
    """True if the server sent its SSH version line; False if it closed the connection without one."""
    try:
        return sock.recv(64).startswith(b"SSH-2.0-")
    except (ConnectionResetError, TimeoutError):
        return False


def closed(sock: socket.socket) -> bool:
    """True once the server has closed the connection (after its version line was read)."""
    sock.settimeout(30)
    try:
        return sock.recv(4096) == b"" or closed(sock)  # a key-exchange packet first, then the end
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def transport(port: int, user: str, key: Path, source: str = "127.0.0.1") -> paramiko.Transport:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    result = paramiko.Transport(sock)
    result.connect(username=user, pkey=paramiko.PKey.from_path(key))
    return result


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    return {name: make_keypair(tmp_path / "keys" / name) for name in ("acme", "globex", "stranger")}


# -- 1. connection floods ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_connection_flood_from_one_address_does_not_lock_out_a_partner(
    make_daemon: MakeDaemon, keys: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    # One SFTP process: the connection caps are per process (see docs/ops-guide.md, Limits).
    daemon = make_daemon(
        INGESTD_SFTP__PER_SOURCE_MAX_STARTUPS="5", INGESTD_SFTP__MAX_STARTUPS="20", INGESTD_SFTP__PROCESSES="1"
    )
    daemon.add_key("acme", keys["acme"][1])
    source = tmp_path / "during-flood.csv"
    source.write_text("identity\n1\n")
    with idle_connections(daemon.sftp_port, "127.0.0.2", 50) as flood:
        answered = [greeted(sock) for sock in flood]
        # Five are let in to log in (and would be closed after login_grace_time); the rest closed at once.
        assert answered.count(True) == 5
        result = sftp_batch(daemon.sftp_port, "acme", keys["acme"][0], [f"put {source}"])
        assert result.returncode == 0, result.stderr
    assert (daemon.drop("acme") / "during-flood.csv").exists()
    line = r"sftp\.connections_refused count=(\d+) reason=per_source_max_startups interval_s=10"
    wait_for(lambda: re.search(line, daemon.log()), "the summary line")
    lines = [entry for entry in daemon.log().splitlines() if "sftp.connections_refused" in entry]
    assert len(lines) <= 2, lines  # one line per interval, not one per connection
    assert sum(int(re.findall(r"count=(\d+)", entry)[0]) for entry in lines) == 45
    assert "Traceback" not in daemon.log()


@pytest.mark.slow
def test_connections_not_logged_in_are_capped_in_all_and_logged_in_ones_do_not_count(
    make_daemon: MakeDaemon, keys: dict[str, tuple[Path, Path]]
) -> None:
    daemon = make_daemon(
        INGESTD_SFTP__PER_SOURCE_MAX_STARTUPS="2", INGESTD_SFTP__MAX_STARTUPS="4", INGESTD_SFTP__PROCESSES="1"
    )
    daemon.add_key("acme", keys["acme"][1])
    # Logged in, they no longer count: more than both caps stay connected from one address.
    logged_in = [transport(daemon.sftp_port, "acme", keys["acme"][0]) for _ in range(5)]
    try:
        assert all(t.is_authenticated() for t in logged_in)
        with (
            idle_connections(daemon.sftp_port, "127.0.0.2", 2) as first,
            idle_connections(daemon.sftp_port, "127.0.0.3", 2) as second,
        ):
            assert all(greeted(sock) for sock in first + second)
            # 4 not logged in already (max_startups): the oldest of them is dropped to let the new one in, so an
            # idle flood from many addresses cannot keep a partner out.
            with idle_connections(daemon.sftp_port, "127.0.0.4", 1) as third:
                assert greeted(third[0])
                assert closed(first[0])
        line = r"sftp\.connections_refused count=1 reason=max_startups interval_s=10"
        wait_for(lambda: re.search(line, daemon.log()), "the summary line")
        # The flood gone, new connections are let in again.
        extra = transport(daemon.sftp_port, "acme", keys["acme"][0])
        assert extra.is_authenticated()
        extra.close()
    finally:
        for t in logged_in:
            t.close()


class _TwoKeys(asyncssh.SSHClient):
    """A client with an agent holding two keys, the wrong one first; `between` runs before the second is tried."""

    def __init__(self, keys: list[asyncssh.SSHKey], between: Callable[[], object]) -> None:
        self._keys = keys
        self._between = between
        self._asked = 0

    async def public_key_auth_requested(self) -> asyncssh.SSHKey | None:
        self._asked += 1
        if self._asked == 2:
            await asyncio.to_thread(self._between)
        return self._keys.pop(0) if self._keys else None


@pytest.mark.slow
def test_a_partner_logging_in_is_never_dropped_for_room_nor_banned_by_a_flood(
    make_daemon: MakeDaemon, keys: dict[str, tuple[Path, Path]]
) -> None:
    # While the partner is logging in (its first key refused), idle connections from other addresses keep the
    # overall cap full. Before, the partner's connection was the oldest not logged in and was dropped for room,
    # and each drop counted as a failed login, until the partner's own address was banned.
    daemon = make_daemon(
        INGESTD_SFTP__MAX_STARTUPS="3",
        INGESTD_SFTP__PER_SOURCE_MAX_STARTUPS="3",
        INGESTD_SFTP__MAX_AUTH_FAILURES="2",
        INGESTD_SFTP__PROCESSES="1",
    )
    daemon.add_key("acme", keys["acme"][1])
    wrong, right = (asyncssh.read_private_key(keys[name][0]) for name in ("stranger", "acme"))

    async def log_in(flood: contextlib.ExitStack, round_: int) -> bool:
        def fill_the_cap() -> None:
            for n in range(1, 5):
                [sock] = flood.enter_context(idle_connections(daemon.sftp_port, f"127.0.{round_ + 1}.{n}", 1))
            assert greeted(sock)  # the newest got in: an older idle connection made room for it

        async with asyncssh.connect(
            "127.0.0.1",
            daemon.sftp_port,
            username="acme",
            client_factory=lambda: _TwoKeys([wrong, right], fill_the_cap),
            client_keys=None,
            known_hosts=None,
            config=None,
        ) as conn:
            return conn.get_extra_info("username") == "acme"

    for round_ in range(3):
        with contextlib.ExitStack() as flood:
            assert asyncio.run(log_in(flood, round_))
    assert json.loads(daemon.cli("bans", "list", "--json").stdout) == []
    assert sftp_batch(daemon.sftp_port, "acme", keys["acme"][0], ["ls"]).returncode == 0
    assert "count=6 reason=max_startups" in wait_for(  # two dropped for room per round
        lambda: "reason=max_startups" in daemon.log() and daemon.log(), "the summary"
    )


def test_running_out_of_descriptors_is_summarised_not_a_traceback_per_accept(
    tmp_path: Path, keys: dict[str, tuple[Path, Path]]
) -> None:
    from tests.fixtures.daemon import daemon_env

    data = tmp_path / "data"
    env = daemon_env(
        data,
        INGESTD_SFTP__MAX_STARTUPS="1000",
        INGESTD_SFTP__PER_SOURCE_MAX_STARTUPS="1000",
        INGESTD_SFTP__PROCESSES="1",
    )
    daemon = Daemon(data, env)
    # A hard limit the SFTP process cannot raise past: accept() fails with EMFILE during the flood.
    daemon.command = ("prlimit", "--nofile=96:96", sys.executable, "-m", "daemon.cli", "serve")
    daemon.start()
    try:
        with idle_connections(daemon.sftp_port, "127.0.0.2", 150) as flood:
            assert greeted(flood[0])
            # The rest wait in the listen backlog while accept() keeps failing.
            line = r"sftp\.connections_refused count=\d+ reason=accept_failed interval_s=10"
            wait_for(lambda: re.search(line, daemon.log()), "the summary line")
        # The flood gone, logins work again.
        daemon.add_key("acme", keys["acme"][1])
        result = sftp_batch(daemon.sftp_port, "acme", keys["acme"][0], ["ls"])
        assert result.returncode == 0, result.stderr
        log = daemon.log()
        assert "Traceback" not in log and "out of system resource" not in log
    finally:
        daemon.stop()


# -- 2. sessions per connection (open files per account: test_sftp_handler.py) ----------------------------


def test_sessions_per_connection_are_capped(
    make_daemon: MakeDaemon, keys: dict[str, tuple[Path, Path]], caplog: pytest.LogCaptureFixture
) -> None:
    daemon = make_daemon(INGESTD_SFTP__MAX_SESSIONS="3")
    daemon.add_key("acme", keys["acme"][1])
    conn = transport(daemon.sftp_port, "acme", keys["acme"][0])
    try:
        channels = [conn.open_session(timeout=30) for _ in range(3)]
        with pytest.raises(paramiko.ChannelException) as refused:
            conn.open_session(timeout=30)
        assert refused.value.code == paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        # paramiko keeps the server's description only in its log line.
        assert "open FAILED: Too many sessions on this connection (at most 3)" in caplog.text
        channels.pop().close()
        sftp = wait_for(lambda: _sftp_or_none(conn), "a session to be free again")
        assert isinstance(sftp.listdir("."), list)
        # Another connection has its own sessions.
        with paramiko_sftp(daemon.sftp_port, "acme", keys["acme"][0]) as other:
            assert isinstance(other.listdir("."), list)
    finally:
        conn.close()


def _sftp_or_none(conn: paramiko.Transport) -> paramiko.SFTPClient | None:
    try:
        return paramiko.SFTPClient.from_transport(conn)
    except paramiko.ChannelException:
        return None


# -- 3. names -------------------------------------------------------------------------------------------------


def test_one_read_request_returns_at_most_256_kib_and_downloads_stay_whole(
    make_daemon: MakeDaemon, keys: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    # A read may ask for up to 4 GiB; the reply was built in memory (one 1 GiB request: 5 GB in the SFTP process).
    daemon = make_daemon()
    daemon.add_key("acme", keys["acme"][1])
    content = os.urandom(3 << 20)
    (daemon.drop("acme") / "big.bin").write_bytes(content)
    with paramiko_sftp(daemon.sftp_port, "acme", keys["acme"][0]) as sftp, sftp.open("big.bin", "rb") as handle:
        _, reply = sftp._request(paramiko.sftp.CMD_READ, handle.handle, paramiko.sftp.int64(0), 1 << 30)
        assert len(reply.get_binary()) == 256 * 1024
    target = tmp_path / "got.bin"
    result = sftp_batch(daemon.sftp_port, "acme", keys["acme"][0], [f'get big.bin "{target}"'])
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == content


def test_names_that_are_not_utf8_or_hold_control_characters_are_refused(
    make_daemon: MakeDaemon, keys: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    daemon = make_daemon()
    daemon.add_key("acme", keys["acme"][1])
    drop = daemon.drop("acme")
    source = tmp_path / "m.json"
    source.write_text("{}")
    # OpenSSH sftp, the name as raw bytes in its batch input.
    result = subprocess.run(
        sftp_command(daemon.sftp_port, "acme", keys["acme"][0]),
        input=f"put {source} ".encode() + b"\xff.manifest\n",
        capture_output=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert b"Permission denied" in result.stderr
    with paramiko_sftp(daemon.sftp_port, "acme", keys["acme"][0]) as sftp:
        for name, message in (
            (b"\xff.manifest", "File names must be valid UTF-8"),
            (b"caf\xe9.csv", "File names must be valid UTF-8"),
            (b"a\nb.manifest", "File names must not contain control characters"),
            (b"a\rb.csv", "File names must not contain control characters"),
            (b"bell\x07.csv", "File names must not contain control characters"),
        ):
            with pytest.raises(PermissionError, match=message):
                sftp.open(name, "wb")
        with sftp.open("ok.csv", "wb") as remote:
            remote.write(b"identity\n")
        for target, message in ((b"\xff.csv", "valid UTF-8"), (b"x\n.manifest", "control characters")):
            for rename in (sftp.rename, sftp.posix_rename):
                with pytest.raises(PermissionError, match=message):
                    rename("ok.csv", target)
        # A name in UTF-8 is fine.
        with sftp.open("café.csv", "wb") as remote:
            remote.write(b"identity\n")
    # The session's spare temp file (made for a next upload) goes when the server has seen the session end.
    wait_for(
        lambda: not any(name.startswith(b".ingestd-upload-") for name in os.listdir(os.fsencode(drop))),
        "the session's spare temp file to be removed",
    )
    assert sorted(os.listdir(os.fsencode(drop))) == sorted(["café.csv".encode(), b"ok.csv"])
    assert "Traceback" not in daemon.log()


# -- 4. failed logins and bans ----------------------------------------------------------------------------


def test_failed_logins_ban_the_account_from_that_address_only_and_an_operator_can_lift_it(
    make_daemon: MakeDaemon, keys: dict[str, tuple[Path, Path]]
) -> None:
    daemon = make_daemon(INGESTD_SFTP__MAX_AUTH_FAILURES="3", INGESTD_SFTP__BAN_TIME="10m")
    acme, globex, stranger = keys["acme"][0], keys["globex"][0], keys["stranger"][0]
    daemon.add_key("acme", keys["acme"][1])
    daemon.add_key("globex", keys["globex"][1])
    for _ in range(3):
        assert sftp_batch(daemon.sftp_port, "acme", stranger, ["ls"]).returncode != 0
    message = r"Too many failed logins for acme from 127\.0\.0\.1; try again in \d+ minutes"
    refused = wait_for(
        lambda: (r := sftp_batch(daemon.sftp_port, "acme", acme, ["ls"])).returncode != 0 and r, "the ban"
    )
    # OpenSSH shows our reason, not "banner line contains invalid characters".
    assert re.search(message, refused.stderr), refused.stderr
    # The same address as another account is not banned.
    assert sftp_batch(daemon.sftp_port, "globex", globex, ["ls"]).returncode == 0

    listed = daemon.cli("bans", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [ban] = json.loads(listed.stdout)
    assert {key: ban[key] for key in ("address", "account", "reason", "failures")} == {
        "address": "127.0.0.1",
        "account": "acme",
        "reason": "failed_logins",
        "failures": 3,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", ban["banned_until"])
    table = daemon.cli("bans", "list")
    assert "127.0.0.1" in table.stdout and "acme" in table.stdout

    # Bans outlive a restart.
    daemon.restart()
    again = sftp_batch(daemon.sftp_port, "acme", acme, ["ls"])
    assert again.returncode != 0 and "Too many failed logins for acme" in again.stderr

    lifted = daemon.cli("bans", "lift", "127.0.0.1")
    assert lifted.returncode == 0, lifted.stderr
    # At the next login of the running daemon.
    result = sftp_batch(daemon.sftp_port, "acme", acme, ["ls"])
    assert result.returncode == 0, result.stderr
    assert daemon.cli("bans", "lift", "127.0.0.1").returncode == 1
    bad = daemon.cli("bans", "lift", "not-an-address")
    assert bad.returncode == 2 and "invalid address" in bad.stderr
    assert json.loads(daemon.cli("bans", "list", "--json").stdout) == []
    assert "Traceback" not in daemon.log()


# -- 5. algorithms --------------------------------------------------------------------------------------------


def test_sha1_key_exchange_and_ssh_rsa_signatures_are_refused_rsa_keys_use_sha2(
    make_daemon: MakeDaemon, tmp_path: Path
) -> None:
    daemon = make_daemon(INGESTD_SFTP__MAX_AUTH_FAILURES="1000")
    rsa_private, rsa_public = make_keypair(tmp_path / "rsa", "id_rsa", "rsa", 3072)
    daemon.add_key("acme", rsa_public)
    base = sftp_command(daemon.sftp_port, "acme", rsa_private)
    verbose = [base[0], "-v", *base[1:]]
    ok = run(verbose)
    assert ok.returncode == 0, ok.stderr
    assert re.search(r"Server accepts key: .* RSA SHA256:\S+", ok.stderr), ok.stderr
    for kex in ("diffie-hellman-group14-sha1", "diffie-hellman-group1-sha1", "diffie-hellman-group-exchange-sha1"):
        result = run(with_options(verbose, f"KexAlgorithms={kex}"))
        assert result.returncode != 0, kex
        assert re.search("no matching key exchange (method|algorithm) found", result.stderr, re.I), result.stderr
    sha1 = run(with_options(verbose, "PubkeyAcceptedAlgorithms=ssh-rsa"))
    assert sha1.returncode != 0
    assert "no mutual signature algorithm" in sha1.stderr, sha1.stderr
    # A client that signs with ssh-rsa whatever the server advertises is refused too; with SHA-2 it gets in.
    assert asyncio.run(_asyncssh_login(daemon.sftp_port, rsa_private, "ssh-rsa")) is False
    assert asyncio.run(_asyncssh_login(daemon.sftp_port, rsa_private, "rsa-sha2-256")) is True


async def _asyncssh_login(port: int, private: Path, signature: str) -> bool:
    keypair = asyncssh.load_keypairs([str(private)])[0]
    keypair.set_sig_algorithm(signature.encode())
    try:
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            username="acme",
            client_keys=[keypair],
            known_hosts=None,
            signature_algs=[signature],
            config=None,
        ):
            return True
    except asyncssh.PermissionDenied:
        return False


# -- 6. rename onto a manifest, 7. file modes -----------------------------------------------------------------


def test_rename_onto_a_manifest_queues_the_job_at_once(
    make_daemon: MakeDaemon, keys: dict[str, tuple[Path, Path]]
) -> None:
    daemon = make_daemon()  # watch.rescan_interval stays 60s: only the rename event can be this quick
    daemon.add_key("acme", keys["acme"][1])
    manifest = {"fileName": "renamed.csv", "type": "profile", "clientEmail": "partner@example.com"}
    with paramiko_sftp(daemon.sftp_port, "acme", keys["acme"][0]) as sftp:
        with sftp.open("renamed.csv", "wb") as remote:
            remote.write(b"identity,Name\n1,Ann\n")
        with sftp.open("renamed.tmp", "wb") as remote:
            remote.write(json.dumps(manifest).encode())
        with sftp.open("other.tmp", "wb") as remote:
            remote.write(b"{}")
        with sftp.open("unrelated.csv", "wb") as remote:
            remote.write(b"identity\n")
        sftp.rename("renamed.tmp", "renamed.manifest")  # SFTP v3 rename
        # v3 rename never replaces an existing name (not renamed.csv: the job may have taken it already).
        with pytest.raises(OSError):
            sftp.rename("other.tmp", "unrelated.csv")

    def queued() -> bool:
        result = daemon.cli("imports", "list", "--json")
        return result.returncode == 0 and any(
            job["manifest_name"] == "renamed.manifest" for job in json.loads(result.stdout)
        )

    wait_for(queued, "the job of the renamed manifest", timeout=15)
    assert re.search(r"job\.queued account=acme job_id=\d+ manifest=renamed\.manifest", daemon.log())


def test_uploads_are_created_readable_by_the_daemon_only(
    make_daemon: MakeDaemon, keys: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    daemon = make_daemon()
    daemon.add_key("acme", keys["acme"][1])
    source = tmp_path / "mode.csv"
    source.write_text("identity\n1\n")
    os.chmod(source, 0o644)
    result = sftp_batch(daemon.sftp_port, "acme", keys["acme"][0], [f"put -p {source}"])
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((daemon.drop("acme") / "mode.csv").stat().st_mode) == 0o600

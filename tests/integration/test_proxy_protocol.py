"""Behind a load balancer: the PROXY protocol on the SFTP and HTTP ports of `ingestd serve`, from trusted peers only.

The balancer is tests/fixtures/proxy.Relay, connecting from 127.0.0.2 (the only trusted address here); clients
connecting straight from 127.0.0.1 are untrusted, so one daemon shows both sides."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.daemon import Daemon, daemon_env
from tests.fixtures.proxy import BALANCER, raw_exchange, relay, v1_header, v2_header
from tests.fixtures.sshkeys import make_keypair, sftp_batch

TOKEN = "s3cret-token"
PARTNER = "203.0.113.7"  # documentation addresses: they only ever appear inside PROXY headers
OTHER_PARTNER = "2001:db8::42"


# The module shares one daemon (the fixture below): its tests run on one xdist worker (scripts/test.sh -n).
pytestmark = pytest.mark.xdist_group("test_proxy_protocol")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Path, Path]]:
    base = tmp_path_factory.mktemp("proxy")
    data = base / "data"
    env = daemon_env(
        data,
        INGESTD_SFTP__PROXY_PROTOCOL_FROM=f"{BALANCER}/32",
        INGESTD_SFTP__MAX_AUTH_FAILURES="2",
        INGESTD_SFTP__BAN_TIME="10m",
        INGESTD_HTTP__TOKEN=TOKEN,
    )
    daemon = Daemon(data, env)
    daemon.start()
    private, public = make_keypair(base / "keys" / "acme")
    stranger, _ = make_keypair(base / "keys" / "stranger")
    daemon.add_key("acme", public)
    yield daemon, private, stranger
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()


def wait_for_log(daemon: Daemon, found: Callable[[str], bool], what: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in daemon.log().splitlines():
            if found(line):
                return line
        time.sleep(0.1)
    raise AssertionError(f"no log line for {what}:\n{daemon.log()[-3000:]}")


def test_sftp_bans_and_logs_see_the_partner_address_from_the_header(served: tuple[Daemon, Path, Path]) -> None:
    daemon, private, stranger = served
    with relay(daemon.sftp_port, v2_header(PARTNER)) as balancer:
        for _ in range(2):
            assert sftp_batch(balancer.port, "acme", stranger, ["ls"]).returncode != 0
        wait_for_log(daemon, lambda line: "login.failed" in line and f"address={PARTNER}" in line, "login.failed")
        bans = json.loads(daemon.cli("bans", "list", "--json").stdout)
        assert [(ban["address"], ban["account"]) for ban in bans] == [(PARTNER, "acme")]
        # The partner is banned, even with the right key, and told so; not the balancer nor anyone else.
        refused = sftp_batch(balancer.port, "acme", private, ["ls"])
        assert refused.returncode != 0 and f"from {PARTNER}" in refused.stderr
    with relay(daemon.sftp_port, v1_header("198.51.100.20")) as balancer:
        assert sftp_batch(balancer.port, "acme", private, ["ls"]).returncode == 0
    wait_for_log(daemon, lambda line: "login.succeeded" in line and "address=198.51.100.20" in line, "login")
    assert sftp_batch(daemon.sftp_port, "acme", private, ["ls"]).returncode == 0  # straight from 127.0.0.1


def test_sftp_per_source_limits_count_the_partner_not_the_balancer(make_daemon, tmp_path: Path) -> None:
    # One connection not yet logged in per source: two partners behind one balancer still both get in.
    # One SFTP process: the startup caps are per process (docs/ops-guide.md, Limits).
    daemon = make_daemon(
        INGESTD_SFTP__PROXY_PROTOCOL_FROM=BALANCER,
        INGESTD_SFTP__PER_SOURCE_MAX_STARTUPS="1",
        INGESTD_SFTP__PROCESSES="1",
    )
    private, public = make_keypair(tmp_path / "keys")
    daemon.add_key("acme", public)
    with (
        relay(daemon.sftp_port, v2_header(PARTNER)) as first,
        relay(daemon.sftp_port, v2_header("::1")) as second,
        socket.create_connection(("127.0.0.1", first.port)) as idle,
    ):
        # An idle connection of the first partner holds its one slot ...
        idle.recv(100)  # the server's version line: the connection is through the gate
        assert sftp_batch(second.port, "acme", private, ["ls"]).returncode == 0  # ... not the other's
        assert sftp_batch(first.port, "acme", private, ["ls"]).returncode != 0  # its own is taken
    assert "reason=per_source_max_startups" in wait_for_log(
        daemon, lambda line: "sftp.connections_refused" in line, "the refusal summary", timeout=30
    )


def test_sftp_a_header_from_an_untrusted_address_is_a_failed_handshake(served: tuple[Daemon, Path, Path]) -> None:
    daemon, private, _ = served
    with relay(daemon.sftp_port, v2_header(OTHER_PARTNER), bind="127.0.0.1") as untrusted:
        assert sftp_batch(untrusted.port, "acme", private, ["ls"]).returncode != 0
    assert f"address={OTHER_PARTNER}" not in daemon.log()
    assert not [line for line in daemon.log().splitlines() if "proxy.header_refused" in line and "127.0.0.1" in line]


def test_sftp_a_trusted_peer_without_a_header_is_closed_with_a_reason(served: tuple[Daemon, Path, Path]) -> None:
    daemon, _, _ = served
    answer = raw_exchange(daemon.sftp_port, b"SSH-2.0-OpenSSH_9.6\r\n", bind=BALANCER)
    assert b"SSH-2.0" not in answer  # closed before any SSH: no version line comes back
    line = wait_for_log(daemon, lambda line: "proxy.header_refused" in line and "port=sftp" in line, "the refusal")
    assert f"peer={BALANCER}" in line and "no PROXY protocol header" in line and "SSH-2.0-OpenSSH" in line


def _get(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_http_sees_the_partner_address_from_the_header(served: tuple[Daemon, Path, Path]) -> None:
    daemon, _, _ = served
    assert daemon.http_port is not None
    with relay(daemon.http_port, v2_header(OTHER_PARTNER, dest_port=8080)) as balancer:
        assert _get(balancer.port, "/healthz")[0] == 200
        status, body = _get(balancer.port, "/api/imports", TOKEN)
        assert status == 200 and json.loads(body)["imports"] == []
        assert _get(balancer.port, "/api/imports?x=1", "wrong")[0] == 401
    line = wait_for_log(daemon, lambda line: "http.unauthorized" in line, "the refused request")
    assert f"address={OTHER_PARTNER}" in line and "path=/api/imports" in line and "token=wrong" in line


def test_http_headers_only_from_trusted_peers(served: tuple[Daemon, Path, Path]) -> None:
    daemon, _, _ = served
    assert daemon.http_port is not None
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    # From 127.0.0.1 a PROXY line is not read: it is a bad request.
    assert raw_exchange(daemon.http_port, v1_header(PARTNER) + request).startswith(b"HTTP/1.0 400 Bad Request")
    assert raw_exchange(daemon.http_port, request).startswith(b"HTTP/1.1 200")
    # From the balancer, a request without the header is refused before any HTTP.
    assert raw_exchange(daemon.http_port, request, bind=BALANCER) == b""
    line = wait_for_log(daemon, lambda line: "proxy.header_refused" in line and "port=http" in line, "the refusal")
    assert f"peer={BALANCER}" in line and "GET /healthz" in line
    assert raw_exchange(daemon.http_port, v1_header(PARTNER) + request, bind=BALANCER).startswith(b"HTTP/1.1 200")

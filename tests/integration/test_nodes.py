"""Several `ingestd serve` nodes on one shared PostgreSQL state, one data_dir and the noida-db Elasticsearch;
and `ingestd nodes` / GET /api/nodes on the default SQLite state."""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.fixtures.common import free_port
from tests.fixtures.csvgen import write_bought
from tests.fixtures.daemon import Daemon, daemon_env
from tests.fixtures.noida import Noida
from tests.fixtures.smtp import SMTPServer
from tests.fixtures.sshkeys import make_keypair, sftp_batch
from tests.integration.test_e2e import ACCOUNT, Partner, cli_json, wait_for
from tests.integration.test_e2e_elasticsearch import es


def api(daemon: Daemon, path: str) -> Any:
    assert daemon.http_url is not None
    with urllib.request.urlopen(daemon.http_url + path, timeout=30) as response:
        return json.loads(response.read())


def test_nodes_lists_the_running_daemon_and_its_clean_stop(daemon: Daemon) -> None:
    [node] = cli_json(daemon, "nodes")
    assert node["state"] == "up" and node["sftp"].endswith(f":{daemon.sftp_port}")
    assert node["pid"] == daemon.process.pid  # type: ignore[union-attr]
    from_api = api(daemon, "/api/nodes")["nodes"]
    assert [(n["id"], n["state"], n["sftp"]) for n in from_api] == [(node["id"], "up", node["sftp"])]
    table = daemon.cli("nodes")
    assert table.returncode == 0 and node["id"] in table.stdout and " up " in table.stdout
    assert daemon.stop() == 0
    [after] = cli_json(daemon, "nodes")
    assert after["id"] == node["id"] and after["state"] == "stopped" and after["running"] == []


def test_shared_state_with_the_sqlite_sink_is_refused_at_start(tmp_path: Path, postgres_url: str) -> None:
    env = daemon_env(tmp_path / "data", INGESTD_STATE__URL=postgres_url, INGESTD_SINK__DRIVER="sqlite")
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.startswith("ingestd: error: state.url is a shared PostgreSQL state, but sink.driver is")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "state.sqlite3").exists()


def test_an_unreachable_state_database_is_one_clear_line(tmp_path: Path) -> None:
    url = f"postgresql://ingestd:secret@127.0.0.1:{free_port()}/ingestd"
    env = daemon_env(tmp_path / "data", INGESTD_STATE__URL=url, INGESTD_SINK__DRIVER="elasticsearch")
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.startswith("ingestd: error: state database postgresql://ingestd:***@127.0.0.1:")
    assert "secret" not in result.stderr and "Traceback" not in result.stderr


# -- a cluster of two nodes -----------------------------------------------------------------------------------


class Cluster:
    """Nodes sharing one data_dir, one PostgreSQL database and one Elasticsearch index prefix."""

    def __init__(self, tmp_path: Path, url: str, noida: Noida, prefix: str, **env: str) -> None:
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "shared" / "data"
        self.url = url
        self.es_url, self.prefix = noida.url, prefix
        self.env = {
            "INGESTD_STATE__URL": url,
            "INGESTD_SINK__DRIVER": "elasticsearch",
            "INGESTD_ELASTICSEARCH__URL": noida.url,
            "INGESTD_ELASTICSEARCH__INDEX_PREFIX": prefix,
            **env,
        }
        self.nodes: list[Daemon] = []

    def node(self) -> Daemon:
        name = f"node{len(self.nodes) + 1}"
        daemon = Daemon(self.data_dir, daemon_env(self.data_dir, **self.env))
        daemon.log_path = self.tmp_path / f"{name}.stderr.log"  # the nodes share data_dir, not their logs
        daemon.stdout_path = self.tmp_path / f"{name}.stdout.log"
        self.nodes.append(daemon)
        daemon.start()
        return daemon

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return list(conn.execute(query, params).fetchall())

    def stop(self) -> None:
        for daemon in self.nodes:
            with contextlib.suppress(RuntimeError):
                daemon.stop(timeout=20)


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str, noida: Noida, es_prefix: str) -> Iterator[Callable[..., Cluster]]:
    """Factory: cluster(**env) -> a Cluster on the session's noida-db, or on `server`, a noida-db of its own."""
    made: list[Cluster] = []

    def factory(server: Noida | None = None, **env: str) -> Cluster:
        made.append(Cluster(tmp_path, postgres_url, server or noida, es_prefix, **env))
        return made[-1]

    yield factory
    for each in made:
        each.stop()


def events_manifest(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "fileName": name,
        "type": "event",
        "clientEmail": "partner@example.com",
        "columns": {"event": {"ctName": "evtName"}, "when": {"ctName": "ts", "dataType": "LONG"}},
        **extra,
    }


@pytest.mark.slow
def test_two_nodes_share_keys_bans_and_the_job_queue(
    cluster: Callable[..., Cluster], keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    nodes = cluster()
    one = nodes.node()
    two = nodes.node()  # after the first: it finds the host key and the schema the first made
    one.add_key(ACCOUNT, keypair[1])
    listed = cli_json(two, "nodes")
    assert sorted(node["state"] for node in listed) == ["up", "up"]
    assert {node["sftp"].rpartition(":")[2] for node in listed} == {str(one.sftp_port), str(two.sftp_port)}

    # Uploads through both nodes' SFTP ports; each node's own watcher sees its own writes.
    via = [one, two, one, two]
    for i, node in enumerate(via):
        partner = Partner(node, keypair[0], tmp_path / f"partner{i}")
        rows = "".join(f"user{j},Viewed,{1_600_000_000 + i * 1000 + j}\n" for j in range(200))
        partner.upload(
            f"views{i}.csv", "identity,event,when\n" + rows, f"views{i}.manifest", events_manifest(f"views{i}.csv")
        )

    def done() -> list[tuple[Any, ...]] | None:
        rows = nodes.sql("SELECT id, status, rows_ingested, started_at, finished_at FROM jobs ORDER BY id")
        return rows if len(rows) == 4 and all(row[4] for row in rows) else None

    jobs = wait_for("four imports to finish", done, one, timeout=120)
    assert [(row[1], row[2]) for row in jobs] == [("succeeded", 200)] * 4  # each once, exact
    # Per-account upload order across the cluster: each starts only once the one before it finished.
    for before, after in itertools.pairwise(jobs):
        assert before[4] <= after[3]
    names = [row[0] for row in nodes.sql("SELECT manifest_name FROM jobs ORDER BY id")]
    assert names == [f"views{i}.manifest" for i in range(4)]
    timelines = [json.loads(r[0]) for r in nodes.sql("SELECT details FROM jobs ORDER BY id")]
    for timeline in timelines:
        assert [entry["event"] for entry in timeline["timeline"]].count("picked_up") == 1

    # Every email (picked up, succeeded: as .eml files here) was delivered once, by one of the two nodes.
    def delivered() -> list[tuple[Any, ...]] | None:
        rows = nodes.sql("SELECT attempts, sent_at FROM outbox ORDER BY id")
        return rows if len(rows) >= 8 and all(row[1] for row in rows) else None

    assert {row[0] for row in wait_for("the emails to be delivered", delivered, one)} == {1}

    # A key revoked on one node refuses the next login on the other.
    assert one.cli("keys", "revoke", ACCOUNT, "--", cli_json(one, "keys", "list", ACCOUNT)[0]["name"]).returncode == 0
    refused = sftp_batch(two.sftp_port, ACCOUNT, keypair[0], ["ls"])
    assert refused.returncode != 0 and "Permission denied" in refused.stderr


@pytest.mark.slow
def test_a_ban_written_through_one_node_holds_on_both(
    cluster: Callable[..., Cluster], keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    nodes = cluster(INGESTD_SFTP__MAX_AUTH_FAILURES="2")
    one = nodes.node()
    two = nodes.node()
    one.add_key(ACCOUNT, keypair[1])
    wrong, _ = make_keypair(tmp_path / "wrong")
    # Failed logins against node one until it bans the address.
    deadline = time.monotonic() + 60
    while not nodes.sql("SELECT address FROM bans"):
        assert time.monotonic() < deadline, one.log()[-3000:]
        sftp_batch(one.sftp_port, ACCOUNT, wrong, ["ls"])
    # The right key is refused now on both nodes: the ban is in the shared state.
    for node in (one, two):
        result = sftp_batch(node.sftp_port, ACCOUNT, keypair[0], ["ls"])
        assert result.returncode != 0, node.sftp_port
    listed = cli_json(two, "bans", "list")
    assert [ban["address"] for ban in listed] == ["127.0.0.1"]
    assert two.cli("bans", "lift", "127.0.0.1").returncode == 0
    assert sftp_batch(one.sftp_port, ACCOUNT, keypair[0], ["ls"]).returncode == 0


# Issue #16's figure. (At 120k for a while: noida-db stopped answering at about 170k documents here, because the
# sink searched the index it was writing to for every batch's ids, which noida-db answers by a scan of all of it.)
ROWS = 400_000


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_other_node_finishes_the_import_of_a_killed_node_with_one_email(
    make_noida: Callable[[], Noida],  # before `cluster`: the nodes are stopped before their noida-db
    cluster: Callable[..., Cluster],
    keypair: tuple[Path, Path],
    tmp_path: Path,
    smtp_server: SMTPServer,
) -> None:
    nodes = cluster(
        make_noida(),  # its own, stopped after the test: 400k documents are not left to the rest of the session
        INGESTD_SMTP__HOST=smtp_server.host,
        INGESTD_SMTP__PORT=str(smtp_server.port),
        INGESTD_JOBS__BATCH_ROWS="10000",
        INGESTD_JOBS__COMMIT_ROWS="10000",
    )
    one = nodes.node()
    two = nodes.node()
    one.add_key(ACCOUNT, keypair[1])
    partner = Partner(one, keypair[0], tmp_path / "partner")
    write_bought(partner.folder / "big.csv", ROWS, amount=False)
    partner.put(partner.folder / "big.csv", partner.file("big.manifest", events_manifest("big.csv")))

    def running() -> tuple[Any, ...] | None:
        rows = nodes.sql("SELECT id, lease_node, rows_ingested FROM jobs WHERE status = 'processing'")
        return rows[0] if rows and rows[0][2] > 0 else None

    job_id, holder, _ = wait_for("the import under way", running, one, timeout=120)
    victim, survivor = (one, two) if holder.endswith(f":{one.process.pid}") else (two, one)  # type: ignore[union-attr]
    victim.kill()  # SIGKILL: no clean stop, its claim lapses
    ingested_at_kill = nodes.sql("SELECT rows_ingested FROM jobs WHERE id = %s", (job_id,))[0][0]
    assert 0 < ingested_at_kill < ROWS

    def finished() -> tuple[Any, ...] | None:
        rows = nodes.sql(
            "SELECT status, rows_total, rows_ingested, rows_failed, lease_node FROM jobs WHERE id = %s", (job_id,)
        )
        return rows[0] if rows and rows[0][0] not in ("queued", "waiting_for_data", "processing") else None

    status, total, ingested, failed, _ = wait_for("the survivor to finish it", finished, survivor, timeout=700)
    assert (status, total, ingested, failed) == ("succeeded", ROWS, ROWS, 0)
    # Exact in the sink too: the batch the victim wrote after its last checkpoint is written again under
    # the same deterministic ids, so nothing is stored twice.
    es(f"{nodes.es_url}/{nodes.prefix}-events*/_refresh", "POST")
    assert es(f"{nodes.es_url}/{nodes.prefix}-events*/_count")["count"] == ROWS
    assert "job.resumed" in survivor.log()
    [node] = [n for n in cli_json(survivor, "nodes") if n["pid"] == victim.process.pid]  # type: ignore[union-attr]
    assert node["state"] == "lost"

    def delivered() -> list[tuple[Any, ...]] | None:
        rows = nodes.sql("SELECT attempts, sent_at FROM outbox WHERE job_id = %s AND event = 'succeeded'", (job_id,))
        return rows if rows and all(row[1] for row in rows) else None

    sent = wait_for("the success email to be sent", delivered, survivor, timeout=60)
    assert [row[0] for row in sent] == [1]  # one row, one attempt: sent by one node, once
    received = smtp_server.wait_for(1, timeout=30, where=lambda m: m.event == "succeeded")
    assert len(received) == 1 and "partner@example.com" in received[0].rcpt_tos


# -- the cluster profile's HAProxy (docker-compose.yml, haproxy/haproxy.cfg) in front of two nodes ----------------

REPO = Path(__file__).resolve().parents[2]


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.fail("HAProxy is not installed: no haproxy on PATH (scripts/test.sh installs Debian's haproxy package)")
    return found


def haproxy_stats(socket_path: Path) -> dict[tuple[str, str], dict[str, str]]:
    """`show stat` over the admin socket: (backend, server) -> its row (status, check_status, ...)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(socket_path))
        sock.sendall(b"show stat\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    lines = data.decode().lstrip("# ").splitlines()
    rows = csv.DictReader(lines)
    return {(row["pxname"], row["svname"]): row for row in rows if row.get("svname") not in ("FRONTEND", "BACKEND")}


def test_the_cluster_profiles_haproxy_config_fronts_two_nodes(
    cluster: Callable[..., Cluster], keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    binary = haproxy_binary()
    # HAProxy connects from 127.0.0.2, the only address the nodes take a PROXY header from (as the compose
    # file trusts HAProxy's fixed address); the partner connects from 127.0.0.1.
    nodes = cluster(INGESTD_SFTP__PROXY_PROTOCOL_FROM="127.0.0.2")
    one = nodes.node()
    two = nodes.node()
    one.add_key(ACCOUNT, keypair[1])
    sftp_port, http_port, health_port = free_port(), free_port(), free_port()
    stats = tmp_path / "haproxy.sock"
    # The file the cluster profile mounts, as it is, moved to this machine: loopback ports for the containers'
    # names and ports, no Docker DNS, and an admin socket to read the health checks' results from.
    config = (REPO / "haproxy" / "haproxy.cfg").read_text()
    replacements = {
        "    maxconn 4096\n": f"    maxconn 4096\n    stats socket {stats} mode 600 level user\n",
        "bind :2222": f"bind 127.0.0.1:{sftp_port}",
        "bind :8080": f"bind 127.0.0.1:{http_port}",
        "bind 127.0.0.1:8404": f"bind 127.0.0.1:{health_port}",
        "ingestd-node1:2222": f"127.0.0.1:{one.sftp_port}",
        "ingestd-node2:2222": f"127.0.0.1:{two.sftp_port}",
        "ingestd-node1:8080": f"127.0.0.1:{one.http_port}",
        "ingestd-node2:8080": f"127.0.0.1:{two.http_port}",
        " resolvers docker init-addr last,libc,none": " source 127.0.0.2",
    }
    for old, new in replacements.items():
        assert old in config, old
        config = config.replace(old, new)
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    checked = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "[WARNING]" not in checked.stdout + checked.stderr, checked.stdout + checked.stderr
    with open(tmp_path / "haproxy.log", "wb") as log:
        haproxy = subprocess.Popen([binary, "-db", "-f", str(path)], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        # Both nodes pass both health checks: the SSH version line, and /healthz, each behind a PROXY header.
        def all_up() -> dict[tuple[str, str], dict[str, str]] | None:
            if haproxy.poll() is not None:
                raise AssertionError((tmp_path / "haproxy.log").read_text())
            with contextlib.suppress(OSError):
                rows = haproxy_stats(stats)
                if len(rows) == 4 and all(row["check_status"] == "L7OK" for row in rows.values()):
                    return rows
            return None

        rows = wait_for("HAProxy's health checks to pass", all_up, one, timeout=60)
        assert {row["status"] for row in rows.values()} == {"UP"}
        # A partner through HAProxy: logged in, and the node saw the partner's address, not HAProxy's.
        for _ in range(2):
            result = sftp_batch(sftp_port, ACCOUNT, keypair[0], ["ls"])
            assert result.returncode == 0, result.stderr
        logins = [line for node in (one, two) for line in node.log().splitlines() if "login.succeeded" in line]
        assert len(logins) == 2 and all("address=127.0.0.1 " in line for line in logins), logins
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/nodes", timeout=30) as response:
            assert sorted(node["state"] for node in json.loads(response.read())["nodes"]) == ["up", "up"]
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=30) as response:
            assert response.status == 200  # the container's own health check
    finally:
        haproxy.terminate()
        haproxy.wait(30)

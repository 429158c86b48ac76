"""docker-compose.yml and the Dockerfile: they parse, and every INGESTD_* variable is a real config key."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest

from daemon.config import config_reference, load_config

yaml = pytest.importorskip("yaml", reason="PyYAML is in the test extra: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[2]
KEYS = {name for name, _, _ in config_reference()}
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def _key_for(variable: str) -> str:
    """INGESTD_SMTP__HOST -> smtp.host, INGESTD_DATA_DIR -> data_dir (the daemon's own mapping)."""
    return ".".join(variable[len("INGESTD_") :].lower().split("__"))


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    # What `docker compose up` passes when the user's shell sets nothing: ${VAR:-default} -> default.
    return {name: _INTERPOLATION.sub(lambda m: m.group(2) or "", str(value)) for name, value in env.items()}


def _profile(profile: str | None) -> dict[str, Any]:
    """The services `docker compose up` starts without a profile (None), or those of `profile`."""
    services = _compose()["services"]
    return {name: service for name, service in services.items() if profile in (service.get("profiles") or [None])}


def test_compose_has_the_three_services_with_health_checks() -> None:
    services = _compose()["services"]
    assert set(_profile(None)) == {"ingestd", "elasticsearch", "mailpit"}
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert services["ingestd"]["build"] == "."
    assert services["elasticsearch"]["image"].startswith("docker.elastic.co/elasticsearch/elasticsearch:8.")
    assert services["mailpit"]["image"].startswith("axllent/mailpit")
    # ingestd waits until its sink and SMTP server answer, not merely until they were started.
    depends = services["ingestd"]["depends_on"]
    assert depends == {
        "elasticsearch": {"condition": "service_healthy"},
        "mailpit": {"condition": "service_healthy"},
    }
    assert "/healthz" in " ".join(services["ingestd"]["healthcheck"]["test"])


STATELESS = {"haproxy"}  # its one file is its configuration (a compose config, not a mount)


def test_data_lives_in_named_volumes() -> None:
    compose = _compose()
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        if name in STATELESS:
            assert not service.get("volumes"), f"{name} is meant to keep no data"
            continue
        mounts = service.get("volumes") or []
        assert mounts, f"{name} keeps its data in no volume"
        for mount in mounts:
            source = mount.split(":", 1)[0]
            assert source in declared, f"{name}: {source!r} is not a named volume (bind mounts lose the data dir)"
    env = _environment(compose["services"]["ingestd"])
    assert any(m.endswith(f":{env['INGESTD_DATA_DIR']}") for m in compose["services"]["ingestd"]["volumes"])


def test_ingestd_environment_names_only_real_config_keys() -> None:
    env = _environment(_compose()["services"]["ingestd"])
    names = [name for name in env if name.startswith("INGESTD_")]
    assert names, "no INGESTD_* settings at all"
    unknown = [name for name in names if _key_for(name) not in KEYS]
    assert not unknown, f"not config keys: {unknown}"
    assert not [name for name in env if not name.startswith("INGESTD_")], "only INGESTD_* settings reach ingestd"


def test_ingestd_environment_is_a_valid_config_wired_to_the_other_services() -> None:
    compose = _compose()
    config = load_config(environ=_environment(compose["services"]["ingestd"]))
    assert config.sink.driver == "elasticsearch"
    assert config.elasticsearch.url == "http://elasticsearch:9200"
    assert config.smtp.host == "mailpit"
    assert config.smtp.port == 1025  # Mailpit's SMTP port
    assert config.sftp.host == config.http.host == "0.0.0.0"  # reachable through the published ports
    published = {str(port).rsplit(":", 1)[-1] for port in compose["services"]["ingestd"]["ports"]}
    assert {str(config.sftp.port), str(config.http.port)} <= published


def test_dockerfile_env_names_real_config_keys_and_checks_health() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    names = re.findall(r"\b(INGESTD_[A-Z0-9_]+)=", text)
    assert names
    assert [name for name in names if _key_for(name) not in KEYS] == []
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert re.search(r'^CMD \["ingestd", "serve"\]$', text, re.MULTILINE)
    for package in re.findall(r"^COPY (\w+) \./\1$", text, re.MULTILINE):
        assert (ROOT / package / "__init__.py").exists(), f"Dockerfile copies {package}/, which is not a package"


# -- the `cluster` profile ----------------------------------------------------------------------------------

NODES = ("ingestd-node1", "ingestd-node2")


def _haproxy() -> str:
    compose = _compose()
    [config] = compose["services"]["haproxy"]["configs"]
    assert config["target"] == "/usr/local/etc/haproxy/haproxy.cfg"  # where the official image reads it
    return (ROOT / compose["configs"][config["source"]]["file"]).read_text(encoding="utf-8")


def _sections(text: str) -> dict[str, list[str]]:
    """haproxy.cfg as {"backend sftp_nodes": [its lines], ...}, comments and blank lines left out."""
    sections: dict[str, list[str]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            current = line.strip()
            sections[current] = []
        else:
            sections[current].append(line.strip())
    return sections


def test_cluster_profile_is_two_nodes_postgresql_and_haproxy_beside_the_shared_services() -> None:
    services = _compose()["services"]
    assert set(_profile("cluster")) == {*NODES, "postgres", "haproxy"}
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["haproxy"]["image"].startswith("haproxy:")
    for node in NODES:
        assert services[node]["build"] == "." and services[node]["image"] == services["ingestd"]["image"]
        assert "ports" not in services[node], f"{node} is reached through HAProxy only"
        assert services[node]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "elasticsearch": {"condition": "service_healthy"},
            "mailpit": {"condition": "service_healthy"},
        }
    # The two nodes share one data_dir volume, and it is not the single node's.
    mounts = {node: set(services[node]["volumes"]) for node in NODES}
    assert mounts[NODES[0]] == mounts[NODES[1]] and len(mounts[NODES[0]]) == 1
    assert mounts[NODES[0]].isdisjoint(services["ingestd"]["volumes"])


@pytest.mark.parametrize("node", NODES)
def test_cluster_nodes_are_configured_for_shared_state_behind_haproxy(node: str) -> None:
    compose = _compose()
    service = compose["services"][node]
    env = _environment(service)
    assert [name for name in env if _key_for(name) not in KEYS] == []
    config = load_config(environ=env)
    assert config.state.url.startswith("postgresql://") and "@postgres:5432/" in config.state.url
    postgres = compose["services"]["postgres"]["environment"]
    assert config.state.url.endswith(f"/{postgres['POSTGRES_DB']}")
    assert config.sink.driver == "elasticsearch"  # shared state needs the shared sink
    assert config.elasticsearch.url == "http://elasticsearch:9200" and config.smtp.host == "mailpit"
    assert any(m.endswith(f":{config.data_dir}") for m in service["volumes"])
    # HAProxy, and only HAProxy, is trusted to send the PROXY header: its fixed address on the shared network.
    haproxy = compose["services"]["haproxy"]["networks"]
    [(network, settings)] = haproxy.items()
    assert network in service["networks"]
    address = ipaddress.ip_address(settings["ipv4_address"])
    [subnet] = compose["networks"][network]["ipam"]["config"]
    assert address in ipaddress.ip_network(subnet["subnet"])
    assert config.sftp.proxy_protocol_from == [str(address)]
    # The elasticsearch and mailpit services are on the default network: the nodes must be on it too.
    assert "default" in service["networks"]


def test_haproxy_sends_proxy_v2_in_tcp_mode_to_both_nodes_on_their_ports() -> None:
    compose = _compose()
    sections = _sections(_haproxy())
    assert "mode tcp" in sections["defaults"]
    node = load_config(environ=_environment(compose["services"][NODES[0]]))
    published = {port.rsplit(":", 1)[-1] for port in compose["services"]["haproxy"]["ports"]}
    for frontend, backend, port in (("sftp", "sftp_nodes", node.sftp.port), ("http", "http_nodes", node.http.port)):
        lines = sections[f"frontend {frontend}"]
        bind = next(line for line in lines if line.startswith("bind "))
        assert bind.rsplit(":", 1)[-1] in published, f"frontend {frontend} is not published"
        assert f"default_backend {backend}" in lines
        body = sections[f"backend {backend}"]
        assert not any(line.startswith("mode ") and line != "mode tcp" for line in body)
        defaults = next(line for line in body if line.startswith("default-server "))
        assert "send-proxy-v2" in defaults.split() and "check" in defaults.split()
        servers = [line.split() for line in body if line.startswith("server ")]
        assert sorted(address for _, _, address, *_ in servers) == sorted(f"{name}:{port}" for name in NODES)
    assert r"tcp-check expect rstring ^SSH-2\.0-" in sections["backend sftp_nodes"]
    assert "option httpchk GET /healthz" in sections["backend http_nodes"]
    # The container's health check asks HAProxy's monitor URI.
    health = sections["frontend health"]
    assert "monitor-uri /healthz" in health
    check = " ".join(compose["services"]["haproxy"]["healthcheck"]["test"])
    bind = next(line for line in health if line.startswith("bind ")).split()[1]
    assert f"http://{bind}/healthz" in check

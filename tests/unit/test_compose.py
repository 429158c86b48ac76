"""docker-compose.yml and the Dockerfile: they parse, and every INGESTD_* variable is a real config key."""

from __future__ import annotations

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


def test_compose_has_the_three_services_with_health_checks() -> None:
    services = _compose()["services"]
    assert set(services) == {"ingestd", "elasticsearch", "mailpit"}
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


def test_data_lives_in_named_volumes() -> None:
    compose = _compose()
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
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

"""Config: defaults, TOML, environment overrides and one-line errors naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.errors import ConfigError


def test_defaults_match_design() -> None:
    config = load_config(environ={})
    assert str(config.data_dir) == "ingestd-data"
    assert (config.sftp.host, config.sftp.port, config.sftp.max_file_size) == ("127.0.0.1", 2222, 5 * 1024**3)
    assert (config.http.host, config.http.port) == ("127.0.0.1", 8080)
    assert config.sink.driver == "sqlite"
    assert config.elasticsearch.url == "http://127.0.0.1:9200"
    assert config.elasticsearch.index_prefix == "ingestd"
    assert (config.smtp.host, config.smtp.port, config.smtp.sender) == ("", 25, "ingestd@localhost")
    assert config.smtp.starttls is False
    assert config.notify.progress_interval == 7200
    assert config.notify.ops_emails == []
    assert config.jobs.workers == 2
    assert config.jobs.data_file_grace == 900


def test_toml_file_and_environment_override(tmp_path: Path) -> None:
    path = tmp_path / "ingestd.toml"
    path.write_text(
        'data_dir = "/srv/ingestd"\n[smtp]\nhost = "mail.local"\nport = 587\n[jobs]\ndata_file_grace = "30s"\n'
    )
    config = load_config(path, environ={"INGESTD_SMTP__PORT": "2525", "INGESTD_NOTIFY__OPS_EMAILS": "a@x.io, b@x.io"})
    assert str(config.data_dir) == "/srv/ingestd"
    assert config.smtp.host == "mail.local"
    assert config.smtp.port == 2525
    assert config.jobs.data_file_grace == 30
    assert config.notify.ops_emails == ["a@x.io", "b@x.io"]


def test_the_system_config_file_is_found_when_nothing_else_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import daemon.config

    system = tmp_path / "etc-ingestd.toml"
    system.write_text('data_dir = "/srv/ingestd"\n')
    monkeypatch.setattr(daemon.config, "SYSTEM_CONFIG", system)
    assert str(load_config(environ={}).data_dir) == "/srv/ingestd"
    named = tmp_path / "named.toml"
    named.write_text('data_dir = "/srv/other"\n')
    assert str(load_config(environ={"INGESTD_CONFIG": str(named)}).data_dir) == "/srv/other"
    assert str(load_config(named, environ={}).data_dir) == "/srv/other"
    system.unlink()
    assert str(load_config(environ={}).data_dir) == "ingestd-data"


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[sftp]\nport = 2022\n")
    assert load_config(environ={"INGESTD_CONFIG": str(path)}).sftp.port == 2022


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"INGESTD_SMTP__PORT": "70000"}, "smtp.port: Input should be less than or equal to 65535"),
        ({"INGESTD_SFTP__MAX_FILE_SIZE": "5 gigs"}, "sftp.max_file_size: expected a size like"),
        ({"INGESTD_NOTIFY__PROGRESS_INTERVAL": "two hours"}, "notify.progress_interval: expected a duration"),
        ({"INGESTD_SMTP__PROT": "25"}, "smtp.prot: unknown key — did you mean 'port'?"),
        ({"INGESTD_SINK__DRIVER": "mongo"}, "sink.driver: Input should be 'sqlite' or 'elasticsearch'"),
        ({"INGESTD_JOBS__WORKERS": "0"}, "jobs.workers: Input should be greater than or equal to 1"),
        ({"INGESTD_JOBS__SHUTDOWN_GRACE": "2h"}, "jobs.shutdown_grace: Input should be less than or equal to 3600"),
        ({"INGESTD_ELASTICSEARCH__URL": "localhost:9200"}, "elasticsearch.url: expected an http:// or https:// URL"),
    ],
)
def test_invalid_values_name_the_key(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ=environ)
    assert str(caught.value).startswith(message)


def test_broken_toml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[smtp\nhost=1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, environ={})


def test_invalid_config_stops_the_cli_with_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "imports", "list"],
        env={"INGESTD_SMTP__PORT": "-1", "PATH": "/usr/bin:/bin", "INGESTD_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ingestd: error: smtp.port: Input should be greater than or equal to 0, found '-1'"
    ]


def test_sizes_take_decimal_and_binary_units() -> None:
    from daemon.config import parse_size

    assert parse_size("100MB") == 100_000_000
    assert parse_size("2KB") == 2000
    assert parse_size("1GB") == 10**9
    assert parse_size("1KiB") == 1024
    assert parse_size("10MiB") == 10 * 1024**2
    assert load_config(environ={}).exports.chunk_size == 100_000_000

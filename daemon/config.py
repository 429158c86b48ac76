"""Configuration: defaults, a TOML file and INGESTD_* environment variables, validated once."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from daemon.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)?\s*$")
_SIZE_UNITS = {
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    None: 1,
}


def parse_duration(value: Any) -> float:
    """Seconds from `90`, `"30s"`, `"15m"`, `"2h"` (also `ms` and `d`)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '30s', '15m' or '2h', found {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"expected a duration like '30s', '15m' or '2h', found {value!r}")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, found {value!r}")
    return seconds


def parse_size(value: Any) -> int:
    """Bytes from `1024`, `"10MiB"`, `"5GiB"`, `"100MB"` (KB, MB, GB are powers of 1000)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like '10MiB' or '5GiB', found {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f"expected a size like '512KiB', '10MiB' or '5GiB', found {value!r}")
        size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    if size <= 0:
        raise ValueError(f"a size must be positive, found {value!r}")
    return size


def _string_list(value: Any) -> Any:
    """Environment variables give lists as JSON or as comma-separated strings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
StrList = Annotated[list[str], BeforeValidator(_string_list)]
Port = Annotated[int, Field(ge=0, le=65535)]

DEFAULT_RESTRICTED_EVENTS = [
    "App Launched",
    "App Installed",
    "App Uninstalled",
    "Notification Sent",
    "Notification Viewed",
    "Notification Clicked",
    "UTM Visited",
    "Stayed",
    "Session Concluded",
    "Push Impressions",
    "Geocluster Entered",
    "Geocluster Exited",
    "Reply Received",
    "Channel Unsubscribed",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class SFTPConfig(_Section):
    host: str = "127.0.0.1"
    port: Port = 2222
    max_file_size: Size = "5GiB"  # type: ignore[assignment]
    max_auth_failures: int = Field(5, ge=1)  # failed logins per (address, account) before a ban
    ban_time: Duration = "10m"  # type: ignore[assignment]
    login_grace_time: Duration = "2m"  # type: ignore[assignment]
    # OpenSSH's MaxStartups / PerSourceMaxStartups / MaxSessions, and a cap per account across its connections.
    max_startups: int = Field(100, ge=1)  # connections not yet logged in, from all addresses together
    per_source_max_startups: int = Field(10, ge=1)  # connections not yet logged in, from one address
    max_sessions: int = Field(10, ge=1)  # channels (sessions) one connection may open
    max_open_files: int = Field(64, ge=1)  # files one account may hold open at once, over all its connections
    # SSH algorithms offered, in order; empty: the built-in lists (daemon/sftp/algorithms.py). Names are checked
    # against asyncssh's when the SFTP server starts.
    ciphers: StrList = []
    macs: StrList = []
    kex_algorithms: StrList = []
    host_key_algorithms: StrList = []
    # Several SFTP processes share the port (SO_REUSEPORT), each with its own event loop; 0: one per core.
    processes: int = Field(0, ge=0, le=64)
    # A broken upload is kept this long, so that `reput` / `put -a` can continue it; then it is removed.
    resume_window: Duration = "24h"  # type: ignore[assignment]
    # Load balancers (addresses or networks) whose PROXY protocol (v1/v2) header is trusted, on SFTP and HTTP.
    proxy_protocol_from: StrList = []

    @field_validator("proxy_protocol_from")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"expected IP addresses or networks like 10.0.0.0/8, found {item!r}") from None
        return value


class StateConfig(_Section):
    # Empty: data_dir/state.sqlite3 (one node). postgresql://user:password@host:port/db shares state between nodes.
    url: str = ""

    @field_validator("url")
    @classmethod
    def _state_url(cls, value: str) -> str:
        if value and not re.match(r"^postgres(?:ql)?://", value):
            raise ValueError(f"expected empty (SQLite in data_dir) or a postgresql:// URL, found {value!r}")
        return value


class WatchConfig(_Section):
    # How often the drop area is rescanned for files inotify cannot see (other nodes, NFS, other writers).
    rescan_interval: Duration = "60s"  # type: ignore[assignment]


class HTTPConfig(_Section):
    host: str = "127.0.0.1"
    port: Port = 8080
    token: str = ""  # bearer token for everything but /healthz; empty: no auth
    keepalive_timeout: Duration = "5s"  # type: ignore[assignment]  # an idle keep-alive connection is closed
    max_connections: int = Field(256, ge=1)  # open HTTP connections at once; more wait in the listen backlog


class SinkConfig(_Section):
    driver: Literal["sqlite", "elasticsearch"] = "sqlite"


class ElasticsearchConfig(_Section):
    url: str = "http://127.0.0.1:9200"
    index_prefix: str = "ingestd"
    username: str = ""
    password: str = ""
    request_timeout: Duration = "30s"  # type: ignore[assignment]
    max_retry_delay: Duration = "30s"  # type: ignore[assignment]

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"expected an http:// or https:// URL, found {value!r}")
        return value.rstrip("/")

    @field_validator("index_prefix")
    @classmethod
    def _index_name(cls, value: str) -> str:
        if not re.match(r"^[a-z0-9][a-z0-9_.-]{0,100}$", value):
            raise ValueError(
                f"expected lower-case letters, digits, '_', '.' or '-' (an Elasticsearch index name), found {value!r}"
            )
        return value


class SMTPConfig(_Section):
    host: str = ""  # empty: emails become .eml files under data_dir
    port: Port = 25
    sender: str = "ingestd@localhost"
    starttls: bool = False
    tls: bool = False  # implicit TLS (SMTPS, usually port 465)
    username: str = ""
    password: str = ""
    timeout: Duration = "30s"  # type: ignore[assignment]
    max_retry_delay: Duration = "10m"  # type: ignore[assignment]


class NotifyConfig(_Section):
    progress_interval: Duration = "2h"  # type: ignore[assignment]
    ops_emails: StrList = []
    max_attachment: Size = "10MiB"  # type: ignore[assignment]
    max_recipients: int = Field(10, ge=1)  # addresses one manifest's clientEmail may name
    max_failure_emails: int = Field(20, ge=1)  # failure emails per account per hour; the rest are summarised


class WebhooksConfig(_Section):
    urls: StrList = []
    secret: str = ""
    timeout: Duration = "10s"  # type: ignore[assignment]
    max_retry_delay: Duration = "10m"  # type: ignore[assignment]

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.match(r"^https?://[^/\s]+", url):
                raise ValueError(f"expected http:// or https:// URLs, found {url!r}")
        return value


class JobsConfig(_Section):
    workers: int = Field(2, ge=1, le=64)
    data_file_grace: Duration = "15m"  # type: ignore[assignment]
    batch_rows: int = Field(50_000, ge=100, le=1_000_000)
    # sqlite sink: validated batches go into one open transaction, committed and checkpointed every this many rows.
    commit_rows: int = Field(1_000_000, ge=100, le=10_000_000)
    max_manifest_size: Size = "1MiB"  # type: ignore[assignment]  # a bigger manifest fails unread
    retention_days: float = Field(30, ge=0)  # job folders older than this are removed; 0 keeps them
    # The whole shutdown's deadline (daemon/shutdown.py), from the first SIGTERM/SIGINT: uploads in flight
    # finish, running imports reach their next checkpoint, deliveries in flight are marked sent, each in what
    # remains of it; what is left is then stopped (resumed or delivered after the restart). At most an hour:
    # a stop that long is a hang to systemd (TimeoutStopSec) and to an operator.
    shutdown_grace: Duration = Field("15s", le=3600)  # type: ignore[assignment]
    restricted_events: StrList = DEFAULT_RESTRICTED_EVENTS


class ExportsConfig(_Section):
    chunk_size: Size = "100MB"  # type: ignore[assignment]  # largest export file; bigger selections are split
    batch_rows: int = Field(50_000, ge=1, le=1_000_000)  # rows read from the sink and written at a time
    poll_interval: Duration = "5s"  # type: ignore[assignment]  # how often due exports are looked for
    # elasticsearch: a run takes events ingested up to this long before it starts, so a bulk request still in
    # flight (or not yet refreshed) when the run starts is in the next run rather than missed.
    es_settle: Duration = "2m"  # type: ignore[assignment]
    # S3-compatible destinations (s3://BUCKET/PREFIX): AWS S3, GCS (interoperability mode), MinIO.
    endpoint_url: str = ""  # empty: AWS S3
    access_key: str = ""
    secret_key: str = ""
    region: str = "us-east-1"
    multipart_threshold: Size = "16MiB"  # type: ignore[assignment]  # bigger files are uploaded in parts
    max_attempts: int = Field(5, ge=1, le=20)  # tries per S3 request (connection errors, 5xx, throttling)

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"expected an http:// or https:// URL, found {value!r}")
        return value.rstrip("/")


class LogConfig(_Section):
    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Config(_Section):
    data_dir: Path = Path("./ingestd-data")
    sftp: SFTPConfig = SFTPConfig()
    state: StateConfig = StateConfig()
    watch: WatchConfig = WatchConfig()
    http: HTTPConfig = HTTPConfig()
    sink: SinkConfig = SinkConfig()
    elasticsearch: ElasticsearchConfig = ElasticsearchConfig()
    smtp: SMTPConfig = SMTPConfig()
    notify: NotifyConfig = NotifyConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    jobs: JobsConfig = JobsConfig()
    exports: ExportsConfig = ExportsConfig()
    log: LogConfig = LogConfig()

    # Where things live under data_dir; one place so every component agrees.
    @property
    def drop_root(self) -> Path:
        return self.data_dir / "drop"

    @property
    def jobs_root(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def state_db(self) -> Path:
        return self.data_dir / "state.sqlite3"

    @property
    def sink_db(self) -> Path:
        return self.data_dir / "sink.sqlite3"

    @property
    def host_keys_dir(self) -> Path:
        return self.data_dir / "host_keys"

    @property
    def exports_staging(self) -> Path:
        return self.data_dir / "exports"

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"


SECTIONS = {name for name, field in Config.model_fields.items() if isinstance(field.default, BaseModel)}


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """INGESTD_<KEY> and INGESTD_<SECTION>__<KEY>, matched case-insensitively."""
    overrides: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.upper().startswith("INGESTD_") or name.upper() == "INGESTD_CONFIG":
            continue
        path = name[len("INGESTD_") :].lower().split("__")
        if len(path) == 1:
            overrides[path[0]] = value
        elif len(path) == 2:
            overrides.setdefault(path[0], {})
            if not isinstance(overrides[path[0]], dict):
                raise ConfigError(f"{name}: {path[0]} is not a section")
            overrides[path[0]][path[1]] = value
        else:
            raise ConfigError(f"{name}: expected INGESTD_<SECTION>__<KEY> or INGESTD_<KEY>")
    return overrides


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: ErrorDetails) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "config"
    if error["type"] == "extra_forbidden":
        known = _known_keys(error["loc"][:-1])
        import difflib

        guess = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        hint = f" — did you mean '{guess[0]}'?" if guess else ""
        return f"{key}: unknown key{hint}"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] not in ("value_error",) and "input" in error and not isinstance(error["input"], dict):
        message = f"{message}, found {error['input']!r}"
    return f"{key}: {message}"


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Config
    for part in loc:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


SYSTEM_CONFIG = Path("/etc/ingestd/ingestd.toml")


def load_config(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read the TOML file (if any), apply environment overrides, validate; ConfigError names the key."""
    environ = dict(os.environ if environ is None else environ)
    # The daemon and the CLI find the same file the same way: --config, else $INGESTD_CONFIG, else the system one.
    path = path or environ.get("INGESTD_CONFIG") or (SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None)
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"config file {path}: not found") from None
        except OSError as exc:
            raise ConfigError(f"config file {path}: cannot be read ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: not valid TOML ({exc})") from None
    try:
        data = _merge(data, _env_overrides(environ))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"environment: a list value is not valid JSON ({exc})") from None
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0])) from None


def config_reference() -> list[tuple[str, Any, str]]:
    """Every key as (dotted name, default, type name): for docs and the docs-agree test."""
    rows: list[tuple[str, Any, str]] = []
    defaults = Config()
    for name in Config.model_fields:
        value = getattr(defaults, name)
        if isinstance(value, BaseModel):
            for key in type(value).model_fields:
                rows.append((f"{name}.{key}", getattr(value, key), type(getattr(value, key)).__name__))
        else:
            rows.append((name, value, type(value).__name__))
    return rows

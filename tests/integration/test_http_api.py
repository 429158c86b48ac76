"""The HTTP service in-process on a real state store: every endpoint, its filters, errors and the token."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.error import HTTPError

import pytest

from daemon.config import Config, load_config
from daemon.http.app import HTTPService
from daemon.store import StateDB
from daemon.store.jobs import JobStore
from tests.fixtures.jobs import add_job


@dataclass
class Response:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def fetch(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> Response:
    """GET (or `method`) without raising on 4xx/5xx: tests look at the status themselves."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Response(response.status, response.headers, response.read())
    except HTTPError as error:
        return Response(error.code, error.headers, error.read())


class Served:
    """An HTTPService on port 0 running in its own event loop thread, as in the daemon."""

    def __init__(self, config: Config, health: dict[str, Any] | None = None) -> None:
        self.config = config
        self.db = StateDB(config.state_db)
        self.jobs = JobStore(self.db)
        self.service = HTTPService(config, self.db, None, health=health or {})
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.service.start(), self.loop).result(30)
        port = re.search(r":(\d+)$", self.service.banner()[0])
        assert port, self.service.banner()
        self.url = f"http://127.0.0.1:{port.group(1)}"

    def get(self, path: str, **headers: str) -> Response:
        return fetch(self.url + path, headers)

    def add_import(self, account: str, manifest: str, status: str = "queued", **columns: Any) -> int:
        """A job created through the jobs store, then moved to `status` as a worker would leave it."""
        job_id = add_job(self.jobs, account, manifest)
        values = {"status": status, "file_name": manifest.replace(".manifest", ".csv"), **columns}
        if "details" in values:
            values["details"] = json.dumps(values["details"])
        assignments = ", ".join(f"{name} = ?" for name in values)
        with self.db.transaction() as conn:
            conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*values.values(), job_id))
        return job_id

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.service.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()
        self.db.close()


def make_config(data_dir: Path, **env: str) -> Config:
    return load_config(environ={"INGESTD_DATA_DIR": str(data_dir), "INGESTD_HTTP__PORT": "0", **env})


def serving(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Body of the `serve` fixture (shared with test_activity_page.py)."""
    started: list[Served] = []

    def factory(health: dict[str, Any] | None = None, **env: str) -> Served:
        served = Served(make_config(tmp_path / f"data{len(started)}", **env), health)
        started.append(served)
        return served

    yield factory
    for served in started:
        served.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """serve(health={...}, INGESTD_HTTP__TOKEN="x") -> a started Served; all stopped at teardown."""
    yield from serving(tmp_path)


FINISHED: dict[str, Any] = {
    "type": "profile",
    "rows_total": 5,
    "rows_ingested": 4,
    "rows_failed": 1,
    "started_at": "2026-01-02T03:04:05Z",
    "finished_at": "2026-01-02T03:04:17Z",
    "details": {"reasons": [["Phone number is not valid", 1]], "problems": [], "duration_ms": 12000},
}


def test_banner_shows_the_port_really_bound_when_configured_as_zero(serve: Callable[..., Served]) -> None:
    served = serve()
    line = served.service.banner()[0]
    assert re.fullmatch(r"  http   http://127\.0\.0\.1:\d+", line)
    assert not line.endswith(":0")
    assert served.get("/healthz").status == 200


def test_healthz_reports_every_check(serve: Callable[..., Served]) -> None:
    response = serve().get("/healthz")
    assert response.status == 200
    assert response.json() == {"status": "ok", "checks": {"state": "ok"}}


def test_healthz_is_503_naming_the_unhealthy_component(serve: Callable[..., Served], tmp_path: Path) -> None:
    sinks = pytest.importorskip("daemon.sinks", reason="the sink drivers are not written yet")
    if not hasattr(sinks, "open_sink"):
        pytest.skip("daemon.sinks.open_sink is not written yet")
    from tests.fixtures.common import free_port

    # A real Elasticsearch sink pointed at a port where nothing listens.
    dead = make_config(
        tmp_path / "es",
        INGESTD_SINK__DRIVER="elasticsearch",
        INGESTD_ELASTICSEARCH__URL=f"http://127.0.0.1:{free_port()}",
    )
    sink = sinks.open_sink(dead)
    served = serve(health={"sink": sink, "sftp": None, "jobs": None})
    response = served.get("/healthz")
    assert response.status == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["reason"].startswith("sink: ")
    assert body["checks"]["state"] == "ok"
    assert body["checks"]["sink"] != "ok"
    assert "sftp" not in body["checks"]  # not built: skipped, not failing
    asyncio.run_coroutine_threadsafe(sink.stop(), served.loop).result(30)


def test_list_imports_newest_first_with_filters_and_paging(serve: Callable[..., Served]) -> None:
    served = serve()
    first = served.add_import("acme", "a.manifest", "succeeded", **FINISHED)
    second = served.add_import("globex", "b.manifest", "failed", error="No data file found")
    third = served.add_import("acme", "c.manifest", "processing", started_at="2026-01-02T04:00:00Z")

    body = served.get("/api/imports").json()
    assert [item["id"] for item in body["imports"]] == [third, second, first]
    assert body["limit"] == 50 and body["offset"] == 0 and body["next"] is None
    item = body["imports"][2]
    for key in ("id", "account", "file_name", "manifest_name", "type", "status", "rows_total", "rows_ingested",
                "rows_failed", "created_at", "started_at", "finished_at", "error"):  # fmt: skip
        assert key in item, key
    assert (item["account"], item["status"], item["rows_ingested"], item["rows_failed"]) == ("acme", "succeeded", 4, 1)

    by_account = served.get("/api/imports?account=acme").json()["imports"]
    assert [item["id"] for item in by_account] == [third, first]
    failed = served.get("/api/imports?status=failed").json()["imports"]
    assert [(item["id"], item["error"]) for item in failed] == [(second, "No data file found")]
    assert served.get("/api/imports?account=acme&status=failed").json()["imports"] == []

    page = served.get("/api/imports?limit=2").json()
    assert [item["id"] for item in page["imports"]] == [third, second]
    assert page["next"] == "/api/imports?limit=2&offset=2"
    rest = served.get(page["next"]).json()
    assert [item["id"] for item in rest["imports"]] == [first]
    assert rest["next"] is None


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("status=done", "status"),
        ("status=FAILED", "status"),
        ("limit=ten", "limit"),
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("offset=-1", "offset"),
        ("offset=1.5", "offset"),
        ("account=../etc", "account"),
        ("offset=9223372036854775808", "offset"),  # beyond SQLite's INTEGER: was a 500 and a traceback
        ("offset=" + "9" * 5000, "offset"),
    ],
)
def test_bad_query_parameters_are_400_naming_the_parameter(
    serve: Callable[..., Served], query: str, param: str
) -> None:
    response = serve().get(f"/api/imports?{query}")
    assert response.status == 400
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["param"] == param
    assert body["error"].startswith(f"{param}: ")


def test_one_import_by_id(serve: Callable[..., Served]) -> None:
    served = serve()
    job_id = served.add_import("acme", "a.manifest", "completed_with_errors", **FINISHED)
    body = served.get(f"/api/imports/{job_id}").json()
    assert body["id"] == job_id
    assert body["status"] == "completed_with_errors"
    assert body["details"]["reasons"] == [["Phone number is not valid", 1]]

    missing = served.get(f"/api/imports/{job_id + 100}")
    assert missing.status == 404
    assert missing.json() == {"error": f"import {job_id + 100} not found"}
    bad = served.get("/api/imports/latest")
    assert bad.status == 400
    assert bad.json()["param"] == "id"
    for huge in ("9" * 30, "9" * 5000):  # was a 500 (OverflowError) and a traceback in the log
        assert served.get(f"/api/imports/{huge}").status == 400
        assert served.get(f"/imports/{huge}").status == 400
        assert served.get("/api/exports?offset=" + huge).status == 400


def test_metrics_are_prometheus_text_with_depths_read_from_the_store(serve: Callable[..., Served]) -> None:
    served = serve()
    served.add_import("acme", "a.manifest", "queued")
    served.add_import("acme", "b.manifest", "waiting_for_data")
    served.add_import("acme", "c.manifest", "processing")
    from notifier.outbox import Outbox

    with served.db.transaction() as conn:
        sent = Outbox.add(conn, "email", 1, "picked_up", "partner@example.com", b"Subject: a\r\n\r\nx")
        Outbox.add(conn, "email", 1, "succeeded", "partner@example.com", b"Subject: b\r\n\r\ny")
    Outbox(served.db).mark_sent(sent)
    response = served.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = response.text
    for name in (
        "ingestd_uploads_total",
        "ingestd_upload_bytes_total",
        "ingestd_imports_total",
        "ingestd_rows_ingested_total",
        "ingestd_rows_failed_total",
        "ingestd_job_duration_seconds_bucket",
        "ingestd_queue_depth",
        "ingestd_outbox_depth",
        "ingestd_sink_errors_total",
    ):
        assert f"# TYPE {name.removesuffix('_total').removesuffix('_bucket')}" in text, name
    assert re.search(r"^ingestd_queue_depth 2\.0$", text, re.MULTILINE)
    assert re.search(r"^ingestd_outbox_depth 1\.0$", text, re.MULTILINE)


def test_token_guards_everything_but_healthz(serve: Callable[..., Served]) -> None:
    served = serve(INGESTD_HTTP__TOKEN="s3cret-token")
    assert served.get("/healthz").status == 200
    for path in ("/api/imports", "/api/imports/1", "/metrics"):
        refused = served.get(path)
        assert refused.status == 401, path
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert "token" in refused.json()["error"]
        assert served.get(path, Authorization="Bearer wrong").status == 401
    assert served.get("/api/imports", Authorization="Bearer s3cret-token").status == 200
    assert served.get("/metrics", Authorization="Bearer s3cret-token").status == 200

    # The pages ask a browser for a password (the token), since browsers cannot send a bearer token.
    page = served.get("/")
    assert page.status == 401
    assert page.headers["WWW-Authenticate"].startswith("Basic")
    basic = base64.b64encode(b"ops:s3cret-token").decode()
    assert served.get("/", Authorization=f"Basic {basic}").status == 200
    wrong = base64.b64encode(b"ops:guess").decode()
    assert served.get("/", Authorization=f"Basic {wrong}").status == 401


def test_unknown_api_paths_and_methods_answer_in_json(serve: Callable[..., Served]) -> None:
    served = serve()
    missing = served.get("/api/nothing")
    assert missing.status == 404
    assert "not found" in missing.json()["error"]
    post = fetch(served.url + "/api/imports", method="POST")
    assert post.status == 405
    assert post.json()["error"].startswith("POST /api/imports")
    page = served.get("/no-such-page")
    assert page.status == 404
    assert "<html" in page.text


def test_a_broken_state_store_gives_a_one_line_500_and_the_server_keeps_serving(serve: Callable[..., Served]) -> None:
    served = serve()
    with served.db.transaction() as conn:
        conn.execute("DROP TABLE jobs")
    broken = served.get("/api/imports")
    assert broken.status == 500
    assert broken.json()["error"].startswith("internal error: OperationalError: no such table: jobs")
    page = served.get("/")
    assert page.status == 500
    assert "Traceback" not in page.text
    assert served.get("/healthz").status == 200

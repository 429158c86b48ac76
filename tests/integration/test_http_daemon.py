"""HTTP on a real `ingestd serve` with real imports uploaded over SFTP: API, metrics, health, page, logs."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import Daemon, daemon_env
from tests.fixtures.samples import SAMPLES
from tests.fixtures.sshkeys import make_keypair, sftp_batch
from tests.integration.test_activity_page import cells, chromium_dom, row
from tests.integration.test_http_api import Response, fetch

FINAL = {"succeeded", "completed_with_errors", "failed"}


def wait_for(check: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after a generous deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


class Live:
    """One daemon with two finished imports: the reference profiles (succeeded) and a bad manifest (failed)."""

    def __init__(self, daemon: Daemon, profiles_id: int, failed_id: int) -> None:
        self.daemon = daemon
        self.profiles_id = profiles_id
        self.failed_id = failed_id

    def get(self, path: str, **headers: str) -> Response:
        assert self.daemon.http_url, f"no http line in the banner:\n{self.daemon.stdout()}"
        return fetch(self.daemon.http_url + path, headers)


# The module shares one daemon (the fixture below): its tests run on one xdist worker (scripts/test.sh -n).
pytestmark = pytest.mark.xdist_group("test_http_daemon")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("live")
    daemon = Daemon(root / "data", daemon_env(root / "data", INGESTD_LOG__FORMAT="json"))
    try:
        daemon.start()
        if not daemon.sftp_port or daemon.http_url is None:
            pytest.skip(f"the daemon does not serve SFTP and HTTP yet:\n{daemon.stdout()}")
        private, public = make_keypair(root / "keys")
        daemon.add_key("acme", public)
        samples = SAMPLES
        upload = root / "upload"
        upload.mkdir()
        shutil.copy(samples / "profiles.csv", upload / "profiles.csv")
        shutil.copy(samples / "profiles.manifest", upload / "profiles.manifest")
        # "filename" instead of "fileName": the import fails with the manifest's problems listed.
        (upload / "broken.manifest").write_text(
            json.dumps({"filename": "profiles.csv", "type": "profile", "clientEmail": "partner@example.com"})
        )
        put = sftp_batch(
            daemon.sftp_port,
            "acme",
            private,
            [f"put {upload / 'profiles.csv'}", f"put {upload / 'profiles.manifest'}"],
        )
        assert put.returncode == 0, put.stderr

        def imports() -> list[dict[str, Any]]:
            response = fetch(daemon.url("/api/imports"))
            assert response.status == 200, response.body
            return response.json()["imports"]

        first = wait_for(lambda: [i for i in imports() if i["status"] in FINAL], "the profiles import to finish")
        put = sftp_batch(daemon.sftp_port, "acme", private, [f"put {upload / 'broken.manifest'}"])
        assert put.returncode == 0, put.stderr
        wait_for(lambda: len([i for i in imports() if i["status"] in FINAL]) == 2, "the broken manifest to fail")
        failed = next(i for i in imports() if i["manifest_name"] == "broken.manifest")
        yield Live(daemon, first[0]["id"], failed["id"])
    finally:
        with contextlib.suppress(RuntimeError):
            daemon.stop(timeout=15)


def test_api_lists_the_real_imports_newest_first(live: Live) -> None:
    body = live.get("/api/imports").json()
    assert [item["id"] for item in body["imports"]] == [live.failed_id, live.profiles_id]
    profiles = body["imports"][1]
    assert profiles["account"] == "acme"
    assert profiles["file_name"] == "profiles.csv"
    assert profiles["manifest_name"] == "profiles.manifest"
    assert profiles["type"] == "profile"
    assert profiles["status"] == "succeeded", profiles
    assert (profiles["rows_total"], profiles["rows_ingested"], profiles["rows_failed"]) == (5, 5, 0)
    assert profiles["started_at"] and profiles["finished_at"]
    failed = body["imports"][0]
    assert failed["status"] == "failed"
    assert failed["error"] == "Incorrect details in manifest file"
    assert any("fileName" in problem for problem in failed["details"]["problems"]), failed


def test_api_filters_and_one_import(live: Live) -> None:
    assert [i["id"] for i in live.get("/api/imports?status=failed").json()["imports"]] == [live.failed_id]
    assert live.get("/api/imports?account=globex").json()["imports"] == []
    one = live.get(f"/api/imports/{live.profiles_id}")
    assert one.status == 200
    assert one.json()["rows_ingested"] == 5
    assert live.get("/api/imports/999999").status == 404
    assert live.get("/api/imports?limit=lots").json()["param"] == "limit"


def _sample(text: str, name: str, **labels: str) -> float | None:
    label_text = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + label_text + '}') if labels else ''} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else None


def test_metrics_count_the_uploads_imports_and_rows(live: Live) -> None:
    # The SFTP process relays its counts in a batch a moment after an upload; an import can end sooner.
    def uploads_counted() -> str | None:
        text = live.get("/metrics").text
        return text if _sample(text, "ingestd_uploads_total", account="acme") == 3.0 else None

    text = wait_for(uploads_counted, "the three uploads in /metrics", timeout=30)
    assert _sample(text, "ingestd_uploads_total", account="acme") == 3.0
    size = sum((SAMPLES / name).stat().st_size for name in ("profiles.csv", "profiles.manifest"))
    assert (_sample(text, "ingestd_upload_bytes_total", account="acme") or 0) > size
    assert _sample(text, "ingestd_imports_total", status="succeeded") == 1.0
    assert _sample(text, "ingestd_imports_total", status="failed") == 1.0
    assert _sample(text, "ingestd_rows_ingested_total", type="profile") == 5.0
    assert _sample(text, "ingestd_queue_depth") == 0.0
    assert (_sample(text, "ingestd_job_duration_seconds_count") or 0) >= 1.0


def test_healthz_checks_every_component(live: Live) -> None:
    response = live.get("/healthz")
    assert response.status == 200, response.body
    checks = response.json()["checks"]
    assert checks["state"] == "ok"
    assert {name: value for name, value in checks.items() if value != "ok"} == {}
    assert {"sftp", "sink", "jobs"} <= set(checks), checks


def test_activity_page_in_chromium_shows_the_real_imports(live: Live, tmp_path: Path) -> None:
    assert live.daemon.http_url
    dom = chromium_dom(live.daemon.http_url + "/", tmp_path / "chromium")
    found = cells(row(dom, live.profiles_id))
    assert found[1:8] == ["acme", "profiles.csv", "profile", "succeeded", "5", "5", "0"]
    failed = cells(row(dom, live.failed_id))
    assert failed[4] == "failed"
    assert failed[-1].startswith("Incorrect details in manifest file")
    detail = live.get(f"/imports/{live.failed_id}").text
    assert "fileName" in detail


def test_json_log_lines_record_each_state_change(live: Live) -> None:
    lines = [line for line in live.daemon.log().splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON log line: {line!r}")
    events = {record["event"]: record for record in records}
    started = events["http.started"]
    assert started["port"] == live.daemon.http_port
    upload = next(r for r in records if r["event"] == "upload.completed" and r.get("file") == "profiles.csv")
    assert upload["account"] == "acme" and upload["size_bytes"] > 0 and "elapsed_ms" in upload
    queued = next(r for r in records if r["event"] == "job.queued" and r.get("job_id") == live.profiles_id)
    assert queued["account"] == "acme"
    progress = next(r for r in records if r["event"] == "job.progress" and r.get("job_id") == live.profiles_id)
    assert progress["rows_done"] == 5 and progress["size_bytes"] > 0 and "elapsed_ms" in progress
    done = next(r for r in records if r["event"] == "job.succeeded" and r.get("job_id") == live.profiles_id)
    assert done["account"] == "acme" and done["rows_ingested"] == 5 and "elapsed_ms" in done


def test_token_protects_a_real_daemon_and_text_logs_by_default(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "data", daemon_env(tmp_path / "data", INGESTD_HTTP__TOKEN="t0ken"))
    try:
        daemon.start()
        assert daemon.http_url, daemon.stdout()
        assert fetch(daemon.http_url + "/healthz").status in (200, 503)
        assert fetch(daemon.http_url + "/api/imports").status == 401
        assert fetch(daemon.http_url + "/api/imports", {"Authorization": "Bearer t0ken"}).status == 200
        basic = base64.b64encode(b"me:t0ken").decode()
        assert fetch(daemon.http_url + "/", {"Authorization": f"Basic {basic}"}).status == 200
        assert re.search(
            rf" INFO    ingestd\.http: http\.started host=127\.0\.0\.1 port={daemon.http_port} auth=True$",
            daemon.log(),
            re.MULTILINE,
        ), daemon.log()
    finally:
        with contextlib.suppress(RuntimeError):
            daemon.stop(timeout=15)

"""The activity page's feedback parts on a real `ingestd serve`, fed over OpenSSH sftp, read in Chromium."""

from __future__ import annotations

import contextlib
import functools
import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.daemon import Daemon, daemon_env
from tests.fixtures.sshkeys import make_keypair, sftp_batch
from tests.integration.test_activity_page import cells, chromium_dom, row
from tests.integration.test_http_api import fetch
from tests.integration.test_http_daemon import FINAL, wait_for

ROWS = "identity,Phone\nu1@example.com,+14155550100\nu2@example.com,12\nu3@example.com,+14155550101\n"


# The module shares one daemon (the fixture below): its tests run on one xdist worker (scripts/test.sh -n).
pytestmark = pytest.mark.xdist_group("test_activity_page_live")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, dict[str, int]]]:
    root = tmp_path_factory.mktemp("live-feedback")
    daemon = Daemon(root / "data", daemon_env(root / "data"))
    try:
        daemon.start()
        if not daemon.sftp_port or daemon.http_url is None:
            pytest.skip(f"the daemon does not serve SFTP and HTTP yet:\n{daemon.stdout()}")
        private, public = make_keypair(root / "keys")
        daemon.add_key("acme", public)
        upload = root / "upload"
        upload.mkdir()
        (upload / "people.csv").write_text(ROWS)
        manifest = {"fileName": "people.csv", "type": "profile", "clientEmail": "partner@example.com"}
        (upload / "people.manifest").write_text(json.dumps(manifest))
        # The reference page's sample address as it came through: nobody can be told.
        unusable = {"fileName": "people.csv", "type": "profile", "clientEmail": "[email protected]"}
        (upload / "nobody.manifest").write_text(json.dumps({**unusable, "filename": "x"}))

        def imports() -> list[dict[str, Any]]:
            return fetch(daemon.url("/api/imports")).json()["imports"]

        def final(name: str) -> list[dict[str, Any]]:
            return [i for i in imports() if i["manifest_name"] == name and i["status"] in FINAL]

        for name in ("people.csv", "people.manifest", "nobody.manifest"):
            put = sftp_batch(daemon.sftp_port, "acme", private, [f"put {upload / name}"])
            assert put.returncode == 0, put.stderr
            if name.endswith(".manifest"):
                wait_for(functools.partial(final, name), name)
        ids = {item["manifest_name"]: item["id"] for item in imports()}
        yield daemon, ids
    finally:
        with contextlib.suppress(RuntimeError):
            daemon.stop(timeout=15)


def test_a_real_import_shows_its_emails_error_csv_and_timeline_in_chromium(
    live: tuple[Daemon, dict[str, int]], tmp_path: Path
) -> None:
    daemon, ids = live
    assert daemon.http_url
    people, nobody = ids["people.manifest"], ids["nobody.manifest"]
    dom = chromium_dom(daemon.http_url + "/", tmp_path / "chromium")
    found = cells(row(dom, people))
    assert found[4] == "completed with errors", found
    assert found[-1] == "Phone number is not valid (1 row)error CSV (1 row)emailed partner@example.com", found
    assert cells(row(dom, nobody))[-1].endswith("nobody could be emailed"), cells(row(dom, nobody))
    detail = html.unescape(chromium_dom(f"{daemon.http_url}/imports/{people}", tmp_path / "chromium"))
    steps = re.findall(r'<li data-event="(\w+)">', detail)
    assert steps[0] == "queued" and "picked_up" in steps and steps[-1] == "finished", steps
    emails = re.search(r'<table id="emails">(.*?)</table>', detail, re.DOTALL)
    assert emails, detail[-3000:]
    assert "picked up" in emails.group(1) and "completed with errors" in emails.group(1)
    assert "partner@example.com" in emails.group(1)
    link = re.search(r'<a class="download" id="errors-csv" href="([^"]+)"', detail)
    assert link and link.group(1) == f"/imports/{people}/errors.csv"
    got = fetch(daemon.http_url + link.group(1))
    assert got.status == 200 and got.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert got.body == (daemon.data_dir / "jobs" / str(people) / "errors.csv").read_bytes()
    assert got.body.decode().splitlines()[0].endswith(",Failure Description")
    assert "u2@example.com,12," in got.body.decode()
    failed = html.unescape(fetch(f"{daemon.http_url}/imports/{nobody}").text)
    assert "nobody could be emailed: No usable address in the manifest" in failed

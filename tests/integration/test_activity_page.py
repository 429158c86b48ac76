"""The HTML activity log: imports newest first, one import's details, self-refresh while jobs run, in Chromium."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.test_http_api import FINISHED, Served, serving


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    yield from serving(tmp_path)


REFRESH = re.compile(r'<meta http-equiv="refresh" content="\d+">')


def chromium_dom(url: str, profile_dir: Path) -> str:
    """The page's DOM after Chromium has loaded it (headless, no network beyond the URL)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium is not installed (scripts/test.sh installs Debian's chromium package)")
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={profile_dir}",
        "--dump-dom",
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def row(page: str, job_id: int) -> str:
    match = re.search(rf'<tr id="import-{job_id}"[^>]*>(.*?)</tr>', page, re.DOTALL)
    assert match, f"no row for import {job_id} in:\n{page[:3000]}"
    return match.group(1)


def cells(row_html: str) -> list[str]:
    return [
        html.unescape(re.sub(r"<[^>]+>", "", cell)).strip()
        for cell in re.findall(r"<td[^>]*>(.*?)</td>", row_html, re.DOTALL)
    ]


def test_page_lists_imports_newest_first_with_status_counts_duration_and_reason(serve: Callable[..., Served]) -> None:
    served = serve()
    older = served.add_import("acme", "profiles.manifest", "completed_with_errors", **FINISHED)
    newer = served.add_import("globex", "events.manifest", "failed", type="event", error="No data file found")
    page = served.get("/")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    text = page.text
    assert text.index(f'id="import-{newer}"') < text.index(f'id="import-{older}"')
    assert cells(row(text, older)) == [
        str(older), "acme", "profiles.csv", "profile", "completed with errors", "5", "4", "1",
        cells(row(text, older))[8], "12.0 s", "Phone number is not valid (1 row)",
    ]  # fmt: skip
    failed = cells(row(text, newer))
    assert failed[1] == "globex" and failed[4] == "failed" and failed[-1] == "No data file found"
    assert f'href="/imports/{older}"' in row(text, older)
    assert 'class="badge s-failed"' in row(text, newer)
    assert not REFRESH.search(text), "nothing is running: the page must not keep reloading"


def test_page_refreshes_itself_only_while_an_import_is_in_flight(serve: Callable[..., Served]) -> None:
    served = serve()
    served.add_import("acme", "done.manifest", "succeeded", **FINISHED)
    assert not REFRESH.search(served.get("/").text)
    running = served.add_import(
        "acme", "big.manifest", "processing", bytes_total=1000, bytes_done=250, started_at="2026-01-02T03:04:05Z"
    )
    page = served.get("/").text
    assert REFRESH.search(page)
    assert "25%" in row(page, running)
    assert REFRESH.search(served.get(f"/imports/{running}").text)
    # Even a filtered page that shows no running import refreshes, so the new state shows up.
    assert REFRESH.search(served.get("/?status=succeeded").text)


def test_detail_page_shows_everything_about_one_import(serve: Callable[..., Served]) -> None:
    served = serve()
    details = {
        "problems": ["columns.age.dataType: expected one of STRING, INTEGER, FLOAT, BOOLEAN, LONG, found 'NUMBER'"],
        "reasons": [["Phone number is not valid", 3], ["Email is not valid", 1]],
        "duration_ms": 61000,
    }
    job_id = served.add_import(
        "acme", "p.manifest", "failed", error="Incorrect details in manifest file", details=details,
        started_at="2026-01-02T03:04:05Z", finished_at="2026-01-02T03:05:06Z",
    )  # fmt: skip
    page = served.get(f"/imports/{job_id}")
    assert page.status == 200
    text = html.unescape(page.text)
    assert f"Import {job_id}" in text
    assert "Incorrect details in manifest file" in text
    assert "found 'NUMBER'" in text
    assert re.search(r"<td>Phone number is not valid</td><td class=\"num\">3</td>", page.text)
    assert "1 min 01 s" in text
    assert "2026-01-02 03:04:05 UTC" in text
    assert not REFRESH.search(page.text)
    assert served.get(f"/imports/{job_id + 1}").status == 404
    assert served.get("/imports/abc").status == 400


def test_partner_supplied_names_are_escaped(serve: Callable[..., Served]) -> None:
    served = serve()
    job_id = served.add_import(
        "acme", "x.manifest", "failed", file_name="<script>alert(1)</script>.csv", error="<b>x</b>"
    )
    for path in ("/", f"/imports/{job_id}"):
        text = served.get(path).text
        assert "<script>alert(1)" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;.csv" in text
        assert "<b>x</b>" not in text


def test_page_filters_by_account_and_status_and_rejects_bad_ones(serve: Callable[..., Served]) -> None:
    served = serve()
    acme = served.add_import("acme", "a.manifest", "succeeded", **FINISHED)
    globex = served.add_import("globex", "b.manifest", "succeeded", **FINISHED)
    page = served.get("/?account=globex").text
    assert f'id="import-{globex}"' in page and f'id="import-{acme}"' not in page
    assert "No imports match these filters" in served.get("/?status=failed").text
    bad = served.get("/?status=finished")
    assert bad.status == 400
    assert "status: expected one of" in html.unescape(bad.text)
    assert "No imports yet" in serve().get("/").text


def test_chromium_shows_an_imports_row_and_its_details(serve: Callable[..., Served], tmp_path: Path) -> None:
    served = serve()
    job_id = served.add_import("acme", "profiles.manifest", "completed_with_errors", **FINISHED)
    dom = chromium_dom(served.url + "/", tmp_path / "chromium")
    found = cells(row(dom, job_id))
    assert found[1:5] == ["acme", "profiles.csv", "profile", "completed with errors"]
    assert found[-1] == "Phone number is not valid (1 row)"
    detail = chromium_dom(f"{served.url}/imports/{job_id}", tmp_path / "chromium")
    assert "Phone number is not valid" in detail
    assert f"Import {job_id}" in detail

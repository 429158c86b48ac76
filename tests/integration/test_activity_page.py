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
    assert "1 min 1 s" in text
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


TIMELINE = [
    {"at": "2026-01-02T03:04:00Z", "event": "queued", "detail": None},
    {"at": "2026-01-02T03:04:05Z", "event": "picked_up", "detail": None},
    {"at": "2026-01-02T03:04:09Z", "event": "paused", "detail": "sink unreachable"},
    {"at": "2026-01-02T03:04:12Z", "event": "resumed", "detail": None},
    {"at": "2026-01-02T03:04:17Z", "event": "finished", "detail": "completed_with_errors"},
]
NOTIFIED = [
    {"event": "picked_up", "to": ["partner@example.com"], "ops": ["ops@example.org"], "at": "2026-01-02T03:04:05Z"},
    {"event": "completed_with_errors", "to": ["partner@example.com", "contact@example.com"], "ops": [],
     "at": "2026-01-02T03:04:17Z"},
]  # fmt: skip


def feedback_import(served: Served, **extra: object) -> int:
    """A finished import with everything the page's newer parts show: timeline, emails, duplicates, error CSV."""
    details = {**FINISHED["details"], "timeline": TIMELINE, "notified": NOTIFIED}
    job_id = served.add_import(
        "acme", "profiles.manifest", "completed_with_errors", **{**FINISHED, "details": details, "rows_duplicate": 3}
    )
    folder = served.config.jobs_root / str(job_id)
    folder.mkdir(parents=True)
    (folder / "errors.csv").write_bytes(b"identity,Phone,Failure Description\r\nu1,+1,Phone number is not valid\r\n")
    return job_id


def test_page_shows_who_was_emailed_the_error_csv_duplicates_and_the_timeline(serve: Callable[..., Served]) -> None:
    served = serve()
    job_id = feedback_import(served)
    nobody = served.add_import(
        "acme", "bad.manifest", "failed", error="Incorrect details in manifest file",
        details={"notified": [{"event": "failed", "to": [], "ops": [], "nobody": True, "at": "2026-01-02T03:05:00Z",
                               "note": "No usable address in the manifest and no contact address for the account."}]},
    )  # fmt: skip
    listed = cells(row(served.get("/").text, job_id))
    assert listed[6] == "43 already present"  # 4 ingested, 3 of them already there
    assert listed[-1] == (
        "Phone number is not valid (1 row)error CSV (1 row)emailed partner@example.com, contact@example.com"
    )
    assert cells(row(served.get("/").text, nobody))[-1] == "Incorrect details in manifest filenobody could be emailed"
    page = html.unescape(served.get(f"/imports/{job_id}").text)
    assert "5 read, 4 ingested, 1 failed, 3 already present" in page
    assert f'href="/imports/{job_id}/errors.csv"' in page
    emails = re.search(r'<table id="emails">(.*?)</table>', page, re.DOTALL)
    assert emails and "partner@example.com, contact@example.com" in emails.group(1)
    assert "ops copy: ops@example.org" in emails.group(1)
    steps = re.findall(r'<li data-event="(\w+)"><span class="when">([^<]*)</span>', page)
    assert [event for event, _ in steps] == ["queued", "picked_up", "paused", "resumed", "finished"]
    assert steps[2][1] == "2026-01-02 03:04:09 UTC" and "sink unreachable" in page
    failed_page = html.unescape(served.get(f"/imports/{nobody}").text)
    assert "nobody could be emailed: No usable address in the manifest" in failed_page
    # An import from before timelines: its times make one up.
    plain = served.add_import("acme", "old.manifest", "succeeded", **FINISHED)
    old = html.unescape(served.get(f"/imports/{plain}").text)
    assert re.findall(r'<li data-event="(\w+)">', old) == ["queued", "picked_up", "finished"]
    assert "No email recorded for this import" in old and "errors.csv" not in old


def test_error_csv_downloads_as_an_attachment_and_needs_the_token(serve: Callable[..., Served]) -> None:
    served = serve(INGESTD_HTTP__TOKEN="s3cret")
    job_id = feedback_import(served)
    auth = {"Authorization": "Bearer s3cret"}
    assert served.get(f"/imports/{job_id}/errors.csv").status == 401
    got = served.get(f"/imports/{job_id}/errors.csv", **auth)
    assert got.status == 200
    assert got.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert got.headers["Content-Disposition"].startswith(f'attachment; filename="{job_id}-profiles.errors.csv"')
    assert got.body == b"identity,Phone,Failure Description\r\nu1,+1,Phone number is not valid\r\n"
    # Gone after retention, never there, not an import, not an id: each says so.
    (served.config.jobs_root / str(job_id) / "errors.csv").unlink()
    gone = served.get(f"/imports/{job_id}/errors.csv", **auth)
    assert gone.status == 404 and "jobs.retention_days" in html.unescape(gone.text)
    assert served.get(f"/imports/{job_id + 1}/errors.csv", **auth).status == 404
    assert served.get("/imports/x/errors.csv", **auth).status == 400


def test_reason_says_each_text_once(serve: Callable[..., Served]) -> None:
    served = serve()
    same = served.add_import(
        "acme", "a.manifest", "failed", error="File couldn't be read",
        details={"problems": ["File couldn't be read", "File couldn't be read: line 3 has 4 fields, the header 3"]},
    )  # fmt: skip
    prefixed = served.add_import(
        "acme", "b.manifest", "failed", error="File couldn't be read",
        details={"problems": ["File couldn't be read: line 3 has 4 fields, the header 3"]},
    )  # fmt: skip
    page = served.get("/").text
    assert cells(row(page, same))[-1] == "File couldn't be read: line 3 has 4 fields, the header 3"
    assert cells(row(page, prefixed))[-1] == "File couldn't be read: line 3 has 4 fields, the header 3"
    detail = html.unescape(served.get(f"/imports/{same}").text)
    assert detail.count("File couldn't be read") == 2  # the reason, and the one problem that adds to it


def test_chromium_shows_the_emails_error_csv_timeline_and_duplicates(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    served = serve()
    job_id = feedback_import(served)
    cancelled = served.add_import("acme", "c.manifest", "cancelled")
    dom = chromium_dom(served.url + "/", tmp_path / "chromium")
    found = cells(row(dom, job_id))
    assert found[6] == "43 already present"
    assert "error CSV (1 row)" in found[-1] and "emailed partner@example.com" in found[-1]
    assert 'class="badge s-cancelled"' in row(dom, cancelled)
    detail = html.unescape(chromium_dom(f"{served.url}/imports/{job_id}", tmp_path / "chromium"))
    assert re.findall(r'<li data-event="(\w+)">', detail) == ["queued", "picked_up", "paused", "resumed", "finished"]
    assert f'href="/imports/{job_id}/errors.csv"' in detail
    assert "3 already present" in detail and "ops copy: ops@example.org" in detail

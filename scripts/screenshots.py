"""Screenshots of the activity log and the emails at desktop and phone width, for the guides.

    python3 scripts/screenshots.py [docs/screenshots]

Sample imports go into a throw-away state database, the HTTP service serves them on a free port, and
headless Chromium (Debian's `chromium` package) takes each picture; the emails are docs/emails/*.html.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.config import load_config  # noqa: E402
from daemon.http.app import HTTPService  # noqa: E402
from daemon.store import StateDB  # noqa: E402
from daemon.store.jobs import JobStore  # noqa: E402

WIDTHS = {"1280": 1280, "390": 390}
# The rendered emails (golden files, so always the current templates) worth a picture.
EMAILS = {
    "completed_with_errors": ROOT / "docs" / "emails" / "completed_with_errors.html",
    "failed_manifest": ROOT / "docs" / "emails" / "failed_manifest.html",
    "succeeded_dry_run": ROOT / "tests" / "unit" / "golden" / "succeeded_dry_run.html",
    "reimport_duplicates": ROOT / "tests" / "unit" / "golden" / "completed_with_errors_reimport.html",
}
ERROR_CSV = b"identity,Phone,Failure Description\r\njohn@example.com,+91887,Phone: Phone number is not valid\r\n"


def _minutes_ago(minutes: int) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _at(minute: int, second: int = 0) -> str:
    return f"2026-11-22T07:{minute:02d}:{second:02d}Z"


SAMPLES: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "globex",
        "profiles.manifest",
        "succeeded",
        {
            "type": "profile", "rows_total": 200_000, "rows_ingested": 200_000, "rows_failed": 0,
            "started_at": _at(1, 2), "finished_at": _at(2, 40),
            "details": {"duration_ms": 98_000, "notified": [
                {"event": "succeeded", "to": ["crm@globex.example"], "ops": ["data-ops@example.com"], "at": _at(2, 40)},
            ]},
        },
    ),
    (
        "initech",
        "orders.manifest",
        "failed",
        {
            "file_name": "", "error": "Incorrect details in manifest file", "finished_at": _at(5, 1),
            "details": {
                "problems": ["unknown key 'filename' — did you mean 'fileName'?",
                             "clientEmail: '[email protected]' is not a valid email address"],
                "notified": [{"event": "failed", "to": [], "ops": ["data-ops@example.com"], "nobody": True,
                              "at": _at(5, 1), "note": "No usable address in the manifest and no contact address "
                              "for the account (ingestd accounts set)."}],
            },
        },
    ),
    ("hooli", "clicks.manifest", "waiting_for_data", {"type": "event", "file_name": "clicks.csv"}),
    ("umbrella", "test.manifest", "cancelled", {"type": "event", "file_name": "test.csv", "finished_at": _at(9)}),
    (
        "acme",
        "events.manifest",
        "completed_with_errors",
        {
            "type": "event", "rows_total": 50_000, "rows_ingested": 48_796, "rows_failed": 1_204,
            "rows_duplicate": 48_000, "created_at": _at(30), "started_at": _at(30, 2), "finished_at": _at(41, 14),
            "details": {
                "duration_ms": 672_000, "rows_duplicate": 48_000,
                "reasons": [["Phone: Phone number is not valid", 1_100],
                            ["At least one of identity / fbId / gpId / objectId is mandatory under 1024 chars to "
                             "identify the user", 100], ["Event name is mandatory", 4]],
                "timeline": [
                    {"at": _at(30), "event": "queued", "detail": None},
                    {"at": _at(30, 2), "event": "picked_up", "detail": None},
                    {"at": _at(33, 10), "event": "paused", "detail": "sink unreachable: database is locked"},
                    {"at": _at(33, 41), "event": "resumed", "detail": "from the checkpoint at row 20,000"},
                    {"at": _at(41, 14), "event": "finished", "detail": "completed with errors"},
                ],
                "notified": [
                    {"event": "picked_up", "to": ["partner@acme.example"], "ops": ["data-ops@example.com"],
                     "at": _at(30, 2)},
                    {"event": "completed_with_errors", "to": ["partner@acme.example", "analytics@acme.example"],
                     "ops": ["data-ops@example.com"], "at": _at(41, 14)},
                ],
            },
        },
    ),
    (
        "acme",
        "big.manifest",
        "processing",
        {"type": "event", "file_name": "big.csv", "rows_total": 812_000, "rows_ingested": 811_950,
         "rows_failed": 50, "bytes_total": 100, "bytes_done": 41, "started_at": _minutes_ago(3), "created_at": _minutes_ago(4)},
    ),
]  # fmt: skip


def add_samples(db: StateDB, jobs_root: Path) -> int:
    """The sample imports; returns the id of the one the detail screenshot shows."""
    store = JobStore(db)
    shown = 0
    columns = {row[1] for row in db.query("PRAGMA table_info(jobs)")}
    for index, (account, manifest, status, values) in enumerate(SAMPLES):
        job_id = store.create(account, manifest)
        uploaded = _at(min(index * 6, 30))
        row = {"status": status, "file_name": manifest.replace(".manifest", ".csv"), "created_at": uploaded, **values}
        row = {name: value for name, value in row.items() if name in columns}
        row["details"] = json.dumps(row.get("details") or {})
        with db.transaction() as conn:
            assignments = ", ".join(f"{name} = ?" for name in row)
            conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*row.values(), job_id))
        if status == "completed_with_errors":
            shown = job_id
            (jobs_root / str(job_id)).mkdir(parents=True, exist_ok=True)
            (jobs_root / str(job_id) / "errors.csv").write_bytes(ERROR_CSV)
    return shown


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise SystemExit("chromium is not installed: apt-get install -y chromium")
    return found


def shoot(url: str, target: Path, width: int, height: int, profile: Path) -> None:
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
        "--force-device-scale-factor=1", f"--user-data-dir={profile}", f"--window-size={width},{height}",
        f"--screenshot={target}", url,
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    print(target)


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "data"
        config = load_config(environ={"INGESTD_DATA_DIR": str(data), "INGESTD_HTTP__PORT": "0"})
        db = StateDB(config.state_db)
        detail_id = add_samples(db, config.jobs_root)
        service = HTTPService(config, db)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(service.start(), loop).result(30)
        base = f"http://127.0.0.1:{service.port}"
        profile = Path(work) / "chromium"
        try:
            for name, width in WIDTHS.items():
                phone = width < 600
                shoot(f"{base}/", folder / f"activity-{name}.png", width, 1500 if phone else 720, profile)
                shoot(
                    f"{base}/imports/{detail_id}",
                    folder / f"detail-{name}.png",
                    width,
                    1750 if phone else 1000,
                    profile,
                )
            shoot(f"{base}/", folder / "activity-800.png", 800, 620, profile)
            for email, source in EMAILS.items():
                for name, width in WIDTHS.items():
                    height = 1500 if width < 600 else 1100
                    shoot(source.as_uri(), folder / f"email-{email}-{name}.png", width, height, profile)
        finally:
            asyncio.run_coroutine_threadsafe(service.stop(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            db.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots")

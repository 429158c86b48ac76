"""`ingestd imports list|show|cancel|retry`: imports from the state database, as a table or as JSON."""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from daemon.commands import open_state
from daemon.config import Config
from daemon.errors import NotFoundError, UsageError
from daemon.jobs import messages
from daemon.jobs.notices import build_payload
from daemon.jobs.paths import job_dir
from daemon.jobs.status import FINAL, PENDING, STATUSES
from daemon.store.db import MAX_INTEGER
from daemon.store.jobs import JobStore
from daemon.text import json_text, printable
from daemon.watch.watcher import ACCOUNT

T = TypeVar("T")


def _store(config: Config) -> JobStore | None:
    db = open_state(config, create=False)  # no state database means no imports yet
    return JobStore(db) if db is not None else None


def _read(config: Config, read: Callable[[JobStore], T], empty: T) -> T:
    store = _store(config)
    if store is None:
        return empty
    try:
        return read(store)
    except sqlite3.Error as exc:
        raise UsageError(f"state database {config.state_db}: cannot be read ({exc})") from None


def list_imports(args: argparse.Namespace, config: Config) -> int:
    if args.account is not None and not ACCOUNT.match(args.account):
        raise UsageError(f"account {args.account!r}: expected letters, digits, '.', '_' or '-' (at most 64)")
    if args.status is not None and args.status not in STATUSES:
        raise UsageError(f"status {args.status!r}: expected one of {', '.join(STATUSES)}")
    if args.limit < 1:
        raise UsageError(f"--limit {args.limit}: expected a positive number")
    imports: list[dict[str, Any]] = _read(
        config, lambda store: store.list_imports(account=args.account, status=args.status, limit=args.limit), []
    )
    if args.json:
        print(json_text(imports, indent=2))
        return 0
    if not imports:
        print("no imports")
        return 0
    print(_table(imports))
    return 0


def _job_id(value: Any) -> int:
    text = str(value).strip()
    # ASCII digits only ("²".isdigit() is true), and no longer than SQLite's largest INTEGER.
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or not 1 <= int(text) <= MAX_INTEGER:
        raise UsageError(
            f"job id {printable(str(value))[:40]!r}: expected a positive whole number, as listed by 'ingestd imports list'"
        )
    return int(text)


def show(args: argparse.Namespace, config: Config) -> int:
    job_id = _job_id(args.job_id)
    job = _read(config, lambda store: store.get_import(job_id), None)
    if job is None:
        raise NotFoundError(f"no import with id {job_id}")
    if args.json:
        print(json_text(job, indent=2))
        return 0
    print(_detail(job))
    return 0


def _existing(config: Config, job_id: int) -> tuple[JobStore, dict[str, Any]]:
    store = _store(config)
    try:
        job = store.get_import(job_id) if store is not None else None
    except sqlite3.Error as exc:
        raise UsageError(f"state database {config.state_db}: cannot be read ({exc})") from None
    if store is None or job is None:
        raise NotFoundError(f"no import with id {job_id}")
    return store, job


def cancel(args: argparse.Namespace, config: Config) -> int:
    """Cancel an import not yet finished: one not picked up ends `cancelled` now; a processing one stops at
    its next batch boundary (the daemon's worker), keeping the rows written so far."""
    job_id = _job_id(args.job_id)
    store, job = _existing(config, job_id)
    reason = messages.cancelled_by_operator()
    if job["status"] in FINAL:
        raise UsageError(f"import {job_id} has already finished ({job['status']}): there is nothing to cancel")
    try:
        if job["status"] in PENDING:
            _take_manifest(config, job)  # first: a rescan must not queue the manifest again
            if store.finish(job_id, "cancelled", error=reason, from_statuses=PENDING):
                _notify_cancelled(config, store, job_id)
                return _done(args, store, job_id, f"import {job_id} cancelled")
        # Picked up (now or meanwhile): the worker stops it at its next batch boundary.
        if store.request_cancel(job_id, reason):
            return _done(
                args,
                store,
                job_id,
                f"import {job_id} is processing: it stops at its next batch boundary and ends cancelled"
                " (rows already written stay)",
            )
    except sqlite3.Error as exc:
        raise UsageError(f"state database {config.state_db}: cannot be written ({exc})") from None
    job = store.get_import(job_id) or job
    if job["status"] == "cancelled":  # the daemon settled it the same moment (it saw the manifest leave)
        return _done(args, store, job_id, f"import {job_id} cancelled")
    raise UsageError(f"import {job_id} has already finished ({job['status']}): there is nothing to cancel")


def _take_manifest(config: Config, job: dict[str, Any]) -> None:
    """Move a waiting job's manifest out of the partner's folder into the job's (where a retry finds it)."""
    if job["details"].get("raw_name"):
        return  # not UTF-8: the daemon's queue moves it by its real bytes
    source = config.drop_root / job["account"] / job["manifest_name"]
    folder = job_dir(config, job["id"])
    if os.path.lexists(source) and not os.path.lexists(folder / job["manifest_name"]):
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(source, folder / job["manifest_name"])


def _notify_cancelled(config: Config, store: JobStore, job_id: int) -> None:
    """Queue the `cancelled` email in the outbox, which the daemon delivers; a failure here is only reported."""
    try:
        from notifier.service import Notifier

        job = store.get_import(job_id) or {"details": {}}
        emails = list(job["details"].get("client_emails") or [])
        payload = build_payload(store, job_id, client_emails=emails, problems=[job.get("error") or ""])
        Notifier(config, store.db).notify("cancelled", payload)
    except Exception as exc:  # the cancel itself is recorded: say what was not sent, and go on
        print(f"ingestd: warning: the cancellation email of import {job_id} was not queued ({exc})", file=sys.stderr)


def retry(args: argparse.Namespace, config: Config) -> int:
    """Queue a finished import's files again as a new import, last in its account's order."""
    job_id = _job_id(args.job_id)
    store, job = _existing(config, job_id)
    if job["status"] not in FINAL:
        raise UsageError(f"import {job_id} is still {job['status']}: only a finished import can be retried")
    folder = job_dir(config, job_id)
    if not os.path.lexists(folder / job["manifest_name"]):
        raise NotFoundError(
            f"import {job_id}: its files are no longer kept (removed after jobs.retention_days, or moved to a"
            " later retry)"
        )
    # The data file first, the manifest last: as a partner uploads them.
    names = [name for name in (job["file_name"], job["manifest_name"]) if name]
    moved: list[tuple[str, str]] = []

    def move_files(new_id: int) -> None:
        target = job_dir(config, new_id)
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            if os.path.lexists(folder / name) and not os.path.lexists(target / name):
                os.replace(folder / name, target / name)
                moved.append((str(target / name), str(folder / name)))

    try:
        new_id = store.retry(job_id, move_files)
    except sqlite3.IntegrityError:
        _move_back(moved)
        raise UsageError(
            f"import {job_id}: a manifest named {job['manifest_name']} is already waiting in the account's queue"
        ) from None
    except (sqlite3.Error, OSError) as exc:
        _move_back(moved)
        raise UsageError(f"import {job_id} could not be queued again ({exc})") from None
    if new_id is None:  # finished a moment ago? then it is not final: say what it is
        _move_back(moved)
        raise UsageError(f"import {job_id} is not finished: only a finished import can be retried")
    return _done(args, store, new_id, f"import {job_id} queued again as import {new_id}")


def _move_back(moved: list[tuple[str, str]]) -> None:
    for now, before in reversed(moved):
        with contextlib.suppress(OSError):
            os.replace(now, before)


def _done(args: argparse.Namespace, store: JobStore, job_id: int, text: str) -> int:
    if getattr(args, "json", False):
        print(json_text(store.get_import(job_id), indent=2))
    else:
        print(printable(text))
    return 0


def _rows(job: dict[str, Any]) -> str:
    return f"{job['rows_ingested']}/{job['rows_total']}" + (
        f" ({job['rows_failed']} failed)" if job["rows_failed"] else ""
    )


def _table(imports: list[dict[str, Any]]) -> str:
    header = ["ID", "ACCOUNT", "STATUS", "TYPE", "FILE", "ROWS", "CREATED"]
    rows = [
        [
            str(job["id"]),
            job["account"],
            job["status"] + (" (paused)" if job["details"].get("paused") else ""),
            job["type"] or "-",
            job["file_name"] or job["manifest_name"],
            _rows(job),
            job["created_at"],
        ]
        for job in imports
    ]
    rows = [[printable(cell) for cell in line] for line in rows]
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *rows]
    )


def _detail(job: dict[str, Any]) -> str:
    details = job["details"]
    fields = [
        ("id", job["id"]),
        ("account", job["account"]),
        ("status", job["status"]),
        ("manifest", job["manifest_name"]),
        ("file", job["file_name"] or "-"),
        ("type", job["type"] or "-"),
        (
            "rows",
            f"{job['rows_total']} read, {job['rows_ingested']} ingested, {job['rows_failed']} failed"
            + (f", {job['rows_duplicate']} already present" if job.get("rows_duplicate") else ""),
        ),
        ("created", job["created_at"]),
        ("started", job["started_at"] or "-"),
        ("finished", job["finished_at"] or "-"),
    ]
    if details.get("duration_ms") is not None:
        fields.append(("duration", f"{details['duration_ms'] / 1000:.1f}s"))
    if job["error"]:
        fields.append(("error", job["error"]))
    if details.get("paused"):
        fields.append(("paused", details["paused"]))
    if job.get("dry_run"):
        fields.append(("dry run", "yes: validated and reported, nothing stored"))
    if job.get("cancel_requested") and job["status"] == "processing":
        fields.append(("cancelling", job["cancel_requested"]))
    if details.get("error_csv"):
        fields.append(("error csv", details["error_csv"]))
    if details.get("report"):
        fields.append(("report", details["report"]))
    # Partner text (names, reasons quoting cells) is escaped: it must not drive the operator's terminal.
    lines = [f"{name + ':':<11}{printable(str(value))}" for name, value in fields]
    if details.get("problems"):
        lines.append("problems:")
        lines.extend(f"  - {printable(str(problem))}" for problem in details["problems"])
    if details.get("reasons"):
        lines.append("reasons:")
        lines.extend(f"  {count:>8}  {printable(str(message))}" for message, count in details["reasons"])
    if details.get("undelivered"):  # emails the receiving server refused for good (5xx)
        lines.append("undelivered emails:")
        lines.extend(
            printable(f"  - {item.get('event')} to {item.get('to')}: {item.get('error')}")
            for item in details["undelivered"]
        )
    return "\n".join(lines)

"""`ingestd imports list|show`: imports from the state database, as a table or as JSON."""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from daemon.commands import open_state
from daemon.config import Config
from daemon.errors import NotFoundError, UsageError
from daemon.store.jobs import STATUSES, JobStore
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
    imports = _read(
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


def show(args: argparse.Namespace, config: Config) -> int:
    text = str(args.job_id).strip()
    if not text.isdigit() or int(text) < 1:
        raise UsageError(
            f"job id {args.job_id!r}: expected a positive whole number, as listed by 'ingestd imports list'"
        )
    job = _read(config, lambda store: store.get_import(int(text)), None)
    if job is None:
        raise NotFoundError(f"no import with id {int(text)}")
    if args.json:
        print(json_text(job, indent=2))
        return 0
    print(_detail(job))
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
        ("rows", f"{job['rows_total']} read, {job['rows_ingested']} ingested, {job['rows_failed']} failed"),
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
    if details.get("error_csv"):
        fields.append(("error csv", details["error_csv"]))
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

"""`ingestd exports create|list|show|cancel|run`: export requests in the state database; the daemon runs them."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from typing import Any

from daemon.commands import open_state, print_table
from daemon.config import Config
from daemon.errors import NotFoundError, UsageError
from daemon.exports import texts
from daemon.exports.model import ExportSpec, make_spec
from daemon.exports.selection import SelectionError, open_selection
from daemon.exports.store import ExportStore
from daemon.store.db import MAX_INTEGER
from daemon.text import json_text, printable


def _store(config: Config) -> ExportStore:
    db = open_state(config, create=True)
    assert db is not None
    return ExportStore(db)


def create_export(config: Config, spec: ExportSpec) -> tuple[int, list[str]]:
    """Store a checked request; (its id, warnings). A recurring export starts from where the sink stands now."""
    selection = open_selection(config)
    warnings = []
    try:
        # One-time: every row that arrived before its run; recurring: what arrives from now on.
        watermark = selection.watermark() if spec.type == "events" and spec.recurring else {"seq": 0}
        if spec.events:
            stored = selection.stored_names(spec.account, spec.events)
            unknown = [name for name in spec.events if name not in stored]
            if unknown:
                warnings.append(
                    texts.UNKNOWN_EVENTS.format(names=", ".join(repr(n) for n in unknown), account=spec.account)
                )
    except SelectionError as exc:
        raise UsageError(str(exc)) from None
    finally:
        selection.close()
    return _store(config).create(spec, watermark), warnings


def create(args: argparse.Namespace, config: Config) -> int:
    spec = make_spec(
        args.account,
        args.type,
        events=args.events,
        format=args.format,
        days=args.days,
        since=args.since,
        every=args.every,
        destination=args.to,
    )
    export_id, warnings = create_export(config, spec)
    for warning in warnings:
        print(f"ingestd: note: {printable(warning)}", file=sys.stderr)
    store = _store(config)
    created = store.get(export_id)
    assert created is not None  # written just above
    shown = store.describe(created)
    if args.json:
        print(json_text(shown, indent=2))
    else:
        when = "every " + shown["every"] if shown["recurring"] else "once, as soon as the daemon picks it up"
        print(
            f"export {export_id} created: {spec.type} of {spec.account} as {spec.format} to {spec.destination}, {when}"
        )
    return 0


def _get(config: Config, export_id: str) -> tuple[ExportStore, sqlite3.Row]:
    text = str(export_id)
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > MAX_INTEGER:
        raise UsageError(f"export id {printable(str(export_id))!r}: expected a number")
    if not config.state.url and not config.state_db.exists():
        raise NotFoundError(texts.NO_SUCH_EXPORT.format(value=export_id))
    store = _store(config)
    row = store.get(int(export_id))
    if row is None:
        raise NotFoundError(texts.NO_SUCH_EXPORT.format(value=export_id))
    return store, row


def list_exports(args: argparse.Namespace, config: Config) -> int:
    db = open_state(config, create=False)
    store = ExportStore(db) if db is not None else None
    shown: list[dict[str, Any]] = (
        [store.describe(row, with_runs=False) for row in store.list(account=args.account)] if store else []
    )
    if args.json:
        print(json_text(shown, indent=2))
        return 0
    if not shown:
        print("no exports")
        return 0
    header = ("ID", "ACCOUNT", "TYPE", "FORMAT", "SCHEDULE", "TO", "STATUS", "ROWS", "LAST RUN")
    rows = [
        (
            str(item["id"]),
            printable(item["account"]),
            item["type"] + (f" ({len(item['events'])} names)" if item["events"] else ""),
            item["format"],
            f"every {item['every']}" if item["recurring"] else "once",
            printable(item["destination"]),
            item["status"],
            str(item["rows_exported"]),
            (item["last_run"] or {}).get("finished_at") or "-",
        )
        for item in shown
    ]
    print_table(header, rows)
    return 0


def show(args: argparse.Namespace, config: Config) -> int:
    store, row = _get(config, args.export_id)
    shown = store.describe(row)
    if args.json:
        print(json_text(shown, indent=2))
        return 0
    for key in ("id", "account", "type", "format", "destination", "status", "created_at", "next_run_at", "error"):
        value = shown[key]
        if value is not None:
            print(f"{key + ':':13} {printable(str(value))}")
    if shown["events"]:
        print(f"{'events:':13} {printable(', '.join(shown['events']))}")
    print(f"{'schedule:':13} {'every ' + shown['every'] if shown['recurring'] else 'once'}")
    if shown["since"]:
        print(f"{'since:':13} {shown['since']}")
    for run in shown["runs"]:
        print(f"run {run['id']} ({run['run_ts']}): {run['status']}, {run['rows']} rows, {run['bytes']} bytes")
        for line in (run["note"], run["error"]):
            if line:
                print(f"  {printable(line)}")
        for item in run["files"]:
            print(f"  {printable(item['location'])}  {item['rows']} rows  {item['bytes']} bytes")
    return 0


def cancel(args: argparse.Namespace, config: Config) -> int:
    store, row = _get(config, args.export_id)
    if not store.cancel(row["id"]):
        raise UsageError(texts.ALREADY_FINISHED.format(value=row["id"], status=row["status"]))
    print(f"export {row['id']} cancelled")
    return 0


def run_now(args: argparse.Namespace, config: Config) -> int:
    store, row = _get(config, args.export_id)
    if not store.run_now(row["id"]):
        raise UsageError(texts.ALREADY_FINISHED.format(value=row["id"], status=row["status"]))
    print(f"export {row['id']}: its next run is due now")
    return 0

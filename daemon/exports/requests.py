"""A partner's export request: `put request.export` (a JSON object with `type`, optional `events`, `format`,
`days`, `clientEmail`) in the SFTP root becomes a one-time export to the account's exports/ folder.

The exports component scans the drop folders for `*.export` files at each poll (so requests that arrived while the
daemon was down, or were placed by other means, are found too). An accepted request file is moved out of the
partner's folder; a refused one is too, and `exports/<name>.error.txt` says why in one line.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.errors import UsageError
from daemon.exports import texts
from daemon.exports.destinations import exports_folder
from daemon.exports.model import ExportSpec, make_spec
from daemon.logs import event
from daemon.store.accounts import normalize_address
from daemon.store.keys import ACCOUNT_RE

log = logging.getLogger("ingestd.exports")
SUFFIX = ".export"
KEYS = ("type", "events", "format", "days", "clientEmail")
MAX_BYTES = 64 * 1024
MIN_AGE = 1.0  # seconds: a file copied in by other means than SFTP may still be growing
MAX_PENDING = 5  # one-time exports an account's requests may have waiting at once
TOO_MANY = "the account already has {count} requested exports waiting; try again when they are done"


def request_of(drop_root: Path, path: Path) -> str | None:
    """The account when `path` is a request file directly in an account's SFTP root."""
    if path.parent.parent != drop_root or not ACCOUNT_RE.match(path.parent.name):
        return None
    if path.name.startswith(".") or not path.name.endswith(SUFFIX) or len(path.name) <= len(SUFFIX):
        return None
    return path.parent.name


def parse_request(account: str, data: bytes, max_recipients: int = 10) -> ExportSpec:
    """The request's checked export; UsageError with the partner-facing reason when it cannot be used."""
    if len(data) > MAX_BYTES:
        raise UsageError(texts.REQUEST_TOO_BIG)
    try:
        request = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(texts.REQUEST_NOT_JSON.format(reason=str(exc).split(":")[0])) from None
    if not isinstance(request, dict):
        raise UsageError(texts.REQUEST_NOT_JSON.format(reason=f"found a {type(request).__name__}"))
    unknown = [key for key in request if key not in KEYS]
    if unknown:
        raise UsageError(texts.REQUEST_UNKNOWN_KEY.format(key=unknown[0]))
    events = request.get("events")
    if isinstance(events, str):
        events = [events]
    if events is not None and not (isinstance(events, list) and all(isinstance(e, str) for e in events)):
        raise UsageError(texts.REQUEST_BAD.format(reason="events: expected a list of event names"))
    emails = _emails(request.get("clientEmail"), max_recipients)
    try:
        return make_spec(
            account,
            str(request.get("type", "")),
            events=events,
            format=request.get("format"),
            days=request.get("days") if request.get("type") != "profiles" else None,
            destination="sftp",
            requested_by="sftp",
            emails=emails,
        )
    except UsageError as exc:
        raise UsageError(texts.REQUEST_BAD.format(reason=str(exc))) from None


def _emails(value: Any, limit: int) -> list[str]:
    if value is None or value == "":
        return []
    items = [part.strip() for part in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise UsageError(texts.REQUEST_BAD.format(reason="clientEmail: expected an address or a list of them"))
    items = [item for item in items if item]
    if len(items) > limit:
        raise UsageError(texts.REQUEST_BAD.format(reason=f"clientEmail: at most {limit} addresses"))
    found = []
    for item in items:
        try:
            found.append(normalize_address(item))
        except ValueError as exc:
            raise UsageError(texts.REQUEST_BAD.format(reason=f"clientEmail {item!r}: {exc}")) from None
    return found


def scan(config: Config, accept: Any, pending: Any, now: float | None = None) -> int:
    """Handle every request file in the drop folders; `accept(spec) -> id`, `pending(account) -> count`."""
    now = time.time() if now is None else now
    handled = 0
    try:
        accounts = [entry for entry in os.scandir(config.drop_root) if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return 0
    for account_dir in accounts:
        try:
            entries = [e for e in os.scandir(account_dir.path) if e.name.endswith(SUFFIX)]
        except OSError:
            continue
        for entry in entries:
            path = Path(entry.path)
            account = request_of(config.drop_root, path)
            if account is None or not entry.is_file(follow_symlinks=False):
                continue
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime < MIN_AGE:
                    continue
                data = path.read_bytes()[: MAX_BYTES + 1]
            except OSError:
                continue
            handled += 1
            _handle(config, account, path, data, accept, pending)
    return handled


def _handle(config: Config, account: str, path: Path, data: bytes, accept: Any, pending: Any) -> None:
    keep = config.exports_staging / "requests"
    keep.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    try:
        spec = parse_request(account, data, config.notify.max_recipients)
        waiting = pending(account)
        if waiting >= MAX_PENDING:
            raise UsageError(texts.REQUEST_BAD.format(reason=TOO_MANY.format(count=waiting)))
    except UsageError as exc:
        reason = str(exc)
        folder = exports_folder(config, account)
        folder.mkdir(parents=True, exist_ok=True)
        reply = folder / f"{path.name}.error.txt"
        temp = folder / f".{reply.name}.part"
        temp.write_text(reason + "\n", encoding="utf-8")
        os.replace(temp, reply)
        os.replace(path, keep / f"{stamp}-refused-{account}-{path.name}")
        event(log, "export.request_refused", logging.WARNING, account=account, file=path.name, reason=reason)
        return
    export_id = accept(spec)
    os.replace(path, keep / f"{stamp}-export{export_id}-{account}-{path.name}")
    event(log, "export.requested", account=account, file=path.name, export_id=export_id)

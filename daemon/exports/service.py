"""The exports component of `ingestd serve`: finds due exports, runs them one at a time in a worker thread."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from typing import Any

from daemon.config import Config
from daemon.exports import requests, texts
from daemon.exports.runner import Outcome, Run, Stopped
from daemon.exports.selection import open_selection
from daemon.exports.store import ExportStore
from daemon.logs import event
from daemon.metrics import EXPORT_BYTES, EXPORT_ROWS, EXPORTS_FINISHED
from daemon.store import StateDB

log = logging.getLogger("ingestd.exports")


class ExportService:
    """Polls `exports.poll_interval` for due runs; a stop lets the running batch end and leaves the run to be
    attempted again at the next start (as after a crash)."""

    def __init__(self, config: Config, db: StateDB, notifier: Any = None) -> None:
        self.config = config
        self.store = ExportStore(db)
        self.notifier = notifier
        self._stopping = threading.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="exports")

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def banner(self) -> list[str]:
        return [f"  exports chunks of at most {self.config.exports.chunk_size} bytes"]

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        resume = True  # runs this daemon left running when it stopped or crashed, once at start
        while not self._stopping.is_set():
            try:
                await asyncio.to_thread(self._requests)
                due = await asyncio.to_thread(self.store.due, None, resume)
                resume = False
                for export in due:
                    if self._stopping.is_set():
                        break
                    await asyncio.to_thread(self.run_one, export["id"])
            except Exception:
                log.exception("export scheduling failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.exports.poll_interval)

    def _requests(self) -> None:
        """Partners' `*.export` files become one-time exports (or a one-line reason in exports/)."""
        from daemon.commands.exports import create_export

        requests.scan(self.config, lambda spec: create_export(self.config, spec)[0], self.store.pending_requests)

    def run_one(self, export_id: int) -> Outcome | None:
        """Run the export's due (or interrupted) run to its end, in the calling thread."""
        export = self.store.get(export_id)
        if export is None or export["status"] in ("done", "failed", "cancelled"):
            return None
        selection = open_selection(self.config)
        try:
            interrupted = self.store.has_unfinished_run(export_id)
            # A recurring profiles export takes the profiles changed since its last run, up to where they stand now.
            changes = export["type"] == "profiles" and bool(export["every_s"])
            if (export["type"] == "events" or changes) and not interrupted:
                try:
                    high = selection.profiles_watermark(export["account"]) if changes else selection.watermark()
                except Exception as exc:  # the sink is down: this period's run fails, the next one covers it
                    high = json.loads(export["watermark"])
                    record = self.store.open_run(export, high)
                    if record is None:
                        return None
                    self.store.finish_run(export, record, "failed", error=str(exc))
                    event(log, "export.failed", logging.WARNING, export_id=export_id, reason=str(exc))
                    return Outcome("failed", error=str(exc))
            else:
                high = json.loads(export["watermark"])
            record = self.store.open_run(export, high)
            if record is None:  # another node claimed it first
                return None
            event(
                log,
                "export.started",
                export_id=export_id,
                run_id=record["id"],
                account=export["account"],
                attempt=record["attempts"],
            )
            run = Run(self.config, self.store, selection, export, record, self._stopping)
            try:
                outcome = run.execute()
            except Stopped:
                event(log, "export.paused", export_id=export_id, run_id=record["id"])
                return None
            note = outcome.note
            if record["attempts"] > 1:
                note = f"{note}; {texts.INTERRUPTED}" if note else texts.INTERRUPTED
            self.store.finish_run(export, record, outcome.status, note=note, error=outcome.error)
            EXPORTS_FINISHED.labels(outcome.status).inc()
            EXPORT_ROWS.labels(export["type"], export["format"]).inc(outcome.rows)
            EXPORT_BYTES.labels(export["format"]).inc(outcome.bytes)
            level = logging.WARNING if outcome.status == "failed" else logging.INFO
            event(
                log,
                f"export.{outcome.status}",
                level,
                export_id=export_id,
                run_id=record["id"],
                rows=outcome.rows,
                bytes=outcome.bytes,
                files=len(outcome.files),
                reason=outcome.error or note or "",
            )
            self._notify(export_id, record["id"], outcome)
            return outcome
        finally:
            selection.close()

    def _notify(self, export_id: int, run_id: int, outcome: Outcome) -> None:
        if self.notifier is None or outcome.status not in ("done", "failed"):
            return
        from notifier.exports import queue_export_notice

        try:
            export = self.store.get(export_id)
            if export is None:
                return
            shown = self.store.describe(export)
            run = next(item for item in shown["runs"] if item["id"] == run_id)
            queue_export_notice(self.notifier, outcome.status, shown, run)
        except Exception:
            log.exception("export %s: could not queue its notification", export_id)

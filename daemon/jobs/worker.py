"""One import from pickup to a final status: validate in a thread, sink each batch, checkpoint, report."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import polars as pl

from daemon import metrics
from daemon.config import Config
from daemon.errors import JobFailed, RetryableError
from daemon.jobs import messages
from daemon.jobs.checkpoints import Checkpoint, ErrorFile
from daemon.jobs.files import NotRegular, lstat_regular, pause_reason
from daemon.jobs.queue import Ready
from daemon.logs import event
from daemon.store.jobs import JobStore
from daemon.text import safe

# Imported with the daemon, not at the first job: polars and pyarrow take a moment to load.
from manifests.validate import Batch, FileError, validate_csv

log = logging.getLogger("ingestd.jobs")

ERRORS_FILE = "errors.csv"
MAX_SINK_RETRY_DELAY = 30.0
MAX_NAME_BYTES = 255  # NAME_MAX of the usual file systems

Notify = Callable[..., Any]  # notify(kind, job_id, **extra) -> None, synchronous (called in a thread)


class Interrupted(Exception):
    """The service is stopping: leave the job `processing`, it resumes from its checkpoint."""


_END = object()


class Validated:
    """Validation in its own thread, running ahead of the sink by up to `ahead` batches.

    `take(rows)` waits for the next validated batch and joins to it whatever else is ready, up to `rows`
    rows: one sink write and one checkpoint. When the sink is the slower side, writes grow to about
    `rows` rows, and fewer, larger commits cost far less than many small ones (a commit rewrites every
    index page it touched); when validation is slower, the sink gets each batch as soon as it is ready.
    An error from the file midway is raised only after the rows before it were handed on."""

    def __init__(self, batches: Generator[Batch, None, None], ahead: int) -> None:
        self._batches = batches
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, ahead))
        self._held: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="ingestd-validate", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            for batch in self._batches:
                if not self._put(batch):
                    return
            self._put(_END)
        except BaseException as exc:  # a FileError, or anything else: raised to the worker in row order
            self._put(exc)
        finally:
            self._batches.close()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, wait: bool) -> Any:
        while not self._stop.is_set():
            try:
                return self._queue.get(timeout=0.1) if wait else self._queue.get_nowait()
            except queue.Empty:
                if not wait:
                    return None
        return _END

    def take(self, rows: int) -> Batch | None:
        """The next batch joined with those ready behind it, or None at the end; blocks (call it in a thread)."""
        item = self._held if self._held is not None else self._get(wait=True)
        self._held = None
        if item is _END:
            self._held = _END
            return None
        if isinstance(item, BaseException):
            raise item
        parts: list[Batch] = [item]
        total = item.rows
        while total < rows:
            item = self._get(wait=False)
            if item is None:
                break
            if not isinstance(item, Batch):
                self._held = item
                break
            parts.append(item)
            total += item.rows
        return _join(parts)

    def close(self) -> None:
        """Stop validating and wait for the thread (it finishes the batch in hand); blocks."""
        self._stop.set()
        self._thread.join()


def _join(batches: list[Batch]) -> Batch:
    if len(batches) == 1:
        return batches[0]
    first, last = batches[0], batches[-1]

    def frames(kind: str) -> pl.DataFrame | None:
        parts = [frame for frame in (getattr(batch, kind) for batch in batches) if frame is not None]
        return pl.concat(parts, rechunk=False) if parts else None

    return Batch(
        index=last.index,
        header=first.header,
        rows=sum(batch.rows for batch in batches),
        rows_done=last.rows_done,
        last_line=last.last_line,
        bytes_done=last.bytes_done,
        events=frames("events"),
        profiles=frames("profiles"),
        bad=[row for batch in batches for row in batch.bad],
        dialect=first.dialect,
        notes=first.notes,
    )


def partner_error_name(job_id: int, file_name: str) -> str:
    """The error CSV's name in `drop/<account>/errors/`: `<job id>-<file stem>.errors.csv`.

    The stem is shortened (on a character boundary) so that the name, and its hidden `.<name>.part`
    while it is written, fit in NAME_MAX bytes whatever the length of the partner's file name."""
    suffix = ".errors.csv"
    room = MAX_NAME_BYTES - len(f".{job_id}-{suffix}.part".encode())
    stem = safe(Path(file_name).stem).encode()[:room].decode("utf-8", "ignore")
    return f"{job_id}-{stem}{suffix}"


class Worker:
    """Runs one ready job; many Workers share the store, the sink and the stop signal."""

    def __init__(self, config: Config, store: JobStore, sink: Any, notify: Notify, stopping: asyncio.Event) -> None:
        self.config = config
        self.store = store
        self.sink = sink
        self.notify = notify
        self.stopping = stopping
        # job id -> (account, reason) of jobs paused by a full disk, a locked database or an unreachable sink.
        self.paused: dict[int, tuple[str, str]] = {}

    async def run(self, ready: Ready) -> None:
        """Run the job to a final status, or leave it paused (`self.paused`) to be run again from its checkpoint."""
        try:
            await self._run(ready)
        except Exception as exc:
            reason = pause_reason(exc)
            if reason is None:
                raise
            await asyncio.to_thread(self._pause, ready.job, reason)

    async def _run(self, ready: Ready) -> None:
        job, manifest = ready.job, ready.manifest
        emails = list(manifest.client_emails)
        try:
            if job["status"] != "processing":
                await asyncio.to_thread(self._pickup, job, manifest)
            else:
                event(log, "job.resumed", account=job["account"], job_id=job["id"], rows_done=job["rows_total"])
            await self._process(job, manifest)
        except Interrupted:
            event(log, "job.interrupted", account=job["account"], job_id=job["id"])
        except FileError as exc:
            await asyncio.to_thread(self._finish_failed, job, str(exc), [str(exc)], emails)
        except JobFailed as exc:
            await asyncio.to_thread(self._finish_failed, job, exc.reason, exc.details, emails)
        except asyncio.CancelledError:
            event(log, "job.cancelled", account=job["account"], job_id=job["id"])
            raise
        except Exception as exc:
            if pause_reason(exc) is not None:
                raise  # not the partner's file: the job waits and resumes
            log.exception("job %s failed with an internal error", job["id"])
            await asyncio.to_thread(
                self._finish_failed,
                job,
                messages.INTERNAL,
                [],
                emails,
                exception=f"{type(exc).__name__}: {exc}",
            )

    def job_dir(self, job_id: int) -> Path:
        return self.config.jobs_root / str(job_id)

    # -- pauses ---------------------------------------------------------------------------------

    def _pause(self, job: dict[str, Any], reason: str) -> None:
        """Record why the job waits (also when the state database itself cannot be written)."""
        before = self.paused.get(job["id"])
        self.paused[job["id"]] = (job["account"], reason)
        try:
            self.store.set_paused(job["id"], reason)
        except Exception as exc:
            log.warning("could not record the pause of job %s: %s", job["id"], exc)
        if before is None or before[1] != reason:
            event(log, "job.paused", logging.WARNING, account=job["account"], job_id=job["id"], reason=reason)

    def _unpause(self, job: dict[str, Any], *, stored: bool = True) -> None:
        if self.paused.pop(job["id"], None) is None:
            return
        if stored:
            self.store.set_paused(job["id"], None)
        event(log, "job.unpaused", account=job["account"], job_id=job["id"])

    # -- pickup ---------------------------------------------------------------------------------

    def _pickup(self, job: dict[str, Any], manifest: Any) -> None:
        """Move the CSV and the manifest into the job's folder, then mark the job processing."""
        folder = self.job_dir(job["id"])
        folder.mkdir(parents=True, exist_ok=True)
        drop = self.config.drop_root / job["account"]
        # The CSV first: a crash in between leaves the manifest where the queue finds it again.
        for name in (manifest.file_name, job["manifest_name"]):
            if os.path.lexists(drop / name) and not os.path.lexists(folder / name):
                os.replace(drop / name, folder / name)  # a link moves as a link: it is refused below
        data = folder / manifest.file_name
        try:
            info = lstat_regular(data)
        except NotRegular as exc:
            raise JobFailed(messages.UNREADABLE, [str(exc)]) from None
        if info is None:  # removed by the partner between the queue's look and now
            raise JobFailed(messages.NO_DATA_FILE, [messages.no_data_detail(manifest.file_name, 0)])
        size = info.st_size
        now = time.time()
        checkpoint = Checkpoint(processing_ts=int(now), started=now)
        self.store.mark_processing(job["id"], manifest.file_name, manifest.type, size, checkpoint.to_dict())
        job.update(status="processing", file_name=manifest.file_name, type=manifest.type)
        event(log, "job.processing", account=job["account"], job_id=job["id"], file=manifest.file_name, size_bytes=size)
        self.notify("picked_up", job["id"], client_emails=list(manifest.client_emails))

    # -- the batch loop -------------------------------------------------------------------------

    async def _process(self, job: dict[str, Any], manifest: Any) -> None:
        folder = self.job_dir(job["id"])
        checkpoint = Checkpoint.from_dict(await asyncio.to_thread(self.store.checkpoint, job["id"]))
        errors = await asyncio.to_thread(ErrorFile, folder / ERRORS_FILE, checkpoint.error_bytes)
        validated = validate_csv(
            folder / manifest.file_name,
            manifest,
            account=job["account"],
            processing_ts=checkpoint.processing_ts,
            batch_rows=self.config.jobs.batch_rows,
            skip_rows=checkpoint.rows_done,
            restricted_events=self.config.jobs.restricted_events,
            max_uncompressed=self.config.sftp.max_file_size,
        )
        batch_rows = self.config.jobs.batch_rows
        commit_rows = max(batch_rows, self.config.jobs.commit_rows) if self.sink.joins_batches else batch_rows
        batches = Validated(validated, ahead=-(-commit_rows // batch_rows) + 1)
        bytes_total = max(1, (folder / manifest.file_name).stat().st_size)
        last_progress = time.monotonic()
        header: list[str] = []
        notes: list[str] = []  # how the header was read (matched ignoring case, ...): shown in the report
        try:
            while (batch := await asyncio.to_thread(batches.take, commit_rows)) is not None:
                if self.stopping.is_set():
                    raise Interrupted
                header = header or list(batch.header or [])
                notes = notes or list(batch.notes)
                await self._batch(job, batch, header, checkpoint, errors)
                event(
                    log,
                    "job.progress",
                    account=job["account"],
                    job_id=job["id"],
                    rows_done=checkpoint.rows_done,
                    rows_ingested=checkpoint.rows_ingested,
                    rows_failed=checkpoint.rows_failed,
                    bytes_done=batch.bytes_done,
                    size_bytes=bytes_total,
                    elapsed_ms=int((time.time() - checkpoint.started) * 1000),
                )
                if time.monotonic() - last_progress >= self.config.notify.progress_interval:
                    last_progress = time.monotonic()
                    fraction = min(1.0, batch.bytes_done / bytes_total)
                    elapsed = time.time() - checkpoint.started
                    eta = elapsed / fraction * (1 - fraction) if fraction > 0 else None
                    progress = {"rows_done": checkpoint.rows_done, "fraction": fraction, "eta_seconds": eta}
                    await asyncio.to_thread(
                        self.notify,
                        "progress",
                        job["id"],
                        client_emails=list(manifest.client_emails),
                        progress=progress,
                    )
        finally:
            # The validation thread finishes the batch in hand, so the file is closed and nothing runs on.
            await asyncio.to_thread(batches.close)
            await asyncio.to_thread(errors.close)
        await asyncio.to_thread(self._finish, job, checkpoint, list(manifest.client_emails), errors.size, notes)

    async def _batch(
        self, job: dict[str, Any], batch: Any, header: list[str], checkpoint: Checkpoint, errors: ErrorFile
    ) -> None:
        frame = batch.events if job["type"] == "event" else batch.profiles
        good = 0 if frame is None else frame.height
        failures = await self._write(job, frame) if good else []
        bad = [(row.line, list(row.cells), list(row.problems)) for row in batch.bad]
        bad += [(failure.line, [], [(None, failure.message)]) for failure in failures]
        bad.sort(key=lambda item: item[0])
        checkpoint.rows_done = batch.rows_done
        checkpoint.rows_ingested += good - len(failures)
        checkpoint.rows_failed += len(bad)
        checkpoint.count_reasons([problems for _, _, problems in bad])
        rows = [(cells, p) for _, cells, p in bad]
        checkpoint.error_bytes = await asyncio.to_thread(errors.write, header, rows, batch.dialect)
        await asyncio.to_thread(self.store.save_checkpoint, job["id"], checkpoint.to_dict(), batch.bytes_done)
        if job["id"] in self.paused:
            await asyncio.to_thread(self._unpause, job)
        metrics.ROWS_INGESTED.labels(job["type"]).inc(good - len(failures))
        metrics.ROWS_FAILED.labels(job["type"]).inc(len(bad))

    async def _write(self, job: dict[str, Any], frame: Any) -> list[Any]:
        """Write one batch; while the store is unreachable the job is paused and the same batch retried."""
        write = self.sink.write_events if job["type"] == "event" else self.sink.write_profiles
        limit = self.config.elasticsearch.max_retry_delay if self.sink.name == "elasticsearch" else MAX_SINK_RETRY_DELAY
        delay, paused = 1.0, False
        while True:
            try:
                failures = await write(job["account"], frame)
            except RetryableError as exc:
                metrics.SINK_ERRORS.labels("retry").inc()
                if not paused:
                    paused = True
                    await asyncio.to_thread(self._pause, job, pause_reason(exc) or str(exc))
                wait = max(0.05, min(max(exc.delay, delay), limit))
                delay = min(delay * 2, limit)
                try:
                    await asyncio.wait_for(self.stopping.wait(), wait)
                except TimeoutError:
                    continue
                raise Interrupted from exc
            if paused:
                await asyncio.to_thread(self._unpause, job)
            if failures:
                metrics.SINK_ERRORS.labels("row").inc(len(failures))
            return list(failures)

    # -- final statuses (run in a thread) -------------------------------------------------------

    def _finish(
        self, job: dict[str, Any], checkpoint: Checkpoint, emails: list[str], error_bytes: int, notes: list[str]
    ) -> None:
        if checkpoint.rows_failed == 0:
            status, error = "succeeded", None
        elif checkpoint.rows_ingested == 0:
            status, error = "failed", messages.ALL_ROWS_FAILED
        else:
            status, error = "completed_with_errors", None
        self._final(job, status, error, notes, emails, checkpoint, error_bytes)

    def fail_pickup(self, job: dict[str, Any], reason: str, problems: list[str], emails: list[str]) -> None:
        """Fail before processing: the manifest leaves the partner's folder (so no rescan queues it again)."""
        folder = self.job_dir(job["id"])
        folder.mkdir(parents=True, exist_ok=True)
        source: str | Path = self.config.drop_root / job["account"] / job["manifest_name"]
        raw_name = job["details"].get("raw_name")
        if raw_name:  # a name that is not UTF-8: the file goes by its real bytes, and is kept under safe text
            source = os.path.join(os.fsencode(self.config.drop_root / job["account"]), bytes.fromhex(raw_name))
        if os.path.lexists(source) and not os.path.lexists(folder / job["manifest_name"]):
            os.replace(source, folder / job["manifest_name"])
        self._final(job, "failed", reason, problems, emails, Checkpoint(), 0)

    def _finish_failed(
        self,
        job: dict[str, Any],
        reason: str,
        problems: list[str],
        emails: list[str],
        exception: str | None = None,
    ) -> None:
        checkpoint = Checkpoint.from_dict(self.store.checkpoint(job["id"]))
        path = self.job_dir(job["id"]) / ERRORS_FILE
        extra = {"exception": exception} if exception else {}
        self._final(
            job, "failed", reason, problems, emails, checkpoint, path.stat().st_size if path.exists() else 0, **extra
        )

    def _final(
        self,
        job: dict[str, Any],
        status: str,
        error: str | None,
        problems: list[str],
        emails: list[str],
        checkpoint: Checkpoint,
        error_bytes: int,
        **details: Any,
    ) -> None:
        full = self.job_dir(job["id"]) / ERRORS_FILE
        partner_copy = None
        if error_bytes > 0:
            partner_copy = self._copy_for_partner(job, full, details)
        duration_ms = int((time.time() - checkpoint.started) * 1000) if checkpoint.started else None
        reasons = checkpoint.top_reasons()
        self.store.finish(
            job["id"],
            status,
            error=error,
            problems=problems,
            reasons=reasons,
            duration_ms=duration_ms,
            error_csv=partner_copy,
            **details,
        )
        self._unpause(job, stored=False)  # finish() cleared the stored pause
        metrics.IMPORTS.labels(status).inc()
        if duration_ms is not None:
            metrics.JOB_DURATION.observe(duration_ms / 1000)
        event(
            log,
            f"job.{status}",
            logging.WARNING if status == "failed" else logging.INFO,
            account=job["account"],
            job_id=job["id"],
            rows_ingested=checkpoint.rows_ingested,
            rows_failed=checkpoint.rows_failed,
            elapsed_ms=duration_ms,
            **({"error": error} if error else {}),
            **details,
        )
        self.notify(
            status,
            job["id"],
            client_emails=emails,
            problems=problems,
            reasons=reasons,
            error_csv=str(full) if error_bytes > 0 else None,
            **({"failure": messages.failure_kind(error)} if status == "failed" and error else {}),
        )

    def _copy_for_partner(self, job: dict[str, Any], full: Path, details: dict[str, Any]) -> str | None:
        """Best effort: the error CSV in the partner's `errors/` folder. The email carries it anyway, so a
        copy that cannot be written (a file named `errors`, a full disk) is logged and noted, never fatal."""
        name = partner_error_name(job["id"], job["file_name"] or job["manifest_name"])
        target = self.config.drop_root / job["account"] / "errors"
        temp = target / f".{name}.part"
        try:
            if os.path.islink(target) or (os.path.lexists(target) and not target.is_dir()):
                raise NotADirectoryError(messages.errors_not_a_folder())
            target.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(temp):  # a left-over, or a link placed there: never written through
                os.unlink(temp)
            # A hidden name until complete: the partner never downloads half a file.
            shutil.copyfile(full, temp, follow_symlinks=False)
            os.replace(temp, target / name)
        except OSError as exc:
            with contextlib.suppress(OSError):
                if os.path.lexists(temp) and not os.path.islink(temp):
                    os.unlink(temp)
            shown = exc.strerror if exc.strerror else str(exc)
            details["error_csv_copy"] = messages.copy_not_written(shown)
            event(
                log, "job.error_csv_not_copied", logging.WARNING, account=job["account"], job_id=job["id"], reason=shown
            )
            return None
        return f"errors/{name}"

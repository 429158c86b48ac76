"""One import from pickup to a final status: validate in a thread, sink each batch, checkpoint, report."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from daemon import metrics
from daemon.config import Config
from daemon.errors import JobFailed, RetryableError
from daemon.jobs import messages
from daemon.jobs.cells import RefusedCells
from daemon.jobs.checkpoints import Checkpoint, ErrorFile
from daemon.jobs.files import NotRegular, lstat_regular, pause_reason
from daemon.jobs.paths import ERRORS_FILE, job_dir, partner_error_name, partner_errors_dir, partner_report_name
from daemon.jobs.prefetch import Validated
from daemon.jobs.progress import Progress
from daemon.jobs.queue import Ready
from daemon.logs import event
from daemon.sinks.base import HeldWrites, Sink, Written
from daemon.store.jobs import Job, JobStore, LeaseLost
from manifests.model import Manifest

# Imported with the daemon, not at the first job: polars and pyarrow take a moment to load.
from manifests.validate import Batch, FileError, validate_csv

log = logging.getLogger("ingestd.jobs")

__all__ = ["ERRORS_FILE", "Interrupted", "JobCancelled", "Worker", "partner_error_name"]

# The longest a held transaction stays open (with jobs.commit_rows not reached): the job's progress and
# checkpoint stay this recent however slowly its file validates. Committing whenever the next batch was not
# validated yet instead made many small commits (each rewrites the index pages it touched): bench/ingest.py's
# 1M-row event import ran at 0.75-0.81x the naive import where main ran 0.95-1.28x in the same runs.
COMMIT_SECONDS = 5.0
# ... and while another import waits for the sink: imports at once take turns of about this long, each turn
# one commit (committing at every batch while the other waited made many small commits).
TURN_SECONDS = 1.0
Notify = Callable[..., Any]  # notify(kind, job_id, **extra) -> None, synchronous (called in a thread)


class Interrupted(Exception):
    """The service is stopping: leave the job `processing`, it resumes from its checkpoint."""


class JobCancelled(Exception):
    """`imports cancel` asked a processing job to stop: at the batch boundary, keeping what was written."""

    def __init__(self, by: str) -> None:
        super().__init__(by)
        self.by = by


@dataclass
class Outcome:
    """How a job ends: everything its final steps (files for the partner, the record, the log, the email) need."""

    status: str
    error: str | None
    problems: list[str]
    emails: list[str]
    checkpoint: Checkpoint
    error_bytes: int
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pending:
    """Batches written since the last commit: the last of them (None: nothing pending) and their row counts."""

    batch: Batch | None = None
    rows: int = 0
    ingested: int = 0
    failed: int = 0
    since: float = 0.0  # time.monotonic() of the first pending write

    def add(self, batch: Batch, counts: tuple[int, int]) -> None:
        if self.batch is None:
            self.since = time.monotonic()
        self.batch = batch
        self.rows += batch.rows
        self.ingested += counts[0]
        self.failed += counts[1]

    def clear(self) -> None:
        self.batch, self.rows, self.ingested, self.failed = None, 0, 0, 0


class Worker:
    """Runs one ready job; many Workers share the store, the sink and the stop signal."""

    def __init__(self, config: Config, store: JobStore, sink: Sink, notify: Notify, stopping: asyncio.Event) -> None:
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
            if job.status != "processing":
                if not await asyncio.to_thread(self._pickup, job, manifest):
                    return  # cancelled by an operator while the queue was settling it: already final
            else:
                event(log, "job.resumed", account=job.account, job_id=job.id, rows_done=job.rows_total)
            await self._process(job, manifest)
        except Interrupted:
            event(log, "job.interrupted", account=job.account, job_id=job.id)
        except LeaseLost:  # shared state: another node may be running it from its last checkpoint
            event(log, "job.lease_lost", logging.WARNING, account=job.account, job_id=job.id)
        except JobCancelled as exc:
            await asyncio.to_thread(self._finish_cancelled, job, exc.by, emails)
        except FileError as exc:
            await asyncio.to_thread(self._finish_failed, job, str(exc), [str(exc)], emails)
        except JobFailed as exc:
            await asyncio.to_thread(self._finish_failed, job, exc.reason, exc.details, emails)
        except asyncio.CancelledError:
            # Stopped by the shutdown (after jobs.shutdown_grace, or a second signal): resumes from its checkpoint.
            event(log, "job.interrupted", account=job.account, job_id=job.id, forced=True)
            raise
        except Exception as exc:
            if pause_reason(exc) is not None:
                raise  # not the partner's file: the job waits and resumes
            log.exception("job %s failed with an internal error", job.id)
            await asyncio.to_thread(
                self._finish_failed,
                job,
                messages.INTERNAL,
                [],
                emails,
                exception=f"{type(exc).__name__}: {exc}",
            )

    def job_dir(self, job_id: int) -> Path:
        return job_dir(self.config, job_id)

    # -- pauses ---------------------------------------------------------------------------------

    def _pause(self, job: Job, reason: str) -> None:
        """Record why the job waits (also when the state database itself cannot be written)."""
        before = self.paused.get(job.id)
        self.paused[job.id] = (job.account, reason)
        try:
            self.store.set_paused(job.id, reason)
        except Exception as exc:
            log.warning("could not record the pause of job %s: %s", job.id, exc)
        if before is None or before[1] != reason:
            event(log, "job.paused", logging.WARNING, account=job.account, job_id=job.id, reason=reason)

    def _unpause(self, job: Job, *, stored: bool = True) -> None:
        if self.paused.pop(job.id, None) is None:
            return
        if stored:
            self.store.set_paused(job.id, None)
        event(log, "job.unpaused", account=job.account, job_id=job.id)

    # -- pickup ---------------------------------------------------------------------------------

    def _pickup(self, job: Job, manifest: Manifest) -> bool:
        """Move the CSV and the manifest into the job's folder, then mark the job processing.

        False when the job was cancelled meanwhile (`imports cancel`): its files stay in its folder."""
        folder = self.job_dir(job.id)
        folder.mkdir(parents=True, exist_ok=True)
        drop = self.config.drop_root / job.account
        # The CSV first: a crash in between leaves the manifest where the queue finds it again.
        for name in (manifest.file_name, job.manifest_name):
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
        if not self.store.mark_processing(job.id, manifest.file_name, manifest.type, size, checkpoint.to_dict()):
            event(log, "job.not_picked_up", account=job.account, job_id=job.id, reason="cancelled")
            return False
        job.status, job.file_name, job.type = "processing", manifest.file_name, manifest.type
        if manifest.dry_run:
            self.store.set_details(job.id, dry_run=True)
            job.details["dry_run"] = True
        event(
            log,
            "job.processing",
            account=job.account,
            job_id=job.id,
            file=manifest.file_name,
            size_bytes=size,
            **({"dry_run": True} if manifest.dry_run else {}),
        )
        self.notify("picked_up", job.id, client_emails=list(manifest.client_emails))
        return True

    # -- the batch loop -------------------------------------------------------------------------

    async def _process(self, job: Job, manifest: Manifest) -> None:
        folder = self.job_dir(job.id)
        checkpoint = Checkpoint.from_dict(await asyncio.to_thread(self.store.checkpoint, job.id))
        by = await asyncio.to_thread(self.store.cancel_requested, job.id)
        if by:  # asked while the daemon was down, or before the first batch
            raise JobCancelled(by)
        errors = await asyncio.to_thread(ErrorFile, folder / ERRORS_FILE, checkpoint.error_bytes)
        data = folder / manifest.file_name
        validated = validate_csv(
            data,
            manifest,
            account=job.account,
            processing_ts=checkpoint.processing_ts,
            batch_rows=self.config.jobs.batch_rows,
            skip_rows=checkpoint.rows_done,
            restricted_events=self.config.jobs.restricted_events,
            max_uncompressed=self.config.sftp.max_file_size,
        )
        batch_rows = self.config.jobs.batch_rows
        # A sink that holds writes open (sqlite) gets one batch at a time into one transaction, committed every
        # `jobs.commit_rows` rows (sooner after COMMIT_SECONDS, or when another import waits for the store):
        # few large commits, and only a couple of batches in memory. The checkpoint follows each commit.
        # A dry run writes nothing: one batch at a time too, each checkpointed.
        held = None if manifest.dry_run else self.sink.held()
        if held is not None or manifest.dry_run:
            commit_rows, take_rows, ahead = self.config.jobs.commit_rows, batch_rows, 1
        else:
            commit_rows = take_rows = self.sink.write_rows(batch_rows, self.config.jobs.commit_rows)
            ahead = -(-commit_rows // batch_rows) + 1
        # Bad rows are Python objects, not frames: at most about one batch's worth of them waits for the sink.
        # One batch waiting is enough when batches go one at a time (bench/memory.py: 10 MiB less than two).
        # The sink's work that needs no store runs in the validation thread, beside the write of the batch before.
        prepare = None if manifest.dry_run else self.sink.prepare(job.type)
        batches = Validated(validated, ahead=ahead, bad_rows=batch_rows, prepare=prepare)
        bytes_total = max(1, data.stat().st_size)
        progress = Progress(data, checkpoint.rows_done, checkpoint.rows_expected, bytes_total)
        refused = RefusedCells(data, manifest, batch_rows)
        last_progress = time.monotonic()
        header: list[str] = []
        notes: list[str] = []  # how the header was read (matched ignoring case, ...): shown in the report
        pending = Pending()  # what the held transaction holds since its last commit
        try:
            while (batch := await asyncio.to_thread(batches.take, take_rows)) is not None:
                if self.stopping.is_set():
                    if held is not None and pending.batch is not None:  # what was written reaches its checkpoint
                        await self._commit(job, checkpoint, progress, held, pending, bytes_total)
                    raise Interrupted
                header = header or list(batch.header or [])
                notes = notes or list(batch.notes)
                counts = await self._batch(
                    job, manifest, batch, header, checkpoint, errors, progress, refused, held, pending.batch is None
                )
                pending.add(batch, counts)
                if (
                    held is None
                    or pending.rows >= commit_rows
                    or time.monotonic() - pending.since >= (TURN_SECONDS if held.contended else COMMIT_SECONDS)
                ):
                    by = await self._commit(job, checkpoint, progress, held, pending, bytes_total)
                else:  # asked to cancel: what was written stays, as at any other batch boundary
                    by = await asyncio.to_thread(self.store.cancel_requested, job.id)
                    if by and held is not None:
                        await self._commit(job, checkpoint, progress, held, pending, bytes_total)
                if by:
                    raise JobCancelled(by)
                if time.monotonic() - last_progress >= self.config.notify.progress_interval:
                    last_progress = time.monotonic()
                    await asyncio.to_thread(
                        self.notify,
                        "progress",
                        job.id,
                        client_emails=list(manifest.client_emails),
                        progress=progress.report(checkpoint.rows_done, batch.bytes_done),
                    )
            if pending.batch is not None:
                await self._commit(job, checkpoint, progress, held, pending, bytes_total)
        finally:
            if held is not None:  # left by an error, a stop or a cancel: nothing past the checkpoint stays
                await held.abort()
            # The validation thread finishes the batch in hand, so the file is closed and nothing runs on.
            await asyncio.to_thread(batches.close)
            await asyncio.to_thread(errors.close)
            await asyncio.to_thread(refused.close)
        await asyncio.to_thread(self._finish, job, checkpoint, list(manifest.client_emails), errors.size, notes)

    async def _batch(
        self,
        job: Job,
        manifest: Manifest,
        batch: Batch,
        header: list[str],
        checkpoint: Checkpoint,
        errors: ErrorFile,
        progress: Progress,
        refused: RefusedCells,
        held: HeldWrites | None,
        first: bool,
    ) -> tuple[int, int]:
        """Sink one batch (unless a dry run) and count it into the checkpoint, which `_commit` saves; returns the
        rows (ingested, failed) for the metrics. `first`: no write of this job is uncommitted."""
        frame = batch.events if job.type == "event" else batch.profiles
        good = 0 if frame is None else frame.height
        # A dry run validates and reports every row as usual, and stores none.
        written = (
            await self._write(job, frame, held, first)
            if good and frame is not None and not manifest.dry_run
            else Written()
        )
        bad = [(row.line, list(row.cells), list(row.problems)) for row in batch.bad]
        if written:  # rows the sink refused keep their original cells, like every other failed row
            cells = await asyncio.to_thread(refused.lookup, [failure.line for failure in written])
            width = len(header)  # an error CSV uploaded again: its last Failure Description column is not a cell
            bad += [
                (failure.line, cells.get(failure.line, [])[:width], [(None, failure.message)]) for failure in written
            ]
        bad.sort(key=lambda item: item[0])
        checkpoint.rows_done = batch.rows_done
        checkpoint.rows_ingested += good - len(written)
        checkpoint.rows_failed += len(bad)
        checkpoint.rows_duplicate += written.duplicates
        checkpoint.count_reasons([problems for _, _, problems in bad])
        # Rows of an error CSV past the saved checkpoint are cut at a resume (ErrorFile), as the sink's are undone.
        checkpoint.error_bytes = await asyncio.to_thread(
            errors.write, header, [(cells, p) for _, cells, p in bad], batch.dialect
        )
        if checkpoint.rows_expected is None:
            checkpoint.rows_expected = progress.counted
        return (0 if manifest.dry_run else good - len(written)), len(bad)

    async def _commit(
        self,
        job: Job,
        checkpoint: Checkpoint,
        progress: Progress,
        held: HeldWrites | None,
        pending: Pending,
        bytes_total: int,
    ) -> str | None:
        """Make the pending batches durable, then save the checkpoint; returns who asked to cancel, if anyone."""
        batch = pending.batch
        assert batch is not None
        if held is not None:
            await held.commit()
        report = progress.report(checkpoint.rows_done, batch.bytes_done)
        by = await asyncio.to_thread(self.store.save_checkpoint, job.id, checkpoint.to_dict(), batch.bytes_done, report)
        if job.id in self.paused:
            await asyncio.to_thread(self._unpause, job)
        metrics.ROWS_INGESTED.labels(job.type).inc(pending.ingested)
        metrics.ROWS_FAILED.labels(job.type).inc(pending.failed)
        pending.clear()
        event(
            log,
            "job.progress",
            account=job.account,
            job_id=job.id,
            rows_done=checkpoint.rows_done,
            rows_ingested=checkpoint.rows_ingested,
            rows_failed=checkpoint.rows_failed,
            rows_duplicate=checkpoint.rows_duplicate,
            bytes_done=batch.bytes_done,
            size_bytes=bytes_total,
            elapsed_ms=int((time.time() - checkpoint.started) * 1000),
        )
        return by

    async def _write(self, job: Job, frame: pl.DataFrame, held: HeldWrites | None, first: bool) -> Written:
        """Write one batch; while the store is unreachable the job is paused and the same batch retried.

        A held transaction that held earlier batches is undone by the failure: the job pauses and resumes from
        its checkpoint instead (Worker.run), so those batches are written again."""
        target = held if held is not None else self.sink
        write = target.write_events if job.type == "event" else target.write_profiles
        limit = self.sink.max_retry_delay
        delay, paused = 1.0, False
        while True:
            try:
                written = await write(job.account, frame)
            except RetryableError as exc:
                metrics.SINK_ERRORS.labels("retry").inc()
                if not first:
                    raise
                if not paused:
                    paused = True
                    await asyncio.to_thread(self._pause, job, pause_reason(exc) or str(exc))
                wait = max(0.05, min(max(exc.delay, delay), limit))
                delay = min(delay * 2, limit)
                try:
                    await asyncio.wait_for(self.stopping.wait(), wait)
                except TimeoutError:
                    # A cancel asked for while the store is away ends the job now: this batch was not written.
                    by = await asyncio.to_thread(self.store.cancel_requested, job.id)
                    if by:
                        raise JobCancelled(by) from exc
                    continue
                raise Interrupted from exc
            if paused:
                await asyncio.to_thread(self._unpause, job)
            if written:
                metrics.SINK_ERRORS.labels("row").inc(len(written))
            return written

    # -- how a job ends (run in a thread) -------------------------------------------------------

    def _finish(self, job: Job, checkpoint: Checkpoint, emails: list[str], error_bytes: int, notes: list[str]) -> None:
        if checkpoint.rows_failed == 0:
            status, error = "succeeded", None
        elif checkpoint.rows_ingested == 0:
            status, error = "failed", messages.ALL_ROWS_FAILED
        else:
            status, error = "completed_with_errors", None
        self._final(job, Outcome(status, error, notes, emails, checkpoint, error_bytes))

    def fail_pickup(self, job: Job, reason: str, problems: list[str], emails: list[str]) -> None:
        """Fail before processing: the manifest leaves the partner's folder (so no rescan queues it again)."""
        self._take_manifest(job)
        self._final(job, Outcome("failed", reason, problems, emails, Checkpoint(), 0))

    def cancel_pending(self, job: Job, detail: str, emails: list[str]) -> None:
        """Cancel a job not picked up yet (its manifest was removed by the partner): it blocks nobody."""
        self._take_manifest(job)
        self._final(job, Outcome("cancelled", detail, [], emails, Checkpoint(), 0))

    def _take_manifest(self, job: Job) -> None:
        folder = self.job_dir(job.id)
        folder.mkdir(parents=True, exist_ok=True)
        source: str | bytes | Path = self.config.drop_root / job.account / job.manifest_name
        raw_name = job.details.get("raw_name")
        if raw_name:  # a name that is not UTF-8: the file goes by its real bytes, and is kept under safe text
            source = os.path.join(os.fsencode(self.config.drop_root / job.account), bytes.fromhex(raw_name))
        if os.path.lexists(source) and not os.path.lexists(folder / job.manifest_name):
            os.replace(source, folder / job.manifest_name)

    def _finish_cancelled(self, job: Job, by: str, emails: list[str]) -> None:
        """A processing job stopped at a batch boundary: what was written stays, the rest of the file is left."""
        checkpoint = Checkpoint.from_dict(self.store.checkpoint(job.id))
        path = self.job_dir(job.id) / ERRORS_FILE
        size = path.stat().st_size if path.exists() else 0
        self._final(job, Outcome("cancelled", by, [], emails, checkpoint, size))

    def _finish_failed(
        self,
        job: Job,
        reason: str,
        problems: list[str],
        emails: list[str],
        exception: str | None = None,
    ) -> None:
        checkpoint = Checkpoint.from_dict(self.store.checkpoint(job.id))
        path = self.job_dir(job.id) / ERRORS_FILE
        size = path.stat().st_size if path.exists() else 0
        extra = {"exception": exception} if exception else {}
        self._final(job, Outcome("failed", reason, problems, emails, checkpoint, size, extra))

    def _final(self, job: Job, outcome: Outcome) -> None:
        """The final steps, in order: the partner's copies, the record, the log and metrics, the notification."""
        partner_csv = self._copy_error_csv(job, outcome)
        report = self._write_report(job, outcome, partner_csv)
        if not self._record(job, outcome, partner_csv, report):
            return  # finished meanwhile (cancelled by an operator): that status stands, and was told
        self._count(job, outcome)
        self._tell(job, outcome, partner_csv, report)

    def _copy_error_csv(self, job: Job, outcome: Outcome) -> str | None:
        if outcome.error_bytes <= 0:
            return None
        full = self.job_dir(job.id) / ERRORS_FILE
        name = partner_error_name(job.id, job.file_name or job.manifest_name)
        return self._place_for_partner(
            job, name, lambda temp: shutil.copyfile(full, temp, follow_symlinks=False), outcome, report=False
        )

    def _write_report(self, job: Job, outcome: Outcome, partner_csv: str | None) -> str | None:
        """Every failed or partly failed import leaves a short report in `errors/`, whatever was emailed."""
        if outcome.status not in ("failed", "completed_with_errors"):
            return None
        text = messages.report(
            job_id=job.id,
            file_name=job.file_name or job.manifest_name,
            manifest_name=job.manifest_name,
            status=outcome.status,
            reason=outcome.error,
            kind=messages.failure_kind(outcome.error) if outcome.status == "failed" and outcome.error else None,
            problems=outcome.problems,
            rows=(outcome.checkpoint.rows_done, outcome.checkpoint.rows_ingested, outcome.checkpoint.rows_failed),
            reasons=outcome.checkpoint.top_reasons(),
            error_csv=partner_csv,
            dry_run=bool(job.details.get("dry_run")),
        )

        def write(temp: Path) -> None:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)

        name = partner_report_name(job.id, job.file_name or job.manifest_name)
        return self._place_for_partner(job, name, write, outcome, report=True)

    def _place_for_partner(
        self, job: Job, name: str, write: Callable[[Path], Any], outcome: Outcome, *, report: bool
    ) -> str | None:
        """Best effort: a file in the partner's `errors/` folder. The email carries the same facts, so a file
        that cannot be written (a file named `errors`, a full disk) is logged and noted, never fatal."""
        target = partner_errors_dir(self.config, job.account)
        temp = target / f".{name}.part"
        try:
            if os.path.islink(target) or (os.path.lexists(target) and not target.is_dir()):
                raise NotADirectoryError(messages.errors_not_a_folder())
            target.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(temp):  # a left-over, or a link placed there: never written through
                os.unlink(temp)
            # A hidden name until complete: the partner never downloads half a file.
            write(temp)
            os.replace(temp, target / name)
        except OSError as exc:
            with contextlib.suppress(OSError):
                if os.path.lexists(temp) and not os.path.islink(temp):
                    os.unlink(temp)
            shown = exc.strerror if exc.strerror else str(exc)
            if report:
                outcome.details["report_copy"] = messages.report_not_written(shown)
                name_of_event = "job.report_not_written"
            else:
                outcome.details["error_csv_copy"] = messages.copy_not_written(shown)
                name_of_event = "job.error_csv_not_copied"
            event(log, name_of_event, logging.WARNING, account=job.account, job_id=job.id, reason=shown)
            return None
        return f"errors/{name}"

    def _record(self, job: Job, outcome: Outcome, partner_csv: str | None, report: str | None) -> bool:
        checkpoint = outcome.checkpoint
        duration_ms = int((time.time() - checkpoint.started) * 1000) if checkpoint.started else None
        outcome.details["duration_ms"] = duration_ms
        recorded = self.store.finish(
            job.id,
            outcome.status,
            error=outcome.error,
            problems=outcome.problems,
            reasons=checkpoint.top_reasons(),
            error_csv=partner_csv,
            report=report,
            **outcome.details,
        )
        self._unpause(job, stored=False)  # finish() cleared the stored pause
        return recorded

    def _count(self, job: Job, outcome: Outcome) -> None:
        checkpoint, duration_ms = outcome.checkpoint, outcome.details.get("duration_ms")
        metrics.IMPORTS.labels(outcome.status).inc()
        if duration_ms is not None:
            metrics.JOB_DURATION.observe(duration_ms / 1000)
        shown = {key: value for key, value in outcome.details.items() if key != "duration_ms"}
        event(
            log,
            f"job.{outcome.status}",
            logging.WARNING if outcome.status == "failed" else logging.INFO,
            account=job.account,
            job_id=job.id,
            rows_ingested=checkpoint.rows_ingested,
            rows_failed=checkpoint.rows_failed,
            rows_duplicate=checkpoint.rows_duplicate,
            elapsed_ms=duration_ms,
            **({"error": outcome.error} if outcome.error else {}),
            **shown,
        )

    def _tell(self, job: Job, outcome: Outcome, partner_csv: str | None, report: str | None) -> None:
        failed = outcome.status == "failed" and outcome.error
        # A cancellation's reason (who or what cancelled it) is the one detail its email has to give.
        problems = outcome.problems or ([outcome.error] if outcome.status == "cancelled" and outcome.error else [])
        self.notify(
            outcome.status,
            job.id,
            client_emails=outcome.emails,
            problems=problems,
            reasons=outcome.checkpoint.top_reasons(),
            error_csv=str(self.job_dir(job.id) / ERRORS_FILE) if outcome.error_bytes > 0 else None,
            partner_error_csv=partner_csv,
            partner_report=report,
            **({"failure": messages.failure_kind(outcome.error)} if failed and outcome.error else {}),
        )

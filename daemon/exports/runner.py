"""One export run: read the selection in batches, split it by event name and day, write chunks, publish them.

Runs in a worker thread. A run's window (low and high watermarks) and run timestamp are written before its first
file, and each published file is recorded as soon as it is visible; a run interrupted by a stop or a crash is
attempted again from the start of the same window after removing what it had published, so its files end up
complete and nothing is in two of them.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl

from daemon.config import Config
from daemon.exports import texts
from daemon.exports.destinations import Destination, DestinationError, open_destination
from daemon.exports.model import file_name
from daemon.exports.selection import Selection, SelectionError
from daemon.exports.store import ExportStore
from daemon.exports.writers import Writer, writer_for
from daemon.logs import event

log = logging.getLogger("ingestd.exports")


class Stopped(Exception):
    """The daemon is stopping (or the export was cancelled): the run ends between two batches."""


@dataclass
class Outcome:
    status: str  # done | failed | cancelled
    rows: int = 0
    bytes: int = 0
    files: list[dict[str, object]] = field(default_factory=list)
    note: str | None = None
    error: str | None = None


class _Series:
    """One file series (an event name and day, or profiles): its open chunk and the next file index."""

    def __init__(self, run: Run, series: str, day: str) -> None:
        self.run, self.series, self.day = run, series, day
        self.index = 0
        self.writer: Writer | None = None

    def _open(self) -> Writer:
        self.index += 1
        run = self.run
        self.name = file_name(
            run.export["id"], run.record["run_ts"], self.series, self.day, self.index, run.export["account"], run.fmt
        )
        spool = run.spool / f"{self.series_key}-{self.index}"
        return writer_for(run.fmt)(run.destination.temp(self.name), run.export["type"], spool)

    @property
    def series_key(self) -> str:
        return f"{abs(hash((self.series, self.day))):x}"

    def feed(self, frame: pl.DataFrame) -> None:
        limit = self.run.chunk_size
        writer = self.writer or self._open()
        self.writer = writer
        size = writer.measure(frame)
        if size > limit and writer.rows:
            self.close()
            writer = self.writer = self._open()
            size = writer.measure(frame)
        if size > limit and len(frame) > 1:
            # Too big for one chunk: the share that should fit, or half, whichever is fewer rows; then the rest.
            share = max(1, min(len(frame) // 2, int(len(frame) * limit / size)))
            self.feed(frame.slice(0, share))
            self.feed(frame.slice(share))
            return
        writer.add(frame)

    def close(self) -> None:
        writer, self.writer = self.writer, None
        if writer is None or not writer.rows:
            if writer is not None:
                writer.discard()
                self.index -= 1
            return
        size = writer.finish()
        location = self.run.destination.publish(writer.path, self.name)
        self.run.published(self.name, location, self.series, writer.rows, size)


class Run:
    def __init__(
        self,
        config: Config,
        store: ExportStore,
        selection: Selection,
        export: sqlite3.Row,
        record: sqlite3.Row,
        stopping: threading.Event,
        destination: Destination | None = None,
    ) -> None:
        self.config, self.store, self.selection = config, store, selection
        self.export, self.record, self.stopping = export, record, stopping
        self.fmt = export["format"]
        self.chunk_size = config.exports.chunk_size
        staging = config.exports_staging / str(export["id"]) / f"run{record['id']}"
        self.spool = staging / "spool"
        self.destination = destination or open_destination(config, export["account"], export["destination"], staging)
        self.outcome = Outcome("done")
        self.series: dict[tuple[str, str], _Series] = {}

    def published(self, name: str, location: str, series: str, rows: int, size: int) -> None:
        self.store.add_file(self.record["id"], name, location, series, rows, size)
        self.outcome.rows += rows
        self.outcome.bytes += size
        self.outcome.files.append({"name": name, "location": location, "rows": rows, "bytes": size})

    def _check_stop(self) -> None:
        if self.stopping.is_set():
            raise Stopped("stopping")
        if self.store.is_cancelled(self.export["id"]):
            raise Stopped("cancelled")
        if not self.store.holds(self.export["id"]):
            raise Stopped("lease lost")  # another node may run it now: write nothing more

    def _restart_clean(self) -> None:
        """An earlier attempt of this run was interrupted: remove what it published and left half-written."""
        for recorded in self.store.files(self.record["id"]):
            self.destination.remove(recorded["location"])
        self.store.forget_files(self.record["id"])
        self.destination.clear_temps(self.export["id"])

    def execute(self) -> Outcome:
        export = self.export
        try:
            self.destination.check()
            if self.record["attempts"] > 1:
                self._restart_clean()
                event(log, "export.resumed", export_id=export["id"], run_id=self.record["id"])
            if export["type"] == "events":
                names = tuple(json.loads(export["events"]))
                seen: set[str] = set()
                batches = self.selection.events(
                    export["account"],
                    names,
                    export["since_ms"],
                    json.loads(self.record["low"]),
                    json.loads(self.record["high"]),
                    self.config.exports.batch_rows,
                )
                for batch in batches:
                    self._check_stop()
                    day = pl.from_epoch("ts", time_unit="ms").dt.strftime("%Y%m%d").alias("day")
                    frame = batch.with_columns(day)
                    for (name, day_text), part in frame.partition_by(
                        ["name", "day"], maintain_order=True, as_dict=True
                    ).items():
                        seen.add(str(name))
                        self._series(str(name), str(day_text)).feed(part.drop("day", "seq"))
                missing = [name for name in names if name not in seen]
                if missing:
                    self.outcome.note = texts.NO_SUCH_EVENTS.format(names=", ".join(repr(n) for n in missing))
            else:
                run_day = (
                    datetime.strptime(self.record["run_ts"], "%Y%m%d%H%M%S").replace(tzinfo=UTC).strftime("%Y%m%d")
                )
                if export["every_s"]:  # recurring: the profiles changed since the last run
                    batches = self.selection.changed_profiles(
                        export["account"],
                        json.loads(self.record["low"]),
                        json.loads(self.record["high"]),
                        self.config.exports.batch_rows,
                    )
                else:
                    batches = self.selection.profiles(export["account"], self.config.exports.batch_rows)
                for batch in batches:
                    self._check_stop()
                    self._series("profiles", run_day).feed(batch)
            self._check_stop()
            for series in self.series.values():
                series.close()
            if not self.outcome.rows and self.outcome.note is None:
                self.outcome.note = texts.NOTHING_NEW
        except Stopped as exc:
            self._abandon()
            if str(exc) == "cancelled":
                self.outcome.status = "cancelled"
                return self.outcome
            raise
        except (SelectionError, DestinationError) as exc:
            self._abandon()
            self.outcome.status, self.outcome.error = "failed", str(exc)
        except OSError as exc:
            self._abandon()
            self.outcome.status = "failed"
            self.outcome.error = texts.WRITE_FAILED.format(name=exc.filename or "a chunk", reason=exc.strerror or exc)
        return self.outcome

    def _series(self, name: str, day: str) -> _Series:
        key = (name, day)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = _Series(self, name, day)
        return series

    def _abandon(self) -> None:
        for series in self.series.values():
            if series.writer is not None:
                series.writer.discard()
                series.writer = None
        self.destination.clear_temps(self.export["id"])

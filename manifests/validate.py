"""validate(): any Reader's rows in bounded batches through the columnar rules, good rows typed, bad rows explained.

validate_csv() is validate() with the CSV reader (plain, gzip or zip files)."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from manifests import rules
from manifests.batch import Dialect, FileError, Ragged, RawBatch, Reader
from manifests.hashes import event_ids
from manifests.model import Manifest
from manifests.plan import Check, Compiled, Plan, build_plan
from manifests.reader import CsvReader

__all__ = ["DEFAULT", "BadRow", "Batch", "Dialect", "FileError", "validate", "validate_csv"]

DEFAULT: Sequence[str] = rules.RESTRICTED_EVENTS

EVENTS_SCHEMA = {
    "line": pl.Int64,
    "event_id": pl.String,
    "identity": pl.String,
    "name": pl.String,
    "ts": pl.Int64,
    "properties": pl.String,
}
# A profile row's operations are `sets` or `ops`, by batch: `sets`, its new profile as one JSON object ($set: the
# value, $add: a list of it), when no row of the batch removes or deletes (plan._sets); else `ops`, the list of
# [operation, property, value]. The other is null.
PROFILES_SCHEMA = {"line": pl.Int64, "identity": pl.String, "ts": pl.Int64, "ops": pl.String, "sets": pl.String}


@dataclass(slots=True)
class BadRow:
    """A failed row: its first physical line, its original cells and every problem as (column or None, message)."""

    line: int
    cells: list[str]
    problems: list[tuple[str | None, str]]


@dataclass
class Batch:
    """One validated batch; `events` or `profiles` (by the manifest's type) holds the good rows."""

    index: int
    header: list[str]
    rows: int
    rows_done: int
    last_line: int
    bytes_done: int
    events: pl.DataFrame | None = None
    profiles: pl.DataFrame | None = None
    bad: list[BadRow] = field(default_factory=list)
    dialect: Dialect = field(default_factory=Dialect)  # how to write this file's error CSV
    notes: list[str] = field(default_factory=list)  # for the report: how headers were matched, ...


def validate_csv(
    path: str | os.PathLike[str],
    manifest: Manifest,
    *,
    account: str,
    processing_ts: int,
    batch_rows: int = 50_000,
    skip_rows: int = 0,
    restricted_events: Sequence[str] = DEFAULT,
    max_uncompressed: int = rules.MAX_UNCOMPRESSED,
) -> Iterator[Batch]:
    """Batches of at most `batch_rows` rows; the first `skip_rows` data rows are read but not emitted.

    The file may be gzip- or zip-compressed; it may hold at most `max_uncompressed` bytes uncompressed.
    Raises FileError when the file as a whole cannot be read (also midway, e.g. an undecodable byte)."""
    reader = CsvReader(
        os.fspath(path), encoding=manifest.encoding, delimiter=manifest.delimiter, max_uncompressed=max_uncompressed
    )
    return validate(
        reader,
        manifest,
        account=account,
        processing_ts=processing_ts,
        batch_rows=batch_rows,
        skip_rows=skip_rows,
        restricted_events=restricted_events,
    )


def validate(
    reader: Reader,
    manifest: Manifest,
    *,
    account: str,
    processing_ts: int,
    batch_rows: int = 50_000,
    skip_rows: int = 0,
    restricted_events: Sequence[str] = DEFAULT,
) -> Iterator[Batch]:
    """validate_csv() for any input format: `reader` makes the RawBatches (see manifests.batch.Reader)."""
    if batch_rows < 1:
        raise ValueError("batch_rows must be positive")
    return _validate(reader, manifest, account, processing_ts, batch_rows, skip_rows, restricted_events)


def _validate(
    reader: Reader,
    manifest: Manifest,
    account: str,
    processing_ts: int,
    batch_rows: int,
    skip_rows: int,
    restricted_events: Sequence[str],
) -> Iterator[Batch]:
    """Three stages, each in its own thread: the reader's (parsing), the rules' (_evaluated: checks and outputs
    of a batch, in polars) and the caller's (_finish: event ids, bad rows). One batch waits between the last
    two: the rules of a batch run while the one before is finished, instead of one after the other."""
    for item in _ahead(_evaluated(reader, manifest, account, processing_ts, batch_rows, skip_rows, restricted_events)):
        yield item if isinstance(item, Batch) else _finish(item, reader)


@dataclass
class _Evaluated:
    """A batch whose checks and outputs are computed (`frame`), the cells of its bad rows (`cells`, None when
    there are none), its ragged rows, and what the reader said of it at the time. The batch's raw frame is
    not kept: only what the outputs share of it stays in memory while the batch waits."""

    plan: Plan
    compiled: Compiled
    frame: pl.DataFrame
    cells: pl.DataFrame | None
    ragged: list[Ragged]
    rows: int
    last_line: int
    index: int
    rows_done: int
    header: list[str]
    bytes_done: int
    dialect: Dialect


_END = object()


def _ahead(items: Iterator[_Evaluated | Batch]) -> Iterator[_Evaluated | Batch]:
    """`items` made in a thread, one ahead of the caller: the next is begun once the caller has taken the
    last (so two batches are in hand, not three). Its errors are raised here, in order. Closing this
    generator stops the thread after the item under way and closes `items` (and so the reader)."""
    out: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(maxsize=1)
    taken = threading.Semaphore(0)
    stop = threading.Event()

    def put(entry: tuple[object, BaseException | None]) -> None:
        while not stop.is_set():
            try:
                out.put(entry, timeout=0.1)
                return
            except queue.Full:
                continue

    def work() -> None:
        try:
            for item in items:
                put((item, None))
                while not stop.is_set() and not taken.acquire(timeout=0.1):
                    continue
                if stop.is_set():
                    break
            else:
                put((_END, None))
        except BaseException as exc:  # handed over to the caller, which raises it
            put((None, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # the reader's own thread and file

    thread = threading.Thread(target=work, name="ingestd-rules", daemon=True)
    thread.start()
    try:
        while True:
            item, error = out.get()
            taken.release()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


def _evaluated(
    reader: Reader,
    manifest: Manifest,
    account: str,
    processing_ts: int,
    batch_rows: int,
    skip_rows: int,
    restricted_events: Sequence[str],
) -> Iterator[_Evaluated | Batch]:
    plan: Plan | None = None
    done = index = 0
    emitted = False
    for raw in reader.batches(batch_rows):
        if plan is None:
            plan = build_plan(
                manifest, reader.header, account=account, processing_ts=processing_ts, restricted=restricted_events
            )
            reader.wanted = plan.wanted_facts()
        before, done = done, done + raw.rows
        if done <= skip_rows:
            index += 1
            continue
        if before < skip_rows:
            raw = raw.split(skip_rows - before)[1]
        yield _evaluate(plan, reader, raw, index=index, rows_done=done)
        emitted = True
        index += 1
    if plan is None:
        plan = build_plan(
            manifest, reader.header, account=account, processing_ts=processing_ts, restricted=restricted_events
        )
    if not emitted:
        empty = pl.DataFrame(schema=EVENTS_SCHEMA if manifest.type == "event" else PROFILES_SCHEMA)
        yield Batch(
            index=index,
            header=list(reader.header),
            rows=0,
            rows_done=done,
            last_line=0,
            bytes_done=reader.bytes_done,
            events=empty if manifest.type == "event" else None,
            profiles=empty if manifest.type == "profile" else None,
            dialect=reader.dialect,
            notes=list(plan.notes) if plan is not None else [],
        )


def _evaluate(plan: Plan, reader: Reader, raw: RawBatch, *, index: int, rows_done: int) -> _Evaluated:
    compiled = plan.compile(plan.stats(raw.frame, raw.facts))
    flags = [f"_p{j}" for j in range(len(compiled.checks))]
    # Checks and outputs in one pass, so polars computes shared sub-expressions (casts, dates) once.
    frame = (
        raw.frame.lazy()
        .with_columns(expr.alias(name) for name, expr in compiled.first.items())
        .with_columns(expr.alias(name) for name, expr in compiled.shared.items())
        .select(
            [check.failed.fill_null(False).alias(flag) for flag, check in zip(flags, compiled.checks, strict=True)]
            + [expr.alias(name) for name, expr in compiled.outputs.items()]
        )
        .with_columns(pl.any_horizontal(flags).alias("_bad") if flags else pl.lit(False).alias("_bad"))
        .collect()
    )
    mask = frame["_bad"]
    cells = raw.frame.select(plan.columns).filter(mask) if mask.any() else None
    header, dialect = list(reader.header), reader.dialect
    return _Evaluated(
        plan,
        compiled,
        frame,
        cells,
        raw.ragged,
        raw.rows,
        raw.last_line,
        index,
        rows_done,
        header,
        reader.bytes_done,
        dialect,
    )


def _finish(evaluated: _Evaluated, reader: Reader) -> Batch:
    plan, compiled, frame, cells = evaluated.plan, evaluated.compiled, evaluated.frame, evaluated.cells
    flags = [f"_p{j}" for j in range(len(compiled.checks))]
    mask = frame["_bad"]
    any_bad = cells is not None
    # Select before filtering, so only the columns kept are copied; a batch without bad rows is not filtered.
    outputs = frame.select(list(compiled.outputs))
    good = outputs.filter(~mask) if any_bad else outputs
    if compiled.hash_input is not None:
        keys = good.select(compiled.hash_input).to_series()
        result = good.with_columns(event_ids(keys).alias("event_id")).select(list(EVENTS_SCHEMA))
    else:
        result = good.select(list(PROFILES_SCHEMA))
    failed = frame.select(["line", *flags]).filter(mask) if any_bad else None
    bad = _bad_rows(plan, compiled.checks, reader, failed, cells, evaluated.ragged)
    return Batch(
        index=evaluated.index,
        header=evaluated.header,
        rows=evaluated.rows,
        rows_done=evaluated.rows_done,
        last_line=evaluated.last_line,
        bytes_done=evaluated.bytes_done,
        events=result if plan.kind == "event" else None,
        profiles=result if plan.kind == "profile" else None,
        bad=bad,
        dialect=evaluated.dialect,
        notes=list(plan.notes),
    )


def _bad_rows(
    plan: Plan,
    checks: list[Check],
    reader: Reader,
    failed: pl.DataFrame | None,
    cells: pl.DataFrame | None,
    ragged_rows: list[Ragged],
) -> list[BadRow]:
    rows: list[BadRow] = []
    if failed is not None and cells is not None and failed.height:
        # Bad rows share a few patterns of failed checks. Each row's pattern is one number, its failed checks'
        # bits (made columnar); each pattern's checks are listed once, a problem without a cell is one tuple for
        # all its rows, and a cell's problem is written once per batch and check. Per row (1% of a file, a
        # sixth of an event batch's time when it was a tuple of flags per row) only the picking is left.
        flags = failed.columns[1:]
        keys: list[Any]
        if len(flags) < 64:
            bits = [pl.col(f).cast(pl.UInt64) * (1 << j) for j, f in enumerate(flags)]
            keys = failed.select(pl.sum_horizontal(bits)).to_series().to_list()
        else:  # too many checks for one number: the pattern is the row's tuple of flags
            keys = failed.select(flags).rows()
        patterns: dict[Any, list[tuple[int | None, int]]] = {}
        said: list[dict[str, tuple[str | None, str]]] = [{} for _ in checks]
        fixed = [(c.column, c.message) for c in checks]
        for line, key, row_cells in zip(failed["line"].to_list(), keys, cells.rows(), strict=True):
            failing = patterns.get(key)
            if failing is None:
                hits = [bool(key >> j & 1) for j in range(len(checks))] if isinstance(key, int) else list(key)
                failing = patterns[key] = [(c.shows, j) for j, c in enumerate(checks) if hits[j]]
            problems = []
            for shows, j in failing:
                if shows is None:
                    problems.append(fixed[j])
                    continue
                cell = row_cells[shows]
                problem = said[j].get(cell)
                if problem is None:
                    problem = said[j][cell] = (checks[j].column, _found(checks[j], cell, plan.decimal))
                problems.append(problem)
            rows.append(BadRow(line, list(row_cells), problems))
    width = reader.fields or len(reader.header)
    for ragged in ragged_rows:
        problem = (None, rules.ragged_row(ragged.fields, width))
        rows.append(BadRow(ragged.line, reader.split_cells(ragged.text, ragged.line), [problem]))
    if ragged_rows:
        rows.sort(key=lambda row: row.line)  # the others are in line order already
    return rows


def _found(check: Check, cell: str, decimal: str) -> str:
    return rules.found(check.message, cell.strip(), check.data_type, decimal)

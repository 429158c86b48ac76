"""The prefetch thread: validation runs ahead of the sink by a few batches, joined into sink-sized writes."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import polars as pl

from manifests.validate import Batch

_END = object()
# The sink's work on a validated frame that needs no store (Sink.prepare): run here, on each batch as it is
# validated, so it overlaps the sink's write of the batch before instead of adding to it.
Prepare = Callable[[pl.DataFrame], pl.DataFrame]

# What validated-but-unwritten batches may hold besides their count: a batch of failed rows is one Python
# object per row (its cells, its problems), many times the weight of the same rows in a frame, so a file of
# nothing but bad rows must not have `ahead` batches of them waiting (a 4 MB file of ragged rows held 760 MB).
BAD_ROWS = 50_000  # failed rows waiting for the sink: about one batch's worth
# An estimate of everything waiting: frames' sizes plus failed rows' objects. It bounds the sink's joined writes
# too (take() joins what waits): 256 MiB let a 1M-row import peak at 750 MiB (bench/memory.py); at 64 MiB a
# joined write still holds about 450,000 event rows, so the sqlite sink's commits stay few.
MAX_BYTES = 64 * 1024 * 1024
_BAD_ROW_BYTES = 250  # a BadRow, its cells list and its problems list, before the cells' text
_CELL_BYTES = 50  # one str object, before its text


class Validated:
    """Validation in its own thread, running ahead of the sink by up to `ahead` batches.

    `take(rows)` waits for the next validated batch and joins to it whatever else is ready, up to `rows`
    rows: one sink write and one checkpoint. When the sink is the slower side, writes grow to about
    `rows` rows, and fewer, larger commits cost far less than many small ones (a commit rewrites every
    index page it touched); when validation is slower, the sink gets each batch as soon as it is ready.
    An error from the file midway is raised only after the rows before it were handed on.

    Besides their count, the batches waiting are bounded by weight: the producer does not hand on another
    batch while those waiting hold `bad_rows` failed rows or more, or `max_bytes` bytes (an estimate) or more,
    so one account's file of bad rows costs about three batches (one waiting, one in hand on each side), not
    `ahead`. Good batches weigh only their frames: `max_bytes` of them wait at most, and so one joined write
    holds at most about that much (docs/ops-guide.md, "Memory").

    `prepare` (Sink.prepare) replaces each batch's frame of good rows by what it returns, in this thread; batches
    joined by `take` are prepared again as one (prepare takes its own output too)."""

    def __init__(
        self,
        batches: Iterator[Batch],
        ahead: int,
        *,
        bad_rows: int = BAD_ROWS,
        max_bytes: int = MAX_BYTES,
        prepare: Prepare | None = None,
    ) -> None:
        self._batches = batches
        self._prepare = prepare
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, ahead))
        self._held: Any = None
        self._stop = threading.Event()
        self._bad_budget = max(1, bad_rows)
        self._byte_budget = max(1, max_bytes)
        self._room = threading.Condition()
        self._waiting_bad = 0  # failed rows in the batches put and not yet taken
        self._waiting_bytes = 0
        self.blocked = threading.Event()  # set while the producer waits for room (by count or by weight)
        self._thread = threading.Thread(target=self._produce, name="ingestd-validate", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            for batch in self._batches:
                if self._prepare is not None:
                    _prepared(batch, self._prepare)
                if not self._put(batch):
                    return
            self._put(_END)
        except BaseException as exc:  # a FileError, or anything else: raised to the worker in row order
            self._put(exc)
        finally:
            close = getattr(self._batches, "close", None)  # a generator: its file is closed at once
            if close is not None:
                close()

    def _put(self, item: Any) -> bool:
        bad, size = _weight(item) if isinstance(item, Batch) else (0, 0)
        if bad or size:
            with self._room:
                # Nothing waiting: any batch goes (one larger than the budget still has to pass).
                while (self._waiting_bad or self._waiting_bytes) and (
                    self._waiting_bad >= self._bad_budget or self._waiting_bytes >= self._byte_budget
                ):
                    if self._stop.is_set():
                        self.blocked.clear()
                        return False
                    self.blocked.set()
                    self._room.wait(timeout=0.1)
                self.blocked.clear()
                self._waiting_bad += bad
                self._waiting_bytes += size
        while not self._stop.is_set():
            try:
                self._queue.put((item, bad, size), timeout=0.1)
                self.blocked.clear()
                return True
            except queue.Full:
                self.blocked.set()
                continue
        self.blocked.clear()
        return False

    def _taken(self, bad: int, size: int) -> None:
        if bad or size:
            with self._room:
                self._waiting_bad -= bad
                self._waiting_bytes -= size
                self._room.notify_all()

    def _get(self, wait: bool) -> Any:
        while not self._stop.is_set():
            try:
                item, bad, size = self._queue.get(timeout=0.1) if wait else self._queue.get_nowait()
            except queue.Empty:
                if not wait:
                    return None
                continue
            self._taken(bad, size)
            return item
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
        if len(parts) == 1:
            return parts[0]
        joined = _join(parts)
        if self._prepare is not None:
            _prepared(joined, self._prepare)
        return joined

    def ready(self) -> bool:
        """Whether the next batch (or the end of the file, or its error) is waiting: take() would not block."""
        return self._held is not None or not self._queue.empty()

    def close(self) -> None:
        """Stop validating and wait for the thread (it finishes the batch in hand); blocks."""
        self._stop.set()
        self._thread.join()


def _weight(batch: Batch) -> tuple[int, int]:
    """The failed rows a batch holds and an estimate of its bytes."""
    size = sum(int(frame.estimated_size()) for frame in (batch.events, batch.profiles) if frame is not None)
    for row in batch.bad:
        size += _BAD_ROW_BYTES + sum(_CELL_BYTES + len(cell) for cell in row.cells)
    return len(batch.bad), size


def _prepared(batch: Batch, prepare: Prepare) -> None:
    for kind in ("events", "profiles"):
        frame = getattr(batch, kind)
        if frame is not None and frame.height:
            setattr(batch, kind, prepare(frame))


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

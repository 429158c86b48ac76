"""The prefetch thread: validation runs ahead of the sink by a few batches, joined into sink-sized writes."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import polars as pl

from manifests.validate import Batch

_END = object()


class Validated:
    """Validation in its own thread, running ahead of the sink by up to `ahead` batches.

    `take(rows)` waits for the next validated batch and joins to it whatever else is ready, up to `rows`
    rows: one sink write and one checkpoint. When the sink is the slower side, writes grow to about
    `rows` rows, and fewer, larger commits cost far less than many small ones (a commit rewrites every
    index page it touched); when validation is slower, the sink gets each batch as soon as it is ready.
    An error from the file midway is raised only after the rows before it were handed on."""

    def __init__(self, batches: Iterator[Batch], ahead: int) -> None:
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
            close = getattr(self._batches, "close", None)  # a generator: its file is closed at once
            if close is not None:
                close()

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

"""The original cells of rows the sink refused, read again from the data file for the error CSV."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from manifests.model import Manifest
from manifests.reader import CsvReader, RawBatch


class RefusedCells:
    """Rows the sink refuses are rare (an Elasticsearch mapping or block): their cells are looked up only then,
    by reading the file once more, forwards only (each batch's refused lines come after the last batch's)."""

    def __init__(self, path: Path, manifest: Manifest, batch_rows: int) -> None:
        self.path = path
        self.manifest = manifest
        self.batch_rows = batch_rows
        self._batches: Iterator[RawBatch] | None = None
        self._current: RawBatch | None = None

    def lookup(self, lines: list[int]) -> dict[int, list[str]]:
        """{line: cells} for the CSV lines asked for (a line not found is left out); blocks (call it in a thread)."""
        wanted = set(lines)
        found: dict[int, list[str]] = {}
        if not wanted:
            return found
        if self._batches is None:
            reader = CsvReader(os.fspath(self.path), encoding=self.manifest.encoding, delimiter=self.manifest.delimiter)
            self._batches = reader.batches(self.batch_rows)
        last = max(wanted)
        while True:
            if self._current is not None:
                found.update(_cells(self._current, wanted))
                if self._current.last_line >= last:
                    return found
            self._current = next(self._batches, None)
            if self._current is None:
                return found

    def close(self) -> None:
        if self._batches is not None:
            close = getattr(self._batches, "close", None)
            if close is not None:
                close()
            self._batches = None


def _cells(raw: RawBatch, wanted: set[int]) -> dict[int, list[str]]:
    frame = raw.frame
    if not frame.height:
        return {}
    hits = frame.filter(pl.col("line").is_in(sorted(wanted)))
    columns = sorted(
        (name for name in frame.columns if name[:1] == "f" and name[1:].isdigit()), key=lambda n: int(n[1:])
    )
    return {
        int(row[0]): ["" if cell is None else str(cell) for cell in row[1:]]
        for row in hits.select(["line", *columns]).iter_rows()
    }

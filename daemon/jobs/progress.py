"""Progress that is true: rows validated and written against the rows the file holds, time left from the rate so far."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from daemon.jobs.files import open_regular

_CHUNK = 8 << 20
_COMPRESSED = (b"\x1f\x8b", b"PK\x03\x04")  # gzip, zip: their rows cannot be counted without unpacking them


def count_rows(path: Path) -> int | None:
    """Data rows of a plain CSV (its lines less the header), or None for a compressed file.

    A quoted cell holding a line break makes this a little high; the progress is clamped to the rows done."""
    fd = open_regular(path)
    try:
        with os.fdopen(fd, "rb", closefd=False) as handle:
            first = handle.read(_CHUNK)
            if first.startswith(_COMPRESSED):
                return None
            lines, last = 0, b""
            chunk = first
            while chunk:
                lines += chunk.count(b"\n")
                last = chunk[-1:]
                chunk = handle.read(_CHUNK)
    finally:
        os.close(fd)
    if last and last != b"\n":
        lines += 1  # a last line without its line break
    return max(0, lines - 1)


class Progress:
    """How far an import is, from what was validated and written (never from bytes read ahead).

    The file's rows are counted in a thread while the import runs (`expected` is None until then); a
    compressed file's total is estimated from the share of its bytes read."""

    def __init__(self, path: Path, rows_done: int, expected: int | None, bytes_total: int) -> None:
        self.expected = expected
        self.bytes_total = max(1, bytes_total)
        self._start_rows = rows_done
        self._start = time.monotonic()
        self._counted = expected is not None
        self._thread: threading.Thread | None = None
        if expected is None:
            self._thread = threading.Thread(target=self._count, args=(path,), name="ingestd-count", daemon=True)
            self._thread.start()

    def _count(self, path: Path) -> None:
        try:
            self.expected = count_rows(path)
        except OSError:
            self.expected = None
        self._counted = True

    @property
    def counted(self) -> int | None:
        """The file's row count once known (kept in the checkpoint, so a resume does not count again)."""
        return self.expected if self._counted else None

    def report(self, rows_done: int, bytes_done: int) -> dict[str, Any]:
        """{"rows_done", "rows_expected", "fraction", "eta_seconds"}; fraction and eta None while unknown."""
        expected: int | None = self.expected
        if expected is None and self._counted and bytes_done > 0 and rows_done > 0:
            # Compressed: the rows so far scaled by the share of the file read (a little ahead, so a little low).
            expected = round(rows_done * self.bytes_total / min(bytes_done, self.bytes_total))
        if expected is None:
            return {"rows_done": rows_done, "rows_expected": None, "fraction": None, "eta_seconds": None}
        expected = max(expected, rows_done)
        fraction = rows_done / expected if expected else 1.0
        rate = (rows_done - self._start_rows) / max(1e-6, time.monotonic() - self._start)
        eta = (expected - rows_done) / rate if rate > 0 else None
        return {"rows_done": rows_done, "rows_expected": expected, "fraction": fraction, "eta_seconds": eta}

"""The error CSV: each failed row's original header and cells, plus a last `Failure Description` column."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from typing import Any

FAILURE_COLUMN = "Failure Description"
# What a spreadsheet runs as a formula when a cell starts with it (OWASP, "CSV Injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NEUTRAL_PREFIX = "'"
# A neutralised cell, as the engine finds it in an error CSV uploaded again (see manifests.reader).
NEUTRALISED_PATTERN = r"^'+[=+\-@\t\r]"


def neutralise(cell: str) -> str:
    """`'` before a cell a spreadsheet would run as a formula; also before one that already looks
    neutralised (`'=x`, `''=x`), so that stripping one `'` from an uploaded error CSV gives back the original."""
    if cell[:1] in FORMULA_START or (cell[:1] == NEUTRAL_PREFIX and cell.lstrip(NEUTRAL_PREFIX)[:1] in FORMULA_START):
        return NEUTRAL_PREFIX + cell
    return cell


def neutralise_row(cells: Iterable[str]) -> list[str]:
    return [neutralise(cell) for cell in cells]


def failure_description(problems: Iterable[tuple[str | None, str]]) -> str:
    """ "col: message; message" — every problem of one row, in order."""
    return "; ".join(f"{column}: {message}" if column else message for column, message in problems)


class ErrorCSVWriter:
    """Appends bad rows to an RFC 4180 CSV (CRLF, minimal quoting) that starts with the original header."""

    def __init__(self, path: str | os.PathLike[str], header: Sequence[str], *, delimiter: str = ",") -> None:
        self.width = len(header)
        self._file = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed by close()
        self._writer = csv.writer(self._file, delimiter=delimiter, lineterminator="\r\n")
        self._writer.writerow([*neutralise_row(header), FAILURE_COLUMN])

    def write(self, bad_rows: Iterable[Any]) -> None:
        """Rows with `.cells` and `.problems` (BadRow); short rows are padded so the description lines up."""
        for row in bad_rows:
            cells = list(row.cells)
            if len(cells) < self.width:
                cells += [""] * (self.width - len(cells))
            self._writer.writerow(neutralise_row([*cells, failure_description(row.problems)]))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ErrorCSVWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

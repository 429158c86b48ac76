"""The error CSV: each failed row's original header and cells, plus a last `Failure Description` column."""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable, Sequence

from manifests.batch import Dialect

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


def encode_rows(
    header: Sequence[str],
    rows: Iterable[tuple[Sequence[str], Iterable[tuple[str | None, str]]]],
    dialect: Dialect | None = None,
    *,
    first: bool,
) -> bytes:
    """(cells, problems) rows as error-CSV bytes in the upload's own delimiter and encoding (RFC 4180 quoting,
    CRLF); `first`: the file's start, with the byte order mark (UTF-8, UTF-16) and the header row.

    Short rows are padded so the description lines up; cells a spreadsheet would run get a `'`."""
    dialect = dialect or Dialect()
    text = io.StringIO()
    writer = csv.writer(text, delimiter=dialect.delimiter, lineterminator="\r\n")
    if first:
        writer.writerow([*neutralise_row(header), FAILURE_COLUMN])
    width = len(header)
    for cells, problems in rows:
        padded = list(cells) + [""] * (width - len(cells)) if len(cells) < width else list(cells)
        writer.writerow(neutralise_row([*padded, failure_description(problems)]))
    codec, bom = dialect.encoding, b""
    if codec.startswith("utf-16"):
        codec, bom = ("utf-16-be", codecs.BOM_UTF16_BE) if codec == "utf-16-be" else ("utf-16-le", codecs.BOM_UTF16_LE)
    elif codec == "utf-8":
        bom = codecs.BOM_UTF8
    # Our own texts may hold a character a single-byte encoding lacks (—, …): it becomes "?".
    data = text.getvalue().encode(codec, errors="replace")
    return (bom if first and dialect.bom else b"") + data

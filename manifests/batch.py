"""The reader seam: what any input format hands the rules (RawBatch), and the Reader protocol that makes them."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import polars as pl

from manifests import rules


class FileError(Exception):
    """The file as a whole cannot be read; str() is the partner-facing reason."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        self.reason = rules.FILE_PREFIX + detail
        super().__init__(self.reason)


class Facts(NamedTuple):
    """What a batch's column may hold, conservatively: True may be a false alarm, False is certain."""

    empty: bool = True  # an empty cell
    dated: bool = True  # a `$D_` date
    escape: bool = True  # a character JSON must escape
    long: bool = True  # a cell over 1024 bytes
    spaced: bool = True  # white space or non-ASCII (strip_chars may change it)
    upper: bool = True  # upper case (to_lowercase may change it)
    other: bool = True  # a byte other than an ASCII digit, once `$D_` prefixes are left out (the ts column)
    date_other: bool = True  # a `$D_` date that is more than digits (ISO 8601, a fraction); False without dates
    undated: bool = True  # a cell neither empty nor a `$D_` date (True also when there are no dates)
    worded: bool = True  # a cell other than empty, "true" or "false" (a BOOLEAN column not written as JSON)
    padded: bool = True  # a '+' sign or leading zero ("+5", "007", "-0"): not written as polars writes numbers

    def merge(self, other: Facts) -> Facts:
        return Facts(*(a or b for a, b in zip(self, other, strict=True)))


ALL_FACTS = Facts()


@dataclass(slots=True)
class Ragged:
    """A row whose field count differs from the header's: kept as text for the error CSV."""

    line: int
    text: str
    fields: int


@dataclass
class RawBatch:
    """Rows between two cuts: `frame` holds the well-formed ones (columns f0.., and `line`), in line order."""

    frame: pl.DataFrame
    ragged: list[Ragged] = field(default_factory=list)
    # Per column index, what its cells may hold; None: unknown, assume everything.
    facts: dict[int, Facts] | None = None

    @property
    def rows(self) -> int:
        return self.frame.height + len(self.ragged)

    def split(self, n: int) -> tuple[RawBatch, RawBatch]:
        """The first n rows (in file order) and the rest."""
        if not self.ragged:
            return RawBatch(self.frame.head(n), facts=self.facts), RawBatch(self.frame.slice(n), facts=self.facts)
        lines = pl.concat([self.frame["line"], pl.Series([r.line for r in self.ragged], dtype=pl.Int64)]).sort()
        if n >= lines.len():
            return self, RawBatch(self.frame.clear(), facts=self.facts)
        cut = lines[n]
        # The ragged rows are in line order: one bisection, not a scan of the whole rest at every split (which
        # made a block of many ragged rows quadratic in them).
        at = bisect.bisect_left(self.ragged, cut, key=lambda row: row.line)
        head = RawBatch(self.frame.filter(pl.col("line") < cut), self.ragged[:at], self.facts)
        tail = RawBatch(self.frame.filter(pl.col("line") >= cut), self.ragged[at:], self.facts)
        return head, tail

    @property
    def last_line(self) -> int:
        last = self.frame["line"].max() if self.frame.height else 0
        return max([int(last or 0)] + [r.line for r in self.ragged])  # type: ignore[arg-type]


def concat(pieces: list[RawBatch]) -> RawBatch:
    frames = [p.frame for p in pieces if p.frame.width]
    frame = pl.concat(frames, how="vertical", rechunk=False) if frames else pl.DataFrame()
    return RawBatch(frame, [r for p in pieces for r in p.ragged], _merge_facts(pieces))


def _merge_facts(pieces: list[RawBatch]) -> dict[int, Facts] | None:
    merged: dict[int, Facts] = {}
    for piece in pieces:
        if piece.facts is None:
            if piece.frame.height:
                return None
            continue
        for i, facts in piece.facts.items():
            old = merged.get(i)
            merged[i] = facts if old is None else old.merge(facts)
    return merged


@dataclass(frozen=True)
class Dialect:
    """How the upload was written, so that its error CSV goes back the same way (Excel opens it in columns)."""

    delimiter: str = ","
    encoding: str = "utf-8"  # a Python codec name
    bom: bool = True  # start the error CSV with a byte order mark (UTF-8 and UTF-16 uploads)


class Reader(Protocol):
    """An input format: rows of a file as RawBatches. `header` (and `fields`) are known after the first batch.

    The CSV reader (manifests.reader) is one; a new format (JSON lines, ...) is one more module with this shape."""

    header: list[str]
    fields: int  # fields of the header row as written (an error CSV uploaded again has one more)
    wanted: dict[int, Facts] | None  # set by the engine: per column, the facts its rules read

    @property
    def dialect(self) -> Dialect: ...

    @property
    def bytes_done(self) -> int: ...

    def batches(self, batch_rows: int) -> Iterator[RawBatch]: ...

    def split_cells(self, text: str, line: int = 0) -> list[str]:
        """A ragged row's cells, for the error CSV."""
        ...

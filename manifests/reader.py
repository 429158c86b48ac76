"""Reading a partner's CSV: decoding, delimiter sniffing, and bounded batches of rows with their line numbers."""

from __future__ import annotations

import codecs
import csv
import errno
import io
import os
import queue
import re
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from manifests import rules
from manifests.errors_csv import FAILURE_COLUMN, NEUTRALISED_PATTERN

# What a batch's column may hold: (an empty cell, a `$D_` date, a character JSON must escape,
# a cell over 1024 bytes, white space or non-ASCII, upper case).
Facts = tuple[bool, bool, bool, bool, bool, bool]
BLOCK_SIZE = 4 << 20  # pyarrow's parse block; also the longest row we accept
_PEEK = 64 << 10
_RECOUNT = 16 << 20  # read size when counting in the file again
_ALL: Facts = (True, True, True, True, True, True)
_DATE = rules.DATE_PREFIX.encode()
# The header record: unquoted runs and quoted fields (a doubled quote is two of them) up to a newline.
_HEADER_END = re.compile(rb'(?:[^"\n]++|"[^"]*+")*+\n')
_QUOTED = re.compile(rb'"[^"]*+"')
# O_NONBLOCK: a FIFO must not hang the worker; O_NOFOLLOW: a link is not the partner's file.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class FileError(Exception):
    """The file as a whole cannot be read; str() is the partner-facing reason."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        self.reason = rules.FILE_PREFIX + detail
        super().__init__(self.reason)


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
    # Per column, conservatively (True may be a false alarm): see Facts. None: unknown, assume everything.
    flags: dict[int, Facts] | None = None

    @property
    def rows(self) -> int:
        return self.frame.height + len(self.ragged)

    def split(self, n: int) -> tuple[RawBatch, RawBatch]:
        """The first n rows (in file order) and the rest."""
        if not self.ragged:
            return RawBatch(self.frame.head(n), flags=self.flags), RawBatch(self.frame.slice(n), flags=self.flags)
        lines = pl.concat([self.frame["line"], pl.Series([r.line for r in self.ragged], dtype=pl.Int64)]).sort()
        if n >= lines.len():
            return self, RawBatch(self.frame.clear(), flags=self.flags)
        cut = lines[n]
        head = RawBatch(self.frame.filter(pl.col("line") < cut), [r for r in self.ragged if r.line < cut], self.flags)
        tail = RawBatch(self.frame.filter(pl.col("line") >= cut), [r for r in self.ragged if r.line >= cut], self.flags)
        return head, tail

    @property
    def last_line(self) -> int:
        last = self.frame["line"].max() if self.frame.height else 0
        return max([int(last or 0)] + [r.line for r in self.ragged])  # type: ignore[arg-type]


class _Source(io.RawIOBase):
    """The raw file as UTF-8 bytes for pyarrow: BOM dropped, other encodings transcoded, bad bytes located."""

    def __init__(self, handle: BinaryIO, encoding: str | None) -> None:
        super().__init__()
        self.handle = handle
        self.bytes_done = 0
        self.quotes = False  # a quote has been read: a value may hold a newline
        self._quote_count = 0  # transcoded files only: UTF-8 ones count theirs when asked (odd_quotes)
        self._lines = 0  # transcoded files only: newlines before the current chunk, to place an undecodable byte
        self._out = b""
        self._last = b""
        self._eof = False
        head = handle.read(4)
        self.bytes_done = len(head)
        if encoding in (None, "utf-8") and head.startswith(codecs.BOM_UTF8):
            head = head[3:]
        elif encoding is None and head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            encoding = "utf-16"  # a UTF-16 byte order mark is unambiguous, even when not declared
        if encoding == "utf-16" and head[:2] not in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            encoding = "utf-16-le"  # no byte order mark: Windows' order, the usual one
        self.codec = encoding or "utf-8"
        self.shown = rules.ENCODINGS.get(self.codec, self.codec)
        self._decoder = codecs.getincrementaldecoder(self.codec)("strict")
        big_endian = self.codec == "utf-16-be" or (self.codec == "utf-16" and head[:2] == codecs.BOM_UTF16_BE)
        self._newline = {True: b"\x00\n", False: b"\n\x00"}[big_endian] if self.codec.startswith("utf-16") else b"\n"
        self._pending = head

    def readable(self) -> bool:
        return True

    def _convert(self, raw: bytes, final: bool) -> bytes:
        try:
            if self.codec == "utf-8":
                # Valid ASCII needs no decoding; otherwise decode only to check and discard the text.
                if not raw.isascii() or final or self._decoder.getstate()[0]:
                    self._decoder.decode(raw, final)
                out = raw
            else:
                out = self._decoder.decode(raw, final).encode("utf-8")
        except UnicodeDecodeError as exc:
            data = exc.object
            if self.codec == "utf-8":
                # The decoder's input (its held-back bytes, then raw) is the file's bytes up to bytes_done.
                line = self._newlines_before(self.bytes_done - len(data) + exc.start) + 1
            else:
                line = self._lines + bytes(data[: exc.start]).count(self._newline) + 1
            byte = data[exc.start] if exc.start < len(data) else 0
            raise FileError(rules.file_undecodable(byte, line, self.shown)) from None
        except UnicodeError:
            raise FileError(rules.file_not_encoded(self.shown)) from None
        if self.codec == "utf-8":
            # Counting newlines and quotes of every block costs a quarter of the parse; only errors need them.
            self.quotes = self.quotes or b'"' in out
        else:
            self._lines += raw.count(self._newline)
            self._quote_count += out.count(b'"')
            self.quotes = self._quote_count > 0
        return out

    def _count_in_file(self, needle: bytes, end: int | None = None) -> int:
        """Occurrences of a byte in the file's first `end` bytes (all of it when None), read again from disk."""
        self.handle.seek(0)
        count = 0
        left = end
        while left is None or left > 0:
            block = self.handle.read(_RECOUNT if left is None else min(_RECOUNT, left))
            if not block:
                break
            count += block.count(needle)
            left = None if left is None else left - len(block)
        return count

    def _newlines_before(self, position: int) -> int:
        return self._count_in_file(b"\n", position)

    def odd_quotes(self) -> bool:
        """Whether the text holds an odd number of double quotes (UTF-8: counted now, from the file)."""
        if self.codec != "utf-8":
            return self._quote_count % 2 == 1
        # A byte order mark holds no quote, so the file's bytes count the same as the text's.
        return self.quotes and self._count_in_file(b'"') % 2 == 1

    def _fill(self, size: int) -> None:
        while len(self._out) < size and not self._eof:
            fresh = self.handle.read(max(size - len(self._out), _PEEK))  # a block read whole, not re-sliced
            self.bytes_done += len(fresh)
            raw, self._pending = self._pending + fresh, b""
            if not raw:
                self._eof = True
                self._emit(self._convert(b"", True))
                if self._last not in (b"", b"\n"):
                    self._emit(b"\n")  # pyarrow cannot read a one-line file without its line end
                break
            self._emit(self._convert(raw, False))

    def _emit(self, out: bytes) -> None:
        if out:
            self._out += out
            self._last = out[-1:]

    def peek(self, size: int = _PEEK) -> bytes:
        """The first bytes of converted text, without consuming them."""
        self._fill(size)
        return self._out[:size]

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = 1 << 62
            self._fill(size)
        else:
            self._fill(size)
        out, self._out = self._out[:size], self._out[size:]
        return out

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def sniff_delimiter(text: str) -> str:
    """The delimiter that splits the header line into the most fields (outside quotes); comma if none."""
    line = text.split("\n", 1)[0]
    counts = dict.fromkeys(rules.SNIFFED_DELIMITERS, 0)
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(rules.SNIFFED_DELIMITERS, key=lambda d: counts[d])  # ties: the earlier in the list
    return best if counts[best] else ","


class CsvReader:
    """Streams a CSV as RawBatches of at most `batch_rows` rows; `header` is known after the first one."""

    def __init__(self, path: str, *, encoding: str | None, delimiter: str | None) -> None:
        self.path = path
        self.encoding = encoding
        self.delimiter = delimiter
        self.header: list[str] = []
        self.fields = 0  # fields in the header row (one more than `header` in an error CSV uploaded again)
        self._restore = False  # an error CSV uploaded again: its neutralised cells get their first `'` back
        self._handle: BinaryIO | None = None
        self._source: _Source | None = None
        self._invalid: list[tuple[int, str, int]] = []
        self._found: list[tuple[int, str, int]] = []  # filled by pyarrow's callback in the parsing thread
        self._next_rec = 1  # pyarrow's record number (header = 1) of the next record
        self._next_line = 1
        # Per column, the facts the rules read (set once the plan is known; until then all of them).
        self.wanted: dict[int, Facts] | None = None

    @property
    def bytes_done(self) -> int:
        return self._source.bytes_done if self._source else 0

    def _on_invalid(self, row: Any) -> str:
        self._found.append((row.number, row.text, row.actual_columns))
        return "skip"

    def _open(self) -> Iterator[pa.RecordBatch]:
        try:
            fd = os.open(self.path, _OPEN_FLAGS)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
                raise FileError(rules.FILE_NOT_REGULAR) from None
            raise FileError(f"the data file cannot be opened ({exc.strerror})") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FileError(rules.FILE_NOT_REGULAR)
        os.set_blocking(fd, True)
        self._handle = os.fdopen(fd, "rb")  # closed in batches()
        self._source = _Source(self._handle, self.encoding)
        head = self._source.peek()
        if not head.strip():
            raise FileError(rules.FILE_EMPTY)
        if self.delimiter is None:
            self.delimiter = sniff_delimiter(head.decode("utf-8", "replace"))
        self._check_header(head)
        names = [f"f{i}" for i in range(rules.MAX_COLUMNS + 1)]
        return iter(
            pacsv.open_csv(
                self._source,
                read_options=pacsv.ReadOptions(
                    use_threads=False, block_size=BLOCK_SIZE, autogenerate_column_names=True
                ),
                parse_options=pacsv.ParseOptions(
                    delimiter=self.delimiter,
                    quote_char='"',
                    double_quote=True,
                    escape_char=False,
                    newlines_in_values=True,
                    ignore_empty_lines=False,
                    invalid_row_handler=self._on_invalid,
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.large_string()),
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                    null_values=[],
                ),
            )
        )

    def _check_header(self, head: bytes) -> None:
        """Refuse a header too long or too wide before pyarrow builds a column per field (a header of
        100,000 fields cost seconds and 600 MiB): bytes found with one regex scan, fields counted outside quotes."""
        assert self._source is not None
        end = _HEADER_END.match(head)
        if end is None and len(head) >= _PEEK:
            head = self._source.peek(rules.MAX_HEADER_BYTES + 1)
            end = _HEADER_END.match(head)
        if end is None:
            if len(head) > rules.MAX_HEADER_BYTES:
                raise FileError(rules.file_header_too_long(rules.MAX_HEADER_BYTES))
            return  # a quote never closed: pyarrow's own error says where
        fields = _QUOTED.sub(b"", end.group()).count((self.delimiter or ",").encode()) + 1
        if fields > rules.MAX_COLUMNS + 1:  # one more: an error CSV's Failure Description
            raise FileError(rules.file_too_many_columns(fields))

    def _produce(self, arrow: Iterator[pa.RecordBatch], out: queue.Queue[Any], stop: threading.Event) -> None:
        """Parse ahead in a thread (pyarrow releases the GIL), so parsing overlaps the rules on another core.

        The pieces (Arrow to polars, line numbers, buffer facts) are made here too, in file order; the
        consumer touches the numbering state only after the last item, when this thread has finished."""
        item: tuple[RawBatch | None, BaseException | None]
        while not stop.is_set():
            try:
                record_batch = next(arrow, None)
                found, self._found = self._found, []
                self._invalid.extend(found)
                item = (None if record_batch is None else self._piece(record_batch), None)
            except BaseException as exc:  # handed over to the consumer, which raises it
                item = (None, exc)
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[0] is None:
                return

    def _arrow_error(self, exc: Exception) -> FileError:
        message = str(exc)
        if "Empty CSV" in message:
            return FileError(rules.FILE_EMPTY)
        if "straddl" in message:
            return FileError(rules.file_row_too_long(self._next_line, BLOCK_SIZE))
        return FileError(rules.file_malformed(self._next_line, message.splitlines()[0][:200]))

    def batches(self, batch_rows: int) -> Iterator[RawBatch]:
        """RawBatches of exactly `batch_rows` rows (the last may be shorter); blank rows are dropped."""
        stop = threading.Event()
        thread: threading.Thread | None = None
        try:
            try:
                arrow = self._open()
            except pa.ArrowInvalid as exc:
                raise self._arrow_error(exc) from None
            out: queue.Queue[Any] = queue.Queue(maxsize=2)
            thread = threading.Thread(target=self._produce, args=(arrow, out, stop), daemon=True)
            thread.start()
            pending: list[RawBatch] = []
            count = 0
            while True:
                piece, error = out.get()
                if isinstance(error, pa.ArrowInvalid):
                    raise self._arrow_error(error)
                if error is not None:
                    raise error
                if piece is None:
                    break
                pending.append(piece)
                count += piece.rows
                # Strictly more than a batch: the file's last rows wait for the end-of-file checks.
                while count > batch_rows:
                    whole = _concat(pending)
                    head, tail = whole.split(batch_rows)
                    yield head
                    pending, count = [tail], tail.rows
            if not self.header:
                raise FileError(rules.FILE_EMPTY)
            piece = self._piece(None)  # invalid rows after the last good one
            whole = _concat([*pending, piece])
            self._check_unclosed_quote(whole)
            while whole.rows > batch_rows:
                head, whole = whole.split(batch_rows)
                yield head
            if whole.rows:
                yield whole
        finally:
            stop.set()
            if thread is not None:
                thread.join()
            if self._handle:
                self._handle.close()

    def _check_unclosed_quote(self, last: RawBatch) -> None:
        """An odd number of quotes and a last row holding newlines: a quoted field swallowed the file's end."""
        if not self._source or not self._source.quotes or not last.rows:
            return
        line = last.last_line
        ragged = [r for r in last.ragged if r.line == line]
        if ragged:
            swallowed = "\n" in ragged[0].text
        else:
            row = last.frame.filter(pl.col("line") == line).drop("line")
            swallowed = any("\n" in str(cell) for cell in row.row(0)) if row.height else False
        if swallowed and self._source.odd_quotes():
            raise FileError(rules.file_unclosed_quote(line))

    def _piece(self, record_batch: pa.RecordBatch | None) -> RawBatch:
        frame = pl.DataFrame() if record_batch is None else pl.from_arrow(record_batch)
        assert isinstance(frame, pl.DataFrame)
        if not self.header:
            if record_batch is None or frame.height == 0:
                return RawBatch(pl.DataFrame())
            self._take_header(frame.row(0))
            frame = frame.slice(1)
        columns = [f"f{i}" for i in range(len(self.header))]
        if frame.width == 0:
            frame = pl.DataFrame(schema=dict.fromkeys(columns, pl.String))
        if self._restore and f"f{len(columns)}" in frame.columns:
            frame = frame.drop(f"f{len(columns)}")  # the Failure Description of an error CSV uploaded again
        good = frame.height
        # Number this piece's records: good rows fill the numbers the invalid rows did not take.
        invalid = sorted(self._invalid)
        self._invalid = []
        start = self._next_rec
        positions: list[tuple[int, int]] = []  # (record offset in piece, count) runs of good rows
        taken: list[tuple[int, str, int]] = []
        rec, remaining, i = start, good, 0
        while True:
            if i < len(invalid) and invalid[i][0] <= rec:
                if invalid[i][0] == rec:
                    taken.append(invalid[i])
                    rec += 1
                i += 1
                continue
            if remaining == 0:
                if record_batch is None and i < len(invalid):
                    rec = invalid[i][0]  # defensive: numbers are contiguous, so this never skips
                    continue
                break
            run = remaining if i >= len(invalid) else min(remaining, invalid[i][0] - rec)
            positions.append((rec - start, run))
            rec += run
            remaining -= run
        self._invalid = invalid[i:]
        self._next_rec = rec
        spans = self._spans(frame, columns, record_batch)
        starts: pl.Series | None = None
        if not taken and spans is None:
            lines = pl.int_range(self._next_line, self._next_line + good, dtype=pl.Int64, eager=True)
            self._next_line += good
        else:
            # Each record's first line is the running sum of the lines every earlier record spans.
            offsets = pl.concat(
                [pl.int_range(o, o + run, dtype=pl.Int64, eager=True) for o, run in positions]
                or [pl.Series([], dtype=pl.Int64)]
            )
            all_spans = pl.repeat(1, rec - start, dtype=pl.Int64, eager=True)
            if spans is not None:
                all_spans = all_spans.scatter(offsets, spans)
            if taken:
                all_spans = all_spans.scatter(
                    [number - start for number, _, _ in taken], [text.count("\n") + 1 for _, text, _ in taken]
                )
            starts = all_spans.cum_sum() - all_spans + self._next_line
            self._next_line += int(all_spans.sum())
            lines = starts.gather(offsets)
        frame = frame.with_columns(lines.alias("line"))
        if frame.height and columns and frame[columns[0]].str.len_bytes().min() == 0:
            blank = pl.all_horizontal([pl.col(c).str.len_bytes() == 0 for c in columns])
            frame = frame.filter(~blank)
        if self._restore and frame.height:
            # Columnar: each neutralised cell ('=..., '-5) loses its first character, the others stay.
            frame = frame.with_columns(
                pl.when(pl.col(c).str.contains(NEUTRALISED_PATTERN)).then(pl.col(c).str.slice(1)).otherwise(pl.col(c))
                for c in columns
            )
        ragged = (
            [Ragged(int(starts[number - start]), text, fields) for number, text, fields in taken]
            if starts is not None
            else []
        )
        flags = _flags(record_batch, len(columns), self.wanted) if record_batch is not None else None
        return RawBatch(frame, ragged, flags)

    def _spans(self, frame: pl.DataFrame, columns: list[str], record_batch: pa.RecordBatch | None) -> pl.Series | None:
        """Physical lines per row when a quoted value holds a newline, else None (one line each)."""
        if not frame.height or not columns or not self._source or not self._source.quotes:
            return None  # no quote read so far: no value can hold a newline
        if record_batch is None or not any(_has_newline(column) for column in record_batch.columns):
            return None
        counts = [pl.col(c).str.count_matches("\n", literal=True) for c in columns]
        return frame.select((pl.sum_horizontal(counts) + 1).cast(pl.Int64)).to_series()

    def _take_header(self, cells: tuple[Any, ...]) -> None:
        names = [str(cell) for cell in cells]
        fields = len(names)
        if all(not name.strip() for name in names):
            raise FileError(rules.FILE_NO_HEADER)
        if len(names) > 1 and names[-1] == FAILURE_COLUMN:
            # The shape of our error CSV: a partner uploads it again once fixed. Its last column is ours.
            names = [_restore_cell(name) for name in names[:-1]]
            self._restore = True
        if len(names) > rules.MAX_COLUMNS:
            raise FileError(rules.file_too_many_columns(len(names)))
        seen: dict[str, int] = {}
        for position, name in enumerate(names, 1):
            if not name.strip():
                raise FileError(rules.file_empty_name(position))
            if len(name) > rules.MAX_HEADER_NAME:
                raise FileError(rules.file_long_name(position, rules.MAX_HEADER_NAME))
            if name in seen:
                raise FileError(rules.file_duplicate(name, seen[name], position))
            seen[name] = position
        self.header = names
        self.fields = fields
        self._next_rec = 2
        self._next_line = 1 + sum(name.count("\n") for name in names) + 1

    def split_cells(self, text: str, line: int = 0) -> list[str]:
        """A ragged row's cells, parsed the same way (RFC 4180 quoting) for the error CSV."""
        try:
            rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter or ","))
        except csv.Error:  # a field over the csv module's limit (128 KiB): say so, rather than fail inside
            raise FileError(rules.file_field_too_long(line, csv.field_size_limit())) from None
        return [cell for row in rows for cell in row] if rows else [""]


def _restore_cell(cell: str) -> str:
    """A cell of an error CSV uploaded again, without the `'` that neutralised it."""
    return cell[1:] if re.match(NEUTRALISED_PATTERN, cell) else cell


def _has_newline(column: pa.Array) -> bool:
    """A newline anywhere in a string column, found in its Arrow data buffer (one memchr-like scan)."""
    data = column.buffers()[-1]
    return data is not None and b"\n" in data.to_pybytes()


def _flags(record_batch: pa.RecordBatch, width: int, wanted: dict[int, Facts] | None = None) -> dict[int, Facts] | None:
    """Column facts from the Arrow buffers with vectorised kernels and memchr, not per-cell expressions.

    `wanted`: per column, the facts the rules use (None: all of them, for every column); a fact not
    wanted is not computed and reported as True, the conservative answer."""
    flags: dict[int, Facts] = {}
    for i in range(min(width, record_batch.num_columns)):
        need = _ALL if wanted is None else wanted.get(i)
        if need is None:
            continue  # no rule reads this column's facts
        column = record_batch.column(i)
        if not isinstance(column, pa.LargeStringArray) or column.offset:
            return None
        empty = long = True
        if need[0] or need[3]:
            bounds = pc.min_max(pc.binary_length(column)).as_py() if len(column) else {"min": 1, "max": 0}
            empty, long = bounds["min"] == 0, bounds["max"] > rules.MAX_CHARS
        dated = escape = spaced = upper = True
        if need[1] or need[2] or need[4] or need[5]:
            data = column.buffers()[-1]
            raw = data.to_pybytes() if data is not None else b""
            if need[2] or need[4]:
                smallest = pc.min(pa.Array.from_buffers(pa.uint8(), len(raw), [None, data])).as_py() if raw else 0x7F
                escape = b'"' in raw or b"\\" in raw or smallest < 0x20
                spaced = smallest <= 0x20 or not raw.isascii()  # strip_chars also strips Unicode spaces
            # memchr for "$" first: a multi-byte search over a buffer without it costs several times more.
            dated = b"$" in raw and _DATE in raw
            # Short cells (booleans, operations) only: lower-casing a copy of a long buffer costs more than it saves.
            upper = not need[5] or len(raw) > 8 * len(column) or raw.lower() != raw
        flags[i] = (empty, dated, escape, long, spaced, upper)
    return flags


def _merge_flags(pieces: list[RawBatch]) -> dict[int, Facts] | None:
    merged: dict[int, Facts] = {}
    for piece in pieces:
        if piece.flags is None:
            if piece.frame.height:
                return None
            continue
        for i, facts in piece.flags.items():
            old = merged.get(i)
            merged[i] = facts if old is None else tuple(a or b for a, b in zip(old, facts, strict=True))  # type: ignore[assignment]
    return merged


def _concat(pieces: list[RawBatch]) -> RawBatch:
    frames = [p.frame for p in pieces if p.frame.width]
    frame = pl.concat(frames, how="vertical", rechunk=False) if frames else pl.DataFrame()
    return RawBatch(frame, [r for p in pieces for r in p.ragged], _merge_flags(pieces))

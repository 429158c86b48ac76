"""The CSV reader: delimiter sniffing, header checks, and bounded RawBatches of rows with their line numbers.

Three steps, each its own module: compression (the file's bytes), decoding (UTF-8 text), this (rows)."""

from __future__ import annotations

import csv
import io
import queue
import re
import struct
import threading
from collections.abc import Generator, Iterator
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from manifests import rules
from manifests.batch import ALL_FACTS, Dialect, Facts, FileError, Ragged, RawBatch, concat
from manifests.compression import Stream, open_stream
from manifests.decoding import Decoded
from manifests.errors_csv import FAILURE_COLUMN, NEUTRALISED_PATTERN

__all__ = ["CsvReader", "Facts", "FileError", "RawBatch", "sniff_delimiter"]

BLOCK_SIZE = 4 << 20  # pyarrow's parse block; also the longest row we accept
_READ_AHEAD = 2  # blocks pyarrow may read past those asked for (its own default is 32: 128 MiB)
_PEEK = 64 << 10
_DATE = rules.DATE_PREFIX.encode()
_DIGITS = b"0123456789"
# The header record: unquoted runs and quoted fields (a doubled quote is two of them) up to a newline.
_HEADER_END = re.compile(rb'(?:[^"\n]++|"[^"]*+")*+\n')
_QUOTED = re.compile(rb'"[^"]*+"')


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

    def __init__(
        self, path: str, *, encoding: str | None, delimiter: str | None, max_uncompressed: int = rules.MAX_UNCOMPRESSED
    ) -> None:
        self.path = path
        self.encoding = encoding
        self.delimiter = delimiter
        self.max_uncompressed = max_uncompressed
        self.header: list[str] = []
        self.fields = 0  # fields in the header row (one more than `header` in an error CSV uploaded again)
        self._restore = False  # an error CSV uploaded again: its neutralised cells get their first `'` back
        self._stream: Stream | None = None
        self._source: Decoded | None = None
        self._invalid: list[tuple[int, str, int]] = []
        self._found: list[tuple[int, str, int]] = []  # filled by pyarrow's callback in the parsing thread
        self._next_rec = 1  # pyarrow's record number (header = 1) of the next record
        self._next_line = 1
        # Per column, the facts the rules read (set once the plan is known; until then all of them).
        self.wanted: dict[int, Facts] | None = None

    @property
    def bytes_done(self) -> int:
        return self._source.bytes_done if self._source else 0

    @property
    def compression(self) -> str:
        """plain, gzip or zip (known once reading started)."""
        return self._stream.kind if self._stream else "plain"

    @property
    def dialect(self) -> Dialect:
        """The upload's delimiter and encoding, for its error CSV."""
        codec = self._source.codec if self._source else (self.encoding or "utf-8")
        bom = codec.startswith("utf-16") or codec == "utf-8"
        return Dialect(delimiter=self.delimiter or ",", encoding=codec, bom=bom)

    def _on_invalid(self, row: Any) -> str:
        self._found.append((row.number, row.text, row.actual_columns))
        return "skip"

    def _open(self) -> Iterator[pa.RecordBatch]:
        self._stream = open_stream(self.path, limit=self.max_uncompressed)  # closed in batches()
        self._source = Decoded(self._stream, self.encoding, ahead=_READ_AHEAD)
        head = self._source.peek()
        if not head.strip():
            raise FileError(rules.FILE_EMPTY)
        if self.delimiter is None:
            self.delimiter = sniff_delimiter(head.decode("utf-8", "replace"))
        self._check_header(head)
        names = [f"f{i}" for i in range(rules.MAX_COLUMNS + 1)]
        with self._source.parsing():  # opening parses the first block
            return self._open_csv(names)

    def _open_csv(self, names: list[str]) -> Iterator[pa.RecordBatch]:
        assert self._source is not None
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
                    # Decoded hands over valid UTF-8 only (it checks every non-ASCII block, or transcodes):
                    # pyarrow checking it again cost a tenth of its parse.
                    check_utf8=False,
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
        assert self._source is not None
        while not stop.is_set():
            try:
                with self._source.parsing():
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

    def batches(self, batch_rows: int) -> Generator[RawBatch, None, None]:
        """RawBatches of exactly `batch_rows` rows (the last may be shorter); blank rows are dropped."""
        stop = threading.Event()
        thread: threading.Thread | None = None
        try:
            try:
                arrow = self._open()
            except pa.ArrowInvalid as exc:
                raise self._arrow_error(exc) from None
            out: queue.Queue[Any] = queue.Queue(maxsize=1)  # the rules' thread holds a batch too (validate.py)
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
                    whole = concat(pending)
                    head, tail = whole.split(batch_rows)
                    yield head
                    pending, count = [tail], tail.rows
            if not self.header:
                raise FileError(rules.FILE_EMPTY)
            piece = self._piece(None)  # invalid rows after the last good one
            whole = concat([*pending, piece])
            self._check_unclosed_quote(whole)
            while whole.rows > batch_rows:
                head, whole = whole.split(batch_rows)
                yield head
            if whole.rows:
                yield whole
        finally:
            stop.set()
            if self._source is not None:
                self._source.release()  # pyarrow's reading thread may wait for room
            if thread is not None:
                thread.join()
            if self._stream:
                self._stream.close()

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
        header_row = False
        if not self.header:
            if record_batch is None or frame.height == 0:
                return RawBatch(pl.DataFrame())
            self._take_header(frame.row(0))
            frame = frame.slice(1)
            header_row = True
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
            blank = frame.select(pl.all_horizontal([pl.col(c).str.len_bytes() == 0 for c in columns])).to_series()
            if blank.any():  # filtering copies every column: only when there is a blank row to drop
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
        if record_batch is not None and header_row:
            record_batch = record_batch.slice(1)  # the header's cells are not data: they would spoil the facts
        facts = _flags(record_batch, len(columns), self.wanted) if record_batch is not None else None
        return RawBatch(frame, ragged, facts)

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


def _padded(column: pa.LargeStringArray, raw: bytes, lengths: pa.Array) -> bool:
    """A cell starting with '+', "-0", or "0" and more: a valid whole number in it is not written back as is.

    A '+' or "-0" anywhere in the column's bytes counts (one memchr, not two kernels: a false alarm at worst)."""
    if not len(column):
        return False
    if b"+" in raw or b"-0" in raw:
        return True
    return bool(pc.any(pc.and_(pc.starts_with(column, "0"), pc.greater(lengths, 1))).as_py())


_JSON_WORDS = pa.array(["", "true", "false"], pa.large_string())


def _worded(column: pa.LargeStringArray) -> bool:
    """A cell other than empty, "true" or "false"."""
    return not pc.all(pc.is_in(column, value_set=_JSON_WORDS)).as_py()


def _undated(column: pa.LargeStringArray) -> bool:
    """A cell that is neither empty nor a `$D_` date."""
    dates = pc.or_(pc.starts_with(column, rules.DATE_PREFIX), pc.equal(pc.binary_length(column), 0))
    return not pc.all(dates).as_py()


def _flags(record_batch: pa.RecordBatch, width: int, wanted: dict[int, Facts] | None = None) -> dict[int, Facts] | None:
    """Column facts from the Arrow buffers with vectorised kernels and memchr, not per-cell expressions.

    `wanted`: per column, the facts the rules use (None: all of them, for every column); a fact not
    wanted is not computed and reported as True, the conservative answer."""
    flags: dict[int, Facts] = {}
    for i in range(min(width, record_batch.num_columns)):
        need = ALL_FACTS if wanted is None else wanted.get(i)
        if need is None:
            continue  # no rule reads this column's facts
        column = record_batch.column(i)
        if not isinstance(column, pa.LargeStringArray):
            return None
        empty = long = True
        lengths = pc.binary_length(column) if need.empty or need.long or need.padded else None
        if need.empty or need.long:
            bounds = pc.min_max(lengths).as_py() if len(column) else {"min": 1, "max": 0}
            empty, long = bounds["min"] == 0, bounds["max"] > rules.MAX_CHARS
        dated = escape = spaced = upper = other = date_other = True
        raw = b""
        if need.dated or need.escape or need.spaced or need.upper or need.other or need.date_other or need.padded:
            data = column.buffers()[-1]
            if data is not None and column.offset:  # a slice (the first block, after its header row)
                offsets = column.buffers()[1]
                (start,) = struct.unpack_from("<q", offsets, 8 * column.offset)
                (end,) = struct.unpack_from("<q", offsets, 8 * (column.offset + len(column)))
                data = data.slice(start, end - start)
            raw = data.to_pybytes() if data is not None else b""
            smallest, largest = 0x7F, 0x30
            if raw and (need.escape or need.spaced or need.other):
                # The smallest and largest byte in one vectorised pass: control characters, white space,
                # non-ASCII and "only digits" all follow from them.
                bounds = pc.min_max(pa.Array.from_buffers(pa.uint8(), len(raw), [None, data])).as_py()
                smallest, largest = bounds["min"], bounds["max"]
            if need.escape or need.spaced:
                escape = b'"' in raw or b"\\" in raw or smallest < 0x20
                spaced = smallest <= 0x20 or largest >= 0x80  # strip_chars also strips Unicode spaces
            # memchr for "$" first: a multi-byte search over a buffer without it costs several times more.
            dated = b"$" in raw and _DATE in raw
            # Short cells (booleans, operations) only: lower-casing a copy of a long buffer costs more than it saves.
            upper = not need.upper or len(raw) > 8 * len(column) or raw.lower() != raw
            if dated and (need.other or need.date_other):
                # Only digits once the `$D_` are left out (epoch numbers): the timestamp rules skip parsing ISO
                # 8601 and decimals. With the digits deleted, exactly the `$D_` are left, 3 bytes each, when
                # every other byte is a digit (a third of the time of deleting the `$D_` and testing isdigit()).
                other = len(raw.translate(None, _DIGITS)) != len(_DATE) * raw.count(_DATE)
            elif need.other:
                other = bool(raw) and not (smallest >= 0x30 and largest <= 0x39)
            date_other = dated and other  # no dates: none is more than digits; else the column's other cells count
        padded = _padded(column, raw, lengths) if need.padded and lengths is not None else True
        undated = not dated or not need.undated or _undated(column)
        worded = _worded(column) if need.worded else True
        flags[i] = Facts(empty, dated, escape, long, spaced, upper, other, date_other, undated, worded, padded)
    return flags

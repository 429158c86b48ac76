"""One writer per format, chosen from a registry by name; each builds one chunk file from frames, column-wise.

A frame holds `identity`, `name` (events only), `ts` (epoch ms) and `properties` (a JSON object's text). A writer
is asked what the file would weigh with a frame added (`measure`) before it `add`s it, so the runner can start the
next chunk instead of growing one past `exports.chunk_size`. csv and parquet need the chunk's property union
before their first row: they spool each frame (Arrow IPC, outside the partner's folder) and write at `finish`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
import pyarrow.parquet as pq
from polars.datatypes import DataTypeClass

_TS_TEXT = pl.from_epoch("ts", time_unit="ms").dt.strftime("%Y%m%d%H%M%S")
# XML 1.0 cannot carry these even as references: they become U+FFFD.
_XML_INVALID = "[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]"


def decode_properties(frame: pl.DataFrame, typed: bool = False) -> pl.DataFrame:
    """The properties column as one column per property, in first-seen order.

    typed=False: text cells the way the stored JSON writes them (strings as they are, true/false, numbers and
    arrays as written). typed=True: columns with the type polars infers over the frame (a property holding
    different kinds of values becomes text); an array or object column whose inferred type would change a value
    (polars coerces [1, "a"] to strings) is the values' JSON text instead.
    """
    try:
        decoded = frame["properties"].str.json_decode(infer_schema_length=None)
    except pl.exceptions.PolarsError:
        rows = [json.loads(text) for text in frame["properties"].to_list()]
        keys = list(dict.fromkeys(key for row in rows for key in row))
        return pl.DataFrame(
            {key: [_json_cell(row.get(key)) for row in rows] for key in keys},
            schema=dict.fromkeys(keys, pl.String),
        )
    if not isinstance(decoded.dtype, pl.Struct) or not decoded.dtype.fields:
        return pl.DataFrame()
    props = decoded.struct.unnest()
    columns = []
    for name in props.columns:
        column = props[name]
        nested = isinstance(column.dtype, pl.List | pl.Struct | pl.Array)
        if nested or (not typed and column.dtype.is_float()):
            raw = frame["properties"].str.json_path_match(_json_path(name)).alias(name)
            if not typed or not bool((_encoded(column) == raw).fill_null(True).all()):
                column = raw
        elif not typed:
            column = column.cast(pl.String)
        columns.append(column.alias(name))
    return pl.DataFrame(columns)


def _json_path(name: str) -> str:
    return "$['" + name.replace("\\", "\\\\").replace("'", "\\'") + "']"


def _json_cell(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _encoded(column: pl.Series) -> pl.Series:
    """A nested column as compact JSON text (null stays null)."""
    return pl.select(
        pl.when(pl.lit(column).is_null())
        .then(None)
        .otherwise(
            pl.struct(pl.lit(column).alias("v")).struct.json_encode().str.strip_prefix('{"v":').str.strip_suffix("}")
        )
    ).to_series()


def text_of(column: pl.Series) -> pl.Series:
    """A typed column as text the way JSON would write it (strings as they are, arrays as JSON)."""
    if column.dtype == pl.String:
        return column
    if isinstance(column.dtype, pl.List | pl.Struct | pl.Array):
        return _encoded(column).alias(column.name)
    return column.cast(pl.String)


def _columns(names: list[str], fixed: tuple[str, ...]) -> list[str]:
    """Property names as output columns: one that would collide with a fixed column is prefixed `props.`."""
    return [f"props.{name}" if name in fixed else name for name in names]


class Writer:
    """A chunk being written to `path` (a hidden temp name); `spool` is a private folder for formats that need one."""

    extension: ClassVar[str]

    def __init__(self, path: Path, kind: str, spool: Path) -> None:
        self.path = path
        self.kind = kind  # "events" or "profiles"
        self.spool = spool
        self.rows = 0
        self.size = 0
        self._cached: tuple[int, Any] | None = None

    def measure(self, frame: pl.DataFrame) -> int:
        """The file's size in bytes once `frame` is added (an estimate for parquet)."""
        raise NotImplementedError

    def add(self, frame: pl.DataFrame) -> None:
        raise NotImplementedError

    def finish(self) -> int:
        """Complete the file (flushed and fsynced); its size."""
        raise NotImplementedError

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        shutil.rmtree(self.spool, ignore_errors=True)

    def _cache(self, frame: pl.DataFrame, build: Any) -> Any:
        if self._cached is None or self._cached[0] != id(frame):
            self._cached = (id(frame), build(frame))
        return self._cached[1]

    def _append(self, data: bytes) -> None:
        with open(self.path, "ab") as handle:
            handle.write(data)
        self.size += len(data)

    def _fsync(self) -> int:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return self.path.stat().st_size


class JSONLWriter(Writer):
    """One object per line, the reference's shape: {"profile": {"identity"}, "ts", "eventName", "eventProps"}
    (profiles: {"profile": {"identity"}, "ts", "profileData"}); ts as the reference's yyyymmddHHMMSS number."""

    extension = "jsonl"

    def _encode(self, frame: pl.DataFrame) -> bytes:
        ts = _TS_TEXT.cast(pl.Int64)
        if self.kind == "events":
            head = pl.struct(profile=pl.struct("identity"), ts=ts, eventName=pl.col("name"))
            tail = ',"eventProps":'
        else:
            head = pl.struct(profile=pl.struct("identity"), ts=ts)
            tail = ',"profileData":'
        # A stored JSON text has no raw line breaks inside strings (they are escaped): any are whitespace.
        props = pl.col("properties").str.replace_all("[\r\n]", " ")
        line = head.struct.json_encode().str.strip_suffix("}") + pl.lit(tail) + props + pl.lit("}\n")
        return frame.select(line.str.join("")).item().encode("utf-8")

    def measure(self, frame: pl.DataFrame) -> int:
        return self.size + len(self._cache(frame, self._encode))

    def add(self, frame: pl.DataFrame) -> None:
        self._append(self._cache(frame, self._encode))
        self.rows += len(frame)
        self._cached = None

    def finish(self) -> int:
        if not self.path.exists():
            self._append(b"")
        return self._fsync()


class CSVWriter(Writer):
    """Comma-separated, a header row; columns identity, ts, eventName (events), then one per property: the union
    of the chunk's properties in first-seen order. Arrays are JSON text; an absent property an empty cell."""

    extension = "csv"

    def __init__(self, path: Path, kind: str, spool: Path) -> None:
        super().__init__(path, kind, spool)
        self.fixed = ("identity", "ts", "eventName") if kind == "events" else ("identity", "ts")
        self.union: dict[str, None] = {}
        self.body = 0  # bytes of the spooled parts, each written with its own columns
        self.padding = 0  # empty cells the parts lack for the union's columns: one comma each
        self.parts = 0

    def _cells(self, frame: pl.DataFrame) -> tuple[list[str], bytes]:
        props = decode_properties(frame)
        fixed = [frame["identity"], frame.select(_TS_TEXT).to_series().alias("ts")]
        if self.kind == "events":
            fixed.append(frame["name"].alias("eventName"))
        names = _columns(props.columns, self.fixed)
        cells = pl.DataFrame([*fixed, *(props[c].alias(n) for c, n in zip(props.columns, names, strict=True))])
        return cells.columns, cells.write_csv(include_header=False).encode("utf-8")

    def _header(self, union: dict[str, None]) -> int:
        return len(pl.DataFrame(schema=dict.fromkeys([*self.fixed, *union], pl.String)).write_csv().encode("utf-8"))

    def measure(self, frame: pl.DataFrame) -> int:
        columns, body = self._cache(frame, self._cells)
        union = self.union | dict.fromkeys(columns[len(self.fixed) :])
        grown = len(union) - len(self.union)
        own = len(columns) - len(self.fixed)
        padding = self.padding + self.rows * grown + len(frame) * (len(union) - own)
        return self._header(union) + self.body + len(body) + padding

    def add(self, frame: pl.DataFrame) -> None:
        columns, body = self._cache(frame, self._cells)
        union = self.union | dict.fromkeys(columns[len(self.fixed) :])
        own = len(columns) - len(self.fixed)
        self.padding += self.rows * (len(union) - len(self.union)) + len(frame) * (len(union) - own)
        self.union = union
        self.body += len(body)
        # The encoded rows are kept as they are: a part whose columns are the chunk's final ones is copied into
        # the file at finish; only a part that lacks some is read back and written again with empty cells.
        self.spool.mkdir(parents=True, exist_ok=True)
        (self.spool / f"{self.parts:06d}.csv").write_bytes(body)
        (self.spool / f"{self.parts:06d}.columns").write_text(json.dumps(columns), encoding="utf-8")
        self.parts += 1
        self.rows += len(frame)
        self.size = self._header(self.union) + self.body + self.padding
        self._cached = None

    def finish(self) -> int:
        columns = [*self.fixed, *self.union]
        with open(self.path, "wb") as handle:
            pl.DataFrame(schema=dict.fromkeys(columns, pl.String)).write_csv(handle)
            for part in range(self.parts):
                body = self.spool / f"{part:06d}.csv"
                own = json.loads((self.spool / f"{part:06d}.columns").read_text(encoding="utf-8"))
                if own == columns:
                    with open(body, "rb") as source:
                        shutil.copyfileobj(source, handle, 1024 * 1024)
                    continue
                cells = pl.read_csv(body, has_header=False, new_columns=own, schema=dict.fromkeys(own, pl.String))
                missing = [pl.lit(None, pl.String).alias(name) for name in columns if name not in own]
                cells.with_columns(missing).select(columns).write_csv(handle, include_header=False)
        shutil.rmtree(self.spool, ignore_errors=True)
        return self._fsync()


class XMLWriter(Writer):
    """`<Events>` of the reference's `<Event>`: ts, eventName, profile/identity, eventProps/entry(key, value)
    (profiles: `<Profiles>` of `<Profile>` with profileData); values as text, arrays as JSON."""

    extension = "xml"

    def __init__(self, path: Path, kind: str, spool: Path) -> None:
        super().__init__(path, kind, spool)
        self.root, self.item, self.props = (
            ("Events", "Event", "eventProps") if kind == "events" else ("Profiles", "Profile", "profileData")
        )
        self.head = f'<?xml version="1.0" encoding="UTF-8"?>\n<{self.root}>\n'.encode()
        self.foot = f"</{self.root}>\n".encode()

    def _encode(self, frame: pl.DataFrame) -> bytes:
        props = decode_properties(frame)
        entries = [
            pl.when(pl.lit(props[name]).is_null())
            .then(pl.lit(""))
            .otherwise(
                pl.lit(f"<entry><key>{_xml_text(name)}</key><value>")
                + _escape(pl.lit(props[name]))
                + pl.lit("</value></entry>")
            )
            for name in props.columns
        ]
        parts = [pl.lit(f"<{self.item}><ts>"), _TS_TEXT, pl.lit("</ts>")]
        if self.kind == "events":
            parts += [pl.lit("<eventName>"), _escape(pl.col("name")), pl.lit("</eventName>")]
        parts += [pl.lit("<profile><identity>"), _escape(pl.col("identity")), pl.lit("</identity></profile>")]
        parts += [pl.lit(f"<{self.props}>"), *entries, pl.lit(f"</{self.props}></{self.item}>\n")]
        return frame.select(pl.concat_str(parts).str.join("")).item().encode("utf-8")

    def measure(self, frame: pl.DataFrame) -> int:
        return len(self.head) + (self.size or 0) + len(self._cache(frame, self._encode)) + len(self.foot)

    def add(self, frame: pl.DataFrame) -> None:
        if not self.path.exists():
            self._append(self.head)
            self.size = 0
        data = self._cache(frame, self._encode)
        with open(self.path, "ab") as handle:
            handle.write(data)
        self.size += len(data)
        self.rows += len(frame)
        self._cached = None

    def finish(self) -> int:
        if not self.path.exists():
            self._append(self.head)
        with open(self.path, "ab") as handle:
            handle.write(self.foot)
        return self._fsync()


def _xml_text(text: str) -> str:
    import re

    text = re.sub(_XML_INVALID, "\ufffd", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape(expr: pl.Expr) -> pl.Expr:
    return (
        expr.str.replace_all(_XML_INVALID, "\ufffd")
        .str.replace_all("&", "&amp;", literal=True)
        .str.replace_all("<", "&lt;", literal=True)
        .str.replace_all(">", "&gt;", literal=True)
    )


class ParquetWriter(Writer):
    """Typed columns: identity (string), ts (timestamp ms UTC), eventName, then one column per property of the
    chunk with the type its values have (a property holding several kinds of values is text)."""

    extension = "parquet"
    OVERHEAD = 4096

    def __init__(self, path: Path, kind: str, spool: Path) -> None:
        super().__init__(path, kind, spool)
        self.fixed = ("identity", "ts", "eventName") if kind == "events" else ("identity", "ts")
        self.types: dict[str, pl.DataType | DataTypeClass] = {}
        self.parts = 0

    def _typed(self, frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        props = decode_properties(frame, typed=True)
        fixed = [
            frame["identity"],
            frame.select(
                pl.from_epoch("ts", time_unit="ms").dt.replace_time_zone("UTC").cast(pl.Datetime("ms", "UTC"))
            )["ts"],
        ]
        if self.kind == "events":
            fixed.append(frame["name"].alias("eventName"))
        names = _columns(props.columns, self.fixed)
        typed = pl.DataFrame([*fixed, *(props[c].alias(n) for c, n in zip(props.columns, names, strict=True))])
        # Uncompressed text is an upper bound of what parquet stores for it, nearly always.
        return typed, int(frame["properties"].str.len_bytes().sum() or 0) + int(
            frame["identity"].str.len_bytes().sum() or 0
        ) + 12 * len(frame)

    def measure(self, frame: pl.DataFrame) -> int:
        typed, size = self._cache(frame, self._typed)
        return self.size + size + self.OVERHEAD + 64 * (len(self.types) + typed.width)

    def add(self, frame: pl.DataFrame) -> None:
        typed, size = self._cache(frame, self._typed)
        for name, dtype in typed.schema.items():
            known = self.types.get(name)
            if known is None or known == pl.Null:
                self.types[name] = dtype
            elif dtype != known and dtype != pl.Null:
                numbers = known.is_numeric() and dtype.is_numeric()
                self.types[name] = pl.Float64 if numbers else pl.String
        self.spool.mkdir(parents=True, exist_ok=True)
        typed.write_ipc(self.spool / f"{self.parts:06d}.arrow")
        self.parts += 1
        self.size += size
        self.rows += len(frame)
        self._cached = None

    def finish(self) -> int:
        types = {name: (pl.String if dtype == pl.Null else dtype) for name, dtype in self.types.items()}
        if not types:
            types = {name: pl.String for name in self.fixed}
            types["ts"] = pl.Datetime("ms", "UTC")
        writer: pq.ParquetWriter | None = None
        try:
            for part in range(self.parts):
                typed = pl.read_ipc(self.spool / f"{part:06d}.arrow")
                columns = []
                for name, dtype in types.items():
                    if name not in typed.columns:
                        columns.append(pl.Series(name, [None] * len(typed), dtype=dtype))
                    elif typed[name].dtype == dtype:
                        columns.append(typed[name])
                    elif dtype == pl.String:
                        columns.append(text_of(typed[name]))
                    else:
                        columns.append(typed[name].cast(dtype))
                table = pl.DataFrame(columns).to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
                writer.write_table(table)
            if writer is None:
                empty = pl.DataFrame(schema=types).to_arrow()
                writer = pq.ParquetWriter(self.path, empty.schema, compression="zstd")
                writer.write_table(empty)
        finally:
            if writer is not None:
                writer.close()
        shutil.rmtree(self.spool, ignore_errors=True)
        return self._fsync()


WRITERS: dict[str, type[Writer]] = {
    writer.extension: writer for writer in (JSONLWriter, CSVWriter, XMLWriter, ParquetWriter)
}


def writer_for(fmt: str) -> type[Writer]:
    return WRITERS[fmt]

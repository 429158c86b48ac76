"""The error CSV as an email attachment: whole, gzip-compressed, or its first rows when still too large."""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Compress in chunks of about this much CSV so a truncated attachment stops near the limit.
_CHUNK = 64 * 1024
# The gzip trailer and a final empty deflate block, written by flush().
_TRAILER = 16


@dataclass(frozen=True)
class Attachment:
    """What to attach: `mode` is full, gzip, truncated, none (too large for even the header) or missing."""

    mode: str
    filename: str
    data: bytes
    size: int  # of the whole error CSV on disk
    rows: int | None  # data rows in `data` when truncated, else None

    @property
    def content_type(self) -> tuple[str, str]:
        return ("text", "csv") if self.mode == "full" else ("application", "gzip")


def prepare_attachment(path: Path, filename: str, limit: int) -> Attachment:
    """The attachment for the error CSV at `path`, never larger than `limit` bytes."""
    try:
        size = path.stat().st_size
    except OSError:
        return Attachment("missing", filename, b"", 0, None)
    if size <= limit:
        return Attachment("full", filename, path.read_bytes(), size, None)
    compressed = _gzip_whole(path, limit)
    if compressed is not None:
        return Attachment("gzip", f"{filename}.gz", compressed, size, None)
    data, rows = _gzip_first_rows(path, limit)
    if rows <= 0:  # a header alone helps nobody
        return Attachment("none", filename, b"", size, None)
    stem = filename.removesuffix(".csv")
    return Attachment("truncated", f"{stem}.first-{rows}-rows.csv.gz", data, size, rows)


def _gzip_whole(path: Path, limit: int) -> bytes | None:
    """The whole file gzip-compressed, or None as soon as the output passes `limit`."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    out = io.BytesIO()
    with open(path, "rb") as handle:
        while block := handle.read(1024 * 1024):
            out.write(compressor.compress(block))
            if out.tell() > limit:
                return None
    out.write(compressor.flush())
    return out.getvalue() if out.tell() <= limit else None


def _gzip_first_rows(path: Path, limit: int) -> tuple[bytes, int]:
    """The header and as many whole records as fit in `limit` once compressed; rows = -1 if not even the header."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    out = io.BytesIO()
    rows = -1  # the header is record 0
    chunk: list[bytes] = []
    chunk_rows = 0
    chunk_bytes = 0

    def commit() -> bool:
        # Sync-flush so the output size is exact; on overflow, roll back to before this chunk.
        nonlocal compressor
        saved = compressor.copy()
        position = out.tell()
        out.write(compressor.compress(b"".join(chunk)))
        out.write(compressor.flush(zlib.Z_SYNC_FLUSH))
        if out.tell() + _TRAILER > limit:
            compressor = saved
            out.seek(position)
            out.truncate()
            return False
        return True

    with open(path, "rb") as handle:
        for record in _records(handle):
            chunk.append(record)
            chunk_rows += 1
            chunk_bytes += len(record)
            if chunk_bytes >= _CHUNK or rows < 0:
                if not commit():
                    break
                rows += chunk_rows
                chunk, chunk_rows, chunk_bytes = [], 0, 0
        else:
            if chunk and commit():
                rows += chunk_rows
                chunk = []
        if chunk:
            # The chunk that did not fit: retry its records one by one for a tight cut.
            pending = chunk
            for record in pending:
                chunk = [record]
                if not commit():
                    break
                rows += 1
    if rows < 0:
        return b"", -1
    out.write(compressor.flush())
    return out.getvalue(), rows


def _records(handle: io.BufferedReader) -> Iterator[bytes]:
    """CSV records as raw bytes: a newline inside a quoted cell does not end a record."""
    record = b""
    for line in handle:
        record += line
        # Quotes are escaped by doubling, so an odd count means a quoted cell is still open.
        if record.count(b'"') % 2 == 0:
            yield record
            record = b""
    if record:
        yield record
